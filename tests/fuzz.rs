//! Fuzzing on the stable toolchain (there is no nightly here, so no libFuzzer): every parser
//! that reads input from the network, a file or the environment gets seeds (committed under
//! tests/fuzz/<target>/, plus a few built here) and random mutations of them — bit flips,
//! random bytes, dangerous tokens (`nan`, `1e309`, `{`, NUL, non-UTF-8, …), deleted,
//! duplicated and spliced ranges — and must return, never panic. Inputs a parser accepts
//! join the pool, so mutations go deeper than the seeds. A panicking input is written to
//! target/fuzz-findings/<target>-<n>.bin and fails the test.
//!
//! CI runs a short pass (`VIGIL_FUZZ_ITERS`, default 2000 per target). The long run —
//! over 10^6 inputs in all — is docs/development.md's
//! `VIGIL_FUZZ_ITERS=150000 cargo test --release --test fuzz -- --nocapture`;
//! `VIGIL_FUZZ_SEED` changes the random sequence.

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::Instant;

use common::root;
use ed25519_dalek::SigningKey;
use vigil::config::Config;
use vigil::deploy::bundle::{self, FileEntry, Header};
use vigil::deploy::{DeployBundle, Target};
use vigil::model::{Model, ModelManifest};
use vigil::mqtt::payload::{DeployState, RollbackRequest};
use vigil::mqtt::{CommandKind, Topics};

/// xorshift64*: small, fast, and the same sequence for the same seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Bytes that break parsers more often than random ones do.
const TOKENS: &[&[u8]] = &[
    b"nan",
    b"inf",
    b"-inf",
    b"1e309",
    b"1e-300",
    b"-1",
    b"0",
    b"18446744073709551616",
    b"4294967296",
    b"\"",
    b"'",
    b"{",
    b"}",
    b"[",
    b"]",
    b"[[",
    b"\n",
    b"\0",
    b"\xff\xfe",
    b"\xc3\xa9",
    b"=",
    b",",
    b":",
    b"..",
    b"/",
    b"+",
    b"#",
    b"true",
    b"null",
    b"\\u0000",
    b"\x7f\xff\xff\xff",
    b"\xff\xff\xff\xff",
];

const MAX_INPUT: usize = 1 << 20;

fn mutate(rng: &mut Rng, input: &[u8], pool: &[Vec<u8>]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = out.len();
        let at = rng.below(len + 1);
        match rng.below(9) {
            0 if len > 0 => {
                let i = rng.below(len);
                out[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                out[i] = rng.next() as u8;
            }
            2 => {
                let token = TOKENS[rng.below(TOKENS.len())];
                out.splice(at..at, token.iter().copied());
            }
            3 if len > 0 => {
                let end = (at + 1 + rng.below(16)).min(len);
                out.drain(at.min(len - 1)..end);
            }
            4 if len > 0 => {
                let start = rng.below(len);
                let end = (start + 1 + rng.below(64)).min(len);
                let piece = out[start..end].to_vec();
                out.splice(at..at, piece);
            }
            5 => {
                let other = &pool[rng.below(pool.len())];
                let from = rng.below(other.len() + 1);
                out.truncate(at);
                out.extend_from_slice(&other[from..]);
            }
            6 => out.truncate(at),
            7 if len > 0 => {
                let end = (at + 1 + rng.below(8)).min(len);
                let token = TOKENS[rng.below(TOKENS.len())];
                out.splice(at.min(len - 1)..end, token.iter().copied());
            }
            _ => {
                // A run of one byte: long lines, deep nesting.
                let byte = *out.get(rng.below(len.max(1))).unwrap_or(&b'[');
                out.splice(at..at, std::iter::repeat_n(byte, 1 + rng.below(256)));
            }
        }
    }
    out.truncate(MAX_INPUT);
    out
}

fn iterations() -> usize {
    std::env::var("VIGIL_FUZZ_ITERS").ok().and_then(|v| v.parse().ok()).unwrap_or(2000)
}

