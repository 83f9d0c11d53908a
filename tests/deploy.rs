//! Deploy bundles with the real bundled BlazeFace model: made by `vigil bundle`, verified
//! by `vigil check-bundle` as a device would, and each kind of bad bundle refused with its
//! reason. (The daemon's side — receiving bundles over MQTT and swapping models — is not
//! built yet; see docs/deploy.md.)

mod common;

use std::path::PathBuf;

use common::{root, scratch, vigil};
use ed25519_dalek::SigningKey;
use vigil::deploy::bundle::{self, Header};
use vigil::deploy::{DeployBundle, DeployError, Target};

fn model() -> PathBuf {
    root().join("models/blazeface.toml")
}

/// A good bundle, its key, and the key's public half.
fn good() -> (Vec<u8>, SigningKey) {
    let key = SigningKey::from_bytes(&[7u8; 32]);
    let target = Target { devices: vec!["garage".into()], groups: vec!["yard".into()] };
    (bundle::build(&model(), &key, target, 1e-4).unwrap(), key)
}

/// Splits a bundle into its header and files, lets `edit` change them, and signs the result
/// with `key` (digests recomputed): a bundle a holder of `key` could really make.
fn resigned(bytes: &[u8], key: &SigningKey, edit: impl FnOnce(&mut Header, &mut Vec<(String, Vec<u8>)>)) -> Vec<u8> {
    let len = u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
    let mut header: Header = serde_json::from_slice(&bytes[12..12 + len]).unwrap();
    let mut at = 12 + len + 96;
    let mut files = Vec::new();
    for f in &header.files {
        files.push((f.name.clone(), bytes[at..at + f.size as usize].to_vec()));
        at += f.size as usize;
    }
    edit(&mut header, &mut files);
    header.files = files
        .iter()
        .map(|(name, data)| bundle::FileEntry {
            name: name.clone(),
            size: data.len() as u64,
            sha256: vigil::model::sha256_hex(data),
        })
        .collect();
    bundle::assemble(&header, key, &files)
}

fn open(bytes: &[u8], key: &SigningKey) -> Result<DeployBundle, DeployError> {
    DeployBundle::open(bytes, &[key.verifying_key()], 64 << 20)
}

#[test]
fn keygen_bundle_and_check_through_the_cli() {
    let dir = scratch("deploy-cli");
    let key = dir.join("deploy.key");
    let (code, out, err) = vigil(&["keygen", "--out", key.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("public key:"), "{out}");
    let pubkey = dir.join("deploy.key.pub");
    let file = dir.join("blazeface.bundle");
    let model = model();
    let args = ["bundle", "--model", model.to_str().unwrap(), "--key", key.to_str().unwrap()];
    let (code, out, err) = vigil(&[&args[..], &["--out", file.to_str().unwrap(), "--device", "garage"]].concat());
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("devices [garage]"), "{out}");
    let check = |extra: &[&str]| {
        let base = ["check-bundle", "--bundle", file.to_str().unwrap(), "--trust", pubkey.to_str().unwrap()];
        vigil(&[&base[..], extra].concat())
    };
    let (code, out, err) = check(&["--device", "garage"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("accepted: blazeface"), "{out}");
    let (code, _, err) = check(&["--device", "porch", "--group", "front"]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("not for device porch"), "{err}");
    // A key made separately is not trusted.
    let other = dir.join("other.key");
    assert_eq!(vigil(&["keygen", "--out", other.to_str().unwrap()]).0, 0);
    let base = ["check-bundle", "--bundle", file.to_str().unwrap(), "--trust"];
    let (code, _, err) = vigil(&[&base[..], &[dir.join("other.key.pub").to_str().unwrap()]].concat());
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("not trusted"), "{err}");
    // A weak public key (all zeros: small order) is never taken as trusted.
    let weak = dir.join("weak.key.pub");
    std::fs::write(&weak, format!("{}\n", "00".repeat(32))).unwrap();
    let (code, _, err) = vigil(&[&base[..], &[weak.to_str().unwrap()]].concat());
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("weak ed25519 public key"), "{err}");
}

