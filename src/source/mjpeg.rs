//! The HTTP MJPEG source (`kind = "mjpeg"`): the cameras that serve JPEG over plain HTTP
//! (ESP32-CAM, old phones running a webcam app, many cheap IP cameras). Either a
//! `multipart/x-mixed-replace` stream, one JPEG per part, or a single-JPEG snapshot URL,
//! asked again at the camera's `fps`; which one the server's `Content-Type` says.
//!
//! HTTP/1.1 over a std `TcpStream`, on the source's own thread: a GET, the response head
//! parsed by `httparse`, the multipart body read by [`Parts`]. Everything read is bounded
//! (head, part headers, part size) and every wait has a timeout, so a server that stalls,
//! lies about lengths or sends garbage ends the connection with a clear error, and
//! [`super::supervise`] opens it again. Basic authentication only (from the URL or
//! `username` + `password_file`); the password is never logged. Not supported, with an error
//! that says so: HTTPS, Digest authentication, chunked transfer encoding.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use image::RgbImage;
use serde::Deserialize;
use serde_json::Value;

use super::{Backoff, Connection, SourceContext};
use crate::settings::{resolve, section_as};

/// `kind = "mjpeg"`: an HTTP camera.
#[derive(Clone, PartialEq)]
pub struct MjpegSettings {
    pub url: HttpUrl,
}

impl std::fmt::Debug for MjpegSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MjpegSettings {{ url: {} }}", self.url)
    }
}

/// An `http://` URL, its credentials apart. Shown (`Display`, `Debug`) with the password
/// masked.
#[derive(Clone, PartialEq)]
pub struct HttpUrl {
    pub host: String,
    pub port: u16,
    /// Path and query, as sent in the request line (`/stream?res=vga`).
    pub target: String,
    pub username: Option<String>,
    pub password: Option<String>,
}

impl std::fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        let user = match (&self.username, &self.password) {
            (Some(u), Some(_)) => format!("{u}:***@"),
            (Some(u), None) => format!("{u}@"),
            _ => String::new(),
        };
        write!(f, "http://{user}{host}:{}{}", self.port, self.target)
    }
}

impl std::fmt::Debug for HttpUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")
    }
}

/// The longest URL taken.
const MAX_URL: usize = 2048;

impl HttpUrl {
    /// Reads `http://[user[:password]@]host[:port][/path][?query]` (user and password
    /// percent-decoded). The errors say what to change.
    pub fn parse(text: &str) -> Result<HttpUrl, String> {
        if text.len() > MAX_URL {
            return Err(format!("is over {MAX_URL} bytes"));
        }
        if text.chars().any(|c| c.is_control() || c == ' ') {
            return Err("holds spaces or control characters (percent-encode them)".into());
        }
        let Some(rest) = text.strip_prefix("http://") else {
            return Err(if text.starts_with("https://") {
                "https:// is not supported: use the camera's http:// URL (on a network you trust)".into()
            } else if text.starts_with("rtsp://") {
                "is an RTSP URL: RTSP cameras are not supported yet (most also serve MJPEG or snapshots over http://)"
                    .into()
            } else {
                "must start with http://".into()
            });
        };
        let (authority, target) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let target = if target.starts_with('?') { format!("/{target}") } else { target.to_string() };
        let target = match target.find('#') {
            Some(i) => target[..i].to_string(),
            None => target,
        };
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (username, password) = match userinfo {
            None => (None, None),
            Some(u) => {
                let (name, password) = match u.split_once(':') {
                    Some((n, p)) => (n, Some(percent_decode(p)?)),
                    None => (u, None),
                };
                (Some(percent_decode(name)?), password)
            }
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or("has an IPv6 address without its closing ]")?;
            match after.strip_prefix(':') {
                Some(p) => (host, Some(p)),
                None if after.is_empty() => (host, None),
                None => return Err("has text after the IPv6 address".into()),
            }
        } else {
            match hostport.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        if host.is_empty() {
            return Err("has no host".into());
        }
        let port = match port {
            None => 80,
            Some(p) => match p.parse::<u16>() {
                Ok(p) if p > 0 => p,
                _ => return Err(format!("has a bad port {}", crate::service::logging::shown(p.as_bytes()))),
            },
        };
        Ok(HttpUrl { host: host.to_string(), port, target, username, password })
    }
}

/// `%41` → `A` in URL user information; the result must be UTF-8.
fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
            let byte = hex
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("has a bad %-escape in its user name or password")?;
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "has a user name or password that is not UTF-8 once decoded".into())
}

