//! A stand-in for an HTTP MJPEG camera (an ESP32-CAM, a phone webcam app) for the tests:
//! a real HTTP server on a real socket, serving the bundled photos as JPEG. (Not a mock of
//! vigil's side: the MJPEG source talks to it as to a camera.)

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A JPEG of a bundled photo, as an MJPEG camera sends it.
pub fn jpeg_of(name: &str) -> Vec<u8> {
    let mut bytes = std::io::Cursor::new(Vec::new());
    image::open(super::root().join("tests/photos").join(name))
        .unwrap()
        .into_rgb8()
        .write_to(&mut bytes, image::ImageFormat::Jpeg)
        .unwrap();
    bytes.into_inner()
}

/// Starts an HTTP MJPEG camera on 127.0.0.1: the real protocol over a real socket (a
/// GET with Basic authentication, then a `multipart/x-mixed-replace` body), as an ESP32-CAM
/// serves it. `/stream` (and `/chunked`, the same in chunked transfer encoding, as ESP-IDF's
/// web server sends it) wants user "vigil" with password "s3cret", as does `/snapshot.jpg`,
/// which answers `then` as one JPEG (counted in `snapshots`); other paths are 404, other
/// credentials 401; `/digest.jpg` is the same snapshot behind Digest authentication only
/// (RFC 7616, MD5, as IP cameras' snapshot URLs ask for). The first stream it serves gives `first` as `parts` parts 40 ms apart,
/// then half a part, and the connection is cut; every later one gives `then` until the
/// client hangs up.
pub fn serve(first: Vec<u8>, then: Vec<u8>, parts: usize) -> Camera {
    use std::io::Write;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let camera = Camera { port, streams: Arc::default(), refusals: Arc::default(), snapshots: Arc::default() };
    let (served, refused, snapshots) = (camera.streams.clone(), camera.refusals.clone(), camera.snapshots.clone());
    std::thread::spawn(move || {
        for connection in listener.incoming() {
            let Ok(mut connection) = connection else { continue };
            let head = request_head(&mut connection);
            let path = head.split_whitespace().nth(1).unwrap_or_default().to_string();
            let authorised = head.lines().any(|line| {
                line.split_once(':').is_some_and(|(name, value)| {
                    name.eq_ignore_ascii_case("authorization") && value.trim() == "Basic dmlnaWw6czNjcmV0"
                })
            });
            let chunked = path == "/chunked";
            let digest = path == "/digest.jpg";
            let snapshot = path == "/snapshot.jpg" || digest;
            let refusal = if path != "/stream" && !chunked && !snapshot {
                Some("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            } else if digest && !digest_answered(&head) {
                Some(DIGEST_CHALLENGE)
            } else if !digest && !authorised {
                Some("HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"cam\"\r\nContent-Length: 0\r\n\r\n")
            } else {
                None
            };
            if let Some(refusal) = refusal {
                refused.fetch_add(1, Ordering::Relaxed);
                let _ = connection.write_all(refusal.as_bytes());
                continue;
            }
            if snapshot {
                snapshots.fetch_add(1, Ordering::Relaxed);
                let head =
                    format!("HTTP/1.0 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n", then.len());
                let _ = connection.write_all(head.as_bytes()).and_then(|_| connection.write_all(&then));
                continue;
            }
            let is_first = served.fetch_add(1, Ordering::Relaxed) == 0;
            let jpeg = if is_first { first.clone() } else { then.clone() };
            // Each connection on its own thread: the refusals above go on being answered.
            std::thread::spawn(move || {
                let part = |jpeg: &[u8]| {
                    let mut part =
                        format!("--frame\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n", jpeg.len())
                            .into_bytes();
                    part.extend_from_slice(jpeg);
                    part.extend_from_slice(b"\r\n");
                    if chunked {
                        // Two chunks a part, split anywhere.
                        let (a, b) = part.split_at(part.len() / 3);
                        let mut out = Vec::new();
                        for piece in [a, b] {
                            out.extend(format!("{:X}\r\n", piece.len()).as_bytes());
                            out.extend_from_slice(piece);
                            out.extend_from_slice(b"\r\n");
                        }
                        return out;
                    }
                    part
                };
                let header = if chunked {
                    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: multipart/x-mixed-replace;boundary=frame\r\n\r\n"
                } else {
                    "HTTP/1.0 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=frame\r\n\r\n"
                };
                if connection.write_all(header.as_bytes()).is_err() {
                    return;
                }
                let mut sent = 0;
                while !is_first || sent < parts {
                    if connection.write_all(&part(&jpeg)).is_err() {
                        return;
                    }
                    sent += 1;
                    std::thread::sleep(std::time::Duration::from_millis(40));
                }
                let whole = part(&jpeg);
                let _ = connection.write_all(&whole[..whole.len() / 2]);
                // Dropped: the camera "restarts" in the middle of a frame.
            });
        }
    });
    camera
}

/// A request's head as a camera reads it: up to the blank line (at most 8 KiB).
fn request_head(connection: &mut std::net::TcpStream) -> String {
    use std::io::Read;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
        match connection.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// What `/digest.jpg` answers a request without a right Digest answer: Digest only (RFC
/// 7616, MD5, qop auth), as IP cameras' snapshot URLs ask.
const DIGEST_CHALLENGE: &str = "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Digest realm=\"cam\", \
     qop=\"auth\", algorithm=MD5, nonce=\"5e6f3a\"\r\nContent-Length: 0\r\n\r\n";

/// Whether a request head carries the right Digest answer for user "vigil", password
/// "s3cret", to DIGEST_CHALLENGE, worked out here as a camera does.
fn digest_answered(head: &str) -> bool {
    let Some(answer) = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("authorization").then(|| value.trim().strip_prefix("Digest ")).flatten()
    }) else {
        return false;
    };
    let field = |name: &str| {
        answer.split(',').find_map(|kv| kv.trim().strip_prefix(&format!("{name}="))).map(|v| v.trim_matches('"'))
    };
    let md5 = |text: String| format!("{:x}", <md5::Md5 as md5::Digest>::digest(text.as_bytes()));
    let (Some(uri), Some(nc), Some(cnonce), Some(response)) =
        (field("uri"), field("nc"), field("cnonce"), field("response"))
    else {
        return false;
    };
    let ha1 = md5("vigil:cam:s3cret".into());
    let ha2 = md5(format!("GET:{uri}"));
    field("username") == Some("vigil")
        && field("nonce") == Some("5e6f3a")
        && uri == "/digest.jpg"
        && response == md5(format!("{ha1}:5e6f3a:{nc}:{cnonce}:auth:{ha2}"))
}

