//! Image files: reading one as RGB, and labelled images in the ImageFolder layout (one
//! folder per class, named after it); detection data (boxes) in [`yolo`]'s layout.
//!
//! A dataset root either holds the class folders directly (and is split into train /
//! validation / test by a seeded stratified split), or holds `train/`, `val/` and `test/`
//! folders that each hold the same class folders.

pub mod coco;
pub mod folder;
pub mod yolo;

use std::path::{Path, PathBuf};

use crate::model::BBox;

/// Problems listed before the rest are only counted.
const MAX_LISTED: usize = 30;

/// Problems found while reading, refused together.
#[derive(Default)]
pub(crate) struct Problems(Vec<String>);

impl Problems {
    pub(crate) fn push(&mut self, p: String) {
        self.0.push(p);
    }

    pub(crate) fn finish(self, what: &str) -> anyhow::Result<()> {
        if self.0.is_empty() {
            return Ok(());
        }
        let mut text = format!("{what} has {} problem(s):", self.0.len());
        for p in self.0.iter().take(MAX_LISTED) {
            text += &format!("\n  {p}");
        }
        if self.0.len() > MAX_LISTED {
            text += &format!("\n  … and {} more", self.0.len() - MAX_LISTED);
        }
        anyhow::bail!(text)
    }
}

/// The image's size from its header, without decoding the pixels. What is not a regular
/// file of at most [`MAX_IMAGE_FILE`] bytes is refused before reading (the JPEG decoder
/// reads the whole file to find the size).
pub(crate) fn image_size(path: &Path) -> anyhow::Result<(u32, u32)> {
    let file = crate::files::open_capped(path, MAX_IMAGE_FILE)?.into_inner();
    let reader = image::ImageReader::new(std::io::BufReader::new(file)).with_guessed_format()?;
    match reader.format() {
        Some(image::ImageFormat::Png | image::ImageFormat::Jpeg) => Ok(reader.into_dimensions()?),
        _ => anyhow::bail!("not PNG or JPEG"),
    }
}

/// The splits training needs: a model learns on `train` and is chosen on `val`.
pub const TRAINING_SPLITS: &[&str] = &["train", "val"];
/// Every split a detection data set may have.
pub const ALL_SPLITS: &[&str] = &["train", "val", "test"];

/// One labelled box, in coordinates normalised to the image (0–1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DetectionBox {
    pub class: usize,
    pub bbox: BBox,
    /// COCO's `iscrowd`: a box around many objects, neither to be found nor to be missed.
    pub crowd: bool,
}

/// One image of a detection data set and its boxes (none: a background image).
#[derive(Debug, Clone, PartialEq)]
pub struct DetectionImage {
    pub path: PathBuf,
    pub width: u32,
    pub height: u32,
    pub boxes: Vec<DetectionBox>,
}

/// A detection data set: class names and the images of each split.
#[derive(Debug, Clone, PartialEq)]
pub struct DetectionData {
    pub names: Vec<String>,
    pub train: Vec<DetectionImage>,
    pub val: Vec<DetectionImage>,
    pub test: Option<Vec<DetectionImage>>,
    /// For a vigil data set (docs/dataset.md): what its review states let in and kept out.
    pub review: Option<ReviewCounts>,
}

/// The items of a vigil data set's splits read, by what review made of them: only reviewed
/// items (and negatives, as background) are ground truth.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReviewCounts {
    pub reviewed: usize,
    pub negative: usize,
    /// Skipped: their labels are a model's guesses.
    pub unreviewed: usize,
    pub discarded: usize,
    /// Images with no sidecar (an item cut short, or added by hand): skipped.
    pub without_sidecar: usize,
}

impl DetectionData {
    /// Reads detection data from `path`: a YOLO `data.yaml` (or a folder holding one), or a
    /// folder of COCO data (`annotations/instances_*.json`, or Roboflow's
    /// `train/_annotations.coco.json` layout). Only the splits in `read` ("train", "val",
    /// "test") are read, and those in `required` must be there; a split not read or not there
    /// is empty (`test`: `None`).
    pub fn load(path: &Path, read: &[&str], required: &[&str]) -> anyhow::Result<DetectionData> {
        let yaml_in_dir = ["data.yaml", "data.yml"].map(|f| path.join(f)).into_iter().find(|p| p.is_file());
        if path.is_file() {
            yolo::load(path, read, required)
        } else if let Some(yaml) = yaml_in_dir {
            yolo::load(&yaml, read, required)
        } else if coco::is_coco_dir(path) {
            coco::load(path, read, required)
        } else if path.is_dir() {
            anyhow::bail!(
                "{}: no data.yaml (YOLO) and no annotations/instances_*.json or train/_annotations.coco.json (COCO) \
                 in this folder",
                path.display()
            )
        } else {
            anyhow::bail!("{}: no such file or folder", path.display())
        }
    }