/// The keys of an mjpeg source, as written.
#[derive(Debug, Default, Deserialize)]
struct RawMjpeg {
    url: Option<String>,
    username: Option<String>,
    password_file: Option<PathBuf>,
}

/// The largest password file read.
const MAX_PASSWORD_FILE: u64 = 4096;

/// Checks an mjpeg source's keys (all but `kind`); `key` is the table's path, `dir` the
/// folder relative paths start from.
pub(super) fn check(value: Value, key: &str, dir: &Path, problems: &mut Vec<String>) -> Option<MjpegSettings> {
    let raw: RawMjpeg = section_as(value, key, problems, "not a key of an mjpeg source")?;
    let Some(text) = raw.url else {
        problems.push(format!("{key}.url: missing (the camera's http:// stream or snapshot URL)"));
        return None;
    };
    let mut url = match HttpUrl::parse(&text) {
        Ok(url) => url,
        Err(why) => {
            // Never the text itself: it may hold a password.
            problems.push(format!("{key}.url: {why}"));
            return None;
        }
    };
    if let Some(name) = raw.username {
        if url.username.is_some() {
            problems.push(format!("{key}.username: the url names a user already (give it one way)"));
        }
        url.username = Some(name);
    }
    if let Some(file) = raw.password_file {
        let file = resolve(dir, &file);
        if url.password.is_some() {
            problems.push(format!("{key}.password_file: the url holds a password already (give it one way)"));
        }
        if url.username.is_none() {
            problems.push(format!("{key}.password_file: needs a user name (`username`, or user@ in the url)"));
        }
        match crate::files::read_capped(&file, MAX_PASSWORD_FILE) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) => url.password = Some(text.trim_end_matches(['\n', '\r']).to_string()),
                Err(_) => problems.push(format!("{key}.password_file: {} is not UTF-8 text", file.display())),
            },
            Err(e) => problems.push(format!("{key}.password_file: cannot read {}: {e}", file.display())),
        }
    }
    Some(MjpegSettings { url })
}

/// Connects to the camera and streams its frames into the context's slot, reconnecting
/// whenever the connection fails or ends, until told to stop.
pub(super) fn run(settings: &MjpegSettings, ctx: &SourceContext) {
    let what = format!("url={}", settings.url);
    super::supervise(ctx, &what, &mut Backoff::reconnect(), || Http::open(&settings.url));
}

/// How long connecting, and any one read or write, may take.
const TIMEOUT: Duration = Duration::from_secs(10);
/// The longest response head and part head read.
const MAX_HEAD: usize = 16 << 10;
/// The largest JPEG taken (a 4K frame at high quality is 2-4 MB).
pub const MAX_PART: usize = 32 << 20;

/// An open camera: a stream of parts, or a snapshot URL asked again for each frame.
pub(super) enum Http {
    Stream { parts: Parts<TcpStream>, head: String },
    Snapshot { url: HttpUrl, first: Option<RgbImage>, last: Instant },
}

impl Http {
    pub(super) fn open(url: &HttpUrl) -> Result<Http, String> {
        let (stream, response) = request(url)?;
        match response.kind {
            Body::Multipart(boundary) => {
                let head = format!("multipart stream (boundary {})", crate::service::logging::shown(&boundary));
                Ok(Http::Stream { parts: Parts::new(stream, response.rest, &boundary), head })
            }
            Body::Jpeg(length) => {
                let bytes = read_body(stream, response.rest, length)?;
                let first = decode(&bytes)?;
                Ok(Http::Snapshot { url: url.clone(), first: Some(first), last: Instant::now() })
            }
        }
    }
}

impl Connection for Http {
    const NOUN: &'static str = "camera";

    fn describe(&self) -> String {
        match self {
            Http::Stream { head, .. } => format!("mode=\"{head}\""),
            Http::Snapshot { .. } => "mode=\"snapshots\"".into(),
        }
    }

