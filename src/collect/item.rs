//! One item of a collection or a data set, as docs/dataset.md (format version 1) describes
//! it: the image, its YOLO label file and its sidecar (`items/<id>.json`). The daemon's
//! collector writes items; `vigil dataset` and the trainer read them. Writing is atomic per
//! file and the sidecar goes last, so a reader that takes an item only by its sidecar sees it
//! whole or not at all. Reading is hostile-input code: capped, every field checked.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::model::BBox;

/// The format version this code writes and reads.
pub const FORMAT: u32 = 1;
/// The largest sidecar read.
pub const MAX_SIDECAR: u64 = 1 << 20;
/// The largest image an item may have, and its largest side.
pub const MAX_IMAGE_BYTES: u64 = 256 << 20;
pub const MAX_SIDE: u32 = 8192;
/// The most detections a sidecar may list (a model reports at most 10 000 a frame).
pub const MAX_DETECTIONS: usize = 10_000;
/// The most a collection writes into one sidecar: the best-scored ones (a sidecar then
/// stays far below [`MAX_SIDECAR`]).
pub const MAX_SAVED_DETECTIONS: usize = 1000;

/// Why a frame was saved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Why {
    /// A detection's score fell in the uncertain band.
    Uncertain,
    /// The first frame of a new track.
    NewTrack,
    /// The slow background sample (empty frames too).
    Background,
    /// Asked for over MQTT (`collect/set` `NOW`).
    Requested,
    /// A photo given to `vigil dataset prelabel`.
    Photo,
}

/// Where an item stands in review.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReviewStatus {
    /// The label file holds the model's pre-labels as saved.
    Unreviewed,
    /// A person checked the label file: its boxes are the truth.
    Reviewed,
    /// A person found nothing to label (its label file is empty).
    Negative,
    /// Not to be used.
    Discarded,
}

impl ReviewStatus {
    /// Whether training and evaluation use the item: reviewed ones, negatives as background.
    pub fn is_ground_truth(self) -> bool {
        matches!(self, ReviewStatus::Reviewed | ReviewStatus::Negative)
    }

    /// As the format writes it.
    pub fn name(self) -> &'static str {
        match self {
            ReviewStatus::Unreviewed => "unreviewed",
            ReviewStatus::Reviewed => "reviewed",
            ReviewStatus::Negative => "negative",
            ReviewStatus::Discarded => "discarded",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Review {
    pub status: ReviewStatus,
    /// Changes made to the item's labels or review since it was saved.
    pub revision: u64,
    /// The last change, Unix milliseconds.
    pub at: Option<u64>,
}

/// The model that made an item's pre-labels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemModel {
    pub name: String,
    pub version: String,
    pub sha256: String,
}

/// One detection the model reported, box in image pixels (x1, y1, x2, y2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemDetection {
    pub label: String,
    pub score: f32,
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
}

/// `items/<id>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sidecar {
    pub v: u32,
    pub id: String,
    /// The image's file name, `<id>.jpg` (or `.jpeg`, `.png`).
    pub image: String,
    pub sha256: String,
    pub width: u32,
    pub height: u32,
    pub device: Option<String>,
    pub camera: Option<String>,
    pub captured_at: Option<u64>,
    pub saved_at: u64,
    pub why: Vec<Why>,
    pub model: ItemModel,
    pub prelabel_score: f32,
    pub detections: Vec<ItemDetection>,
    pub review: Review,
    /// Fields of other tools, kept as they are.
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

/// An item id: 1 to 128 letters, digits, '.', '-' or '_', not starting with '.' (a file
/// name stem that is never a path, a hidden file or a temporary one).
pub fn is_item_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && !id.starts_with('.')
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

/// The id a collection gives an item: `<camera>_<YYYYMMDD-HHMMSS-mmm>_<sha8>` (UTC).
pub fn item_id(camera: &str, unix_ms: u64, sha256: &str) -> String {
    format!("{camera}_{}_{}", utc_stamp(unix_ms), sha256.get(..8).unwrap_or(sha256))
}

/// `YYYYMMDD-HHMMSS-mmm` of a Unix time in milliseconds, UTC.
pub fn utc_stamp(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's days-to-civil, for the proleptic Gregorian calendar.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}{month:02}{day:02}-{:02}{:02}{:02}-{:03}", rem / 3600, rem / 60 % 60, rem % 60, unix_ms % 1000)
}

/// The file extensions an item's image may have, and what each is.
pub fn image_extension(name: &str) -> Option<&'static str> {
    let (_, ext) = name.rsplit_once('.')?;
    match ext.to_ascii_lowercase().as_str() {
        "jpg" | "jpeg" => Some("jpeg"),
        "png" => Some("png"),
        _ => None,
    }
}

