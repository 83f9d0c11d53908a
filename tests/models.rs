//! The bundled models on real photos, checked against onnxruntime.
//!
//! Fixtures in tests/fixtures/<case>/ come from tests/fixtures/make_fixtures.py: the
//! input tensor it preprocessed, onnxruntime's raw outputs for it, and its own decoding
//! (written independently of vigil's decoders; Ultralytics' NMS for the YOLO layouts).

mod common;

use std::path::PathBuf;

use common::{root, scratch};
use serde_json::Value;
use vigil::model::{
    max_scaled_diff, preprocess, Candidate, Decoded, Detection, Engine, InputTensor, Keypoint, Model, OutputTensor,
    Prediction,
};

struct Case {
    name: &'static str,
    dir: PathBuf,
    expected: Value,
}

fn case(name: &'static str) -> Case {
    let dir = root().join("tests/fixtures").join(name);
    let text = std::fs::read_to_string(dir.join("expected.json"))
        .unwrap_or_else(|e| panic!("fixture {name}: {e} (run tests/fixtures/make_fixtures.py)"));
    Case { name, dir, expected: serde_json::from_str(&text).unwrap() }
}

impl Case {
    fn model(&self) -> Model {
        self.model_on(Engine::Tract)
    }

    fn model_on(&self, engine: Engine) -> Model {
        let manifest = root().join(self.expected["manifest"].as_str().unwrap());
        let manifest = if self.expected["yolov5_layout"].as_bool() == Some(true) {
            yolov5_layout_model(&manifest)
        } else {
            manifest
        };
        let model = Model::load_on(&manifest, Some(engine)).unwrap_or_else(|e| panic!("{}: {e}", self.name));
        assert_eq!(model.engine(), engine);
        model
    }

    fn photo(&self) -> image::RgbImage {
        image::open(root().join(self.expected["photo"].as_str().unwrap())).unwrap().to_rgb8()
    }

    fn input(&self) -> InputTensor {
        let (shape, data) = vigil::npy::read_f32(&self.dir.join("input.npy")).unwrap();
        InputTensor { shape: shape.try_into().unwrap(), data }
    }

    fn reference_outputs(&self) -> Vec<OutputTensor> {
        let names = self.expected["outputs"].as_array().unwrap();
        names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let (shape, data) = vigil::npy::read_f32(&self.dir.join(format!("out{i}.npy"))).unwrap();
                OutputTensor { name: n.as_str().unwrap().to_string(), shape, data }
            })
            .collect()
    }
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Raw outputs: vigil's engine on the fixture's input equals onnxruntime (Python) within 1e-4.
fn check_raw_outputs(c: &Case, model: &Model) {
    let ours = model.run_raw(&c.input()).unwrap();
    let reference = c.reference_outputs();
    assert_eq!(ours.len(), reference.len(), "{}: output count", c.name);
    use vigil::model::manifest::DecoderSpec;
    for (o, r) in ours.iter().zip(&reference) {
        assert_eq!(o.shape, r.shape, "{}: shape of {}", c.name, r.name);
        match model.manifest.decoder {
            DecoderSpec::End2end { .. } => {
                check_ranked_rows(c.name, &o.data, &r.data, *r.shape.last().unwrap());
                continue;
            }
            DecoderSpec::Detr { .. } => {
                check_query_rows(c.name, &o.data, &r.data, *r.shape.last().unwrap());
                continue;
            }
            _ => {}
        }
        let d = max_scaled_diff(&o.data, &r.data);
        let abs = max_abs_diff(&o.data, &r.data);
        let range = abs / r.data.iter().fold(1f32, |m, v| m.max(v.abs()));
        eprintln!(
            "{} on {}: output {} max difference {abs:.3e} (scaled {d:.3e}, of the output's range {range:.3e})",
            c.name,
            model.engine().name(),
            r.name
        );
        // Each value within 1e-4 of itself (or of 1). Keypoint coordinates are pixels that
        // can sit near 0 after a sum of larger terms (a 4e-3 px difference at x ≈ 2 px), so
        // a pose output is held to 1e-4 of its largest value instead.
        if model.manifest.decoder.keypoints().is_empty() {
            assert!(d <= 1e-4, "{}: output {} differs from onnxruntime by {d} (scaled)", c.name, r.name);
        } else {
            assert!(range <= 1e-4, "{}: output {} differs from onnxruntime by {range} of its range", c.name, r.name);
        }
    }
}

