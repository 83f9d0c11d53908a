//! `vigil train` end to end on real labelled images (feature `train`, CPU): a few hundred
//! Fashion-MNIST images written as an ImageFolder tree by tests/data/make_fashion_mnist.py
//! from Debian's dataset-fashion-mnist, MobileNetV2 fine-tuned for a few epochs at 48×48.
#![cfg(feature = "train")]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{root, scratch, vigil};

fn fashion(dir: &Path, per_class: [&str; 3]) {
    let status = Command::new("python3")
        .arg(root().join("tests/data/make_fashion_mnist.py"))
        .arg(dir)
        .args(["--train", per_class[0], "--val", per_class[1], "--test", per_class[2]])
        .status()
        .expect("python3 runs");
    assert!(status.success(), "make_fashion_mnist.py failed (is dataset-fashion-mnist installed?)");
}

fn csv_column(path: &Path, column: &str) -> Vec<f64> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let i = header.iter().position(|h| *h == column).unwrap();
    lines.map(|l| l.split(',').nth(i).unwrap().parse().unwrap()).collect()
}

fn train(data: &Path, out: &Path, extra: &[&str]) -> (i32, String, String) {
    train_from(Path::new("models/mobilenet-v2.toml"), data, out, extra)
}

/// `vigil train` on the CPU from the manifest `model`.
fn train_from(model: &Path, data: &Path, out: &Path, extra: &[&str]) -> (i32, String, String) {
    let mut args = vec![
        "train",
        "--model",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--device",
        "cpu",
    ];
    args.extend_from_slice(extra);
    vigil(&args)
}

#[test]
fn fine_tunes_mobilenet_on_fashion_mnist_and_exports_a_model_tract_agrees_with() {
    let dir = scratch("fashion");
    let data = dir.join("data");
    fashion(&data, ["60", "15", "25"]);
    let out = dir.join("run");
    let (code, stdout, stderr) =
        train(&data, &out, &["--size", "48", "--epochs", "4", "--batch", "32", "--name", "fashion", "--seed", "1"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("mobilenet-v2-train.onnx"), "the manifest's training graph is the base: {stderr}");
    assert!(stderr.contains("normalisation: BatchNormalization on batch statistics"), "{stderr}");
    assert!(
        stderr
            .contains("recipe: 0 head-only epoch(s), then the backbone at 1 of the head's learning rate (the default"),
        "{stderr}"
    );

    // The training loss falls; test accuracy is far above chance (4 classes: 0.25).
    let losses = csv_column(&out.join("history.csv"), "train_loss");
    assert!(losses.len() >= 2 && losses.last() < losses.first(), "losses {losses:?}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("train.json")).unwrap()).unwrap();
    let top1 = report["test"]["top1"].as_f64().unwrap();
    assert!(top1 >= 0.7, "test top-1 {top1}\n{stdout}");
    for f in [
        "model.onnx",
        "model.toml",
        "best.onnx",
        "last.onnx",
        "history.csv",
        "metrics.csv",
        "confusion.csv",
        "confusion.png",
        "loss.png",
        "accuracy.png",
        "evaluation.json",
        "report.md",
        "test-vector/input.npy",
        "test-vector/expected.npy",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    assert!(report["parity"].as_f64().unwrap() <= 1e-4);

    // The exported model, run by the device runtime, reproduces the trainer's test metrics.
    let manifest = out.join("model.toml");
    let device_agrees = |run: &str| {
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("train.json")).unwrap()).unwrap();
        let test = data.join("test");
        let (code, json, stderr) =
            vigil(&["eval", "--model", manifest.to_str().unwrap(), "--data", test.to_str().unwrap(), "--json"]);
        assert_eq!(code, 0, "{stderr}");
        let eval: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(eval["top1"], report["test"]["top1"], "{run}");
        assert_eq!(eval["confusion"], report["test"]["confusion"], "{run}");
    };
    device_agrees("the first run, images held in memory");

    // And its test vector: tract on input.npy equals expected.npy.
    let model = vigil::model::Model::load(&manifest).unwrap();
    let (shape, input) = vigil::npy::read_f32(&out.join("test-vector/input.npy")).unwrap();
    let (_, expected) = vigil::npy::read_f32(&out.join("test-vector/expected.npy")).unwrap();
    let got = model.run_raw(&vigil::model::InputTensor { shape: shape.try_into().unwrap(), data: input }).unwrap();
    let d = got[0].data.iter().zip(&expected).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    assert!(d <= 1e-4, "tract vs tch on the test vector: {d}");

    // Resuming continues the same run from its last checkpoint and optimiser state; with no
    // memory for images (--cache-mb 0) every split is read from disk batch by batch, and the
    // test metrics still match the device runtime's.
    let args = ["--size", "48", "--epochs", "5", "--batch", "32", "--name", "fashion", "--seed", "1", "--resume"];
    let (code, _, stderr) = train(&data, &out, &[&args[..], &["--cache-mb", "0", "--loader-threads", "3"]].concat());
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("resuming after epoch 4"), "{stderr}");
    assert!(stderr.contains("optimiser state restored"), "the moments carry over: {stderr}");
    assert!(stderr.contains("train, val, test read from disk for every pass"), "{stderr}");
    let epochs = csv_column(&out.join("history.csv"), "epoch");
    assert_eq!(epochs, [1.0, 2.0, 3.0, 4.0, 5.0]);
    device_agrees("the resumed run, every split streamed from disk");
}