/// The split an item with this image sha256 belongs to (docs/dataset.md, "Splits"): its
/// first 16 hex digits over 2^64, below `test` → test, below `test + val` → val, else train.
pub fn split_of(sha256: &str, val: f64, test: f64) -> &'static str {
    let x = sha256.get(..16).and_then(|h| u64::from_str_radix(h, 16).ok()).unwrap_or(0) as f64 / 2f64.powi(64);
    if x < test {
        "test"
    } else if x < test + val {
        "val"
    } else {
        "train"
    }
}

/// YOLO label lines for boxes in pixels of a `width`×`height` image: `class cx cy w h`,
/// normalised, six decimals, each box clipped to the image (one left with no area is left
/// out).
pub fn yolo_lines(boxes: &[(usize, BBox)], width: u32, height: u32) -> String {
    let (w, h) = (width.max(1) as f32, height.max(1) as f32);
    let mut out = String::new();
    for (class, b) in boxes {
        let (x1, x2) = (b.x1.clamp(0.0, w), b.x2.clamp(0.0, w));
        let (y1, y2) = (b.y1.clamp(0.0, h), b.y2.clamp(0.0, h));
        if !(x2 > x1 && y2 > y1) {
            continue;
        }
        out += &format!(
            "{class} {:.6} {:.6} {:.6} {:.6}\n",
            (x1 + x2) / 2.0 / w,
            (y1 + y2) / 2.0 / h,
            (x2 - x1) / w,
            (y2 - y1) / h
        );
    }
    out
}

impl Sidecar {
    /// Checks what a reader must be able to rely on; `id` is the id its file name gives.
    pub fn check(&self, id: &str) -> Result<(), String> {
        if self.v != FORMAT {
            return Err(format!("format version {} (this vigil reads {FORMAT})", self.v));
        }
        if self.id != id {
            return Err(format!("names the item {}, not {id}", crate::service::logging::shown(self.id.as_bytes())));
        }
        let stem = self.image.rsplit_once('.').map(|(s, _)| s);
        if stem != Some(id) || image_extension(&self.image).is_none() {
            return Err(format!(
                "image {} is not {id}.jpg, .jpeg or .png",
                crate::service::logging::shown(self.image.as_bytes())
            ));
        }
        if self.sha256.len() != 64 || !self.sha256.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err("sha256 is not 64 lower-case hex digits".into());
        }
        if !(1..=MAX_SIDE).contains(&self.width) || !(1..=MAX_SIDE).contains(&self.height) {
            return Err(format!("the image is {}x{} pixels (1 to {MAX_SIDE} a side)", self.width, self.height));
        }
        for (key, word) in [("device", &self.device), ("camera", &self.camera)] {
            if word.as_deref().is_some_and(|w| !crate::mqtt::is_topic_word(w)) {
                return Err(format!("{key} is not 1 to 128 letters, digits, '-' or '_'"));
            }
        }
        if !(self.prelabel_score.is_finite() && (0.0..=1.0).contains(&self.prelabel_score)) {
            return Err(format!("prelabel_score {} is not between 0 and 1", self.prelabel_score));
        }
        if self.detections.len() > MAX_DETECTIONS {
            return Err(format!("{} detections, more than {MAX_DETECTIONS}", self.detections.len()));
        }
        for (i, d) in self.detections.iter().enumerate() {
            if !(d.score.is_finite() && (0.0..=1.0).contains(&d.score) && d.bbox.iter().all(|v| v.is_finite())) {
                return Err(format!("detections[{i}] has a score or box that is not a finite number in range"));
            }
        }
        Ok(())
    }
}

/// Reads and checks `items/<id>.json`; the error says what is wrong (the caller names the file).
pub fn read_sidecar(path: &Path, id: &str) -> Result<Sidecar, String> {
    let bytes = crate::files::read_capped(path, MAX_SIDECAR).map_err(|e| e.to_string())?;
    let sidecar = parse_sidecar(&bytes, id)?;
    Ok(sidecar)
}

/// A sidecar's bytes, parsed and checked ([`Sidecar::check`]).
pub fn parse_sidecar(bytes: &[u8], id: &str) -> Result<Sidecar, String> {
    let sidecar: Sidecar = serde_json::from_slice(bytes).map_err(|e| format!("not a sidecar: {e}"))?;
    sidecar.check(id)?;
    Ok(sidecar)
}

