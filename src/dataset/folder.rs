//! vigil's collections and data sets on the host (docs/dataset.md): reading one with every
//! item checked, merging collections into a data set, counting what a data set holds,
//! marking items reviewed, and making a collection of pre-labelled photos.
//!
//! Reading is hostile-input code: a folder copied from a device may hold anything. Each
//! item that cannot be used (a sidecar that is not one, an image missing or not matching its
//! sha256, a symbolic link, a label file without its item) is skipped with a message naming
//! its file; the rest go on.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use crate::collect::item::{self, Layout, ReviewStatus, Sidecar};
use crate::collect::store::{names_of, Collection, NewItem};

/// The largest data.yaml read.
const MAX_DATA_YAML: u64 = 4 << 20;
/// The largest label file read.
const MAX_LABELS: u64 = 16 << 20;
/// The splits of a data set, in the order they are searched.
const SPLITS: [&str; 3] = ["train", "val", "test"];

/// A collection (flat) or a data set (split), as its `data.yaml` says.
#[derive(Debug, Clone, PartialEq)]
pub struct Folder {
    pub root: PathBuf,
    pub names: Vec<String>,
    /// A data set's `vigil_split` (val, test); `None` for a collection.
    pub split: Option<(f64, f64)>,
}

/// One readable item of a folder.
#[derive(Debug, Clone)]
pub struct Item {
    pub sidecar: Sidecar,
    /// Where its files are.
    pub layout: Layout,
    /// Its split, in a data set.
    pub split: Option<&'static str>,
}

impl Item {
    pub fn image(&self) -> PathBuf {
        self.layout.image(&self.sidecar)
    }

    pub fn label(&self) -> PathBuf {
        self.layout.label(&self.sidecar.id)
    }

