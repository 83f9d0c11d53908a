//! One camera's pipeline in this process, with the real model (NanoDet-m) on real photos:
//! several frames in flight give exactly the messages of one at a time, and motion gating
//! skips a static scene yet reports what enters it and never ends what stands still.
//!
//! The messages are read from the channel the publisher would read (the MQTT side has its
//! own tests in tests/daemon.rs). The replay hands over the next frame only once inference
//! took the last, so no frame is dropped and two runs see the same frames.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use image::RgbImage;
use serde_json::Value;
use vigil::config::Config;
use vigil::daemon::pipeline::{Pipeline, PipelineSpec};
use vigil::model::{Engine, Model};
use vigil::mqtt::journal::{EventJournal, Sequence};
use vigil::mqtt::Topics;
use vigil::source::SourceSettings;

/// What one run published, in order, and its counters.
struct Run {
    messages: Vec<(String, Value)>,
    frames: u64,
    inferred: u64,
    gated: u64,
}

impl Run {
    fn on(&self, kind: &str) -> Vec<&Value> {
        self.messages.iter().filter(|(t, _)| t.ends_with(&format!("/{kind}"))).map(|(_, v)| v).collect()
    }

    fn events(&self, kind: &str) -> Vec<&Value> {
        self.on("events").into_iter().filter(|e| e["type"] == kind).collect()
    }
}

fn photo(name: &str) -> RgbImage {
    image::open(common::root().join("tests/photos").join(name)).unwrap().into_rgb8()
}

/// Writes `frames` as numbered PNGs into a fresh folder.
fn write_frames(dir: &Path, frames: &[RgbImage]) -> PathBuf {
    let folder = dir.join("frames");
    std::fs::create_dir_all(&folder).unwrap();
    for (i, f) in frames.iter().enumerate() {
        f.save(folder.join(format!("{i:04}.png"))).unwrap();
    }
    folder
}

fn run(dir: &Path, frames: &Path, camera_keys: &str) -> Run {
    run_on(dir, frames, camera_keys, Engine::Tract)
}

fn run_on(dir: &Path, frames: &Path, camera_keys: &str, engine: Engine) -> Run {
    run_model(dir, frames, camera_keys, engine, "models/nanodet-m.toml")
}

fn run_model(dir: &Path, frames: &Path, camera_keys: &str, engine: Engine, manifest: &str) -> Run {
    let source = format!("source = {{ kind = \"replay\", path = {frames:?}, loop = false }}");
    let (pipeline, mut messages) = start(dir, &format!("fps = 1000\n{camera_keys}\n{source}"), engine, manifest);
    let mut got = Vec::new();
    // Ends when the replay has run out and the pipeline has finished with it.
    while let Some(m) = messages.blocking_recv() {
        got.push((m.topic, serde_json::from_slice(&m.payload).unwrap()));
    }
    let counters = pipeline.counters.clone();
    pipeline.join();
    Run {
        messages: got,
        frames: counters.frames.load(Ordering::Relaxed),
        inferred: counters.inferred.load(Ordering::Relaxed),
        gated: counters.gated.load(Ordering::Relaxed),
    }
}

/// Starts camera `cam` with `camera_keys` (its source among them; `fps` 1000 unless they say)
/// and `manifest`'s model; a replay source hands over each frame only once inference took
/// the last.
fn start(
    dir: &Path,
    camera_keys: &str,
    engine: Engine,
    manifest: &str,
) -> (Pipeline, tokio::sync::mpsc::Receiver<vigil::mqtt::publisher::Message>) {
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let root = common::root();
    // Each run its own journal, so that each numbers its events from 1.
    let spool = dir.join(format!("spool-{}", RUNS.fetch_add(1, Ordering::Relaxed)));
    let text = format!(
        r#"
device_id = "test"
[mqtt]
spool_dir = {spool:?}
[cameras.cam]
model = {model:?}
{fps}
{camera_keys}
"#,
        fps = if camera_keys.lines().any(|l| l.starts_with("fps")) { "" } else { "fps = 1000" },
        spool = spool,
        model = root.join(manifest),
    );
    let config = Config::from_toml(&text, dir, &[]).unwrap_or_else(|p| panic!("{p:#?}"));
    let mut settings = config.cameras["cam"].clone();
    if let SourceSettings::Replay(replay) = &mut settings.source {
        replay.follow_inference = true;
    }
    let model = Arc::new(Model::load_on(&settings.model, Some(engine)).unwrap_or_else(|e| panic!("{e}")));
    let journal = EventJournal::open(&spool, 1 << 20).unwrap().journal;
    let sequence = Arc::new(Sequence::new(Arc::new(Mutex::new(journal))));
    let (out, messages) = tokio::sync::mpsc::channel(64);
    let pipeline = Pipeline::start(PipelineSpec {
        camera: "cam",
        device: "test",
        settings: &settings,
        model,
        topics: &Topics { prefix: "vigil/test".into() },
        qos: rumqttc::QoS::AtLeastOnce,
        max_packet: 1 << 20,
        out,
        sequence,
        cpu_share: 2,
    })
    .unwrap();
    (pipeline, messages)
}