    fn frame(&mut self, ctx: &SourceContext) -> Result<RgbImage, String> {
        match self {
            Http::Stream { parts, .. } => decode(&parts.next_part()?),
            Http::Snapshot { url, first, last } => {
                if let Some(image) = first.take() {
                    return Ok(image);
                }
                let interval = Duration::from_secs_f64(1.0 / ctx.fps);
                if !ctx.sleep(interval.saturating_sub(last.elapsed())) {
                    return Err("stopped".into());
                }
                *last = Instant::now();
                let (stream, response) = request(url)?;
                match response.kind {
                    Body::Jpeg(length) => decode(&read_body(stream, response.rest, length)?),
                    Body::Multipart(_) => Err("the snapshot URL now serves a stream".into()),
                }
            }
        }
    }
}

/// A part's JPEG as a frame.
pub fn decode(bytes: &[u8]) -> Result<RgbImage, String> {
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return Err(format!("a part of {} bytes is not a JPEG image", bytes.len()));
    }
    crate::dataset::decode_image(bytes).map_err(|e| format!("a JPEG of {} bytes cannot be decoded: {e}", bytes.len()))
}

/// What a response carries.
#[derive(Debug, PartialEq)]
pub enum Body {
    /// `multipart/x-mixed-replace` with this boundary.
    Multipart(Vec<u8>),
    /// One JPEG, of this length when the server says.
    Jpeg(Option<usize>),
}

/// A response head read: what the body is, and the bytes read past the head.
#[derive(Debug)]
pub struct Response {
    pub kind: Body,
    pub rest: Vec<u8>,
}

/// Sends the GET and reads the response head.
fn request(url: &HttpUrl) -> Result<(TcpStream, Response), String> {
    let addresses: Vec<_> = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {}: {e}", url.host))?
        .collect();
    let mut last = format!("{} has no address", url.host);
    let mut stream = None;
    for address in addresses {
        match TcpStream::connect_timeout(&address, TIMEOUT) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = format!("cannot connect to {address}: {e}"),
        }
    }
    let mut stream = stream.ok_or(last)?;
    stream
        .set_read_timeout(Some(TIMEOUT))
        .and_then(|_| stream.set_write_timeout(Some(TIMEOUT)))
        .map_err(|e| e.to_string())?;
    let host = if url.host.contains(':') { format!("[{}]", url.host) } else { url.host.clone() };
    let mut head = format!(
        "GET {} HTTP/1.1\r\nHost: {host}:{}\r\nUser-Agent: vigil/{}\r\nAccept: multipart/x-mixed-replace, image/jpeg\r\nConnection: close\r\n",
        url.target,
        url.port,
        env!("CARGO_PKG_VERSION")
    );
    if let Some(user) = &url.username {
        let credentials = format!("{user}:{}", url.password.as_deref().unwrap_or(""));
        head += &format!("Authorization: Basic {}\r\n", base64(credentials.as_bytes()));
    }
    head += "\r\n";
    stream.write_all(head.as_bytes()).map_err(|e| format!("sending the request: {e}"))?;
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let end = buffer.windows(4).position(|w| w == b"\r\n\r\n");
        if let Some(end) = end {
            let rest = buffer.split_off(end + 4);
            return Ok((stream, Response { kind: parse_head(&buffer)?, rest }));
        }
        if buffer.len() > MAX_HEAD {
            return Err(format!("the response head is over {MAX_HEAD} bytes"));
        }
        let n = stream.read(&mut chunk).map_err(|e| format!("reading the response: {e}"))?;
        if n == 0 {
            return Err("the camera closed the connection before answering".into());
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
}

