//! Collection: a camera saves the frames worth labelling, with its model's detections as
//! pre-labels, for `vigil dataset` to turn into training data (docs/dataset.md).
//!
//! The camera's reporter asks the [`Policy`] about each inferred frame (no pixel read) and
//! offers the frames it picks to the camera's [`Collector`]: a thread of its own behind a
//! bounded queue. Policy: **a full queue drops the frame and counts it** — collection never
//! holds up inference. The collector skips near duplicates of the last saved frame, keeps the
//! volume's free space above a floor, writes each item atomically into the camera's
//! [`store::Collection`], and keeps the collection within its bounds (the oldest unreviewed
//! item goes first; reviewed ones are never deleted).

pub mod item;
pub mod policy;
pub mod settings;
pub mod store;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use image::RgbImage;
use serde::Serialize;

pub use item::{ReviewStatus, Sidecar, Why};
pub use policy::Policy;
pub use settings::CollectSettings;

use crate::model::Detection;

/// Frames waiting for the collector at most; more are dropped (and counted).
const QUEUE: usize = 4;
/// The thumbnail the near-duplicate check compares: 32 × 24 grey values.
const THUMB: (usize, usize) = (32, 24);

/// A frame picked to be saved.
#[derive(Debug)]
pub struct Job {
    pub image: Arc<RgbImage>,
    /// The camera's own JPEG of the frame, when the source had one.
    pub jpeg: Option<Arc<Vec<u8>>>,
    /// Every detection the model reported for it (before the camera's filters and zones).
    pub detections: Vec<Detection>,
    pub why: Vec<Why>,
    pub captured_at: u64,
    pub model: item::ItemModel,
    /// The model's labels, in its order (the collection learns new ones from them).
    pub labels: Arc<Vec<String>>,
}

/// What a camera's collection did, for its stats and state.
#[derive(Debug, Default)]
pub struct Counters {
    /// Frames saved since start.
    pub collected: AtomicU64,
    /// Frames dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Frames not saved as near duplicates of the last saved one.
    pub duplicates: AtomicU64,
    /// Frames not saved for want of room (the volume's floor, or a collection of reviewed
    /// items only) or because writing failed (each logged).
    pub skipped: AtomicU64,
    /// Items and bytes in the collection now.
    pub items: AtomicU64,
    pub bytes: AtomicU64,
}

/// A camera's collection as stats and the state topic report it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CollectStats {
    pub enabled: bool,
    pub collected: u64,
    pub dropped: u64,
    pub duplicates: u64,
    pub skipped: u64,
    pub items: u64,
    pub bytes: u64,
}

/// What the daemon and the reporter share with a camera's collector.
#[derive(Debug, Default)]
pub struct Control {
    /// The policy's rules apply (collection `ON`).
    pub enabled: AtomicBool,
    /// A frame was asked for (`NOW`): the next inferred frame is saved.
    pub requested: AtomicBool,
    pub counters: Counters,
    /// The id of the last frame saved on request, for the state topic.
    pub last_requested: Mutex<Option<String>>,
    /// Why the last frame asked for was not saved, if it was not.
    pub last_refusal: Mutex<Option<String>>,
}

impl Control {
    pub fn stats(&self) -> CollectStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CollectStats {
            enabled: self.enabled.load(Ordering::Relaxed),
            collected: get(&c.collected),
            dropped: get(&c.dropped),
            duplicates: get(&c.duplicates),
            skipped: get(&c.skipped),
            items: get(&c.items),
            bytes: get(&c.bytes),
        }
    }
}

/// A camera's collector thread and its queue; dropping it finishes the queued frames and
/// ends the thread.
pub struct Collector {
    jobs: Option<SyncSender<Job>>,
    pub control: Arc<Control>,
    thread: Option<JoinHandle<()>>,
}

/// Who the collector saves for: the names its items carry, and what to call after a frame
/// saved on request (the daemon publishes the collection's state).
pub struct Owner {
    pub device: String,
    pub camera: String,
    pub on_requested: Box<dyn Fn(&Control) + Send>,
}

