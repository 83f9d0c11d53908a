//! The ONNX → tch importer (feature `train`): the bundled MobileNetV2 imported into
//! libtorch computes what onnxruntime computes, unsupported operators are refused by
//! name, and a re-headed graph written back as ONNX runs in tract like it runs in tch.
#![cfg(feature = "train")]

mod common;

use common::{root, scratch};
use tch::{Device, Kind, Tensor};
use vigil::model::{max_scaled_diff, InputTensor, Model};
use vigil::train::GraphModule;

fn npy_tensor(path: &std::path::Path) -> (Vec<usize>, Vec<f32>, Tensor) {
    let (shape, data) = vigil::npy::read_f32(path).unwrap();
    let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
    let t = Tensor::from_slice(&data).reshape(dims.as_slice());
    (shape, data, t)
}

#[test]
fn mobilenet_in_tch_matches_onnxruntime_on_chelsea() {
    let fixture = root().join("tests/fixtures/mobilenet-v2--chelsea");
    let (_, _, x) = npy_tensor(&fixture.join("input.npy"));
    let (_, want, _) = npy_tensor(&fixture.join("out0.npy"));
    let module = GraphModule::load(&root().join("models/mobilenet-v2.onnx"), Device::Cpu).unwrap();
    let y = tch::no_grad(|| module.forward(&x)).unwrap();
    assert_eq!(y.size(), [1, 1000]);
    let got = Vec::<f32>::try_from(y.reshape([-1])).unwrap();
    let d = max_scaled_diff(&got, &want);
    eprintln!("tch vs onnxruntime: max scaled difference {d:.3e}");
    assert!(d <= 1e-4, "tch differs from onnxruntime by {d}");
    // Egyptian cat (285) is the top class.
    assert_eq!(y.argmax(-1, false).int64_value(&[0]), 285);
}

#[test]
fn unsupported_operators_are_refused_by_name() {
    let err = GraphModule::load(&root().join("models/nanodet-m.onnx"), Device::Cpu).unwrap_err();
    let msg = format!("{err:#}");
    for op in ["LeakyRelu", "Pad", "Resize", "Transpose"] {
        assert!(msg.contains(op), "{op} not named in: {msg}");
    }
    assert!(msg.contains("nanodet-m.onnx") && msg.contains("unsupported ONNX operator"), "{msg}");
}

#[test]
fn a_new_head_exports_to_onnx_that_tract_runs_identically() {
    tch::manual_seed(1);
    let mut module = GraphModule::load(&root().join("models/mobilenet-v2.onnx"), Device::Cpu).unwrap();
    let head = module.replace_head(3).unwrap();
    assert_eq!((head.features, head.classes), (1280, 3));
    module.freeze_backbone().unwrap();
    assert_eq!(module.trainable().len(), 2, "only the head's weight and bias train");

    let dir = scratch("export");
    let onnx = module.to_onnx().unwrap();
    let graph = onnx.graph.as_ref().unwrap();
    let old_head: Vec<&str> = ["classifier.1.weight", "classifier.1.bias"]
        .into_iter()
        .filter(|n| graph.initializer.iter().any(|i| i.name == *n))
        .collect();
    assert!(old_head.is_empty(), "the replaced head stays in the export: {old_head:?}");
    std::fs::write(dir.join("three.onnx"), prost::Message::encode_to_vec(&onnx)).unwrap();
    let manifest = std::fs::read_to_string(root().join("models/mobilenet-v2.toml"))
        .unwrap()
        .replace("mobilenet-v2.onnx", "three.onnx")
        .replace("labels = { file = \"labels/imagenet-1k.txt\" }", "labels = [\"a\", \"b\", \"c\"]");
    std::fs::write(dir.join("three.toml"), manifest).unwrap();
    let model = Model::load(&dir.join("three.toml")).unwrap();

    let (shape, data, x) = npy_tensor(&root().join("tests/fixtures/mobilenet-v2--coffee/input.npy"));
    let ours = tch::no_grad(|| module.forward(&x)).unwrap().to_kind(Kind::Float);
    let ours = Vec::<f32>::try_from(ours.reshape([-1])).unwrap();
    let tract = model.run_raw(&InputTensor { shape: shape.try_into().unwrap(), data }).unwrap();
    assert_eq!(tract[0].shape, [1, 3]);
    let d = max_scaled_diff(&tract[0].data, &ours);
    assert!(d <= 1e-4, "tract {:?} vs tch {ours:?}", tract[0].data);
}

