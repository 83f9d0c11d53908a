//! Bad input gets a clear error that names what is wrong, and never a panic: manifests
//! that disagree with their graph, files that are not ONNX models, unreadable images.

mod common;

use std::path::{Path, PathBuf};

use common::{root, scratch, vigil};
use vigil::model::{Model, ModelError};

/// Writes a variant of a bundled manifest into `dir`, pointing at the bundled files.
fn variant(dir: &Path, bundled: &str, edit: impl Fn(String) -> String) -> PathBuf {
    let text = std::fs::read_to_string(root().join("models").join(bundled)).unwrap();
    let models = root().join("models");
    let text = text
        .replace("model = \"", &format!("model = \"{}/", models.display()))
        .replace("file = \"labels/", &format!("file = \"{}/labels/", models.display()));
    let path = dir.join(bundled);
    std::fs::write(&path, edit(text)).unwrap();
    path
}

fn load_err(manifest: &Path) -> (ModelError, String) {
    let err = Model::load(manifest).expect_err("the model should be refused");
    let msg = err.to_string();
    (err, msg)
}

#[test]
fn input_size_mismatch_names_field_and_both_values() {
    let dir = scratch("size");
    let m = variant(&dir, "mobilenet-v2.toml", |t| t.replace("width = 224", "width = 320"));
    let (err, msg) = load_err(&m);
    assert!(matches!(err, ModelError::Mismatch { .. }), "{msg}");
    assert!(msg.contains("input.width = 320") && msg.contains("has width 224") && msg.contains("\"input\""), "{msg}");
}

#[test]
fn layout_mismatch_is_named() {
    let dir = scratch("layout");
    let m = variant(&dir, "mobilenet-v2.toml", |t| t.replace("layout = \"nchw\"", "layout = \"nhwc\""));
    let (_, msg) = load_err(&m);
    assert!(
        msg.contains("input.layout = \"nhwc\"") && msg.contains("[1, 3, 224, 224]") && msg.contains("NCHW"),
        "{msg}"
    );
}

#[test]
fn class_count_mismatch_is_named_for_a_classifier_and_a_detector() {
    let dir = scratch("classes");
    let m = variant(&dir, "mobilenet-v2.toml", |t| {
        t.replace("labels = { file = \"", "labels = [\"a\", \"b\"]\n# was: { file = \"")
    });
    let (_, msg) = load_err(&m);
    assert!(msg.contains("2 labels") && msg.contains("1000 class scores") && msg.contains("\"logits\""), "{msg}");

    let labels: Vec<String> = (0..79).map(|i| format!("\"c{i}\"")).collect();
    let m = variant(&dir, "nanodet-m.toml", |t| {
        t.replace("labels = { file = \"", &format!("labels = [{}]\n# was: {{ file = \"", labels.join(", ")))
    });
    let (_, msg) = load_err(&m);
    assert!(
        msg.contains("[1, 2704, 79]") && msg.contains("79 classes") && msg.contains("\"cls_8\" [1, 2704, 80]"),
        "{msg}"
    );
}

#[test]
fn decoder_that_does_not_fit_the_outputs_is_named() {
    let dir = scratch("decoder");
    let m = variant(&dir, "nanodet-m.toml", |t| t.replace("reg_max = 10", "reg_max = 7"));
    let (_, msg) = load_err(&m);
    assert!(msg.contains("box map") && msg.contains("[1, 2704, 32]") && msg.contains("decoder.reg_max = 7"), "{msg}");
}

#[test]
fn truncated_and_foreign_files_are_refused_naming_the_file() {
    let dir = scratch("onnx");
    let bytes = std::fs::read(root().join("models/blazeface.onnx")).unwrap();
    std::fs::write(dir.join("truncated.onnx"), &bytes[..bytes.len() / 2]).unwrap();
    std::fs::write(dir.join("notes.onnx"), "this is a text file, not a model\n").unwrap();
    std::fs::copy(root().join("tests/photos/chelsea.png"), dir.join("photo.onnx")).unwrap();
    for file in ["truncated.onnx", "notes.onnx", "photo.onnx"] {
        let m = variant(&dir, "blazeface.toml", |t| {
            t.replace(
                &format!("{}/blazeface.onnx", root().join("models").display()),
                &dir.join(file).display().to_string(),
            )
        });
        let (err, msg) = load_err(&m);
        assert!(matches!(err, ModelError::Onnx { .. }), "{file}: {msg}");
        assert!(msg.contains(file) && msg.contains("is not a usable ONNX model"), "{msg}");
    }
}

