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

/// What a [`hostile`] camera does wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hostile {
    /// Answers DESCRIBE with `Content-Length: 2000000000` and a body that does not end.
    EndlessAnswer,
    /// Answers DESCRIBE with an SDP of one 50 MB line (`Content-Length: 50000000`).
    LongSdpLine,
    /// Answers DESCRIBE with a head that does not end (one header line, growing).
    EndlessHead,
    /// Answers DESCRIBE with bytes that are not RTSP.
    Junk,
    /// Takes the connection and answers nothing.
    Silent,
    /// Plays (over TCP), then starts an H.264 FU-A fragment and never ends it: fragment after
    /// fragment, one timestamp, no marker.
    EndlessFragment,
    /// Plays (over TCP), then sends whole NAL units, one timestamp, no marker.
    NoMarker,
    /// Plays (over TCP) and sends nothing.
    NoPictures,
    /// Plays (over TCP) and sends slices, each ended, that refer to parameter sets it never
    /// sends: nothing decodes.
    Undecodable,
}

/// A [`hostile`] camera.
pub struct HostileCamera {
    pub port: u16,
    /// The most bytes one connection took from it (as far as its writes went: the client's
    /// socket buffers hold a few MB of them).
    pub most_taken: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// What a hostile camera sends at most on one connection: enough to show a client that
/// reads it all, not enough to take a test machine's memory.
const HOSTILE_LIMIT: u64 = 256 << 20;

/// Starts an RTSP camera on 127.0.0.1 that misbehaves as `how` says, on every connection
/// (each on its own thread). It speaks just enough RTSP for a client to get to its fault:
/// every request is answered by its CSeq (DESCRIBE with one H.264 video stream, SETUP with
/// interleaved channels 0-1), no authentication.
pub fn hostile(how: Hostile) -> HostileCamera {
    use std::sync::atomic::AtomicU64;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let most_taken = std::sync::Arc::new(AtomicU64::new(0));
    let most = most_taken.clone();
    std::thread::spawn(move || {
        for connection in listener.incoming() {
            let Ok(connection) = connection else { continue };
            let most = most.clone();
            std::thread::spawn(move || serve_hostile(connection, how, most));
        }
    });
    HostileCamera { port, most_taken }
}

/// A hostile camera's side of one connection: what it wrote, and how much.
struct Sending {
    out: std::net::TcpStream,
    taken: u64,
    /// The most any connection took, kept up to date as it is written.
    most: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Sending {
    /// Writes `bytes`; false once the client is gone or [`HOSTILE_LIMIT`] was sent.
    fn send(&mut self, bytes: &[u8]) -> bool {
        use std::io::Write;
        let written = self.out.write_all(bytes).is_ok();
        if written {
            self.taken += bytes.len() as u64;
            self.most.fetch_max(self.taken, std::sync::atomic::Ordering::Relaxed);
        }
        written && self.taken < HOSTILE_LIMIT
    }

    /// Sends `bytes` again and again, as long as the client takes them.
    fn send_forever(&mut self, bytes: &[u8]) {
        while self.send(bytes) {}
    }
}

/// One connection to a hostile camera, until the client is gone or the camera is done with
/// it; `most` is the most bytes any connection took.
fn serve_hostile(connection: std::net::TcpStream, how: Hostile, most: std::sync::Arc<std::sync::atomic::AtomicU64>) {
    use std::io::{BufReader, Read};
    let mut reader = BufReader::new(connection.try_clone().unwrap());
    let mut out = Sending { out: connection, taken: 0, most };
    loop {
        // A request head (retina sends no bodies).
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && head.len() < 65536 {
            match reader.read(&mut byte) {
                Ok(1) => head.push(byte[0]),
                _ => return,
            }
        }
        let head = String::from_utf8_lossy(&head).to_string();
        let method = head.split_whitespace().next().unwrap_or_default().to_string();
        let cseq = head
            .lines()
            .find_map(|l| l.split_once(':').filter(|(n, _)| n.eq_ignore_ascii_case("cseq")).map(|(_, v)| v.trim()))
            .unwrap_or("0")
            .to_string();
        let ok = format!("RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\n");
        let line = vec![b'a'; 64 << 10];
        match (method.as_str(), how) {
            ("DESCRIBE", Hostile::Silent) => {
                std::thread::sleep(std::time::Duration::from_secs(60));
                return;
            }
            ("DESCRIBE", Hostile::EndlessAnswer | Hostile::LongSdpLine) => {
                let length = if how == Hostile::EndlessAnswer { 2_000_000_000 } else { 50_000_000 };
                let head = format!("{ok}Content-Type: application/sdp\r\nContent-Length: {length}\r\n\r\nv=0\r\ns=");
                if out.send(head.as_bytes()) {
                    out.send_forever(&line);
                }
                return;
            }
            ("DESCRIBE", Hostile::EndlessHead) => {
                if out.send(format!("{ok}X-Junk: ").as_bytes()) {
                    out.send_forever(&line);
                }
                return;
            }
            ("DESCRIBE", Hostile::Junk) => {
                out.send(b"\x00\x01\x02\x03 HELLO \xff\xfe not RTSP at all\r\n\r\n");
                std::thread::sleep(std::time::Duration::from_secs(5));
                return;
            }
            ("DESCRIBE", _) => {
                let sdp = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=hostile\r\nt=0 0\r\nm=video 0 RTP/AVP 96\r\n\
                           a=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1\r\na=control:track1\r\n";
                let answer = format!(
                    "{ok}Content-Type: application/sdp\r\nContent-Base: rtsp://127.0.0.1/hostile/\r\n\
                     Content-Length: {}\r\n\r\n{sdp}",
                    sdp.len()
                );
                out.send(answer.as_bytes());
            }
            ("SETUP", _) => {
                let answer =
                    format!("{ok}Session: 1234;timeout=60\r\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n");
                out.send(answer.as_bytes());
            }
            ("PLAY", _) => {
                if out.send(format!("{ok}Session: 1234\r\n\r\n").as_bytes()) {
                    play_hostile(&mut out, how);
                }
                return;
            }
            _ => {
                out.send(format!("{ok}\r\n").as_bytes());
            }
        }
    }
}

/// The stream of a hostile camera that got to PLAY, until the client is gone.
fn play_hostile(out: &mut Sending, how: Hostile) {
    let mut sequence = 0u16;
    // The next interleaved RTP packet on channel 0: payload type 96, one SSRC.
    let mut packet = |timestamp: u32, marker: bool, payload: &[u8]| {
        sequence = sequence.wrapping_add(1);
        let mut rtp = vec![0x80, if marker { 0x80 | 96 } else { 96 }];
        rtp.extend_from_slice(&sequence.to_be_bytes());
        rtp.extend_from_slice(&timestamp.to_be_bytes());
        rtp.extend_from_slice(&0x1234_5678u32.to_be_bytes());
        rtp.extend_from_slice(payload);
        let mut frame = vec![b'$', 0];
        frame.extend_from_slice(&(rtp.len() as u16).to_be_bytes());
        frame.extend(rtp);
        frame
    };
    // NAL bytes with no start code in them (never two zeros in a row).
    let with = |head: &[u8]| [head, &[0xab; 60_000][..]].concat();
    match how {
        Hostile::EndlessFragment => {
            // FU-A (type 28, NRI 3) of an IDR slice (type 5): the start, then middles.
            if out.send(&packet(1000, false, &with(&[0x7c, 0x85]))) {
                while out.send(&packet(1000, false, &with(&[0x7c, 0x05]))) {}
            }
        }
        Hostile::NoMarker => while out.send(&packet(1000, false, &with(&[0x41]))) {},
        Hostile::Undecodable => {
            // P slices (type 1), each ended, of a stream whose SPS and PPS never come; 10 a second.
            let mut timestamp = 0u32;
            while out.send(&packet(timestamp, true, &[0x41, 0x9a, 0x02, 0x04, 0x08, 0x10, 0x20])) {
                timestamp = timestamp.wrapping_add(9000);
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
        _ => std::thread::sleep(std::time::Duration::from_secs(60)),
    }
}
