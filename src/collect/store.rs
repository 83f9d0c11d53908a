//! A camera's collection folder on the device (docs/dataset.md, "A collection"): its items,
//! its class names, and the bound on what it keeps. Only the camera's collector thread
//! writes it.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use super::item::{self, ItemDetection, ItemModel, Layout, Review, ReviewStatus, Sidecar, Why};
use crate::model::Detection;

/// What the collection holds, oldest first.
#[derive(Debug)]
struct Entry {
    id: String,
    bytes: u64,
    /// `None`: its sidecar could not be read (damaged, or written by a tool this vigil does
    /// not know): it is counted, and never deleted.
    status: Option<ReviewStatus>,
    saved_at: u64,
    sha256: String,
}

/// A collection folder, opened: held by this process alone (a lock file) while open.
#[derive(Debug)]
pub struct Collection {
    root: PathBuf,
    layout: Layout,
    /// `data.yaml`'s names: append-only, so every label file's class ids stay right.
    names: Vec<String>,
    entries: VecDeque<Entry>,
    bytes: u64,
    _lock: std::fs::File,
}

/// Why an item was not added.
#[derive(Debug, thiserror::Error)]
pub enum AddError {
    #[error("the collection holds {items} items, {bytes} bytes, all reviewed: none may be deleted to make room")]
    Full { items: usize, bytes: u64 },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A frame (or photo) to save as an item, with the model's detections.
pub struct NewItem<'a> {
    /// Its id ([`item::item_id`] for a camera's frame) and its image's sha256.
    pub id: String,
    pub sha256: String,
    pub image: &'a [u8],
    /// The image file's extension: "jpg" or "png".
    pub extension: &'static str,
    pub width: u32,
    pub height: u32,
    pub device: Option<String>,
    pub camera: Option<String>,
    pub captured_at: Option<u64>,
    pub why: Vec<Why>,
    pub model: ItemModel,
    pub prelabel_score: f32,
    /// Every detection the model reported; those scored at least `prelabel_score` become
    /// the pre-labels.
    pub detections: &'a [Detection],
}

/// The largest `data.yaml` read.
const MAX_DATA_YAML: u64 = 4 << 20;

