//! The HTTP MJPEG source (`kind = "mjpeg"`): the cameras that serve JPEG over plain HTTP
//! (ESP32-CAM, old phones running a webcam app, many cheap IP cameras). Either a
//! `multipart/x-mixed-replace` stream, one JPEG per part, or a single-JPEG snapshot URL,
//! asked again at the camera's `fps`; which one the server's `Content-Type` says.
//!
//! HTTP over a std `TcpStream`, on the source's own thread: a GET (HTTP/1.0), the response
//! head parsed by `httparse`, a chunked body decoded by [`Chunked`], the multipart body read
//! by [`Parts`]. Everything read is bounded (head, part headers, part size, chunk size, the
//! time one frame takes) and waits beat the source's heartbeat and end when it is told to
//! stop, so a server that stalls, lies about lengths or sends garbage ends the connection
//! with a clear error, and [`super::supervise`] opens it again. Basic or Digest
//! authentication (from the URL or `username` + `password_file`), whichever the camera's 401
//! asks for: nothing is sent before it asks; the password is never logged. Not supported, with an
//! error that says so: HTTPS.

use std::io::{BufRead, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use image::RgbImage;
use serde::Deserialize;
use serde_json::Value;

use super::url::{CameraUrl, Scheme};
use super::{Backoff, Connection, SourceContext};
use crate::settings::section_as;

/// `kind = "mjpeg"`: an HTTP camera.
#[derive(Clone, PartialEq)]
pub struct MjpegSettings {
    pub url: CameraUrl,
}

impl std::fmt::Debug for MjpegSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MjpegSettings {{ url: {} }}", self.url)
    }
}

/// The keys of an mjpeg source, as written.
#[derive(Debug, Default, Deserialize)]
struct RawMjpeg {
    url: Option<String>,
    username: Option<String>,
    password_file: Option<PathBuf>,
}

/// Checks an mjpeg source's keys (all but `kind`); `key` is the table's path, `dir` the
/// folder relative paths start from.
pub(super) fn check(value: Value, key: &str, dir: &Path, problems: &mut Vec<String>) -> Option<MjpegSettings> {
    let raw: RawMjpeg = section_as(value, key, problems, "not a key of an mjpeg source")?;
    let url = super::url::check(raw.url, raw.username, raw.password_file, Scheme::Http, key, dir, problems)?;
    Some(MjpegSettings { url })
}

/// Connects to the camera and streams its frames into the context's slot, reconnecting
/// whenever the connection fails or ends, until told to stop.
pub(super) fn run(settings: &MjpegSettings, ctx: &SourceContext) {
    let what = format!("url={}", settings.url);
    super::supervise(ctx, &what, &mut Backoff::reconnect(), || Http::open(&settings.url, ctx));
}

/// How long connecting to one address may take (the first two addresses a name has are tried).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a response head, a snapshot, or one part of a stream may take in all, and how
/// long the camera may send nothing.
const FRAME_TIMEOUT: Duration = Duration::from_secs(15);
/// How often a wait for the camera's bytes beats the heartbeat and looks for a stop.
const POLL: Duration = Duration::from_millis(500);
/// The longest response head and part head read.
const MAX_HEAD: usize = 16 << 10;
/// The largest JPEG taken (a 4K frame at high quality is 2-4 MB).
pub const MAX_PART: usize = 32 << 20;
/// The largest frame decoded: 8192 pixels a side, 256 MiB in all.
const MAX_SIDE: u32 = 8192;

/// An open camera: a stream of parts, or a snapshot URL asked again for each frame.
pub(super) enum Http {
    Stream { parts: Parts<Box<dyn Read>>, mode: String, jpeg: Option<Vec<u8>> },
    Snapshot { url: CameraUrl, auth: Auth, first: Option<(RgbImage, Vec<u8>)>, last: Instant, jpeg: Option<Vec<u8>> },
}