/// An end-to-end output's rows (x1, y1, x2, y2, score, class; best first, the graph's top k):
/// every row of ours is a row of the reference within 1e-4 of its largest value, except where
/// float rounding ranked two near-equal scores the other way. So rows may trade places with
/// a neighbour whose score is within 1e-4, and the last rows may be other rows of the
/// cut-off's score.
fn check_ranked_rows(name: &str, ours: &[f32], reference: &[f32], width: usize) {
    let tolerance = 1e-4 * reference.iter().fold(0f32, |m, v| m.max(v.abs()));
    let (ours, reference): (Vec<&[f32]>, Vec<&[f32]>) =
        (ours.chunks_exact(width).collect(), reference.chunks_exact(width).collect());
    let same = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| (x - y).abs() <= tolerance);
    let last_score = reference.last().unwrap()[4];
    let mut used = vec![false; reference.len()];
    let mut worst = 0f32;
    for (i, row) in ours.iter().enumerate() {
        let near =
            reference.iter().enumerate().find(|(j, r)| !used[*j] && same(row, r) && (r[4] - row[4]).abs() <= 1e-4);
        match near {
            Some((j, r)) => {
                used[j] = true;
                worst = worst.max(row.iter().zip(*r).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max));
                let ahead = reference[..j].iter().filter(|r| r[4] - row[4] > 1e-4).count();
                assert!(ahead <= i, "{name}: row {i} {row:?} is ranked below rows that score more");
            }
            None => assert!(
                (row[4] - last_score).abs() <= 1e-4,
                "{name}: row {i} {row:?} is no row of the reference and not at its cut-off score {last_score}"
            ),
        }
    }
    eprintln!("{name}: end-to-end rows max difference {worst:.3e} (tolerance {tolerance:.3e})");
}

/// A DETR output's queries: the same rows as the reference's within 1e-4 of its largest
/// value, though not always in the same order — the graph picks its queries by a top-k over
/// encoder scores that float rounding can rank the other way where they nearly tie. The
/// order carries nothing the decoder uses (it ranks detections by their own scores).
fn check_query_rows(name: &str, ours: &[f32], reference: &[f32], width: usize) {
    let tolerance = 1e-4 * reference.iter().fold(0f32, |m, v| m.max(v.abs()));
    let reference: Vec<&[f32]> = reference.chunks_exact(width).collect();
    let same = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| (x - y).abs() <= tolerance);
    let mut used = vec![false; reference.len()];
    let mut moved = 0;
    for (i, row) in ours.chunks_exact(width).enumerate() {
        let j = if !used[i] && same(row, reference[i]) {
            i
        } else {
            moved += 1;
            (0..reference.len())
                .find(|&j| !used[j] && same(row, reference[j]))
                .unwrap_or_else(|| panic!("{name}: query {i} {row:?} is no query of the reference"))
        };
        used[j] = true;
    }
    eprintln!("{name}: all {} queries found, {moved} in another place (tolerance {tolerance:.3e})", used.len());
}

/// vigil's preprocessing of the photo equals the reference script's.
fn check_preprocessing(c: &Case, model: &Model) {
    let (ours, _) = preprocess(&c.photo(), &model.manifest.input);
    let reference = c.input();
    assert_eq!(ours.shape, reference.shape, "{}", c.name);
    let d = max_abs_diff(&ours.data, &reference.data);
    assert!(d <= 1e-4, "{}: preprocessed input differs by {d}", c.name);
}

/// The whole pipeline on the photo against the reference decoding.
fn check_decoded(c: &Case, model: &Model) -> Prediction {
    let (prediction, _) = model.predict(&c.photo(), &model.default_params()).unwrap();
    match &prediction {
        Prediction::Classes(ours) => {
            let want = c.expected["classes"].as_array().unwrap();
            assert_eq!(ours.len(), want.len(), "{}: {ours:?}", c.name);
            for (o, w) in ours.iter().zip(want) {
                assert_eq!(o.label, w["label"].as_str().unwrap(), "{}", c.name);
                assert!((o.score as f64 - w["score"].as_f64().unwrap()).abs() <= 1e-3, "{}: {o:?} vs {w}", c.name);
            }
        }
        Prediction::Detections(ours) => {
            let want = c.expected["detections"].as_array().unwrap();
            check_detections(c.name, ours.iter().map(seen).collect(), want, "box");
        }
    }
    prediction
}

/// A detection as the checks compare it: label, score, box corners, keypoints.
type Seen<'a> = (&'a str, f32, [f32; 4], &'a [Keypoint]);

fn seen(d: &Detection) -> Seen<'_> {
    (d.label.as_str(), d.score, [d.bbox.x1, d.bbox.y1, d.bbox.x2, d.bbox.y2], &d.keypoints.points)
}

fn seen_candidate<'a>(labels: &'a [String], c: &'a Candidate) -> Seen<'a> {
    (labels[c.class_id].as_str(), c.score, [c.bbox.x1, c.bbox.y1, c.bbox.x2, c.bbox.y2], &c.keypoints)
}