/// A camera [`serve`] started.
pub struct Camera {
    pub port: u16,
    /// Streams served (each connection that got a 200).
    pub streams: Arc<AtomicUsize>,
    /// Requests answered 401 or 404.
    pub refusals: Arc<AtomicUsize>,
    /// Snapshots served.
    pub snapshots: Arc<AtomicUsize>,
}

/// What a hostile camera ([`serve_hostile`]) does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Hostile {
    /// A snapshot URL: the first `good` snapshots are whole, then each answer's head comes
    /// at once and its body one byte a second, for ever.
    TrickledSnapshots { good: usize },
    /// A multipart stream whose parts are JPEGs cut in half (no end-of-image marker), each
    /// with the Content-Length of what is sent: the framing is right, the images are not.
    CutJpegs,
}

/// Starts a camera on 127.0.0.1 that misbehaves as `how` says, serving `jpeg`; no
/// authentication. Counts the requests it answered in `snapshots` (snapshots) or `streams`.
pub fn serve_hostile(jpeg: Vec<u8>, how: Hostile) -> Camera {
    use std::io::Write;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let camera = Camera { port, streams: Arc::default(), refusals: Arc::default(), snapshots: Arc::default() };
    let (streams, snapshots) = (camera.streams.clone(), camera.snapshots.clone());
    std::thread::spawn(move || {
        for connection in listener.incoming() {
            let Ok(mut connection) = connection else { continue };
            request_head(&mut connection);
            let jpeg = jpeg.clone();
            match how {
                Hostile::TrickledSnapshots { good } => {
                    let n = snapshots.fetch_add(1, Ordering::Relaxed);
                    std::thread::spawn(move || -> std::io::Result<()> {
                        let head = format!(
                            "HTTP/1.0 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
                            jpeg.len()
                        );
                        connection.write_all(head.as_bytes())?;
                        if n < good {
                            return connection.write_all(&jpeg);
                        }
                        for b in &jpeg {
                            connection.write_all(std::slice::from_ref(b))?;
                            std::thread::sleep(std::time::Duration::from_secs(1));
                        }
                        Ok(())
                    });
                }
                Hostile::CutJpegs => {
                    streams.fetch_add(1, Ordering::Relaxed);
                    std::thread::spawn(move || -> std::io::Result<()> {
                        let half = &jpeg[..jpeg.len() / 2];
                        connection.write_all(
                            b"HTTP/1.0 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=frame\r\n\r\n",
                        )?;
                        loop {
                            let head = format!(
                                "--frame\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
                                half.len()
                            );
                            connection.write_all(head.as_bytes())?;
                            connection.write_all(half)?;
                            connection.write_all(b"\r\n")?;
                            std::thread::sleep(std::time::Duration::from_millis(40));
                        }
                    });
                }
            }
        }
    });
    camera
}