impl Collection {
    /// Opens (creating) the collection at `root`, and locks it: a second collector (a
    /// reload's, while the old one finishes its queue) or `vigil dataset accept` waits up to
    /// `wait` for it, then is refused. A folder that is not a collection (a data set, a YOLO
    /// folder of someone's, files of any kind) is refused untouched. Items are read by their
    /// sidecars; a sidecar that cannot be read is left where it is, counted, never deleted,
    /// and named in the returned warnings; the files of an item cut short by a crash (no
    /// sidecar) and temporary files are deleted.
    pub fn open(root: &Path, wait: std::time::Duration) -> std::io::Result<(Collection, Vec<String>)> {
        let refuse = |why: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, why);
        let layout = Layout::collection(root);
        let yaml = root.join("data.yaml");
        let names = match crate::files::read_text_capped(&yaml, MAX_DATA_YAML) {
            Ok(text) => {
                let doc = item::parse_yaml(&text).map_err(|e| refuse(format!("{}: {e}", yaml.display())))?;
                if doc["vigil_dataset"].as_i64() != Some(i64::from(item::FORMAT)) || !doc["vigil_split"].is_badvalue() {
                    return Err(refuse(format!(
                        "{} is not a vigil collection (its data.yaml has no `vigil_dataset: {}`, or is a data \
                         set's): vigil writes collections into their own folders",
                        root.display(),
                        item::FORMAT
                    )));
                }
                names_of(&text).map_err(|e| refuse(format!("{}: {e}", yaml.display())))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // A new collection: a folder of someone else's files is not one.
                let occupied = [&layout.images, &layout.labels, &layout.items]
                    .iter()
                    .any(|d| std::fs::read_dir(d).is_ok_and(|mut entries| entries.next().is_some()));
                if occupied {
                    return Err(refuse(format!(
                        "{} holds images/, labels/ or items/ but no collection's data.yaml: not a vigil collection \
                         (choose an empty folder)",
                        root.display()
                    )));
                }
                Vec::new()
            }
            Err(e) => return Err(std::io::Error::new(e.kind(), format!("{}: {e}", yaml.display()))),
        };
        for dir in [&layout.images, &layout.labels, &layout.items] {
            std::fs::create_dir_all(dir)?;
        }
        let lock = lock(root, wait)?;
        let mut warnings = Vec::new();
        let mut entries = Vec::new();
        // Every item with a sidecar, readable or not: the files of the others are leftovers.
        let mut kept = std::collections::HashSet::new();
        let size = |p: &Path| std::fs::symlink_metadata(p).map(|m| m.len()).unwrap_or(0);
        for path in list(&layout.items)? {
            let Some(id) = stem(&path) else { continue };
            kept.insert(id.clone());
            match item::read_sidecar(&path, &id) {
                Ok(s) => {
                    let bytes = size(&path) + size(&layout.image(&s)) + size(&layout.label(&id));
                    let (status, saved_at, sha256) = (Some(s.review.status), s.saved_at, s.sha256);
                    entries.push(Entry { id, bytes, status, saved_at, sha256 });
                }
                Err(e) => {
                    warnings.push(format!("{}: {e}; left as it is (never deleted)", path.display()));
                    let bytes = size(&path) + size(&layout.images.join(format!("{id}.jpg"))) + size(&layout.label(&id));
                    entries.push(Entry { id, bytes, status: None, saved_at: 0, sha256: String::new() });
                }
            }
        }
        for dir in [&layout.images, &layout.labels] {
            for path in list(dir)? {
                if !stem(&path).is_some_and(|id| kept.contains(&id)) {
                    std::fs::remove_file(&path)?;
                    warnings.push(format!("{}: no sidecar (an item cut short); deleted", path.display()));
                }
            }
        }
        entries.sort_by(|a, b| (a.saved_at, &a.id).cmp(&(b.saved_at, &b.id)));
        let bytes = entries.iter().map(|e| e.bytes).sum();
        let collection =
            Collection { root: root.to_path_buf(), layout, names, entries: entries.into(), bytes, _lock: lock };
        if !yaml.exists() {
            // Marked as a collection from the start.
            collection.write_names()?;
        }
        Ok((collection, warnings))
    }

    /// Whether the collection holds an image with this sha256.
    pub fn has_image(&self, sha256: &str) -> bool {
        self.entries.iter().any(|e| e.sha256 == sha256)
    }

    /// Deletes the oldest unreviewed item to free space; false when there is none.
    pub fn free_one(&mut self) -> std::io::Result<bool> {
        self.evict_one()
    }

    pub fn items(&self) -> usize {
        self.entries.len()
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The class id of `label`, adding it to the names (and rewriting `data.yaml`) when new.
    pub fn class_of(&mut self, label: &str) -> std::io::Result<usize> {
        if let Some(i) = self.names.iter().position(|n| n == label) {
            return Ok(i);
        }
        self.names.push(label.to_string());
        self.write_names()?;
        Ok(self.names.len() - 1)
    }

    /// Adds `labels` (a model's, in its order) to the names where missing; writes
    /// `data.yaml` when it changed or is not there yet.
    pub fn know(&mut self, labels: &[String]) -> std::io::Result<()> {
        let before = self.names.len();
        for l in labels {
            if !self.names.contains(l) {
                self.names.push(l.clone());
            }
        }
        if self.names.len() != before || !self.root.join("data.yaml").is_file() {
            self.write_names()?;
        }
        Ok(())
    }

    fn write_names(&self) -> std::io::Result<()> {
        let mut text = String::from(
            "# A vigil collection (docs/dataset.md): a YOLO data set, names append-only.\nvigil_dataset: 1\n\
             train: images\nval: images\nnames:\n",
        );
        for n in &self.names {
            // A JSON string is a YAML double-quoted scalar: any label, escaped.
            text += &format!("  - {}\n", serde_json::to_string(n).map_err(std::io::Error::other)?);
        }
        crate::files::replace_durably(&self.root.join("data.yaml"), text.as_bytes())
    }

    /// Saves a new item: its pre-labels in the label file (class ids into the collection's
    /// names, new labels added), its sidecar, within the bounds of [`Collection::add`].
    pub fn save(&mut self, new: NewItem, max_items: usize, max_bytes: u64) -> Result<Sidecar, AddError> {
        let mut prelabels = Vec::new();
        for d in new.detections.iter().filter(|d| d.score >= new.prelabel_score) {
            prelabels.push((self.class_of(&d.label)?, d.bbox));
        }
        let sidecar = Sidecar {
            v: item::FORMAT,
            image: format!("{}.{}", new.id, new.extension),
            id: new.id,
            sha256: new.sha256,
            width: new.width,
            height: new.height,
            device: new.device,
            camera: new.camera,
            captured_at: new.captured_at,
            saved_at: crate::source::unix_ms(),
            why: new.why,
            model: new.model,
            prelabel_score: new.prelabel_score,
            // The best at most MAX_SAVED_DETECTIONS (a model reports at most thousands).
            detections: best(new.detections, item::MAX_SAVED_DETECTIONS)
                .into_iter()
                .map(|d| ItemDetection {
                    label: d.label.clone(),
                    score: d.score,
                    bbox: [d.bbox.x1, d.bbox.y1, d.bbox.x2, d.bbox.y2],
                })
                .collect(),
            review: Review { status: ReviewStatus::Unreviewed, revision: 0, at: None },
            other: Default::default(),
        };
        let labels = item::yolo_lines(&prelabels, new.width, new.height);
        self.add(&sidecar, new.image, &labels, max_items, max_bytes)?;
        Ok(sidecar)
    }

    /// Makes room for `bytes` more in one more item (deleting the oldest unreviewed items),
    /// then writes the item. Reviewed items are never deleted: when only they remain and
    /// there is no room, the item is refused.
    pub fn add(
        &mut self,
        sidecar: &Sidecar,
        image: &[u8],
        labels: &str,
        max_items: usize,
        max_bytes: u64,
    ) -> Result<u64, AddError> {
        let sidecar_bytes = serde_json::to_vec_pretty(sidecar).map_err(std::io::Error::other)?.len();
        let incoming = (image.len() + labels.len() + sidecar_bytes) as u64;
        let over = |c: &Collection| c.entries.len() + 1 > max_items || c.bytes + incoming > max_bytes;
        let mut pruned = false;
        while over(self) {
            if self.evict_one()? {
                continue;
            }
            // Nothing to delete: items moved off the device (as the warning asks) are no
            // longer counted, once.
            if pruned || !self.prune_vanished() {
                return Err(AddError::Full { items: self.entries.len(), bytes: self.bytes });
            }
            pruned = true;
        }
        let bytes = self.layout.write(sidecar, image, labels)?;
        self.bytes += bytes;
        self.entries.push_back(Entry {
            id: sidecar.id.clone(),
            bytes,
            status: Some(sidecar.review.status),
            saved_at: sidecar.saved_at,
            sha256: sidecar.sha256.clone(),
        });
        Ok(bytes)
    }

    /// Deletes the oldest unreviewed item; false when there is none. An item's status is
    /// read again first: someone may have reviewed it in place since. A sidecar that cannot
    /// be read is never deleted (it may be a person's work in another tool's format).
    fn evict_one(&mut self) -> std::io::Result<bool> {
        let mut at = 0;
        while at < self.entries.len() {
            if self.entries[at].status != Some(ReviewStatus::Unreviewed) {
                at += 1;
                continue;
            }
            let id = self.entries[at].id.clone();
            let path = self.layout.sidecar(&id);
            match item::read_sidecar(&path, &id) {
                Ok(s) if s.review.status == ReviewStatus::Unreviewed => {
                    self.layout.remove(&s)?;
                    self.forget(at);
                    return Ok(true);
                }
                Ok(s) => {
                    self.entries[at].status = Some(s.review.status);
                    at += 1;
                }
                Err(_) if !path.exists() => self.forget(at),
                Err(e) => {
                    log::warn!("path={} a sidecar that cannot be read is kept: {e}", path.display());
                    self.entries[at].status = None;
                    at += 1;
                }
            }
        }
        Ok(false)
    }

    /// Forgets the items whose sidecars are gone (moved off the device); true if there were any.
    fn prune_vanished(&mut self) -> bool {
        let before = self.entries.len();
        let layout = &self.layout;
        let gone: Vec<usize> =
            (0..self.entries.len()).filter(|&i| !layout.sidecar(&self.entries[i].id).exists()).collect();
        for at in gone.into_iter().rev() {
            self.forget(at);
        }
        self.entries.len() < before
    }

    fn forget(&mut self, at: usize) {
        if let Some(e) = self.entries.remove(at) {
            self.bytes = self.bytes.saturating_sub(e.bytes);
        }
    }
}

