//! The RTSP source's guard: vigil's own reading of everything an RTSP camera sends, between
//! the camera and retina, so that what one camera can make vigil hold is bounded by vigil's
//! code.
//!
//! retina reads its connection itself and bounds nothing (its parser has a message-size
//! limit, but its client never sets one), and it cannot be handed a connection of vigil's
//! making. So the source connects to the camera itself and gives retina a loopback address
//! instead: a [`Relay`] accepts retina's connection on 127.0.0.1 and passes the bytes on both
//! ways, the camera's through a [`Guard`], a parser over plain bytes (bytes in, the bytes to
//! pass on out, or the cap that was exceeded):
//!
//! - an RTSP message head (status or request line and headers) is at most [`MAX_HEAD`];
//! - its body (`Content-Length`) at most [`MAX_MESSAGE`], 32 MiB as an MJPEG camera's part;
//! - interleaved RTP (`$`, channel, 16-bit length) passes frame by frame, and what the camera
//!   sends after its stream starts, counted from the last access unit (picture) retina
//!   completed, is at most [`MAX_UNIT`], 32 MiB: retina keeps every byte from an access
//!   unit's first packet until the unit ends, so this bounds what it holds whatever the
//!   packets claim (no marker bit, a fragment that never ends, start codes hidden in them).
//!   The source says when a unit is complete ([`Relay::unit_completed`]).
//!
//! Over a cap the connection is cut, and the source's error is the [`GuardError`] naming the
//! cap. Heads and frames are held until whole (at most 64 KiB each) and bodies pass as they
//! come, so the relay holds little of its own; it reads from the camera only as fast as
//! retina reads from it.
//!
//! With `transport = "udp"` the RTSP answers pass the same guard, but RTP arrives on UDP
//! ports retina opens and reads itself: vigil's code never sees those packets, and one access
//! unit is bounded only by the source's 15 s wait for a picture (and by the network's rate).
//! TCP, the default, is the transport for a camera that is not trusted.
//!
//! Two things differ for the camera from a direct connection: retina's requests name the
//! relay's address (`rtsp://127.0.0.1:PORT/path`; cameras serve by the path, and a Digest
//! answer is worked out over the same URL the request names), and a UDP SETUP answer that
//! names no `source=` gets the camera's address added, as retina would take it from a direct
//! connection.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// The longest RTSP message head (the status or request line and the headers).
pub const MAX_HEAD: usize = 64 << 10;
/// The largest RTSP message body (`Content-Length`): 32 MiB, as an MJPEG part
/// ([`crate::source::mjpeg::MAX_PART`]).
pub const MAX_MESSAGE: u64 = 32 << 20;
/// The most the camera may send, once its stream has started, without an access unit
/// completed: 32 MiB.
pub const MAX_UNIT: u64 = 32 << 20;

/// A cap the camera exceeded, or a message whose length cannot be told.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuardError {
    #[error(
        "the camera sent an RTSP message head of over {} KiB with no blank line to end it \
         (vigil's cap for one message head)",
        MAX_HEAD >> 10
    )]
    HeadTooLong,
    #[error(
        "the camera's RTSP message declares a body of {length} bytes (Content-Length), over \
         vigil's cap of {} MiB for one RTSP message",
        MAX_MESSAGE >> 20
    )]
    MessageTooLarge { length: u64 },
    #[error("the camera's RTSP message has Content-Length {value}, which is not one size in bytes")]
    BadLength { value: String },
    #[error(
        "the camera sent over {} MiB of stream without completing an access unit (vigil's cap \
         for one picture): its RTP packets never end a picture (no marker bit, or a fragment \
         with no end)",
        MAX_UNIT >> 20
    )]
    UnitTooLarge,
}

/// Where the guard is in what the camera sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between messages: line ends pass, `$` starts a frame, anything else a head.
    Between,
    /// Reading a message head into `pending`.
    Head,
    /// Passing a message body on.
    Body { left: u64 },
    /// Reading an interleaved frame into `pending`.
    Frame,
}

