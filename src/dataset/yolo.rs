//! Detection data in the Ultralytics (YOLO) layout: a `data.yaml` naming the splits and the
//! classes, images under `images/…` and, for each, a label file under `labels/…` with the
//! same stem, one box per line: `class cx cy w h`, normalised to 0–1 (a polygon
//! `class x1 y1 x2 y2 …` is read as its bounding box). An image without a label file, or with
//! an empty one, is a background image.
//!
//! ```yaml
//! path: .            # the dataset root, relative to this file (default: its folder)
//! train: images/train  # a folder of images, a .txt list of image paths, or a list of those
//! val: images/val
//! test: images/test    # optional
//! names: [person, car] # or a map: {0: person, 1: car}
//! ```
//!
//! Everything wrong is gathered and refused at once, each problem with its file (and line):
//! a class id out of range, a box outside [0, 1] or without area, a malformed line, a label
//! file whose image is missing, a missing split, an image that cannot be read.

use std::path::{Path, PathBuf};

use yaml_rust2::Yaml;

use crate::collect::item::parse_yaml;

use super::{image_size, DetectionBox, DetectionData, DetectionImage, Problems, ReviewCounts, IMAGE_EXTENSIONS};
use crate::model::BBox;

/// The largest data.yaml read, bytes.
const MAX_YAML: u64 = 1 << 20;
/// The largest label file read, bytes.
const MAX_LABEL_FILE: u64 = 16 << 20;
/// How far a coordinate may stray outside [0, 1] (rounding in label tools) before it is an error.
const TOLERANCE: f32 = 1e-4;

/// Reads a YOLO `data.yaml` and those of the splits in `read` ("train", "val", "test") that it
/// names (the others are not looked at); the splits in `required` must be there.
pub fn load(yaml: &Path, read: &[&str], required: &[&str]) -> anyhow::Result<DetectionData> {
    let text = crate::files::read_text_capped(yaml, MAX_YAML)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", yaml.display()))?;
    let doc = parse_yaml(&text).map_err(|e| anyhow::anyhow!("{}: {e}", yaml.display()))?;
    let here = yaml.parent().unwrap_or(Path::new("."));
    let root = match &doc["path"] {
        Yaml::BadValue | Yaml::Null => here.to_path_buf(),
        Yaml::String(p) => here.join(p),
        other => anyhow::bail!("{}: `path` must be a folder name, found {other:?}", yaml.display()),
    };
    let names = class_names(&doc).map_err(|e| anyhow::anyhow!("{}: {e}", yaml.display()))?;
    let mut problems = Problems::default();
    let mut split = |key: &str, required: bool| -> Option<Vec<DetectionImage>> {
        if !read.contains(&key) {
            return None;
        }
        let sources = match &doc[key] {
            Yaml::String(s) => vec![s.clone()],
            Yaml::Array(a) if a.iter().all(|v| matches!(v, Yaml::String(_))) => {
                a.iter().filter_map(|v| v.as_str().map(String::from)).collect()
            }
            Yaml::BadValue | Yaml::Null if !required => return None,
            Yaml::BadValue | Yaml::Null => {
                problems.push(format!("{}: no `{key}` split", yaml.display()));
                return None;
            }
            other => {
                problems
                    .push(format!("{}: `{key}` must be a path or a list of paths, found {other:?}", yaml.display()));
                return None;
            }
        };
        let mut images = Vec::new();
        for source in sources {
            images.extend(read_split(&root.join(&source), key, names.len(), &mut problems));
        }
        Some(images)
    };
    let mut train = split("train", required.contains(&"train"));
    let mut val = split("val", required.contains(&"val"));
    let mut test = split("test", required.contains(&"test"));
    let review = match &doc["vigil_dataset"] {
        Yaml::BadValue | Yaml::Null => None,
        Yaml::Integer(v) if *v == i64::from(crate::collect::item::FORMAT) => {
            let (mut counts, mut seen) = (ReviewCounts::default(), std::collections::HashSet::new());
            for images in [&mut train, &mut val, &mut test].into_iter().flatten() {
                keep_ground_truth(&root, images, &mut seen, &mut counts, &mut problems);
            }
            Some(counts)
        }
        other => anyhow::bail!(
            "{}: vigil_dataset {other:?} is not format version {} (docs/dataset.md)",
            yaml.display(),
            crate::collect::item::FORMAT
        ),
    };
    problems.finish(&format!("the detection data of {}", yaml.display()))?;
    Ok(DetectionData { names, train: train.unwrap_or_default(), val: val.unwrap_or_default(), test, review })
}