/// Runs `target` on the seeds and then on `iterations` mutations; `target` returns whether
/// it accepted the input (accepted inputs join the pool). Returns the number of inputs run.
fn fuzz(name: &str, seeds: Vec<Vec<u8>>, iterations: usize, target: impl Fn(&[u8]) -> bool) -> usize {
    let seed = std::env::var("VIGIL_FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x5eed_u64);
    let mut rng =
        Rng(seed ^ name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3)));
    let mut pool = committed_seeds(name);
    pool.extend(seeds);
    assert!(!pool.is_empty(), "{name}: no seeds");
    let mut findings = Vec::new();
    let started = Instant::now();
    let mut run = 0;
    let inputs = pool.clone();
    for i in 0..inputs.len() + iterations {
        let input = match inputs.get(i) {
            Some(seed) => seed.clone(),
            None => {
                let parent = pool[rng.below(pool.len())].clone();
                mutate(&mut rng, &parent, &pool)
            }
        };
        run += 1;
        match catch_unwind(AssertUnwindSafe(|| target(&input))) {
            Ok(true) if i >= inputs.len() && pool.len() < 512 => pool.push(input),
            Ok(_) => {}
            Err(_) => {
                let dir = root().join("target/fuzz-findings");
                std::fs::create_dir_all(&dir).unwrap();
                let path = dir.join(format!("{name}-{}.bin", findings.len()));
                std::fs::write(&path, &input).unwrap();
                findings.push(path);
            }
        }
    }
    eprintln!("fuzz {name}: {run} inputs in {:.1} s, pool {}", started.elapsed().as_secs_f64(), pool.len());
    assert!(findings.is_empty(), "{name}: inputs that panicked: {findings:?}");
    run
}

/// tests/fuzz/<name>/*: the committed corpus.
fn committed_seeds(name: &str) -> Vec<Vec<u8>> {
    let dir = root().join("tests/fuzz").join(name);
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(&dir).map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect()).unwrap_or_default();
    files.sort();
    files.iter().map(|f| std::fs::read(f).unwrap()).collect()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn fuzz_model_manifests() {
    let seeds = ["blazeface.toml", "mobilenet-v2.toml", "nanodet-m.toml"]
        .iter()
        .map(|m| std::fs::read(root().join("models").join(m)).unwrap())
        .collect();
    let dir = root().join("models");
    fuzz("manifest", seeds, iterations(), |bytes| ModelManifest::from_toml(&text(bytes), &dir).is_ok());
}

#[test]
fn fuzz_daemon_configs() {
    let seeds = vec![std::fs::read(root().join("scripts/demo.toml")).unwrap()];
    let dir = root().join("scripts");
    fuzz("config", seeds, iterations(), |bytes| Config::from_toml(&text(bytes), &dir, &[]).is_ok());
}

/// Environment overrides: each line `KEY=VALUE` of the input is one variable, over the demo
/// configuration.
#[test]
fn fuzz_config_environment() {
    let base = std::fs::read_to_string(root().join("scripts/demo.toml")).unwrap();
    let dir = root().join("scripts");
    let seeds = vec![
        b"VIGIL__MQTT__URL=mqtt://127.0.0.1:1884\nVIGIL__CAMERAS__PHOTOS__FPS=2.5".to_vec(),
        b"VIGIL__DEVICE_ID=porch\nVIGIL__MQTT__QOS=0\nVIGIL__SERVICE__DRAIN_TIMEOUT_S=3".to_vec(),
    ];
    fuzz("environment", seeds, iterations(), |bytes| {
        let env: Vec<(String, String)> = text(bytes)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_toml(&base, &dir, &env).is_ok()
    });
}

/// The header and files of the small bundle the bundle targets start from.
fn small_bundle() -> (Header, Vec<(String, Vec<u8>)>) {
    let files: Vec<(String, Vec<u8>)> = vec![
        (bundle::MODEL_FILE.into(), b"\x08\x07onnx".to_vec()),
        (bundle::MANIFEST_FILE.into(), b"name = \"m\"\nversion = \"1.0.0\"\n".to_vec()),
        (bundle::TEST_INPUT.into(), vigil::npy::encode_f32(&[1, 3, 2, 2], &[0.5; 12])),
        ("test/output-0.npy".into(), vigil::npy::encode_f32(&[1, 2], &[0.25, 0.75])),
    ];
    let header = Header {
        format: 1,
        name: "m".into(),
        version: "1.0.0".into(),
        created: 1,
        target: Target { devices: vec!["garage".into()], groups: vec!["yard".into()] },
        tolerance: 1e-4,
        files: files
            .iter()
            .map(|(n, b)| FileEntry { name: n.clone(), size: b.len() as u64, sha256: vigil::model::sha256_hex(b) })
            .collect(),
    };
    (header, files)
}