/// The camera's side of one RTSP connection, read as RTSP framing: [`Guard::feed`] takes the
/// bytes as they arrive and gives the bytes to pass on to retina, or the cap exceeded.
#[derive(Debug)]
pub struct Guard {
    state: State,
    /// The head or the interleaved frame being read (at most [`MAX_HEAD`], or 4 + 65535).
    pending: Vec<u8>,
    /// The camera's address, added to UDP SETUP answers that name none.
    camera: Option<IpAddr>,
    /// Bytes since the last completed access unit; `None` until the first interleaved frame.
    since_unit: Option<u64>,
}

impl Guard {
    /// A guard for a new connection to the camera at `camera` (when known).
    pub fn new(camera: Option<IpAddr>) -> Guard {
        Guard { state: State::Between, pending: Vec::new(), camera, since_unit: None }
    }

    /// An access unit was completed: the count towards [`MAX_UNIT`] starts again.
    pub fn unit_completed(&mut self) {
        if self.since_unit.is_some() {
            self.since_unit = Some(0);
        }
    }

    /// Reads `input`, the camera's next bytes, adding what is to be passed on to `out`: the
    /// same bytes, held back while a head or a frame is incomplete (and a UDP SETUP answer
    /// with the camera's address). On an error, `out` has what came before the fault.
    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), GuardError> {
        while !input.is_empty() {
            let used = match self.state {
                State::Between => self.between(input, out),
                State::Head => self.head(input, out)?,
                State::Body { left } => {
                    let used = input.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    out.extend_from_slice(input.get(..used).unwrap_or_default());
                    let left = left - used as u64;
                    self.state = if left == 0 { State::Between } else { State::Body { left } };
                    used
                }
                State::Frame => self.frame(input, out),
            };
            self.count(used)?;
            input = input.get(used..).unwrap_or_default();
        }
        Ok(())
    }

    fn count(&mut self, bytes: usize) -> Result<(), GuardError> {
        if let Some(since) = &mut self.since_unit {
            *since = since.saturating_add(bytes as u64);
            if *since > MAX_UNIT {
                return Err(GuardError::UnitTooLarge);
            }
        }
        Ok(())
    }

    /// The first byte after a message or a frame.
    fn between(&mut self, input: &[u8], out: &mut Vec<u8>) -> usize {
        let Some(&byte) = input.first() else { return 0 };
        match byte {
            // retina skips CR LF between messages (and refuses a lone CR or LF).
            b'\r' | b'\n' => out.push(byte),
            b'$' => {
                self.since_unit.get_or_insert(0);
                self.pending.push(byte);
                self.state = State::Frame;
            }
            _ => {
                self.pending.push(byte);
                self.state = State::Head;
            }
        }
        1
    }

    /// More of a head: up to its blank line, then its body's length.
    fn head(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, GuardError> {
        let had = self.pending.len();
        let take = input.len().min(MAX_HEAD.saturating_sub(had));
        self.pending.extend_from_slice(input.get(..take).unwrap_or_default());
        // The blank line can only end in the new bytes: the earlier ones were searched.
        let from = had.saturating_sub(3);
        let found = self.pending.get(from..).and_then(|tail| memchr::memmem::find(tail, b"\r\n\r\n"));
        let Some(at) = found else {
            if self.pending.len() >= MAX_HEAD {
                return Err(GuardError::HeadTooLong);
            }
            return Ok(take);
        };
        let end = from + at + 4;
        self.pending.truncate(end);
        let length = content_length(&self.pending)?;
        if length > MAX_MESSAGE {
            return Err(GuardError::MessageTooLarge { length });
        }
        match self.camera {
            Some(camera) => out.extend_from_slice(&with_source(&self.pending, camera)),
            None => out.extend_from_slice(&self.pending),
        }
        self.pending.clear();
        self.state = if length == 0 { State::Between } else { State::Body { left: length } };
        Ok(end - had)
    }

    /// More of an interleaved frame (`$`, channel, 16-bit length, data), passed on once whole.
    fn frame(&mut self, input: &[u8], out: &mut Vec<u8>) -> usize {
        let whole = |pending: &[u8]| match pending.get(2..4) {
            Some(&[high, low]) => 4 + usize::from(u16::from_be_bytes([high, low])),
            _ => 4,
        };
        let take = input.len().min(whole(&self.pending) - self.pending.len());
        self.pending.extend_from_slice(input.get(..take).unwrap_or_default());
        if self.pending.len() == whole(&self.pending) {
            out.extend_from_slice(&self.pending);
            self.pending.clear();
            self.state = State::Between;
        }
        take
    }
}

