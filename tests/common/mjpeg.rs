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
/// serves it. `/stream` wants user "vigil" with password "s3cret"; other paths are 404, other
/// credentials 401. The first stream it serves gives `first` as `parts` parts 40 ms apart,
/// then half a part, and the connection is cut; every later one gives `then` until the
/// client hangs up. Returns the port and the count of streams served.
pub fn serve(first: Vec<u8>, then: Vec<u8>, parts: usize) -> (u16, Arc<AtomicUsize>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let streams = Arc::new(AtomicUsize::new(0));
    let served = streams.clone();
    std::thread::spawn(move || {
        for connection in listener.incoming() {
            let Ok(mut connection) = connection else { continue };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
                match connection.read(&mut byte) {
                    Ok(1) => head.push(byte[0]),
                    _ => break,
                }
            }
            let head = String::from_utf8_lossy(&head).to_string();
            let path = head.split_whitespace().nth(1).unwrap_or_default().to_string();
            let authorised = head.lines().any(|line| {
                line.split_once(':').is_some_and(|(name, value)| {
                    name.eq_ignore_ascii_case("authorization") && value.trim() == "Basic dmlnaWw6czNjcmV0"
                })
            });
            let refusal = if path != "/stream" {
                Some("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            } else if !authorised {
                Some("HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"cam\"\r\nContent-Length: 0\r\n\r\n")
            } else {
                None
            };
            if let Some(refusal) = refusal {
                let _ = connection.write_all(refusal.as_bytes());
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
                    part
                };
                let header = "HTTP/1.0 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=frame\r\n\r\n";
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
    (port, streams)
}
