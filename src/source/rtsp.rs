//! The RTSP source (`kind = "rtsp"`): IP cameras streaming H.264 over RTSP, the kind most
//! driveway and shop cameras are.
//!
//! RTSP and RTP are spoken by `retina` (pure Rust, on tokio: the source's thread runs its own
//! single-threaded runtime and blocks on it), the video is decoded by OpenH264 (the
//! `openh264` crate, built from source; Constrained Baseline, Main and High profile,
//! progressive). Every access unit is decoded as it arrives, so the decoder keeps up with
//! the stream and the newest picture is always current; a picture is converted to RGB only
//! when inference will take it (the camera's slot is empty, or its frame is older than one
//! interval at the camera's `fps`). Capture times come from the stream's RTP timestamps,
//! anchored to the wall clock when the stream's first picture arrives.
//!
//! Credentials from the URL or `username` + `password_file`, Basic or Digest as the camera
//! asks (retina answers either); the password is never logged. Transport TCP (interleaved in
//! the RTSP connection, the default: it passes NAT and firewalls and loses nothing) or UDP.
//! Not supported, with an error that says so: H.265 and other codecs, RTSP over TLS
//! (`rtsps://`), interlaced video.
//!
//! retina caps nothing a camera sends, so the source connects to the camera itself and
//! relays the connection to retina through its [`guard`]: one RTSP message at most 32 MiB
//! (its head 64 KiB), and at most 32 MiB of stream without a completed access unit, over TCP;
//! a camera over a cap is cut off with an error naming the cap. Over UDP, RTP goes straight
//! to retina's sockets, and one access unit is bounded only by the 15 s wait for a picture.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use image::RgbImage;
use openh264::formats::YUVSource;
use retina::client::{Credentials, Demuxed, PlayOptions, Session, SessionOptions, SetupOptions};
use retina::codec::{CodecItem, FrameFormat};
use serde::Deserialize;
use serde_json::Value;

use self::guard::Relay;
use super::url::{CameraUrl, Scheme};
use super::{Backoff, Connection, SourceContext};
use crate::settings::section_as;

pub mod guard;

/// `kind = "rtsp"`: an RTSP camera.
#[derive(Clone, PartialEq)]
pub struct RtspSettings {
    pub url: CameraUrl,
    pub transport: Transport,
}

impl std::fmt::Debug for RtspSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RtspSettings {{ url: {}, transport: {:?} }}", self.url, self.transport)
    }
}

/// How RTP packets travel (`transport = "tcp" | "udp"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Interleaved in the RTSP connection (the default).
    Tcp,
    /// RTP and RTCP on UDP ports of their own: less delay on a clean network, lost packets
    /// on a busy one, and blocked by most NAT.
    Udp,
}

impl Transport {
    /// As the `transport` key and the log write it.
    fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
        }
    }
}

/// The keys of an rtsp source, as written.
#[derive(Debug, Default, Deserialize)]
struct RawRtsp {
    url: Option<String>,
    username: Option<String>,
    password_file: Option<PathBuf>,
    transport: Option<String>,
}

/// Checks an rtsp source's keys (all but `kind`); `key` is the table's path, `dir` the
/// folder relative paths start from.
pub(super) fn check(value: Value, key: &str, dir: &Path, problems: &mut Vec<String>) -> Option<RtspSettings> {
    let raw: RawRtsp = section_as(value, key, problems, "not a key of an rtsp source")?;
    let transport = match raw.transport.as_deref() {
        None => Some(Transport::Tcp),
        Some(name) if name == Transport::Tcp.name() => Some(Transport::Tcp),
        Some(name) if name == Transport::Udp.name() => Some(Transport::Udp),
        Some(other) => {
            let other = crate::service::logging::shown(other.as_bytes());
            problems.push(format!("{key}.transport: {other} is not \"tcp\" or \"udp\""));
            None
        }
    };
    let url = super::url::check(raw.url, raw.username, raw.password_file, Scheme::Rtsp, key, dir, problems)?;
    Some(RtspSettings { url, transport: transport? })
}