/// Our detections are the reference's: same count, best first, each one the reference's
/// detection at its place (label, score within 1e-3, box and keypoints within a pixel,
/// keypoint scores within 1e-3) — or at a place nearby when float rounding ranked scores
/// within 1e-4 of each other the other way. `box_key` is "box" (photo pixels, keypoints
/// under "keypoints") or "input_box" (input pixels, "input_keypoints").
fn check_detections(name: &str, ours: Vec<Seen>, want: &[Value], box_key: &str) {
    let show = || format!("{ours:?}\nexpected: {}", serde_json::to_string(want).unwrap());
    assert_eq!(ours.len(), want.len(), "{name}: detection count\n{}", show());
    assert!(ours.windows(2).all(|w| w[0].1 >= w[1].1), "{name}: not best first\n{}", show());
    let keypoint_key = if box_key == "box" { "keypoints" } else { "input_keypoints" };
    let score = |w: &Value| w["score"].as_f64().unwrap();
    let same_keypoints = |ours: &[Keypoint], want: &Value| {
        let want = want.as_array().map(Vec::as_slice).unwrap_or_default();
        ours.len() == want.len()
            && ours.iter().zip(want).all(|(k, w)| {
                let (x, y) = (w[0].as_f64().unwrap(), w[1].as_f64().unwrap());
                let score = match (k.score, w[2].as_f64()) {
                    (None, None) => true,
                    (Some(a), Some(b)) => (a as f64 - b).abs() <= 1e-3,
                    _ => false,
                };
                (k.x as f64 - x).abs() <= 1.0 && (k.y as f64 - y).abs() <= 1.0 && score
            })
    };
    let matches = |(label, s, b, k): &Seen, w: &Value| {
        let wb: Vec<f64> = w[box_key].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        *label == w["label"].as_str().unwrap()
            && (*s as f64 - score(w)).abs() <= 1e-3
            && (0..4).all(|k| (b[k] as f64 - wb[k]).abs() <= 1.0)
            && same_keypoints(k, &w[keypoint_key])
    };
    let mut used = vec![false; want.len()];
    for (i, d) in ours.iter().enumerate() {
        let j = if matches(d, &want[i]) && !used[i] {
            i
        } else {
            let tie =
                |j: &usize| !used[*j] && (score(&want[*j]) - score(&want[i])).abs() <= 1e-4 && matches(d, &want[*j]);
            (0..want.len()).find(tie).unwrap_or_else(|| panic!("{name}: detection {i} {d:?}\n{}", show()))
        };
        used[j] = true;
    }
}

fn labels(p: &Prediction) -> Vec<String> {
    match p {
        Prediction::Classes(c) => c.iter().map(|c| c.label.clone()).collect(),
        Prediction::Detections(d) => d.iter().map(|d| d.label.clone()).collect(),
    }
}

fn full_check(name: &'static str) -> Prediction {
    let c = case(name);
    let model = c.model();
    check_raw_outputs(&c, &model);
    check_preprocessing(&c, &model);
    check_decoded(&c, &model)
}

#[test]
fn mobilenet_names_chelsea_a_cat() {
    let p = full_check("mobilenet-v2--chelsea");
    let top = &labels(&p)[0];
    assert!(["tabby", "tiger cat", "Egyptian cat"].contains(&top.as_str()), "top-1 is {top}");
}

#[test]
fn mobilenet_on_coffee() {
    let p = full_check("mobilenet-v2--coffee");
    let top = labels(&p);
    assert!(top.iter().take(3).any(|l| ["espresso", "cup", "coffee mug"].contains(&l.as_str())), "{top:?}");
}

#[test]
fn nanodet_finds_the_motorcycle() {
    let p = full_check("nanodet-m--motorcycle_left");
    assert!(labels(&p).contains(&"motorcycle".to_string()), "{p:?}");
}

#[test]
fn nanodet_finds_the_group() {
    let p = full_check("nanodet-m--group");
    let persons = labels(&p).iter().filter(|l| *l == "person").count();
    assert!(persons >= 3, "{persons} persons: {p:?}");
}

#[test]
fn blazeface_finds_one_face_on_the_astronaut() {
    let p = full_check("blazeface--astronaut");
    let Prediction::Detections(d) = &p else { panic!() };
    assert_eq!(d.len(), 1, "{d:?}");
    // Eileen Collins' face is in the upper middle of the 512×512 portrait.
    let b = d[0].bbox;
    let (cx, cy) = ((b.x1 + b.x2) / 2.0, (b.y1 + b.y2) / 2.0);
    assert!((150.0..300.0).contains(&cx) && (50.0..200.0).contains(&cy), "{b:?}");
    // Her six keypoints (equal to the fixture's, checked above) sit where a face has them:
    // her right eye left of her left eye at one height in the upper half of the box, the
    // nose tip between them and below, the mouth below the nose, the ears at the box's sides.
    let k: std::collections::HashMap<&str, &Keypoint> = d[0].keypoints.iter().collect();
    let (re, le, nose, mouth) = (k["right_eye"], k["left_eye"], k["nose_tip"], k["mouth_centre"]);
    let (rear, lear) = (k["right_ear_tragion"], k["left_ear_tragion"]);
    let h = b.y2 - b.y1;
    assert!(re.x < le.x && (re.y - le.y).abs() < 0.1 * h, "eyes {re:?} {le:?}");
    assert!(re.y < b.y1 + 0.5 * h && le.y < b.y1 + 0.5 * h, "eyes in the upper half: {re:?} {le:?} {b:?}");
    assert!(re.x < nose.x && nose.x < le.x && nose.y > re.y.max(le.y), "nose {nose:?}");
    assert!(mouth.y > nose.y && (mouth.x - nose.x).abs() < 0.15 * h, "mouth {mouth:?}");
    assert!(rear.x < re.x && lear.x > le.x, "ears {rear:?} {lear:?}");
}