/// Whole bundles as a device receives them: the container, key, signature and digests.
#[test]
fn fuzz_bundle_container() {
    let key = SigningKey::from_bytes(&[7u8; 32]);
    let (header, files) = small_bundle();
    let trusted = [key.verifying_key()];
    let seeds = vec![bundle::assemble(&header, &key, &files)];
    fuzz("bundle", seeds, iterations(), |bytes| {
        let _ = bundle::peek(bytes);
        match DeployBundle::open(bytes, &trusted, 1 << 20) {
            Ok(b) => b.check_target("garage", &["yard".into()]).is_ok(),
            Err(_) => false,
        }
    });
}

/// Signed headers: the input is the header JSON, signed by the trusted key, so the checks
/// behind the signature (format, names, the file table, digests) are reached.
#[test]
fn fuzz_bundle_signed_header() {
    let key = SigningKey::from_bytes(&[7u8; 32]);
    let (header, files) = small_bundle();
    let trusted = [key.verifying_key()];
    let seeds = vec![serde_json::to_vec(&header).unwrap()];
    fuzz("bundle-header", seeds, iterations(), |json| {
        let signature = ed25519_dalek::Signer::sign(&key, &[b"vigil-bundle-1".as_slice(), json].concat());
        let mut bytes = b"VIGILBDL".to_vec();
        bytes.extend_from_slice(&(json.len() as u32).to_le_bytes());
        bytes.extend_from_slice(json);
        bytes.extend_from_slice(key.verifying_key().as_bytes());
        bytes.extend_from_slice(&signature.to_bytes());
        for (_, data) in &files {
            bytes.extend_from_slice(data);
        }
        DeployBundle::open(&bytes, &trusted, 1 << 20).is_ok()
    });
}

/// `.npy` arrays: a bundle's test vector.
#[test]
fn fuzz_npy_test_vectors() {
    let seeds = vec![
        vigil::npy::encode_f32(&[1, 3, 2, 2], &[0.5; 12]),
        vigil::npy::encode_f32(&[4], &[1.0, -2.0, f32::MAX, 0.0]),
    ];
    fuzz("npy", seeds, iterations(), |bytes| vigil::npy::decode_f32(bytes, "fuzz").is_ok());
}

/// What arrives on the command, rollback and deploy-state topics.
#[test]
fn fuzz_mqtt_payloads() {
    let seeds = vec![
        b"ON".to_vec(),
        b"0.55".to_vec(),
        br#"{"model":"blazeface","id":"7-1f"}"#.to_vec(),
        b"blazeface".to_vec(),
        br#"{"v":1,"device":"garage","groups":["yard"],"ts":1,"action":"rollback","result":"rolled_back","name":"m","version":"1.0.0","serving":{"name":"m","version":"1.0.0","sha256":"ab"},"previous":"1.1.0","cameras":["door"]}"#.to_vec(),
        b"vigil/garage/front/detect/set".to_vec(),
    ];
    let topics = Topics { prefix: "vigil/garage".into() };
    fuzz("payload", seeds, iterations() * 4, |bytes| {
        let mut accepted = false;
        for setting in ["detect", "threshold", "zoom"] {
            accepted |= !matches!(CommandKind::parse(setting, bytes), CommandKind::Invalid { .. });
        }
        accepted |= matches!(CommandKind::rollback(bytes), CommandKind::Rollback { .. });
        accepted |= RollbackRequest::parse(bytes).is_ok();
        accepted |= serde_json::from_slice::<DeployState>(bytes).is_ok();
        accepted |= topics.parse_command(&text(bytes)).is_some();
        accepted
    });
}