    /// The label file's text ("" when there is none).
    pub fn labels(&self) -> anyhow::Result<String> {
        let path = self.label();
        match crate::files::read_text_capped(&path, MAX_LABELS) {
            Ok(text) => Ok(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
            Err(e) => Err(anyhow::anyhow!("{}: {e}", path.display())),
        }
    }
}

/// Reads `root/data.yaml`: the folder's names and, for a data set, its split ratios.
pub fn open(root: &Path) -> anyhow::Result<Folder> {
    let yaml = root.join("data.yaml");
    let text = crate::files::read_text_capped(&yaml, MAX_DATA_YAML)
        .with_context(|| format!("{} is not a vigil collection or data set: cannot read data.yaml", root.display()))?;
    let doc = item::parse_yaml(&text).map_err(|e| anyhow::anyhow!("{}: {e}", yaml.display()))?;
    match doc["vigil_dataset"].as_i64() {
        Some(v) if v == i64::from(item::FORMAT) => {}
        Some(v) => {
            bail!("{}: vigil_dataset {v} is not format version {} (docs/dataset.md)", yaml.display(), item::FORMAT)
        }
        None => {
            bail!("{}: no `vigil_dataset: 1`: not a vigil collection or data set (docs/dataset.md)", yaml.display())
        }
    }
    let names = names_of(&text).map_err(|e| anyhow::anyhow!("{}: {e}", yaml.display()))?;
    if let Some(twice) = crate::model::manifest::first_repeated(&names) {
        bail!("{}: `names` lists {twice:?} twice", yaml.display());
    }
    let ratio =
        |key: &str| doc["vigil_split"][key].as_f64().or_else(|| doc["vigil_split"][key].as_i64().map(|v| v as f64));
    let split = match (&doc["vigil_split"], ratio("val"), ratio("test")) {
        (yaml_rust2::Yaml::BadValue, _, _) => None,
        (_, Some(val), Some(test)) if valid_ratios(val, test) => Some((val, test)),
        _ => bail!("{}: vigil_split must be {{val: V, test: T}}, each 0 to 1 and together below 1", yaml.display()),
    };
    Ok(Folder { root: root.to_path_buf(), names, split })
}

fn valid_ratios(val: f64, test: f64) -> bool {
    val.is_finite() && test.is_finite() && val >= 0.0 && test >= 0.0 && val + test < 1.0
}

/// The items of `folder`, and a message for each file that is not a usable part of one.
/// `verify`: each image is read and its sha256 compared with its sidecar's.
pub fn items(folder: &Folder, verify: bool) -> (Vec<Item>, Vec<String>) {
    let root = &folder.root;
    let mut problems = Vec::new();
    let layouts: Vec<(Option<&'static str>, Layout)> = match folder.split {
        None => vec![(None, Layout::collection(root))],
        Some(_) => SPLITS.iter().map(|s| (Some(*s), Layout::dataset(root, s))).collect(),
    };
    let mut items = Vec::new();
    let mut ids = HashSet::new();
    for path in plain_files(&root.join("items"), &mut problems) {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let Some(id) = name.strip_suffix(".json").filter(|id| item::is_item_id(id)) else {
            problems.push(format!("{}: not an item's sidecar (<id>.json); skipped", path.display()));
            continue;
        };
        // Its files are its own, even when it is skipped below.
        ids.insert(id.to_string());
        let sidecar = match item::read_sidecar(&path, id) {
            Ok(s) => s,
            Err(e) => {
                problems.push(format!("{}: {e}; skipped", path.display()));
                continue;
            }
        };
        let found: Vec<&(Option<&'static str>, Layout)> =
            layouts.iter().filter(|(_, l)| std::fs::symlink_metadata(l.image(&sidecar)).is_ok()).collect();
        let (split, layout) = match found.as_slice() {
            [one] => (*one).clone(),
            [] => {
                problems.push(format!("{}: its image {} is missing; skipped", path.display(), sidecar.image));
                continue;
            }
            _ => {
                problems.push(format!("{}: its image is in more than one split; skipped", path.display()));
                continue;
            }
        };
        let image = layout.image(&sidecar);
        if let Err(why) = plain_file(&image).and_then(|_| if verify { check_image(&image, &sidecar) } else { Ok(()) }) {
            problems.push(format!("{}: {why}; skipped", image.display()));
            continue;
        }
        let label = layout.label(id);
        if std::fs::symlink_metadata(&label).is_ok() {
            if let Err(why) = plain_file(&label) {
                problems.push(format!("{}: {why}; skipped", label.display()));
                continue;
            }
        }
        items.push(Item { sidecar, layout, split });
    }
    // Files no item owns: a label or image without its sidecar.
    for (_, layout) in &layouts {
        for (dir, what) in [(&layout.labels, "a label file"), (&layout.images, "an image")] {
            for path in plain_files(dir, &mut Vec::new()) {
                let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
                if !ids.contains(&stem) {
                    problems
                        .push(format!("{}: {what} without its item (no items/{stem}.json); ignored", path.display()));
                }
            }
        }
    }
    items.sort_by(|a, b| (a.sidecar.saved_at, &a.sidecar.id).cmp(&(b.sidecar.saved_at, &b.sidecar.id)));
    (items, problems)
}

/// The regular files of `dir` (hidden ones, whose names start with '.', are temporary files
/// and left out); anything else there is a problem.
fn plain_files(dir: &Path, problems: &mut Vec<String>) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut out = Vec::new();
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        // Temporary files (their names start with '.'), and a data set's split folders.
        if entry.file_name().to_string_lossy().starts_with('.') || entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        match plain_file(&path) {
            Ok(()) => out.push(path),
            Err(why) => problems.push(format!("{}: {why}; skipped", path.display())),
        }
    }
    out.sort();
    out
}

/// A file vigil wrote is a plain file: a symbolic link (which may lead out of the folder),
/// a FIFO or a device is not one of its items.
fn plain_file(path: &Path) -> Result<(), String> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => Err("a symbolic link, not a file of the folder".into()),
        Ok(m) if m.is_file() => Ok(()),
        Ok(_) => Err("not a regular file".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// The image read whole (capped) matches its sidecar's sha256.
fn check_image(path: &Path, sidecar: &Sidecar) -> Result<(), String> {
    let bytes = crate::files::read_capped(path, item::MAX_IMAGE_BYTES).map_err(|e| e.to_string())?;
    if crate::model::sha256_hex(&bytes) != sidecar.sha256 {
        return Err("the image does not match its sidecar's sha256".into());
    }
    Ok(())
}

/// The boxes of a label file's text as (class name, `cx cy w h` as written), every line
/// checked against `names`.
fn labelled(text: &str, names: &[String]) -> Result<Vec<(String, String)>, String> {
    let (_, bad) = super::yolo::parse_labels(text, names.len());
    if let Some((line, why)) = bad.first() {
        return Err(format!("line {line}: {why}"));
    }
    let mut out = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (class, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let class: usize = class.parse().map_err(|_| format!("class {class:?}"))?;
        out.push((names[class].clone(), rest.trim().to_string()));
    }
    Ok(out)
}

/// What a merge did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Merged {
    pub added: usize,
    /// Images the data set had already (by sha256).
    pub duplicates: usize,
    /// Items left out, each with why.
    pub skipped: Vec<String>,
    pub per_split: BTreeMap<&'static str, usize>,
}