#[test]
fn blazeface_on_the_group() {
    full_check("blazeface--group");
}

/// The onnxruntime engine (feature `onnxruntime`; the library from scripts/setup-onnxruntime.sh,
/// named by ORT_DYLIB_PATH): every fixture through the same checks as tract's.
#[cfg(feature = "onnxruntime")]
#[test]
fn every_fixture_on_the_onnxruntime_engine() {
    let names = [
        "mobilenet-v2--chelsea",
        "mobilenet-v2--coffee",
        "nanodet-m--motorcycle_left",
        "nanodet-m--group",
        "blazeface--astronaut",
        "blazeface--group",
        "yolov8n-random--astronaut",
        "yolov5-layout--astronaut",
        "yolo26n-random--astronaut",
        "yolo26n-pose-random--astronaut",
    ];
    for name in names {
        let c = case(name);
        let on_ort = c.model_on(Engine::Onnxruntime);
        check_raw_outputs(&c, &on_ort);
        check_preprocessing(&c, &on_ort);
        let ort = check_decoded(&c, &on_ort);
        // And the whole path gives what tract's gives (near-equal scores in either order).
        let tract = c.model();
        let (tract, _) = tract.predict(&c.photo(), &tract.default_params()).unwrap();
        match (&ort, &tract) {
            (Prediction::Detections(ort), Prediction::Detections(tract)) => {
                let as_reference: Vec<Value> = tract
                    .iter()
                    .map(|d| {
                        let b = [d.bbox.x1, d.bbox.y1, d.bbox.x2, d.bbox.y2];
                        let k: Vec<Value> =
                            d.keypoints.points.iter().map(|k| serde_json::json!([k.x, k.y, k.score])).collect();
                        serde_json::json!({ "label": d.label, "score": d.score, "box": b, "keypoints": k })
                    })
                    .collect();
                check_detections(name, ort.iter().map(seen).collect(), &as_reference, "box");
            }
            _ => assert_eq!(labels(&ort), labels(&tract), "{name}"),
        }
    }
}

/// One runner (a camera's worker) serving a tract model, then the same on onnxruntime (a
/// deploy), then back: each run gives onnxruntime's fixture outputs within 1e-4.
#[cfg(feature = "onnxruntime")]
#[test]
fn a_runner_moves_between_engines() {
    let c = case("mobilenet-v2--chelsea");
    let (tract, ort) = (c.model(), c.model_on(Engine::Onnxruntime));
    let reference = c.reference_outputs();
    let mut runner = vigil::model::Runner::with_threads(2, "engines");
    for model in [&tract, &ort, &tract, &ort, &ort] {
        runner.keep_only(model);
        let out = model.run_in(&mut runner, c.input()).unwrap();
        let d = max_scaled_diff(&out[0].data, &reference[0].data);
        assert!(d <= 1e-4, "{}: {d}", model.engine().name());
    }
}

/// The YOLO layouts: vigil's decoding of onnxruntime's raw outputs equals Ultralytics'
/// non_max_suppression on the same outputs (in input pixels; for the end-to-end layout its
/// score filter), and the pipeline agrees.
fn yolo_check(name: &'static str) {
    let c = case(name);
    let model = c.model();
    check_raw_outputs(&c, &model);
    let raw = c.reference_outputs();
    let Decoded::Boxes(ours) = model.decode_raw(&raw, &model.default_params()) else { panic!() };
    let want = c.expected["detections"].as_array().unwrap();
    assert!(want.len() >= 5, "{name}: the reference should keep several boxes, got {}", want.len());
    let labels = &model.manifest.labels;
    check_detections(name, ours.iter().map(|d| seen_candidate(labels, d)).collect(), want, "input_box");
    check_preprocessing(&c, &model);
    check_decoded(&c, &model);
}

#[test]
fn yolov8_layout_matches_ultralytics() {
    yolo_check("yolov8n-random--astronaut");
}