/// What an HTTP MJPEG camera sends (src/source/mjpeg.rs): its URL as configured, its
/// response head, and its multipart body, part after part (each part's JPEG decoded).
#[test]
fn fuzz_mjpeg_camera() {
    use std::io::Read;
    use vigil::source::mjpeg::{parse_head, Auth, Body, Head, Parts};
    use vigil::source::url::{CameraUrl, Scheme};
    let urls = [
        "http://admin:p%40ss@cam.lan:8080/video?res=vga",
        "http://[::1]:81/",
        "http://10.0.0.9?action=stream",
        "rtsp://admin:s3cret@192.168.1.64:554/Streaming/Channels/102",
        "rtsp://[fe80::1]/live?channel=1&subtype=1",
    ];
    fuzz("camera-url", urls.iter().map(|u| u.as_bytes().to_vec()).collect(), iterations(), |bytes| {
        std::str::from_utf8(bytes).is_ok_and(|text| {
            [Scheme::Http, Scheme::Rtsp].into_iter().any(|scheme| {
                CameraUrl::parse(text, scheme)
                    .is_ok_and(|url| !url.to_string().is_empty() && !url.without_credentials().is_empty())
            })
        })
    });
    let heads = [
        "HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=\"--frame\"\r\n\r\n",
        "HTTP/1.0 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: 1234\r\n\r\n",
        "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Digest realm=\"cam\"\r\n\r\n",
        "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Digest qop=\"auth\", realm=\"IP Camera\", nonce=\"4e6a\", stale=\"FALSE\"\r\nWWW-Authenticate: Basic realm=\"IP Camera\"\r\n\r\n",
    ];
    let url = CameraUrl::parse("http://admin:s3cret@cam/ISAPI/Streaming/channels/101/picture", Scheme::Http).unwrap();
    fuzz("mjpeg-head", heads.iter().map(|h| h.as_bytes().to_vec()).collect(), iterations(), |bytes| {
        match parse_head(bytes) {
            // A challenge from a hostile camera: taken and answered, or refused with an error.
            Ok(Head { body: Body::Challenge(challenges), .. }) => {
                let mut auth = Auth::default();
                auth.challenged(&challenges).is_ok() && auth.authorization(&url).is_ok_and(|a| a.is_some())
            }
            head => head.is_ok(),
        }
    });
    let jpeg = {
        let image = image::RgbImage::from_fn(12, 9, |x, y| image::Rgb([(x * 20) as u8, (y * 25) as u8, 128]));
        let mut bytes = std::io::Cursor::new(Vec::new());
        image.write_to(&mut bytes, image::ImageFormat::Jpeg).unwrap();
        bytes.into_inner()
    };
    let mut with_lengths = format!("--frame\r\nContent-Length: {}\r\n\r\n", jpeg.len()).into_bytes();
    with_lengths.extend(&jpeg);
    with_lengths.extend(b"\r\n--frame\r\nContent-Type: image/jpeg\r\n\r\n");
    with_lengths.extend(&jpeg);
    with_lengths.extend(b"\r\n--frame--\r\n");
    fuzz("mjpeg-parts", vec![with_lengths], iterations(), |bytes| {
        let mut parts = Parts::new(std::io::Cursor::new(bytes.to_vec()), b"frame");
        let mut whole = false;
        for _ in 0..16 {
            match parts.next_part() {
                Ok(part) => whole |= vigil::source::mjpeg::decode(&part).is_ok(),
                Err(_) => break,
            }
        }
        whole
    });
    let chunked = b"1a\r\n--frame\r\nContent-Length: 4\r\n\r\n\r\n4\r\n\xff\xd8\xff\xd9\r\n0\r\n\r\n".to_vec();
    fuzz("mjpeg-chunked", vec![chunked], iterations(), |bytes| {
        let mut decoded = Vec::new();
        let read = vigil::source::mjpeg::Chunked::new(std::io::Cursor::new(bytes.to_vec())).read_to_end(&mut decoded);
        read.is_ok()
    });
}

/// Images, as replayed or given to `vigil infer` (PNG and JPEG).
#[test]
fn fuzz_image_decoding() {
    let small = |format: image::ImageFormat| {
        let image = image::RgbImage::from_fn(12, 9, |x, y| image::Rgb([(x * 20) as u8, (y * 25) as u8, 128]));
        let mut bytes = std::io::Cursor::new(Vec::new());
        image.write_to(&mut bytes, format).unwrap();
        bytes.into_inner()
    };
    let seeds = vec![small(image::ImageFormat::Png), small(image::ImageFormat::Jpeg)];
    fuzz("image", seeds, iterations(), |bytes| vigil::dataset::decode_image(bytes).is_ok());
}

/// A tiny classifier graph: x [1, 3, 8, 8] → GlobalAveragePool → Flatten → y [1, 3].
fn tiny_onnx() -> Vec<u8> {
    tiny_onnx_with_output("y")
}