/// Merges the collections (or data sets) `sources` into the data set `out` (created when
/// absent, with the split ratios `ratios`; an existing one keeps its own, and other ratios
/// are refused). Items already there are never changed; see docs/dataset.md, "Merging".
pub fn merge(out: &Path, sources: &[PathBuf], ratios: Option<(f64, f64)>) -> anyhow::Result<Merged> {
    let mut report = Merged::default();
    let target = if out.join("data.yaml").exists() {
        let t = open(out)?;
        let Some(kept) = t.split else {
            bail!("{} is a collection, not a data set: merge into another folder", out.display());
        };
        if let Some(asked) = ratios.filter(|r| *r != kept) {
            bail!(
                "{} splits val {} / test {}; merging with val {} / test {} would move items between splits (leave \
                 --val and --test out, or merge into a new data set)",
                out.display(),
                kept.0,
                kept.1,
                asked.0,
                asked.1
            );
        }
        t
    } else {
        let (val, test) = ratios.unwrap_or((0.15, 0.10));
        if !valid_ratios(val, test) {
            bail!("--val {val} and --test {test} must each be 0 to 1 and together below 1");
        }
        Folder { root: out.to_path_buf(), names: Vec::new(), split: Some((val, test)) }
    };
    let (val, test) = target.split.expect("a data set");
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    // One merge at a time.
    let _lock = crate::collect::store::lock(out, std::time::Duration::ZERO)?;
    let (existing, problems) = items(&target, false);
    for p in problems {
        eprintln!("warning: {p}");
    }
    let mut shas: HashSet<String> = existing.iter().map(|i| i.sidecar.sha256.clone()).collect();
    let mut ids: HashSet<String> = existing.iter().map(|i| i.sidecar.id.clone()).collect();
    // An item whose sidecar cannot be read (a hand edit gone wrong) is still a person's work:
    // its id is taken, never written over.
    for path in plain_files(&target.root.join("items"), &mut Vec::new()) {
        if let Some(id) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".json")) {
            ids.insert(id.to_string());
        }
    }
    let mut names = target.names.clone();
    // Read every source first: the data set's names are written before any item that needs them.
    let mut incoming: Vec<(Item, Vec<(String, String)>)> = Vec::new();
    for source in sources {
        let folder = open(source)?;
        let (found, problems) = items(&folder, true);
        report.skipped.extend(problems);
        for item in found {
            if shas.contains(&item.sidecar.sha256) {
                report.duplicates += 1;
                continue;
            }
            if ids.contains(&item.sidecar.id) {
                report.skipped.push(format!(
                    "{}: the data set has another item named {}; skipped",
                    item.image().display(),
                    item.sidecar.id
                ));
                continue;
            }
            let boxes = match item.labels().map_err(|e| e.to_string()).and_then(|t| labelled(&t, &folder.names)) {
                Ok(b) => b,
                Err(e) => {
                    report.skipped.push(format!("{}: {e}; skipped", item.label().display()));
                    continue;
                }
            };
            shas.insert(item.sidecar.sha256.clone());
            ids.insert(item.sidecar.id.clone());
            for (name, _) in &boxes {
                if !names.contains(name) {
                    names.push(name.clone());
                }
            }
            incoming.push((item, boxes));
        }
    }
    for split in ["train", "val"] {
        // There even while empty, so that a reader says "holds no images" of it.
        let images = out.join("images").join(split);
        std::fs::create_dir_all(&images).with_context(|| format!("cannot create {}", images.display()))?;
    }
    // A test split is named once it has an item (YOLO readers refuse a split without images).
    let has_test = existing.iter().any(|i| i.split == Some("test"))
        || incoming.iter().any(|(i, _)| item::split_of(&i.sidecar.sha256, val, test) == "test");
    write_data_yaml(out, &names, (val, test), has_test)?;
    let index: HashMap<&str, usize> = names.iter().enumerate().map(|(i, n)| (n.as_str(), i)).collect();
    for (item, boxes) in incoming {
        let bytes = crate::files::read_capped(&item.image(), item::MAX_IMAGE_BYTES)
            .with_context(|| format!("cannot read {}", item.image().display()))?;
        let split = item::split_of(&item.sidecar.sha256, val, test);
        let labels: String = boxes.iter().map(|(name, rest)| format!("{} {rest}\n", index[name.as_str()])).collect();
        Layout::dataset(out, split)
            .write(&item.sidecar, &bytes, &labels)
            .with_context(|| format!("cannot write item {} into {}", item.sidecar.id, out.display()))?;
        report.added += 1;
        *report.per_split.entry(split).or_default() += 1;
    }
    // Again, naming the test split only if it has an item now (a merge cut short by an
    // error may have left it named and empty).
    let has_test = existing.iter().any(|i| i.split == Some("test")) || report.per_split.contains_key("test");
    write_data_yaml(out, &names, (val, test), has_test)?;
    Ok(report)
}