/// Connects to the camera and streams its pictures into the context's slot, reconnecting
/// whenever the stream fails or ends, until told to stop.
pub(super) fn run(settings: &RtspSettings, ctx: &SourceContext) {
    let what = format!("url={}", settings.url);
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            log::error!("camera={} {what} cannot start the RTSP client's runtime: {e}", ctx.camera);
            return;
        }
    };
    // Inside the runtime's context throughout: a session dropped (a lost stream, a failed
    // SETUP) hands its TEARDOWN to a task on it, which runs while the next one is awaited.
    let _context = runtime.enter();
    super::supervise(ctx, &what, &mut Backoff::reconnect(), || Stream::open(settings, ctx, &runtime));
}

/// How long the camera may take to answer a request, and to send a picture.
const TIMEOUT: Duration = Duration::from_secs(15);
/// How often a wait for the camera beats the heartbeat and looks for a stop.
const POLL: Duration = Duration::from_millis(500);
/// The largest picture taken (OpenH264 itself stops at 36864 macroblocks, 4096×2304).
const MAX_SIDE: usize = 8192;
/// How far behind the wall clock a picture's stream time may fall before the decoder is
/// said to be falling behind and the clock is anchored again.
const MAX_LAG: Duration = Duration::from_secs(5);

/// A playing stream and its decoder.
struct Stream<'r> {
    runtime: &'r tokio::runtime::Runtime,
    demuxed: Demuxed,
    /// The guarded connection retina reads the camera through.
    relay: Relay,
    /// The video stream's index among the session's streams.
    video: usize,
    h264: H264,
    mode: String,
    clock: Option<Anchor>,
    /// The capture time of the picture [`Connection::frame`] returned last.
    captured: Option<(u64, Instant)>,
}

/// Where the stream's clock meets the wall clock: a picture's RTP time and when it arrived.
#[derive(Debug, Clone, Copy)]
struct Anchor {
    /// RTP ticks since the stream started (retina's `Timestamp::elapsed`).
    ticks: i64,
    clock_rate: u32,
    unix_ms: u64,
    at: Instant,
}

impl Anchor {
    /// The wall-clock moment of a picture `ticks` into the stream.
    fn time_of(&self, ticks: i64) -> (u64, Instant) {
        let after = ticks.saturating_sub(self.ticks) as f64 / f64::from(self.clock_rate);
        if after >= 0.0 {
            let after = Duration::from_secs_f64(after.min(1e9));
            (self.unix_ms + after.as_millis() as u64, self.at + after)
        } else {
            let before = Duration::from_secs_f64((-after).min(1e9));
            (self.unix_ms.saturating_sub(before.as_millis() as u64), self.at.checked_sub(before).unwrap_or(self.at))
        }
    }
}

impl<'r> Stream<'r> {
    fn open(
        settings: &RtspSettings,
        ctx: &SourceContext,
        runtime: &'r tokio::runtime::Runtime,
    ) -> Result<Self, String> {
        let url = &settings.url;
        let address =
            url::Url::parse(&url.without_credentials()).map_err(|e| format!("the url is not one retina reads: {e}"))?;
        let creds = url.username.as_ref().map(|username| Credentials {
            username: username.clone(),
            password: url.password.clone().unwrap_or_default(),
        });
        let options = SessionOptions::default().creds(creds).user_agent(format!("vigil/{}", env!("CARGO_PKG_VERSION")));
        let relay = wait(runtime, ctx, "the camera did not accept a connection", Relay::open(&address))??;
        // A connection the guard cut fails in retina as a lost connection: the guard says why.
        let failed = |e: retina::Error| relay.cut().map_or_else(|| explain(&e), |cut| cut.to_string());
        let describe = Session::describe(relay.url().clone(), options);
        let mut session = wait(runtime, ctx, "the camera did not answer DESCRIBE", describe)?.map_err(failed)?;
        let video = pick_video(session.streams().iter().map(|s| (s.media(), s.encoding_name())))?;
        let (width, height, profile) = match session.streams()[video].parameters() {
            Some(retina::codec::ParametersRef::Video(v)) => {
                let (w, h) = v.pixel_dimensions();
                (w, h, format!(" {}", v.rfc6381_codec()))
            }
            _ => (0, 0, String::new()),
        };
        let transport = match settings.transport {
            Transport::Tcp => retina::client::Transport::Tcp(Default::default()),
            Transport::Udp => retina::client::Transport::Udp(Default::default()),
        };
        // Annex B with the parameter sets before each key frame: what OpenH264 reads.
        let setup = SetupOptions::default().transport(transport).frame_format(FrameFormat::SIMPLE);
        wait(runtime, ctx, "the camera did not answer SETUP", session.setup(video, setup))?.map_err(failed)?;
        let playing = wait(runtime, ctx, "the camera did not answer PLAY", session.play(PlayOptions::default()))?
            .map_err(failed)?;
        let demuxed = playing.demuxed().map_err(failed)?;
        let h264 = H264::new()?;
        let size = if width > 0 { format!(" {width}x{height}") } else { String::new() };
        let mode = format!("H.264{profile}{size}, {}", settings.transport.name());
        Ok(Stream { runtime, demuxed, relay, video, h264, mode, clock: None, captured: None })
    }

