//! What a device does with a bundle it receives, after [`DeployBundle`]'s own checks: the
//! version rule, which cameras it is for, the versioned store, the model's load and test
//! vector, and the cameras' settings; and what it does for a rollback. The daemon then swaps
//! the model in. Versions are kept in the [`Store`].

use std::cmp::Ordering;
use std::sync::Arc;

use super::bundle::MODEL_FILE;
use super::store::Store;
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
        model: Arc<Model>,
        cameras: Vec<String>,
    },
}

/// Runs every check; on success the model is unpacked into the store, tested, and recorded
/// as the one in service.
pub fn receive(
    bytes: &[u8],
    settings: &DeploySettings,
    device: &str,
    serving: &[ServingCamera],
) -> Result<Outcome, DeployError> {
    let bundle = DeployBundle::open(bytes, &settings.trusted_keys, settings.max_bundle_bytes)?;
    bundle.check_target(device, &settings.groups)?;
    let (name, version) = (bundle.header.name.clone(), bundle.header.version.clone());
    let cameras = serving_model(serving, &name)?;
    // Cameras configured with different versions of one model: the newest counts.
    let newest = cameras
        .iter()
        .map(|c| &c.model)
        .max_by(|a, b| compare_versions(&a.manifest.version, &b.manifest.version))
        .expect("at least one camera")
        .clone();
    let current = newest.manifest.version.clone();
    let store = Store::new(&settings.store);
    if store.withdrawn(&name)?.contains(&version) {
        return Err(DeployError::Withdrawn { name, version });
    }
    let onnx_sha = bundle.header.files.iter().find(|f| f.name == MODEL_FILE).map(|f| f.sha256.clone());
    match compare_versions(&version, &current) {
        Ordering::Less => return Err(DeployError::Older { name, version, current }),
        Ordering::Equal if onnx_sha.as_deref() == Some(newest.sha256.as_str()) => {
            let names = cameras.iter().map(|c| c.camera.clone()).collect();
            return Ok(Outcome::AlreadyServing { model: newest, cameras: names });
        }
        Ordering::Equal => return Err(DeployError::SameVersion { name, version, serving: newest.sha256.clone() }),
        Ordering::Greater => {}
    }
    let dir = store.version_dir(&name, &version);
    let _ = std::fs::remove_dir_all(&dir); // what a failed attempt may have left
    let checked = bundle
        .unpack(&dir)
        .and_then(|manifest| bundle.load_and_test(&manifest))
        .and_then(|(model, diff)| check_labels(&cameras, &model).map(|_| (model, diff)));
    let (model, worst_diff) = match checked {
        Ok(t) => t,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
    };
    store.put_in_service(&name, &version)?;
    Ok(Outcome::Accepted {
        model: Arc::new(model),
        cameras: cameras.iter().map(|c| c.camera.clone()).collect(),
        previous: current,
        worst_diff,
    })
}

/// A rollback done: the cameras now serving `model`, and the version they left.
#[derive(Debug)]
pub struct RolledBack {
    pub model: Arc<Model>,
    pub cameras: Vec<String>,
    pub from: String,
}

/// Returns the cameras serving `name` (or the only model name served here, when `name` is
/// empty) to the version in service before the current one, from the store. The version
/// left is withdrawn: its bundle is refused from then on.
pub fn rollback(name: &str, settings: &DeploySettings, serving: &[ServingCamera]) -> Result<RolledBack, DeployError> {
    let name = match name {
        "" => {
            let mut names: Vec<&str> = serving.iter().map(|c| c.model.manifest.name.as_str()).collect();
            names.sort();
            names.dedup();
            match names[..] {
                [one] => one.to_string(),
                _ => return Err(DeployError::RollbackWhich { names: names.join(", ") }),
            }
        }
        name => name.to_string(),
    };
    let cameras = serving_model(serving, &name)?;
    let from = cameras[0].model.manifest.version.clone();
    let store = Store::new(&settings.store);
    let Some(to) = store.rollback_target(&name, &from)? else {
        return Err(DeployError::NothingToRollBack { name, version: from });
    };
    let Some(manifest) = store.manifest(&name, &to) else {
        return Err(DeployError::NothingToRollBack { name, version: from });
    };
    let model = Model::load(&manifest)?;
    check_labels(&cameras, &model)?;
    store.roll_back(&name, &from, &to)?;
    Ok(RolledBack { model: Arc::new(model), cameras: cameras.iter().map(|c| c.camera.clone()).collect(), from })
}

/// The cameras serving a model named `name`; at least one, or the deploy is refused.
fn serving_model<'a>(serving: &'a [ServingCamera], name: &str) -> Result<Vec<&'a ServingCamera>, DeployError> {
    let cameras: Vec<&ServingCamera> = serving.iter().filter(|c| c.model.manifest.name == name).collect();
    if cameras.is_empty() {
        return Err(DeployError::NoCamera { name: name.to_string() });
    }
    Ok(cameras)
}

/// Every label a camera's configuration names must exist in the model it is to serve.
fn check_labels(cameras: &[&ServingCamera], model: &Model) -> Result<(), DeployError> {
    for c in cameras {
        if let Some(missing) = c.labels.iter().find(|l| !model.manifest.labels.contains(l)) {
            return Err(DeployError::CameraSettings {
                camera: c.camera.clone(),
                reason: format!(
                    "its configuration names label \"{missing}\", which {} {} does not have",
                    model.manifest.name, model.manifest.version
                ),
            });
        }
    }
    Ok(())
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