impl Collector {
    /// Opens the camera's collection folder and starts its thread.
    pub fn start(settings: CollectSettings, owner: Owner, control: Arc<Control>) -> std::io::Result<Collector> {
        // A reload's new collector waits for the old one to finish its queue.
        let (collection, warnings) = store::Collection::open(&settings.dir, std::time::Duration::from_secs(10))?;
        for w in warnings {
            log::warn!("camera={} collection: {w}", owner.camera);
        }
        control.counters.items.store(collection.items() as u64, Ordering::Relaxed);
        control.counters.bytes.store(collection.bytes(), Ordering::Relaxed);
        log::info!(
            "camera={} path={} items={} bytes={} enabled={} collection opened",
            owner.camera,
            settings.dir.display(),
            collection.items(),
            collection.bytes(),
            control.enabled.load(Ordering::Relaxed)
        );
        let (jobs, queue) = sync_channel(QUEUE);
        let worker = Worker {
            settings,
            owner,
            control: control.clone(),
            collection,
            last_thumb: None,
            warned_disk: false,
            warned_full: false,
        };
        let name = format!("collect-{}", worker.owner.camera);
        let thread = std::thread::Builder::new().name(name).spawn(move || worker.run(queue))?;
        Ok(Collector { jobs: Some(jobs), control, thread: Some(thread) })
    }

