//! The device's versioned model store, under `[deploy] store`:
//!
//! ```text
//! <store>/<name>/<version>/model.onnx, model.toml   every version it has served (none deleted)
//! <store>/<name>/current                            the version in service
//! <store>/<name>/history                            versions put in service, oldest first
//! <store>/<name>/withdrawn                          versions rolled back from
//! ```
//! A deploy pushes its version onto `history`; a rollback pops it, marks it withdrawn (so
//! its retained bundle, delivered again, does not come back) and serves the one below.
//! Each file is replaced whole (written aside, flushed to the disk, renamed, the folder
//! flushed), so a power cut leaves either the old or the new content; a version's folder is
//! complete and flushed before its version is recorded. A file that is absent is empty (a
//! model never deployed); one that cannot be read, or holds a line that is not a version,
//! is an error naming it, and nothing is decided from it: an unreadable `withdrawn` list
//! read as empty would let a rolled-back version be served again.

use std::cmp::Ordering;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use super::bundle::{bundled_manifest, is_store_word, MANIFEST_FILE, MODEL_FILE};
use super::device::compare_versions;
use super::DeployError;
use crate::model::Model;

/// The store's files are read, changed and written back whole; this keeps two writers in
/// one process (the deploy worker and a reload's model loading) from interleaving.
static WRITING: Mutex<()> = Mutex::new(());

/// The largest store list read (a version a line: far below this).
const MAX_LIST_FILE: u64 = 1 << 20;

fn writing() -> MutexGuard<'static, ()> {
    WRITING.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Debug, Clone, PartialEq)]
pub struct Store {
    pub root: PathBuf,
}

impl Store {
    pub fn new(root: &Path) -> Store {
        Store { root: root.to_path_buf() }
    }

    pub fn version_dir(&self, name: &str, version: &str) -> PathBuf {
        self.root.join(name).join(version)
    }

    /// The stored manifest of `name` `version`, if the store has it.
    pub fn manifest(&self, name: &str, version: &str) -> Option<PathBuf> {
        let path = self.version_dir(name, version).join(MANIFEST_FILE);
        path.is_file().then_some(path)
    }

    /// The version in service, if one was recorded.
    pub fn current(&self, name: &str) -> Result<Option<String>, DeployError> {
        Ok(self.lines(name, "current")?.pop())
    }

    /// Versions put in service, oldest first; a store from before `history` existed counts
    /// its current version alone.
    pub fn history(&self, name: &str) -> Result<Vec<String>, DeployError> {
        let history = self.lines(name, "history")?;
        if history.is_empty() {
            return Ok(self.current(name)?.into_iter().collect());
        }
        Ok(history)
    }

    /// Versions rolled back from: never served again.
    pub fn withdrawn(&self, name: &str) -> Result<Vec<String>, DeployError> {
        self.lines(name, "withdrawn")
    }

    /// Records `version` (already in the store) as the one in service.
    pub fn put_in_service(&self, name: &str, version: &str) -> Result<(), DeployError> {
        let _writing = writing();
        let mut history = self.history(name)?;
        if history.last().map(String::as_str) != Some(version) {
            history.push(version.to_string());
        }
        self.write_lines(name, "history", &history)?;
        self.write_lines(name, "current", &[version.to_string()])
    }

    /// The version a rollback from `serving` would return to: the one put in service before
    /// it, skipping any that is no longer in the store.
    pub fn rollback_target(&self, name: &str, serving: &str) -> Result<Option<String>, DeployError> {
        let mut history = self.history(name)?;
        while history.last().map(String::as_str) == Some(serving) {
            history.pop();
        }
        Ok(history.into_iter().rev().find(|v| v != serving && self.manifest(name, v).is_some()))
    }