/// The `n` highest-scored of `detections`.
fn best(detections: &[Detection], n: usize) -> Vec<&Detection> {
    let mut all: Vec<&Detection> = detections.iter().collect();
    all.sort_by(|a, b| b.score.total_cmp(&a.score));
    all.truncate(n);
    all
}

/// Takes `<root>/.lock` for this process, waiting up to `wait` for another holder.
pub(crate) fn lock(root: &Path, wait: std::time::Duration) -> std::io::Result<std::fs::File> {
    let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(root.join(".lock"))?;
    let began = std::time::Instant::now();
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(_) if began.elapsed() < wait => std::thread::sleep(std::time::Duration::from_millis(50)),
            Err(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::WouldBlock,
                    format!(
                        "{} is in use by another vigil (a running daemon's collector): stop it, or work on a copy",
                        root.display()
                    ),
                ))
            }
        }
    }
}

/// The file names in `dir`, temporary ones (starting with '.') deleted on the way.
fn list(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            let _ = std::fs::remove_file(entry.path());
            continue;
        }
        if entry.file_type()?.is_file() {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

/// The item id a file name gives (`<id>.json`, `<id>.jpg`, …).
fn stem(path: &Path) -> Option<String> {
    let id = path.file_stem()?.to_str()?;
    item::is_item_id(id).then(|| id.to_string())
}

/// The class names of a collection's `data.yaml` (a list under `names`).
pub fn names_of(text: &str) -> Result<Vec<String>, String> {
    use yaml_rust2::Yaml;
    let doc = item::parse_yaml(text).map_err(|e| e.to_string())?;
    match &doc["names"] {
        Yaml::Array(items) => items
            .iter()
            .map(|n| match n {
                Yaml::String(s) => Ok(s.clone()),
                other => Err(format!("a name that is not text: {other:?}")),
            })
            .collect(),
        Yaml::BadValue | Yaml::Null => Ok(Vec::new()),
        _ => Err("`names` is not a list".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sidecar(id: &str, saved_at: u64) -> Sidecar {
        Sidecar { saved_at, ..crate::collect::item::tests::sample(id) }
    }

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("vigil-collection-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn the_oldest_unreviewed_item_goes_first_and_reviewed_ones_stay() {
        let root = scratch("quota");
        let (mut c, _) = Collection::open(&root, std::time::Duration::ZERO).unwrap();
        for (i, id) in ["a", "b", "c"].iter().enumerate() {
            c.add(&sidecar(id, i as u64), &[0u8; 1000], "", 3, 1 << 20).unwrap();
        }
        // "a" (the oldest) is reviewed in place; the next add deletes "b".
        let layout = Layout::collection(&root);
        let mut a = item::read_sidecar(&layout.sidecar("a"), "a").unwrap();
        a.review.status = ReviewStatus::Reviewed;
        layout.write_sidecar(&a).unwrap();
        c.add(&sidecar("d", 3), &[0u8; 1000], "", 3, 1 << 20).unwrap();
        drop(c);
        let ids = |root: &Path| {
            let mut ids: Vec<String> = std::fs::read_dir(root.join("items"))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().trim_end_matches(".json").to_string())
                .collect();
            ids.sort();
            ids
        };
        assert_eq!(ids(&root), ["a", "c", "d"]);
        assert!(!root.join("images/b.jpg").exists());
        // Reopened: the same three; all reviewed and full, the next is refused.
        let (mut c, warnings) = Collection::open(&root, std::time::Duration::ZERO).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(c.items(), 3);
        for id in ["c", "d"] {
            let mut s = item::read_sidecar(&layout.sidecar(id), id).unwrap();
            s.review.status = ReviewStatus::Negative;
            layout.write_sidecar(&s).unwrap();
        }
        assert!(matches!(c.add(&sidecar("e", 4), &[0u8; 10], "", 3, 1 << 20), Err(AddError::Full { items: 3, .. })));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn an_item_cut_short_is_cleaned_up_and_names_are_append_only() {
        let root = scratch("crash");
        let (mut c, _) = Collection::open(&root, std::time::Duration::ZERO).unwrap();
        c.know(&["person".into(), "car".into()]).unwrap();
        c.add(&sidecar("a", 1), b"jpeg", "1 0.5 0.5 0.1 0.1\n", 10, 1 << 20).unwrap();
        drop(c);
        // A crash between the image and the sidecar, and a temporary file.
        std::fs::write(root.join("images/b.jpg"), b"half").unwrap();
        std::fs::write(root.join("items/.b.json.tmp"), b"{").unwrap();
        std::fs::write(root.join("items/c.json"), b"not json").unwrap();
        std::fs::write(root.join("images/c.jpg"), b"kept with its damaged sidecar").unwrap();
        let (mut c, warnings) = Collection::open(&root, std::time::Duration::ZERO).unwrap();
        assert_eq!(c.items(), 2, "the damaged one counts, and is kept");
        assert!(!root.join("images/b.jpg").exists() && !root.join("items/.b.json.tmp").exists());
        assert!(warnings.iter().any(|w| w.contains("c.json") && w.contains("not a sidecar")), "{warnings:?}");
        assert!(root.join("images/c.jpg").exists());
        // A new model knows "dog" and not "car": car keeps id 1, dog is added at the end.
        c.know(&["dog".into(), "person".into()]).unwrap();
        assert_eq!(c.class_of("car").unwrap(), 1);
        assert_eq!(c.class_of("dog").unwrap(), 2);
        let text = std::fs::read_to_string(root.join("data.yaml")).unwrap();
        assert_eq!(names_of(&text).unwrap(), ["person", "car", "dog"]);
        assert!(text.contains("vigil_dataset: 1"));
        // Held while open: a second opener waits, then is refused.
        let e = Collection::open(&root, std::time::Duration::from_millis(100)).unwrap_err();
        assert!(e.to_string().contains("is in use by another vigil"), "{e}");
        drop(c);
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// A folder that is not a collection is refused untouched: someone's YOLO folder, a data
    /// set, a folder of files without data.yaml.
    #[test]
    fn a_folder_that_is_not_a_collection_is_left_alone() {
        let root = scratch("foreign");
        std::fs::create_dir_all(root.join("images")).unwrap();
        std::fs::write(root.join("images/holiday.jpg"), b"someone's photo").unwrap();
        let e = Collection::open(&root, std::time::Duration::ZERO).unwrap_err();
        assert!(e.to_string().contains("no collection's data.yaml"), "{e}");
        std::fs::write(root.join("data.yaml"), "train: images\nval: images\nnames: [a]\n").unwrap();
        assert!(Collection::open(&root, std::time::Duration::ZERO)
            .unwrap_err()
            .to_string()
            .contains("not a vigil collection"));
        std::fs::write(root.join("data.yaml"), "vigil_dataset: 1\nvigil_split: {val: 0.1, test: 0.1}\nnames: [a]\n")
            .unwrap();
        assert!(Collection::open(&root, std::time::Duration::ZERO).unwrap_err().to_string().contains("data set's"));
        assert!(root.join("images/holiday.jpg").exists(), "nothing deleted");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
