//! Logging: to the systemd journal (systemd-journal-logger) when stderr is connected to it,
//! readable lines on stderr otherwise (a terminal, CI, a container). Log lines put their
//! structured fields first (`camera=front frame=12 …`) and end with a sentence.
//!
//! Other crates' records are kept to warnings and errors unless `log_level = "trace"`:
//! rumqttd in particular reports every routed packet through `tracing`, some at error level.

use std::io::Write;

use log::{LevelFilter, Log, Metadata, Record};

/// Installs the logger once per process; later calls only change the level.
pub fn init(level: LevelFilter) {
    let inner: Box<dyn Log> = match journal() {
        Some(journal) => Box::new(journal),
        None => Box::new(Stderr),
    };
    let _ = log::set_boxed_logger(Box::new(Filtered { inner }));
    log::set_max_level(level);
}

fn journal() -> Option<systemd_journal_logger::JournalLog> {
    if !systemd_journal_logger::connected_to_journal() {
        return None;
    }
    match systemd_journal_logger::JournalLog::new() {
        Ok(journal) => Some(journal.with_syslog_identifier("vigil".into())),
        Err(e) => {
            eprintln!("vigil: the journal is unreachable ({e}); logging to stderr");
            None
        }
    }
}

struct Filtered {
    inner: Box<dyn Log>,
}

impl Log for Filtered {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        let ours = record.target().starts_with("vigil");
        let noisy = record.target().starts_with("rumqttd");
        let trace = log::max_level() >= LevelFilter::Trace;
        if ours || trace || (!noisy && record.level() <= log::Level::Warn) {
            self.inner.log(record);
        }
    }

    fn flush(&self) {
        self.inner.flush();
    }
}

struct Stderr;

impl Log for Stderr {
    fn enabled(&self, _: &Metadata) -> bool {
        true
    }

    fn log(&self, record: &Record) {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let (secs, millis) = (now.as_secs(), now.subsec_millis());
        let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
        let target =
            if record.target().starts_with("vigil") { String::new() } else { format!(" [{}]", record.target()) };
        let _ = writeln!(
            std::io::stderr().lock(),
            "{h:02}:{m:02}:{s:02}.{millis:03} {:<5}{target} {}",
            record.level(),
            record.args()
        );
    }

    fn flush(&self) {}
}

/// Text from outside (an MQTT payload or topic, say) as a log line may show it: quoted, with
/// control characters escaped (a newline cannot forge a line) and cut after 80 characters.
pub fn shown(bytes: &[u8]) -> String {
    const MAX: usize = 80;
    let text = String::from_utf8_lossy(bytes);
    let head: String = text.chars().take(MAX).collect();
    if head.len() < text.len() {
        format!("{:?}… ({} bytes)", head, bytes.len())
    } else {
        format!("{head:?}")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn outside_text_is_escaped_and_cut() {
        assert_eq!(super::shown(b"ON"), "\"ON\"");
        assert_eq!(super::shown(b"a\nERROR forged"), "\"a\\nERROR forged\"");
        let long = super::shown(&vec![b'x'; 7 << 20]);
        assert!(long.starts_with(&format!("\"{}\"…", "x".repeat(80))) && long.ends_with("(7340032 bytes)"), "{long}");
        assert_eq!(super::shown(&[0xff, b'a']), "\"\u{fffd}a\"");
    }
}