/// Reads a response head (status line and headers, ending with the blank line): what the
/// body is, or an error that says what to change.
pub fn parse_head(head: &[u8]) -> Result<Body, String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err("the response head is incomplete".into()),
        Err(e) => return Err(format!("not an HTTP response ({e})")),
    }
    let code = response.code.unwrap_or(0);
    let header = |name: &str| {
        response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_string())
    };
    match code {
        200 => {}
        401 => {
            let scheme = header("WWW-Authenticate").unwrap_or_default();
            return Err(if scheme.to_ascii_lowercase().starts_with("digest") {
                "the camera asks for Digest authentication (HTTP 401), which vigil does not speak yet: \
                 enable Basic authentication on the camera, or give it a URL without a password"
                    .into()
            } else {
                "the camera refused the credentials (HTTP 401): check the user name and password \
                 (`username`, `password_file`, or user:password@ in the url)"
                    .into()
            });
        }
        403 => return Err("the camera forbids this URL to this user (HTTP 403)".into()),
        404 => return Err("the camera has no such path (HTTP 404): check the url's path".into()),
        _ => {
            let reason = crate::service::logging::shown(response.reason.unwrap_or("").as_bytes());
            return Err(format!("the camera answered HTTP {code} {reason}"));
        }
    }
    if header("Transfer-Encoding").is_some_and(|t| !t.eq_ignore_ascii_case("identity")) {
        return Err("the camera sends a chunked body, which vigil does not read yet".into());
    }
    let content_type = header("Content-Type").unwrap_or_default();
    let lower = content_type.to_ascii_lowercase();
    if lower.starts_with("multipart/") {
        let boundary = content_type
            .split(';')
            .filter_map(|p| p.trim().split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("boundary"))
            .map(|(_, v)| v.trim().trim_matches('"').to_string())
            .filter(|b| !b.is_empty() && b.len() <= 200)
            .ok_or_else(|| "the camera's multipart stream names no boundary (1 to 200 bytes)".to_string())?;
        // Some servers write the boundary with its leading dashes already.
        let boundary = boundary.strip_prefix("--").unwrap_or(&boundary).as_bytes().to_vec();
        return Ok(Body::Multipart(boundary));
    }
    if lower.starts_with("image/jpeg") || lower.starts_with("image/jpg") {
        let length = match header("Content-Length") {
            None => None,
            Some(l) => match l.parse::<usize>() {
                Ok(n) if n <= MAX_PART => Some(n),
                _ => return Err(format!("the snapshot's Content-Length {l:?} is not a size up to {MAX_PART} bytes")),
            },
        };
        return Ok(Body::Jpeg(length));
    }
    Err(format!(
        "the URL serves {} rather than an MJPEG stream or a JPEG snapshot: check the url",
        crate::service::logging::shown(content_type.as_bytes())
    ))
}

/// A snapshot's body: `length` bytes, or up to the end of the connection.
fn read_body(stream: TcpStream, mut body: Vec<u8>, length: Option<usize>) -> Result<Vec<u8>, String> {
    let limit = length.unwrap_or(MAX_PART);
    if body.len() < limit {
        let mut rest = stream.take((limit - body.len()) as u64 + 1);
        rest.read_to_end(&mut body).map_err(|e| format!("reading the snapshot: {e}"))?;
    }
    match length {
        Some(n) if body.len() < n => Err(format!("the snapshot ended after {} of {n} bytes", body.len())),
        Some(n) => {
            body.truncate(n);
            Ok(body)
        }
        None if body.len() > MAX_PART => Err(format!("the snapshot is over {MAX_PART} bytes")),
        None => Ok(body),
    }
}

/// The parts of a `multipart/x-mixed-replace` body, read one after the other: each after a
/// `--boundary` line and its headers, `Content-Length` bytes long when a part says so, else
/// up to the next boundary. Bounded: a part head over [`MAX_HEAD`], a part over [`MAX_PART`]
/// or a stream that ends inside a part is an error.
pub struct Parts<R> {
    inner: R,
    buffer: Vec<u8>,
    /// `\r\n--boundary`: what ends a part without a length (and what starts the next).
    delimiter: Vec<u8>,
}

impl<R: Read> Parts<R> {
    /// `already`: the body bytes read with the response head.
    pub fn new(inner: R, already: Vec<u8>, boundary: &[u8]) -> Parts<R> {
        let mut delimiter = b"\r\n--".to_vec();
        delimiter.extend_from_slice(boundary);
        // The body's first boundary may come without the CRLF before it.
        let mut buffer = b"\r\n".to_vec();
        buffer.extend(already);
        Parts { inner, buffer, delimiter }
    }

    /// The next part's bytes.
    pub fn next_part(&mut self) -> Result<Vec<u8>, String> {
        // Up to and past the boundary (a preamble or a previous part's trailing bytes before it).
        let at = self.find(&self.delimiter.clone(), MAX_PART, "the bytes before a boundary")?;
        self.buffer.drain(..at + self.delimiter.len());
        // The rest of the boundary line ("--" at the end of the stream, padding), then the headers.
        let line_end = self.find(b"\r\n", MAX_HEAD, "a boundary line")?;
        if self.buffer[..line_end].starts_with(b"--") {
            return Err("the camera ended the stream".into());
        }
        self.buffer.drain(..line_end + 2);
        self.fill_to(2, "a part's headers")?;
        let head_end = if self.buffer.starts_with(b"\r\n") {
            0
        } else {
            self.find(b"\r\n\r\n", MAX_HEAD, "a part's headers")? + 2
        };
        let head = self.buffer[..head_end].to_vec();
        self.buffer.drain(..head_end + 2);
        match content_length(&head)? {
            Some(length) => {
                self.fill_to(length, "a part")?;
                Ok(self.buffer.drain(..length).collect())
            }
            None => {
                let end = self.find(&self.delimiter.clone(), MAX_PART, "a part")?;
                Ok(self.buffer.drain(..end).collect())
            }
        }
    }

