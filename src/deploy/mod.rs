//! Deploying models to devices: signing keys ([`keys`]) and the signed, self-testing deploy
//! bundle ([`bundle`]), whose format is docs/deploy.md.
//!
//! A device accepts a bundle only after every check here has passed: size, format, a
//! trusted ed25519 key, the signature, each file's sha256, the target, the model loading in
//! tract with its manifest, and its outputs on the bundled test vector.

pub mod bundle;
pub mod device;
pub mod keys;
pub mod remote;
pub mod store;

pub use bundle::{DeployBundle, Target};

use std::path::PathBuf;

/// Why a bundle was refused; each names what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error(
        "bundle is {size} bytes, above the limit of {max} (deploy.max_bundle_bytes, at most mqtt.max_packet_size \
             − 64 KiB: raise both on the device to take larger models)"
    )]
    TooLarge { size: usize, max: usize },
    #[error("not a vigil deploy bundle: {0}")]
    NotABundle(String),
    #[error("bundle is truncated: {0}")]
    Truncated(String),
    #[error("bundle is signed by key {key}, which is not trusted here")]
    UntrustedKey { key: String },
    #[error("bundle signature does not verify: it was not signed by key {key}, or was changed after signing")]
    BadSignature { key: String },
    #[error("bundle file {file}: sha256 {actual} does not match the signed {expected}")]
    Digest { file: String, expected: String, actual: String },
    #[error("bundle is for {target}, not for device {device} (groups: {groups})")]
    NotForThisDevice { target: String, device: String, groups: String },
    #[error("no camera here serves a model named {name}")]
    NoCamera { name: String },
    #[error("{name} {version} is older than the serving {current}; replays of older versions are refused")]
    Older { name: String, version: String, current: String },
    #[error("{name} {version} is already serving with a different model (sha256 {serving}); a new model needs a new version")]
    SameVersion { name: String, version: String, serving: String },
    #[error("{name} {version} was rolled back on this device; deploy it again under a new version")]
    Withdrawn { name: String, version: String },
    #[error("{name} {version} has no earlier version in the store to roll back to")]
    NothingToRollBack { name: String, version: String },
    #[error("this device serves several models ({names}): name the one to roll back")]
    RollbackWhich { names: String },
    #[error("camera {camera}: {reason}")]
    CameraSettings { camera: String, reason: String },
    // Not `#[from]`: a source would print its text a second time after this one.
    #[error("bundle model refused: {0}")]
    Model(crate::model::ModelError),
    #[error("bundle test vector: {0}")]
    TestVector(String),
    /// A check that did not finish (a panic in the model runtime, say).
    #[error("{0}")]
    Internal(String),
    #[error("{what} {path}: {error}")]
    Io { what: &'static str, path: PathBuf, error: std::io::Error },
}

impl From<crate::model::ModelError> for DeployError {
    fn from(e: crate::model::ModelError) -> DeployError {
        DeployError::Model(e)
    }
}