/// A data set's `data.yaml`, replaced atomically.
fn write_data_yaml(root: &Path, names: &[String], (val, test): (f64, f64), has_test: bool) -> anyhow::Result<()> {
    let mut text = format!(
        "# A vigil data set (docs/dataset.md), made by `vigil dataset merge`.\nvigil_dataset: {}\n\
         vigil_split: {{val: {val}, test: {test}}}\npath: .\ntrain: images/train\nval: images/val\n{}names:\n",
        item::FORMAT,
        if has_test { "test: images/test\n" } else { "" }
    );
    for n in names {
        text += &format!("  - {}\n", serde_json::to_string(n)?);
    }
    crate::files::replace_durably(&root.join("data.yaml"), text.as_bytes())
        .with_context(|| format!("cannot write {}", root.join("data.yaml").display()))
}

/// What `vigil dataset stats` counts.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Stats {
    pub items: usize,
    /// Keyed by split ("" in a collection), camera ("" for photos), status, class name.
    pub per_split: BTreeMap<String, usize>,
    pub per_camera: BTreeMap<String, usize>,
    pub per_status: BTreeMap<&'static str, usize>,
    /// Boxes per class, over all items and over reviewed ones.
    pub boxes: BTreeMap<String, usize>,
    pub reviewed_boxes: BTreeMap<String, usize>,
    /// Items with no box (negatives among them).
    pub empty: usize,
    pub problems: Vec<String>,
}

/// Counts what `root` holds.
pub fn stats(root: &Path) -> anyhow::Result<Stats> {
    let folder = open(root)?;
    let (found, problems) = items(&folder, false);
    let mut s = Stats { items: found.len(), problems, ..Stats::default() };
    for item in &found {
        *s.per_split.entry(item.split.unwrap_or("").to_string()).or_default() += 1;
        *s.per_camera.entry(item.sidecar.camera.clone().unwrap_or_default()).or_default() += 1;
        *s.per_status.entry(item.sidecar.review.status.name()).or_default() += 1;
        let boxes = match item.labels().map_err(|e| e.to_string()).and_then(|t| labelled(&t, &folder.names)) {
            Ok(b) => b,
            Err(e) => {
                s.problems.push(format!("{}: {e}", item.label().display()));
                continue;
            }
        };
        if boxes.is_empty() {
            s.empty += 1;
        }
        for (name, _) in boxes {
            if item.sidecar.review.status == ReviewStatus::Reviewed {
                *s.reviewed_boxes.entry(name.clone()).or_default() += 1;
            }
            *s.boxes.entry(name).or_default() += 1;
        }
    }
    Ok(s)
}

