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

/// `vigil train` of NanoDet-m at 160 px on the CPU: (exit code, stdout, stderr).
fn train(data: &Path, out: &Path, epochs: usize, seed: u64, extra: &[&str]) -> (i32, String, String) {
    let (epochs, seed) = (epochs.to_string(), seed.to_string());
    let mut args = vec![
        "train",
        "--model",
        "models/nanodet-m.toml",
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--device",
        "cpu",
        "--size",
        "160",
        "--epochs",
        &epochs,
        "--batch",
        "16",
        "--seed",
        &seed,
        "--name",
        "garments",
    ];
    args.extend_from_slice(extra);
    vigil(&args)
}

/// The best validation mAP50 of a run.
fn best_map50(report: &serde_json::Value) -> f64 {
    report["history"].as_array().unwrap().iter().map(|h| h["val_map50"].as_f64().unwrap()).fold(0.0, f64::max)
}

#[test]
fn fine_tunes_nanodet_on_pasted_objects_and_vigil_eval_reproduces_its_test_map() {
    let dir = scratch("detect");
    let data = dir.join("data");
    detection_set::make(&data, &["Trouser", "Bag"], [160, 48, 48], 1);
    let out = dir.join("run");
    let (code, stdout, stderr) = train(&data.join("data.yaml"), &out, 6, 0, &[]);
    eprintln!("{stderr}");
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let report = json(&out.join("train.json"));
    let untrained = report["untrained"]["map50"].as_f64().unwrap();
    let best = best_map50(&report);
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

/// The default recipe on three seeds (on demand, about three minutes:
/// `cargo test --features train --test train_detect -- --ignored --nocapture`); the figures
/// are recorded in docs/training.md.
#[test]
#[ignore]
fn the_default_detection_recipe_converges_on_every_seed() {
    let dir = scratch("detect-seeds");
    let data = dir.join("data");
    detection_set::make(&data, &["Trouser", "Bag"], [160, 48, 48], 1);
    let mut best = Vec::new();
    for seed in 0..3 {
        let out = dir.join(format!("seed{seed}"));
        let (code, stdout, stderr) = train(&data.join("data.yaml"), &out, 10, seed, &[]);
        assert_eq!(code, 0, "{stdout}\n{stderr}");
        let report = json(&out.join("train.json"));
        let test = &report["test"];
        eprintln!(
            "seed {seed}: best val mAP50 {:.4}; test mAP50 {:.4} mAP50-95 {:.4}",
            best_map50(&report),
            test["map50"].as_f64().unwrap(),
            test["map50_95"].as_f64().unwrap()
        );
        best.push(best_map50(&report));
    }
    let (lo, hi) = best.iter().fold((f64::MAX, 0.0f64), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    assert!(hi - lo <= 0.05, "best val mAP50 per seed {best:?}: spread {:.3} over 0.05", hi - lo);
}

#[test]
fn a_detection_run_resumes_and_what_cannot_be_trained_is_refused() {
    let dir = scratch("detect-resume");
    let data = dir.join("data");
    detection_set::make(&data, &["Trouser", "Bag"], [24, 8, 8], 2);
    let yaml = data.join("data.yaml");
    let out = dir.join("run");
    let (code, stdout, stderr) = train(&yaml, &out, 1, 0, &[]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let untrained = std::fs::read_to_string(out.join("untrained.json")).unwrap();
    let (code, stdout, stderr) = train(&yaml, &out, 2, 0, &["--resume"]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    // The untrained head's figures stay those measured at the start of the run.
    assert_eq!(std::fs::read_to_string(out.join("untrained.json")).unwrap(), untrained);
    assert_eq!(
        json(&out.join("train.json"))["untrained"],
        serde_json::from_str::<serde_json::Value>(&untrained).unwrap()
    );
    assert!(stderr.contains("resuming after epoch 1"), "{stderr}");
    assert!(stderr.contains("optimiser state restored"), "{stderr}");
    let history = std::fs::read_to_string(out.join("history.csv")).unwrap();
    let epochs: Vec<&str> = history.lines().skip(1).map(|l| l.split(',').next().unwrap()).collect();
    assert_eq!(epochs, ["1", "2"], "{history}");

    // A classifier's run folder is not a detection run to resume.
    std::fs::write(out.join("history.csv"), "epoch,train_loss,train_accuracy,val_loss,val_accuracy,lr,seconds\n")
        .unwrap();
    let (code, _, stderr) = train(&yaml, &out, 3, 0, &["--resume"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("not a detection run's history"), "{stderr}");

    // An input size the strides do not divide.
    let args = ["train", "--model", "models/nanodet-m.toml", "--data", yaml.to_str().unwrap(), "--size", "100"];
    let (code, _, stderr) =
        vigil(&[&args[..], &["--out", dir.join("odd").to_str().unwrap(), "--device", "cpu"]].concat());
    assert_eq!(code, 1);
    assert!(stderr.contains("--size 100 is not a multiple of the stride"), "{stderr}");

    // A detector whose head the trainer does not know.
    let args = ["train", "--model", "models/blazeface.toml", "--data", yaml.to_str().unwrap()];
    let (code, _, stderr) =
        vigil(&[&args[..], &["--out", dir.join("face").to_str().unwrap(), "--device", "cpu"]].concat());
    assert_eq!(code, 1);
    assert!(stderr.contains("decodes its outputs as \"blazeface\"") && stderr.contains("nanodet"), "{stderr}");

    // Data whose training split has no boxes: nothing to learn from.
    for f in std::fs::read_dir(data.join("labels/train")).unwrap() {
        std::fs::remove_file(f.unwrap().path()).unwrap();
    }
    let (code, _, stderr) = train(&yaml, &dir.join("empty"), 1, 0, &[]);
    assert_eq!(code, 1);
    assert!(stderr.contains("training split") && stderr.contains("has no boxes"), "{stderr}");
}

#[test]
fn bench_train_times_a_detector_step() {
    let args = ["bench-train", "--onnx", "models/nanodet-m.onnx", "--device", "cpu", "--batch", "2", "--size", "64"];
    let (code, stdout, stderr) = vigil(&[&args[..], &["--classes", "3", "--steps", "1", "--warmup", "0"]].concat());
    assert_eq!(code, 0, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["size"], 64);
    for key in ["images_per_second", "full_step_images_per_second", "final_loss"] {
        let v = report[key].as_f64().unwrap();
        assert!(v.is_finite() && v > 0.0, "{key} = {v}");
    }
    // A size the strides do not divide has no head layout.
    let (code, _, stderr) =
        vigil(&["bench-train", "--onnx", "models/nanodet-m.onnx", "--device", "cpu", "--size", "70"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("--size 70 is not a multiple of the strides"), "{stderr}");
}