    /// The capture time of a picture at `ticks` (of `clock_rate` a second) into the stream,
    /// arriving now: the anchor's moment plus the stream's time since; anchored again (and
    /// said) when that runs ahead of the wall clock or falls [`MAX_LAG`] behind it.
    fn capture_time(&mut self, ticks: i64, clock_rate: u32, camera: &str) -> (u64, Instant) {
        let now = Instant::now();
        let anchor_now = Anchor { ticks, clock_rate, unix_ms: super::unix_ms(), at: now };
        let Some(anchor) = self.clock.filter(|a| a.clock_rate == clock_rate) else {
            self.clock = Some(anchor_now);
            return (anchor_now.unix_ms, now);
        };
        let (unix_ms, at) = anchor.time_of(ticks);
        if at > now + Duration::from_millis(50) {
            // The stream's clock runs fast, or jumped: the arrival is the better guess.
            self.clock = Some(anchor_now);
            return (anchor_now.unix_ms, now);
        }
        if now - at > MAX_LAG {
            log::warn!(
                "camera={camera} pictures arrive {:.1} s after their stream time: decoding falls behind the \
                 stream, or the camera's clock drifts (a lower-resolution substream needs less CPU)",
                (now - at).as_secs_f32()
            );
            self.clock = Some(anchor_now);
            return (anchor_now.unix_ms, now);
        }
        (unix_ms, at)
    }
}

impl Connection for Stream<'_> {
    const NOUN: &'static str = "stream";

    fn describe(&self) -> String {
        format!("mode=\"{}\"", self.mode)
    }

    fn frame(&mut self, ctx: &SourceContext) -> Result<RgbImage, String> {
        // Since the last picture decoded: one skipped (not converted) counts, however long
        // inference leaves the slot full at a low `fps`.
        let mut last_picture = Instant::now();
        let mut last_error = None;
        loop {
            ctx.heartbeat.beat();
            if last_picture.elapsed() > TIMEOUT {
                return Err(match last_error {
                    Some(e) => format!("no picture decoded in {} s (the decoder said: {e})", TIMEOUT.as_secs()),
                    None => format!("the camera sent no picture in {} s", TIMEOUT.as_secs()),
                });
            }
            let next = wait(self.runtime, ctx, "the camera sent no picture", self.demuxed.next())?;
            let cut = || self.relay.cut().map(|cut| cut.to_string());
            let frame = match next {
                None => return Err(cut().unwrap_or_else(|| "the camera ended the stream".into())),
                Some(Err(e)) => return Err(cut().unwrap_or_else(|| explain(&e))),
                Some(Ok(CodecItem::VideoFrame(frame))) if frame.stream_id() == self.video => frame,
                Some(Ok(_)) => continue,
            };
            self.relay.unit_completed();
            let timestamp = frame.timestamp();
            let clock_rate = timestamp.clock_rate().get();
            let wanted = || match ctx.slot.waiting_since() {
                None => true,
                Some(captured) => captured.elapsed().as_secs_f64() >= 1.0 / ctx.fps,
            };
            let image = match self.h264.decode(frame.data(), wanted)? {
                Decoded::Nothing(why) => {
                    last_error = why.or(last_error);
                    continue;
                }
                Decoded::Skipped => {
                    ctx.status.count_decoded();
                    last_picture = Instant::now();
                    continue;
                }
                Decoded::Picture(image) => {
                    ctx.status.count_decoded();
                    image
                }
            };
            self.captured = Some(self.capture_time(timestamp.elapsed(), clock_rate, &ctx.camera));
            return Ok(image);
        }
    }

    fn captured(&self) -> Option<(u64, Instant)> {
        self.captured
    }
}

