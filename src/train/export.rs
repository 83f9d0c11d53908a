//! What a run leaves to deploy: checkpoints as ONNX files and the exported model's manifest.

use std::path::Path;

use anyhow::Context;

use super::{GraphModule, TrainOptions};
use crate::model::manifest::{DecoderSpec, InputSpec, RawInput, RawLabels, RawManifest, RawThresholds};
use crate::model::{ModelManifest, Task};

pub(super) fn write_onnx(module: &GraphModule, size: usize, path: &Path) -> anyhow::Result<()> {
    let proto = module.to_onnx_with_input(Some([1, 3, size as i64, size as i64]))?;
    std::fs::write(path, prost::Message::encode_to_vec(&proto))
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Removes an earlier run's model.onnx and model.toml from `out`, so that a run that fails
/// leaves no deployable model behind.
pub(super) fn remove_stale_export(out: &Path) -> anyhow::Result<()> {
    for stale in ["model.onnx", "model.toml"] {
        let path = out.join(stale);
        if path.exists() {
            std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
        }
    }
    Ok(())
}

/// Writes the exported model's manifest through the manifest's own types, and reads it
/// back as any manifest is read: what was written must load.
#[allow(clippy::too_many_arguments)]
pub(super) fn write_manifest(
    path: &Path,
    comment: &str,
    opts: &TrainOptions,
    spec: &InputSpec,
    task: Task,
    labels: &[String],
    decoder: DecoderSpec,
    thresholds: RawThresholds,
) -> anyhow::Result<()> {
    let raw = RawManifest {
        name: opts.name.clone(),
        version: opts.version.clone(),
        task,
        model: "model.onnx".into(),
        train_model: None,
        labels: RawLabels::Inline(labels.to_vec()),
        input: RawInput {
            width: spec.width,
            height: spec.height,
            layout: spec.layout,
            channels: spec.channels,
            scale: spec.scale,
            mean: spec.mean,
            std: spec.std,
            resize: spec.resize,
            pad: spec.pad,
        },
        decoder: decoder.into(),
        thresholds,
        engine: Default::default(),
        source: Some(format!("fine-tuned by vigil train from {}", opts.base.display())),
    };
    // The manifest's numbers are f32, which TOML writes as the f64 they widen to
    // (103.52999877929688); each is written as the shortest decimal that reads back as the
    // same f32 (103.53).
    fn shortest(v: &mut toml::Value) {
        match v {
            toml::Value::Float(f) => *f = (*f as f32).to_string().parse().unwrap_or(*f),
            toml::Value::Array(a) => a.iter_mut().for_each(shortest),
            toml::Value::Table(t) => t.iter_mut().for_each(|(_, v)| shortest(v)),
            _ => {}
        }
    }
    let mut value = toml::Value::try_from(&raw).context("cannot write the manifest")?;
    shortest(&mut value);
    let text = format!("# {comment}\n{}", toml::to_string(&value).context("cannot write the manifest")?);
    let dir = path.parent().unwrap_or(Path::new("."));
    ModelManifest::from_toml(&text, dir)
        .map_err(|problems| anyhow::anyhow!("the written manifest does not load: {}", problems.join("; ")))?;
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::{Augment, OptimizerKind};
    use tch::Device;

    #[test]
    fn the_written_manifest_loads_and_keeps_its_numbers_short() {
        let dir = std::env::temp_dir().join(format!("vigil-manifest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/nanodet-m.toml");
        let manifest = ModelManifest::load(&base).unwrap();
        let opts = TrainOptions {
            base: base.clone(),
            data: dir.clone(),
            out: dir.clone(),
            name: "garments \"a\"".into(),
            version: "2".into(),
            size: Some(160),
            epochs: 1,
            batch: 2,
            lr: 1e-3,
            weight_decay: 0.0,
            momentum: 0.9,
            optimizer: OptimizerKind::Adamw,
            label_smoothing: 0.0,
            warmup_epochs: 0.0,
            patience: 1,
            freeze_backbone: false,
            freeze_bn: false,
            backbone_lr: None,
            head_warmup_epochs: None,
            clip_grad: None,
            resume: false,
            amp: false,
            augment: Augment::NONE,
            val_fraction: 0.2,
            test_fraction: 0.2,
            seed: 0,
            cache_mb: 0,
            loader_threads: 1,
            device: Device::Cpu,
        };
        let spec = InputSpec { width: 160, height: 160, ..manifest.input.clone() };
        let labels = vec!["trouser".to_string(), "bag".to_string()];
        let thresholds = RawThresholds { score: Some(0.35), iou: Some(0.6), ..Default::default() };
        let path = dir.join("model.toml");
        write_manifest(&path, "a comment", &opts, &spec, Task::Detect, &labels, manifest.decoder.clone(), thresholds)
            .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# a comment\n"), "{text}");
        assert!(text.contains("mean = [103.53, 116.28, 123.675]"), "{text}");
        assert!(text.contains("score = 0.35"), "{text}");
        // Read back (the ONNX file is not needed to parse and check the manifest's fields).
        let back = ModelManifest::from_toml(&text, &dir).unwrap();
        assert_eq!(back.name, "garments \"a\"");
        assert_eq!(back.input, spec);
        assert_eq!(back.labels, labels);
        assert_eq!(back.decoder, manifest.decoder);
        assert_eq!(back.thresholds.score, 0.35);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