    /// Records a rollback: `from` leaves the history and is withdrawn, `to` is in service.
    pub fn roll_back(&self, name: &str, from: &str, to: &str) -> Result<(), DeployError> {
        let _writing = writing();
        let mut history = self.history(name)?;
        while let Some(last) = history.last() {
            if last == to {
                break;
            }
            history.pop();
        }
        if history.is_empty() {
            history.push(to.to_string());
        }
        let mut withdrawn = self.withdrawn(name)?;
        if !withdrawn.iter().any(|v| v == from) {
            withdrawn.push(from.to_string());
        }
        self.write_lines(name, "withdrawn", &withdrawn)?;
        self.write_lines(name, "history", &history)?;
        self.write_lines(name, "current", &[to.to_string()])
    }

    /// Copies a model that came from the configuration (not from a bundle) into the store,
    /// with a self-contained manifest, unless that version is there already; so a rollback
    /// can always return to it.
    pub fn keep(&self, model: &Model, manifest_path: &Path) -> Result<(), DeployError> {
        let (name, version) = (&model.manifest.name, &model.manifest.version);
        let _writing = writing();
        if self.manifest(name, version).is_some() {
            return Ok(());
        }
        let dir = self.version_dir(name, version);
        let staging = self.root.join(name).join(format!(".{version}.partial"));
        let io = |what: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |error| DeployError::Io { what, path, error }
        };
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::create_dir_all(&staging).map_err(io("creating", &staging))?;
        let onnx = staging.join(MODEL_FILE);
        std::fs::copy(&model.manifest.model_path, &onnx).map_err(io("copying", &model.manifest.model_path))?;
        std::fs::File::open(&onnx).and_then(|f| f.sync_all()).map_err(io("writing", &onnx))?;
        let manifest = bundled_manifest(manifest_path, model)?;
        let path = staging.join(MANIFEST_FILE);
        crate::files::write_synced(&path, manifest.as_bytes()).map_err(io("writing", &path))?;
        crate::files::sync_dir(&staging).map_err(io("writing", &staging))?;
        std::fs::rename(&staging, &dir).map_err(io("renaming into", &dir))?;
        crate::files::sync_dir(&self.root.join(name)).map_err(io("writing", &dir))
    }

    /// The model to serve at start-up for a camera configured with `configured`: the
    /// store's current version when it is newer (it was deployed), otherwise the configured
    /// one, which then becomes current. A configured version that was rolled back from is
    /// not served again by a restart.
    pub fn choose_at_start(&self, name: &str, version: &str) -> Result<Choice, DeployError> {
        let withdrawn = self.withdrawn(name)?.iter().any(|v| v == version);
        Ok(match self.current(name)? {
            Some(current)
                if current != version && (withdrawn || compare_versions(version, &current) == Ordering::Less) =>
            {
                match self.manifest(name, &current) {
                    Some(manifest) => Choice::Stored { version: current, manifest },
                    None => Choice::Configured,
                }
            }
            _ => Choice::Configured,
        })
    }

    /// The versions a store file lists, one a line; none when the file is absent.
    fn lines(&self, name: &str, file: &str) -> Result<Vec<String>, DeployError> {
        let path = self.root.join(name).join(file);
        let bad = |error| DeployError::Io { what: "reading the model store's", path: path.clone(), error };
        let text = match crate::files::read_text_capped(&path, MAX_LIST_FILE) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(bad(e)),
        };
        let lines: Vec<String> = text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect();
        if let Some(odd) = lines.iter().find(|l| !is_store_word(l)) {
            let odd = crate::service::logging::shown(odd.as_bytes());
            return Err(bad(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{odd} is not a version"))));
        }
        Ok(lines)
    }

    fn write_lines(&self, name: &str, file: &str, lines: &[String]) -> Result<(), DeployError> {
        let path = self.root.join(name).join(file);
        let io = |error| DeployError::Io { what: "writing", path: path.clone(), error };
        std::fs::create_dir_all(self.root.join(name)).map_err(io)?;
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        crate::files::replace_durably(&path, text.as_bytes()).map_err(io)
    }
}

