//! Detection data in COCO's JSON form: per split an `instances_*.json` (images, categories,
//! annotations with `bbox` = [x, y, width, height] in pixels and `iscrowd`) and a folder of
//! the images it names. Two layouts are read:
//!
//! - COCO's own: `DIR/annotations/instances_<split>.json` with the images in `DIR/<split>/`
//!   or `DIR/images/<split>/` (e.g. `instances_val2017.json` ↔ `val2017/`); a split whose
//!   name starts with `train`, `val` or `test` is that split.
//! - Roboflow's export: `DIR/train/_annotations.coco.json` with its images beside it, and
//!   `valid/` (or `val/`) and `test/` likewise.
//!
//! Classes are the categories in id order (every split must list the same). A crowd box
//! (`iscrowd` 1) is kept as such: neither a target to find nor a mistake to make, as COCO's
//! evaluation treats it. Everything wrong is refused at once, each problem naming the file
//! and the annotation or image: an unknown image or category id, a box without area or
//! outside its image, an image file that is missing or unreadable or not the size the JSON
//! says, a missing split.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{DetectionBox, DetectionData, DetectionImage, Problems};
use crate::model::BBox;

/// The largest annotation file read, bytes (COCO 2017's training annotations are 448 MiB).
const MAX_JSON: u64 = 1 << 30;
/// How far (pixels) a box may reach outside its image before it is an error; within it the
/// box is clipped (COCO's own boxes overshoot by rounding).
const TOLERANCE_PX: f64 = 1.0;

#[derive(Deserialize)]
struct File {
    images: Vec<Image>,
    categories: Vec<Category>,
    #[serde(default)]
    annotations: Vec<Annotation>,
}

#[derive(Deserialize)]
struct Image {
    id: i64,
    file_name: String,
    width: u32,
    height: u32,
}

#[derive(Deserialize, Clone, PartialEq)]
struct Category {
    id: i64,
    name: String,
}

#[derive(Deserialize)]
struct Annotation {
    #[serde(default)]
    id: Option<i64>,
    image_id: i64,
    category_id: i64,
    bbox: Vec<f64>,
    #[serde(default)]
    iscrowd: u8,
}

/// Whether `dir` holds COCO data in one of the two layouts.
pub fn is_coco_dir(dir: &Path) -> bool {
    !find_splits(dir).is_empty()
}

/// (split, annotation file, image folder) of each split found in `dir`.
fn find_splits(dir: &Path) -> Vec<(&'static str, PathBuf, PathBuf)> {
    let mut found = Vec::new();
    let roles = [("train", "train"), ("val", "val"), ("valid", "val"), ("test", "test")];
    if let Ok(entries) = std::fs::read_dir(dir.join("annotations")) {
        let mut files: Vec<PathBuf> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
        files.sort();
        for json in files {
            let Some(stem) = json.file_stem().and_then(|s| s.to_str()).and_then(|s| s.strip_prefix("instances_"))
            else {
                continue;
            };
            let Some(role) = roles.iter().find(|(prefix, _)| stem.starts_with(prefix)).map(|(_, r)| *r) else {
                continue;
            };
            let images = [dir.join(stem), dir.join("images").join(stem)]
                .into_iter()
                .find(|p| p.is_dir())
                .unwrap_or_else(|| dir.join(stem));
            found.push((role, json, images));
        }
    }
    for (folder, role) in roles {
        let json = dir.join(folder).join("_annotations.coco.json");
        if json.is_file() {
            found.push((role, json, dir.join(folder)));
        }
    }
    found
}