#[test]
fn yolov5_layout_matches_ultralytics() {
    yolo_check("yolov5-layout--astronaut");
}

#[test]
fn yolo26_end_to_end_output_matches_ultralytics() {
    yolo_check("yolo26n-random--astronaut");
}

/// YOLOv10n's end-to-end layout [1, 300, 6]: the decoding of the fixture's committed raw
/// outputs equals Ultralytics'.
#[test]
fn yolov10_end_to_end_decoding_matches_ultralytics() {
    check_fixture_decoding("yolov10n-random--astronaut");
}

/// The same through the graph, which is not committed (9 MB): ignored (so a run says so)
/// unless asked for with `--ignored` after `models/scripts/export_yolo.py yolov10n` rebuilt
/// it, byte for byte; then it fails if the graph is still absent.
#[test]
#[ignore = "tests/models/yolov10n-random.onnx is not committed: build it with \
            `.venv/torch/bin/python models/scripts/export_yolo.py yolov10n`"]
fn yolov10_end_to_end_output_matches_ultralytics() {
    yolo_check("yolov10n-random--astronaut");
}

/// YOLO26n-pose (committed): the end-to-end pose layout [1, 300, 57], keypoints and all.
#[test]
fn yolo26_pose_output_matches_ultralytics() {
    yolo_check("yolo26n-pose-random--astronaut");
    let c = case("yolo26n-pose-random--astronaut");
    let first = &c.expected["detections"][0];
    assert_eq!(first["keypoints"].as_array().unwrap().len(), 17, "the fixture has the 17 COCO points");
}

/// YOLOv8n-pose: the pose layout [1, 56, 2100], decoded from the fixture's committed raw
/// outputs as Ultralytics decodes them.
#[test]
fn yolov8_pose_decoding_matches_ultralytics() {
    check_fixture_decoding("yolov8n-pose-random--astronaut");
}

/// The same through the graph, which is not committed: as for YOLOv10n.
#[test]
#[ignore = "tests/models/yolov8n-pose-random.onnx is not committed: build it with \
            `.venv/torch/bin/python models/scripts/export_yolo.py yolov8n-pose`"]
fn yolov8_pose_output_matches_ultralytics() {
    yolo_check("yolov8n-pose-random--astronaut");
}

/// The decoding of a case's committed raw outputs, without its graph: the manifest's decoder
/// (or the one the fixture names, for outputs the script derived) bound to their shapes,
/// against the reference decoding.
fn check_fixture_decoding(name: &'static str) {
    let c = case(name);
    let m =
        vigil::model::manifest::ModelManifest::load(&root().join(c.expected["manifest"].as_str().unwrap())).unwrap();
    let spec = match c.expected.get("decoder") {
        Some(d) => serde_json::from_value(d.clone()).unwrap(),
        None => m.decoder.clone(),
    };
    let raw = c.reference_outputs();
    let names: Vec<String> = raw.iter().map(|o| o.name.clone()).collect();
    let shapes: Vec<Vec<usize>> = raw.iter().map(|o| o.shape.clone()).collect();
    let graph = vigil::model::GraphOutputs {
        names: &names,
        shapes: &shapes,
        input_width: m.input.width,
        input_height: m.input.height,
        classes: m.labels.len(),
    };
    let decoder = vigil::model::Decoder::bind(&spec, graph).unwrap();
    let t = &m.thresholds;
    let params =
        vigil::model::DecodeParams { score: t.score, iou: t.iou, max_detections: t.max_detections, top_k: t.top_k };
    let Decoded::Boxes(ours) = decoder.decode(&raw, &params) else { panic!() };
    let want = c.expected["detections"].as_array().unwrap();
    assert!(want.len() >= 5, "{name}: the reference should keep several boxes, got {}", want.len());
    check_detections(name, ours.iter().map(|d| seen_candidate(&m.labels, d)).collect(), want, "input_box");
}

/// RT-DETR-l's DETR layout [1, 300, 84] (per query a box, then 80 class probabilities):
/// vigil's `detr` decoder equals ultralytics' RT-DETR post-processing on the fixture's
/// committed raw outputs.
#[test]
fn rtdetr_detr_layout_matches_ultralytics() {
    check_fixture_decoding("rtdetr-l-random--astronaut");
}

/// The same through the graph (130 MB, not committed): as for YOLOv10n.
#[test]
#[ignore = "tests/models/rtdetr-l-random.onnx is not committed (130 MB): build it with \
            `.venv/torch/bin/python models/scripts/export_rtdetr.py`"]
fn rtdetr_graph_matches_ultralytics() {
    yolo_check("rtdetr-l-random--astronaut");
}

/// The same queries as ultralytics 8.4 exports RT-DETR, its top 300 (query, class) rows
/// [1, 300, 6] = cx, cy, w, h (fractions), score, class: the `end2end` decoder with those
/// columns and `normalized = true` gives ultralytics' detections.
#[test]
fn rtdetr_top_rows_match_ultralytics() {
    check_fixture_decoding("rtdetr-l-top--astronaut");
}