/// The body length a message head declares (0 without `Content-Length`), read as retina reads
/// it: a header named `Content-Length` in any case, its value without the blanks around it,
/// a decimal number. A head retina would refuse in any case (an unreadable or repeated
/// length) is refused here, so the two never disagree on where the message ends.
fn content_length(head: &[u8]) -> Result<u64, GuardError> {
    let mut length = None;
    for line in head.split(|&b| b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = memchr::memchr(b':', line) else { continue };
        let (name, value) = line.split_at(colon);
        if !name.eq_ignore_ascii_case(b"content-length") {
            continue;
        }
        let value = blanks_trimmed(value.get(1..).unwrap_or_default());
        let shown = || crate::service::logging::shown(value);
        if length.is_some() {
            return Err(GuardError::BadLength { value: format!("{} given twice", shown()) });
        }
        let parsed = std::str::from_utf8(value).ok().and_then(|v| v.parse::<u64>().ok());
        length = Some(parsed.ok_or_else(|| GuardError::BadLength { value: shown() })?);
    }
    Ok(length.unwrap_or(0))
}

/// `bytes` without the spaces and tabs around them (what RTSP calls optional white space).
fn blanks_trimmed(mut bytes: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = bytes {
        bytes = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = bytes {
        bytes = rest;
    }
    bytes
}

/// `head` as passed on: a SETUP answer for UDP (a `Transport` with `server_port=` and no
/// `source=`) gets `;source=<camera>`, where retina sends and takes the RTP packets; retina
/// would take the connection's peer, which is now the relay.
fn with_source(head: &[u8], camera: IpAddr) -> Vec<u8> {
    if !head.starts_with(b"RTSP/") {
        return head.to_vec();
    }
    let mut lines = Vec::new();
    let mut start = 0;
    for (i, _) in head.iter().enumerate().filter(|&(_, &b)| b == b'\n') {
        lines.push(start..i + 1);
        start = i + 1;
    }
    let transports: Vec<_> = lines
        .iter()
        .filter(|line| {
            let text = head.get((*line).clone()).unwrap_or_default();
            text.len() > 10 && text.get(..10).is_some_and(|name| name.eq_ignore_ascii_case(b"transport:"))
        })
        .collect();
    let [line] = transports.as_slice() else { return head.to_vec() };
    let text = head.get((*line).clone()).unwrap_or_default();
    let value = text.get(10..).unwrap_or_default().trim_ascii();
    let parts = || value.split(|&b| b == b';');
    if !parts().any(|p| p.starts_with(b"server_port=")) || parts().any(|p| p.starts_with(b"source=")) {
        return head.to_vec();
    }
    let mut with = head.get(..line.start).unwrap_or_default().to_vec();
    with.extend_from_slice(b"Transport: ");
    with.extend_from_slice(value);
    with.extend_from_slice(format!(";source={camera}\r\n").as_bytes());
    with.extend_from_slice(head.get(line.end..).unwrap_or_default());
    with
}

/// How long the relay waits for retina to connect, and for the camera to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the relay goes on passing bytes after its source let it go: retina's TEARDOWN of
/// the session (on the same connection, or, for UDP, on fresh ones) goes through it.
const TEARDOWN_GRACE: Duration = Duration::from_secs(30);
/// The most read from either side at once.
const CHUNK: usize = 64 << 10;

/// What the relay and its source share.
#[derive(Debug, Default)]
struct Shared {
    /// Why the guard cut a connection (the first it cut: the session's, but for a TEARDOWN's
    /// after it).
    cut: Mutex<Option<GuardError>>,
    /// Access units completed, as the source counts them.
    units: AtomicU64,
}

/// A loopback relay between retina and one camera, the camera's side through a [`Guard`].
/// Its tasks run on the runtime it was opened on, and end [`TEARDOWN_GRACE`] after it is
/// dropped, or when either side closes.
#[derive(Debug)]
pub(crate) struct Relay {
    /// The camera's URL at the relay's address: what retina is given.
    url: url::Url,
    shared: Arc<Shared>,
    /// Dropped with the relay: its tasks then end after [`TEARDOWN_GRACE`].
    _held: watch::Sender<()>,
}

impl Relay {
    /// Connects to the camera `camera` names (without credentials) and listens for retina on
    /// 127.0.0.1, on the current tokio runtime.
    pub(crate) async fn open(camera: &url::Url) -> Result<Relay, String> {
        let address = Address::of(camera)?;
        let connection = address.connect().await?;
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .map_err(|e| format!("cannot listen on 127.0.0.1 for the RTSP client: {e}"))?;
        let port =
            listener.local_addr().map_err(|e| format!("cannot read the relay's own port on 127.0.0.1: {e}"))?.port();
        let mut url = camera.clone();
        url.set_host(Some("127.0.0.1"))
            .and_then(|()| url.set_port(Some(port)).map_err(|()| url::ParseError::InvalidPort))
            .map_err(|e| format!("cannot point the RTSP client at the relay: {e}"))?;
        let shared = Arc::new(Shared::default());
        let (held, released) = watch::channel(());
        tokio::spawn(serve(listener, connection, address, shared.clone(), released));
        Ok(Relay { url, shared, _held: held })
    }

    /// What retina is to be given instead of the camera's URL.
    pub(crate) fn url(&self) -> &url::Url {
        &self.url
    }

    /// The source got an access unit: the count towards [`MAX_UNIT`] starts again.
    pub(crate) fn unit_completed(&self) {
        self.shared.units.fetch_add(1, Ordering::Relaxed);
    }

    /// Why the guard cut the session's connection, if it did.
    pub(crate) fn cut(&self) -> Option<GuardError> {
        self.shared.cut.lock().ok().and_then(|cut| cut.clone())
    }
}

/// Where the camera is: the URL's host and port (554 unless it says).
#[derive(Debug, Clone)]
struct Address {
    host: url::Host<String>,
    port: u16,
}

impl Address {
    fn of(camera: &url::Url) -> Result<Address, String> {
        let host = camera.host().ok_or_else(|| format!("the url {camera} names no host"))?.to_owned();
        Ok(Address { host, port: camera.port().unwrap_or(554) })
    }

    async fn connect(&self) -> Result<TcpStream, String> {
        let port = self.port;
        let connecting = async {
            match &self.host {
                url::Host::Domain(name) => TcpStream::connect((name.as_str(), port)).await,
                url::Host::Ipv4(ip) => TcpStream::connect((*ip, port)).await,
                url::Host::Ipv6(ip) => TcpStream::connect((*ip, port)).await,
            }
        };
        let connection = match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
            Ok(Ok(connection)) => connection,
            Ok(Err(e)) => return Err(format!("cannot connect to the camera at {}:{port}: {e}", self.host)),
            Err(_) => {
                return Err(format!(
                    "the camera at {}:{port} did not accept a connection in {} s",
                    self.host,
                    CONNECT_TIMEOUT.as_secs()
                ))
            }
        };
        let _ = connection.set_nodelay(true);
        Ok(connection)
    }
}