/// Parses the YAML text, refusing aliases (`*name`): each one copies its anchor, so a few
/// hundred bytes of nested aliases can expand without bound.
pub fn parse_yaml(text: &str) -> anyhow::Result<yaml_rust2::Yaml> {
    let mut parser = yaml_rust2::parser::Parser::new_from_str(text);
    loop {
        match parser.next_token() {
            Ok((yaml_rust2::Event::StreamEnd, _)) => break,
            Ok((yaml_rust2::Event::Alias(_), mark)) => {
                anyhow::bail!("line {}: YAML aliases (*name) are not supported here", mark.line())
            }
            Ok(_) => {}
            Err(e) => anyhow::bail!("not valid YAML: {e}"),
        }
    }
    let mut docs = yaml_rust2::YamlLoader::load_from_str(text).map_err(|e| anyhow::anyhow!("not valid YAML: {e}"))?;
    match docs.len() {
        1 => Ok(docs.remove(0)),
        n => anyhow::bail!("expected one YAML document, found {n}"),
    }
}

/// The folders an item's files go in: a collection's `images/`, `labels/`, `items/`, or a
/// data set's `images/<split>/`, `labels/<split>/`, `items/`.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    pub images: PathBuf,
    pub labels: PathBuf,
    pub items: PathBuf,
}

impl Layout {
    /// A collection's folders under `root`.
    pub fn collection(root: &Path) -> Layout {
        Layout { images: root.join("images"), labels: root.join("labels"), items: root.join("items") }
    }

    /// A data set's folders under `root` for `split`.
    pub fn dataset(root: &Path, split: &str) -> Layout {
        Layout {
            images: root.join("images").join(split),
            labels: root.join("labels").join(split),
            items: root.join("items"),
        }
    }

    pub fn sidecar(&self, id: &str) -> PathBuf {
        self.items.join(format!("{id}.json"))
    }

    pub fn label(&self, id: &str) -> PathBuf {
        self.labels.join(format!("{id}.txt"))
    }

    pub fn image(&self, sidecar: &Sidecar) -> PathBuf {
        self.images.join(&sidecar.image)
    }

    /// Writes an item: image, label file, then the sidecar, each atomically (a temporary
    /// name, flushed, renamed, the folder flushed). The sidecar last: until it is there, the
    /// item does not exist. Returns the bytes written.
    pub fn write(&self, sidecar: &Sidecar, image: &[u8], labels: &str) -> std::io::Result<u64> {
        for dir in [&self.images, &self.labels, &self.items] {
            std::fs::create_dir_all(dir)?;
        }
        let doc = serde_json::to_vec_pretty(sidecar).map_err(std::io::Error::other)?;
        crate::files::replace_durably(&self.image(sidecar), image)?;
        crate::files::replace_durably(&self.label(&sidecar.id), labels.as_bytes())?;
        crate::files::replace_durably(&self.sidecar(&sidecar.id), &doc)?;
        Ok((image.len() + labels.len() + doc.len()) as u64)
    }

    /// Rewrites an item's sidecar (its review state changed), atomically.
    pub fn write_sidecar(&self, sidecar: &Sidecar) -> std::io::Result<()> {
        let doc = serde_json::to_vec_pretty(sidecar).map_err(std::io::Error::other)?;
        crate::files::replace_durably(&self.sidecar(&sidecar.id), &doc)
    }

