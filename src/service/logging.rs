//! Logging: to the systemd journal (systemd-journal-logger) when stderr is connected to it,
//! readable lines on stderr otherwise (a terminal, CI, a container). Log lines put their
//! structured fields first (`camera=front frame=12 …`) and end with a sentence.

use std::io::Write;

use log::{LevelFilter, Log, Metadata, Record};

/// Installs the logger once per process; later calls only change the level.
pub fn init(level: LevelFilter) {
    log::set_max_level(level);
    if systemd_journal_logger::connected_to_journal() {
        match systemd_journal_logger::JournalLog::new() {
            Ok(journal) => {
                if journal.with_syslog_identifier("vigil".into()).install().is_ok() {
                    log::set_max_level(level);
                }
                return;
            }
            Err(e) => eprintln!("vigil: the journal is unreachable ({e}); logging to stderr"),
        }
    }
    if log::set_logger(&STDERR).is_ok() {
        log::set_max_level(level);
    }
}

struct StderrLog;

static STDERR: StderrLog = StderrLog;

impl Log for StderrLog {
    fn enabled(&self, _: &Metadata) -> bool {
        true
    }

    fn log(&self, record: &Record) {
        // Other crates' chatter (rumqttc, rustls) only at trace.
        let ours = record.target().starts_with("vigil");
        if !ours && record.level() > log::Level::Warn && log::max_level() < LevelFilter::Trace {
            return;
        }
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let (secs, millis) = (now.as_secs(), now.subsec_millis());
        let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
        let target = if ours { String::new() } else { format!(" [{}]", record.target()) };
        let _ = writeln!(
            std::io::stderr().lock(),
            "{h:02}:{m:02}:{s:02}.{millis:03} {:<5}{target} {}",
            record.level(),
            record.args()
        );
    }

    fn flush(&self) {}
}