    /// The split a model is tested on: "test" when the data has test images, else "val".
    /// The trainer and `vigil eval` both take it, so their figures are of the same images.
    pub fn default_test_split(&self) -> &'static str {
        if self.test.as_ref().is_some_and(|t| !t.is_empty()) {
            "test"
        } else {
            "val"
        }
    }

    /// The images of `split` ("train", "val" or "test"), or why there are none.
    pub fn split(&self, split: &str) -> anyhow::Result<&[DetectionImage]> {
        match split {
            "train" => Ok(&self.train),
            "val" => Ok(&self.val),
            "test" => self.test.as_deref().ok_or_else(|| anyhow::anyhow!("the data has no test split")),
            other => anyhow::bail!("unknown split {other:?}: use train, val or test"),
        }
    }

    /// What a run is about to train on: per split its images, background images and boxes
    /// per class.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let splits = [("train", Some(&self.train)), ("val", Some(&self.val)), ("test", self.test.as_ref())];
        for (name, images) in splits {
            let Some(images) = images else { continue };
            let mut per_class = vec![0usize; self.names.len()];
            for b in images.iter().flat_map(|i| &i.boxes) {
                per_class[b.class] += 1;
            }
            let background = images.iter().filter(|i| i.boxes.is_empty()).count();
            let boxes: usize = per_class.iter().sum();
            out += &format!("{name}: {} images ({background} background), {boxes} boxes", images.len());
            let counts: Vec<String> = self.names.iter().zip(&per_class).map(|(n, c)| format!("{n} {c}")).collect();
            out += &format!(" ({})\n", counts.join(", "));
        }
        if let Some(r) = &self.review {
            out += &format!(
                "review: {} reviewed and {} negative used; skipped {} unreviewed (pre-labels are a model's guesses: \
                 review them, docs/dataset.md), {} discarded, {} without a sidecar\n",
                r.reviewed, r.negative, r.unreviewed, r.discarded, r.without_sidecar
            );
        }
        out
    }
}

/// Reads an image file (PNG or JPEG, told by its content) as RGB, naming the file in the error.
pub fn read_image(path: &Path) -> anyhow::Result<image::RgbImage> {
    read_image_file(path).map(|(_, image)| image)
}

/// As [`read_image`], with the file's bytes.
pub fn read_image_file(path: &Path) -> anyhow::Result<(Vec<u8>, image::RgbImage)> {
    use anyhow::Context;
    let bytes = crate::files::read_capped(path, MAX_IMAGE_FILE)
        .with_context(|| format!("cannot open image {}", path.display()))?;
    let image = decode_image(&bytes)
        .map_err(|e| anyhow::anyhow!("{} is not a readable PNG or JPEG image: {e}", path.display()))?;
    Ok((bytes, image))
}

/// The largest image file read, bytes.
const MAX_IMAGE_FILE: u64 = 256 << 20;

/// Decodes a PNG or JPEG image (the format read from the content) to RGB, within the image
/// crate's default limits (512 MiB for the decoded pixels).
pub fn decode_image(bytes: &[u8]) -> Result<image::RgbImage, image::ImageError> {
    let reader = image::ImageReader::new(std::io::Cursor::new(bytes)).with_guessed_format()?;
    match reader.format() {
        Some(image::ImageFormat::Png | image::ImageFormat::Jpeg) => Ok(reader.decode()?.to_rgb8()),
        _ => Err(image::ImageError::Unsupported(image::error::UnsupportedError::from_format_and_kind(
            image::error::ImageFormatHint::Unknown,
            image::error::UnsupportedErrorKind::Format(image::error::ImageFormatHint::Unknown),
        ))),
    }
}

/// File extensions read as images.
pub(crate) const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg"];