/// ResNet-18, EfficientNet-B0 and MobileNetV3-Small as torchvision exports them, imported
/// into tch, against onnxruntime. The models (up to 47 MB each) are not committed: run
/// `tests/data/export_torchvision_classifiers.py DIR`, then
/// `VIGIL_TORCHVISION_DIR=DIR cargo test --features train --test train_import -- --ignored`.
#[test]
#[ignore = "needs VIGIL_TORCHVISION_DIR from tests/data/export_torchvision_classifiers.py"]
fn torchvision_exports_import_exactly() {
    let dir = std::path::PathBuf::from(
        std::env::var_os("VIGIL_TORCHVISION_DIR").expect("set VIGIL_TORCHVISION_DIR (see the doc comment)"),
    );
    for name in ["resnet18", "efficientnet_b0", "mobilenet_v3_small"] {
        let (_, _, x) = npy_tensor(&dir.join(format!("{name}.input.npy")));
        let (_, want, _) = npy_tensor(&dir.join(format!("{name}.output.npy")));
        let module = GraphModule::load(&dir.join(format!("{name}.onnx")), Device::Cpu).unwrap();
        let y = tch::no_grad(|| module.forward(&x)).unwrap();
        let got = Vec::<f32>::try_from(y.reshape([-1])).unwrap();
        // Relative to the largest logit, so that small outputs cannot pass vacuously.
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(scale > 1e-3, "{name}: logits are all near zero ({scale}); the export compares nothing");
        let d = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max) / scale;
        eprintln!("{name}: largest logit {scale:.3}, tch vs onnxruntime max difference {d:.3e} of it");
        assert!(d <= 1e-4, "{name}: {d}");
        let head = module.head().unwrap();
        assert_eq!(head.classes, 1000, "{name}");
    }
}

/// A BatchNormalization's running mean and variance are buffers: they are not among the
/// parameters an optimiser gets (so weight decay cannot shrink them).
#[test]
fn batchnorm_statistics_are_not_trainable() {
    use tract_onnx::pb;
    let floats = |name: &str, dims: &[i64], value: f32| pb::TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: 1,
        float_data: vec![value; dims.iter().product::<i64>() as usize],
        ..Default::default()
    };
    let node = |op: &str, inputs: &[&str], output: &str| pb::NodeProto {
        name: format!("{op}_0"),
        op_type: op.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        ..Default::default()
    };
    let value = vigil::model::f32_value;
    let graph = pb::GraphProto {
        node: vec![
            node("BatchNormalization", &["x", "scale", "bias", "mean", "var"], "bn"),
            node("GlobalAveragePool", &["bn"], "pooled"),
            node("Flatten", &["pooled"], "flat"),
            node("Gemm", &["flat", "w", "b"], "y"),
        ],
        initializer: vec![
            floats("scale", &[2], 1.0),
            floats("bias", &[2], 0.0),
            floats("mean", &[2], 0.5),
            floats("var", &[2], 2.0),
            floats("w", &[2, 3], 0.1),
            floats("b", &[3], 0.0),
        ],
        input: vec![value("x", &[1, 2, 4, 4])],
        output: vec![value("y", &[1, 3])],
        ..Default::default()
    };
    let model = pb::ModelProto {
        ir_version: 7,
        opset_import: vec![pb::OperatorSetIdProto { domain: String::new(), version: 13 }],
        graph: Some(graph),
        ..Default::default()
    };
    let path = scratch("bn-stats").join("bn.onnx");
    std::fs::write(&path, prost::Message::encode_to_vec(&model)).unwrap();
    let module = GraphModule::load(&path, Device::Cpu).unwrap();
    let sizes: Vec<i64> = module.trainable().iter().map(|t| t.numel() as i64).collect();
    // scale, bias, w, b — not mean and var.
    assert_eq!(sizes.iter().sum::<i64>(), 2 + 2 + 6 + 3, "{sizes:?}");
    assert_eq!(sizes.len(), 4, "{sizes:?}");
}
