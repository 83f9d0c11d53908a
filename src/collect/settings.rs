//! `[cameras.<id>.collect]`: which frames a camera saves for labelling, and how much it may
//! keep. Owned here; the configuration hands this module the table and collects the
//! problems it names (docs/config.md lists the keys).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::settings::{resolve, section_as};

/// A camera's collection settings, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct CollectSettings {
    /// Collect on the rules below from the start (`ON`/`OFF` over MQTT changes it; a frame
    /// asked for with `NOW` is saved either way).
    pub enabled: bool,
    /// The camera's collection folder: `<path>/<camera>`.
    pub dir: PathBuf,
    /// A frame with a detection scored within this band (inclusive) is saved.
    pub uncertain: Option<(f32, f32)>,
    /// The first frame of each new track is saved.
    pub new_tracks: bool,
    /// One frame this often whatever is in it (empty frames teach what is not there).
    pub background_every: Option<Duration>,
    /// At least this long between two saved frames (a requested one excepted).
    pub min_interval: Duration,
    /// At most this many frames an hour with a given label among their pre-labels.
    pub max_per_label_per_hour: u32,
    /// A frame of which less than this share (0–1) changed since the last saved one (cells
    /// of a 32 × 24 greyscale thumbnail that moved by more than 10 grey levels) is a near
    /// duplicate and is not saved; 0: off.
    pub near_duplicate: f32,
    /// Detections scored at least this become pre-labels.
    pub prelabel_score: f32,
    pub max_images: usize,
    pub max_bytes: u64,
    /// Collection stops while the volume has less free space than this.
    pub min_free_bytes: u64,
    /// Quality of frames that do not come as JPEG from the camera.
    pub jpeg_quality: u8,
}

#[derive(Debug, Default, Deserialize)]
struct RawCollect {
    enabled: Option<bool>,
    path: Option<PathBuf>,
    uncertain: Option<Value>,
    new_tracks: Option<bool>,
    background_every_s: Option<f64>,
    min_interval_s: Option<f64>,
    max_per_label_per_hour: Option<u32>,
    near_duplicate: Option<f32>,
    prelabel_score: Option<f32>,
    max_images: Option<usize>,
    max_megabytes: Option<u64>,
    min_free_megabytes: Option<u64>,
    jpeg_quality: Option<u8>,
}

/// The lowest score the uncertain band may start at: the model decodes down to it, and
/// below it a detector's scores are noise that costs decoding time.
pub const MIN_UNCERTAIN: f32 = 0.05;

/// The longest camera id a collection names its items after.
pub const MAX_CAMERA_ID: usize = 99;

/// The longest interval a setting takes: a day.
const MAX_SECONDS: f64 = 86_400.0;

