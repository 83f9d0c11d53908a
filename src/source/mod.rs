//! Frame sources: a V4L2 camera ([`camera`], through nokhwa), an RTSP camera ([`rtsp`]), an
//! HTTP MJPEG camera ([`mjpeg`]) or a replay of image files ([`replay`]).
//!
//! Each kind owns its settings type and their checks: the configuration hands this module
//! a camera's `source` table ([`check`]) and collects the problems it reports. Each source
//! runs on its own thread, blocking, with a [`SourceContext`] (where frames go, when to stop,
//! its sign of life, its status for the stats), and hands frames to the pipeline through a
//! [`FrameSlot`]. A source that opens something that can fail or go away (a device, a
//! stream) runs under [`supervise`], which reopens it with a [`Backoff`] and keeps
//! [`SourceStatus`] true to what is happening.
//!
//! A new kind: its module with a settings type, a `check` and a [`Connection`], one variant
//! of [`SourceSettings`], and its arm in [`check`] and [`spawn`].

pub mod camera;
pub mod mjpeg;
pub mod replay;
pub mod rtsp;
pub mod url;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use image::RgbImage;
use serde_json::Value;

pub use camera::{PixelFormat, V4l2Settings};
pub use mjpeg::MjpegSettings;
pub use replay::ReplaySettings;
pub use rtsp::RtspSettings;

/// A camera's frame source, checked.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceSettings {
    V4l2(V4l2Settings),
    Mjpeg(MjpegSettings),
    Rtsp(RtspSettings),
    Replay(ReplaySettings),
}

/// The kinds [`check`] knows, as its messages name them.
const KINDS: &str = "\"v4l2\", \"rtsp\", \"mjpeg\" or \"replay\"";

/// Checks a camera's `source` table (`key` is its path, `cameras.front.source`; relative
/// paths are taken from `dir`), adding every problem found to `problems`.
pub fn check(value: Value, key: &str, dir: &Path, problems: &mut Vec<String>) -> Option<SourceSettings> {
    let Value::Object(mut table) = value else {
        problems.push(format!("{key}: must be a table with kind = {KINDS}"));
        return None;
    };
    let kind = match table.remove("kind") {
        Some(Value::String(kind)) => kind,
        Some(_) => {
            problems.push(format!("{key}.kind: must be text, {KINDS}"));
            return None;
        }
        None => {
            problems.push(format!("{key}.kind: missing ({KINDS})"));
            return None;
        }
    };
    let rest = Value::Object(table);
    match kind.as_str() {
        "v4l2" => camera::check(rest, key, problems).map(SourceSettings::V4l2),
        "mjpeg" => mjpeg::check(rest, key, dir, problems).map(SourceSettings::Mjpeg),
        "rtsp" => rtsp::check(rest, key, dir, problems).map(SourceSettings::Rtsp),
        "replay" => replay::check(rest, key, dir, problems).map(SourceSettings::Replay),
        other => {
            problems.push(format!("{key}.kind: {} is not {KINDS}", crate::service::logging::shown(other.as_bytes())));
            None
        }
    }
}

/// One captured image.
#[derive(Debug, Clone)]
pub struct Frame {
    pub image: Arc<RgbImage>,
    /// Counts from 1 per source start.
    pub number: u64,
    /// Unix milliseconds at capture.
    pub captured_at: u64,
    /// The same moment on the monotonic clock (for latencies).
    pub captured: Instant,
    /// The JPEG the camera sent for it (an MJPEG part, a replayed `.jpg`), kept so that a
    /// collected frame is the camera's own bytes, not a second encoding.
    pub jpeg: Option<Arc<Vec<u8>>>,
}

impl Frame {
    /// A frame captured now.
    pub fn new(image: Arc<RgbImage>, number: u64) -> Frame {
        Frame { image, number, captured_at: unix_ms(), captured: Instant::now(), jpeg: None }
    }

    /// A frame captured at a moment the source knows (`unix_ms`, and `at` on the monotonic
    /// clock), as a stream's timestamps tell it.
    pub fn captured_at(image: Arc<RgbImage>, number: u64, (unix_ms, at): (u64, Instant)) -> Frame {
        Frame { image, number, captured_at: unix_ms, captured: at, jpeg: None }
    }

    /// The same frame with the camera's JPEG of it.
    pub fn with_jpeg(self, jpeg: Option<Arc<Vec<u8>>>) -> Frame {
        Frame { jpeg, ..self }
    }
}

