//! What a device does with a bundle it receives, after [`DeployBundle`]'s own checks: the
//! version rule, which cameras it is for, the versioned store, the model's load and test
//! vector, and the cameras' settings. The daemon then swaps the model in.
//!
//! The store: `<store>/<name>/<version>/{model.onnx, model.toml}` for every accepted version
//! (none are deleted), and `<store>/<name>/current` naming the version in service, which a
//! restart serves again.

use std::cmp::Ordering;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::bundle::MODEL_FILE;
use super::{DeployBundle, DeployError};
use crate::config::DeploySettings;
use crate::model::Model;

/// A camera and what it needs of a model.
#[derive(Debug, Clone)]
pub struct ServingCamera {
    pub camera: String,
    pub model: Arc<Model>,
    /// Labels its configuration names (labels, filters, zones): the model must know them.
    pub labels: Vec<String>,
}

#[derive(Debug)]
pub enum Outcome {
    Accepted {
        model: Arc<Model>,
        cameras: Vec<String>,
        previous: String,
        worst_diff: f32,
    },
    /// The bundle of the model already in service (a retained bundle comes again after
    /// every reconnect): nothing to do.
    AlreadyServing {
        name: String,
        version: String,
    },
}

/// Runs every check; on success the model is unpacked, tested, and recorded as current.
pub fn receive(
    bytes: &[u8],
    settings: &DeploySettings,
    device: &str,
    serving: &[ServingCamera],
) -> Result<Outcome, DeployError> {
    let bundle = DeployBundle::open(bytes, &settings.trusted_keys, settings.max_bundle_bytes)?;
    bundle.check_target(device, &settings.groups)?;
    let (name, version) = (bundle.header.name.clone(), bundle.header.version.clone());
    let cameras: Vec<&ServingCamera> = serving.iter().filter(|c| c.model.manifest.name == name).collect();
    let Some(first) = cameras.first() else {
        return Err(DeployError::NoCamera { name });
    };
    let current = first.model.manifest.version.clone();
    let onnx_sha = bundle.header.files.iter().find(|f| f.name == MODEL_FILE).map(|f| f.sha256.clone());
    match compare_versions(&version, &current) {
        Ordering::Less => return Err(DeployError::Older { name, version, current }),
        Ordering::Equal if onnx_sha.as_deref() == Some(first.model.sha256.as_str()) => {
            return Ok(Outcome::AlreadyServing { name, version });
        }
        Ordering::Equal => return Err(DeployError::SameVersion { name, version, serving: first.model.sha256.clone() }),
        Ordering::Greater => {}
    }
    let dir = settings.store.join(&name).join(&version);
    let _ = std::fs::remove_dir_all(&dir); // what a failed attempt may have left
    let tested = bundle.unpack(&dir).and_then(|manifest| bundle.load_and_test(&manifest));
    let (model, worst_diff) = match tested {
        Ok(t) => t,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
    };
    for c in &cameras {
        if let Some(missing) = c.labels.iter().find(|l| !model.manifest.labels.contains(l)) {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(DeployError::CameraSettings {
                camera: c.camera.clone(),
                reason: format!("its configuration names label \"{missing}\", which {name} {version} does not have"),
            });
        }
    }
    write_current(&settings.store, &name, &version)?;
    Ok(Outcome::Accepted {
        model: Arc::new(model),
        cameras: cameras.iter().map(|c| c.camera.clone()).collect(),
        previous: current,
        worst_diff,
    })
}

/// The stored manifest of the version in service for `name`, if one was deployed.
pub fn stored(store: &Path, name: &str) -> Option<PathBuf> {
    let version = std::fs::read_to_string(store.join(name).join("current")).ok()?;
    let manifest = store.join(name).join(version.trim()).join(super::bundle::MANIFEST_FILE);
    manifest.is_file().then_some(manifest)
}

fn write_current(store: &Path, name: &str, version: &str) -> Result<(), DeployError> {
    let path = store.join(name).join("current");
    let tmp = store.join(name).join("current.tmp");
    let io = |error| DeployError::Io { what: "writing", path: path.clone(), error };
    std::fs::write(&tmp, format!("{version}\n")).map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(io)
}

/// Dotted versions compared part by part, numerically where both parts are numbers.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let parts = |s: &str| s.split(['.', '-', '+']).map(str::to_string).collect::<Vec<_>>();
    let (pa, pb) = (parts(a), parts(b));
    for (x, y) in pa.iter().zip(&pb) {
        let o = match (x.parse::<u64>(), y.parse::<u64>()) {
            (Ok(x), Ok(y)) => x.cmp(&y),
            _ => x.cmp(y),
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    pa.len().cmp(&pb.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_numerically() {
        assert_eq!(compare_versions("1.10.0", "1.9.3"), Ordering::Greater);
        assert_eq!(compare_versions("1.0.0", "1.0.0"), Ordering::Equal);
        assert_eq!(compare_versions("2", "10"), Ordering::Less);
        assert_eq!(compare_versions("1.0.0", "1.0"), Ordering::Greater);
    }
}