/// An H.264 decoder for one stream: Annex B access units in (parameter sets before each key
/// frame), pictures out.
pub struct H264(openh264::decoder::Decoder);

/// What one access unit gave.
#[derive(Debug)]
pub enum Decoded {
    /// No picture yet, or a broken unit (`Some(why)`: one referring to a picture lost; the
    /// next key frame mends the stream).
    Nothing(Option<String>),
    /// A picture, not converted (inference would not take it).
    Skipped,
    Picture(RgbImage),
}

impl H264 {
    pub fn new() -> Result<H264, String> {
        openh264::decoder::Decoder::new()
            .map(H264)
            .map_err(|e| format!("cannot start the H.264 decoder (OpenH264 error {})", e.native_code()))
    }

    /// Decodes an access unit; a picture it completes is converted to RGB when `convert`
    /// says so. An error (a picture over [`MAX_SIDE`] a side) ends the stream.
    pub fn decode(&mut self, unit: &[u8], convert: impl FnOnce() -> bool) -> Result<Decoded, String> {
        let picture = match self.0.decode(unit) {
            Ok(Some(picture)) => picture,
            Ok(None) => return Ok(Decoded::Nothing(None)),
            Err(e) => return Ok(Decoded::Nothing(Some(decoder_refused(&e)))),
        };
        let (width, height) = picture.dimensions();
        if width == 0 || height == 0 || width > MAX_SIDE || height > MAX_SIDE {
            return Err(format!("the camera sends {width}x{height} pictures (at most {MAX_SIDE} a side)"));
        }
        if !convert() {
            return Ok(Decoded::Skipped);
        }
        let mut rgb = vec![0; width * height * 3];
        picture.write_rgb8(&mut rgb);
        let image = RgbImage::from_raw(width as u32, height as u32, rgb).ok_or("a picture of the wrong size")?;
        Ok(Decoded::Picture(image))
    }
}

/// What OpenH264 says of an access unit it cannot decode, as vigil says it: its state's
/// flags in words, and their number (the crate's own text is a debugging dump).
fn decoder_refused(e: &openh264::Error) -> String {
    const STATES: [(i64, &str); 11] = [
        (1, "a picture is still pending"),
        (2, "a picture it refers to was lost"),
        (4, "the bitstream is broken"),
        (8, "a layer it depends on was lost"),
        (16, "no parameter sets (SPS and PPS) came before it"),
        (32, "errors in it were concealed"),
        (64, "its reference list is empty"),
        (4096, "an invalid argument"),
        (8192, "the decoder was not set up"),
        (16384, "out of memory"),
        (32768, "the picture is larger than the decoder's buffer"),
    ];
    let code = e.native_code();
    let known: Vec<&str> = STATES.iter().filter(|(flag, _)| code & flag != 0).map(|(_, what)| *what).collect();
    if known.is_empty() {
        return format!("OpenH264 cannot decode the access unit (state {code})");
    }
    format!("OpenH264 cannot decode the access unit: {} (state {code})", known.join(", "))
}

/// Runs `future` on the source's runtime, beating the heartbeat and looking for a stop every
/// [`POLL`]; past [`TIMEOUT`] it ends with `overdue` ("the camera did not answer PLAY") and
/// the time waited.
fn wait<F: Future>(
    runtime: &tokio::runtime::Runtime,
    ctx: &SourceContext,
    overdue: &str,
    future: F,
) -> Result<F::Output, String> {
    runtime.block_on(async {
        let started = Instant::now();
        tokio::pin!(future);
        loop {
            ctx.heartbeat.beat();
            if ctx.stopped() {
                return Err("stopped".to_string());
            }
            if started.elapsed() > TIMEOUT {
                return Err(format!("{overdue} in {} s", TIMEOUT.as_secs()));
            }
            if let Ok(output) = tokio::time::timeout(POLL, &mut future).await {
                return Ok(output);
            }
        }
    })
}

