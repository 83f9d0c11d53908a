//! An RTSP IP camera for the tests: GStreamer's RTSP server from Debian
//! (tests/common/rtsp_server.py, installed by scripts/setup-system.sh) on 127.0.0.1,
//! streaming a bundled photo as H.264 High profile. Not a mock: vigil's RTSP source
//! speaks to it as to a camera, and its stream is a real encoder's.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// A running server; killed when dropped.
pub struct Server {
    child: Child,
    pub port: u16,
    photo: String,
    auth: &'static str,
}

/// Debian's python3, which has python3-gi (not a python3 of pyenv or a venv earlier on PATH).
const PYTHON: &str = "/usr/bin/python3";

impl Server {
    /// Serves `tests/photos/<photo>` on a free port; `auth` is "digest" or "basic"
    /// (user "vigil", password "s3cret"). Paths: `/stream` (H.264), `/jpeg` (RTP/JPEG).
    pub fn start(photo: &str, auth: &'static str) -> Server {
        let photo = super::root().join("tests/photos").join(photo).display().to_string();
        let (child, port) = spawn(&photo, 0, auth).unwrap_or_else(|e| panic!("{e}"));
        Server { child, port, photo, auth }
    }

    /// Kills the server (every client's connection drops, as when a camera reboots) and
    /// starts it again on the same port.
    pub fn restart(&mut self) {
        self.kill();
        // The port is free once the old server is gone; binding it again may take a moment.
        let mut tries = 0;
        self.child = loop {
            match spawn(&self.photo, self.port, self.auth) {
                Ok((child, _)) => break child,
                Err(e) if tries == 20 => panic!("{e}"),
                Err(_) => tries += 1,
            }
            std::thread::sleep(std::time::Duration::from_millis(250));
        };
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the server script; the child and the port it listens on, once it says so.
fn spawn(photo: &str, port: u16, auth: &str) -> Result<(Child, u16), String> {
    let script = super::root().join("tests/common/rtsp_server.py");
    let mut child = Command::new(PYTHON)
        .arg(&script)
        .arg(photo)
        .arg(port.to_string())
        .arg(auth)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| {
            format!("cannot start {PYTHON} {}: {e} (scripts/setup-system.sh installs it)", script.display())
        })?;
    let mut line = String::new();
    let _ = BufReader::new(child.stdout.take().unwrap()).read_line(&mut line);
    match line.trim().strip_prefix("listening ").and_then(|p| p.parse().ok()) {
        Some(port) => Ok((child, port)),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            Err(format!(
                "the RTSP test server did not start (it said {line:?}); it needs python3-gi, \
                 gir1.2-gst-rtsp-server-1.0 and GStreamer's good and ugly plugins (scripts/setup-system.sh)"
            ))
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}