/// Relays retina's first connection (the session's) to `camera`, and each later one (a
/// TEARDOWN on a fresh connection) to a fresh connection of its own, until the relay has been
/// dropped for [`TEARDOWN_GRACE`]. Every connection reports to `shared`, so that whichever
/// carries the session is counted and explained, even if another local process connected
/// first.
async fn serve(
    listener: TcpListener,
    camera: TcpStream,
    address: Address,
    shared: Arc<Shared>,
    released: watch::Receiver<()>,
) {
    let Ok(Ok((retina, _))) = tokio::time::timeout(CONNECT_TIMEOUT, listener.accept()).await else { return };
    tokio::spawn(pipe(retina, camera, shared.clone(), released.clone()));
    let later = async {
        loop {
            let Ok((retina, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let Ok(camera) = address.connect().await else { continue };
            tokio::spawn(pipe(retina, camera, shared.clone(), released.clone()));
        }
    };
    tokio::select! {
        () = later => {}
        () = let_go(released.clone()) => {}
    }
}

/// Ends [`TEARDOWN_GRACE`] after the relay was dropped.
async fn let_go(mut released: watch::Receiver<()>) {
    while released.changed().await.is_ok() {}
    tokio::time::sleep(TEARDOWN_GRACE).await;
}

/// Passes bytes both ways between retina and the camera, the camera's through a guard, until
/// either side closes, the guard cuts (saying why in `shared`) or the relay has been let go.
async fn pipe(retina: TcpStream, camera: TcpStream, shared: Arc<Shared>, released: watch::Receiver<()>) {
    let _ = retina.set_nodelay(true);
    let guard = Guard::new(camera.peer_addr().ok().map(|a| a.ip()));
    let upstream = async {
        let mut buf = vec![0; CHUNK];
        while let Ok(n @ 1..) = read(&retina, &mut buf).await {
            if write_all(&camera, buf.get(..n).unwrap_or_default()).await.is_err() {
                break;
            }
        }
    };
    tokio::select! {
        cut = downstream(&camera, &retina, guard, &shared) => {
            if let Some(why) = cut {
                log::debug!("the RTSP guard cut the camera's connection: {why}");
                if let Ok(mut slot) = shared.cut.lock() {
                    slot.get_or_insert(why);
                }
            }
        }
        () = upstream => {}
        () = let_go(released) => {}
    }
}

/// Camera to retina through `guard`, until the camera closes (`None`) or the guard cuts.
async fn downstream(camera: &TcpStream, retina: &TcpStream, mut guard: Guard, shared: &Shared) -> Option<GuardError> {
    let mut buf = vec![0; CHUNK];
    let mut out = Vec::with_capacity(CHUNK);
    let mut units = 0;
    loop {
        let n = match read(camera, &mut buf).await {
            Ok(n @ 1..) => n,
            _ => return None,
        };
        let completed = shared.units.load(Ordering::Relaxed);
        if completed != units {
            units = completed;
            guard.unit_completed();
        }
        out.clear();
        let fed = guard.feed(buf.get(..n).unwrap_or_default(), &mut out);
        if write_all(retina, &out).await.is_err() {
            return None;
        }
        if let Err(why) = fed {
            return Some(why);
        }
    }
}

async fn read(stream: &TcpStream, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        stream.readable().await?;
        match stream.try_read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            read => return read,
        }
    }
}