/// The tiny graph, its output named `output` (a name no node makes panics tract 0.23.9's
/// importer: found by the ONNX target).
fn tiny_onnx_with_output(output: &str) -> Vec<u8> {
    use prost::Message;
    use tract_onnx::pb;
    let tensor = vigil::model::f32_value;
    let node = |op: &str, input: &str, output: &str| pb::NodeProto {
        op_type: op.into(),
        input: vec![input.into()],
        output: vec![output.into()],
        name: format!("{op}_0"),
        ..Default::default()
    };
    let model = pb::ModelProto {
        ir_version: 7,
        opset_import: vec![pb::OperatorSetIdProto { domain: String::new(), version: 13 }],
        graph: Some(pb::GraphProto {
            name: "tiny".into(),
            node: vec![node("GlobalAveragePool", "x", "p"), node("Flatten", "p", "y")],
            input: vec![tensor("x", &[1, 3, 8, 8])],
            output: vec![tensor(output, &[1, 3])],
            ..Default::default()
        }),
        ..Default::default()
    };
    model.encode_to_vec()
}

const TINY_MANIFEST: &str = r#"
name = "tiny"
version = "1"
task = "classify"
model = "tiny.onnx"
labels = ["a", "b", "c"]
[input]
width = 8
height = 8
[decoder]
kind = "classify"
"#;

/// ONNX graphs: the importer and vigil's checks of a graph against its manifest. Loading
/// turns any panic into an error (tract's importer has some on malformed graphs), so the
/// panics' locations are recorded: one in vigil's own code is a finding.
#[test]
fn fuzz_onnx_loading() {
    use std::sync::Mutex;
    static PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let manifest = ModelManifest::from_toml(TINY_MANIFEST, Path::new("/fuzz")).unwrap();
    let good = tiny_onnx();
    Model::from_onnx_bytes(manifest.clone(), Path::new("/fuzz/tiny.toml"), &good).expect("the seed loads");
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if let Some(at) = info.location() {
            PANICS.lock().unwrap_or_else(|e| e.into_inner()).push(format!("{}:{}", at.file(), at.line()));
        }
        default_hook(info);
    }));
    // Loading optimises the graph: slower than the other targets, so fewer inputs.
    fuzz("onnx", vec![good], iterations() / 3, |bytes| {
        Model::from_onnx_bytes(manifest.clone(), Path::new("/fuzz/tiny.toml"), bytes).is_ok()
    });
    let panics = PANICS.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let ours: Vec<&String> = panics.iter().filter(|at| at.starts_with("src/")).collect();
    eprintln!("fuzz onnx: {} panics inside tract, contained", panics.len() - ours.len());
    assert!(ours.is_empty(), "panics in vigil's own code: {ours:?}");
}