impl Http {
    pub(super) fn open(url: &CameraUrl, ctx: &SourceContext) -> Result<Http, String> {
        let mut auth = Auth::default();
        let (head, body) = request(url, &mut auth, ctx)?;
        let chunked = if head.chunked { ", chunked" } else { "" };
        match head.body {
            Body::Multipart(boundary) => {
                // Inside the log's mode="…": no double quotes of its own.
                let shown = crate::service::logging::shown(&boundary).replace('"', "'");
                let mode = format!("multipart stream{chunked}, boundary {shown}");
                Ok(Http::Stream { parts: Parts::new(body, &boundary), mode, jpeg: None })
            }
            Body::Jpeg(length) => {
                let bytes = read_body(body, length)?;
                let first = decode(&bytes)?;
                Ok(Http::Snapshot {
                    url: url.clone(),
                    auth,
                    first: Some((first, bytes)),
                    last: Instant::now(),
                    jpeg: None,
                })
            }
            // `request` answers a challenge or says it was refused.
            Body::Challenge(_) => Err(REFUSED.into()),
        }
    }
}

impl Connection for Http {
    const NOUN: &'static str = "camera";

    fn describe(&self) -> String {
        match self {
            Http::Stream { mode, .. } => format!("mode=\"{mode}\""),
            Http::Snapshot { .. } => "mode=\"snapshots\"".into(),
        }
    }

    fn take_jpeg(&mut self) -> Option<Vec<u8>> {
        match self {
            Http::Stream { jpeg, .. } | Http::Snapshot { jpeg, .. } => jpeg.take(),
        }
    }

    fn frame(&mut self, ctx: &SourceContext) -> Result<RgbImage, String> {
        match self {
            Http::Stream { parts, jpeg, .. } => {
                let bytes = parts.next_part()?;
                let image = decode(&bytes)?;
                *jpeg = Some(bytes);
                Ok(image)
            }
            Http::Snapshot { url, auth, first, last, jpeg } => {
                if let Some((image, bytes)) = first.take() {
                    *jpeg = Some(bytes);
                    return Ok(image);
                }
                let interval = Duration::from_secs_f64(1.0 / ctx.fps);
                if !ctx.sleep(interval.saturating_sub(last.elapsed())) {
                    return Err("stopped".into());
                }
                *last = Instant::now();
                let (head, body) = request(url, auth, ctx)?;
                match head.body {
                    Body::Jpeg(length) => {
                        let bytes = read_body(body, length)?;
                        let image = decode(&bytes)?;
                        *jpeg = Some(bytes);
                        Ok(image)
                    }
                    Body::Multipart(_) => Err("the snapshot URL now serves a stream".into()),
                    Body::Challenge(_) => Err(REFUSED.into()),
                }
            }
        }
    }
}

/// How far before a part's end its JPEG's end-of-image marker may be (cameras pad parts
/// with line ends or zeros).
const MAX_PADDING: usize = 64;

/// A part's JPEG as a frame, within [`MAX_SIDE`] pixels a side. A JPEG cut short (no
/// end-of-image marker at its end: a camera that lost power or a connection cut mid-frame)
/// is refused: the decoder would fill its missing rows with grey, and the model would see
/// a frame that never was.
pub fn decode(bytes: &[u8]) -> Result<RgbImage, String> {
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return Err(format!("a part of {} bytes is not a JPEG image", bytes.len()));
    }
    let tail = &bytes[bytes.len().saturating_sub(MAX_PADDING + 2)..];
    if memchr::memmem::rfind(tail, &[0xFF, 0xD9]).is_none() {
        return Err(format!("a JPEG of {} bytes is cut short (it has no end-of-image marker)", bytes.len()));
    }
    let mut reader = image::ImageReader::with_format(std::io::Cursor::new(bytes), image::ImageFormat::Jpeg);
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(256 << 20);
    reader.limits(limits);
    let image = reader.decode().map_err(|e| format!("a JPEG of {} bytes cannot be decoded: {e}", bytes.len()))?;
    Ok(image.into_rgb8())
}

/// What a response carries.
#[derive(Debug, PartialEq)]
pub enum Body {
    /// `multipart/x-mixed-replace` with this boundary (as the header gives it).
    Multipart(Vec<u8>),
    /// One JPEG, of this length when the server says.
    Jpeg(Option<usize>),
    /// A 401 with its challenges (the WWW-Authenticate values): [`request`] answers them.
    Challenge(String),
}

/// A response head, read.
#[derive(Debug, PartialEq)]
pub struct Head {
    pub body: Body,
    /// `Transfer-Encoding: chunked` (ESP-IDF's web server sends its streams so).
    pub chunked: bool,
}