/// What [`Store::choose_at_start`] picked.
#[derive(Debug, Clone, PartialEq)]
pub enum Choice {
    Configured,
    Stored { version: String, manifest: PathBuf },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(name: &str) -> Store {
        let root = std::env::temp_dir().join(format!("vigil-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        Store::new(&root)
    }

    fn stock(store: &Store, version: &str) {
        let dir = store.version_dir("m", version);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(MANIFEST_FILE), "").unwrap();
    }

    #[test]
    fn rollbacks_walk_the_history_back_and_withdraw() {
        let s = store("history");
        for v in ["1.0.0", "1.1.0", "1.2.0"] {
            stock(&s, v);
            s.put_in_service("m", v).unwrap();
        }
        assert_eq!(s.history("m").unwrap(), ["1.0.0", "1.1.0", "1.2.0"]);
        assert_eq!(s.rollback_target("m", "1.2.0").unwrap().as_deref(), Some("1.1.0"));
        s.roll_back("m", "1.2.0", "1.1.0").unwrap();
        assert_eq!(s.current("m").unwrap().as_deref(), Some("1.1.0"));
        assert_eq!(s.withdrawn("m").unwrap(), ["1.2.0"]);
        s.roll_back("m", "1.1.0", "1.0.0").unwrap();
        assert_eq!(s.history("m").unwrap(), ["1.0.0"]);
        assert_eq!(s.rollback_target("m", "1.0.0").unwrap(), None, "nothing below the first version");
        // A version missing from the store is skipped.
        stock(&s, "2.0.0");
        s.put_in_service("m", "2.0.0").unwrap();
        std::fs::remove_dir_all(s.version_dir("m", "1.0.0")).unwrap();
        assert_eq!(s.rollback_target("m", "2.0.0").unwrap(), None);
        let _ = std::fs::remove_dir_all(&s.root);
    }

    #[test]
    fn start_up_serves_the_newer_of_configured_and_deployed() {
        let s = store("start");
        assert_eq!(s.choose_at_start("m", "1.0.0").unwrap(), Choice::Configured, "empty store");
        for v in ["1.0.0", "1.1.0"] {
            stock(&s, v);
            s.put_in_service("m", v).unwrap();
        }
        let stored = Choice::Stored { version: "1.1.0".into(), manifest: s.manifest("m", "1.1.0").unwrap() };
        assert_eq!(s.choose_at_start("m", "1.0.0").unwrap(), stored, "deployed after the configured one");
        assert_eq!(s.choose_at_start("m", "1.1.0").unwrap(), Choice::Configured);
        assert_eq!(s.choose_at_start("m", "2.0.0").unwrap(), Choice::Configured, "a newer configured version wins");
        // Rolled back from 2.0.0: a restart does not bring the configured 2.0.0 back.
        stock(&s, "2.0.0");
        s.put_in_service("m", "2.0.0").unwrap();
        s.roll_back("m", "2.0.0", "1.1.0").unwrap();
        assert_eq!(s.choose_at_start("m", "2.0.0").unwrap(), stored);
        let _ = std::fs::remove_dir_all(&s.root);
    }

    /// A list that cannot be read (a folder where the file should be; garbage in it) is an
    /// error naming it, never an empty list: the rolled-back 2.0.0 is not served again.
    #[test]
    fn an_unreadable_list_refuses_to_decide() {
        let s = store("unreadable");
        for v in ["1.0.0", "2.0.0"] {
            stock(&s, v);
            s.put_in_service("m", v).unwrap();
        }
        s.roll_back("m", "2.0.0", "1.0.0").unwrap();
        let withdrawn = s.root.join("m/withdrawn");
        std::fs::remove_file(&withdrawn).unwrap();
        std::fs::create_dir(&withdrawn).unwrap();
        let e = s.choose_at_start("m", "2.0.0").unwrap_err().to_string();
        assert!(e.contains(&withdrawn.display().to_string()) && e.contains("a folder, not a file"), "{e}");
        assert!(s.put_in_service("m", "2.0.0").is_ok(), "put_in_service reads history, not withdrawn");
        std::fs::remove_dir(&withdrawn).unwrap();
        std::fs::write(&withdrawn, "2.0.0\n../../etc\n").unwrap();
        let e = s.withdrawn("m").unwrap_err().to_string();
        assert!(e.contains("\"../../etc\" is not a version"), "{e}");
        let _ = std::fs::remove_dir_all(&s.root);
    }
}