/// Event journal segments as a power cut or a failing card leaves them: opening never
/// panics, whatever the file holds.
#[test]
fn fuzz_event_journal() {
    use vigil::mqtt::journal::{EventJournal, JournalEvent};
    let dir = std::env::temp_dir().join(format!("vigil-fuzz-journal-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut journal = EventJournal::open(&dir, 1 << 20).unwrap().journal;
    for seq in 1..=4 {
        let event =
            JournalEvent { seq, topic: "vigil/d/yard/events".into(), payload: format!("{{\"seq\":{seq}}}").into() };
        journal.append(&event).unwrap();
    }
    journal.acknowledge(2).unwrap();
    journal.sync().unwrap();
    drop(journal);
    let segment = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "log"))
        .unwrap();
    let seeds = vec![std::fs::read(&segment).unwrap()];
    fuzz("journal", seeds, iterations() / 4, |bytes| {
        std::fs::write(&segment, bytes).unwrap();
        EventJournal::open(&dir, 1 << 20).map(|o| o.damaged == 0).unwrap_or(false)
    });
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The event journal's record decoder (`decode_records`, what opening reads each segment
/// with), with seeds holding numbers at their limits (tests/fuzz/journal-records: `seq` 0,
/// 2^63, 2^63 + 1 and 2^64 - 1, a reservation of 2^64 - 1, a body length of u32::MAX, a
/// topic length of u16::MAX). It never panics, what it takes lies within the input, and no
/// number it takes is above `MAX_NUMBER` (2^63), so the numbering's `+ 1` cannot overflow.
#[test]
fn fuzz_event_journal_records() {
    use vigil::mqtt::journal::{decode_records, Record, MAX_NUMBER};
    let record = |kind: u8, body: &[u8]| {
        let mut r = vec![0xE5, kind];
        r.extend_from_slice(&(body.len() as u32).to_le_bytes());
        r.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
        r.extend_from_slice(body);
        r
    };
    let mut event = 7u64.to_le_bytes().to_vec();
    event.extend_from_slice(&19u16.to_le_bytes());
    event.extend_from_slice(b"vigil/d/yard/events{\"seq\":7}");
    let segment = [record(b'R', &1000u64.to_le_bytes()), record(b'E', &event), record(b'A', &7u64.to_le_bytes())];
    fuzz("journal-records", vec![segment.concat()], iterations(), |bytes| {
        let decoded = decode_records(bytes);
        assert!(decoded.good_len <= bytes.len() as u64, "{} of {} bytes good", decoded.good_len, bytes.len());
        let offsets: Vec<u64> = decoded.damage.iter().map(|(at, _)| *at).collect();
        assert!(offsets.windows(2).all(|w| w[0] < w[1]), "damage out of order: {offsets:?}");
        assert!(offsets.iter().all(|&at| at < bytes.len() as u64), "damage past the end: {offsets:?}");
        for r in &decoded.records {
            let n = match r {
                Record::Event(e) => e.seq,
                Record::Ack(n) | Record::Reserve(n) => *n,
            };
            assert!(n <= MAX_NUMBER, "a number above 2^63 taken: {r:?}");
        }
        decoded.damage.is_empty() && !decoded.records.is_empty()
    });
}

/// A graph that makes tract's importer panic (an output no node produces) is an error that
/// names the file, not the end of vigil.
#[test]
fn a_graph_that_panics_the_importer_is_refused() {
    let manifest = ModelManifest::from_toml(TINY_MANIFEST, Path::new("/fuzz")).unwrap();
    let bytes = tiny_onnx_with_output("made-by-no-node");
    let Err(e) = Model::from_onnx_bytes(manifest, Path::new("/fuzz/tiny.toml"), &bytes) else {
        panic!("a graph whose output no node makes was accepted");
    };
    let message = e.to_string();
    assert!(message.contains("/fuzz/tiny.onnx is not a usable ONNX model: the ONNX importer failed"), "{message}");
}

/// A YOLO label file's lines and a data.yaml's class names (the YAML parser included).
#[test]
fn fuzz_yolo_labels_and_data_yaml() {
    let labels = vec![
        b"0 0.5 0.5 0.2 0.4\n1 0.1 0.1 0.3 0.1 0.3 0.4 0.1 0.4\n".to_vec(),
        b"2 0.25 0.75 0.5 0.5\n\n0 1 1 0.001 0.001\n".to_vec(),
    ];
    fuzz("yolo-labels", labels, iterations(), |bytes| {
        let (boxes, bad) = vigil::dataset::yolo::parse_labels(&text(bytes), 3);
        for b in &boxes {
            let ok = [b.bbox.x1, b.bbox.y1, b.bbox.x2, b.bbox.y2].iter().all(|v| (0.0..=1.0).contains(v));
            assert!(ok && b.bbox.area() > 0.0 && b.class < 3, "accepted a bad box {b:?}");
        }
        bad.is_empty() && !boxes.is_empty()
    });
    let yaml = vec![
        b"path: .\ntrain: images/train\nval: [images/val]\nnames:\n  0: person\n  1: car\nnc: 2\n".to_vec(),
        b"train: a.txt\nval: b\ntest: c\nnames: [a, b, 'c d']\n".to_vec(),
    ];
    fuzz("yolo-data-yaml", yaml, iterations(), |bytes| vigil::dataset::yolo::class_names_of(&text(bytes)).is_ok());
}

/// A collection's or data set's sidecar (`items/<id>.json`, docs/dataset.md) and its
/// `data.yaml` names: an accepted sidecar passes its own checks again after a round trip
/// through JSON, and names are read or refused, never a panic.
#[test]
fn fuzz_collection_items() {
    let sidecar =
        br#"{"v": 1, "id": "door_20261207-035853-123_01234567", "image": "door_20261207-035853-123_01234567.jpg",
        "sha256": "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", "width": 640, "height": 480,
        "device": "garage", "camera": "door", "captured_at": 1796615933123, "saved_at": 1796615933200,
        "why": ["uncertain", "new_track"], "model": {"name": "nanodet-m", "version": "1.0.0", "sha256": "ab"},
        "prelabel_score": 0.5, "detections": [{"label": "car", "score": 0.42, "box": [10.5, 20, 200, 180.25]}],
        "review": {"status": "unreviewed", "revision": 0, "at": null}, "note": {"by": "another tool"}}"#;
    let id = "door_20261207-035853-123_01234567";
    fuzz("collection-sidecar", vec![sidecar.to_vec()], iterations(), |bytes| {
        match vigil::collect::item::parse_sidecar(bytes, id) {
            Ok(s) => {
                let again = serde_json::to_vec(&s).unwrap();
                let back =
                    vigil::collect::item::parse_sidecar(&again, id).expect("a sidecar it accepted, written back");
                // Other tools' fields are kept as JSON values, whose floats serde_json reads
                // back to the nearest number only.
                let ours = |s: vigil::collect::Sidecar| vigil::collect::Sidecar { other: Default::default(), ..s };
                assert_eq!(ours(back), ours(s.clone()));
                assert!(s.width >= 1 && s.height >= 1 && s.detections.iter().all(|d| d.score.is_finite()));
                true
            }
            Err(_) => false,
        }
    });
    let yaml = vec![
        br#"# A vigil collection
vigil_dataset: 1
train: images
val: images
names:
  - "person"
  - "car \"x\""
"#
        .to_vec(),
        b"vigil_dataset: 1\nvigil_split: {val: 0.15, test: 0.1}\nnames: [a, b]\n".to_vec(),
    ];
    fuzz("collection-data-yaml", yaml, iterations(), |bytes| vigil::collect::store::names_of(&text(bytes)).is_ok());
}