/// The camera's socket, read patiently: each read waits in [`POLL`] steps, beating the
/// source's heartbeat, and fails when the source is told to stop, nothing has come for
/// [`FRAME_TIMEOUT`], or the whole answer passes its `deadline` (a snapshot's head and body
/// together: a camera trickling a byte a second never resets it).
struct Patient {
    stream: TcpStream,
    ctx: SourceContext,
    deadline: Option<Instant>,
}

impl Patient {
    fn past_deadline(&self) -> std::io::Result<()> {
        match self.deadline {
            Some(deadline) if Instant::now() >= deadline => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("the camera's answer took over {} s", FRAME_TIMEOUT.as_secs()),
            )),
            _ => Ok(()),
        }
    }
}

impl Read for Patient {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::io::ErrorKind;
        let began = Instant::now();
        loop {
            self.past_deadline()?;
            match self.stream.read(buf) {
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {
                    self.ctx.heartbeat.beat();
                    if self.ctx.stopped() {
                        return Err(std::io::Error::other("stopped"));
                    }
                    if began.elapsed() >= FRAME_TIMEOUT {
                        return Err(std::io::Error::new(
                            ErrorKind::TimedOut,
                            format!("the camera sent nothing for {} s", FRAME_TIMEOUT.as_secs()),
                        ));
                    }
                }
                other => return other,
            }
        }
    }
}

/// Sends the GET (HTTP/1.0: servers then send a plain body, not a chunked one) and reads
/// the response head; the body follows from the reader returned.
/// How a camera wants the credentials. The first request goes without them, so a password
/// is never sent in Basic's plain text to a camera that asks for Digest; the camera's 401
/// says which scheme it wants, and the answerer it sets up is kept for the next requests
/// (a snapshot URL's, counting Digest nonces).
#[derive(Default)]
pub struct Auth {
    client: Option<http_auth::PasswordClient>,
}

impl Auth {
    /// Takes a 401's challenges (its WWW-Authenticate values; Digest preferred to Basic).
    pub fn challenged(&mut self, challenges: &str) -> Result<(), String> {
        let client = http_auth::PasswordClient::try_from(challenges)
            .map_err(|e| format!("the camera asks for credentials in a way vigil cannot answer (HTTP 401: {e})"))?;
        self.client = Some(client);
        Ok(())
    }

    /// The Authorization header's value for a GET of `url`: none without a user name, or
    /// before the camera has said how it wants it.
    pub fn authorization(&mut self, url: &CameraUrl) -> Result<Option<String>, String> {
        let (Some(user), Some(client)) = (&url.username, self.client.as_mut()) else { return Ok(None) };
        let password = url.password.as_deref().unwrap_or("");
        let params =
            http_auth::PasswordParams { username: user, password, uri: &url.target, method: "GET", body: None };
        client.respond(&params).map(Some).map_err(|e| format!("cannot answer the camera's challenge: {e}"))
    }
}

/// What a 401 says.
const REFUSED: &str = "the camera refused the credentials (HTTP 401): check the user name and password \
                       (`username`, `password_file`, or user:password@ in the url)";

/// Sends a GET for the URL and reads the response head; a 401's challenge is answered once,
/// on a new request, when the URL has a user.
fn request(url: &CameraUrl, auth: &mut Auth, ctx: &SourceContext) -> Result<(Head, Box<dyn Read>), String> {
    // One deadline for the answer, a challenge answered on the way included.
    let deadline = Instant::now() + FRAME_TIMEOUT;
    let mut challenged = false;
    loop {
        let (head, body) = exchange(url, auth.authorization(url)?.as_deref(), ctx, deadline)?;
        match head.body {
            Body::Challenge(challenges) if url.username.is_some() && !challenged => {
                auth.challenged(&challenges)?;
                challenged = true;
            }
            Body::Challenge(_) => return Err(REFUSED.into()),
            _ => return Ok((head, body)),
        }
    }
}

