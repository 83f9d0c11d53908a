//! The bundled models on real photos, checked against onnxruntime.
//!
//! Fixtures in tests/fixtures/<case>/ come from tests/fixtures/make_fixtures.py: the
//! input tensor it preprocessed, onnxruntime's raw outputs for it, and its own decoding
//! (written independently of vigil's decoders; Ultralytics' NMS for the YOLO layouts).

mod common;

use std::path::PathBuf;

use common::{root, scratch};
use serde_json::Value;
use vigil::model::{max_scaled_diff, preprocess, Decoded, Engine, InputTensor, Model, OutputTensor, Prediction};

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
    for (o, r) in ours.iter().zip(&reference) {
        assert_eq!(o.shape, r.shape, "{}: shape of {}", c.name, r.name);
        let d = max_scaled_diff(&o.data, &r.data);
        let abs = max_abs_diff(&o.data, &r.data);
        eprintln!(
            "{} on {}: output {} max difference {abs:.3e} (scaled {d:.3e})",
            c.name,
            model.engine().name(),
            r.name
        );
        assert!(d <= 1e-4, "{}: output {} differs from onnxruntime by {d} (scaled)", c.name, r.name);
    }
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
            check_detections(
                c.name,
                ours.iter()
                    .map(|d| (d.label.as_str(), d.score, [d.bbox.x1, d.bbox.y1, d.bbox.x2, d.bbox.y2]))
                    .collect(),
                want,
                "box",
            );
        }
    }
    prediction
}

fn check_detections(name: &str, ours: Vec<(&str, f32, [f32; 4])>, want: &[Value], box_key: &str) {
    let show = || format!("{ours:?}\nexpected: {}", serde_json::to_string(want).unwrap());
    assert_eq!(ours.len(), want.len(), "{name}: detection count\n{}", show());
    for ((label, score, b), w) in ours.iter().zip(want) {
        assert_eq!(*label, w["label"].as_str().unwrap(), "{name}\n{}", show());
        assert!((*score as f64 - w["score"].as_f64().unwrap()).abs() <= 1e-3, "{name}: score\n{}", show());
        let wb: Vec<f64> = w[box_key].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        for k in 0..4 {
            assert!((b[k] as f64 - wb[k]).abs() <= 1.0, "{name}: box {b:?} vs {wb:?}\n{}", show());
        }
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
    ];
    for name in names {
        let c = case(name);
        let on_ort = c.model_on(Engine::Onnxruntime);
        check_raw_outputs(&c, &on_ort);
        check_preprocessing(&c, &on_ort);
        let ort = check_decoded(&c, &on_ort);
        // And the whole path gives what tract's gives.
        let tract = c.model();
        let (tract, _) = tract.predict(&c.photo(), &tract.default_params()).unwrap();
        assert_eq!(labels(&ort), labels(&tract), "{name}");
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
/// non_max_suppression on the same outputs (in input pixels), and the pipeline agrees.
fn yolo_check(name: &'static str) {
    let c = case(name);
    let model = c.model();
    check_raw_outputs(&c, &model);
    let raw = c.reference_outputs();
    let Decoded::Boxes(ours) = model.decode_raw(&raw, &model.default_params()) else { panic!() };
    let want = c.expected["detections"].as_array().unwrap();
    assert!(want.len() >= 5, "{name}: the reference should keep several boxes, got {}", want.len());
    let labels = &model.manifest.labels;
    check_detections(
        name,
        ours.iter()
            .map(|d| (labels[d.class_id].as_str(), d.score, [d.bbox.x1, d.bbox.y1, d.bbox.x2, d.bbox.y2]))
            .collect(),
        want,
        "input_box",
    );
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
    let node = |op: &str, inputs: &[&str], output: &str, attribute: Vec<pb::AttributeProto>| pb::NodeProto {
        name: format!("v5_{output}"),
        op_type: op.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        attribute,
        ..Default::default()
    };
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
