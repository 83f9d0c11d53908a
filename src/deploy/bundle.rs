//! The deploy bundle: one file holding a model, its manifest and a test vector, signed.
//!
//! ```text
//! "VIGILBDL" | u32 LE header length | header (JSON) | public key (32) | signature (64) | files…
//! ```
//! The header names the model, its target devices and groups, the test tolerance, and each
//! file's name, size and sha256, in the order the files follow. The ed25519 signature covers
//! `"vigil-bundle-1" || header`, so it vouches for every byte of every file through the
//! digests. docs/deploy.md describes the format for other tools.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::DeployError;
use crate::model::{hex, max_scaled_diff, sha256_hex as sha256, InputTensor, Model};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

const MAGIC: &[u8; 8] = b"VIGILBDL";
const CONTEXT: &[u8] = b"vigil-bundle-1";
const FORMAT: u32 = 1;
pub const MODEL_FILE: &str = "model.onnx";
pub const MANIFEST_FILE: &str = "model.toml";
pub const TEST_INPUT: &str = "test/input.npy";

/// Which devices a bundle is for: a device takes it if its id is listed or it belongs to a
/// listed group; both lists empty means any device.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Target {
    pub devices: Vec<String>,
    pub groups: Vec<String>,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "devices [{}], groups [{}]", self.devices.join(", "), self.groups.join(", "))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    pub format: u32,
    pub name: String,
    pub version: String,
    /// Unix ms.
    pub created: u64,
    pub target: Target,
    /// Largest `max |a − b| / max(1, |b|)` between the device's outputs and the bundled ones.
    pub tolerance: f32,
    pub files: Vec<FileEntry>,
}

/// A bundle whose signature, key and digests have been checked.
#[derive(Debug, Clone)]
pub struct DeployBundle {
    pub header: Header,
    pub key: VerifyingKey,
    files: BTreeMap<String, Vec<u8>>,
}

/// Makes a signed bundle of the model `manifest_path` names, with a test vector computed by
/// the model's engine (tract unless its manifest says onnxruntime, docs/models.md "Engines")
/// on a fixed synthetic image.
pub fn build(manifest_path: &Path, key: &SigningKey, target: Target, tolerance: f32) -> Result<Vec<u8>, DeployError> {
    let model = Model::load(manifest_path)?;
    let onnx = crate::files::read_capped(&model.manifest.model_path, crate::model::MAX_ONNX_BYTES)
        .map_err(|error| DeployError::Io { what: "reading", path: model.manifest.model_path.clone(), error })?;
    let manifest = bundled_manifest(manifest_path, &model)?;
    let (input, _) = crate::model::preprocess(&test_image(&model), &model.manifest.input);
    let outputs = model.run_raw(&input)?;

    let mut files: Vec<(String, Vec<u8>)> = vec![
        (MODEL_FILE.into(), onnx),
        (MANIFEST_FILE.into(), manifest.into_bytes()),
        (TEST_INPUT.into(), crate::npy::encode_f32(&input.shape, &input.data)),
    ];
    for (i, out) in outputs.iter().enumerate() {
        files.push((output_file(i), crate::npy::encode_f32(&out.shape, &out.data)));
    }
    let header = Header {
        format: FORMAT,
        name: model.manifest.name.clone(),
        version: model.manifest.version.clone(),
        created: crate::source::unix_ms(),
        target,
        tolerance,
        files: files
            .iter()
            .map(|(name, bytes)| FileEntry { name: name.clone(), size: bytes.len() as u64, sha256: sha256(bytes) })
            .collect(),
    };
    Ok(assemble(&header, key, &files))
}

/// The container bytes for a header and its files, signed with `key`.
pub fn assemble(header: &Header, key: &SigningKey, files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let header_json = serde_json::to_vec(header).expect("header serialises");
    let signature = key.sign(&[CONTEXT, &header_json].concat());
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(header_json.len() as u32).to_le_bytes());
    out.extend_from_slice(&header_json);
    out.extend_from_slice(key.verifying_key().as_bytes());
    out.extend_from_slice(&signature.to_bytes());
    for (_, bytes) in files {
        out.extend_from_slice(bytes);
    }
    out
}