/// Marks the items `ids` of `root` (every unreviewed one with `all`) as `status`; a negative
/// gets an empty label file. Returns the ids changed.
pub fn mark(root: &Path, ids: &[String], all: bool, status: ReviewStatus) -> anyhow::Result<Vec<String>> {
    let folder = open(root)?;
    // Not while a daemon's collector writes it (its eviction could delete an item marked).
    let _lock = crate::collect::store::lock(root, std::time::Duration::ZERO)?;
    let (found, problems) = items(&folder, false);
    for p in problems {
        eprintln!("warning: {p}");
    }
    let by_id: HashMap<&str, &Item> = found.iter().map(|i| (i.sidecar.id.as_str(), i)).collect();
    let chosen: Vec<&Item> = if all {
        found.iter().filter(|i| i.sidecar.review.status == ReviewStatus::Unreviewed).collect()
    } else {
        let missing: Vec<&String> = ids.iter().filter(|id| !by_id.contains_key(id.as_str())).collect();
        if !missing.is_empty() {
            bail!("{} has no item {missing:?}", root.display());
        }
        ids.iter().map(|id| by_id[id.as_str()]).collect()
    };
    let now = crate::source::unix_ms();
    let mut changed = Vec::new();
    for item in chosen {
        // Read again: an item changed since (another tool's review) is left as it is.
        let path = item.layout.sidecar(&item.sidecar.id);
        let mut sidecar =
            item::read_sidecar(&path, &item.sidecar.id).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        if sidecar.review.revision != item.sidecar.review.revision {
            eprintln!(
                "warning: {}: changed meanwhile (revision {}); left as it is",
                path.display(),
                sidecar.review.revision
            );
            continue;
        }
        if status == ReviewStatus::Negative {
            crate::files::replace_durably(&item.label(), b"")
                .with_context(|| format!("cannot write {}", item.label().display()))?;
        }
        sidecar.review.status = status;
        sidecar.review.revision = sidecar.review.revision.saturating_add(1);
        sidecar.review.at = Some(now);
        item.layout
            .write_sidecar(&sidecar)
            .with_context(|| format!("cannot write {}", item.layout.sidecar(&sidecar.id).display()))?;
        changed.push(sidecar.id);
    }
    Ok(changed)
}

/// A photo's item id: its file stem (letters, digits, '.', '-', '_'; others as '-'; at most
/// 100 of them) and the first 8 hex digits of its sha256.
fn photo_id(path: &Path, sha256: &str) -> String {
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let clean: String = stem
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') { c } else { '-' })
        .take(100)
        .collect();
    let clean = clean.trim_start_matches('.');
    let clean = if clean.is_empty() { "photo" } else { clean };
    format!("{clean}_{}", &sha256[..8])
}

/// A photo as an item takes it: its bytes and pixels. One a camera (a phone) turned by
/// its EXIF orientation is turned as it is shown and saved again (JPEG, quality 95) without
/// that tag, so that its boxes are where every labelling tool shows the objects. At most
/// [`item::MAX_SIDE`] pixels a side.
fn photo_file(path: &Path) -> anyhow::Result<(Vec<u8>, image::RgbImage)> {
    use image::ImageDecoder;
    let bytes = crate::files::read_capped(path, item::MAX_IMAGE_BYTES)
        .with_context(|| format!("cannot open image {}", path.display()))?;
    let orient = || -> image::ImageResult<Option<image::RgbImage>> {
        let reader = image::ImageReader::new(std::io::Cursor::new(&bytes)).with_guessed_format()?;
        let mut decoder = reader.into_decoder()?;
        let orientation = decoder.orientation()?;
        if orientation == image::metadata::Orientation::NoTransforms {
            return Ok(None);
        }
        let mut turned = image::DynamicImage::from_decoder(decoder)?;
        turned.apply_orientation(orientation);
        Ok(Some(turned.into_rgb8()))
    };
    let (bytes, image) = match orient().map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))? {
        None => {
            let image = super::decode_image(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            (bytes, image)
        }
        Some(turned) => {
            let mut jpeg = Vec::new();
            turned.write_with_encoder(image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 95))?;
            (jpeg, turned)
        }
    };
    let (w, h) = image.dimensions();
    if w > item::MAX_SIDE || h > item::MAX_SIDE {
        bail!("{}: {w}x{h} pixels, over the {} a side an item may have", path.display(), item::MAX_SIDE);
    }
    Ok((bytes, image))
}

/// What `vigil dataset prelabel` did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Prelabelled {
    pub added: usize,
    /// Photos the collection had already.
    pub present: usize,
    pub failed: Vec<String>,
}