/// `vigil deploy` says what is wrong before it publishes anything.
#[test]
fn deploy_command_refuses_bad_requests_clearly() {
    let dir = scratch("deploy-command-bad");
    let (bytes, _) = good();
    let file = dir.join("blazeface.bundle");
    std::fs::write(&file, &bytes).unwrap();
    let file = file.to_str().unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let broker = format!("mqtt://127.0.0.1:{closed}");

    let (code, _, err) = vigil(&["deploy", "--bundle", file, "--broker", &broker]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("name at least one --device or --group"), "{err}");
    let (code, _, err) = vigil(&["deploy", "--bundle", file, "--device", "garage", "--broker", "http://broker"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--broker http://broker: must start with mqtt:// or mqtts://"), "{err}");
    let (code, _, err) = vigil(&["deploy", "--bundle", file, "--device", "garage", "--broker", "mqtts://broker"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("needs --ca"), "{err}");
    let png = root().join("tests/photos/group.png");
    let (code, _, err) =
        vigil(&["deploy", "--bundle", png.to_str().unwrap(), "--device", "garage", "--broker", &broker]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("is not a vigil deploy bundle"), "{err}");
    // Nothing listens on the port.
    let (code, _, err) = vigil(&["deploy", "--bundle", file, "--device", "garage", "--broker", &broker]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&format!("MQTT broker 127.0.0.1:{closed}")), "{err}");
}

#[test]
fn a_good_bundle_passes_every_check() {
    let dir = scratch("deploy-good");
    let (bytes, key) = good();
    let b = open(&bytes, &key).unwrap();
    assert_eq!((b.header.name.as_str(), b.header.version.as_str()), ("blazeface", "1.0.0"));
    b.check_target("garage", &[]).unwrap();
    b.check_target("porch", &["yard".into()]).unwrap();
    let (model, worst) = b.load_and_test(&b.unpack(&dir.join("unpacked")).unwrap()).unwrap();
    assert_eq!(worst, 0.0, "the same tract on the same input gives the same outputs");
    let original = std::fs::read(root().join("models/blazeface.onnx")).unwrap();
    assert_eq!(model.sha256, vigil::model::sha256_hex(&original));
}

#[test]
fn every_kind_of_bad_bundle_is_refused_with_its_reason() {
    let dir = scratch("deploy-bad");
    let (bytes, key) = good();
    let header_len = u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
    let files_start = 12 + header_len + 96;
    let mut cases: Vec<(&str, Vec<u8>, usize, &str)> = Vec::new();

    // Unsigned: the signature left as zeros.
    let mut unsigned = bytes.clone();
    unsigned[12 + header_len + 32..files_start].fill(0);
    cases.push(("unsigned", unsigned, 64 << 20, "signature does not verify"));
    // Signed by a key the device does not trust.
    let stranger = SigningKey::from_bytes(&[9u8; 32]);
    cases.push(("untrusted", resigned(&bytes, &stranger, |_, _| {}), 64 << 20, "is not trusted here"));
    // Tampered after signing: a byte of the model, a byte of the header.
    let mut model_tampered = bytes.clone();
    model_tampered[files_start + 1000] ^= 0x40;
    cases.push(("model tampered", model_tampered, 64 << 20, "model.onnx: sha256"));
    let mut header_tampered = bytes.clone();
    let at = 12 + String::from_utf8_lossy(&bytes[12..12 + header_len]).find("garage").unwrap();
    header_tampered[at] = b'G';
    cases.push(("header tampered", header_tampered, 64 << 20, "signature does not verify"));
    // Truncated in transit.
    cases.push(("truncated", bytes[..bytes.len() - 500].to_vec(), 64 << 20, "truncated"));
    // Not a bundle at all.
    let png = std::fs::read(root().join("tests/photos/chelsea.png")).unwrap();
    cases.push(("a PNG", png, 64 << 20, "not a vigil deploy bundle"));
    // Too large for the device's limit.
    cases.push(("too large", bytes.clone(), 100_000, "above the limit of 100000"));
    // Signed by the trusted key, but the model is not ONNX.
    let not_onnx = resigned(&bytes, &key, |_, files| files[0].1 = b"these bytes are not a protobuf".to_vec());
    cases.push(("not ONNX", not_onnx, 64 << 20, "is not a usable ONNX model"));
    // A manifest that disagrees with the graph.
    let wrong_size = resigned(&bytes, &key, |_, files| {
        let m = String::from_utf8(files[1].1.clone()).unwrap().replace("width = 128", "width = 160");
        files[1].1 = m.into_bytes();
    });
    cases.push(("manifest vs graph", wrong_size, 64 << 20, "input.width = 160"));
    // A test vector the model does not reproduce.
    let wrong_vector = resigned(&bytes, &key, |_, files| {
        let out = files.iter_mut().find(|(n, _)| n == "test/output-0.npy").unwrap();
        let (shape, mut data) = vigil::npy::decode_f32(&out.1, "x").unwrap();
        data[0] += 1.0;
        out.1 = vigil::npy::encode_f32(&shape, &data);
    });
    cases.push(("test vector", wrong_vector, 64 << 20, "differs from the expected output"));
    // NaN in the expected output: `f32::max` would have ignored it and passed the bundle.
    let nan_vector = resigned(&bytes, &key, |_, files| {
        let out = files.iter_mut().find(|(n, _)| n == "test/output-0.npy").unwrap();
        let (shape, mut data) = vigil::npy::decode_f32(&out.1, "x").unwrap();
        data[3] = f32::NAN;
        out.1 = vigil::npy::encode_f32(&shape, &data);
    });
    cases.push(("NaN in the test vector", nan_vector, 64 << 20, "differs from the expected output by NaN"));
    // A name or version that would leave the model store, or disagree with the manifest.
    let escaping = resigned(&bytes, &key, |header, _| header.version = "../../etc".into());
    cases.push(("path in version", escaping, 64 << 20, "model version \"../../etc\" is not"));
    let renamed = resigned(&bytes, &key, |header, _| header.name = "not-blazeface".into());
    cases.push((
        "header vs manifest",
        renamed,
        64 << 20,
        "its manifest is for blazeface 1.0.0, its header for not-blazeface",
    ));

    for (what, bad, max, expected) in cases {
        let result = DeployBundle::open(&bad, &[key.verifying_key()], max).and_then(|b| {
            let manifest = b.unpack(&dir.join(what.replace(' ', "-")))?;
            b.load_and_test(&manifest)
        });
        let message = match result {
            Ok(_) => panic!("{what}: accepted"),
            Err(e) => e.to_string(),
        };
        assert!(message.contains(expected), "{what}: {message}");
    }
    // Meant for another device.
    let b = open(&bytes, &key).unwrap();
    let e = b.check_target("porch", &["front".into()]).unwrap_err().to_string();
    assert!(e.contains("devices [garage], groups [yard]") && e.contains("not for device porch"), "{e}");
}