/// A message without what differs from run to run (clock readings).
fn steady(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        for key in ["ts", "captured_at", "inference_ms", "first_seen", "last_seen"] {
            o.remove(key);
        }
        for (_, inner) in o.iter_mut() {
            *inner = steady(inner.take());
        }
    } else if let Some(a) = v.as_array_mut() {
        for inner in a.iter_mut() {
            *inner = steady(inner.take());
        }
    }
    v
}

/// BlazeFace's six face points travel with its detections and with the tracker's events,
/// as an object from point name to {x, y} in the photo's pixels.
#[test]
fn keypoints_are_published_with_detections_and_events() {
    let dir = common::scratch("keypoints");
    let astronaut = photo("astronaut.png");
    let frames = write_frames(&dir, &[astronaut.clone(), astronaut.clone(), astronaut.clone(), astronaut]);
    let run = run_model(&dir, &frames, "", Engine::Tract, "models/blazeface.toml");
    let names = ["left_ear_tragion", "left_eye", "mouth_centre", "nose_tip", "right_ear_tragion", "right_eye"];
    let check = |points: &Value, at: &str| {
        let points = points.as_object().unwrap_or_else(|| panic!("{at}: no keypoints object"));
        assert_eq!(points.keys().map(String::as_str).collect::<Vec<_>>(), names, "{at}");
        for (name, p) in points {
            let (x, y) = (p["x"].as_f64().unwrap(), p["y"].as_f64().unwrap());
            // Her face: x 177–274, y 82–177 in the 512×512 photo (tests/models.rs).
            assert!((170.0..280.0).contains(&x) && (80.0..180.0).contains(&y), "{at}: {name} at {x}, {y}");
            assert!(p.get("score").is_none(), "{at}: BlazeFace gives no per-point score");
        }
    };
    let detections = run.on("detections");
    assert_eq!(detections.len(), 4);
    for (i, d) in detections.iter().enumerate() {
        check(&d["detections"][0]["keypoints"], &format!("detections of frame {i}"));
    }
    let new = run.events("new");
    assert_eq!(new.len(), 1, "{:?}", run.on("events"));
    check(&new[0]["keypoints"], "the new event");
}