    /// Offers a frame; a full queue drops it (counted). False when it was not taken.
    pub fn offer(&self, job: Job) -> bool {
        let Some(jobs) = &self.jobs else { return false };
        match jobs.try_send(job) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                self.control.counters.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Worker {
    settings: CollectSettings,
    owner: Owner,
    control: Arc<Control>,
    collection: store::Collection,
    last_thumb: Option<Vec<u8>>,
    /// Said once: the volume's floor reached; the collection full of items it may not delete.
    warned_disk: bool,
    warned_full: bool,
}

impl Worker {
    fn run(mut self, queue: std::sync::mpsc::Receiver<Job>) {
        for job in queue {
            let requested = job.why.contains(&Why::Requested);
            let refused = match self.save(job) {
                Ok(Ok(id)) => {
                    self.control.counters.collected.fetch_add(1, Ordering::Relaxed);
                    if requested {
                        *self.control.last_requested.lock().unwrap_or_else(|e| e.into_inner()) = Some(id);
                        *self.control.last_refusal.lock().unwrap_or_else(|e| e.into_inner()) = None;
                    }
                    None
                }
                Ok(Err(why)) => Some(why),
                Err(e) => {
                    self.control.counters.skipped.fetch_add(1, Ordering::Relaxed);
                    let why = format!("cannot save a frame: {e}");
                    log::error!("camera={} path={} {why}", self.owner.camera, self.settings.dir.display());
                    Some(why)
                }
            };
            self.control.counters.items.store(self.collection.items() as u64, Ordering::Relaxed);
            self.control.counters.bytes.store(self.collection.bytes(), Ordering::Relaxed);
            if requested {
                // Whoever asked is answered, saved or not.
                if let Some(why) = refused {
                    *self.control.last_refusal.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
                }
                (self.owner.on_requested)(&self.control);
            }
        }
    }

    /// Saves one frame: its id, or why it was not saved (counted).
    fn save(&mut self, job: Job) -> std::io::Result<Result<String, String>> {
        let camera = self.owner.camera.clone();
        let camera = &camera;
        // A frame asked for, or the background sample, is saved whatever it looks like.
        let any_look = job.why.iter().any(|w| matches!(w, Why::Requested | Why::Background));
        let thumb = thumbnail(&job.image);
        if !any_look && self.settings.near_duplicate > 0.0 {
            if let Some(last) = &self.last_thumb {
                if difference(last, &thumb) < self.settings.near_duplicate {
                    self.control.counters.duplicates.fetch_add(1, Ordering::Relaxed);
                    return Ok(Err("a near duplicate of the last saved frame".into()));
                }
            }
        }
        if let Some(free) = self.make_free_space()? {
            self.control.counters.skipped.fetch_add(1, Ordering::Relaxed);
            if !self.warned_disk {
                self.warned_disk = true;
                log::warn!(
                    "camera={camera} free_bytes={free} min_free_bytes={} the volume is nearly full and no unreviewed \
                     item is left to delete: collection stops until there is room (detection goes on)",
                    self.settings.min_free_bytes
                );
            }
            return Ok(Err(format!("the volume has {free} bytes free, below collect.min_free_megabytes")));
        }
        self.warned_disk = false;
        let (width, height) = job.image.dimensions();
        let image = match &job.jpeg {
            Some(jpeg) => jpeg.as_ref().clone(),
            None => encode_jpeg(&job.image, self.settings.jpeg_quality)?,
        };
        let sha256 = crate::model::sha256_hex(&image);
        let id = item::item_id(camera, job.captured_at, &sha256);
        self.collection.know(&job.labels)?;
        let new = store::NewItem {
            id: id.clone(),
            sha256,
            image: &image,
            extension: "jpg",
            width,
            height,
            device: Some(self.owner.device.clone()),
            camera: Some(camera.clone()),
            captured_at: Some(job.captured_at),
            why: job.why,
            model: job.model,
            prelabel_score: self.settings.prelabel_score,
            detections: &job.detections,
        };
        match self.collection.save(new, self.settings.max_images, self.settings.max_bytes) {
            Ok(sidecar) => {
                self.warned_full = false;
                self.last_thumb = Some(thumb);
                log::debug!("camera={camera} item={id} why={:?} frame collected", sidecar.why);
                Ok(Ok(id))
            }
            Err(store::AddError::Full { items, bytes }) => {
                self.control.counters.skipped.fetch_add(1, Ordering::Relaxed);
                if !self.warned_full {
                    self.warned_full = true;
                    log::warn!(
                        "camera={camera} items={items} bytes={bytes} the collection is full of reviewed items (they \
                         are never deleted): move them off the device, or raise collect.max_images / max_megabytes"
                    );
                }
                Ok(Err(format!("the collection is full ({items} items, {bytes} bytes) of items it may not delete")))
            }
            Err(store::AddError::Io(e)) => Err(e),
        }
    }

    /// Keeps the volume's free space above the floor by deleting the oldest unreviewed
    /// items; the free bytes when it cannot (none is left to delete), else `None`.
    fn make_free_space(&mut self) -> std::io::Result<Option<u64>> {
        loop {
            match free_bytes(self.collection.root()) {
                Some(free) if free < self.settings.min_free_bytes => {
                    if !self.collection.free_one()? {
                        return Ok(Some(free));
                    }
                }
                _ => return Ok(None),
            }
        }
    }
}

fn encode_jpeg(image: &RgbImage, quality: u8) -> std::io::Result<Vec<u8>> {
    let mut jpeg = Vec::new();
    let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, quality);
    image.write_with_encoder(encoder).map_err(std::io::Error::other)?;
    Ok(jpeg)
}

/// A small greyscale picture of the frame: each of [`THUMB`]'s cells the mean of 4 × 4
/// pixels spread over it (a few hundred reads, whatever the frame's size).
pub fn thumbnail(image: &RgbImage) -> Vec<u8> {
    let (w, h) = (image.width() as usize, image.height() as usize);
    let (tw, th) = THUMB;
    if w == 0 || h == 0 {
        return vec![0; tw * th];
    }
    let mut out = Vec::with_capacity(tw * th);
    for ty in 0..th {
        for tx in 0..tw {
            let mut sum = 0u32;
            for sy in 0..4 {
                for sx in 0..4 {
                    let x = ((tx * 4 + sx) * 2 + 1) * w / (tw * 8);
                    let y = ((ty * 4 + sy) * 2 + 1) * h / (th * 8);
                    let p = image.get_pixel(x.min(w - 1) as u32, y.min(h - 1) as u32);
                    sum += (u32::from(p[0]) * 77 + u32::from(p[1]) * 150 + u32::from(p[2]) * 29) >> 8;
                }
            }
            out.push((sum / 16) as u8);
        }
    }
    out
}

/// A thumbnail cell changed when its grey value moved by more than this (sensor noise and
/// compression stay below it).
const CHANGED: u8 = 10;

/// The share of two thumbnails' cells that changed (0–1): how much of the picture is new.
pub fn difference(a: &[u8], b: &[u8]) -> f32 {
    if a.len() != b.len() || a.is_empty() {
        return 1.0;
    }
    let changed = a.iter().zip(b).filter(|(x, y)| x.abs_diff(**y) > CHANGED).count();
    changed as f32 / a.len() as f32
}

/// Bytes free for an unprivileged writer on the volume holding `path`.
fn free_bytes(path: &std::path::Path) -> Option<u64> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: a NUL-terminated path and a statvfs the call fills when it returns 0.
    if unsafe { libc::statvfs(c.as_ptr(), stat.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled the struct.
    let stat = unsafe { stat.assume_init() };
    // 32-bit counts on 32-bit ARM, 64-bit ones elsewhere.
    #[allow(clippy::unnecessary_cast)]
    Some((stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn near_duplicates_are_told_from_changes() {
        let grey = RgbImage::from_pixel(1920, 1080, image::Rgb([100, 100, 100]));
        let mut noisy = grey.clone();
        for (i, p) in noisy.pixels_mut().enumerate() {
            p[0] = p[0].wrapping_add((i % 3) as u8);
        }
        let mut car = grey.clone();
        for y in 300..700 {
            for x in 600..1300 {
                car.put_pixel(x, y, image::Rgb([20, 20, 200]));
            }
        }
        let (g, n, c) = (thumbnail(&grey), thumbnail(&noisy), thumbnail(&car));
        assert_eq!(g.len(), 32 * 24);
        assert_eq!(difference(&g, &n), 0.0, "sensor noise");
        assert!(difference(&g, &c) > 0.1, "a car arrived: {}", difference(&g, &c));
        // A person far off: 40 × 90 pixels of a 1080p frame (0.17%) still shows.
        let mut person = grey.clone();
        for y in 500..590 {
            for x in 900..940 {
                person.put_pixel(x, y, image::Rgb([200, 180, 150]));
            }
        }
        let d = difference(&g, &thumbnail(&person));
        assert!(d > 0.0, "a small figure: {d}");
        assert_eq!(difference(&g, &[]), 1.0);
        let tiny = thumbnail(&RgbImage::new(1, 1));
        assert_eq!(tiny.len(), 32 * 24, "any size, even one pixel");
    }

    /// Offers far faster than frames can be written: none waits, the queue never holds
    /// more than its few frames, and every frame not taken is counted as dropped.
    #[test]
    fn a_full_queue_drops_and_counts_never_waits() {
        let root = std::env::temp_dir().join(format!("vigil-collector-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let mut problems = Vec::new();
        let settings = settings::check(
            serde_json::json!({"near_duplicate": 0, "min_free_megabytes": 0, "max_images": 10}),
            "c",
            "door",
            &root,
            &root,
            &mut problems,
        )
        .unwrap();
        let control = Arc::new(Control::default());
        let owner = Owner { device: "d".into(), camera: "door".into(), on_requested: Box::new(|_| {}) };
        let collector = Collector::start(settings, owner, control.clone()).unwrap();
        let image = Arc::new(RgbImage::from_pixel(640, 480, image::Rgb([9, 9, 9])));
        let started = std::time::Instant::now();
        for i in 0..200 {
            collector.offer(Job {
                image: image.clone(),
                jpeg: None,
                detections: Vec::new(),
                why: vec![Why::Background],
                captured_at: i,
                model: item::ItemModel { name: "m".into(), version: "1".into(), sha256: "ab".repeat(32) },
                labels: Arc::new(vec!["car".into()]),
            });
        }
        let offering = started.elapsed();
        drop(collector);
        let s = control.stats();
        assert!(offering < std::time::Duration::from_millis(500), "offers waited: {offering:?}");
        assert_eq!(s.collected + s.dropped + s.skipped + s.duplicates, 200, "{s:?}");
        assert!(s.dropped > 0, "{s:?}");
        assert!(s.items <= 10, "the quota: {s:?}");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn free_space_is_read() {
        assert!(free_bytes(std::path::Path::new("/")).is_some_and(|b| b > 0));
        assert_eq!(free_bytes(std::path::Path::new("/no/such/place")), None);
    }
}