/// One request on a new connection (HTTP/1.0: the camera closes it after the body). The
/// head must come by `deadline`, and a snapshot's body too; a stream's parts have deadlines
/// of their own ([`Parts`]).
fn exchange(
    url: &CameraUrl,
    authorization: Option<&str>,
    ctx: &SourceContext,
    deadline: Instant,
) -> Result<(Head, Box<dyn Read>), String> {
    let addresses: Vec<_> = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {}: {e}", url.host))?
        .take(2)
        .collect();
    let mut last = format!("{} has no address", url.host);
    let mut stream = None;
    for address in addresses {
        ctx.heartbeat.beat();
        match TcpStream::connect_timeout(&address, CONNECT_TIMEOUT) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = format!("cannot connect to {address}: {e}"),
        }
    }
    let mut stream = stream.ok_or(last)?;
    stream
        .set_read_timeout(Some(POLL))
        .and_then(|_| stream.set_write_timeout(Some(FRAME_TIMEOUT)))
        .map_err(|e| e.to_string())?;
    let mut head = format!(
        "GET {} HTTP/1.0\r\nHost: {}\r\nUser-Agent: vigil/{}\r\nAccept: multipart/x-mixed-replace, image/jpeg\r\n",
        url.target,
        url.authority(),
        env!("CARGO_PKG_VERSION")
    );
    if let Some(authorization) = authorization {
        head += &format!("Authorization: {authorization}\r\n");
    }
    head += "\r\n";
    stream.write_all(head.as_bytes()).map_err(|e| format!("sending the request: {e}"))?;
    let mut socket = Patient { stream, ctx: ctx.clone(), deadline: Some(deadline) };
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let length = loop {
        if let Some(length) = head_length(&buffer)? {
            break length;
        }
        if buffer.len() > MAX_HEAD {
            return Err(format!("the response head is over {MAX_HEAD} bytes"));
        }
        if Instant::now() >= deadline {
            return Err(format!("the response head took over {} s", FRAME_TIMEOUT.as_secs()));
        }
        let n = socket.read(&mut chunk).map_err(|e| format!("reading the response: {e}"))?;
        if n == 0 {
            return Err("the camera closed the connection before answering".into());
        }
        buffer.extend_from_slice(&chunk[..n]);
    };
    let rest = buffer.split_off(length);
    let head = parse_head(&buffer)?;
    if matches!(head.body, Body::Multipart(_)) {
        socket.deadline = None;
    }
    let body: Box<dyn Read> = Box::new(std::io::Cursor::new(rest).chain(socket));
    let body = if head.chunked { Box::new(Chunked::new(body)) } else { body };
    Ok((head, body))
}

/// The length of a complete response head at the start of `bytes`, if it is all there.
fn head_length(bytes: &[u8]) -> Result<Option<usize>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    match httparse::Response::new(&mut headers).parse(bytes) {
        Ok(httparse::Status::Complete(n)) => Ok(Some(n)),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(e) => Err(format!("not an HTTP response ({e})")),
    }
}

/// Reads a response head (status line and headers, ending with the blank line; CRLF or LF
/// line ends): what the body is, or an error that says what to change.
pub fn parse_head(head: &[u8]) -> Result<Head, String> {
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
            // Every challenge offered (a camera may send one header per scheme).
            let challenges: Vec<String> = response
                .headers
                .iter()
                .filter(|h| h.name.eq_ignore_ascii_case("WWW-Authenticate"))
                .map(|h| String::from_utf8_lossy(h.value).trim().to_string())
                .collect();
            if challenges.is_empty() {
                return Err(REFUSED.into());
            }
            return Ok(Head { body: Body::Challenge(challenges.join(", ")), chunked: false });
        }
        403 => return Err("the camera forbids this URL to this user (HTTP 403)".into()),
        404 => return Err("the camera has no such path (HTTP 404): check the url's path".into()),
        _ => {
            let reason = crate::service::logging::shown(response.reason.unwrap_or("").as_bytes());
            return Err(format!("the camera answered HTTP {code} {reason}"));
        }
    }
    let chunked = match header("Transfer-Encoding") {
        None => false,
        Some(t) if t.eq_ignore_ascii_case("chunked") => true,
        Some(t) if t.eq_ignore_ascii_case("identity") => false,
        Some(t) => {
            let t = crate::service::logging::shown(t.as_bytes());
            return Err(format!("the camera sends its body with transfer encoding {t}, which vigil does not read"));
        }
    };
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
        let boundary = boundary.as_bytes().to_vec();
        return Ok(Head { body: Body::Multipart(boundary), chunked });
    }
    if lower.starts_with("image/jpeg") || lower.starts_with("image/jpg") {
        let length = match header("Content-Length") {
            None => None,
            Some(l) => match l.parse::<usize>() {
                Ok(n) if n <= MAX_PART => Some(n),
                _ => return Err(format!("the snapshot's Content-Length {l:?} is not a size up to {MAX_PART} bytes")),
            },
        };
        return Ok(Head { body: Body::Jpeg(length), chunked });
    }
    Err(format!(
        "the URL serves {} rather than an MJPEG stream or a JPEG snapshot: check the url",
        crate::service::logging::shown(content_type.as_bytes())
    ))
}