    /// Removes an item, sidecar first (so it stops being an item before its files go).
    pub fn remove(&self, sidecar: &Sidecar) -> std::io::Result<()> {
        std::fs::remove_file(self.sidecar(&sidecar.id))?;
        let _ = std::fs::remove_file(self.image(sidecar));
        let _ = std::fs::remove_file(self.label(&sidecar.id));
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A sidecar as a collection writes one, for tests.
    pub(crate) fn sample(id: &str) -> Sidecar {
        Sidecar {
            v: FORMAT,
            id: id.into(),
            image: format!("{id}.jpg"),
            sha256: "ab".repeat(32),
            width: 640,
            height: 480,
            device: Some("garage".into()),
            camera: Some("door".into()),
            captured_at: Some(1_765_000_000_000),
            saved_at: 1_765_000_000_100,
            why: vec![Why::Uncertain, Why::NewTrack],
            model: ItemModel { name: "nanodet-m".into(), version: "1.0.0".into(), sha256: "cd".repeat(32) },
            prelabel_score: 0.5,
            detections: vec![ItemDetection { label: "car".into(), score: 0.7, bbox: [10.0, 20.0, 110.0, 220.0] }],
            review: Review { status: ReviewStatus::Unreviewed, revision: 0, at: None },
            other: Default::default(),
        }
    }

    #[test]
    fn ids_stamps_and_splits() {
        assert_eq!(utc_stamp(0), "19700101-000000-000");
        // 2026-12-07 03:58:53.123 UTC.
        assert_eq!(utc_stamp(1_796_615_933_123), "20261207-035853-123");
        assert_eq!(utc_stamp(951_782_400_000), "20000229-000000-000", "a leap day");
        let id = item_id("door", 1_796_615_933_123, &"0123456789abcdef".repeat(4));
        assert_eq!(id, "door_20261207-035853-123_01234567");
        assert!(is_item_id(&id));
        for bad in ["", ".hidden", "a/b", "..", "a b", "é", &"a".repeat(129)] {
            assert!(!is_item_id(bad), "{bad:?}");
        }
        assert_eq!(split_of(&format!("{:016x}{}", 0u64, "0".repeat(48)), 0.15, 0.1), "test");
        assert_eq!(split_of(&format!("{:016x}{}", u64::MAX / 5, "0".repeat(48)), 0.15, 0.1), "val");
        assert_eq!(split_of(&format!("{:016x}{}", u64::MAX / 2, "0".repeat(48)), 0.15, 0.1), "train");
    }

    #[test]
    fn label_lines_are_normalised_and_clipped() {
        let boxes = [
            (2, BBox { x1: 0.0, y1: 0.0, x2: 320.0, y2: 240.0 }),
            (0, BBox { x1: -50.0, y1: 400.0, x2: 50.0, y2: 600.0 }),
            (1, BBox { x1: 700.0, y1: 10.0, x2: 800.0, y2: 20.0 }),
        ];
        assert_eq!(
            yolo_lines(&boxes, 640, 480),
            "2 0.250000 0.250000 0.500000 0.500000\n0 0.039062 0.916667 0.078125 0.166667\n",
            "the third box lies outside the image"
        );
    }

    #[test]
    fn sidecars_round_trip_and_bad_ones_say_why() {
        let s = sample("door_1");
        let bytes = serde_json::to_vec(&s).unwrap();
        assert_eq!(parse_sidecar(&bytes, "door_1").unwrap(), s);
        let mut with_other = serde_json::to_value(&s).unwrap();
        with_other["reviewer"] = "ana".into();
        let kept = parse_sidecar(&serde_json::to_vec(&with_other).unwrap(), "door_1").unwrap();
        assert_eq!(kept.other["reviewer"], "ana", "other tools' fields are kept");
        let bad = |edit: &dyn Fn(&mut serde_json::Value)| {
            let mut doc = serde_json::to_value(&s).unwrap();
            edit(&mut doc);
            parse_sidecar(&serde_json::to_vec(&doc).unwrap(), "door_1").unwrap_err()
        };
        assert!(bad(&|d| d["v"] = 2.into()).contains("format version 2"));
        assert!(bad(&|d| d["id"] = "other".into()).contains("not door_1"));
        assert!(bad(&|d| d["image"] = "../etc/passwd".into()).contains("is not door_1.jpg"));
        assert!(bad(&|d| d["sha256"] = "xyz".into()).contains("sha256"));
        assert!(bad(&|d| d["width"] = 0.into()).contains("0x480"));
        assert!(bad(&|d| d["review"]["status"] = "maybe".into()).contains("unknown variant"));
        assert!(bad(&|d| d["detections"][0]["score"] = 1.5.into()).contains("detections[0]"));
        assert!(bad(&|d| d["camera"] = "a/b".into()).contains("camera"));
        assert!(parse_sidecar(b"{", "door_1").unwrap_err().contains("not a sidecar"));
    }

    #[test]
    fn an_item_is_written_whole_and_removed_sidecar_first() {
        let root = std::env::temp_dir().join(format!("vigil-item-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let layout = Layout::collection(&root);
        let s = sample("door_1");
        let bytes = layout.write(&s, b"\xff\xd8jpeg", "0 0.5 0.5 0.1 0.1\n").unwrap();
        assert!(bytes > 0);
        assert_eq!(read_sidecar(&layout.sidecar("door_1"), "door_1").unwrap(), s);
        assert_eq!(std::fs::read(layout.image(&s)).unwrap(), b"\xff\xd8jpeg");
        let leftovers: Vec<_> = std::fs::read_dir(&layout.items).unwrap().filter_map(Result::ok).collect();
        assert_eq!(leftovers.len(), 1, "no temporary file left");
        layout.remove(&s).unwrap();
        assert!(!layout.sidecar("door_1").exists() && !layout.image(&s).exists());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