    /// Where `needle` starts in the buffer, reading more as needed; `cap` bytes at most before it.
    fn find(&mut self, needle: &[u8], cap: usize, what: &str) -> Result<usize, String> {
        let mut searched = 0;
        loop {
            if let Some(i) = memchr::memmem::find(&self.buffer[searched..], needle) {
                return Ok(searched + i);
            }
            searched = self.buffer.len().saturating_sub(needle.len() - 1);
            if searched > cap {
                return Err(format!("{what} is over {cap} bytes"));
            }
            self.read_more(what)?;
        }
    }

    fn fill_to(&mut self, length: usize, what: &str) -> Result<(), String> {
        while self.buffer.len() < length {
            self.read_more(what)?;
        }
        Ok(())
    }

    fn read_more(&mut self, what: &str) -> Result<(), String> {
        let mut chunk = [0u8; 64 << 10];
        match self.inner.read(&mut chunk) {
            Ok(0) => Err(format!("the stream ended inside {what}")),
            Ok(n) => {
                self.buffer.extend_from_slice(&chunk[..n]);
                Ok(())
            }
            Err(e) => Err(format!("reading {what}: {e}")),
        }
    }
}

/// A part's `Content-Length`, if it has one.
fn content_length(head: &[u8]) -> Result<Option<usize>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut with_end = head.to_vec();
    with_end.extend_from_slice(b"\r\n");
    match httparse::parse_headers(&with_end, &mut headers) {
        Ok(httparse::Status::Complete((_, headers))) => {
            let Some(h) = headers.iter().find(|h| h.name.eq_ignore_ascii_case("Content-Length")) else {
                return Ok(None);
            };
            let text = String::from_utf8_lossy(h.value);
            match text.trim().parse::<usize>() {
                Ok(n) if n <= MAX_PART => Ok(Some(n)),
                _ => Err(format!("a part's Content-Length {:?} is not a size up to {MAX_PART} bytes", text.trim())),
            }
        }
        Ok(httparse::Status::Partial) => Err("a part's headers are incomplete".into()),
        Err(e) => Err(format!("a part's headers cannot be read ({e})")),
    }
}