/// The stream vigil decodes among a session's (media, encoding) pairs: the first H.264
/// video. The error names what the camera sends and what to change.
fn pick_video<'a>(streams: impl Iterator<Item = (&'a str, &'a str)>) -> Result<usize, String> {
    let mut videos = Vec::new();
    for (i, (media, encoding)) in streams.enumerate() {
        if media.eq_ignore_ascii_case("video") {
            if encoding.eq_ignore_ascii_case("h264") {
                return Ok(i);
            }
            videos.push(encoding.to_ascii_uppercase());
        }
    }
    if videos.is_empty() {
        return Err("the camera's stream has no video".into());
    }
    Err(format!(
        "the camera sends {} video, and vigil decodes H.264 only: set the camera's stream (or a substream) to H.264",
        videos.join(", ")
    ))
}

/// A retina error as the log says it, in one line: what the camera did and what to change.
/// Otherwise retina's own first line, without what follows it (connection detail, and a hex
/// dump of the bytes it could not read) and cut at [`MAX_EXPLAINED`] characters.
fn explain(e: &retina::Error) -> String {
    match e.status_code() {
        Some(401) => return "the camera refused the credentials (RTSP 401): check username and password".into(),
        Some(403) => return "the camera forbids this user the stream (RTSP 403)".into(),
        Some(404) => return "the camera has no stream at this path (RTSP 404): check the url's path".into(),
        Some(454) => return "the camera lost the session (RTSP 454)".into(),
        Some(461) => return "the camera refused the transport (RTSP 461): try transport = \"tcp\" or \"udp\"".into(),
        _ => {}
    }
    explain_text(&e.to_string())
}

/// The longest line [`explain`] passes on of retina's text.
const MAX_EXPLAINED: usize = 240;