pub fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// What [`FrameSlot::take`] found.
#[derive(Debug)]
pub enum Taken {
    Frame(Frame),
    /// Nothing arrived in time.
    Empty,
    /// The source has finished (a replay without loop) or was stopped.
    Closed,
}

/// The hand-over from a source to inference. Policy: **newest frame wins** — a frame not
/// yet taken is replaced by the next one (and counted as dropped), so a slow model never
/// builds a backlog and always sees the latest picture.
#[derive(Debug, Default)]
pub struct FrameSlot {
    state: Mutex<SlotState>,
    ready: Condvar,
    taken: Condvar,
}

#[derive(Debug, Default)]
struct SlotState {
    frame: Option<Frame>,
    closed: bool,
    dropped: u64,
}

impl FrameSlot {
    pub fn new() -> FrameSlot {
        FrameSlot::default()
    }

    /// Offers a frame, replacing one not yet taken.
    pub fn put(&self, frame: Frame) {
        let mut state = self.state.lock().unwrap();
        if state.frame.replace(frame).is_some() {
            state.dropped += 1;
        }
        self.ready.notify_one();
    }

    /// Waits up to `timeout` for a frame.
    pub fn take(&self, timeout: Duration) -> Taken {
        let state = self.state.lock().unwrap();
        let (mut state, _) = self.ready.wait_timeout_while(state, timeout, |s| s.frame.is_none() && !s.closed).unwrap();
        match state.frame.take() {
            Some(f) => {
                self.taken.notify_all();
                Taken::Frame(f)
            }
            None if state.closed => Taken::Closed,
            None => Taken::Empty,
        }
    }

    /// When the frame waiting to be taken was captured; `None` when the slot is empty.
    pub fn waiting_since(&self) -> Option<Instant> {
        self.state.lock().unwrap().frame.as_ref().map(|f| f.captured)
    }

    /// Waits up to `timeout` for the slot to be empty (its frame taken); true if it is.
    pub fn wait_empty(&self, timeout: Duration) -> bool {
        let state = self.state.lock().unwrap();
        let (state, _) = self.taken.wait_timeout_while(state, timeout, |s| s.frame.is_some() && !s.closed).unwrap();
        state.frame.is_none()
    }

    /// No more frames will come; a frame still waiting is taken first.
    pub fn close(&self) {
        self.state.lock().unwrap().closed = true;
        self.ready.notify_all();
    }

    /// Frames replaced before inference took them.
    pub fn dropped(&self) -> u64 {
        self.state.lock().unwrap().dropped
    }
}

/// A thread's sign of life, read by the watchdog: the last time its loop went round.
#[derive(Debug)]
pub struct Heartbeat {
    epoch: Instant,
    last_ms: AtomicU64,
    finished: AtomicBool,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Heartbeat { epoch: Instant::now(), last_ms: AtomicU64::new(0), finished: AtomicBool::new(false) }
    }
}

impl Heartbeat {
    pub fn beat(&self) {
        self.last_ms.store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Time since the last beat.
    pub fn age(&self) -> Duration {
        let now = self.epoch.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }

    /// The thread ended on purpose (a replay ran out): no longer watched.
    pub fn finish(&self) {
        self.finished.store(true, Ordering::Relaxed);
    }

    pub fn is_finished(&self) -> bool {
        self.finished.load(Ordering::Relaxed)
    }
}

/// Sleeps `total` in short steps, returning early (false) when `stop` is set.
pub(crate) fn sleep_unless(stop: &AtomicBool, total: Duration, heartbeat: &Heartbeat) -> bool {
    let deadline = Instant::now() + total;
    loop {
        heartbeat.beat();
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let now = Instant::now();
        if now >= deadline {
            return true;
        }
        std::thread::sleep((deadline - now).min(Duration::from_millis(100)));
    }
}

/// What a camera's stats say of its source (`source_running`, `source_reconnects`).
#[derive(Debug, Default)]
pub struct SourceStatus {
    running: AtomicBool,
    reconnects: AtomicU64,
    decoded: AtomicU64,
}

impl SourceStatus {
    /// Delivering frames: a replay playing, a camera or stream that has given a frame since
    /// it was last opened. False while a source is failing to open or waiting to reopen.
    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::Relaxed)
    }

    /// Times the source was opened again after its device or stream was lost (or failed to
    /// open once lost); attempts that fail are not counted.
    pub fn reconnects(&self) -> u64 {
        self.reconnects.load(Ordering::Relaxed)
    }

    /// Pictures a video stream decoded (an RTSP camera decodes every picture it sends, and
    /// converts only those inference takes: `vigil bench-source` reports both).
    pub fn decoded(&self) -> u64 {
        self.decoded.load(Ordering::Relaxed)
    }

    fn count_decoded(&self) {
        self.decoded.fetch_add(1, Ordering::Relaxed);
    }

    fn set_running(&self, running: bool) {
        self.running.store(running, Ordering::Relaxed);
    }
}

