//! systemd's notify protocol (sd_notify(3)): newline-separated `KEY=VALUE` datagrams sent to
//! the Unix socket named by `NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace).
//! Without `NOTIFY_SOCKET` (not under systemd, or `Type=simple`) every call does nothing.
//!
//! The watchdog interval comes from `WATCHDOG_USEC` (honoured only when `WATCHDOG_PID` is
//! unset or names this process, as sd_watchdog_enabled(3) does).

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// A connection to the service manager, or nothing when there is none.
#[derive(Debug)]
pub struct Notifier {
    socket: Option<(UnixDatagram, String)>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` from the environment.
    pub fn from_env() -> Notifier {
        let socket = std::env::var("NOTIFY_SOCKET").ok().filter(|s| !s.is_empty());
        let pid_ok = std::env::var("WATCHDOG_PID")
            .ok()
            .and_then(|p| p.parse::<u32>().ok())
            .is_none_or(|p| p == std::process::id());
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|u| u.parse::<u64>().ok())
            .filter(|&u| u > 0 && pid_ok)
            .map(Duration::from_micros);
        let socket = socket.and_then(|path| match UnixDatagram::unbound() {
            Ok(s) => Some((s, path)),
            Err(e) => {
                log::warn!("socket={path} cannot create the notify socket: {e}");
                None
            }
        });
        Notifier { socket, watchdog }
    }

    /// The interval systemd expects pings within (WatchdogSec=), if it watches this process.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Sends one notification, e.g. `"READY=1\nSTATUS=running"`. Failures are logged, not
    /// returned: the daemon must not stop because systemd is unreachable.
    pub fn send(&self, state: &str) {
        let Some((socket, path)) = &self.socket else { return };
        if let Err(e) = send_to(socket, path, state) {
            log::warn!("socket={path} sd_notify failed: {e}");
        }
    }

    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={status}"));
    }

    pub fn status(&self, status: &str) {
        self.send(&format!("STATUS={status}"));
    }

    pub fn watchdog(&self) {
        self.send("WATCHDOG=1");
    }

    pub fn stopping(&self, status: &str) {
        self.send(&format!("STOPPING=1\nSTATUS={status}"));
    }
}

fn send_to(socket: &UnixDatagram, path: &str, state: &str) -> std::io::Result<usize> {
    if let Some(name) = path.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
        socket.send_to_addr(state.as_bytes(), &addr)
    } else {
        socket.send_to(state.as_bytes(), path)
    }
}
