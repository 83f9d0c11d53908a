//! Frame sources: a V4L2 camera ([`camera`], through nokhwa) or a replay of image files
//! ([`replay`]). Each runs on its own thread, blocking, and hands frames to the pipeline
//! through a [`FrameSlot`].

pub mod camera;
pub mod replay;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use image::RgbImage;

pub use camera::PixelFormat;

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
}

impl Frame {
    /// A frame captured now.
    pub fn new(image: Arc<RgbImage>, number: u64) -> Frame {
        Frame { image, number, captured_at: unix_ms(), captured: Instant::now() }
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

/// Starts the configured source on its own thread.
pub fn spawn(
    camera: &str,
    settings: &crate::config::SourceSettings,
    slot: Arc<FrameSlot>,
    stop: Arc<AtomicBool>,
    heartbeat: Arc<Heartbeat>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let name = camera.to_string();
    let settings = settings.clone();
    std::thread::Builder::new().name(format!("source-{camera}")).spawn(move || {
        // Closes the slot however the thread ends, a panic included, so inference never
        // waits for a source that is gone.
        let _closer = Closer(&slot, &heartbeat);
        match settings {
            crate::config::SourceSettings::Replay(r) => replay::run(&name, &r, &slot, &stop, &heartbeat),
            crate::config::SourceSettings::V4l2(v) => camera::run(&name, &v, &slot, &stop, &heartbeat),
        }
    })
}

struct Closer<'a>(&'a FrameSlot, &'a Heartbeat);

impl Drop for Closer<'_> {
    fn drop(&mut self) {
        self.1.finish();
        self.0.close();
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
}