/// What a source runs with.
#[derive(Debug, Clone)]
pub struct SourceContext {
    /// The camera's id, for the log.
    pub camera: String,
    /// The camera's most inferences per second (`cameras.<id>.fps`): a source that asks for
    /// each frame (an MJPEG snapshot URL) asks no more often.
    pub fps: f64,
    /// Where its frames go.
    pub slot: Arc<FrameSlot>,
    /// Set when the source is to end.
    pub stop: Arc<AtomicBool>,
    /// Its sign of life for the watchdog: beaten between calls to the device or stream and
    /// at least every 100 ms while the source waits.
    pub heartbeat: Arc<Heartbeat>,
    pub status: Arc<SourceStatus>,
}

impl SourceContext {
    /// A context with fresh parts, for `camera` inferring at most `fps` times a second.
    pub fn new(camera: &str, fps: f64) -> SourceContext {
        SourceContext {
            camera: camera.to_string(),
            fps,
            slot: Arc::new(FrameSlot::new()),
            stop: Arc::new(AtomicBool::new(false)),
            heartbeat: Arc::new(Heartbeat::default()),
            status: Arc::new(SourceStatus::default()),
        }
    }

    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Sleeps `total`, beating; false (early) when told to stop.
    pub fn sleep(&self, total: Duration) -> bool {
        sleep_unless(&self.stop, total, &self.heartbeat)
    }
}

/// Exponential reconnect delays: 1 s, 2 s, 4 s … up to `max`; `reset` after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff { initial, max, next: initial }
    }

    /// What [`supervise`] uses for every source: 1 s doubling to 30 s.
    pub fn reconnect() -> Backoff {
        Backoff::new(Duration::from_secs(1), Duration::from_secs(30))
    }

    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// An opened device or stream, as [`supervise`] drives it.
pub trait Connection {
    /// What the log calls it: "camera", "stream".
    const NOUN: &'static str;
    /// What was opened, for the log line that says so (`mode="Mjpeg 1280x720 @ 30 fps"`).
    fn describe(&self) -> String;
    /// The next frame, waiting for it (a wait of its own goes through `ctx.sleep`, which
    /// ends early when the source is told to stop); an error ends this connection, and the
    /// source is opened again.
    fn frame(&mut self, ctx: &SourceContext) -> Result<RgbImage, String>;
    /// When the frame `frame` returned last was captured (unix ms, and the same moment on the
    /// monotonic clock), for a source whose stream says; `None`: when it arrived.
    fn captured(&self) -> Option<(u64, Instant)> {
        None
    }
    /// The JPEG bytes the frame `frame` returned last was decoded from, if it came as JPEG
    /// (taken: a second call gives `None`).
    fn take_jpeg(&mut self) -> Option<Vec<u8>> {
        None
    }
}

