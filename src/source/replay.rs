//! The replay source: image files shown as frames at a set rate, optionally looping. It
//! stands in for a camera in the demo and the tests, and replays recorded scenes.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{sleep_unless, Frame, FrameSlot, Heartbeat};
use crate::config::ReplaySettings;
use crate::dataset::IMAGE_EXTENSIONS;

/// The images a replay path names: the file itself, or a folder's images (.png, .jpg, .jpeg)
/// sorted by name. Each must at least have a readable header; a file that does not is a
/// problem named here, not a frame skipped for ever at run time.
pub fn list_images(path: &Path) -> Result<Vec<PathBuf>, String> {
    let files = if path.is_file() {
        vec![path.to_path_buf()]
    } else if path.is_dir() {
        let entries = std::fs::read_dir(path).map_err(|e| format!("cannot list {}: {e}", path.display()))?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_lowercase().as_str()))
            })
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(format!("{} holds no images (.png, .jpg, .jpeg)", path.display()));
        }
        files
    } else {
        return Err(format!("{} does not exist", path.display()));
    };
    for file in &files {
        let header = image::ImageReader::open(file).and_then(|r| r.with_guessed_format());
        let readable = header.map_err(|e| e.to_string()).and_then(|r| match r.format() {
            Some(image::ImageFormat::Png | image::ImageFormat::Jpeg) => r.into_dimensions().map_err(|e| e.to_string()),
            _ => Err("not a PNG or JPEG image".into()),
        });
        if let Err(e) = readable {
            return Err(format!("{} is not a readable image: {e}", file.display()));
        }
    }
    Ok(files)
}

/// Plays the files until the end (or for ever with `looped`), or until `stop`.
pub(super) fn run(camera: &str, settings: &ReplaySettings, slot: &FrameSlot, stop: &AtomicBool, hb: &Heartbeat) {
    let interval = Duration::from_secs_f64(1.0 / settings.fps);
    let mut number = 0;
    let mut next = Instant::now();
    loop {
        let mut shown = 0;
        for file in &settings.files {
            let image = match crate::dataset::read_image(file) {
                Ok(image) => Arc::new(image),
                Err(e) => {
                    log::warn!("camera={camera} file={} replay skips an unreadable image: {e:#}", file.display());
                    continue;
                }
            };
            shown += 1;
            for _ in 0..settings.repeat {
                if settings.follow_inference {
                    while !slot.wait_empty(Duration::from_millis(100)) {
                        hb.beat();
                        if stop.load(std::sync::atomic::Ordering::Relaxed) {
                            return;
                        }
                    }
                    number += 1;
                    slot.put(Frame::new(image.clone(), number));
                    continue;
                }
                number += 1;
                slot.put(Frame::new(image.clone(), number));
                next += interval;
                let wait = next.saturating_duration_since(Instant::now());
                if !sleep_unless(stop, wait, hb) {
                    return;
                }
            }
        }
        if !settings.looped {
            log::info!("camera={camera} frames={number} replay finished");
            return;
        }
        if shown == 0 {
            log::error!("camera={camera} replay has no readable image left; stopping this source");
            return;
        }
    }
}