/// Reads those splits of the COCO data in `dir` that are in `read` ("train", "val", "test";
/// the others' files are not opened); the splits in `required` must be there.
pub fn load(dir: &Path, read: &[&str], required: &[&str]) -> anyhow::Result<DetectionData> {
    let mut problems = Problems::default();
    let mut categories: Option<(PathBuf, Vec<Category>)> = None;
    let mut splits: HashMap<&str, Vec<DetectionImage>> = HashMap::new();
    for (role, json, images) in find_splits(dir) {
        if !read.contains(&role) {
            continue;
        }
        if splits.contains_key(role) {
            problems.push(format!("{}: a second `{role}` split; keep one", json.display()));
            continue;
        }
        let Some((cats, read)) = read_split(&json, &images, &mut problems) else { continue };
        match &categories {
            None => categories = Some((json.clone(), cats)),
            Some((first, known)) if *known != cats => problems.push(format!(
                "{}: its categories differ from those of {}; every split must list the same",
                json.display(),
                first.display()
            )),
            Some(_) => {}
        }
        splits.insert(role, read);
    }
    for role in required {
        if !splits.contains_key(role) {
            problems.push(format!(
                "{}: no `{role}` split (annotations/instances_{role}*.json, or {role}/_annotations.coco.json)",
                dir.display()
            ));
        }
    }
    problems.finish(&format!("the COCO data in {}", dir.display()))?;
    let names = categories.map(|(_, c)| c.into_iter().map(|c| c.name).collect()).unwrap_or_default();
    Ok(DetectionData {
        names,
        train: splits.remove("train").unwrap_or_default(),
        val: splits.remove("val").unwrap_or_default(),
        test: splits.remove("test"),
        review: None,
    })
}

/// One annotation file and its images: the categories (in id order) and the images with
/// their boxes, normalised to 0–1; `None` when the file cannot be read at all.
fn read_split(json: &Path, image_dir: &Path, problems: &mut Problems) -> Option<(Vec<Category>, Vec<DetectionImage>)> {
    let bytes = match crate::files::read_capped(json, MAX_JSON) {
        Ok(b) if b.len() as u64 <= MAX_JSON => b,
        Ok(_) => {
            problems.push(format!("{}: larger than {} MiB", json.display(), MAX_JSON >> 20));
            return None;
        }
        Err(e) => {
            problems.push(format!("cannot read {}: {e}", json.display()));
            return None;
        }
    };
    parse_instances(&bytes, json, image_dir, true, problems)
}

/// The class names and images of an annotation file's bytes (`json` names it in problems);
/// with `check_images`, each image file's header is read and its size compared.
pub fn read_instances(
    bytes: &[u8],
    json: &Path,
    image_dir: &Path,
    check_images: bool,
) -> anyhow::Result<(Vec<String>, Vec<DetectionImage>)> {
    let mut problems = Problems::default();
    let read = parse_instances(bytes, json, image_dir, check_images, &mut problems);
    problems.finish(&json.display().to_string())?;
    let (categories, images) = read.expect("no problems, so the file was read");
    Ok((categories.into_iter().map(|c| c.name).collect(), images))
}

fn parse_instances(
    bytes: &[u8],
    json: &Path,
    image_dir: &Path,
    check_images: bool,
    problems: &mut Problems,
) -> Option<(Vec<Category>, Vec<DetectionImage>)> {
    let file: File = match serde_json::from_slice(bytes) {
        Ok(f) => f,
        Err(e) => {
            problems.push(format!("{}: not COCO instances JSON: {e}", json.display()));
            return None;
        }
    };
    let mut categories = file.categories;
    categories.sort_by_key(|c| c.id);
    if categories.is_empty() || categories.windows(2).any(|w| w[0].id == w[1].id) {
        problems.push(format!("{}: the categories must be listed, each id once", json.display()));
        return None;
    }
    let names: Vec<String> = categories.iter().map(|c| c.name.clone()).collect();
    if let Some(twice) = crate::model::manifest::first_repeated(&names) {
        let twice = crate::service::logging::shown(twice.as_bytes());
        problems
            .push(format!("{}: two categories are named {twice}: each class needs a name of its own", json.display()));
        return None;
    }
    let class_of: HashMap<i64, usize> = categories.iter().enumerate().map(|(k, c)| (c.id, k)).collect();
    let mut images: Vec<DetectionImage> = Vec::with_capacity(file.images.len());
    let mut index_of: HashMap<i64, usize> = HashMap::new();
    for image in &file.images {
        if index_of.contains_key(&image.id) {
            problems.push(format!("{}: image id {} is listed twice", json.display(), image.id));
            continue;
        }
        let path = image_dir.join(&image.file_name);
        if image.width == 0 || image.height == 0 {
            problems.push(format!(
                "{}: image id {} is {}×{} pixels",
                json.display(),
                image.id,
                image.width,
                image.height
            ));
        } else if check_images {
            match super::image_size(&path) {
                Ok((w, h)) if (w, h) == (image.width, image.height) => {}
                Ok((w, h)) => problems.push(format!(
                    "{}: {w}×{h} pixels, but {} says {}×{}",
                    path.display(),
                    json.display(),
                    image.width,
                    image.height
                )),
                Err(e) => problems.push(format!("{}: not a readable PNG or JPEG image ({e})", path.display())),
            }
        }
        // Kept even when refused, so that its annotations are checked too.
        index_of.insert(image.id, images.len());
        images.push(DetectionImage { path, width: image.width, height: image.height, boxes: Vec::new() });
    }
    for (k, a) in file.annotations.iter().enumerate() {
        let name = match a.id {
            Some(id) => format!("{}: annotation {id}", json.display()),
            None => format!("{}: annotation #{}", json.display(), k + 1),
        };
        let Some(&i) = index_of.get(&a.image_id) else {
            problems.push(format!("{name}: image id {} is not among the images", a.image_id));
            continue;
        };
        let Some(&class) = class_of.get(&a.category_id) else {
            problems.push(format!("{name}: category id {} is not among the categories", a.category_id));
            continue;
        };
        let image = &mut images[i];
        match normalised_box(&a.bbox, image.width as f64, image.height as f64) {
            Ok(bbox) => image.boxes.push(DetectionBox { class, bbox, crowd: a.iscrowd != 0 }),
            Err(e) => problems.push(format!("{name}: {e}")),
        }
    }
    Some((categories, images))
}