/// The engines this build has.
fn engines() -> Vec<Engine> {
    #[allow(unused_mut)]
    let mut engines = vec![Engine::Tract];
    #[cfg(feature = "onnxruntime")]
    engines.push(Engine::Onnxruntime);
    engines
}

/// The YOLO26n test graph, edited, with a manifest whose `[decoder]` table is `decoder`
/// and whose labels are the first `labels` COCO names; returns the manifest's path.
/// `extra_output` adds a second graph output nobody decodes ("image_mean", the input's
/// channel means [1, 3, 1, 1]); `normalised` divides the boxes by the input size, as an
/// export with normalised boxes gives them.
fn yolo26_variant(name: &str, extra_output: bool, normalised: bool, decoder: &str, labels: usize) -> PathBuf {
    use prost::Message;
    use tract_onnx::pb;

    let dir = scratch(name);
    let bytes = std::fs::read(root().join("tests/models/yolo26n-random.onnx")).unwrap();
    let mut model = pb::ModelProto::decode(bytes.as_slice()).unwrap();
    let graph = model.graph.as_mut().unwrap();
    let node = |op: &str, inputs: &[&str], output: &str, attribute| onnx_node("edit", op, inputs, output, attribute);
    if normalised {
        let out = graph.output[0].name.clone();
        graph.value_info.retain(|v| v.name != out);
        for n in &mut graph.node {
            for o in &mut n.output {
                if *o == out {
                    *o = "pixel_rows".into();
                }
            }
        }
        let third = 1.0 / 320.0;
        graph.initializer.push(pb::TensorProto {
            name: "per_column".into(),
            dims: vec![6],
            data_type: pb::tensor_proto::DataType::Float as i32,
            float_data: vec![third, third, third, third, 1.0, 1.0],
            ..Default::default()
        });
        graph.node.push(node("Mul", &["pixel_rows", "per_column"], &out, vec![]));
    }
    if extra_output {
        let axes = pb::AttributeProto {
            name: "axes".into(),
            r#type: pb::attribute_proto::AttributeType::Ints as i32,
            ints: vec![2, 3],
            ..Default::default()
        };
        graph.node.push(node("ReduceMean", &["images"], "image_mean", vec![axes]));
        graph.output.push(vigil::model::f32_value("image_mean", &[1, 3, 1, 1]));
    }
    std::fs::write(dir.join("model.onnx"), model.encode_to_vec()).unwrap();
    let coco = std::fs::read_to_string(root().join("models/labels/coco-80.txt")).unwrap();
    let names: Vec<String> = coco.lines().take(labels).map(|l| format!("{l:?}")).collect();
    let manifest = format!(
        "name = \"{name}\"\nversion = \"0\"\ntask = \"detect\"\nmodel = \"model.onnx\"\nlabels = [{}]\n\
         [input]\nwidth = 320\nheight = 320\nscale = 0.00392156862745098\nresize = \"letterbox\"\npad = 114.0\n\
         [decoder]\n{decoder}\n[thresholds]\nscore = 0.9\nmax_detections = 300\n",
        names.join(", ")
    );
    let path = dir.join("model.toml");
    std::fs::write(&path, manifest).unwrap();
    path
}

/// The model's decoding of raw outputs: boxes in input pixels.
fn decoded(model: &Model, outputs: &[OutputTensor]) -> Vec<Candidate> {
    let Decoded::Boxes(ours) = model.decode_raw(outputs, &model.default_params()) else { panic!() };
    ours
}

#[test]
fn an_output_nobody_decodes_is_refused_until_the_decoder_names_its_own() {
    let c = case("yolo26n-random--astronaut");
    let want = c.expected["detections"].as_array().unwrap();
    let unnamed = yolo26_variant("e2e-extra", true, false, "kind = \"end2end\"", 80);
    let named = yolo26_variant(
        "e2e-extra-named",
        true,
        false,
        "kind = \"end2end\"\noutputs = { detections = \"output0\" }",
        80,
    );
    for engine in engines() {
        let e = Model::load_on(&unnamed, Some(engine)).unwrap_err().to_string();
        assert!(
            e.contains("decoder.outputs = { detections = \"…\" }") && e.contains("\"image_mean\" [1, 3, 1, 1]"),
            "{e}"
        );
        // Named, the extra output is not an output any more: one tensor comes back, the
        // fixture's, and it decodes as Ultralytics decodes it.
        let model = Model::load_on(&named, Some(engine)).unwrap();
        let out = model.run_raw(&c.input()).unwrap();
        assert_eq!(out.iter().map(|o| o.name.as_str()).collect::<Vec<_>>(), ["output0"], "{}", engine.name());
        check_ranked_rows(engine.name(), &out[0].data, &c.reference_outputs()[0].data, 6);
        let ours = decoded(&model, &out);
        let labels = &model.manifest.labels;
        check_detections(c.name, ours.iter().map(|d| seen_candidate(labels, d)).collect(), want, "input_box");
    }
}