/// Why a dataset could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("cannot read dataset folder {path}: {error}")]
    Io { path: PathBuf, error: std::io::Error },
    #[error("dataset folder {0} has no class folders (expected one folder of images per class)")]
    NoClasses(PathBuf),
    #[error("class folder {0} holds no images (.png, .jpg, .jpeg)")]
    EmptyClass(PathBuf),
    #[error("the splits disagree on the classes: {0}")]
    ClassMismatch(String),
    #[error("{0}")]
    Split(String),
}

/// One labelled image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    pub path: PathBuf,
    pub class: usize,
}

/// The images of one folder tree, classes in sorted order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFolder {
    pub classes: Vec<String>,
    pub samples: Vec<Sample>,
}

impl ImageFolder {
    /// Reads `root/<class>/<image>`; every class folder must hold at least one image.
    pub fn scan(root: &Path) -> Result<ImageFolder, DatasetError> {
        let io = |e| DatasetError::Io { path: root.to_path_buf(), error: e };
        let mut classes: Vec<String> = std::fs::read_dir(root)
            .map_err(io)?
            .filter_map(Result::ok)
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        classes.sort();
        if classes.is_empty() {
            return Err(DatasetError::NoClasses(root.to_path_buf()));
        }
        let mut samples = Vec::new();
        for (class, name) in classes.iter().enumerate() {
            let dir = root.join(name);
            let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
                .map_err(|e| DatasetError::Io { path: dir.clone(), error: e })?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.is_file()
                        && p.extension()
                            .is_some_and(|x| IMAGE_EXTENSIONS.contains(&x.to_string_lossy().to_lowercase().as_str()))
                })
                .collect();
            if files.is_empty() {
                return Err(DatasetError::EmptyClass(dir));
            }
            files.sort();
            samples.extend(files.into_iter().map(|path| Sample { path, class }));
        }
        Ok(ImageFolder { classes, samples })
    }
}

/// Train, validation and test samples over one class list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Splits {
    pub classes: Vec<String>,
    pub train: Vec<Sample>,
    pub val: Vec<Sample>,
    pub test: Vec<Sample>,
}

impl Splits {
    /// Explicit `train/`, `val/`, `test/` folders when `root/train` exists, else a seeded
    /// stratified split of `root`'s class folders.
    pub fn load(root: &Path, val_fraction: f64, test_fraction: f64, seed: u64) -> Result<Splits, DatasetError> {
        if root.join("train").is_dir() {
            return Splits::explicit(root);
        }
        let all = ImageFolder::scan(root)?;
        Splits::stratified(all, val_fraction, test_fraction, seed)
    }

    fn explicit(root: &Path) -> Result<Splits, DatasetError> {
        let train = ImageFolder::scan(&root.join("train"))?;
        let mut parts = Vec::new();
        for name in ["val", "test"] {
            let dir = root.join(name);
            if !dir.is_dir() {
                return Err(DatasetError::Split(format!(
                    "{} exists but {} does not: give train/, val/ and test/ together",
                    root.join("train").display(),
                    dir.display()
                )));
            }
            let split = ImageFolder::scan(&dir)?;
            if split.classes != train.classes {
                let only =
                    |a: &[String], b: &[String]| a.iter().filter(|c| !b.contains(c)).cloned().collect::<Vec<_>>();
                return Err(DatasetError::ClassMismatch(format!(
                    "{name}/ lacks {:?} and has extra {:?} compared with train/",
                    only(&train.classes, &split.classes),
                    only(&split.classes, &train.classes)
                )));
            }
            parts.push(split.samples);
        }
        let test = parts.pop().unwrap();
        let val = parts.pop().unwrap();
        Ok(Splits { classes: train.classes, train: train.samples, val, test })
    }