fn output_file(i: usize) -> String {
    format!("test/output-{i}.npy")
}

/// The manifest as it travels: `model = "model.onnx"` and the labels written inline, so the
/// bundle needs nothing beside it.
pub(crate) fn bundled_manifest(path: &Path, model: &Model) -> Result<String, DeployError> {
    let text = crate::files::read_text_capped(path, crate::model::manifest::MAX_TEXT_FILE)
        .map_err(|error| DeployError::Io { what: "reading", path: path.to_path_buf(), error })?;
    let mut doc: toml::Table =
        toml::from_str(&text).map_err(|e| DeployError::NotABundle(format!("{}: {e}", path.display())))?;
    doc.insert("model".into(), toml::Value::String(MODEL_FILE.into()));
    // Devices do not train: the training graph stays behind.
    doc.remove("train_model");
    let labels = model.manifest.labels.iter().map(|l| toml::Value::String(l.clone())).collect();
    doc.insert("labels".into(), toml::Value::Array(labels));
    Ok(toml::to_string(&doc).expect("a TOML table serialises"))
}

/// A fixed, busy image at the model's input size: smooth gradients and a checkerboard,
/// so every channel and many values are exercised.
fn test_image(model: &Model) -> image::RgbImage {
    let (w, h) = (model.manifest.input.width as u32, model.manifest.input.height as u32);
    image::RgbImage::from_fn(w, h, |x, y| {
        let check = if (x / 8 + y / 8) % 2 == 0 { 60 } else { 0 };
        image::Rgb([
            ((x * 255) / w.max(1)) as u8 / 2 + check,
            ((y * 255) / h.max(1)) as u8 / 2 + check,
            (((x + y) * 255) / (w + h).max(1)) as u8 / 2 + check,
        ])
    })
}

/// A model name or version that can be a folder name of the store: no separators, no
/// `.` or `..`, nothing hidden.
pub fn is_store_word(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && !s.starts_with('.')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '+'))
}

/// A bundle's header read without checking anything: only for reporting what a bundle
/// claims to be (a refused one on the device, what `vigil deploy` is about to publish),
/// never to act on.
pub fn peek(bytes: &[u8]) -> Option<Header> {
    if bytes.get(..8)? != MAGIC {
        return None;
    }
    let len = u32::from_le_bytes(bytes.get(8..12)?.try_into().ok()?) as usize;
    serde_json::from_slice(bytes.get(12..12usize.checked_add(len)?)?).ok()
}