/// The class names a data.yaml text declares (what [`load`] reads first; the fuzz target's
/// entry).
pub fn class_names_of(text: &str) -> anyhow::Result<Vec<String>> {
    class_names(&parse_yaml(text)?)
}

/// `names` as a list, or as a map from 0, 1, … to names; `nc`, if given, must agree.
fn class_names(doc: &Yaml) -> anyhow::Result<Vec<String>> {
    let name = |v: &Yaml| match v {
        Yaml::String(s) if !s.trim().is_empty() => Ok(s.clone()),
        Yaml::Integer(i) => Ok(i.to_string()),
        other => anyhow::bail!("a class name must be text, found {other:?}"),
    };
    let names: Vec<String> = match &doc["names"] {
        Yaml::Array(a) => a.iter().map(name).collect::<anyhow::Result<_>>()?,
        Yaml::Hash(h) => {
            let mut pairs = h
                .iter()
                .map(|(k, v)| match k {
                    Yaml::Integer(i) => Ok((*i, name(v)?)),
                    other => anyhow::bail!("`names` keys must be class ids 0, 1, …, found {other:?}"),
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            pairs.sort_by_key(|(i, _)| *i);
            if pairs.iter().enumerate().any(|(k, (i, _))| *i != k as i64) {
                anyhow::bail!("`names` must map every class id from 0 to {} to a name", pairs.len().saturating_sub(1));
            }
            pairs.into_iter().map(|(_, n)| n).collect()
        }
        Yaml::BadValue => anyhow::bail!("no `names`: list the class names, in class id order"),
        other => anyhow::bail!("`names` must be a list or a map of class names, found {other:?}"),
    };
    if names.is_empty() {
        anyhow::bail!("`names` is empty");
    }
    if let Some(twice) = crate::model::manifest::first_repeated(&names) {
        anyhow::bail!("`names` lists {twice:?} twice: each class needs a name of its own");
    }
    match &doc["nc"] {
        Yaml::BadValue | Yaml::Null => {}
        Yaml::Integer(n) if *n == names.len() as i64 => {}
        other => anyhow::bail!("`nc` is {other:?} but `names` has {} classes", names.len()),
    }
    Ok(names)
}

/// The images of one split source (a folder, searched recursively, or a .txt list) and
/// their labels.
fn read_split(source: &Path, key: &str, classes: usize, problems: &mut Problems) -> Vec<DetectionImage> {
    let mut paths = Vec::new();
    if source.is_dir() {
        collect_images(source, &mut paths, problems);
        paths.sort();
        orphan_labels(source, &paths, problems);
    } else if source.extension().is_some_and(|e| e == "txt") && source.is_file() {
        match crate::files::read_text_capped(source, MAX_LABEL_FILE) {
            Ok(text) => {
                let base = source.parent().unwrap_or(Path::new("."));
                paths.extend(text.lines().map(str::trim).filter(|l| !l.is_empty()).map(|l| base.join(l)));
            }
            Err(e) => problems.push(format!("cannot read {}: {e}", source.display())),
        }
    } else {
        problems.push(format!("the `{key}` split {} is neither a folder nor a .txt list of images", source.display()));
        return Vec::new();
    }
    if paths.is_empty() {
        problems.push(format!("the `{key}` split {} holds no images (.png, .jpg, .jpeg)", source.display()));
    }
    let mut images = Vec::with_capacity(paths.len());
    for path in paths {
        let (width, height) = match image_size(&path) {
            Ok(size) => size,
            Err(e) => {
                problems.push(format!("{}: not a readable PNG or JPEG image ({e})", path.display()));
                continue;
            }
        };
        let boxes = match label_path(&path) {
            Some(label) if label.is_file() => read_labels(&label, classes, problems),
            _ => Vec::new(),
        };
        images.push(DetectionImage { path, width, height, boxes });
    }
    images
}

/// A vigil data set's images as training and evaluation take them (docs/dataset.md): only
/// items whose sidecar says a person reviewed them; a negative one as background, whatever
/// its label file holds. `seen`: the items of the splits read before.
fn keep_ground_truth(
    root: &Path,
    images: &mut Vec<DetectionImage>,
    seen: &mut std::collections::HashSet<String>,
    counts: &mut ReviewCounts,
    problems: &mut Problems,
) {
    use crate::collect::ReviewStatus;
    images.retain_mut(|image| {
        let Some(id) = image.path.file_stem().and_then(|s| s.to_str()) else {
            counts.without_sidecar += 1;
            return false;
        };
        // One item, one image: the same id twice (in two splits, say) is a problem, not twice the data.
        if !seen.insert(id.to_string()) {
            problems.push(format!("{}: a second image of item {id}", image.path.display()));
            return false;
        }
        let path = root.join("items").join(format!("{id}.json"));
        let sidecar = match crate::collect::item::read_sidecar(&path, id) {
            Ok(s) => s,
            Err(_) if !path.exists() => {
                counts.without_sidecar += 1;
                return false;
            }
            Err(e) => {
                problems.push(format!("{}: {e}", path.display()));
                return false;
            }
        };
        match sidecar.review.status {
            ReviewStatus::Reviewed => counts.reviewed += 1,
            ReviewStatus::Negative => {
                counts.negative += 1;
                image.boxes.clear();
            }
            ReviewStatus::Unreviewed => counts.unreviewed += 1,
            ReviewStatus::Discarded => counts.discarded += 1,
        }
        sidecar.review.status.is_ground_truth()
    });
}

/// The images under `dir` (each folder once: [`crate::files::files_under`]).
fn collect_images(dir: &Path, out: &mut Vec<PathBuf>, problems: &mut Problems) {
    let (files, failed) = crate::files::files_under(dir);
    for (folder, e) in failed {
        problems.push(format!("cannot read {}: {e}", folder.display()));
    }
    out.extend(files.into_iter().filter(|p| is_image(p)));
}

fn is_image(path: &Path) -> bool {
    path.extension().is_some_and(|x| IMAGE_EXTENSIONS.contains(&x.to_string_lossy().to_lowercase().as_str()))
}

/// Ultralytics' rule: the last `images` folder of the path becomes `labels`, and the
/// extension `.txt`.
pub fn label_path(image: &Path) -> Option<PathBuf> {
    let parts: Vec<_> = image.components().collect();
    let i = parts.iter().rposition(|c| c.as_os_str() == "images")?;
    let mut label: PathBuf = parts[..i].iter().collect();
    label.push("labels");
    label.extend(&parts[i + 1..]);
    Some(label.with_extension("txt"))
}

/// Label files under the split's `labels` folder whose image is missing.
fn orphan_labels(images_dir: &Path, images: &[PathBuf], problems: &mut Problems) {
    let Some(labels_dir) = label_path(&images_dir.join("x")).and_then(|p| p.parent().map(Path::to_path_buf)) else {
        return;
    };
    let wanted: std::collections::HashSet<PathBuf> = images.iter().filter_map(|p| label_path(p)).collect();
    let mut labels = Vec::new();
    collect_files(&labels_dir, "txt", &mut labels);
    labels.sort();
    for label in labels {
        if !wanted.contains(&label) {
            problems.push(format!("{}: a label file without an image in {}", label.display(), images_dir.display()));
        }
    }
}

fn collect_files(dir: &Path, extension: &str, out: &mut Vec<PathBuf>) {
    let (files, _) = crate::files::files_under(dir);
    out.extend(files.into_iter().filter(|p| p.extension().is_some_and(|e| e == extension)));
}

/// The boxes of one label file; each bad line is a problem, named with its line number.
fn read_labels(path: &Path, classes: usize, problems: &mut Problems) -> Vec<DetectionBox> {
    let text = match crate::files::read_text_capped(path, MAX_LABEL_FILE) {
        Ok(t) => t,
        Err(e) => {
            problems.push(format!("cannot read {}: {e}", path.display()));
            return Vec::new();
        }
    };
    let (boxes, bad) = parse_labels(&text, classes);
    for (line, e) in bad {
        problems.push(format!("{}:{line}: {e}", path.display()));
    }
    boxes
}

/// A label file's text: its boxes, and (line number, problem) for each bad line.
pub fn parse_labels(text: &str, classes: usize) -> (Vec<DetectionBox>, Vec<(usize, String)>) {
    let (mut boxes, mut bad) = (Vec::new(), Vec::new());
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match parse_line(line, classes) {
            Ok(b) => boxes.push(b),
            Err(e) => bad.push((n + 1, e)),
        }
    }
    (boxes, bad)
}

/// `class cx cy w h`, or `class x1 y1 x2 y2 x3 y3 …` (a polygon, read as its bounding box).
fn parse_line(line: &str, classes: usize) -> Result<DetectionBox, String> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let class: usize = fields[0].parse().map_err(|_| format!("the class id {:?} is not a whole number", fields[0]))?;
    if classes == 0 {
        return Err(format!("class id {class}, but data.yaml names no class"));
    }
    if class >= classes {
        return Err(format!(
            "class id {class} is out of range: data.yaml names {classes} classes (0 to {})",
            classes - 1
        ));
    }
    let values = fields[1..]
        .iter()
        .map(|v| v.parse::<f32>().ok().filter(|v| v.is_finite()))
        .collect::<Option<Vec<f32>>>()
        .ok_or_else(|| format!("expected numbers after the class id, found {:?}", &fields[1..].join(" ")))?;
    let outside = |v: f32| !(-TOLERANCE..=1.0 + TOLERANCE).contains(&v);
    let bbox = match values.len() {
        4 => {
            let (cx, cy, w, h) = (values[0], values[1], values[2], values[3]);
            if [cx, cy, w, h].into_iter().any(outside) {
                return Err(format!("the box {cx} {cy} {w} {h} is not normalised to [0, 1]"));
            }
            let b = BBox { x1: cx - w / 2.0, y1: cy - h / 2.0, x2: cx + w / 2.0, y2: cy + h / 2.0 };
            if [b.x1, b.y1, b.x2, b.y2].into_iter().any(outside) {
                return Err(format!("the box {cx} {cy} {w} {h} reaches outside the image"));
            }
            b
        }
        n if n >= 6 && n % 2 == 0 => {
            if values.iter().copied().any(outside) {
                return Err("the polygon is not normalised to [0, 1]".into());
            }
            let xs = values.iter().step_by(2);
            let ys = values.iter().skip(1).step_by(2);
            BBox {
                x1: xs.clone().copied().fold(f32::INFINITY, f32::min),
                x2: xs.copied().fold(f32::NEG_INFINITY, f32::max),
                y1: ys.clone().copied().fold(f32::INFINITY, f32::min),
                y2: ys.copied().fold(f32::NEG_INFINITY, f32::max),
            }
        }
        n => return Err(format!("expected `class cx cy w h` (or a polygon), found {} values", n + 1)),
    };
    let bbox = BBox { x1: bbox.x1.max(0.0), y1: bbox.y1.max(0.0), x2: bbox.x2.min(1.0), y2: bbox.y2.min(1.0) };
    if bbox.area() <= 0.0 {
        return Err("the box has no area".into());
    }
    Ok(DetectionBox { class, bbox, crowd: false })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        crate::dataset::scratch(&format!("yolo-{name}"))
    }

    /// Writes `root/images/<split>/<stem>.png` (a real 40×30 PNG) and, with `labels`, its
    /// label file.
    fn image(root: &Path, split: &str, stem: &str, labels: Option<&str>) {
        let images = root.join("images").join(split);
        std::fs::create_dir_all(&images).unwrap();
        image::RgbImage::from_pixel(40, 30, image::Rgb([90, 120, 200]))
            .save(images.join(format!("{stem}.png")))
            .unwrap();
        if let Some(text) = labels {
            let dir = root.join("labels").join(split);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(format!("{stem}.txt")), text).unwrap();
        }
    }

    #[test]
    fn only_the_splits_asked_for_are_read() {
        // The data names a train split that is not on disk (only val was copied over).
        let root = scratch("val-only");
        image(&root, "val", "c", Some("0 0.25 0.75 0.5 0.5\n"));
        std::fs::write(root.join("data.yaml"), "train: images/train\nval: images/val\nnames: [person]\n").unwrap();
        let yaml = root.join("data.yaml");
        let data = load(&yaml, &["val"], &["val"]).unwrap();
        assert_eq!((data.train.len(), data.val.len()), (0, 1));
        // Training reads train too, and refuses the missing folder.
        let err =
            format!("{:#}", load(&yaml, crate::dataset::ALL_SPLITS, crate::dataset::TRAINING_SPLITS).unwrap_err());
        assert!(err.contains("images/train"), "{err}");
    }

    #[test]
    fn reads_a_data_yaml_with_boxes_polygons_and_background_images() {
        let root = scratch("good");
        image(&root, "train", "a", Some("0 0.5 0.5 0.2 0.4\n1 0.1 0.1 0.3 0.1 0.3 0.4 0.1 0.4\n"));
        image(&root, "train", "b", None);
        image(&root, "val", "c", Some("1 0.25 0.75 0.5 0.5\n\n"));
        image(&root, "val", "d", Some(""));
        std::fs::write(
            root.join("data.yaml"),
            "# a comment\npath: .\ntrain: images/train\nval: [images/val]\nnames:\n  0: person\n  1: car\nnc: 2\n",
        )
        .unwrap();
        let data = load(&root.join("data.yaml"), crate::dataset::ALL_SPLITS, crate::dataset::TRAINING_SPLITS).unwrap();
        assert_eq!(data.names, ["person", "car"]);
        assert_eq!((data.train.len(), data.val.len(), &data.test), (2, 2, &None));
        let a = &data.train[0];
        assert_eq!((a.width, a.height), (40, 30));
        assert_eq!(
            a.boxes[0],
            DetectionBox { class: 0, bbox: BBox { x1: 0.4, y1: 0.3, x2: 0.6, y2: 0.7 }, crowd: false }
        );
        // The polygon's bounding box.
        assert_eq!(a.boxes[1].bbox, BBox { x1: 0.1, y1: 0.1, x2: 0.3, y2: 0.4 });
        assert!(data.train[1].boxes.is_empty() && data.val[1].boxes.is_empty(), "background images");
        assert_eq!(
            data.summary(),
            "train: 2 images (1 background), 2 boxes (person 1, car 1)\nval: 2 images (1 background), 1 boxes (person 0, car 1)\n"
        );
    }

    #[test]
    fn every_problem_is_named_with_its_file_and_line() {
        let root = scratch("bad");
        image(&root, "train", "a", Some("0 0.5 0.5 0.2 0.2\n5 0.5 0.5 0.2 0.2\n0 1.5 0.5 0.2 0.2\n"));
        image(&root, "train", "b", Some("0 0.5 0.5 0 0.2\n0 0.5 0.5 0.2\nx 0.5 0.5 0.2 0.2\n0 0.9 0.5 0.4 0.2\n"));
        image(&root, "train", "c", Some("0 0.5 nan 0.2 0.2\n"));
        std::fs::write(root.join("labels/train/gone.txt"), "0 0.5 0.5 0.2 0.2\n").unwrap();
        std::fs::write(root.join("images/train/broken.png"), "not a png").unwrap();
        std::fs::write(root.join("data.yaml"), "train: images/train\nval: images/missing\nnames: [a, b]\n").unwrap();
        let err = format!(
            "{:#}",
            load(&root.join("data.yaml"), crate::dataset::ALL_SPLITS, crate::dataset::TRAINING_SPLITS).unwrap_err()
        );
        let a = root.join("labels/train/a.txt").display().to_string();
        let b = root.join("labels/train/b.txt").display().to_string();
        for want in [
            format!("{a}:2: class id 5 is out of range: data.yaml names 2 classes (0 to 1)"),
            format!("{a}:3: the box 1.5 0.5 0.2 0.2 is not normalised to [0, 1]"),
            format!("{b}:1: the box has no area"),
            format!("{b}:2: expected `class cx cy w h` (or a polygon), found 4 values"),
            format!("{b}:3: the class id \"x\" is not a whole number"),
            format!("{b}:4: the box 0.9 0.5 0.4 0.2 reaches outside the image"),
            format!("{}:1: expected numbers after the class id", root.join("labels/train/c.txt").display()),
            format!("{}: a label file without an image", root.join("labels/train/gone.txt").display()),
            format!("{}: not a readable PNG or JPEG image", root.join("images/train/broken.png").display()),
            format!("the `val` split {} is neither a folder nor a .txt list", root.join("images/missing").display()),
            "has 10 problem(s)".to_string(),
        ] {
            assert!(err.contains(&want), "missing {want:?} in:\n{err}");
        }
    }

    #[test]
    fn bad_yaml_is_refused_clearly() {
        let root = scratch("yaml");
        image(&root, "train", "a", None);
        let cases = [
            ("train: images/train\nval: images/train\n", "no `names`"),
            ("train: images/train\nnames: [a]\n", "no `val` split"),
            ("train: images/train\nval: images/train\nnames: {0: a, 2: b}\n", "must map every class id from 0 to 1"),
            ("train: images/train\nval: images/train\nnames: [a, b]\nnc: 3\n", "`nc` is Integer(3) but `names` has 2"),
            ("train: images/train\nval: images/train\nnames: []\n", "`names` is empty"),
            ("train: images/train\nval: images/train\nnames: [car, person, car]\n", "`names` lists \"car\" twice"),
            ("train: &t images/train\nval: *t\nnames: [a]\n", "line 2: YAML aliases (*name) are not supported"),
            ("train: [images/train\n", "not valid YAML"),
        ];
        for (text, want) in cases {
            std::fs::write(root.join("data.yaml"), text).unwrap();
            let err = format!(
                "{:#}",
                load(&root.join("data.yaml"), crate::dataset::ALL_SPLITS, crate::dataset::TRAINING_SPLITS).unwrap_err()
            );
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }

    /// A link back into the split (`loop -> .`) adds no image, and two of them end; a sparse
    /// 3 GB `.jpg`, a FIFO and a link to `/dev/zero` are refused from what they are, without
    /// reading them.
    #[test]
    fn links_loops_and_endless_files_in_a_split_are_not_followed_or_read() {
        let root = scratch("links");
        image(&root, "test", "a", Some("0 0.5 0.5 0.2 0.2\n"));
        std::os::unix::fs::symlink(".", root.join("images/test/loop")).unwrap();
        std::os::unix::fs::symlink("..", root.join("images/test/up")).unwrap();
        std::fs::write(root.join("data.yaml"), "train: images/test\nval: images/test\ntest: images/test\nnames: [a]\n")
            .unwrap();
        let data = load(&root.join("data.yaml"), &["test"], &["test"]).unwrap();
        assert_eq!(data.test.as_ref().map(Vec::len), Some(1), "{:?}", data.test);
        let images = root.join("images/test");
        std::fs::File::create(images.join("sparse.jpg")).unwrap().set_len(3 << 30).unwrap();
        std::os::unix::fs::symlink("/dev/zero", images.join("zero.jpg")).unwrap();
        let fifo = std::ffi::CString::new(images.join("fifo.png").as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a NUL-terminated path and a mode.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        let started = std::time::Instant::now();
        let err = format!("{:#}", load(&root.join("data.yaml"), &["test"], &["test"]).unwrap_err());
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "{:?}", started.elapsed());
        for want in [
            "sparse.jpg: not a readable PNG or JPEG image (3221225472 bytes, larger than the limit of",
            "zero.jpg: not a readable PNG or JPEG image (a device, not a regular file)",
            "fifo.png: not a readable PNG or JPEG image (a FIFO (named pipe), not a regular file)",
        ] {
            assert!(err.contains(want), "missing {want:?} in:\n{err}");
        }
    }

    #[test]
    fn label_paths_follow_ultralytics() {
        assert_eq!(label_path(Path::new("/d/images/train/x.jpg")), Some(PathBuf::from("/d/labels/train/x.txt")));
        assert_eq!(
            label_path(Path::new("/images/d/images/val/a/b.png")),
            Some(PathBuf::from("/images/d/labels/val/a/b.txt"))
        );
        assert_eq!(label_path(Path::new("/d/train/x.jpg")), None);
    }
}