async fn write_all(stream: &TcpStream, mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        stream.writable().await?;
        match stream.try_write(bytes) {
            Ok(n) => bytes = bytes.get(n..).unwrap_or_default(),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DESCRIBE: &[u8] =
        b"RTSP/1.0 200 OK\r\nCSeq: 2\r\nContent-Type: application/sdp\r\ncontent-length: 12\r\n\r\nv=0\r\ns=cam\r\n";
    const SETUP_TCP: &[u8] =
        b"RTSP/1.0 200 OK\r\nCSeq: 3\r\nSession: 12;timeout=60\r\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n";

    /// An interleaved frame on `channel` of `len` bytes.
    fn frame(channel: u8, len: u16) -> Vec<u8> {
        let mut frame = vec![b'$', channel];
        frame.extend_from_slice(&len.to_be_bytes());
        frame.extend(std::iter::repeat_n(0xab, usize::from(len)));
        frame
    }

    /// What `guard` passes on of `input` fed `chunk` bytes at a time.
    fn fed(guard: &mut Guard, input: &[u8], chunk: usize) -> Result<Vec<u8>, (GuardError, Vec<u8>)> {
        let mut out = Vec::new();
        for piece in input.chunks(chunk) {
            if let Err(e) = guard.feed(piece, &mut out) {
                return Err((e, out));
            }
        }
        Ok(out)
    }

    #[test]
    fn a_camera_s_answers_and_frames_pass_unchanged_however_they_are_cut() {
        let mut stream = [DESCRIBE, b"\r\n", SETUP_TCP].concat();
        stream.extend(frame(0, 1400));
        stream.extend(frame(1, 0));
        stream.extend(b"RTSP/1.0 200 OK\r\nCSeq: 4\r\n\r\n");
        stream.extend(frame(0, 3));
        for chunk in [1, 2, 3, 7, 100, stream.len()] {
            assert_eq!(fed(&mut Guard::new(None), &stream, chunk).unwrap(), stream, "{chunk} bytes at a time");
        }
        // Held back until whole: half a head, half a frame.
        let mut guard = Guard::new(None);
        let mut out = Vec::new();
        guard.feed(&DESCRIBE[..20], &mut out).unwrap();
        assert!(out.is_empty());
        guard.feed(&DESCRIBE[20..], &mut out).unwrap();
        assert_eq!(out, DESCRIBE);
        out.clear();
        guard.feed(&frame(0, 10)[..8], &mut out).unwrap();
        assert!(out.is_empty());
    }

    #[test]
    fn a_head_without_end_is_cut_at_64_kib() {
        let mut head = b"RTSP/1.0 200 OK\r\nX-Junk: ".to_vec();
        head.resize(MAX_HEAD - 4, b'a');
        head.extend(b"\r\n\r\n");
        assert_eq!(fed(&mut Guard::new(None), &head, 4096).unwrap(), head, "64 KiB exactly is a head");
        head.truncate(MAX_HEAD - 4);
        head.extend(b"aaaa\r\n\r\n");
        let (e, out) = fed(&mut Guard::new(None), &head, 4096).unwrap_err();
        assert_eq!(e, GuardError::HeadTooLong);
        assert!(out.is_empty());
        assert!(e.to_string().contains("head of over 64 KiB"), "{e}");
    }

    #[test]
    fn a_body_over_32_mib_is_refused_at_its_head_and_the_error_names_the_length() {
        let answer = b"RTSP/1.0 200 OK\r\nCSeq: 2\r\nContent-Length: 2000000000\r\n\r\nv=0";
        let (e, out) = fed(&mut Guard::new(None), answer, 1).unwrap_err();
        assert_eq!(e, GuardError::MessageTooLarge { length: 2_000_000_000 });
        assert!(out.is_empty(), "nothing of it reaches retina");
        assert_eq!(
            e.to_string(),
            "the camera's RTSP message declares a body of 2000000000 bytes (Content-Length), over vigil's cap \
             of 32 MiB for one RTSP message"
        );
        let at_cap = format!("RTSP/1.0 200 OK\r\nContent-Length:  {MAX_MESSAGE} \r\n\r\n");
        let mut guard = Guard::new(None);
        assert_eq!(fed(&mut guard, at_cap.as_bytes(), 5).unwrap(), at_cap.as_bytes());
        let mut out = Vec::new();
        for _ in 0..MAX_MESSAGE / CHUNK as u64 {
            out.clear();
            guard.feed(&[b'x'; CHUNK], &mut out).unwrap();
        }
        out.clear();
        guard.feed(SETUP_TCP, &mut out).unwrap();
        assert_eq!(out, SETUP_TCP, "the next message after a 32 MiB body");
    }

    #[test]
    fn a_length_that_is_not_one_number_is_refused() {
        for (head, shown) in [
            ("Content-Length: ten", "\"ten\""),
            ("Content-Length: -1", "\"-1\""),
            ("Content-Length: 18446744073709551616", "\"18446744073709551616\""),
            ("Content-Length: 4\r\nContent-length: 4", "\"4\" given twice"),
        ] {
            let answer = format!("RTSP/1.0 200 OK\r\n{head}\r\n\r\nv=0\r");
            let (e, _) = fed(&mut Guard::new(None), answer.as_bytes(), 9).unwrap_err();
            assert_eq!(e, GuardError::BadLength { value: shown.into() }, "{head}");
        }
    }

    #[test]
    fn a_stream_that_completes_no_access_unit_is_cut_at_32_mib() {
        let mut guard = Guard::new(None);
        fed(&mut guard, SETUP_TCP, 50).unwrap();
        let packet = frame(0, u16::MAX);
        let mut out = Vec::new();
        let mut sent = SETUP_TCP.len() as u64;
        // Units completed now and then: never cut.
        for i in 0..2500 {
            if i % 100 == 0 {
                guard.unit_completed();
            }
            out.clear();
            guard.feed(&packet, &mut out).unwrap();
            sent += packet.len() as u64;
        }
        assert!(sent > 4 * MAX_UNIT);
        guard.unit_completed();
        let mut since = 0;
        let e = loop {
            out.clear();
            match guard.feed(&packet, &mut out) {
                Ok(()) => since += packet.len() as u64,
                Err(e) => break e,
            }
        };
        assert_eq!(e, GuardError::UnitTooLarge);
        assert!(since <= MAX_UNIT && since + packet.len() as u64 > MAX_UNIT, "cut at the cap, after {since} bytes");
        assert!(e.to_string().contains("over 32 MiB of stream without completing an access unit"), "{e}");
        // RTSP messages between the frames count as well: retina holds them too.
        let mut guard = Guard::new(None);
        fed(&mut guard, &frame(0, 100), 7).unwrap();
        let answer = format!("RTSP/1.0 200 OK\r\nContent-Length: {MAX_MESSAGE}\r\n\r\n");
        fed(&mut guard, answer.as_bytes(), 7).unwrap();
        let e = (0..).find_map(|_| guard.feed(&[0; CHUNK], &mut Vec::new()).err()).unwrap();
        assert_eq!(e, GuardError::UnitTooLarge);
    }

    #[test]
    fn a_udp_setup_answer_gets_the_camera_s_address_when_it_names_none() {
        let camera: IpAddr = "192.168.1.64".parse().unwrap();
        let udp = b"RTSP/1.0 200 OK\r\nCSeq: 3\r\nTransport: RTP/AVP;unicast;client_port=5000-5001;server_port=6970-6971 \r\nSession: 7\r\n\r\n";
        let out = fed(&mut Guard::new(Some(camera)), udp, 3).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "RTSP/1.0 200 OK\r\nCSeq: 3\r\nTransport: RTP/AVP;unicast;client_port=5000-5001;server_port=6970-6971;\
             source=192.168.1.64\r\nSession: 7\r\n\r\n"
        );
        let v6: IpAddr = "fe80::1".parse().unwrap();
        let out = fed(&mut Guard::new(Some(v6)), &udp[..], 1000).unwrap();
        assert!(String::from_utf8(out).unwrap().contains("server_port=6970-6971;source=fe80::1\r\n"));
        let named = b"RTSP/1.0 200 OK\r\ntransport: RTP/AVP;unicast;source=10.0.0.2;server_port=6970-6971\r\n\r\n";
        for unchanged in [SETUP_TCP, named, b"OPTIONS * RTSP/1.0\r\nTransport: a;server_port=1-2\r\n\r\n"] {
            assert_eq!(fed(&mut Guard::new(Some(camera)), unchanged, 4).unwrap(), unchanged);
        }
    }
}