impl DeployBundle {
    /// Checks size, format, key, signature and digests, in that order.
    pub fn open(bytes: &[u8], trusted: &[VerifyingKey], max_size: usize) -> Result<DeployBundle, DeployError> {
        if bytes.len() > max_size {
            return Err(DeployError::TooLarge { size: bytes.len(), max: max_size });
        }
        if bytes.len() < 12 || &bytes[..8] != MAGIC {
            return Err(DeployError::NotABundle("it does not start with VIGILBDL".into()));
        }
        let header_len = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes")) as usize;
        let header_end = 12usize.saturating_add(header_len);
        let files_start = header_end.saturating_add(96);
        if bytes.len() < files_start {
            return Err(DeployError::Truncated(format!(
                "{} bytes, but the header and signature need {files_start}",
                bytes.len()
            )));
        }
        let header_json = &bytes[12..header_end];
        let key_bytes: [u8; 32] = bytes[header_end..header_end + 32].try_into().expect("32 bytes");
        let signature = Signature::from_bytes(&bytes[header_end + 32..files_start].try_into().expect("64 bytes"));
        let key_hex = hex(&key_bytes);
        let Some(key) = trusted.iter().find(|k| k.as_bytes() == &key_bytes) else {
            return Err(DeployError::UntrustedKey { key: key_hex });
        };
        // Strict: a weak (small-order) key or a small-order R is refused; with plain `verify`
        // a small-order key lets anyone make a signature that verifies.
        if key.is_weak() {
            return Err(DeployError::BadSignature { key: key_hex });
        }
        key.verify_strict(&[CONTEXT, header_json].concat(), &signature)
            .map_err(|_| DeployError::BadSignature { key: key_hex.clone() })?;
        // Signed, so the header is the signer's: a parse failure means an incompatible vigil.
        let header: Header = serde_json::from_slice(header_json)
            .map_err(|e| DeployError::NotABundle(format!("its header is not a format-{FORMAT} header: {e}")))?;
        if header.format != FORMAT {
            return Err(DeployError::NotABundle(format!("format {} (this vigil reads {FORMAT})", header.format)));
        }
        // Both name folders of the device's model store.
        for (what, value) in [("name", &header.name), ("version", &header.version)] {
            if !is_store_word(value) {
                return Err(DeployError::NotABundle(format!(
                    "its model {what} {value:?} is not 1 to 64 letters, digits, '.', '-', '_' or '+' (and not . or ..)"
                )));
            }
        }
        let mut files = BTreeMap::new();
        let mut at = files_start;
        for entry in &header.files {
            let end = at.saturating_add(entry.size as usize);
            let Some(data) = bytes.get(at..end) else {
                return Err(DeployError::Truncated(format!(
                    "file {} needs bytes {at}..{end}, the bundle has {}",
                    entry.name,
                    bytes.len()
                )));
            };
            let actual = sha256(data);
            if actual != entry.sha256 {
                return Err(DeployError::Digest { file: entry.name.clone(), expected: entry.sha256.clone(), actual });
            }
            files.insert(entry.name.clone(), data.to_vec());
            at = end;
        }
        if at != bytes.len() {
            return Err(DeployError::NotABundle(format!("{} bytes follow the last file", bytes.len() - at)));
        }
        for needed in [MODEL_FILE, MANIFEST_FILE, TEST_INPUT] {
            if !files.contains_key(needed) {
                return Err(DeployError::NotABundle(format!("it has no {needed}")));
            }
        }
        Ok(DeployBundle { header, key: *key, files })
    }

    /// Refuses a bundle meant for other devices.
    pub fn check_target(&self, device: &str, groups: &[String]) -> Result<(), DeployError> {
        let t = &self.header.target;
        let any = t.devices.is_empty() && t.groups.is_empty();
        if any || t.devices.iter().any(|d| d == device) || t.groups.iter().any(|g| groups.contains(g)) {
            Ok(())
        } else {
            Err(DeployError::NotForThisDevice {
                target: t.to_string(),
                device: device.to_string(),
                groups: groups.join(", "),
            })
        }
    }

