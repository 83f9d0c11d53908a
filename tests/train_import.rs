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
    let err = GraphModule::load(&root().join("tests/models/yolov8n-random.onnx"), Device::Cpu).unwrap_err();
    let msg = format!("{err:#}");
    for op in ["Slice", "Softmax"] {
        assert!(msg.contains(op), "{op} not named in: {msg}");
    }
    assert!(msg.contains("yolov8n-random.onnx") && msg.contains("unsupported ONNX operator"), "{msg}");
}

/// The detectors' graphs (several outputs; LeakyRelu, Pad, Resize, Split, Transpose) in tch
/// compute what onnxruntime computes on a photo (the committed model fixtures).
#[test]
fn detectors_in_tch_match_onnxruntime() {
    for (model, fixture, outputs) in
        [("nanodet-m.onnx", "nanodet-m--group", 6), ("blazeface.onnx", "blazeface--group", 2)]
    {
        let dir = root().join("tests/fixtures").join(fixture);
        let (_, _, x) = npy_tensor(&dir.join("input.npy"));
        let module = GraphModule::load(&root().join("models").join(model), Device::Cpu).unwrap();
        let ys = tch::no_grad(|| module.forward_all_t(&x, false)).unwrap();
        assert_eq!(ys.len(), outputs, "{model}");
        for (i, y) in ys.iter().enumerate() {
            let (shape, want, _) = npy_tensor(&dir.join(format!("out{i}.npy")));
            assert_eq!(y.size().iter().map(|&d| d as usize).collect::<Vec<_>>(), shape, "{model} output {i}");
            let got = Vec::<f32>::try_from(y.reshape([-1])).unwrap();
            let d = max_scaled_diff(&got, &want);
            eprintln!("{model} output {i}: tch vs onnxruntime {d:.2e}");
            assert!(d <= 1e-4, "{model} output {i}: tch differs from onnxruntime by {d}");
        }
    }
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

/// The graph of `batchnorm_trains_like_torch`: BatchNormalization (ONNX momentum 0.8, that
/// is torch's 0.2; epsilon 1e-3) → GlobalAveragePool → Flatten → Gemm, with uneven values.
fn batchnorm_graph(path: &std::path::Path, channels: i64) {
    use tract_onnx::pb;
    let floats = |name: &str, values: Vec<f32>| pb::TensorProto {
        name: name.into(),
        dims: vec![values.len() as i64],
        data_type: 1,
        float_data: values,
        ..Default::default()
    };
    let per_channel = |f: fn(f32) -> f32| (0..channels).map(|c| f(c as f32)).collect::<Vec<f32>>();
    let mut bn = pb::NodeProto {
        name: "bn".into(),
        op_type: "BatchNormalization".into(),
        input: ["x", "scale", "bias", "mean", "var"].map(String::from).to_vec(),
        output: vec!["bn".into()],
        ..Default::default()
    };
    for (name, f) in [("momentum", 0.8f32), ("epsilon", 1e-3)] {
        bn.attribute.push(pb::AttributeProto { name: name.into(), r#type: 1, f, ..Default::default() });
    }
    let node = |op: &str, input: &str, output: &str, extra: &[&str]| pb::NodeProto {
        name: output.into(),
        op_type: op.into(),
        input: [&[input], extra].concat().iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        ..Default::default()
    };
    let mut w = floats("w", (0..channels * 3).map(|i| ((i * 7) % 5) as f32 * 0.1 - 0.2).collect());
    w.dims = vec![3, channels];
    let graph = pb::GraphProto {
        node: vec![
            bn,
            node("GlobalAveragePool", "bn", "pooled", &[]),
            node("Flatten", "pooled", "flat", &[]),
            node("Gemm", "flat", "y", &["w", "b"]),
        ],
        initializer: vec![
            floats("scale", per_channel(|c| 0.5 + 0.25 * c)),
            floats("bias", per_channel(|c| 0.1 * c - 0.2)),
            floats("mean", per_channel(|c| 0.3 * c)),
            floats("var", per_channel(|c| 1.0 + c)),
            w,
            floats("b", vec![0.1, -0.1, 0.0]),
        ],
        input: vec![vigil::model::f32_value("x", &[4, channels, 5, 6])],
        output: vec![vigil::model::f32_value("y", &[4, 3])],
        ..Default::default()
    };
    let mut gemm = graph.node[3].clone();
    gemm.attribute.push(pb::AttributeProto { name: "transB".into(), r#type: 2, i: 1, ..Default::default() });
    let graph = pb::GraphProto { node: [&graph.node[..3], &[gemm]].concat(), ..graph };
    let model = pb::ModelProto {
        ir_version: 7,
        opset_import: vec![pb::OperatorSetIdProto { domain: String::new(), version: 13 }],
        graph: Some(graph),
        ..Default::default()
    };
    std::fs::write(path, prost::Message::encode_to_vec(&model)).unwrap();
}

/// The values of initializer `name` in an exported graph.
fn initializer(model: &tract_onnx::pb::ModelProto, name: &str) -> Vec<f64> {
    let t = model.graph.as_ref().unwrap().initializer.iter().find(|t| t.name == name).unwrap();
    t.raw_data.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64).collect()
}

/// Training-mode BatchNormalization as torch's BatchNorm2d computes it: normalised by the
/// batch's own mean and (biased) variance, running statistics moved towards the batch's
/// mean and unbiased variance by torch's momentum (1 − ONNX's); inference mode afterwards
/// uses the updated running statistics, and the export carries them. Checked against the
/// formulas in f64 and against tch's `nn::BatchNorm` (libtorch's BatchNorm2d module).
#[test]
fn batchnorm_trains_like_torch() {
    use tch::nn::{self, ModuleT};
    let channels = 3;
    let path = scratch("bn-train").join("bn.onnx");
    batchnorm_graph(&path, channels);
    let module = GraphModule::load(&path, Device::Cpu).unwrap();
    assert!(module.has_batchnorm());

    // libtorch's module, with the same starting values and torch's momentum 0.2.
    let vs = nn::VarStore::new(Device::Cpu);
    let config = nn::BatchNormConfig { momentum: 0.2, eps: 1e-3, ..Default::default() };
    let mut torch_bn = nn::batch_norm2d(vs.root(), channels, config);
    tch::no_grad(|| {
        let c = Tensor::arange(channels, (Kind::Float, Device::Cpu));
        torch_bn.ws.as_mut().unwrap().copy_(&(&c * 0.25 + 0.5));
        torch_bn.bs.as_mut().unwrap().copy_(&(&c * 0.1 - 0.2));
        torch_bn.running_mean.copy_(&(&c * 0.3));
        torch_bn.running_var.copy_(&(&c + 1.0));
    });
    let exported_w = initializer(&module.to_onnx().unwrap(), "w");
    let w = Tensor::from_slice(&exported_w).reshape([3, channels]);
    let b = Tensor::from_slice(&[0.1f64, -0.1, 0.0]);
    let head = |z: &Tensor| z.mean_dim([2i64, 3].as_slice(), false, Kind::Double).matmul(&w.tr()) + &b;

    // By hand, in f64.
    let c = Tensor::arange(channels, (Kind::Double, Device::Cpu));
    let (scale, bias) = (&c * 0.25 + 0.5, &c * 0.1 - 0.2);
    let (mut mean, mut var) = (&c * 0.3, &c + 1.0);
    let per_channel = |t: &Tensor| t.reshape([1, channels, 1, 1]);
    let m = 0.2;
    tch::manual_seed(7);
    for step in 0..4 {
        let x = Tensor::randn([4, channels, 5, 6], (Kind::Float, Device::Cpu)) * (step + 1) as f64 + step as f64;
        let ours = module.forward_t(&x, true).unwrap().to_kind(Kind::Double);
        let theirs = head(&torch_bn.forward_t(&x, true).to_kind(Kind::Double));
        let xd = x.to_kind(Kind::Double);
        let dims = [0i64, 2, 3];
        let batch_mean = xd.mean_dim(dims.as_slice(), false, Kind::Double);
        let biased = xd.var_correction(dims.as_slice(), 0, false);
        let unbiased = xd.var_correction(dims.as_slice(), 1, false);
        let normed = (&xd - per_channel(&batch_mean)) / per_channel(&(&biased + 1e-3)).sqrt();
        let by_hand = head(&(normed * per_channel(&scale) + per_channel(&bias)));
        mean = &mean * (1.0 - m) + &batch_mean * m;
        var = &var * (1.0 - m) + &unbiased * m;
        let d = |a: &Tensor, b: &Tensor| (a - b).abs().max().double_value(&[]);
        assert!(d(&ours, &by_hand) < 1e-5, "step {step}: output differs from the formula by {}", d(&ours, &by_hand));
        assert!(d(&ours, &theirs) < 1e-5, "step {step}: output differs from torch's by {}", d(&ours, &theirs));
        let exported = module.to_onnx().unwrap();
        let running = |name| Tensor::from_slice(&initializer(&exported, name));
        for (name, want, torch) in [("mean", &mean, &torch_bn.running_mean), ("var", &var, &torch_bn.running_var)] {
            let got = running(name);
            assert!(d(&got, want) < 1e-5, "step {step}: running {name} {got} vs {want} by the formula");
            assert!(d(&got, &torch.to_kind(Kind::Double)) < 1e-5, "step {step}: running {name} differs from torch's");
        }
    }
    // Inference mode: the updated running statistics, nothing moves.
    let x = Tensor::randn([4, channels, 5, 6], (Kind::Float, Device::Cpu));
    let ours = module.forward(&x).unwrap().to_kind(Kind::Double);
    let normed = (x.to_kind(Kind::Double) - per_channel(&mean)) / per_channel(&(&var + 1e-3)).sqrt();
    let by_hand = head(&(normed * per_channel(&scale) + per_channel(&bias)));
    assert!((&ours - &by_hand).abs().max().double_value(&[]) < 1e-5);
    assert!((&ours - head(&torch_bn.forward_t(&x, false).to_kind(Kind::Double))).abs().max().double_value(&[]) < 1e-5);
    // One value per channel is no batch statistic: refused, the running statistics kept.
    let err = module.forward_t(&Tensor::ones([1, channels, 1, 1], (Kind::Float, Device::Cpu)), true).unwrap_err();
    assert!(format!("{err:#}").contains("more than one value per channel"), "{err:#}");
    let still = initializer(&module.to_onnx().unwrap(), "mean");
    assert!(
        (Tensor::from_slice(&still) - &mean).abs().max().double_value(&[]) < 1e-5,
        "inference moved the statistics"
    );
}

/// The training graph (BatchNorm kept) and the folded inference graph of the bundled
/// MobileNetV2 compute the same logits, in tch and in tract, and the manifest points at it.
#[test]
fn mobilenet_training_graph_equals_the_folded_graph() {
    let manifest = vigil::model::ModelManifest::load(&root().join("models/mobilenet-v2.toml")).unwrap();
    let train_graph = manifest.train_model_path.clone().expect("mobilenet-v2.toml names its training graph");
    let fixture = root().join("tests/fixtures/mobilenet-v2--chelsea");
    let (shape, data, x) = npy_tensor(&fixture.join("input.npy"));
    let (_, want, _) = npy_tensor(&fixture.join("out0.npy"));
    let kept = GraphModule::load(&train_graph, Device::Cpu).unwrap();
    assert!(kept.has_batchnorm());
    assert!(!GraphModule::load(&manifest.model_path, Device::Cpu).unwrap().has_batchnorm());
    let y = tch::no_grad(|| kept.forward(&x)).unwrap();
    let got = Vec::<f32>::try_from(y.reshape([-1])).unwrap();
    let d = max_scaled_diff(&got, &want);
    assert!(d <= 1e-4, "tch on the BatchNorm graph vs onnxruntime on the folded one: {d}");

    let dir = scratch("mobilenet-train-graph");
    let text = std::fs::read_to_string(root().join("models/mobilenet-v2.toml"))
        .unwrap()
        .replace("train_model = \"mobilenet-v2-train.onnx\"\n", "")
        .replace("model = \"mobilenet-v2.onnx\"", &format!("model = {:?}", train_graph.display().to_string()))
        .replace("labels/imagenet-1k.txt", &root().join("models/labels/imagenet-1k.txt").display().to_string());
    std::fs::write(dir.join("kept.toml"), text).unwrap();
    let model = Model::load(&dir.join("kept.toml")).unwrap();
    let tract = model.run_raw(&InputTensor { shape: shape.try_into().unwrap(), data }).unwrap();
    let d = max_scaled_diff(&tract[0].data, &want);
    assert!(d <= 1e-4, "tract on the BatchNorm graph vs onnxruntime on the folded one: {d}");
}

/// NanoDet-m made ready for training: its class outputs become logits (the Sigmoid
/// skipped), and with new classes each head's class rows are fresh while its box rows — and
/// so the box outputs — stay exactly as they were.
#[test]
fn nanodet_heads_give_logits_and_take_new_classes() {
    let dir = root().join("tests/fixtures/nanodet-m--group");
    let (_, _, x) = npy_tensor(&dir.join("input.npy"));
    let want: Vec<Vec<f32>> = (0..6).map(|i| npy_tensor(&dir.join(format!("out{i}.npy"))).1).collect();
    let onnx = root().join("models/nanodet-m.onnx");
    let compare = |got: &Tensor, want: &[f32], what: &str| {
        let got = Vec::<f32>::try_from(got.reshape([-1])).unwrap();
        let d = max_scaled_diff(&got, want);
        assert!(d <= 1e-4, "{what}: differs from onnxruntime by {d}");
    };

    let mut logits = GraphModule::load(&onnx, Device::Cpu).unwrap();
    assert_eq!(logits.detection_logits(None).unwrap(), 3, "three heads: strides 8, 16, 32");
    let ys = tch::no_grad(|| logits.forward_all_t(&x, false)).unwrap();
    for (i, y) in ys.iter().enumerate() {
        if i % 2 == 0 {
            assert!(y.min().double_value(&[]) < 0.0, "output {i} is still a probability");
            compare(&y.sigmoid(), &want[i], &format!("sigmoid of class logits {i}"));
        } else {
            compare(y, &want[i], &format!("box output {i}"));
        }
    }

    tch::manual_seed(0);
    let mut three = GraphModule::load(&onnx, Device::Cpu).unwrap();
    let before = three.trainable().len();
    assert_eq!(three.detection_logits(Some(3)).unwrap(), 3);
    assert_eq!(three.trainable().len(), before, "each head's weight and bias replaced, not added");
    let ys = three.forward_all_t(&x, true).unwrap();
    for (i, y) in ys.iter().enumerate() {
        if i % 2 == 0 {
            assert_eq!(y.size()[2], 3, "output {i}");
            assert_eq!(y.size()[1] as usize * 80, want[i].len(), "output {i} keeps its points");
            let mean = y.sigmoid().mean(Kind::Float).double_value(&[]);
            assert!((0.002..0.05).contains(&mean), "output {i}: mean score {mean}, the prior is 0.01");
        } else {
            compare(&y.detach(), &want[i], &format!("box output {i} after new classes"));
        }
    }
    // A batch of two is two images, not one folded into the other.
    let pair = tch::no_grad(|| three.forward_all_t(&Tensor::cat(&[&x, &x], 0), false)).unwrap();
    for (i, (y2, y)) in pair.iter().zip(&ys).enumerate() {
        assert_eq!(y2.size()[0], 2, "output {i}");
        for k in 0..2 {
            let d = (y2.get(k) - y.get(0).detach()).abs().max().double_value(&[]);
            assert!(d < 1e-4, "output {i}, image {k} of a pair differs from the image alone by {d}");
        }
    }
    // Gradients reach the new class rows.
    let loss = ys.iter().step_by(2).map(|y| y.sigmoid().sum(Kind::Float)).fold(Tensor::from(0.0f32), |a, b| a + b);
    let grads = Tensor::run_backward(&[loss], &three.trainable(), false, false);
    assert!(grads.iter().filter(|g| g.defined()).any(|g| g.abs().sum(Kind::Float).double_value(&[]) > 0.0));
}