/// Runs a source that opens something that can fail or go away, until told to stop: opens
/// it, hands on every frame, and when opening fails or a frame cannot be had, logs why and
/// opens it again after the next `backoff` delay (reset by a frame; [`Backoff::reconnect`]
/// for every source). `what` names the device or stream in the log (`device=/dev/video0`);
/// the frame numbers run on across reopenings.
pub fn supervise<C: Connection>(
    ctx: &SourceContext,
    what: &str,
    backoff: &mut Backoff,
    mut open: impl FnMut() -> Result<C, String>,
) {
    let (camera, noun) = (&ctx.camera, C::NOUN);
    let mut number = 0;
    let mut opened_before = false;
    while !ctx.stopped() {
        ctx.heartbeat.beat();
        match open() {
            Ok(mut connection) => {
                if opened_before {
                    ctx.status.reconnects.fetch_add(1, Ordering::Relaxed);
                }
                opened_before = true;
                log::info!("camera={camera} {what} {} {noun} opened", connection.describe());
                while !ctx.stopped() {
                    ctx.heartbeat.beat();
                    match connection.frame(ctx) {
                        Ok(image) => {
                            if !ctx.status.is_running() {
                                backoff.reset();
                                ctx.status.set_running(true);
                            }
                            number += 1;
                            let frame = match connection.captured() {
                                Some(at) => Frame::captured_at(Arc::new(image), number, at),
                                None => Frame::new(Arc::new(image), number),
                            };
                            let frame = frame.with_jpeg(connection.take_jpeg().map(Arc::new));
                            ctx.slot.put(frame);
                        }
                        Err(_) if ctx.stopped() => break,
                        Err(e) => {
                            log::warn!("camera={camera} {what} {noun} lost: {e}");
                            break;
                        }
                    }
                }
            }
            Err(e) => log::warn!("camera={camera} {what} cannot open the {noun}: {e}"),
        }
        ctx.status.set_running(false);
        if ctx.stopped() {
            break;
        }
        let delay = backoff.next_delay();
        log::info!("camera={camera} {what} retry_in_s={} reconnecting", delay.as_secs_f32());
        if !ctx.sleep(delay) {
            break;
        }
    }
}

/// Starts the configured source on its own thread.
pub fn spawn(settings: &SourceSettings, ctx: SourceContext) -> std::io::Result<std::thread::JoinHandle<()>> {
    let settings = settings.clone();
    std::thread::Builder::new().name(format!("source-{}", ctx.camera)).spawn(move || {
        // Closes the slot however the thread ends, a panic included, so inference never
        // waits for a source that is gone.
        let _closer = Closer(&ctx);
        match &settings {
            SourceSettings::Replay(r) => replay::run(r, &ctx),
            SourceSettings::V4l2(v) => camera::run(v, &ctx),
            SourceSettings::Mjpeg(m) => mjpeg::run(m, &ctx),
            SourceSettings::Rtsp(r) => rtsp::run(r, &ctx),
        }
    })
}

struct Closer<'a>(&'a SourceContext);