    /// Writes the model and its manifest into `dir` (created) and returns the manifest's path.
    pub fn unpack(&self, dir: &Path) -> Result<PathBuf, DeployError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |error| DeployError::Io { what: "writing", path, error }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        for name in [MODEL_FILE, MANIFEST_FILE] {
            let path = dir.join(name);
            crate::files::write_synced(&path, &self.files[name]).map_err(io(&path))?;
        }
        // Flushed before the store records the version (a power cut must not leave a
        // recorded version with empty files).
        crate::files::sync_dir(dir).map_err(io(dir))?;
        if let Some(parent) = dir.parent() {
            crate::files::sync_dir(parent).map_err(io(parent))?;
        }
        Ok(dir.join(MANIFEST_FILE))
    }

    /// Loads the unpacked model on its engine (the manifest checked against the graph by
    /// tract either way) and runs the test vector: every output within the bundle's
    /// tolerance, or the bundle is refused.
    pub fn load_and_test(&self, manifest: &Path) -> Result<(Model, f32), DeployError> {
        let model = Model::load(manifest)?;
        let (name, version) = (&model.manifest.name, &model.manifest.version);
        if *name != self.header.name || *version != self.header.version {
            return Err(DeployError::NotABundle(format!(
                "its manifest is for {name} {version}, its header for {} {}",
                self.header.name, self.header.version
            )));
        }
        let (shape, data) = crate::npy::decode_f32(&self.files[TEST_INPUT], TEST_INPUT)
            .map_err(|e| DeployError::TestVector(e.to_string()))?;
        let shape: [usize; 4] = shape
            .try_into()
            .map_err(|s: Vec<usize>| DeployError::TestVector(format!("the test input has shape {s:?}, not 4-d")))?;
        let outputs = model.run_raw(&InputTensor { shape, data })?;
        let mut worst = 0.0f32;
        for (i, out) in outputs.iter().enumerate() {
            let name = output_file(i);
            let Some(bytes) = self.files.get(&name) else {
                return Err(DeployError::TestVector(format!("the model has output {i}, the bundle no {name}")));
            };
            let (shape, want) =
                crate::npy::decode_f32(bytes, &name).map_err(|e| DeployError::TestVector(e.to_string()))?;
            if shape != out.shape {
                return Err(DeployError::TestVector(format!(
                    "output {i} \"{}\" has shape {:?}, the expected output {:?}",
                    out.name, out.shape, shape
                )));
            }
            let diff = max_scaled_diff(&out.data, &want);
            // NaN counts as a mismatch.
            if diff.is_nan() || diff > self.header.tolerance {
                return Err(DeployError::TestVector(format!(
                    "output {i} \"{}\" differs from the expected output by {diff:.3e} (tolerance {:.1e})",
                    out.name, self.header.tolerance
                )));
            }
            worst = worst.max(diff);
        }
        Ok((model, worst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A device does not train: the manifest a bundle carries has no `train_model` (the
    /// training graph is not in the bundle), and points at the bundle's own model file.
    #[test]
    fn the_bundled_manifest_leaves_the_training_graph_behind() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/mobilenet-v2.toml");
        assert!(std::fs::read_to_string(&path).unwrap().contains("train_model"));
        let model = Model::load(&path).unwrap();
        let text = bundled_manifest(&path, &model).unwrap();
        assert!(!text.contains("train_model"), "{text}");
        let manifest = crate::model::ModelManifest::from_toml(&text, Path::new("/bundle")).unwrap();
        assert_eq!(manifest.model_path, Path::new("/bundle").join(MODEL_FILE));
        assert_eq!(manifest.train_model_path, None);
        assert_eq!(manifest.labels.len(), 1000);
    }

    /// A bundle "signed" for the small-order identity key: R = identity and s = 0 satisfy
    /// plain ed25519 verification for any message. It must be refused even when such a key
    /// has slipped into the trusted list (the key parser refuses it too: keys.rs).
    #[test]
    fn a_signature_forged_for_a_small_order_key_is_refused() {
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let weak = VerifyingKey::from_bytes(&identity).unwrap();
        let header = Header {
            format: FORMAT,
            name: "m".into(),
            version: "6.6.6".into(),
            created: 0,
            target: Target::default(),
            tolerance: 1.0,
            files: vec![],
        };
        let header_json = serde_json::to_vec(&header).unwrap();
        let mut forged_signature = [0u8; 64];
        forged_signature[..32].copy_from_slice(&identity);
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&(header_json.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&header_json);
        bytes.extend_from_slice(&identity);
        bytes.extend_from_slice(&forged_signature);
        // The forgery does pass the lax check; that is what strict verification is for.
        let signed = [CONTEXT, header_json.as_slice()].concat();
        let sig = Signature::from_bytes(&forged_signature);
        assert!(ed25519_dalek::Verifier::verify(&weak, &signed, &sig).is_ok());
        let e = DeployBundle::open(&bytes, &[weak], 1 << 20).unwrap_err();
        assert!(matches!(e, DeployError::BadSignature { .. }), "{e}");
    }
}
