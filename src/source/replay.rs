//! The replay source: image files shown as frames at a set rate, optionally looping. It
//! stands in for a camera in the demo and the tests, and replays recorded scenes.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{sleep_unless, unix_ms, Frame, FrameSlot, Heartbeat};
use crate::config::ReplaySettings;

const IMAGE_EXTENSIONS: [&str; 4] = ["png", "jpg", "jpeg", "bmp"];

/// The images a replay path names: the file itself, or a folder's images sorted by name.
pub fn list_images(path: &Path) -> Result<Vec<PathBuf>, String> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    if !path.is_dir() {
        return Err(format!("{} does not exist", path.display()));
    }
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
        return Err(format!("{} holds no images (.png, .jpg, .jpeg, .bmp)", path.display()));
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
                number += 1;
                slot.put(Frame { image: image.clone(), number, captured_at: unix_ms() });
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