/// Checks `cameras.<camera>.collect` (`key` is its path); a relative `path` is taken from
/// `dir`, and the default is `default_root` (the service's state directory's `collect`).
pub fn check(
    value: Value,
    key: &str,
    camera: &str,
    dir: &Path,
    default_root: &Path,
    problems: &mut Vec<String>,
) -> Option<CollectSettings> {
    let raw: RawCollect = section_as(value, key, problems, "not a key of [collect]")?;
    let before = problems.len();
    if camera.len() > MAX_CAMERA_ID {
        // An item id is `<camera>_<time>_<hash>`, at most 128 characters.
        problems.push(format!(
            "{key}: a camera id of {} characters is too long to collect under (at most {MAX_CAMERA_ID})",
            camera.len()
        ));
    }
    let root = raw.path.map(|p| resolve(dir, &p)).unwrap_or_else(|| default_root.to_path_buf());
    let uncertain = match raw.uncertain {
        None => Some((0.3, 0.6)),
        Some(Value::Bool(false)) => None,
        Some(Value::Array(band)) => match band.as_slice() {
            [Value::Number(lo), Value::Number(hi)] => {
                let (lo, hi) = (lo.as_f64().unwrap_or(f64::NAN) as f32, hi.as_f64().unwrap_or(f64::NAN) as f32);
                if !(lo.is_finite() && hi.is_finite() && MIN_UNCERTAIN <= lo && lo <= hi && hi <= 1.0) {
                    problems.push(format!(
                        "{key}.uncertain: [{lo}, {hi}] must be two scores, {MIN_UNCERTAIN} ≤ low ≤ high ≤ 1 (the model \
                         decodes down to low)"
                    ));
                }
                Some((lo, hi))
            }
            _ => {
                problems.push(format!("{key}.uncertain: must be [low, high] (two scores) or false"));
                None
            }
        },
        Some(_) => {
            problems.push(format!("{key}.uncertain: must be [low, high] (two scores) or false"));
            None
        }
    };
    let mut seconds = |v: f64, name: &str, zero_ok: bool| -> Duration {
        if !(v.is_finite() && (0.0..=MAX_SECONDS).contains(&v)) || (!zero_ok && v == 0.0) {
            let low = if zero_ok { "0 (off)" } else { "above 0" };
            problems.push(format!("{key}.{name}: {v} must be {low} to {MAX_SECONDS} seconds"));
            return Duration::ZERO;
        }
        Duration::from_secs_f64(v)
    };
    let background = seconds(raw.background_every_s.unwrap_or(600.0), "background_every_s", true);
    let min_interval = seconds(raw.min_interval_s.unwrap_or(10.0), "min_interval_s", true);
    let unit = |v: f32, name: &str, problems: &mut Vec<String>| {
        if !(v.is_finite() && (0.0..=1.0).contains(&v)) {
            problems.push(format!("{key}.{name}: {v} must be between 0 and 1"));
        }
        v
    };
    let near_duplicate = unit(raw.near_duplicate.unwrap_or(0.002), "near_duplicate", problems);
    let prelabel_score = unit(raw.prelabel_score.unwrap_or(0.5), "prelabel_score", problems);
    let max_per_label_per_hour = raw.max_per_label_per_hour.unwrap_or(30);
    if max_per_label_per_hour == 0 {
        problems.push(format!("{key}.max_per_label_per_hour: must be at least 1"));
    }
    let max_images = raw.max_images.unwrap_or(2000);
    if !(1..=1_000_000).contains(&max_images) {
        problems.push(format!("{key}.max_images: {max_images} must be 1 to 1000000"));
    }
    let max_megabytes = raw.max_megabytes.unwrap_or(1024);
    if !(1..=1 << 20).contains(&max_megabytes) {
        problems.push(format!("{key}.max_megabytes: {max_megabytes} must be 1 to 1048576 (1 TiB)"));
    }
    let min_free_megabytes = raw.min_free_megabytes.unwrap_or(512);
    if min_free_megabytes > 1 << 30 {
        problems.push(format!("{key}.min_free_megabytes: {min_free_megabytes} is more than any disk"));
    }
    let jpeg_quality = raw.jpeg_quality.unwrap_or(95);
    if !(1..=100).contains(&jpeg_quality) {
        problems.push(format!("{key}.jpeg_quality: {jpeg_quality} is outside 1..=100"));
    }
    (problems.len() == before).then(|| CollectSettings {
        enabled: raw.enabled.unwrap_or(true),
        dir: root.join(camera),
        uncertain,
        new_tracks: raw.new_tracks.unwrap_or(true),
        background_every: (background > Duration::ZERO).then_some(background),
        min_interval,
        max_per_label_per_hour,
        near_duplicate,
        prelabel_score,
        max_images,
        max_bytes: max_megabytes << 20,
        min_free_bytes: min_free_megabytes << 20,
        jpeg_quality,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_of(value: Value) -> (Option<CollectSettings>, String) {
        let mut problems = Vec::new();
        let s = check(
            value,
            "cameras.door.collect",
            "door",
            Path::new("/etc/vigil"),
            Path::new("/var/lib/vigil/collect"),
            &mut problems,
        );
        (s, problems.join("\n"))
    }

    #[test]
    fn defaults_and_every_problem_named() {
        let (s, all) = check_of(serde_json::json!({}));
        assert!(all.is_empty(), "{all}");
        let s = s.unwrap();
        assert_eq!(s.dir, Path::new("/var/lib/vigil/collect/door"));
        assert_eq!(s.uncertain, Some((0.3, 0.6)));
        assert_eq!((s.background_every, s.min_interval), (Some(Duration::from_secs(600)), Duration::from_secs(10)));
        assert_eq!((s.max_images, s.max_bytes), (2000, 1 << 30));
        let (s, _) = check_of(serde_json::json!({"path": "collected", "uncertain": false, "background_every_s": 0}));
        let s = s.unwrap();
        assert_eq!(
            (s.dir.as_path(), s.uncertain, s.background_every),
            (Path::new("/etc/vigil/collected/door"), None, None)
        );
        let (s, all) = check_of(serde_json::json!({
            "uncertain": [0.7, 0.2], "min_interval_s": -1, "near_duplicate": 2, "max_images": 0,
            "jpeg_quality": 0, "max_per_label_per_hour": 0, "every": 3
        }));
        assert!(s.is_none());
        for want in [
            "cameras.door.collect.uncertain: [0.7, 0.2] must be two scores",
            "cameras.door.collect.min_interval_s: -1",
            "cameras.door.collect.near_duplicate: 2",
            "cameras.door.collect.max_images: 0",
            "cameras.door.collect.jpeg_quality: 0",
            "cameras.door.collect.max_per_label_per_hour: must be at least 1",
            "cameras.door.collect.every: not a key of [collect]",
        ] {
            assert!(all.contains(want), "missing {want:?} in:\n{all}");
        }
        let (_, all) = check_of(serde_json::json!({"uncertain": [0.2]}));
        assert!(all.contains("must be [low, high]"), "{all}");
    }
}