#[test]
fn normalised_boxes_are_read_as_declared_and_a_wrong_declaration_is_named() {
    let c = case("yolo26n-random--astronaut");
    let want = c.expected["detections"].as_array().unwrap();
    let declared = yolo26_variant("e2e-normalised", false, true, "kind = \"end2end\"\nnormalized = true", 80);
    let model = Model::load(&declared).unwrap();
    let ours = decoded(&model, &model.run_raw(&c.input()).unwrap());
    let labels = &model.manifest.labels;
    check_detections(c.name, ours.iter().map(|d| seen_candidate(labels, d)).collect(), want, "input_box");

    // Two photos through one model: the warning comes once.
    let as_pixels = yolo26_variant("e2e-pixels", false, true, "kind = \"end2end\"", 80);
    let photo = root().join("tests/photos/astronaut.png");
    let photo = photo.to_str().unwrap();
    let (code, stdout, stderr) = common::vigil(&["infer", "--model", as_pixels.to_str().unwrap(), photo, photo]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.matches("astronaut.png").count(), 2, "both photos inferred: {stdout}");
    assert!(stderr.contains("set decoder.normalized = true"), "{stderr}");
    assert_eq!(stderr.matches("decoder.normalized").count(), 1, "warned once: {stderr}");
}

#[test]
fn a_class_beyond_the_labels_is_dropped_and_named() {
    // 40 labels for an 80-class graph: the rows of classes 40–79 name no label.
    let c = case("yolo26n-random--astronaut");
    let few = yolo26_variant("e2e-few-labels", false, false, "kind = \"end2end\"", 40);
    let model = Model::load(&few).unwrap();
    let ours = decoded(&model, &c.reference_outputs());
    let want: Vec<&Value> =
        c.expected["detections"].as_array().unwrap().iter().filter(|d| d["class_id"].as_u64().unwrap() < 40).collect();
    assert!(!ours.is_empty() && ours.len() < c.expected["detections"].as_array().unwrap().len());
    assert_eq!(ours.len(), want.len());
    for (d, w) in ours.iter().zip(&want) {
        assert_eq!(model.manifest.labels[d.class_id], w["label"].as_str().unwrap());
    }
    let photo = root().join("tests/photos/astronaut.png");
    let photo = photo.to_str().unwrap();
    let (code, stdout, stderr) = common::vigil(&["infer", "--model", few.to_str().unwrap(), photo, photo]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.matches("astronaut.png").count(), 2, "both photos inferred: {stdout}");
    assert!(stderr.contains("is not one of the 40 labels") && stderr.contains("decoder.class_offset"), "{stderr}");
    assert_eq!(stderr.matches("is not one of the 40 labels").count(), 1, "warned once: {stderr}");
}

/// An ONNX node `op` from `inputs` to `output`, named `<prefix>_<output>`.
fn onnx_node(
    prefix: &str,
    op: &str,
    inputs: &[&str],
    output: &str,
    attribute: Vec<tract_onnx::pb::AttributeProto>,
) -> tract_onnx::pb::NodeProto {
    tract_onnx::pb::NodeProto {
        name: format!("{prefix}_{output}"),
        op_type: op.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        attribute,
        ..Default::default()
    }
}