/// Standard base64 with padding (for the Basic authorization header).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | (b as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_read_and_shown_without_the_password() {
        let url = HttpUrl::parse("http://admin:p%40ss@cam.lan:8080/video?res=vga").unwrap();
        assert_eq!((url.host.as_str(), url.port, url.target.as_str()), ("cam.lan", 8080, "/video?res=vga"));
        assert_eq!((url.username.as_deref(), url.password.as_deref()), (Some("admin"), Some("p@ss")));
        assert_eq!(url.to_string(), "http://admin:***@cam.lan:8080/video?res=vga");
        assert!(!format!("{:?}", MjpegSettings { url }).contains("p@ss"));
        let url = HttpUrl::parse("http://[::1]/").unwrap();
        assert_eq!((url.host.as_str(), url.port, url.target.as_str()), ("::1", 80, "/"));
        assert_eq!(HttpUrl::parse("http://10.0.0.9?x=1").unwrap().target, "/?x=1");
        for (bad, why) in [
            ("https://cam/", "https:// is not supported"),
            ("rtsp://cam/", "RTSP"),
            ("cam.lan/video", "must start with http://"),
            ("http:///video", "no host"),
            ("http://cam:0/", "bad port"),
            ("http://cam:99999/", "bad port"),
            ("http://a:%zz@cam/", "%-escape"),
            ("http://cam/a b", "spaces"),
        ] {
            let e = HttpUrl::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn base64_matches_the_rfc_vectors() {
        let got: Vec<String> =
            ["", "f", "fo", "foo", "foob", "fooba", "foobar"].iter().map(|s| base64(s.as_bytes())).collect();
        assert_eq!(got, ["", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"]);
    }

    #[test]
    fn response_heads_say_what_the_body_is_or_what_to_change() {
        let head = |s: &str| parse_head(s.as_bytes());
        assert_eq!(
            head("HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=\"--frame\"\r\n\r\n").unwrap(),
            Body::Multipart(b"frame".to_vec())
        );
        assert_eq!(
            head("HTTP/1.0 200 OK\r\ncontent-type: image/jpeg\r\ncontent-length: 1234\r\n\r\n").unwrap(),
            Body::Jpeg(Some(1234))
        );
        for (text, why) in [
            ("HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"cam\"\r\n\r\n", "refused the credentials"),
            ("HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Digest realm=\"cam\"\r\n\r\n", "Digest"),
            ("HTTP/1.1 404 Not Found\r\n\r\n", "no such path"),
            ("HTTP/1.1 500 Oops\r\n\r\n", "HTTP 500 \"Oops\""),
            ("HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n", "serves \"text/html\""),
            ("HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace\r\n\r\n", "no boundary"),
            ("HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: 99999999999\r\n\r\n", "Content-Length"),
            ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: image/jpeg\r\n\r\n", "chunked"),
            ("SSH-2.0-OpenSSH\r\n\r\n", "not an HTTP response"),
        ] {
            let e = head(text).unwrap_err();
            assert!(e.contains(why), "{text:?}: {e}");
        }
    }

    fn jpeg(width: u32) -> Vec<u8> {
        let image = RgbImage::from_fn(width, 8, |x, y| image::Rgb([(x * 9) as u8, (y * 30) as u8, 200]));
        let mut bytes = std::io::Cursor::new(Vec::new());
        image.write_to(&mut bytes, image::ImageFormat::Jpeg).unwrap();
        bytes.into_inner()
    }

    /// A body with and without part lengths, a preamble, LF-free boundary lines and the
    /// closing boundary, delivered a few bytes per read.
    #[test]
    fn parts_are_read_with_and_without_lengths() {
        let (a, b) = (jpeg(16), jpeg(24));
        let mut body = b"preamble\r\n--frame\r\nContent-Type: image/jpeg\r\n".to_vec();
        body.extend(format!("Content-Length: {}\r\n\r\n", a.len()).as_bytes());
        body.extend(&a);
        body.extend(b"\r\n--frame\r\nContent-Type: image/jpeg\r\n\r\n");
        body.extend(&b);
        body.extend(b"\r\n--frame\r\n\r\n");
        body.extend(&a);
        body.extend(b"\r\n--frame--\r\n");
        /// Hands out at most 7 bytes per read, as a slow network does.
        struct Trickle(std::io::Cursor<Vec<u8>>);
        impl Read for Trickle {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let n = buf.len().min(7);
                self.0.read(&mut buf[..n])
            }
        }
        let (first, rest) = body.split_at(5);
        let mut parts = Parts::new(Trickle(std::io::Cursor::new(rest.to_vec())), first.to_vec(), b"frame");
        assert_eq!(parts.next_part().unwrap(), a);
        assert_eq!(parts.next_part().unwrap(), b);
        assert_eq!(parts.next_part().unwrap(), a);
        assert!(parts.next_part().unwrap_err().contains("ended the stream"));
        assert_eq!(decode(&b).unwrap().dimensions(), (24, 8));
    }

    #[test]
    fn a_stream_cut_mid_part_or_lying_is_an_error_not_a_frame() {
        let a = jpeg(16);
        let mut cut = format!("--f\r\nContent-Length: {}\r\n\r\n", a.len()).into_bytes();
        cut.extend(&a[..a.len() / 2]);
        let mut parts = Parts::new(std::io::Cursor::new(cut), Vec::new(), b"f");
        assert!(parts.next_part().unwrap_err().contains("ended inside a part"));
        let huge = b"--f\r\nContent-Length: 99999999999\r\n\r\n".to_vec();
        assert!(Parts::new(std::io::Cursor::new(huge), Vec::new(), b"f")
            .next_part()
            .unwrap_err()
            .contains("Content-Length"));
        let endless = std::io::repeat(b'x');
        let mut parts = Parts::new(endless, b"--f\r\n\r\n".to_vec(), b"f");
        assert!(parts.next_part().unwrap_err().contains("is over"), "a part without an end is bounded");
        assert!(decode(b"<html>").unwrap_err().contains("not a JPEG"));
    }
}