#[test]
fn a_missing_model_file_is_named() {
    let dir = scratch("missing");
    let m = variant(&dir, "blazeface.toml", |t| t.replace("blazeface.onnx", "nowhere.onnx"));
    let (err, msg) = load_err(&m);
    assert!(matches!(err, ModelError::Io { .. }), "{msg}");
    assert!(msg.contains("nowhere.onnx"), "{msg}");
}

#[test]
fn a_manifest_with_several_mistakes_lists_them_all() {
    let dir = scratch("manifest");
    let m = variant(&dir, "nanodet-m.toml", |t| {
        t.replace("std = [57.375, 57.12, 58.395]", "std = [57.375, 0.0, 58.395]")
            .replace("score = 0.35", "score = 3.5")
            .replace("task = \"detect\"", "task = \"classify\"")
    });
    let (err, msg) = load_err(&m);
    let ModelError::Manifest { problems, .. } = &err else { panic!("{msg}") };
    assert_eq!(problems.len(), 3, "{msg}");
    assert!(msg.contains("input.std[1]") && msg.contains("thresholds.score") && msg.contains("decoder.kind"), "{msg}");
}

#[test]
fn cli_reports_an_unreadable_image_and_carries_on() {
    let dir = scratch("image");
    let fake = dir.join("fake.png");
    std::fs::write(&fake, "not an image").unwrap();
    let model = root().join("models/blazeface.toml");
    let good = root().join("tests/photos/astronaut.png");
    let (code, stdout, stderr) = vigil(&[
        "infer",
        "--model",
        model.to_str().unwrap(),
        fake.to_str().unwrap(),
        dir.join("absent.jpg").to_str().unwrap(),
        good.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("fake.png is not a readable PNG or JPEG image"), "{stderr}");
    assert!(stderr.contains("cannot open image") && stderr.contains("absent.jpg"), "{stderr}");
    assert!(stderr.contains("2 of 3 image(s) failed"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    // The good image was still processed.
    assert!(stdout.contains("astronaut.png") && stdout.contains("face"), "{stdout}");
}

#[test]
fn cli_exits_3_on_a_refused_model() {
    let dir = scratch("cli-model");
    let m = variant(&dir, "mobilenet-v2.toml", |t| t.replace("height = 224", "height = 100"));
    let photo = root().join("tests/photos/chelsea.png");
    let (code, _, stderr) = vigil(&["infer", "--model", m.to_str().unwrap(), photo.to_str().unwrap()]);
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("input.height = 100"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Manifest text with `engine` set.
fn on_engine(engine: &str, text: String) -> String {
    text.replacen("\nname = ", &format!("\nengine = \"{engine}\"\nname = "), 1)
}

/// A manifest's `engine`: one vigil does not know is named with the ones it does; the
/// onnxruntime engine runs the same checks of the manifest against the graph as tract.
#[test]
fn engines_get_the_same_manifest_checks() {
    let dir = scratch("engine");
    let (err, msg) = load_err(&variant(&dir, "mobilenet-v2.toml", |t| on_engine("tensorrt", t)));
    assert!(matches!(err, ModelError::Manifest { .. }), "{msg}");
    assert!(msg.contains("tensorrt") && msg.contains("tract") && msg.contains("onnxruntime"), "{msg}");

    // Checked by tract before ONNX Runtime is asked for: the same message, library or not.
    let m = variant(&dir, "mobilenet-v2.toml", |t| on_engine("onnxruntime", t.replace("width = 224", "width = 320")));
    let (err, msg) = load_err(&m);
    assert!(matches!(err, ModelError::Mismatch { .. }), "{msg}");
    assert!(msg.contains("input.width = 320") && msg.contains("has width 224"), "{msg}");
}

/// A build without the `onnxruntime` feature refuses the engine, saying how to get it.
#[cfg(not(feature = "onnxruntime"))]
#[test]
fn the_onnxruntime_engine_needs_its_feature() {
    let dir = scratch("engine-feature");
    let (err, msg) = load_err(&variant(&dir, "mobilenet-v2.toml", |t| on_engine("onnxruntime", t)));
    assert!(matches!(err, ModelError::Engine { .. }), "{msg}");
    assert!(msg.contains("--features onnxruntime") && msg.contains("engine = \"tract\""), "{msg}");
}

/// ONNX Runtime's library missing, not ONNX Runtime at all, or older than the C API vigil
/// needs: each a refusal of the model that names the library and says what to do, never a
/// panic. (Each case is its own process: a process loads the library once.)
#[cfg(feature = "onnxruntime")]
#[test]
fn a_missing_foreign_or_old_onnxruntime_library_is_named() {
    let dir = scratch("engine-library");
    // A library that says it is ONNX Runtime 1.10 (the C API base struct: GetApi, then
    // GetVersionString).
    let old = c_library(
        &dir,
        "libonnxruntime-old",
        r#"
typedef struct { const void *(*get_api)(unsigned); const char *(*version)(void); } base_t;
static const void *get_api(unsigned v) { (void)v; return 0; }
static const char *version(void) { return "1.10.0"; }
static const base_t base = { get_api, version };
const base_t *OrtGetApiBase(void) { return &base; }
"#,
    );
    // And one that is no ONNX Runtime at all.
    let foreign = c_library(&dir, "libforeign", "int not_onnxruntime(void) { return 1; }\n");
    let missing = dir.join("absent/libonnxruntime.so");
    for (library, says) in [
        (missing.to_str().unwrap(), "does not exist"),
        (foreign.to_str().unwrap(), "does not export `OrtGetApiBase`"),
        (old.to_str().unwrap(), "1.10.0"),
    ] {
        let (code, _, stderr) = common::vigil_with(
            &["infer", "--model", "models/mobilenet-v2.toml", "--engine", "onnxruntime", "tests/photos/chelsea.png"],
            &[("ORT_DYLIB_PATH", library)],
        );
        assert_eq!(code, 3, "{stderr}");
        assert!(
            stderr.contains(library)
                && stderr.contains(says)
                && stderr.contains("engine onnxruntime")
                && stderr.contains("ORT_DYLIB_PATH")
                && !stderr.contains("panicked"),
            "{library}: {stderr}"
        );
    }
}

/// A shared library built from C `source` into `dir`, with the C compiler Rust links with.
#[cfg(feature = "onnxruntime")]
fn c_library(dir: &Path, name: &str, source: &str) -> PathBuf {
    let c = dir.join(format!("{name}.c"));
    std::fs::write(&c, source).unwrap();
    let library = dir.join(format!("{name}.so"));
    let built = std::process::Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&library)
        .arg(&c)
        .status()
        .expect("cc, the C compiler, runs");
    assert!(built.success(), "cc failed on {}", c.display());
    library
}

/// `vigil validate` of a device in `dir` whose camera "door" (BlazeFace) has `source` (the
/// keys of its source table): (exit code, everything printed), which must come within 10 s.
fn validate_source(dir: &Path, source: &str) -> (i32, String) {
    let config = dir.join("vigil.toml");
    std::fs::write(
        &config,
        format!(
            "device_id = \"t\"\n[mqtt]\nspool_dir = {spool:?}\n[cameras.door]\nmodel = {model:?}\n\
             [cameras.door.source]\n{source}\n",
            spool = dir.join("spool"),
            model = root().join("models/blazeface.toml"),
        ),
    )
    .unwrap();
    let started = std::time::Instant::now();
    let (code, out, err) = vigil(&["validate", "--config", config.to_str().unwrap()]);
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "{:?}", started.elapsed());
    (code, format!("{out}{err}"))
}

/// Makes a FIFO (named pipe) at `path`: opening it for reading would wait for a writer.
fn fifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a NUL-terminated path and a mode.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo {}", path.display());
}

/// A model file that never ends (`/dev/zero`), a 3 GB sparse `.onnx`, a FIFO, a folder: each
/// refused from what it is, naming it, before a byte is read (it was all of it read into
/// memory first, or a wait for ever on the FIFO).
#[test]
fn model_files_that_are_not_small_regular_files_are_refused_before_reading() {
    let dir = scratch("endless-model");
    let sparse = dir.join("sparse.onnx");
    std::fs::File::create(&sparse).unwrap().set_len(3 << 30).unwrap();
    fifo(&dir.join("fifo.onnx"));
    std::fs::create_dir_all(dir.join("folder.onnx")).unwrap();
    for (file, why) in [
        ("/dev/zero".to_string(), "a device, not a regular file"),
        (sparse.display().to_string(), "3221225472 bytes, larger than the limit of"),
        (dir.join("fifo.onnx").display().to_string(), "a FIFO (named pipe), not a regular file"),
        (dir.join("folder.onnx").display().to_string(), "a folder, not a file"),
    ] {
        let m = variant(&dir, "blazeface.toml", |t| {
            t.replace(&format!("{}/blazeface.onnx", root().join("models").display()), &file)
        });
        let started = std::time::Instant::now();
        let (err, msg) = load_err(&m);
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "{file}: {:?}", started.elapsed());
        assert!(matches!(err, ModelError::Io { .. }), "{msg}");
        assert!(msg.contains(&file) && msg.contains(why), "{msg}");
        assert_eq!(msg.matches(why).count(), 1, "said once: {msg}");
    }
}

/// `vigil validate` of a replay camera whose folder holds a 3 GB sparse `.jpg`, or whose
/// path is `/dev/zero` under an image's name, or a FIFO: refused at once, naming the file.
#[test]
fn replay_images_that_never_end_are_refused_by_validate() {
    let dir = scratch("endless-replay");
    let frames = dir.join("frames");
    std::fs::create_dir_all(&frames).unwrap();
    std::fs::copy(root().join("tests/photos/chelsea.png"), frames.join("a.png")).unwrap();
    std::fs::File::create(frames.join("b.jpg")).unwrap().set_len(3 << 30).unwrap();
    std::os::unix::fs::symlink("/dev/zero", dir.join("zero.jpg")).unwrap();
    fifo(&dir.join("pipe.png"));
    for (path, why) in [
        (frames.clone(), "b.jpg is not a readable image: 3221225472 bytes, larger than the limit of"),
        (dir.join("zero.jpg"), "zero.jpg is not a readable image: a device, not a regular file"),
        (dir.join("pipe.png"), "pipe.png is not a readable image: a FIFO (named pipe), not a regular file"),
    ] {
        let (code, out) = validate_source(&dir, &format!("kind = \"replay\"\npath = {path:?}"));
        assert_eq!(code, 78, "{out}");
        assert!(out.contains(why), "{out}");
    }
}

/// A camera's `password_file` that is a FIFO is refused without waiting for a writer; an
/// empty one is refused; one with notes after the password gives its first line.
#[test]
fn camera_password_files_are_read_safely() {
    let dir = scratch("password-files");
    fifo(&dir.join("fifo"));
    std::fs::write(dir.join("empty"), "\n").unwrap();
    let validate = |file: &str| {
        let source = format!(
            "kind = \"mjpeg\"\nurl = \"http://127.0.0.1:9/stream\"\nusername = \"u\"\npassword_file = {:?}",
            dir.join(file)
        );
        validate_source(&dir, &source)
    };
    let (code, out) = validate("fifo");
    assert_eq!(code, 78, "{out}");
    assert!(out.contains("cameras.door.source.password_file: cannot read") && out.contains("a FIFO"), "{out}");
    let (code, out) = validate("empty");
    assert_eq!(code, 78, "{out}");
    assert!(out.contains("holds no password on its first line"), "{out}");
}

/// An image argument that is a folder is named once, not "Is a directory … Is a directory".
#[test]
fn an_image_that_is_a_folder_is_named_once() {
    let dir = scratch("image-folder");
    let model = root().join("models/blazeface.toml");
    let (code, _, stderr) = vigil(&["infer", "--model", model.to_str().unwrap(), dir.to_str().unwrap()]);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(stderr.matches("a folder, not a file").count(), 1, "{stderr}");
    assert!(!stderr.contains("os error 21"), "{stderr}");
}