/// Writes a YOLOv5-layout model derived from the YOLOv8n test graph, and its manifest,
/// into a temporary folder; returns the manifest's path.
///
/// The graph's [1, 84, N] output is rewritten into [1, N, 85] = box, objectness (the best
/// class score), class scores / objectness, by appending ONNX nodes: the same transform
/// as `to_v5` in tests/fixtures/make_fixtures.py. The file is written with prost and read
/// back by tract like any user's export.
fn yolov5_layout_model(v8_manifest: &std::path::Path) -> PathBuf {
    use prost::Message;
    use tract_onnx::pb;

    let dir = scratch("yolov5");
    let v8 = std::fs::read(v8_manifest.with_extension("onnx")).unwrap();
    let mut model = pb::ModelProto::decode(v8.as_slice()).unwrap();
    let graph = model.graph.as_mut().unwrap();
    let out = graph.output[0].name.clone();
    // The old output's shape annotation must not stick to the new output of that name.
    graph.value_info.retain(|v| v.name != out);
    for node in &mut graph.node {
        for o in &mut node.output {
            if *o == out {
                *o = "v8_output".into();
            }
        }
    }
    let int64 = |name: &str, v: i64| pb::TensorProto {
        name: name.into(),
        dims: vec![1],
        data_type: pb::tensor_proto::DataType::Int64 as i32,
        int64_data: vec![v],
        ..Default::default()
    };
    graph.initializer.extend([int64("v5_0", 0), int64("v5_4", 4), int64("v5_84", 84), int64("v5_axis", 2)]);
    let ints = |name: &str, v: &[i64]| pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Ints as i32,
        ints: v.to_vec(),
        ..Default::default()
    };
    let int = |name: &str, v: i64| pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        i: v,
        ..Default::default()
    };
    let node = |op: &str, inputs: &[&str], output: &str, attribute| onnx_node("v5", op, inputs, output, attribute);
    graph.node.extend([
        node("Transpose", &["v8_output"], "t", vec![ints("perm", &[0, 2, 1])]),
        node("Slice", &["t", "v5_0", "v5_4", "v5_axis"], "box", vec![]),
        node("Slice", &["t", "v5_4", "v5_84", "v5_axis"], "cls", vec![]),
        node("ReduceMax", &["cls"], "obj", vec![ints("axes", &[2]), int("keepdims", 1)]),
        node("Div", &["cls", "obj"], "cls_over_obj", vec![]),
        node("Concat", &["box", "obj", "cls_over_obj"], &out, vec![int("axis", 2)]),
    ]);
    let dim = |v: i64| pb::tensor_shape_proto::Dimension {
        value: Some(pb::tensor_shape_proto::dimension::Value::DimValue(v)),
        ..Default::default()
    };
    graph.output[0].r#type = Some(pb::TypeProto {
        value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
            elem_type: pb::tensor_proto::DataType::Float as i32,
            shape: Some(pb::TensorShapeProto { dim: vec![dim(1), dim(2100), dim(85)] }),
        })),
        ..Default::default()
    });
    std::fs::write(dir.join("yolov5-layout.onnx"), model.encode_to_vec()).unwrap();

    let manifest = std::fs::read_to_string(v8_manifest)
        .unwrap()
        .replace("yolov8n-random.onnx", "yolov5-layout.onnx")
        .replace("kind = \"yolov8\"", "kind = \"yolov5\"")
        .replace("../../models/labels", &root().join("models/labels").display().to_string());
    let path = dir.join("yolov5-layout.toml");
    std::fs::write(&path, manifest).unwrap();
    path
}

/// The bundled NanoDet-m on five bundled photos with boxes drawn by eye: `vigil eval` gives
/// the mAP pycocotools gives for the same detections and ground truth
/// (tests/data/make_nanodet_photo_check.py wrote the fixture).
#[test]
fn the_pretrained_detector_scores_as_pycocotools_scores_it() {
    let fixture = root().join("tests/fixtures/nanodet-photos");
    let dir = scratch("nanodet-photos");
    std::fs::create_dir_all(dir.join("annotations")).unwrap();
    std::fs::copy(fixture.join("instances_test.json"), dir.join("annotations/instances_test.json")).unwrap();
    let truth: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture.join("instances_test.json")).unwrap()).unwrap();
    // A train split whose images were never downloaded (as COCO's trainval annotations
    // beside val2017 alone): only the split evaluated is read.
    std::fs::write(
        dir.join("annotations/instances_train.json"),
        r#"{"images": [{"id": 1, "file_name": "absent.jpg", "width": 9, "height": 9}], "annotations": [], "categories": []}"#,
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("test")).unwrap();
    for image in truth["images"].as_array().unwrap() {
        let file = image["file_name"].as_str().unwrap();
        std::fs::copy(root().join("tests/photos").join(file), dir.join("test").join(file)).unwrap();
    }
    let args = ["eval", "--model", "models/nanodet-m.toml", "--data", dir.to_str().unwrap(), "--split", "test"];
    let (code, stdout, stderr) = common::vigil(&[&args[..], &["--json"]].concat());
    assert_eq!(code, 0, "{stderr}");
    let got: Value = serde_json::from_str(&stdout).unwrap();
    let want: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture.join("pycocotools.json")).unwrap()).unwrap();
    assert_eq!(got["images"], 5);
    assert_eq!(got["instances"], 13);
    for key in ["map50", "map50_95"] {
        let (g, w) = (got[key].as_f64().unwrap(), want[key].as_f64().unwrap());
        assert!((g - w).abs() < 1e-9, "{key}: vigil eval {g}, pycocotools {w}");
    }
    // Without the model's class names the data cannot be scored: said, not guessed.
    let renamed =
        std::fs::read_to_string(dir.join("annotations/instances_test.json")).unwrap().replace("\"cat\"", "\"kitten\"");
    std::fs::write(dir.join("annotations/instances_test.json"), renamed).unwrap();
    let (code, _, stderr) = common::vigil(&args);
    assert_eq!(code, 1);
    assert!(stderr.contains("kitten") && stderr.contains("not among the model's labels"), "{stderr}");
}
