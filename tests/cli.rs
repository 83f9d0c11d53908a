//! `vigil infer` and `vigil bench` as a user runs them.

mod common;

use common::{root, scratch, vigil};

#[test]
fn infer_json_gives_one_document_per_image() {
    let (code, stdout, stderr) = vigil(&[
        "infer",
        "--model",
        "models/nanodet-m.toml",
        "--json",
        "tests/photos/motorcycle_left.png",
        "tests/photos/sample1.jpg",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let docs: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(docs.len(), 2);
    let moto = &docs[0];
    assert_eq!(moto["image"], "tests/photos/motorcycle_left.png");
    assert_eq!((moto["width"].as_u64(), moto["height"].as_u64()), (Some(741), Some(500)));
    assert_eq!(moto["model"]["name"], "nanodet-m");
    assert_eq!(moto["model"]["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(moto["model"]["engine"], "tract");
    let dets = moto["detections"].as_array().unwrap();
    let bike = dets.iter().find(|d| d["label"] == "motorcycle").expect("a motorcycle");
    let b = &bike["box"];
    let (x1, x2) = (b["x1"].as_f64().unwrap(), b["x2"].as_f64().unwrap());
    // The motorcycle fills most of the frame: its box is in original-image pixels.
    assert!(x1 < 150.0 && x2 > 600.0 && x2 <= 741.0, "{bike}");
    // A JPEG group photo: people.
    let persons = docs[1]["detections"].as_array().unwrap().iter().filter(|d| d["label"] == "person").count();
    assert!(persons >= 2, "{}", docs[1]);
}

#[test]
fn infer_text_and_threshold() {
    let (code, stdout, stderr) =
        vigil(&["infer", "--model", "models/mobilenet-v2.toml", "--top-k", "2", "tests/photos/chelsea.png"]);
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(lines[0].starts_with("tests/photos/chelsea.png  (mobilenet-v2 1.0.0"), "{stdout}");
    assert!(lines[1].contains("Egyptian cat"), "{stdout}");

    // A threshold above every score leaves nothing.
    let (code, stdout, _) =
        vigil(&["infer", "--model", "models/nanodet-m.toml", "-t", "0.99", "tests/photos/motorcycle_left.png"]);
    assert_eq!(code, 0);
    assert!(stdout.contains("nothing detected"), "{stdout}");
    let (code, _, stderr) =
        vigil(&["infer", "--model", "models/nanodet-m.toml", "-t", "7", "tests/photos/motorcycle_left.png"]);
    assert_eq!(code, 2, "a bad command line");
    assert!(stderr.contains("--threshold must be within 0–1"), "{stderr}");
}

/// `vigil infer … | head -n 1`: the reader leaves, vigil stops quietly (no panic, exit 0);
/// a full disk is an error that says so.
#[test]
fn infer_stops_quietly_when_its_reader_leaves() {
    use std::io::Read;
    use std::process::Stdio;
    let photos: Vec<String> = (0..40).map(|_| "tests/photos/chelsea.png".to_string()).collect();
    let mut child = common::vigil_command()
        .current_dir(root())
        .args(["infer", "--model", "models/mobilenet-v2.toml"])
        .args(&photos)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 10];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap(); // then the pipe closes
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
    let out = common::vigil_command()
        .current_dir(root())
        .args(["infer", "--model", "models/mobilenet-v2.toml", "tests/photos/chelsea.png"])
        .stdout(full)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot write to standard output") && !stderr.contains("panicked"), "{stderr}");
}

/// `--draw` never writes over an input image, and two inputs with one file name keep both
/// drawings.
#[test]
fn infer_draw_never_overwrites_an_input_nor_loses_an_output() {
    let dir = scratch("draw-safe");
    let photo = dir.join("chelsea.png");
    std::fs::copy(root().join("tests/photos/chelsea.png"), &photo).unwrap();
    let before = std::fs::read(&photo).unwrap();
    let p = photo.to_str().unwrap();
    let (code, _, stderr) = vigil(&["infer", "--model", "models/blazeface.toml", "--draw", p, p]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("over the input image"), "{stderr}");
    let d = dir.to_str().unwrap();
    let (code, _, stderr) =
        vigil(&["infer", "--model", "models/blazeface.toml", "--draw", d, p, "tests/photos/group.png"]);
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(std::fs::read(&photo).unwrap(), before, "the input is untouched");

    std::fs::create_dir_all(dir.join("b")).unwrap();
    let twin = dir.join("b/chelsea.png");
    std::fs::copy(root().join("tests/photos/astronaut.png"), &twin).unwrap();
    let out = dir.join("out");
    let args =
        ["infer", "--model", "models/blazeface.toml", "--draw", out.to_str().unwrap(), p, twin.to_str().unwrap()];
    let (code, _, stderr) = vigil(&args);
    assert_eq!(code, 0, "{stderr}");
    let sizes: Vec<(u32, u32)> =
        ["chelsea.png", "chelsea-2.png"].iter().map(|f| image::image_dimensions(out.join(f)).unwrap()).collect();
    assert_eq!(sizes, [image::image_dimensions(&photo).unwrap(), image::image_dimensions(&twin).unwrap()]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn infer_draw_writes_annotated_images() {
    let dir = scratch("draw");
    let single = dir.join("one.png");
    let (code, _, stderr) = vigil(&[
        "infer",
        "--model",
        "models/blazeface.toml",
        "--draw",
        single.to_str().unwrap(),
        "tests/photos/astronaut.png",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let original = image::open(root().join("tests/photos/astronaut.png")).unwrap().to_rgb8();
    let drawn = image::open(&single).unwrap().to_rgb8();
    assert_eq!(drawn.dimensions(), original.dimensions());
    let changed = drawn.pixels().zip(original.pixels()).filter(|(a, b)| a != b).count();
    assert!(changed > 500, "only {changed} pixels changed");

    let folder = dir.join("many");
    let (code, _, stderr) = vigil(&[
        "infer",
        "--model",
        "models/nanodet-m.toml",
        "--draw",
        folder.to_str().unwrap(),
        "tests/photos/motorcycle_left.png",
        "tests/photos/group.png",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(folder.join("motorcycle_left.png").exists() && folder.join("group.png").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bench_reports_percentiles_and_saves_its_input() {
    let npy = scratch("bench").join("input.npy");
    let (code, stdout, stderr) = vigil(&[
        "bench",
        "--model",
        "models/blazeface.toml",
        "--iterations",
        "5",
        "--warmup",
        "1",
        "--json",
        "--save-input",
        npy.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    let doc: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(doc["iterations"], 5);
    let inf = &doc["inference_ms"];
    let (p50, p99) = (inf["p50"].as_f64().unwrap(), inf["p99"].as_f64().unwrap());
    assert!(p50 > 0.0 && p50 <= p99, "{doc}");
    let (shape, data) = vigil::npy::read_f32(&npy).unwrap();
    assert_eq!(shape, [1, 3, 128, 128]);
    // A mid-grey frame scaled to [-1, 1]: 128/127.5 - 1.
    assert!(data.iter().all(|v| (v - (128.0 / 127.5 - 1.0)).abs() < 1e-6));
}

#[cfg(not(feature = "train"))]
#[test]
fn train_without_libtorch_says_how_to_get_it() {
    let (code, _, stderr) = vigil(&["train", "--model", "models/mobilenet-v2.toml", "--data", "x", "--out", "y"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("built without its trainer") && stderr.contains("--features train"), "{stderr}");
}

/// The command list says what each command does today: `eval` and `train` take detectors too.
#[test]
fn help_says_eval_and_train_take_detectors_too() {
    let (code, stdout, stderr) = vigil(&["--help"]);
    assert_eq!(code, 0, "{stderr}");
    let line = |command: &str| {
        stdout.lines().find(|l| l.trim_start().starts_with(&format!("{command} "))).unwrap_or_default().to_string()
    };
    assert!(line("eval").contains("classifier") && line("eval").contains("detector"), "{stdout}");
    assert!(line("train").contains("classifier or detector"), "{stdout}");
}

/// `vigil dataset` from photos: prelabel writes a collection (again: nothing new), stats
/// counts it, merge makes a data set of it, accept marks items, and a bad argument is named.
#[test]
fn dataset_commands_from_photos_to_a_data_set() {
    let dir = scratch("cli-dataset");
    let (photos, collection, set) = (dir.join("photos"), dir.join("collection"), dir.join("set"));
    std::fs::create_dir_all(photos.join("more")).unwrap();
    std::fs::copy(root().join("tests/photos/motorcycle_left.png"), photos.join("moto.png")).unwrap();
    std::fs::copy(root().join("tests/photos/sample1.jpg"), photos.join("more/people.jpg")).unwrap();
    std::fs::write(photos.join("broken.jpg"), b"not a jpeg").unwrap();
    let prelabel = [
        "dataset",
        "prelabel",
        "--model",
        "models/nanodet-m.toml",
        "--out",
        collection.to_str().unwrap(),
        photos.to_str().unwrap(),
    ];
    let (code, stdout, stderr) = vigil(&prelabel);
    assert_eq!(code, 1, "one photo cannot be read:\n{stdout}\n{stderr}");
    assert!(stdout.contains("2 photo(s) added") && stderr.contains("broken.jpg"), "{stdout}\n{stderr}");
    std::fs::remove_file(photos.join("broken.jpg")).unwrap();
    let (code, stdout, _) = vigil(&prelabel);
    assert_eq!(code, 0);
    assert!(stdout.contains("0 photo(s) added") && stdout.contains("2 there already"), "{stdout}");
    let (code, stdout, stderr) = vigil(&["dataset", "stats", collection.to_str().unwrap(), "--json"]);
    assert_eq!(code, 0, "{stderr}");
    let stats: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!((stats["items"].as_u64(), stats["review"]["unreviewed"].as_u64()), (Some(2), Some(2)), "{stats}");
    assert!(
        stats["boxes"]["motorcycle"].as_u64() >= Some(1) && stats["boxes"]["person"].as_u64() >= Some(2),
        "{stats}"
    );
    let (code, stdout, stderr) =
        vigil(&["dataset", "merge", "--out", set.to_str().unwrap(), collection.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("2 item(s) added"), "{stdout}");
    let (code, stdout, _) = vigil(&["dataset", "accept", set.to_str().unwrap(), "--all"]);
    assert_eq!(code, 0);
    assert!(stdout.contains("2 item(s) marked reviewed"), "{stdout}");
    let (code, _, stderr) = vigil(&["dataset", "accept", set.to_str().unwrap(), "no-such-item"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("has no item [\"no-such-item\"]"), "{stderr}");
    let (code, _, stderr) = vigil(&["dataset", "stats", dir.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(stderr.contains("is not a vigil collection or data set"), "{stderr}");
}