#[test]
fn frames_in_flight_publish_what_one_at_a_time_publishes() {
    let dir = common::scratch("pipeline-order");
    // Objects come and go: people, a cup, a motorcycle, a cat, each for three frames.
    let photos = ["astronaut.png", "coffee.png", "motorcycle_left.png", "group.png", "chelsea.png", "coffee.png"];
    let frames: Vec<RgbImage> = photos.iter().flat_map(|p| std::iter::repeat_n(photo(p), 3)).collect();
    let folder = write_frames(&dir, &frames);

    let one = run(&dir, &folder, "threads = 1");
    let two = run(&dir, &folder, "threads = 2\nin_flight = 2");
    let four = run(&dir, &folder, "threads = 4\nin_flight = 4");
    for r in [&one, &two, &four] {
        assert_eq!((r.frames, r.inferred, r.gated), (18, 18, 0), "every frame is inferred");
    }
    let numbers: Vec<u64> = four.on("detections").iter().map(|d| d["frame"].as_u64().unwrap()).collect();
    assert_eq!(numbers, (1..=18).collect::<Vec<_>>(), "detections leave in frame order");
    assert!(one.events("new").len() >= 4, "the replay makes objects appear: {:?}", one.events("new"));
    assert!(!one.events("end").is_empty());
    let plain = |r: &Run| r.messages.iter().map(|(t, v)| (t.clone(), steady(v.clone()))).collect::<Vec<_>>();
    let reference = plain(&one);
    for (name, other) in [("2 in flight", &two), ("4 in flight", &four)] {
        let other = plain(other);
        assert_eq!(other.len(), reference.len(), "{name}: message count");
        for (i, (a, b)) in reference.iter().zip(&other).enumerate() {
            assert_eq!(a, b, "{name}: message {i} differs");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The onnxruntime engine in the camera's path, two frames in flight: the messages tract's
/// one-at-a-time run publishes, numbers within the engines' rounding, the engine named.
#[cfg(feature = "onnxruntime")]
#[test]
fn the_onnxruntime_engine_publishes_what_tract_publishes() {
    let dir = common::scratch("pipeline-ort");
    let photos = ["astronaut.png", "coffee.png", "motorcycle_left.png", "group.png", "chelsea.png"];
    let frames: Vec<RgbImage> = photos.iter().flat_map(|p| std::iter::repeat_n(photo(p), 3)).collect();
    let folder = write_frames(&dir, &frames);
    let tract = run(&dir, &folder, "threads = 1");
    let ort = run_on(&dir, &folder, "threads = 2\nin_flight = 2", Engine::Onnxruntime);
    assert_eq!((ort.frames, ort.inferred), (15, 15));
    assert_eq!(ort.messages.len(), tract.messages.len(), "message count");
    let detections = ort.on("detections");
    assert_eq!(detections.len(), 15);
    assert!(!ort.events("new").is_empty(), "the replay makes objects appear");
    assert!(detections.iter().all(|d| d["model"]["engine"] == "onnxruntime"), "{}", detections[0]);
    assert!(tract.on("detections").iter().all(|d| d["model"]["engine"] == "tract"));
    for (i, ((ta, a), (tb, b))) in tract.messages.iter().zip(&ort.messages).enumerate() {
        assert_eq!(ta, tb, "message {i}: topic");
        assert_close(&steady(a.clone()), &steady(b.clone()), &format!("message {i} on {ta}"));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `a` and `b` alike but for the engine's name, and numbers within 1e-3 or 1e-4 of their size
/// (the engines' float rounding: a score, a box corner in pixels).
#[cfg(feature = "onnxruntime")]
fn assert_close(a: &Value, b: &Value, at: &str) {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            assert!((x - y).abs() <= 1e-3_f64.max(x.abs() * 1e-4), "{at}: {x} vs {y}");
        }
        (Value::Array(x), Value::Array(y)) => {
            assert_eq!(x.len(), y.len(), "{at}: {a} vs {b}");
            for (i, (x, y)) in x.iter().zip(y).enumerate() {
                assert_close(x, y, &format!("{at}[{i}]"));
            }
        }
        (Value::Object(x), Value::Object(y)) => {
            assert_eq!(x.keys().collect::<Vec<_>>(), y.keys().collect::<Vec<_>>(), "{at}");
            for (k, v) in x {
                if k != "engine" {
                    assert_close(v, &y[k], &format!("{at}.{k}"));
                }
            }
        }
        _ => assert_eq!(a, b, "{at}"),
    }
}

/// `scene` with `object` shrunk to `size` pixels square and pasted at (x, y).
fn with_object(scene: &RgbImage, object: &RgbImage, size: u32, x: i64, y: i64) -> RgbImage {
    let small = image::imageops::resize(object, size, size, image::imageops::FilterType::Triangle);
    let mut out = scene.clone();
    image::imageops::overlay(&mut out, &small, x, y);
    out
}

#[test]
fn motion_gating_skips_a_still_scene_and_reports_what_enters_it() {
    let dir = common::scratch("pipeline-motion");
    // A still table with a cup (an object standing still from the first frame), then a
    // person enters and stays.
    let scene = photo("coffee.png");
    let person = photo("astronaut.png");
    let mut frames = vec![scene.clone(); 40];
    frames.extend(std::iter::repeat_n(with_object(&scene, &person, 200, 390, 190), 60));
    let folder = write_frames(&dir, &frames);

    let every = run(&dir, &folder, "threads = 1");
    // max_interval far beyond the replay: only motion and the tracker run the model.
    let gated = run(&dir, &folder, "threads = 1\nmotion = { max_interval_s = 3600 }");
    // Two frames in flight: the gate still decides as with one.
    let gated_two = run(&dir, &folder, "threads = 2\nin_flight = 2\nmotion = { max_interval_s = 3600 }");
    assert_eq!((every.frames, every.inferred, every.gated), (100, 100, 0));
    assert_eq!(gated.frames, 100);
    assert_eq!(gated.inferred + gated.gated, 100);
    eprintln!("motion gating: the model ran on {} of 100 frames", gated.inferred);
    assert!(
        gated.inferred * 3 <= every.inferred,
        "gating ran the model on {} of 100 frames; a still scene should skip most",
        gated.inferred
    );

    let labels = |r: &Run, kind: &str| -> Vec<String> {
        r.events(kind).iter().map(|e| e["label"].as_str().unwrap().to_string()).collect()
    };
    let first = |r: &Run, label: &str| -> u64 {
        r.events("new").iter().find(|e| e["label"] == label).map(|e| e["frame"].as_u64().unwrap()).unwrap()
    };
    assert!(labels(&every, "new").contains(&"person".to_string()), "{:?}", labels(&every, "new"));
    assert_eq!(labels(&gated, "new"), labels(&every, "new"), "the same objects appear, once each");
    assert!(first(&gated, "person") > 40 && first(&gated, "person") <= 43, "the person is reported on entering");
    assert_eq!(first(&gated, "person"), first(&every, "person"));
    assert_eq!(
        (gated_two.frames, gated_two.inferred, gated_two.gated),
        (gated.frames, gated.inferred, gated.gated),
        "two frames in flight gate the same frames"
    );
    assert_eq!(labels(&gated_two, "new"), labels(&gated, "new"));
    // Objects end only when the replay does, in every run.
    for r in [&every, &gated, &gated_two] {
        for end in r.events("end") {
            assert_eq!(end["frame"], 100, "an object standing still was ended early: {end}");
        }
        assert_eq!(labels(r, "end").len(), labels(r, "new").len());
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The labels of a `detections` message, sorted.
fn labels_of(detections: &Value) -> Vec<String> {
    let mut labels: Vec<String> =
        detections["detections"].as_array().unwrap().iter().map(|d| d["label"].as_str().unwrap().to_string()).collect();
    labels.sort();
    labels
}

/// Messages from a running pipeline until `done` says so; fails after 90 s.
fn receive_until(
    messages: &mut tokio::sync::mpsc::Receiver<vigil::mqtt::publisher::Message>,
    mut done: impl FnMut(&[(String, Value)]) -> bool,
) -> Vec<(String, Value)> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    let mut got = Vec::new();
    while !done(&got) {
        match messages.try_recv() {
            Ok(m) => got.push((m.topic, serde_json::from_slice(&m.payload).unwrap())),
            Err(tokio::sync::mpsc::error::TryRecvError::Empty) => {
                std::thread::sleep(std::time::Duration::from_millis(10))
            }
            Err(e) => panic!("the pipeline ended: {e}"),
        }
        assert!(std::time::Instant::now() < deadline, "timed out; received {got:?}");
    }
    got
}

/// An HTTP MJPEG camera: the pipeline publishes the labels a replay of the same JPEG frames
/// publishes; when the camera cuts the stream in the middle of a frame, the source reopens it
/// and detections go on, with no frame made of the broken part.
#[test]
fn an_mjpeg_camera_publishes_what_a_replay_of_its_frames_does_and_outlives_a_cut() {
    let dir = common::scratch("pipeline-mjpeg");
    let jpegs = [common::mjpeg::jpeg_of("astronaut.png"), common::mjpeg::jpeg_of("motorcycle_left.png")];
    let expected: Vec<Vec<String>> = jpegs
        .iter()
        .enumerate()
        .map(|(i, jpeg)| {
            let file = dir.join(format!("photo-{i}.jpg"));
            std::fs::write(&file, jpeg).unwrap();
            let run = run(&dir, &file, "");
            labels_of(run.on("detections")[0])
        })
        .collect();
    assert!(!expected[0].is_empty() && expected[0] != expected[1], "the photos must be told apart: {expected:?}");

    let camera = common::mjpeg::serve(jpegs[0].clone(), jpegs[1].clone(), 10);
    let (port, streams) = (camera.port, camera.streams);
    let url = format!("http://vigil:s3cret@127.0.0.1:{port}/stream");
    let (pipeline, mut messages) =
        start(&dir, &format!("source = {{ kind = \"mjpeg\", url = {url:?} }}"), Engine::Tract, "models/nanodet-m.toml");
    let got = receive_until(&mut messages, |got| {
        got.last().is_some_and(|(topic, m)| topic.ends_with("/detections") && labels_of(m) == expected[1])
    });
    let stats = pipeline.stats(0, std::time::Duration::from_secs(1));
    pipeline.request_stop();
    pipeline.join();
    let seen: Vec<Vec<String>> =
        got.iter().filter(|(t, _)| t.ends_with("/detections")).map(|(_, m)| labels_of(m)).collect();
    assert_eq!(seen[0], expected[0], "the first frames are the first photo's");
    assert!(seen.iter().all(|s| expected.contains(s)), "only whole frames: {seen:?}");
    assert_eq!(streams.load(Ordering::Relaxed), 2, "the cut stream was opened again");
    assert!(stats.source_running, "{stats:?}");
    assert_eq!(stats.source_reconnects, 1, "{stats:?}");
}

/// A wrong password and a wrong path: the source says so (not running, no frames, nothing
/// counted as a reconnection) and keeps trying, while a camera beside them runs (with its
/// password from a file, its stream in chunked transfer encoding).
#[test]
fn an_mjpeg_camera_refusing_the_password_or_the_path_is_not_running() {
    let dir = common::scratch("pipeline-mjpeg-refused");
    let jpeg = common::mjpeg::jpeg_of("astronaut.png");
    let camera = common::mjpeg::serve(jpeg.clone(), jpeg, 1_000_000);
    let port = camera.port;
    let source = |url: String| format!("source = {{ kind = \"mjpeg\", url = {url:?} }}");
    let right = dir.join("right-password");
    std::fs::write(&right, "s3cret\n").unwrap();
    let (good, mut good_messages) = start(
        &dir,
        &format!(
            "source = {{ kind = \"mjpeg\", url = \"http://127.0.0.1:{port}/chunked\", username = \"vigil\", password_file = {right:?} }}"
        ),
        Engine::Tract,
        "models/nanodet-m.toml",
    );
    let password = dir.join("password");
    std::fs::write(&password, "wrong\n").unwrap();
    let wrong_password = format!(
        "source = {{ kind = \"mjpeg\", url = \"http://127.0.0.1:{port}/stream\", username = \"vigil\", password_file = {password:?} }}"
    );
    let (refused, _refused_messages) = start(&dir, &wrong_password, Engine::Tract, "models/nanodet-m.toml");
    let (missing, _missing_messages) = start(
        &dir,
        &source(format!("http://vigil:s3cret@127.0.0.1:{port}/no-such-path")),
        Engine::Tract,
        "models/nanodet-m.toml",
    );
    let began = std::time::Instant::now();
    receive_until(&mut good_messages, |got| {
        got.iter().filter(|(t, _)| t.ends_with("/detections")).count() >= 3
            && began.elapsed() > std::time::Duration::from_millis(2500)
    });
    let interval = std::time::Duration::from_secs(1);
    for (name, pipeline) in [("wrong password", &refused), ("wrong path", &missing)] {
        let stats = pipeline.stats(0, interval);
        assert!(!stats.source_running && stats.frames == 0 && stats.source_reconnects == 0, "{name}: {stats:?}");
    }
    assert!(good.stats(0, interval).source_running);
    assert!(camera.refusals.load(Ordering::Relaxed) >= 4, "each refused camera tried again (at 0 s and 1 s)");
    for pipeline in [good, refused, missing] {
        pipeline.request_stop();
        pipeline.join();
    }
}

/// A test camera whose snapshot URLs answer with a JPEG of the motorcycle photo, and the
/// labels a replay of that same JPEG publishes.
fn motorcycle_snapshot_camera(dir: &Path) -> (Vec<String>, common::mjpeg::Camera) {
    let jpeg = common::mjpeg::jpeg_of("motorcycle_left.png");
    let file = dir.join("motorcycle.jpg");
    std::fs::write(&file, &jpeg).unwrap();
    let expected = labels_of(run(dir, &file, "").on("detections")[0]);
    (expected, common::mjpeg::serve(jpeg.clone(), jpeg, 1))
}

/// A snapshot URL (one JPEG per request): asked again at the camera's `fps`, no faster, and
/// each answer is a frame.
#[test]
fn an_mjpeg_snapshot_url_is_polled_at_the_camera_rate() {
    let dir = common::scratch("pipeline-snapshot");
    let (expected, camera) = motorcycle_snapshot_camera(&dir);
    let url = format!("http://vigil:s3cret@127.0.0.1:{}/snapshot.jpg", camera.port);
    let began = std::time::Instant::now();
    let (pipeline, mut messages) = start(
        &dir,
        &format!("fps = 4\nsource = {{ kind = \"mjpeg\", url = {url:?} }}"),
        Engine::Tract,
        "models/nanodet-m.toml",
    );
    let got = receive_until(&mut messages, |got| got.iter().filter(|(t, _)| t.ends_with("/detections")).count() >= 6);
    let elapsed = began.elapsed().as_secs_f64();
    pipeline.request_stop();
    pipeline.join();
    let asked = camera.snapshots.load(Ordering::Relaxed);
    for (_, d) in got.iter().filter(|(t, _)| t.ends_with("/detections")) {
        assert_eq!(labels_of(d), expected);
    }
    assert!(asked >= 6 && asked as f64 <= 4.0 * elapsed + 2.0, "{asked} snapshots in {elapsed:.1} s at 4 fps");
}

/// Collection's uncertain band below the camera's threshold: the model decodes down to the
/// band, the frame is collected with those detections in its sidecar, and what is published
/// still keeps to the threshold (a replayed JPEG, saved byte for byte).
#[test]
fn collection_sees_below_the_threshold_and_mqtt_does_not() {
    let dir = common::scratch("pipeline-collect-band");
    let frame = dir.join("moto.jpg");
    let mut jpeg = std::io::Cursor::new(Vec::new());
    photo("motorcycle_left.png").write_to(&mut jpeg, image::ImageFormat::Jpeg).unwrap();
    std::fs::write(&frame, jpeg.get_ref()).unwrap();
    let collect = dir.join("collect");
    let keys = format!(
        "min_score = 0.5\ncollect = {{ path = {collect:?}, uncertain = [0.1, 0.45], min_interval_s = 0, \
         near_duplicate = 0, background_every_s = 0, new_tracks = false, prelabel_score = 0.3 }}"
    );
    let run = run(&dir, &frame, &keys);
    let published: Vec<f64> = run.on("detections")[0]["detections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["score"].as_f64().unwrap())
        .collect();
    assert!(!published.is_empty() && published.iter().all(|s| *s >= 0.5), "{published:?}");
    let folder = vigil::dataset::folder::open(&collect.join("cam")).unwrap();
    let (items, problems) = vigil::dataset::folder::items(&folder, true);
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(items.len(), 1);
    let s = &items[0].sidecar;
    assert!(s.detections.iter().any(|d| (0.1..0.45).contains(&d.score)), "{:?}", s.detections);
    assert!(s.detections.iter().all(|d| d.score >= 0.1));
    assert_eq!(std::fs::read(items[0].image()).unwrap(), jpeg.into_inner(), "the replayed JPEG, byte for byte");
}

/// A snapshot URL that answers twice, then trickles its third snapshot a byte a second: the
/// answer's one deadline (head and body, 15 s) ends it, and the camera is no longer said to
/// be running (each byte used to reset the wait, so it never ended).
#[test]
fn an_mjpeg_snapshot_trickled_a_byte_a_second_times_out() {
    use common::mjpeg::Hostile;
    let dir = common::scratch("pipeline-trickle");
    let camera = common::mjpeg::serve_hostile(
        common::mjpeg::jpeg_of("motorcycle_left.png"),
        Hostile::TrickledSnapshots { good: 2 },
    );
    let url = format!("http://127.0.0.1:{}/snapshot.jpg", camera.port);
    let (pipeline, mut messages) = start(
        &dir,
        &format!("fps = 4\nsource = {{ kind = \"mjpeg\", url = {url:?} }}"),
        Engine::Tract,
        "models/nanodet-m.toml",
    );
    receive_until(&mut messages, |got| got.iter().filter(|(t, _)| t.ends_with("/detections")).count() >= 2);
    let interval = std::time::Duration::from_secs(1);
    assert!(pipeline.stats(0, interval).source_running);
    let trickling = std::time::Instant::now();
    while pipeline.stats(0, interval).source_running {
        assert!(trickling.elapsed() < std::time::Duration::from_secs(25), "still running after 25 s of trickle");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(trickling.elapsed() > std::time::Duration::from_secs(10), "{:?}", trickling.elapsed());
    pipeline.request_stop();
    pipeline.join();
}

/// A stream whose parts are JPEGs cut in half, each with a Content-Length that fits: no
/// part becomes a frame (the decoder alone would fill the missing rows with grey), and the
/// camera is not said to be running.
#[test]
fn an_mjpeg_stream_of_cut_jpegs_gives_no_frame() {
    use common::mjpeg::Hostile;
    let dir = common::scratch("pipeline-cut-jpegs");
    let camera = common::mjpeg::serve_hostile(common::mjpeg::jpeg_of("astronaut.png"), Hostile::CutJpegs);
    let url = format!("http://127.0.0.1:{}/stream", camera.port);
    let (pipeline, _messages) =
        start(&dir, &format!("source = {{ kind = \"mjpeg\", url = {url:?} }}"), Engine::Tract, "models/nanodet-m.toml");
    let began = std::time::Instant::now();
    while camera.streams.load(Ordering::Relaxed) < 2 {
        assert!(began.elapsed() < std::time::Duration::from_secs(20), "the source did not try again");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let stats = pipeline.stats(0, std::time::Duration::from_secs(1));
    assert!(!stats.source_running && stats.frames == 0, "{stats:?}");
    pipeline.request_stop();
    pipeline.join();
}

/// An RTSP camera (GStreamer's RTSP server streaming a photo as H.264 High profile, Digest
/// authentication): the pipeline publishes the labels a replay of the photo publishes, with
/// capture times from the stream's clock; when the server is killed and started again, the
/// source reconnects and detections go on.
#[test]
fn an_rtsp_camera_publishes_what_a_replay_of_its_photo_does_and_outlives_a_restart() {
    let dir = common::scratch("pipeline-rtsp");
    let expected = labels_of(run(&dir, &common::root().join("tests/photos/astronaut.png"), "").on("detections")[0]);
    assert!(!expected.is_empty());
    let mut server = common::rtsp::Server::start("astronaut.png", "digest");
    let url = format!("rtsp://vigil:s3cret@127.0.0.1:{}/stream", server.port);
    let (pipeline, mut messages) =
        start(&dir, &format!("source = {{ kind = \"rtsp\", url = {url:?} }}"), Engine::Tract, "models/nanodet-m.toml");
    let detections = |got: &[(String, Value)]| got.iter().filter(|(t, _)| t.ends_with("/detections")).count();
    let before = receive_until(&mut messages, |got| detections(got) >= 5);
    server.restart();
    let (restarted, restarted_ms) = (std::time::Instant::now(), vigil::source::unix_ms());
    let after = receive_until(&mut messages, |got| {
        let since =
            got.iter().filter(|(t, d)| t.ends_with("/detections") && d["captured_at"].as_u64() > Some(restarted_ms));
        since.count() >= 5
    });
    let stats = pipeline.stats(0, std::time::Duration::from_secs(1));
    pipeline.request_stop();
    pipeline.join();
    assert!(stats.source_running && stats.source_reconnects == 1, "{stats:?}");
    assert!(restarted.elapsed() < std::time::Duration::from_secs(60), "reconnected within the backoff's first steps");
    let mut last_captured = 0;
    for (_, d) in before.iter().chain(&after).filter(|(t, _)| t.ends_with("/detections")) {
        assert_eq!(labels_of(d), expected, "{d}");
        assert_eq!((d["width"].as_u64(), d["height"].as_u64()), (Some(512), Some(512)), "{d}");
        let (captured, ts) = (d["captured_at"].as_u64().unwrap(), d["ts"].as_u64().unwrap());
        assert!(captured <= ts && ts - captured < 5_000, "captured_at {captured} against ts {ts}");
        assert!(captured > last_captured, "capture times move forward: {captured} after {last_captured}");
        last_captured = captured;
    }
}

/// A wrong password, a wrong path and a codec vigil does not decode (RTP/JPEG): each source
/// is not running, with no frames, and keeps trying, while a camera beside them runs (over
/// UDP, its password from a file, Basic authentication).
#[test]
fn an_rtsp_camera_refusing_the_password_the_path_or_the_codec_is_not_running() {
    let dir = common::scratch("pipeline-rtsp-refused");
    let server = common::rtsp::Server::start("astronaut.png", "basic");
    let port = server.port;
    let right = dir.join("right-password");
    std::fs::write(&right, "s3cret\n").unwrap();
    let (good, mut good_messages) = start(
        &dir,
        &format!(
            "source = {{ kind = \"rtsp\", url = \"rtsp://127.0.0.1:{port}/stream\", transport = \"udp\", \
             username = \"vigil\", password_file = {right:?} }}"
        ),
        Engine::Tract,
        "models/nanodet-m.toml",
    );
    let source = |url: String| format!("source = {{ kind = \"rtsp\", url = {url:?} }}");
    let refused: Vec<(&str, Pipeline, _)> = [
        ("wrong password", format!("rtsp://vigil:hunter2@127.0.0.1:{port}/stream")),
        ("wrong path", format!("rtsp://vigil:s3cret@127.0.0.1:{port}/no-such-path")),
        ("JPEG video", format!("rtsp://vigil:s3cret@127.0.0.1:{port}/jpeg")),
    ]
    .into_iter()
    .map(|(name, url)| {
        let (pipeline, messages) = start(&dir, &source(url), Engine::Tract, "models/nanodet-m.toml");
        (name, pipeline, messages)
    })
    .collect();
    let began = std::time::Instant::now();
    let got = receive_until(&mut good_messages, |got| {
        got.iter().filter(|(t, _)| t.ends_with("/detections")).count() >= 3
            && began.elapsed() > std::time::Duration::from_millis(2500)
    });
    let expected = labels_of(run(&dir, &common::root().join("tests/photos/astronaut.png"), "").on("detections")[0]);
    for (_, d) in got.iter().filter(|(t, _)| t.ends_with("/detections")) {
        assert_eq!(labels_of(d), expected, "{d}");
    }
    let interval = std::time::Duration::from_secs(1);
    assert!(good.stats(0, interval).source_running);
    for (name, pipeline, _) in &refused {
        let stats = pipeline.stats(0, interval);
        assert!(!stats.source_running && stats.frames == 0 && stats.source_reconnects == 0, "{name}: {stats:?}");
    }
    good.request_stop();
    good.join();
    for (_, pipeline, _) in refused {
        pipeline.request_stop();
        pipeline.join();
    }
}

/// A snapshot URL behind Digest authentication only, as IP cameras' snapshot URLs are: the
/// challenge is answered and each snapshot is a frame; with a wrong password the camera is
/// not running.
#[test]
fn an_mjpeg_snapshot_behind_digest_authentication_is_answered() {
    let dir = common::scratch("pipeline-digest");
    let (expected, camera) = motorcycle_snapshot_camera(&dir);
    let source = |password: &str| {
        let url = format!("http://vigil:{password}@127.0.0.1:{}/digest.jpg", camera.port);
        format!("fps = 4\nsource = {{ kind = \"mjpeg\", url = {url:?} }}")
    };
    let (good, mut messages) = start(&dir, &source("s3cret"), Engine::Tract, "models/nanodet-m.toml");
    let (wrong, _wrong_messages) = start(&dir, &source("hunter2"), Engine::Tract, "models/nanodet-m.toml");
    let got = receive_until(&mut messages, |got| got.iter().filter(|(t, _)| t.ends_with("/detections")).count() >= 4);
    for (_, d) in got.iter().filter(|(t, _)| t.ends_with("/detections")) {
        assert_eq!(labels_of(d), expected);
    }
    let interval = std::time::Duration::from_secs(1);
    assert!(good.stats(0, interval).source_running);
    let stats = wrong.stats(0, interval);
    assert!(!stats.source_running && stats.frames == 0, "{stats:?}");
    assert!(camera.snapshots.load(Ordering::Relaxed) >= 4);
    for pipeline in [good, wrong] {
        pipeline.request_stop();
        pipeline.join();
    }
}
