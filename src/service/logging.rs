//! Logging: to the systemd journal (systemd-journal-logger) when stderr is connected to it,
//! readable lines on stderr otherwise (a terminal, CI, a container). Log lines put their
//! structured fields first (`camera=front frame=12 …`) and end with a sentence.
//!
//! Other crates' records are kept to warnings and errors unless `log_level = "trace"`:
//! rumqttd in particular reports every routed packet through `tracing`, some at error level.

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};

use log::{LevelFilter, Log, Metadata, Record};

/// The embedded broker's message size limit, once it runs (0: not running).
static BROKER_LIMIT: AtomicUsize = AtomicUsize::new(0);

/// Tells the log the embedded broker's limit (`mqtt.max_packet_size`): a client it drops for a
/// larger message is then said in vigil's words, naming the key. (rumqttd says it only in
/// its own records, which the log keeps to trace level.)
pub fn embedded_broker_limit(bytes: usize) {
    BROKER_LIMIT.store(bytes, Ordering::Relaxed);
}

/// What the log says for an embedded broker's record about a message over its limit.
fn over_the_limit(text: &str) -> Option<String> {
    let limit = BROKER_LIMIT.load(Ordering::Relaxed);
    let (_, rest) = text.split_once("PayloadSizeLimitExceeded(")?;
    let size: usize = rest.split(')').next()?.trim().parse().ok()?;
    (limit > 0).then(|| {
        format!(
            "bytes={size} max_packet_size={limit} the embedded MQTT broker dropped a client sending a message over \
             mqtt.max_packet_size (a deploy bundle, say): raise mqtt.max_packet_size (and deploy.max_bundle_bytes) to \
             take it"
        )
    })
}

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
        if noisy {
            if let Some(text) = over_the_limit(&record.args().to_string()) {
                self.inner.log(
                    &Record::builder()
                        .level(log::Level::Warn)
                        .target("vigil::daemon::broker")
                        .args(format_args!("{text}"))
                        .build(),
                );
            }
        }
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
    fn the_embedded_broker_dropping_a_large_message_is_said_with_the_key() {
        let record = "Remote link error error=Network(Protocol(PayloadSizeLimitExceeded(15307201)))";
        super::embedded_broker_limit(8 << 20);
        let said = super::over_the_limit(record).unwrap();
        assert!(said.starts_with("bytes=15307201 max_packet_size=8388608 "), "{said}");
        assert!(said.contains("raise mqtt.max_packet_size"), "{said}");
        assert_eq!(super::over_the_limit("Remote link error error=Network(Io(reset))"), None);
    }

    #[test]
    fn outside_text_is_escaped_and_cut() {
        assert_eq!(super::shown(b"ON"), "\"ON\"");
        assert_eq!(super::shown(b"a\nERROR forged"), "\"a\\nERROR forged\"");
        let long = super::shown(&vec![b'x'; 7 << 20]);
        assert!(long.starts_with(&format!("\"{}\"…", "x".repeat(80))) && long.ends_with("(7340032 bytes)"), "{long}");
        assert_eq!(super::shown(&[0xff, b'a']), "\"\u{fffd}a\"");
    }
}