/// A snapshot's body: `length` bytes, or up to the end of the connection.
fn read_body(body: Box<dyn Read>, length: Option<usize>) -> Result<Vec<u8>, String> {
    let limit = length.unwrap_or(MAX_PART + 1);
    let mut bytes = Vec::new();
    // capped: by `take`, at the length the head gave or one byte past the largest part.
    body.take(limit as u64).read_to_end(&mut bytes).map_err(|e| format!("reading the snapshot: {e}"))?;
    match length {
        Some(n) if bytes.len() < n => Err(format!("the snapshot ended after {} of {n} bytes", bytes.len())),
        None if bytes.len() > MAX_PART => Err(format!("the snapshot is over {MAX_PART} bytes")),
        _ => Ok(bytes),
    }
}

/// A `Transfer-Encoding: chunked` body, decoded: each chunk's hexadecimal size line, its
/// bytes and their line end; a zero size ends it. Size lines are bounded, and so are chunks
/// (at most [`MAX_PART`]).
pub struct Chunked<R> {
    inner: std::io::BufReader<R>,
    /// Bytes left in the current chunk.
    left: usize,
    /// Past the chunk of size zero.
    done: bool,
}

impl<R: Read> Chunked<R> {
    pub fn new(inner: R) -> Chunked<R> {
        Chunked { inner: std::io::BufReader::new(inner), left: 0, done: false }
    }

    fn line(&mut self) -> std::io::Result<String> {
        let mut line = Vec::new();
        (&mut self.inner).take(80).read_until(b'\n', &mut line)?;
        if !line.ends_with(b"\n") {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "a chunk size line is cut or over 80 bytes",
            ));
        }
        Ok(String::from_utf8_lossy(&line).trim().to_string())
    }
}

impl<R: Read> Read for Chunked<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            let line = self.line()?;
            let size = line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size, 16)
                .ok()
                .filter(|&n| n <= MAX_PART)
                .ok_or_else(|| bad("a chunk size is not a hexadecimal number up to the largest part"))?;
            if size == 0 {
                self.done = true;
                return Ok(0);
            }
            self.left = size;
        }
        let most = buf.len().min(self.left);
        let n = self.inner.read(&mut buf[..most])?;
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the stream ended inside a chunk"));
        }
        self.left -= n;
        if self.left == 0 && !self.line()?.is_empty() {
            return Err(bad("a chunk is longer than its size says"));
        }
        Ok(n)
    }
}

/// The parts of a `multipart/x-mixed-replace` body, read one after the other: each after a
/// `--boundary` line and its headers, `Content-Length` bytes long when a part says so, else
/// up to the next boundary. Line ends are CRLF or LF. A boundary the header gives with its
/// leading dashes already (`boundary=--frame` for `--frame` lines) is found too. Bounded: a
/// part head over [`MAX_HEAD`], a part over [`MAX_PART`], a part that takes over
/// [`FRAME_TIMEOUT`] or a stream that ends inside a part is an error.
pub struct Parts<R> {
    inner: R,
    buffer: Vec<u8>,
    /// `\n--boundary` (and `\nboundary` when the boundary starts with dashes): what ends a part
    /// without a length, and starts the next.
    delimiters: Vec<Vec<u8>>,
    /// When the part being read was begun.
    began: Instant,
}