    /// Per class: shuffle with `seed`, then take the test share, the validation share, and
    /// leave the rest for training (each share at least one image when the class has 3+).
    pub fn stratified(
        all: ImageFolder,
        val_fraction: f64,
        test_fraction: f64,
        seed: u64,
    ) -> Result<Splits, DatasetError> {
        if !(0.0..1.0).contains(&(val_fraction + test_fraction)) || val_fraction < 0.0 || test_fraction < 0.0 {
            return Err(DatasetError::Split(format!(
                "validation ({val_fraction}) and test ({test_fraction}) fractions must be ≥ 0 and sum below 1"
            )));
        }
        let mut rng = SplitMix64(seed);
        let (mut train, mut val, mut test) = (Vec::new(), Vec::new(), Vec::new());
        for class in 0..all.classes.len() {
            let mut members: Vec<Sample> = all.samples.iter().filter(|s| s.class == class).cloned().collect();
            shuffle(&mut members, &mut rng);
            let n = members.len();
            let share = |f: f64| if f > 0.0 && n >= 3 { ((n as f64 * f).round() as usize).max(1) } else { 0 };
            let (n_test, n_val) = (share(test_fraction), share(val_fraction));
            if n_test + n_val >= n {
                return Err(DatasetError::Split(format!(
                    "class \"{}\" has {n} image(s): too few to split into train, validation and test",
                    all.classes[class]
                )));
            }
            test.extend(members.drain(..n_test));
            val.extend(members.drain(..n_val));
            train.extend(members);
        }
        Ok(Splits { classes: all.classes, train, val, test })
    }
}

/// A small, seedable generator (SplitMix64): reproducible splits and shuffles without a
/// dependency.
#[derive(Debug, Clone)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, n).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Uniform in [0, 1), from the top 53 bits.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Fisher–Yates shuffle.
pub fn shuffle<T>(items: &mut [T], rng: &mut SplitMix64) {
    for i in (1..items.len()).rev() {
        items.swap(i, rng.below(i + 1));
    }
}

/// A fresh scratch folder for one unit test of the data readers, unique to this process.
#[cfg(test)]
pub(crate) fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vigil-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_is_tested_on_test_images_or_else_on_val() {
        let image = DetectionImage { path: "a.png".into(), width: 4, height: 4, boxes: vec![] };
        let mut data = DetectionData {
            names: vec!["a".into()],
            train: vec![image.clone()],
            val: vec![image.clone()],
            test: None,
            review: None,
        };
        assert_eq!(data.default_test_split(), "val");
        data.test = Some(vec![]);
        assert_eq!(data.default_test_split(), "val", "an empty test split is no test split");
        data.test = Some(vec![image]);
        assert_eq!(data.default_test_split(), "test");
        assert!(data.split("nope").is_err());
    }

    fn tree(root: &Path, layout: &[(&str, usize)]) {
        for (class, n) in layout {
            let dir = root.join(class);
            std::fs::create_dir_all(&dir).unwrap();
            for i in 0..*n {
                image::RgbImage::new(2, 2).save(dir.join(format!("{i}.png"))).unwrap();
            }
        }
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vigil-dataset-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn stratified_split_is_seeded_and_per_class() {
        let root = scratch("split");
        tree(&root, &[("cat", 10), ("dog", 20)]);
        let a = Splits::load(&root, 0.2, 0.2, 7).unwrap();
        let b = Splits::load(&root, 0.2, 0.2, 7).unwrap();
        let c = Splits::load(&root, 0.2, 0.2, 8).unwrap();
        assert_eq!(a, b);
        assert_ne!(a.test, c.test);
        assert_eq!(a.classes, ["cat", "dog"]);
        let count = |s: &[Sample], class| s.iter().filter(|x| x.class == class).count();
        assert_eq!((count(&a.test, 0), count(&a.val, 0), count(&a.train, 0)), (2, 2, 6));
        assert_eq!((count(&a.test, 1), count(&a.val, 1), count(&a.train, 1)), (4, 4, 12));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn an_empty_class_folder_is_named() {
        let root = scratch("empty");
        tree(&root, &[("cat", 3), ("dog", 0)]);
        let err = ImageFolder::scan(&root).unwrap_err().to_string();
        assert!(err.contains("dog") && err.contains("holds no images"), "{err}");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn explicit_splits_must_agree_on_classes() {
        let root = scratch("explicit");
        tree(&root.join("train"), &[("cat", 2), ("dog", 2)]);
        tree(&root.join("val"), &[("cat", 1), ("dog", 1)]);
        tree(&root.join("test"), &[("cat", 1), ("cow", 1)]);
        let err = Splits::load(&root, 0.1, 0.1, 0).unwrap_err().to_string();
        assert!(err.contains("test/ lacks [\"dog\"]") && err.contains("extra [\"cow\"]"), "{err}");
        std::fs::remove_dir_all(root.join("test/cow")).unwrap();
        tree(&root.join("test"), &[("dog", 1)]);
        let s = Splits::load(&root, 0.1, 0.1, 0).unwrap();
        assert_eq!((s.train.len(), s.val.len(), s.test.len()), (4, 2, 2));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