impl Drop for Closer<'_> {
    fn drop(&mut self) {
        self.0.status.set_running(false);
        self.0.heartbeat.finish();
        self.0.slot.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: u64) -> Frame {
        Frame::new(Arc::new(RgbImage::new(2, 2)), n)
    }

    #[test]
    fn newest_frame_wins_and_drops_are_counted() {
        let slot = FrameSlot::new();
        slot.put(frame(1));
        slot.put(frame(2));
        slot.put(frame(3));
        match slot.take(Duration::from_millis(1)) {
            Taken::Frame(f) => assert_eq!(f.number, 3),
            other => panic!("{other:?}"),
        }
        assert_eq!(slot.dropped(), 2);
        assert!(matches!(slot.take(Duration::from_millis(1)), Taken::Empty));
        slot.put(frame(4));
        slot.close();
        assert!(matches!(slot.take(Duration::from_millis(1)), Taken::Frame(_)), "a waiting frame outlives close");
        assert!(matches!(slot.take(Duration::from_millis(1)), Taken::Closed));
    }

    #[test]
    fn each_kind_checks_its_own_keys_and_every_problem_is_named() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let problems_of = |value: Value| {
            let mut problems = Vec::new();
            let settings = check(value, "cameras.a.source", dir, &mut problems);
            (settings, problems.join("\n"))
        };
        let (settings, all) = problems_of(serde_json::json!({"kind": "replay", "path": "tests/photos/sample1.jpg"}));
        assert!(all.is_empty(), "{all}");
        let Some(SourceSettings::Replay(replay)) = settings else { panic!("{settings:?}") };
        assert_eq!(replay.files, vec![dir.join("tests/photos/sample1.jpg")]);
        assert!((replay.fps, replay.looped, replay.repeat) == (1.0, true, 1), "the defaults");

        let (_, all) = problems_of(serde_json::json!({"kind": "replay", "path": "tests/photos",
            "device": "/dev/video0", "fps": 0, "repeat": 0}));
        for expected in [
            "cameras.a.source.device: not a key of a replay source",
            "cameras.a.source.fps: 0 must be between 0.001 and 1000",
            "cameras.a.source.repeat: must be at least 1",
        ] {
            assert!(all.contains(expected), "missing {expected:?} in:\n{all}");
        }
        let (_, all) = problems_of(serde_json::json!({"kind": "v4l2", "path": "x", "fps": 7.5, "format": "grey"}));
        for expected in [
            "cameras.a.source.path: not a key of a v4l2 source",
            "cameras.a.source.fps: 7.5 must be a whole number",
            "cameras.a.source.format: grey-scale capture is not supported",
        ] {
            assert!(all.contains(expected), "missing {expected:?} in:\n{all}");
        }
        for (value, expected) in [
            (
                serde_json::json!({"kind": "rtmp"}),
                "cameras.a.source.kind: \"rtmp\" is not \"v4l2\", \"rtsp\", \"mjpeg\" or \"replay\"",
            ),
            (
                serde_json::json!({"kind": 3}),
                "cameras.a.source.kind: must be text, \"v4l2\", \"rtsp\", \"mjpeg\" or \"replay\"",
            ),
            (
                serde_json::json!({"path": "x"}),
                "cameras.a.source.kind: missing (\"v4l2\", \"rtsp\", \"mjpeg\" or \"replay\")",
            ),
            (
                serde_json::json!("/dev/video0"),
                "cameras.a.source: must be a table with kind = \"v4l2\", \"rtsp\", \"mjpeg\" or \"replay\"",
            ),
        ] {
            let (settings, all) = problems_of(value);
            assert!(settings.is_none() && all == expected, "{all}");
        }
    }

    #[test]
    fn backoff_doubles_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(5));
        let delays: Vec<u64> = (0..5).map(|_| b.next_delay().as_secs()).collect();
        assert_eq!(delays, vec![1, 2, 4, 5, 5]);
        b.reset();
        assert_eq!(b.next_delay().as_secs(), 1);
    }

    /// Gives `frames` frames, then fails.
    struct Flaky {
        frames: u32,
        status: Arc<SourceStatus>,
        seen_running: Arc<AtomicBool>,
    }

    impl Connection for Flaky {
        const NOUN: &'static str = "stream";

        fn describe(&self) -> String {
            "flaky".into()
        }

        fn frame(&mut self, _: &SourceContext) -> Result<RgbImage, String> {
            if self.frames == 0 {
                return Err("the stream ended".into());
            }
            if self.status.is_running() {
                self.seen_running.store(true, Ordering::Relaxed);
            }
            self.frames -= 1;
            Ok(RgbImage::new(2, 2))
        }
    }

    #[test]
    fn a_supervised_source_reopens_counts_and_says_when_it_runs() {
        let ctx = SourceContext::new("test", 5.0);
        let seen_running = Arc::new(AtomicBool::new(false));
        let mut attempts = 0;
        let open = || {
            attempts += 1;
            match attempts {
                // Refused twice (a wrong password, a camera not yet there), then 3 frames,
                // then 2 more after the stream is lost once; then refused until stopped.
                1 | 2 => Err(format!("refused ({attempts})")),
                3 => Ok(Flaky { frames: 3, status: ctx.status.clone(), seen_running: seen_running.clone() }),
                4 => Ok(Flaky { frames: 2, status: ctx.status.clone(), seen_running: seen_running.clone() }),
                _ => {
                    assert!(!ctx.status.is_running(), "a source failing to open is not running");
                    ctx.stop.store(true, Ordering::Relaxed);
                    Err("refused".into())
                }
            }
        };
        let mut backoff = Backoff::new(Duration::from_millis(1), Duration::from_millis(8));
        supervise(&ctx, "url=test", &mut backoff, open);
        assert_eq!(attempts, 5);
        assert_eq!(ctx.status.reconnects(), 1, "the one opening after a loss; failed attempts are not counted");
        // 1 ms, 2 ms before the first frames; reset by them, then 1 ms after the loss and
        // 1 ms after the second loss (reset again); the last attempt stops before waiting.
        assert_eq!(backoff.next_delay(), Duration::from_millis(2), "reset by the frames of the last connection");
        assert!(seen_running.load(Ordering::Relaxed), "running once frames came");
        assert!(!ctx.status.is_running());
        // Newest frame wins: the slot holds the last of the 5, numbered across reopenings.
        match ctx.slot.take(Duration::from_millis(1)) {
            Taken::Frame(f) => assert_eq!(f.number, 5),
            other => panic!("{other:?}"),
        }
        assert_eq!(ctx.slot.dropped(), 4);
    }
}