impl<R: Read> Parts<R> {
    pub fn new(inner: R, boundary: &[u8]) -> Parts<R> {
        let mut delimiters = vec![[b"\n--", boundary].concat()];
        if boundary.starts_with(b"--") {
            delimiters.push([b"\n", boundary].concat());
        }
        // The body's first boundary comes without a line end before it.
        Parts { inner, buffer: b"\n".to_vec(), delimiters, began: Instant::now() }
    }

    /// The next part's bytes.
    pub fn next_part(&mut self) -> Result<Vec<u8>, String> {
        self.began = Instant::now();
        // Up to and past the boundary (a preamble or a previous part's line end before it).
        let (at, length) = self.find_delimiter(MAX_PART, "the bytes before a boundary")?;
        self.buffer.drain(..at + length);
        // The rest of the boundary line ("--" at the end of the stream), then the headers.
        let end = self.find(b"\n", MAX_HEAD, "a boundary line")?;
        if self.buffer[..end].starts_with(b"--") {
            return Err("the camera ended the stream".into());
        }
        self.buffer.drain(..end + 1);
        let mut length = None;
        let mut head = 0;
        loop {
            let end = self.find(b"\n", MAX_HEAD.saturating_sub(head), "a part's headers")?;
            head += end + 1;
            let line: Vec<u8> = self.buffer.drain(..end + 1).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\r', '\n']);
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.trim().eq_ignore_ascii_case("Content-Length") {
                    length = match value.trim().parse::<usize>() {
                        Ok(n) if n <= MAX_PART => Some(n),
                        _ => {
                            let value = crate::service::logging::shown(value.trim().as_bytes());
                            return Err(format!(
                                "a part's Content-Length {value} is not a size up to {MAX_PART} bytes"
                            ));
                        }
                    };
                }
            }
        }
        let part = match length {
            Some(length) => {
                while self.buffer.len() < length {
                    self.read_more("a part")?;
                }
                let part: Vec<u8> = self.buffer.drain(..length).collect();
                // The next boundary may follow with or without a line end.
                self.buffer.insert(0, b'\n');
                part
            }
            None => {
                let (at, _) = self.find_delimiter(MAX_PART, "a part")?;
                let mut part: Vec<u8> = self.buffer.drain(..at).collect();
                if part.ends_with(b"\r") {
                    part.pop();
                }
                part
            }
        };
        if self.buffer.capacity() > 4 << 20 && self.buffer.len() < self.buffer.capacity() / 4 {
            self.buffer.shrink_to(self.buffer.len().max(1 << 20));
        }
        Ok(part)
    }

    fn find_delimiter(&mut self, cap: usize, what: &str) -> Result<(usize, usize), String> {
        let delimiters = std::mem::take(&mut self.delimiters);
        let found = self.find_any(&delimiters, cap, what);
        self.delimiters = delimiters;
        found
    }

    fn find(&mut self, needle: &[u8], cap: usize, what: &str) -> Result<usize, String> {
        self.find_any(&[needle.to_vec()], cap, what).map(|(at, _)| at)
    }

    /// Where the first of `needles` starts in the buffer and its length, reading more as
    /// needed; `cap` bytes at most before it.
    fn find_any(&mut self, needles: &[Vec<u8>], cap: usize, what: &str) -> Result<(usize, usize), String> {
        let longest = needles.iter().map(Vec::len).max().unwrap_or(1);
        let mut searched = 0;
        loop {
            let found = needles
                .iter()
                .filter_map(|n| memchr::memmem::find(&self.buffer[searched..], n).map(|at| (searched + at, n.len())))
                .min();
            match found {
                Some((at, _)) if at > cap => return Err(format!("{what} is over {cap} bytes")),
                Some(found) => return Ok(found),
                None => {}
            }
            searched = self.buffer.len().saturating_sub(longest - 1);
            if searched > cap {
                return Err(format!("{what} is over {cap} bytes"));
            }
            self.read_more(what)?;
        }
    }

    fn read_more(&mut self, what: &str) -> Result<(), String> {
        if self.began.elapsed() > FRAME_TIMEOUT {
            return Err(format!("{what} took over {} s", FRAME_TIMEOUT.as_secs()));
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// No credentials before the camera asks; then Basic, or Digest as RFC 7616's MD5 example
    /// (section 3.9.1) challenges: the answer carries the response its cnonce gives,
    /// checked here by recomputing it.
    #[test]
    fn a_basic_or_digest_challenge_is_answered() {
        let url = CameraUrl::parse("http://Mufasa:Circle%20of%20Life@cam/dir/index.html", Scheme::Http).unwrap();
        let mut auth = Auth::default();
        assert_eq!(auth.authorization(&url), Ok(None), "nothing before the camera asks");
        auth.challenged("Basic realm=\"cam\"").unwrap();
        let basic = auth.authorization(&url).unwrap().unwrap();
        assert_eq!(basic, format!("Basic {}", base64(b"Mufasa:Circle of Life")));
        auth.challenged(
            "Digest realm=\"http-auth@example.org\", qop=\"auth, auth-int\", algorithm=MD5, \
             nonce=\"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v\", opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\"",
        )
        .unwrap();
        let answer = auth.authorization(&url).unwrap().unwrap();
        let field = |name: &str| {
            answer
                .split(", ")
                .find_map(|kv| kv.trim_start_matches("Digest ").strip_prefix(&format!("{name}=")))
                .map(|v| v.trim_matches('"').to_string())
        };
        assert_eq!(field("username").as_deref(), Some("Mufasa"), "{answer}");
        assert_eq!(field("uri").as_deref(), Some("/dir/index.html"), "{answer}");
        assert_eq!(field("qop").as_deref(), Some("auth"), "{answer}");
        assert!(!answer.contains("Circle"), "no password in the answer: {answer}");
        let md5 = |text: String| format!("{:x}", <md5::Md5 as md5::Digest>::digest(text.as_bytes()));
        let ha1 = md5("Mufasa:http-auth@example.org:Circle of Life".into());
        let ha2 = md5("GET:/dir/index.html".into());
        let (nonce, nc, cnonce) = (field("nonce").unwrap(), field("nc").unwrap(), field("cnonce").unwrap());
        assert_eq!(field("response").unwrap(), md5(format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")));
    }

    /// Standard base64 with padding (what a Basic answer holds).
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
            Head { body: Body::Multipart(b"--frame".to_vec()), chunked: false }
        );
        assert_eq!(
            head("HTTP/1.0 200 OK\ncontent-type: image/jpeg\ncontent-length: 1234\n\n").unwrap(),
            Head { body: Body::Jpeg(Some(1234)), chunked: false }
        );
        assert_eq!(
            head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: multipart/x-mixed-replace;boundary=123456789000000000000987654321\r\n\r\n").unwrap(),
            Head { body: Body::Multipart(b"123456789000000000000987654321".to_vec()), chunked: true }
        );
        assert_eq!(
            head("HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"cam\"\r\nwww-authenticate: Digest realm=\"cam\", nonce=\"1\"\r\n\r\n").unwrap(),
            Head { body: Body::Challenge("Basic realm=\"cam\", Digest realm=\"cam\", nonce=\"1\"".into()), chunked: false },
            "every challenge, for the Digest answerer"
        );
        for (text, why) in [
            ("HTTP/1.1 401 Unauthorized\r\n\r\n", "refused the credentials"),
            ("HTTP/1.1 404 Not Found\r\n\r\n", "no such path"),
            ("HTTP/1.1 500 Oops\r\n\r\n", "HTTP 500 \"Oops\""),
            ("HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n", "serves \"text/html\""),
            ("HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace\r\n\r\n", "no boundary"),
            ("HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: 99999999999\r\n\r\n", "Content-Length"),
            ("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Type: image/jpeg\r\n\r\n", "\"gzip\""),
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

    /// Hands out at most 7 bytes per read, as a slow network does.
    struct Trickle(std::io::Cursor<Vec<u8>>);

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(7);
            self.0.read(&mut buf[..n])
        }
    }

    /// Parts with and without lengths, a preamble, and the closing boundary, delivered a few
    /// bytes per read; with CRLF line ends, then LF only; then chunked, as ESP-IDF sends it.
    #[test]
    fn parts_are_read_with_and_without_lengths_whatever_the_line_ends() {
        let (a, b) = (jpeg(16), jpeg(24));
        let mut body = b"preamble\r\n--frame\r\nContent-Type: image/jpeg\r\n".to_vec();
        body.extend(format!("Content-Length: {}\r\n\r\n", a.len()).as_bytes());
        body.extend(&a);
        // No line end between a part with a length and the next boundary.
        body.extend(b"--frame\r\nContent-Type: image/jpeg\r\n\r\n");
        body.extend(&b);
        body.extend(b"\r\n--frame\r\n\r\n");
        body.extend(&a);
        body.extend(b"\r\n--frame--\r\n");
        let lf_only: Vec<u8> = {
            let mut out = format!("--frame\nContent-Length: {}\n\n", a.len()).into_bytes();
            out.extend(&a);
            out.extend(b"\n--frame\n\n");
            out.extend(&b);
            out.extend(b"\n--frame--\n");
            out
        };
        let chunked: Vec<u8> = {
            let mut out = Vec::new();
            for piece in body.chunks(1000) {
                out.extend(format!("{:x}\r\n", piece.len()).as_bytes());
                out.extend(piece);
                out.extend(b"\r\n");
            }
            out.extend(b"0\r\n\r\n");
            out
        };
        let read_all = |reader: Box<dyn Read>, boundary: &[u8]| {
            let mut parts = Parts::new(reader, boundary);
            let mut got = Vec::new();
            loop {
                match parts.next_part() {
                    Ok(part) => got.push(part),
                    Err(e) => return (got, e),
                }
            }
        };
        let (got, end) = read_all(Box::new(Trickle(std::io::Cursor::new(body.clone()))), b"frame");
        assert_eq!((got, end.as_str()), (vec![a.clone(), b.clone(), a.clone()], "the camera ended the stream"));
        let (got, end) = read_all(Box::new(std::io::Cursor::new(lf_only)), b"frame");
        assert_eq!((got, end.as_str()), (vec![a.clone(), b.clone()], "the camera ended the stream"));
        let (got, end) = read_all(Box::new(Chunked::new(Trickle(std::io::Cursor::new(chunked)))), b"frame");
        assert_eq!((got, end.as_str()), (vec![a.clone(), b.clone(), a.clone()], "the camera ended the stream"));
        // A boundary given with its dashes (`boundary=--frame`) for `--frame` lines.
        let (got, _) = read_all(Box::new(std::io::Cursor::new(body)), b"--frame");
        assert_eq!(got.len(), 3);
        assert_eq!(decode(&b).unwrap().dimensions(), (24, 8));
    }

    #[test]
    fn a_stream_cut_mid_part_or_lying_is_an_error_not_a_frame() {
        let a = jpeg(16);
        let mut cut = format!("--f\r\nContent-Length: {}\r\n\r\n", a.len()).into_bytes();
        cut.extend(&a[..a.len() / 2]);
        let mut parts = Parts::new(std::io::Cursor::new(cut), b"f");
        assert!(parts.next_part().unwrap_err().contains("ended inside a part"));
        let huge = b"--f\r\nContent-Length: 99999999999\r\n\r\n".to_vec();
        assert!(Parts::new(std::io::Cursor::new(huge), b"f").next_part().unwrap_err().contains("Content-Length"));
        let endless = std::io::Cursor::new(b"--f\r\n\r\n".to_vec()).chain(std::io::repeat(b'x'));
        let mut parts = Parts::new(endless, b"f");
        assert!(parts.next_part().unwrap_err().contains("is over"), "a part without an end is bounded");
        assert!(decode(b"<html>").unwrap_err().contains("not a JPEG"));
        // Half a JPEG: the decoder alone would make a frame of it.
        let e = decode(&a[..a.len() / 2]).unwrap_err();
        assert!(e.contains("is cut short (it has no end-of-image marker)"), "{e}");
        let mut padded = a.clone();
        padded.extend(b"\r\n\0\0\0\0");
        assert!(decode(&padded).is_ok(), "padding after the marker is allowed");
        // Part headers over the bound, in lines short and long, arriving in one read.
        for line in [vec![b'a'; 100], vec![b'a'; 20_000]] {
            let mut body = b"--f\r\n".to_vec();
            for _ in 0..400 {
                body.extend(&line);
                body.extend(b"\r\n");
            }
            let e = Parts::new(std::io::Cursor::new(body), b"f").next_part().unwrap_err();
            assert!(e.contains("a part's headers is over"), "{e}");
        }
    }
}