/// [x, y, w, h] in pixels → x1, y1, x2, y2 in 0–1, clipped within the tolerance.
fn normalised_box(b: &[f64], width: f64, height: f64) -> Result<BBox, String> {
    let [x, y, w, h] = b else {
        return Err(format!("bbox must be [x, y, width, height], found {} values", b.len()));
    };
    if ![x, y, w, h].iter().all(|v| v.is_finite()) {
        return Err(format!("bbox {b:?} is not finite"));
    }
    if *w <= 0.0 || *h <= 0.0 {
        return Err(format!("bbox {b:?} has no area"));
    }
    let t = TOLERANCE_PX;
    if *x < -t || *y < -t || x + w > width + t || y + h > height + t {
        return Err(format!("bbox {b:?} reaches outside the {width}×{height} image"));
    }
    let clip = |v: f64, side: f64| (v.clamp(0.0, side) / side) as f32;
    let bbox = BBox { x1: clip(*x, width), y1: clip(*y, height), x2: clip(x + w, width), y2: clip(y + h, height) };
    if bbox.area() <= 0.0 {
        return Err(format!("bbox {b:?} has no area inside the image"));
    }
    Ok(bbox)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        crate::dataset::scratch(&format!("coco-{name}"))
    }

    fn png(path: &Path, w: u32, h: u32) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        image::RgbImage::from_pixel(w, h, image::Rgb([10, 200, 30])).save(path).unwrap();
    }

    const CATEGORIES: &str = r#"[{"id": 3, "name": "car"}, {"id": 1, "name": "person"}]"#;

    #[test]
    fn reads_coco_layout_with_crowds() {
        let dir = scratch("good");
        png(&dir.join("train2017/a.png"), 100, 50);
        png(&dir.join("train2017/b.png"), 100, 50);
        png(&dir.join("images/val2017/c.png"), 40, 40);
        std::fs::create_dir_all(dir.join("annotations")).unwrap();
        std::fs::write(
            dir.join("annotations/instances_train2017.json"),
            format!(
                r#"{{"images": [{{"id": 7, "file_name": "a.png", "width": 100, "height": 50}},
                              {{"id": 8, "file_name": "b.png", "width": 100, "height": 50}}],
                   "categories": {CATEGORIES},
                   "annotations": [{{"id": 1, "image_id": 7, "category_id": 3, "bbox": [10, 5, 20, 10], "iscrowd": 0}},
                                   {{"id": 2, "image_id": 7, "category_id": 1, "bbox": [0, 0, 100.5, 50], "iscrowd": 1}}]}}"#
            ),
        )
        .unwrap();
        std::fs::write(
            dir.join("annotations/instances_val2017.json"),
            format!(
                r#"{{"images": [{{"id": 1, "file_name": "c.png", "width": 40, "height": 40}}],
                   "categories": {CATEGORIES}, "annotations": []}}"#
            ),
        )
        .unwrap();
        assert!(is_coco_dir(&dir));
        let data = load(&dir, crate::dataset::ALL_SPLITS, crate::dataset::TRAINING_SPLITS).unwrap();
        // Categories in id order: person (1), car (3).
        assert_eq!(data.names, ["person", "car"]);
        assert_eq!((data.train.len(), data.val.len(), data.test.is_none()), (2, 1, true));
        let a = &data.train[0];
        assert_eq!(
            a.boxes[0],
            DetectionBox { class: 1, bbox: BBox { x1: 0.1, y1: 0.1, x2: 0.3, y2: 0.3 }, crowd: false }
        );
        // Half a pixel over the edge: clipped. A crowd stays a crowd.
        assert_eq!(
            a.boxes[1],
            DetectionBox { class: 0, bbox: BBox { x1: 0.0, y1: 0.0, x2: 1.0, y2: 1.0 }, crowd: true }
        );
        assert!(data.train[1].boxes.is_empty() && data.val[0].boxes.is_empty(), "background images");
    }

    #[test]
    fn reads_roboflow_layout() {
        let dir = scratch("roboflow");
        for split in ["train", "valid"] {
            png(&dir.join(split).join("x.png"), 20, 20);
            std::fs::write(
                dir.join(split).join("_annotations.coco.json"),
                format!(
                    r#"{{"images": [{{"id": 0, "file_name": "x.png", "width": 20, "height": 20}}],
                       "categories": {CATEGORIES},
                       "annotations": [{{"id": 0, "image_id": 0, "category_id": 1, "bbox": [5, 5, 10, 10]}}]}}"#
                ),
            )
            .unwrap();
        }
        let data = load(&dir, crate::dataset::ALL_SPLITS, crate::dataset::TRAINING_SPLITS).unwrap();
        assert_eq!((data.train.len(), data.val.len()), (1, 1));
        assert_eq!(data.val[0].boxes[0].class, 0);
    }

    #[test]
    fn every_problem_is_named_with_its_file_and_annotation() {
        let dir = scratch("bad");
        png(&dir.join("train/a.png"), 100, 50);
        png(&dir.join("train/small.png"), 10, 10);
        std::fs::write(dir.join("train/broken.png"), "no image").unwrap();
        std::fs::create_dir_all(dir.join("annotations")).unwrap();
        let json = dir.join("annotations/instances_train.json");
        std::fs::write(
            &json,
            format!(
                r#"{{"images": [{{"id": 1, "file_name": "a.png", "width": 100, "height": 50}},
                              {{"id": 2, "file_name": "small.png", "width": 20, "height": 20}},
                              {{"id": 3, "file_name": "broken.png", "width": 20, "height": 20}},
                              {{"id": 4, "file_name": "gone.png", "width": 20, "height": 20}}],
                   "categories": {CATEGORIES},
                   "annotations": [{{"id": 11, "image_id": 9, "category_id": 3, "bbox": [1, 1, 2, 2]}},
                                   {{"id": 12, "image_id": 1, "category_id": 2, "bbox": [1, 1, 2, 2]}},
                                   {{"id": 13, "image_id": 1, "category_id": 3, "bbox": [1, 1, 0, 2]}},
                                   {{"id": 14, "image_id": 1, "category_id": 3, "bbox": [90, 1, 20, 2]}},
                                   {{"id": 15, "image_id": 1, "category_id": 3, "bbox": [1, 1, 2]}}]}}"#
            ),
        )
        .unwrap();
        let err = format!("{:#}", load(&dir, crate::dataset::ALL_SPLITS, crate::dataset::TRAINING_SPLITS).unwrap_err());
        let j = json.display().to_string();
        for want in [
            format!("{j}: annotation 11: image id 9 is not among the images"),
            format!("{j}: annotation 12: category id 2 is not among the categories"),
            format!("{j}: annotation 13: bbox [1.0, 1.0, 0.0, 2.0] has no area"),
            format!("{j}: annotation 14: bbox [90.0, 1.0, 20.0, 2.0] reaches outside the 100×50 image"),
            format!("{j}: annotation 15: bbox must be [x, y, width, height], found 3 values"),
            format!("{}: 10×10 pixels, but {j} says 20×20", dir.join("train/small.png").display()),
            format!("{}: not a readable PNG or JPEG image", dir.join("train/broken.png").display()),
            format!("{}: not a readable PNG or JPEG image", dir.join("train/gone.png").display()),
            "no `val` split".to_string(),
            "has 9 problem(s)".to_string(),
        ] {
            assert!(err.contains(&want), "missing {want:?} in:\n{err}");
        }
    }
}