/// MobileNetV2's manifest without its training graph, written into `dir`: `vigil train`
/// then starts from the folded graph, which has no normalisation layers.
fn folded_mobilenet(dir: &Path) -> PathBuf {
    let models = root().join("models");
    let text = std::fs::read_to_string(models.join("mobilenet-v2.toml"))
        .unwrap()
        .replace("train_model = \"mobilenet-v2-train.onnx\"\n", "")
        .replace("\"mobilenet-v2.onnx\"", &format!("{:?}", models.join("mobilenet-v2.onnx").display().to_string()))
        .replace("labels/imagenet-1k.txt", &models.join("labels/imagenet-1k.txt").display().to_string());
    assert!(!text.contains("train_model"), "{text}");
    let path = dir.join("mobilenet-v2-folded.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn fine_tunes_the_folded_graph_without_normalisation_too() {
    let dir = scratch("fashion-folded");
    let data = dir.join("data");
    fashion(&data, ["60", "15", "25"]);
    let manifest = folded_mobilenet(&dir);
    let out = dir.join("run");
    let (code, stdout, stderr) = train_from(&manifest, &data, &out, &["--size", "48", "--epochs", "4", "--seed", "1"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("normalisation: none in the graph"), "{stderr}");
    assert!(
        stderr.contains(
            "recipe: 1 head-only epoch(s), then the backbone at 0.1 of the head's learning rate (the default"
        ),
        "{stderr}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("train.json")).unwrap()).unwrap();
    let top1 = report["test"]["top1"].as_f64().unwrap();
    assert!(top1 >= 0.7, "test top-1 {top1}\n{stdout}");
}

#[test]
fn a_diverging_run_fails_loudly_and_exports_nothing() {
    let dir = scratch("diverge");
    let data = dir.join("data");
    fashion(&data, ["12", "4", "4"]);
    let out = dir.join("run");
    // What an earlier run in the same folder exported must not pass for this run's result.
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("model.onnx"), "an earlier run's model").unwrap();
    std::fs::write(out.join("model.toml"), "an earlier run's manifest").unwrap();
    let (code, _, stderr) = train(&data, &out, &["--size", "32", "--epochs", "2", "--lr", "1e6", "--batch", "8"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("training diverged: the") && stderr.contains("loss became"), "{stderr}");
    assert!(stderr.contains("no model was exported") && stderr.contains("Try a lower --lr"), "{stderr}");
    assert!(!out.join("model.onnx").exists() && !out.join("model.toml").exists(), "a deployable model is left");
}

#[test]
fn a_run_that_learns_nothing_fails_and_exports_nothing() {
    // Every image, in every class and split, is the same picture: no model can tell the
    // classes apart, so validation accuracy is exactly chance.
    let dir = scratch("chance");
    let source = dir.join("source");
    fashion(&source, ["1", "1", "1"]);
    let picture = std::fs::read_dir(source.join("train/Bag")).unwrap().next().unwrap().unwrap().path();
    let data = dir.join("data");
    for split in ["train", "val", "test"] {
        for class in ["a", "b", "c", "d"] {
            let folder = data.join(split).join(class);
            std::fs::create_dir_all(&folder).unwrap();
            for i in 0..4 {
                std::fs::copy(&picture, folder.join(format!("{i}.png"))).unwrap();
            }
        }
    }
    let out = dir.join("run");
    let (code, _, stderr) = train(&data, &out, &["--size", "32", "--epochs", "2", "--batch", "8"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("training failed: the best validation accuracy, 0.250"), "{stderr}");
    assert!(stderr.contains("is at chance level (0.250"), "{stderr}");
    assert!(!out.join("model.onnx").exists() && !out.join("model.toml").exists(), "a deployable model is left");
}

fn tiny_dataset(name: &str) -> PathBuf {
    let dir = scratch(name);
    let data = dir.join("data");
    fashion(&data, ["4", "2", "2"]);
    data
}

#[test]
fn an_empty_class_folder_is_a_clear_error() {
    let data = tiny_dataset("empty-class");
    std::fs::create_dir_all(data.join("val/Coat")).unwrap();
    std::fs::create_dir_all(data.join("train/Coat")).unwrap();
    std::fs::create_dir_all(data.join("test/Coat")).unwrap();
    let (code, _, stderr) = train(&data, &data.join("../out"), &["--epochs", "1"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("train/Coat holds no images"), "{stderr}");
}

#[test]
fn an_unreadable_image_is_named() {
    let data = tiny_dataset("bad-image");
    std::fs::write(data.join("train/Bag/broken.png"), "not a png").unwrap();
    let (code, _, stderr) = train(&data, &data.join("../out"), &["--epochs", "1"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("broken.png is not a readable PNG or JPEG image"), "{stderr}");
}

#[test]
fn splits_with_different_classes_are_refused() {
    let data = tiny_dataset("class-mismatch");
    std::fs::rename(data.join("test/Bag"), data.join("test/Backpack")).unwrap();
    let (code, _, stderr) = train(&data, &data.join("../out"), &["--epochs", "1"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("test/ lacks [\"Bag\"] and has extra [\"Backpack\"]"), "{stderr}");
}

#[test]
fn a_model_with_unsupported_operators_is_refused_by_name() {
    let data = tiny_dataset("unsupported");
    let dir = data.parent().unwrap();
    // A classifier manifest over a YOLOv8 graph: its operators are not trainable here.
    let manifest = std::fs::read_to_string(root().join("models/mobilenet-v2.toml"))
        .unwrap()
        .replace("train_model = \"mobilenet-v2-train.onnx\"\n", "")
        .replace(
            "model = \"mobilenet-v2.onnx\"",
            &format!("model = \"{}\"", root().join("tests/models/yolov8n-random.onnx").display()),
        )
        .replace("labels = { file = \"labels/imagenet-1k.txt\" }", "labels = [\"a\"]");
    std::fs::write(dir.join("yolo.toml"), manifest).unwrap();
    let (code, _, stderr) = train_from(&dir.join("yolo.toml"), &data, &dir.join("out"), &["--epochs", "1"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("unsupported ONNX operator") && stderr.contains("Softmax"), "{stderr}");
}

#[test]
fn an_empty_split_is_a_clear_error() {
    // Class folders directly under the root: a stratified split, here with no validation share.
    let data = tiny_dataset("empty-split").join("train");
    let (code, _, stderr) = train(&data, &data.join("../../out"), &["--epochs", "1", "--val-fraction", "0"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("the validation split of") && stderr.contains("is empty"), "{stderr}");
}

#[test]
fn batchnorm_statistics_need_batches_of_two() {
    let data = tiny_dataset("batch-one");
    let (code, _, stderr) = train(&data, &data.join("../out"), &["--epochs", "1", "--batch", "1"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("--batch 1: BatchNorm trains on batch statistics") && stderr.contains("--freeze-bn"),
        "{stderr}"
    );
}