/// [`explain`] for retina's text `text`.
fn explain_text(text: &str) -> String {
    let first = text.lines().next().unwrap_or_default();
    // retina ends the line before a hex dump with "; buffered:" or a colon.
    let first = first.split("; buffered:").next().unwrap_or_default().trim().trim_end_matches(':').trim_end();
    // A URL in it (the one retina was given, say) with its secrets masked.
    let first = &super::url::scrub_urls(first);
    let line = if let Some(why) = first.strip_prefix("RTSP framing error: Invalid RTSP message: ") {
        format!("the camera sent something that is not RTSP ({why})")
    } else if first.starts_with("RTSP framing error: Incomplete RTSP message at EOF") {
        "the camera closed the connection in the middle of an RTSP message".to_string()
    } else if let Some(channel) = first.strip_prefix("Received interleaved data on unassigned channel ") {
        format!("the camera sent stream data on channel {channel}, which vigil did not set up")
    } else {
        first.to_string()
    };
    match line.char_indices().nth(MAX_EXPLAINED) {
        Some((at, _)) => format!("{}…", &line[..at]),
        None => line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_h264_video_is_taken_and_other_codecs_are_named() {
        let streams = [("audio", "mpeg4-generic"), ("video", "H264"), ("video", "h264")];
        assert_eq!(pick_video(streams.into_iter()), Ok(1));
        let e = pick_video([("video", "h265"), ("audio", "pcma")].into_iter()).unwrap_err();
        assert!(
            e.contains("sends H265 video") && e.contains("set the camera's stream (or a substream) to H.264"),
            "{e}"
        );
        let e = pick_video([("audio", "pcma"), ("application", "vnd.onvif.metadata")].into_iter()).unwrap_err();
        assert_eq!(e, "the camera's stream has no video");
    }

    #[test]
    fn retina_s_error_for_junk_is_one_line_without_its_hex_dump() {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let camera = std::thread::spawn(move || {
            let (mut connection, _) = listener.accept().unwrap();
            let _ = connection.read(&mut [0; 4096]);
            connection.write_all(b"\x00\x01\x02\x03 HELLO \xff\xfe not RTSP\r\n\r\n").unwrap();
            std::thread::sleep(Duration::from_millis(500));
        });
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let url = url::Url::parse(&format!("rtsp://127.0.0.1:{port}/stream")).unwrap();
        let e = runtime.block_on(Session::describe(url, SessionOptions::default())).err().unwrap();
        camera.join().unwrap();
        let said = explain(&e);
        assert!(said.starts_with("the camera sent something that is not RTSP ("), "{said}\n(retina: {e})");
        assert!(!said.contains('\n') && !said.contains("buffered") && !said.contains("0000"), "{said}");
        assert_eq!(
            explain_text("Received interleaved data on unassigned channel 5: \nLength: 3 (0x3) bytes\n0000: 01 02 03"),
            "the camera sent stream data on channel 5, which vigil did not set up"
        );
        assert_eq!(explain_text(&"x".repeat(1000)).chars().count(), MAX_EXPLAINED + 1);
    }

    #[test]
    fn the_decoder_s_refusal_is_said_in_words_with_its_state() {
        let mut h264 = H264::new().unwrap();
        // A P slice of a stream whose parameter sets never came.
        let unit = [0, 0, 0, 1, 0x41, 0x9a, 0x02, 0x04, 0x08, 0x10, 0x20];
        let mut said = None;
        for _ in 0..3 {
            match h264.decode(&unit, || true) {
                Ok(Decoded::Nothing(Some(why))) => said = Some(why),
                Ok(Decoded::Nothing(None)) => {}
                other => panic!("{other:?}"),
            }
        }
        let said = said.expect("the decoder refuses the unit");
        assert!(said.starts_with("OpenH264 cannot decode the access unit: "), "{said}");
        assert!(said.contains("no parameter sets (SPS and PPS) came before it") && said.contains("(state "), "{said}");
        assert!(!said.contains("Native") && !said.contains("Backtrace"), "{said}");
    }

    #[test]
    fn capture_times_follow_the_stream_clock_from_the_first_picture() {
        let at = Instant::now();
        let anchor = Anchor { ticks: 90_000, clock_rate: 90_000, unix_ms: 1_000_000, at };
        assert_eq!(anchor.time_of(90_000), (1_000_000, at));
        // 100 ms later at 90 kHz.
        assert_eq!(anchor.time_of(99_000), (1_000_100, at + Duration::from_millis(100)));
        // A B-frame-like step back is before the anchor, not a wrap-around.
        assert_eq!(anchor.time_of(81_000).0, 999_900);
        assert_eq!(anchor.time_of(i64::MIN).0, 0, "no overflow, however far back");
    }

    #[test]
    fn each_rtsp_key_is_checked_and_every_problem_named() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let check_of = |value: Value| {
            let mut problems = Vec::new();
            let settings = check(value, "cameras.door.source", dir, &mut problems);
            (settings, problems.join("\n"))
        };
        let (settings, all) = check_of(serde_json::json!({"url": "rtsp://admin:pw@cam/live"}));
        assert!(all.is_empty(), "{all}");
        let settings = settings.unwrap();
        assert_eq!(settings.transport, Transport::Tcp, "the default");
        assert!(!format!("{settings:?}").contains(":pw@"));
        let (settings, all) = check_of(serde_json::json!({"url": "http://cam/live", "transport": "quic", "fps": 5}));
        assert!(settings.is_none());
        for expected in [
            "cameras.door.source.url: is an HTTP URL: use kind = \"mjpeg\"",
            "cameras.door.source.transport: \"quic\" is not \"tcp\" or \"udp\"",
            "cameras.door.source.fps: not a key of an rtsp source",
        ] {
            assert!(all.contains(expected), "missing {expected:?} in:\n{all}");
        }
        let (_, all) = check_of(serde_json::json!({"url": "rtsp://cam/live", "password_file": "no/such/file"}));
        assert!(all.contains("password_file: needs a user name") && all.contains("cannot read"), "{all}");
    }
}
