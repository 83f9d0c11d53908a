//! The detector trainer end to end on the CPU: NanoDet-m fine-tuned on a data set of
//! Fashion-MNIST objects pasted onto the bundled photos (tests/common/detection_set.rs),
//! at a small input size, then evaluated by `vigil eval` with tract, and bundled.
#![cfg(feature = "train")]

mod common;

use std::path::Path;

use common::{detection_set, scratch, vigil};

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn fine_tunes_nanodet_on_pasted_objects_and_vigil_eval_reproduces_its_test_map() {
    let dir = scratch("detect");
    let data = dir.join("data");
    detection_set::make(&data, &["Trouser", "Bag"], [160, 48, 48], 1);
    let out = dir.join("run");
    let (code, stdout, stderr) = vigil(&[
        "train",
        "--model",
        "models/nanodet-m.toml",
        "--data",
        data.join("data.yaml").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--device",
        "cpu",
        "--size",
        "160",
        "--epochs",
        "6",
        "--batch",
        "16",
        "--seed",
        "0",
        "--name",
        "garments",
    ]);
    eprintln!("{stderr}");
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let report = json(&out.join("train.json"));
    eprintln!("{}", serde_json::to_string_pretty(&report["history"]).unwrap());
    let untrained = report["untrained"]["map50"].as_f64().unwrap();
    let best =
        report["history"].as_array().unwrap().iter().map(|h| h["val_map50"].as_f64().unwrap()).fold(0.0, f64::max);
    assert!(best > untrained + 0.3 && best > 0.5, "val mAP50 {best} after fine-tuning, {untrained} before");

    // vigil eval, with tract, gives the trainer's test figures exactly, from either format.
    let test = &report["test"];
    for data_arg in [data.join("data.yaml"), data.join("coco")] {
        let (code, stdout, stderr) = vigil(&[
            "eval",
            "--model",
            out.join("model.toml").to_str().unwrap(),
            "--data",
            data_arg.to_str().unwrap(),
            "--split",
            "test",
            "--json",
        ]);
        assert_eq!(code, 0, "{stderr}");
        let eval: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        for key in ["map50", "map50_95", "precision", "recall"] {
            let (a, b) = (eval[key].as_f64().unwrap(), test[key].as_f64().unwrap());
            assert!((a - b).abs() < 1e-9, "{key}: vigil eval {a} on {}, the trainer {b}", data_arg.display());
        }
    }

    // The export is a deployable model: vigil bundle makes it into a bundle (its own test
    // vector run by tract) that a device accepts.
    let key = dir.join("deploy.key");
    let (code, _, stderr) = vigil(&["keygen", "--out", key.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    let bundle = dir.join("garments.vigil");
    let manifest = out.join("model.toml");
    let args = ["bundle", "--model", manifest.to_str().unwrap(), "--key", key.to_str().unwrap()];
    let (code, _, stderr) = vigil(&[&args[..], &["--out", bundle.to_str().unwrap(), "--device", "garage"]].concat());
    assert_eq!(code, 0, "{stderr}");
    let pubkey = dir.join("deploy.key.pub");
    let check = ["check-bundle", "--bundle", bundle.to_str().unwrap(), "--trust", pubkey.to_str().unwrap()];
    let (code, stdout, stderr) = vigil(&[&check[..], &["--device", "garage"]].concat());
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("accepted: garments"), "{stdout}");
}
