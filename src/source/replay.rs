//! The replay source: image files shown as frames at a set rate, optionally looping. It
//! stands in for a camera in the demo and the tests, and replays recorded scenes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;

use super::{Frame, SourceContext};
use crate::dataset::IMAGE_EXTENSIONS;
use crate::settings::{resolve, section_as, MIN_FPS};

/// `kind = "replay"`: image files shown as frames.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplaySettings {
    /// The image files, in order (folders are expanded at load time, sorted by name).
    pub files: Vec<PathBuf>,
    pub fps: f64,
    pub looped: bool,
    /// Frames each image is shown for.
    pub repeat: u32,
    /// The next frame is read only once inference has taken the last one, and `fps` is
    /// ignored: frames come as fast as the pipeline takes them and none is read in vain.
    /// Not a configuration key: `vigil bench --pipeline` replays this way.
    pub follow_inference: bool,
}

/// The keys of a replay source, as written.
#[derive(Debug, Default, Deserialize)]
struct RawReplay {
    path: Option<PathBuf>,
    fps: Option<f64>,
    #[serde(rename = "loop")]
    looped: Option<bool>,
    repeat: Option<u32>,
}

/// Checks a replay source's keys (all but `kind`); `key` is the table's path, `dir` the
/// folder relative paths start from.
pub(super) fn check(value: Value, key: &str, dir: &Path, problems: &mut Vec<String>) -> Option<ReplaySettings> {
    let raw: RawReplay = section_as(value, key, problems, "not a key of a replay source")?;
    let Some(path) = raw.path else {
        problems.push(format!("{key}.path: missing (an image file or a folder of images)"));
        return None;
    };
    let files = match list_images(&resolve(dir, &path)) {
        Ok(files) => files,
        Err(why) => {
            problems.push(format!("{key}.path: {why}"));
            Vec::new()
        }
    };
    let fps = raw.fps.unwrap_or(1.0);
    if !(MIN_FPS..=1000.0).contains(&fps) {
        problems.push(format!("{key}.fps: {fps} must be between {MIN_FPS} and 1000"));
    }
    let repeat = raw.repeat.unwrap_or(1);
    if repeat == 0 {
        problems.push(format!("{key}.repeat: must be at least 1"));
    }
    Some(ReplaySettings { files, fps, looped: raw.looped.unwrap_or(true), repeat, follow_inference: false })
}

/// The images a replay path names: the file itself, or a folder's images (.png, .jpg, .jpeg)
/// sorted by name. Each must at least have a readable header; a file that does not is a
/// problem named here, not a frame skipped for ever at run time.
pub fn list_images(path: &Path) -> Result<Vec<PathBuf>, String> {
    let files = if path.is_dir() {
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
    } else if path.exists() {
        // A file, or what only looks like one (a FIFO, a device): the header read says which.
        vec![path.to_path_buf()]
    } else {
        return Err(format!("{} does not exist", path.display()));
    };
    for file in &files {
        if let Err(e) = crate::dataset::image_size(file) {
            return Err(format!("{} is not a readable image: {e}", file.display()));
        }
    }
    Ok(files)
}

/// Plays the files until the end (or for ever with `looped`), or until told to stop.
pub(super) fn run(settings: &ReplaySettings, ctx: &SourceContext) {
    let (camera, slot, hb) = (&ctx.camera, &ctx.slot, &ctx.heartbeat);
    ctx.status.set_running(true);
    let interval = Duration::from_secs_f64(1.0 / settings.fps);
    let mut number = 0;
    let mut next = Instant::now();
    loop {
        let mut shown = 0;
        for file in &settings.files {
            let (image, jpeg) = match crate::dataset::read_image_file(file) {
                // A JPEG's own bytes go with its frames (a collected frame is then the file).
                Ok((bytes, image)) => (Arc::new(image), bytes.starts_with(&[0xFF, 0xD8]).then(|| Arc::new(bytes))),
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
                        if ctx.stopped() {
                            return;
                        }
                    }
                    number += 1;
                    slot.put(Frame::new(image.clone(), number).with_jpeg(jpeg.clone()));
                    continue;
                }
                number += 1;
                slot.put(Frame::new(image.clone(), number).with_jpeg(jpeg.clone()));
                next += interval;
                let wait = next.saturating_duration_since(Instant::now());
                if !ctx.sleep(wait) {
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