/// COCO instances JSON (the image files are not read: their sizes are taken as given).
#[test]
fn fuzz_coco_instances() {
    let seeds = vec![
        br#"{"images": [{"id": 7, "file_name": "a.png", "width": 100, "height": 50}],
             "categories": [{"id": 3, "name": "car"}, {"id": 1, "name": "person"}],
             "annotations": [{"id": 1, "image_id": 7, "category_id": 3, "bbox": [10, 5, 20, 10], "iscrowd": 0},
                             {"id": 2, "image_id": 7, "category_id": 1, "bbox": [0, 0, 100.5, 50], "iscrowd": 1}]}"#
            .to_vec(),
        br#"{"images": [], "categories": [{"id": 0, "name": "x"}]}"#.to_vec(),
    ];
    let (json, dir) = (Path::new("fuzz.json"), Path::new("."));
    fuzz("coco-instances", seeds, iterations(), |bytes| {
        match vigil::dataset::coco::read_instances(bytes, json, dir, false) {
            Ok((names, images)) => {
                for b in images.iter().flat_map(|i| &i.boxes) {
                    let ok = [b.bbox.x1, b.bbox.y1, b.bbox.x2, b.bbox.y2].iter().all(|v| (0.0..=1.0).contains(v));
                    assert!(ok && b.bbox.area() > 0.0 && b.class < names.len(), "accepted a bad box {b:?}");
                }
                true
            }
            Err(_) => false,
        }
    });
}

/// What an RTSP camera sends once depacketized (src/source/rtsp.rs): H.264 access units in
/// Annex B, decoded by OpenH264 and converted to RGB. A hostile camera controls every byte.
/// The seed: three 64×48 pictures from x264 (High profile: CABAC, 8×8 transforms) made by
/// GStreamer here (scripts/setup-system.sh installs it for the RTSP tests).
#[test]
fn fuzz_h264_pictures() {
    use vigil::source::rtsp::{Decoded, H264};
    let file = common::scratch("fuzz-h264").join("seed.h264");
    let status = std::process::Command::new("gst-launch-1.0")
        .args([
            "-q",
            "videotestsrc",
            "num-buffers=3",
            "pattern=ball",
            "!",
            "video/x-raw,width=64,height=48,framerate=10/1",
        ])
        .args(["!", "x264enc", "tune=zerolatency", "!", "video/x-h264,profile=high,stream-format=byte-stream", "!"])
        .args(["filesink", &format!("location={}", file.display())])
        .status()
        .expect("gst-launch-1.0 runs (scripts/setup-system.sh installs it)");
    assert!(status.success(), "gst-launch-1.0 made no H.264");
    let stream = std::fs::read(&file).unwrap();
    let mut h264 = H264::new().unwrap();
    assert!(
        matches!(h264.decode(&stream, || true), Ok(Decoded::Picture(p)) if p.dimensions() == (64, 48)),
        "the seed decodes"
    );
    fuzz("h264", vec![stream], iterations(), |bytes| {
        let mut h264 = H264::new().unwrap();
        matches!(h264.decode(bytes, || true), Ok(Decoded::Picture(_)))
    });
}