/// Runs `model` on each photo (files, or folders searched with their subfolders) and writes
/// it into the collection `out` with its detections at or above `score` as pre-labels.
pub fn prelabel(
    model: &crate::model::Model,
    inputs: &[PathBuf],
    out: &Path,
    score: f32,
) -> anyhow::Result<Prelabelled> {
    use crate::model::Prediction;
    if model.manifest.task != crate::model::manifest::Task::Detect {
        bail!("{} is a classifier: pre-labels are boxes, so prelabel takes a detector", model.manifest.name);
    }
    let mut photos = Vec::new();
    for input in inputs {
        if input.is_dir() {
            let (files, failed) = crate::files::files_under(input);
            for (dir, e) in failed {
                eprintln!("warning: cannot read {}: {e}", dir.display());
            }
            photos.extend(files.into_iter().filter(|f| {
                f.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| super::IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
            }));
        } else {
            photos.push(input.clone());
        }
    }
    let (mut collection, warnings) = Collection::open(out, std::time::Duration::ZERO)
        .with_context(|| format!("cannot open the collection {}", out.display()))?;
    for w in warnings {
        eprintln!("warning: {w}");
    }
    collection.know(&model.manifest.labels)?;
    let mut report = Prelabelled::default();
    let mut runner = crate::model::Runner::single();
    let mut params = model.default_params();
    // Detections down to the pre-label score at least, for the sidecar and the pre-labels.
    params.score = params.score.min(score);
    for photo in photos {
        let (bytes, image) = match photo_file(&photo) {
            Ok(read) => read,
            Err(e) => {
                report.failed.push(format!("{e:#}"));
                continue;
            }
        };
        let sha256 = crate::model::sha256_hex(&bytes);
        if collection.has_image(&sha256) {
            report.present += 1;
            continue;
        }
        let id = photo_id(&photo, &sha256);
        let detections = match model.predict_in(&mut runner, &image, &params) {
            Ok((Prediction::Detections(d), _)) => d,
            Ok((Prediction::Classes(_), _)) => Vec::new(),
            Err(e) => {
                report.failed.push(format!("{}: {e}", photo.display()));
                continue;
            }
        };
        let extension = if bytes.starts_with(&[0x89, b'P', b'N', b'G']) { "png" } else { "jpg" };
        let (width, height) = image.dimensions();
        let new = NewItem {
            id,
            sha256,
            image: &bytes,
            extension,
            width,
            height,
            device: None,
            camera: None,
            captured_at: None,
            why: vec![item::Why::Photo],
            model: item::ItemModel {
                name: model.manifest.name.clone(),
                version: model.manifest.version.clone(),
                sha256: model.sha256.clone(),
            },
            prelabel_score: score,
            detections: &detections,
        };
        collection
            .save(new, usize::MAX, u64::MAX)
            .map_err(|e| anyhow::anyhow!("cannot write {} into {}: {e}", photo.display(), out.display()))?;
        report.added += 1;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::item::{ItemModel, Why};
    use crate::model::BBox;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("vigil-folder-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    /// An item to write: its image bytes and its boxes by class name.
    type Written<'a> = (&'a [u8], &'a [(&'a str, BBox)]);

    /// A collection at `root` with `names`, holding an item per (image bytes, [(class name, box)]).
    fn collection(root: &Path, names: &[&str], items: &[Written]) -> Vec<String> {
        let (mut c, _) = Collection::open(root, std::time::Duration::ZERO).unwrap();
        c.know(&names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        let mut ids = Vec::new();
        for (i, (bytes, boxes)) in items.iter().enumerate() {
            let sha256 = crate::model::sha256_hex(bytes);
            let id = item::item_id("door", 1_000 + i as u64, &sha256);
            let detections: Vec<crate::model::Detection> = boxes
                .iter()
                .map(|(label, bbox)| crate::model::Detection {
                    label: label.to_string(),
                    class_id: 0,
                    score: 0.9,
                    bbox: *bbox,
                    keypoints: Default::default(),
                })
                .collect();
            let new = NewItem {
                id: id.clone(),
                sha256,
                image: bytes,
                extension: "jpg",
                width: 100,
                height: 100,
                device: Some("garage".into()),
                camera: Some("door".into()),
                captured_at: Some(1_000 + i as u64),
                why: vec![Why::Uncertain],
                model: ItemModel { name: "m".into(), version: "1".into(), sha256: "cd".repeat(32) },
                prelabel_score: 0.5,
                detections: &detections,
            };
            c.save(new, usize::MAX, u64::MAX).unwrap();
            ids.push(id);
        }
        ids
    }

    const B: BBox = BBox { x1: 10.0, y1: 10.0, x2: 50.0, y2: 30.0 };

    /// Two devices' collections name their classes in other orders; the data set matches them
    /// by name, drops the image both have, splits by content, and a second merge after more
    /// collection adds only the new item and keeps the reviews made meanwhile.
    #[test]
    fn collections_merge_by_class_name_content_and_split() {
        let dir = scratch("merge");
        let (a, b, out) = (dir.join("a"), dir.join("b"), dir.join("set"));
        let a_ids = collection(&a, &["person", "car"], &[(b"image-1", &[("car", B)]), (b"image-2", &[("person", B)])]);
        collection(&b, &["car", "dog"], &[(b"image-2", &[("car", B)]), (b"image-3", &[("dog", B), ("car", B)])]);
        let report = merge(&out, &[a.clone(), b.clone()], None).unwrap();
        assert_eq!((report.added, report.duplicates), (3, 1), "{report:?}");
        assert!(report.skipped.is_empty(), "{:?}", report.skipped);
        let set = open(&out).unwrap();
        assert_eq!(set.names, ["car", "person", "dog"]);
        assert_eq!(set.split, Some((0.15, 0.10)));
        let (found, problems) = items(&set, true);
        assert!(problems.is_empty(), "{problems:?}");
        for i in &found {
            assert_eq!(i.split, Some(item::split_of(&i.sidecar.sha256, 0.15, 0.10)), "the split is the content's");
        }
        let three = found.iter().find(|i| i.sidecar.sha256 == crate::model::sha256_hex(b"image-3")).unwrap();
        assert_eq!(
            labelled(&three.labels().unwrap(), &set.names).unwrap().iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            ["dog", "car"]
        );
        // Reviewed on the host; then a device collects more and the merge runs again.
        assert_eq!(mark(&out, &[a_ids[0].clone()], false, ReviewStatus::Reviewed).unwrap(), [a_ids[0].clone()]);
        collection(&a, &["person", "car"], &[(b"image-4", &[])]);
        let again = merge(&out, &[a, b], None).unwrap();
        assert_eq!((again.added, again.duplicates), (1, 4), "{again:?}");
        let (found, _) = items(&open(&out).unwrap(), false);
        let reviewed = found.iter().find(|i| i.sidecar.id == a_ids[0]).unwrap();
        assert_eq!((reviewed.sidecar.review.status, reviewed.sidecar.review.revision), (ReviewStatus::Reviewed, 1));
        let s = stats(&out).unwrap();
        assert_eq!((s.items, s.empty, s.per_status.get("reviewed").copied()), (4, 1, Some(1)));
        assert_eq!(s.boxes.get("car").copied(), Some(2));
        // Other split ratios would move items: refused.
        let e = merge(&out, &[], Some((0.3, 0.1))).unwrap_err().to_string();
        assert!(e.contains("would move items between splits"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Names that collide: two items of one id but other images (the second is skipped,
    /// named), and a data.yaml that names a class twice (refused, named).
    #[test]
    fn colliding_names_are_refused_naming_them() {
        let dir = scratch("collide");
        let (a, b, out) = (dir.join("a"), dir.join("b"), dir.join("set"));
        let ids = collection(&a, &["car"], &[(b"first", &[])]);
        collection(&b, &["car"], &[(b"second", &[])]);
        // The same id in b, for another image: its sidecar and image renamed to a's id.
        let (layout, sha) = (Layout::collection(&b), crate::model::sha256_hex(b"second"));
        let b_id = item::item_id("door", 1_000, &sha);
        let mut sidecar = item::read_sidecar(&layout.sidecar(&b_id), &b_id).unwrap();
        std::fs::remove_file(layout.sidecar(&b_id)).unwrap();
        std::fs::rename(layout.image(&sidecar), layout.images.join(format!("{}.jpg", ids[0]))).unwrap();
        std::fs::rename(layout.label(&b_id), layout.label(&ids[0])).unwrap();
        sidecar.id = ids[0].clone();
        sidecar.image = format!("{}.jpg", ids[0]);
        layout.write_sidecar(&sidecar).unwrap();
        let report = merge(&out, &[a, b.clone()], None).unwrap();
        assert_eq!(report.added, 1, "{report:?}");
        assert!(
            report.skipped.iter().any(|s| s.contains(&format!("the data set has another item named {}", ids[0]))),
            "{:?}",
            report.skipped
        );
        std::fs::write(b.join("data.yaml"), "vigil_dataset: 1\nnames:\n  - car\n  - car\n").unwrap();
        let e = merge(&out, &[b], None).unwrap_err().to_string();
        assert!(e.contains("`names` lists \"car\" twice"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// What a hostile or damaged folder holds is skipped, each with a message naming the
    /// file; the good item still goes in.
    #[test]
    fn damaged_items_are_skipped_naming_their_files() {
        let dir = scratch("hostile");
        let (src, out) = (dir.join("src"), dir.join("set"));
        let ids = collection(
            &src,
            &["car"],
            &[(b"good", &[("car", B)]), (b"gone", &[]), (b"changed", &[]), (b"linked", &[])],
        );
        let layout = Layout::collection(&src);
        std::fs::remove_file(src.join("images").join(format!("{}.jpg", ids[1]))).unwrap();
        std::fs::write(src.join("images").join(format!("{}.jpg", ids[2])), b"other bytes").unwrap();
        let linked = src.join("images").join(format!("{}.jpg", ids[3]));
        std::fs::remove_file(&linked).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", &linked).unwrap();
        std::fs::write(layout.sidecar("not-json"), b"{ nope").unwrap();
        std::fs::write(layout.sidecar("huge"), vec![b' '; 2 << 20]).unwrap();
        std::fs::write(layout.label("orphan"), b"0 0.5 0.5 0.1 0.1\n").unwrap();
        std::fs::write(layout.items.join("bad name!.json"), b"{}").unwrap();
        let report = merge(&out, &[src], None).unwrap();
        assert_eq!(report.added, 1, "{report:?}");
        let all = report.skipped.join("\n");
        for want in [
            format!("{}.json: its image {}.jpg is missing", ids[1], ids[1]),
            format!("{}.jpg: the image does not match its sidecar's sha256", ids[2]),
            format!("{}.jpg: a symbolic link, not a file of the folder", ids[3]),
            "not-json.json: not a sidecar".to_string(),
            "huge.json: 2097152 bytes, larger than the limit of 1048576 bytes".to_string(),
            "orphan.txt: a label file without its item".to_string(),
            "bad name!.json: not an item's sidecar".to_string(),
        ] {
            assert!(all.contains(&want), "missing {want:?} in:\n{all}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A phone's photo, stored sideways with an EXIF tag saying to turn it: taken turned, as
    /// every labelling tool shows it, and saved again without the tag.
    #[test]
    fn a_photo_turned_by_its_exif_tag_is_taken_turned() {
        use image::ImageEncoder;
        let dir = scratch("exif");
        std::fs::create_dir_all(&dir).unwrap();
        let stored = image::RgbImage::from_fn(40, 20, |x, _| image::Rgb([(x * 6) as u8, 0, 0]));
        // A TIFF header and one IFD entry: Orientation (0x0112) = 6, turn 90° clockwise.
        let exif: Vec<u8> = [
            &b"MM\x00\x2a\x00\x00\x00\x08\x00\x01"[..],
            &[0x01, 0x12, 0x00, 0x03, 0x00, 0x00, 0x00, 0x01, 0x00, 0x06, 0x00, 0x00],
            &[0, 0, 0, 0],
        ]
        .concat();
        let mut jpeg = Vec::new();
        let mut encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 95);
        encoder.set_exif_metadata(exif).unwrap();
        encoder.write_image(stored.as_raw(), 40, 20, image::ExtendedColorType::Rgb8).unwrap();
        let path = dir.join("sideways.jpg");
        std::fs::write(&path, &jpeg).unwrap();
        let (bytes, image) = photo_file(&path).unwrap();
        assert_eq!(image.dimensions(), (20, 40), "turned");
        assert_ne!(bytes, jpeg, "saved again, without the tag");
        assert_eq!(super::super::decode_image(&bytes).unwrap().dimensions(), (20, 40));
        // One without the tag is taken as it is, byte for byte.
        let plain = dir.join("plain.png");
        stored.save(&plain).unwrap();
        assert_eq!(photo_file(&plain).unwrap().0, std::fs::read(&plain).unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn photo_ids_are_plain_file_names() {
        let sha = "0123456789abcdef".repeat(4);
        assert_eq!(photo_id(Path::new("/x/Front door (2).JPG"), &sha), "Front-door--2-_01234567");
        assert_eq!(photo_id(Path::new("/x/.hidden.png"), &sha), "hidden_01234567");
        assert_eq!(photo_id(Path::new("/x/..."), &sha), "photo_01234567");
        assert!(item::is_item_id(&photo_id(Path::new(&"é".repeat(300)), &sha)));
    }
}