/// What an RTSP camera sends on its connection, as the RTSP source's guard reads it before
/// retina does (src/source/rtsp/guard.rs): answers, the camera's own requests and interleaved
/// RTP, in pieces of any size (the input's first byte picks them, and whether access units
/// complete between them). The guard passes on exactly what came, holding back at most one
/// message head or one frame; with the camera's address known (a UDP SETUP answer gains it)
/// it frames the stream the same way.
#[test]
fn fuzz_rtsp_guard() {
    use vigil::source::rtsp::guard::{Guard, MAX_HEAD};
    let sdp = "v=0\r\no=- 1 1 IN IP4 192.168.1.64\r\ns=cam\r\nt=0 0\r\nm=video 0 RTP/AVP 96\r\n\
               a=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1;sprop-parameter-sets=Z0IAH5WoFAFuQA==,aM48gA==\r\n\
               a=control:trackID=1\r\n";
    let mut exchange = format!(
        "RTSP/1.0 401 Unauthorized\r\nCSeq: 1\r\nWWW-Authenticate: Digest realm=\"cam\", nonce=\"4e6a\"\r\n\r\n\
         RTSP/1.0 200 OK\r\nCSeq: 2\r\nContent-Base: rtsp://192.168.1.64/live/\r\nContent-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{sdp}\r\n\
         RTSP/1.0 200 OK\r\nCSeq: 3\r\nSession: 5E2A;timeout=60\r\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1;ssrc=1A2B3C4D\r\n\r\n\
         RTSP/1.0 200 OK\r\nCSeq: 4\r\nSession: 5E2A\r\nRTP-Info: url=rtsp://192.168.1.64/live/trackID=1;seq=1;rtptime=0\r\n\r\n",
        sdp.len()
    )
    .into_bytes();
    // RTP on channel 0 (an FU-A start, middle and end, the last with the marker), RTCP on 1,
    // the camera's own request and a keepalive's answer between them.
    let rtp = |sequence: u8, marker: bool, payload: &[u8]| {
        let mut frame =
            vec![b'$', 0, 0, 12 + payload.len() as u8, 0x80, 96 | if marker { 0x80 } else { 0 }, 0, sequence];
        frame.extend_from_slice(&[0, 0, 0x03, 0x84, 0x1a, 0x2b, 0x3c, 0x4d]);
        frame.extend_from_slice(payload);
        frame
    };
    exchange.extend(rtp(1, false, &[0x7c, 0x85, 0x88, 0x84, 0x21]));
    exchange.extend(rtp(2, false, &[0x7c, 0x05, 0xab, 0xcd]));
    exchange.extend(rtp(3, true, &[0x7c, 0x45, 0xef]));
    exchange.extend(b"$\x01\x00\x08\x80\xc8\x00\x06\x1a\x2b\x3c\x4d");
    exchange.extend(b"SET_PARAMETER rtsp://192.168.1.64/live RTSP/1.0\r\nCSeq: 9\r\nContent-Length: 5\r\n\r\nping\n");
    exchange.extend(b"RTSP/1.0 200 OK\r\nCSeq: 5\r\nSession: 5E2A\r\n\r\n");
    let udp =
        b"RTSP/1.0 200 OK\r\nCSeq: 3\r\nTransport: RTP/AVP;unicast;client_port=5000-5001;server_port=6970-6971\r\n\r\n";
    let seeds = vec![[&[0u8][..], &exchange].concat(), [&[0x85u8][..], &exchange].concat(), [&[7u8][..], udp].concat()];
    let camera = Some(std::net::IpAddr::from([192, 168, 1, 64]));
    fuzz("rtsp-guard", seeds, iterations(), |bytes| {
        let Some((&pick, stream)) = bytes.split_first() else { return false };
        let piece = 1 + usize::from(pick & 0x3f) * 37;
        let (mut plain, mut addressed) = (Guard::new(None), Guard::new(camera));
        let (mut out, mut rewritten) = (Vec::new(), Vec::new());
        let mut read = 0;
        for (i, chunk) in stream.chunks(piece).enumerate() {
            if pick & 0x80 != 0 && i % 3 == 0 {
                plain.unit_completed();
                addressed.unit_completed();
            }
            let fed = plain.feed(chunk, &mut out);
            assert_eq!(
                fed.is_ok(),
                addressed.feed(chunk, &mut rewritten).is_ok(),
                "the camera's address changes framing"
            );
            if fed.is_err() {
                return false;
            }
            read += chunk.len();
            assert!(
                stream.get(..read).is_some_and(|came| came.starts_with(&out)),
                "the guard passed on what did not come"
            );
            assert!(read - out.len() <= MAX_HEAD.max(4 + 65535), "{} bytes held back", read - out.len());
        }
        true
    });
}
