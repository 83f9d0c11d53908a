//! Training with libtorch (cargo feature `train`): an ONNX classifier or detector imported as
//! a tch module ([`graph::GraphModule`]), fine-tuned, and written back as ONNX.
//!
//! One job a file: [`options`] (what a run is asked to do), [`classify`] and [`detect`]
//! (the two loops), [`gfl_head`] (NanoDet's head in training), [`run`] (what the loops share: optimiser, schedule, loss scaling,
//! normalisation, history, progress), [`augment`] and [`box_augment`], [`export`]
//! (checkpoints and the manifest), [`loader`] (the data), [`assign`] and [`gfl`] (the
//! detector's targets and losses), [`graph`] (the importer), [`optim`] (the optimisers).
//!
//! See docs/training.md.

pub mod assign;
mod augment;
pub mod box_augment;
pub mod classify;
pub mod detect;
mod export;
pub mod gfl;
mod gfl_head;
pub mod graph;
pub mod loader;
pub mod optim;
mod options;
mod run;

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use serde::Serialize;
use tch::{Device, Kind, Tensor};

pub use classify::{train, TrainReport};
pub use detect::{train_detector, DetectReport};
pub use graph::GraphModule;
pub use options::{Augment, OptimizerKind, Recipe, TrainOptions};
pub use run::schedule;

/// The largest file of a run read back to resume it (history, evaluation JSON).
const MAX_RUN_FILE: u64 = 64 << 20;

/// Parses "cpu", "cuda", "cuda:N" or "auto" (CUDA when present).
pub fn parse_device(s: &str) -> anyhow::Result<Device> {
    Ok(match s {
        "auto" => Device::cuda_if_available(),
        "cpu" => Device::Cpu,
        "cuda" => Device::Cuda(0),
        other => match other.strip_prefix("cuda:").and_then(|n| n.parse().ok()) {
            Some(n) => Device::Cuda(n),
            None => anyhow::bail!("unknown device {other:?}: use cpu, cuda, cuda:N or auto"),
        },
    })
}

/// Result of [`bench_training`].
#[derive(Debug, Clone, Serialize)]
pub struct TrainBench {
    pub device: String,
    /// "flat" (vigil's, [`optim::FlatOptimizer`]) or "libtorch" (torch::optim::Adam, one
    /// parameter at a time), for comparing the two.
    pub optimizer: &'static str,
    pub batch: i64,
    pub size: i64,
    pub classes: i64,
    pub steps: usize,
    pub seconds: f64,
    pub images_per_second: f64,
    pub final_loss: f64,
}

/// An Adam step by vigil's flat optimiser or by libtorch's own.
enum BenchOptimizer {
    Flat(optim::FlatOptimizer),
    Libtorch(tch::COptimizer),
}

/// Training throughput: forward, cross-entropy, backward and an Adam step per batch of
/// random images (no data loading, no augmentation), after `warmup` untimed steps.
/// `libtorch_adam`: step with torch::optim::Adam instead of vigil's flat optimiser.
pub fn bench_training(
    onnx: &Path,
    device: Device,
    batch: i64,
    classes: i64,
    steps: usize,
    warmup: usize,
    libtorch_adam: bool,
) -> anyhow::Result<TrainBench> {
    tch::manual_seed(0);
    let mut module = GraphModule::load(onnx, device)?;
    module.replace_head(classes)?;
    let size = *module.input_shape.last().filter(|s| **s > 0).context("the graph's input has no fixed size")?;
    let mut opt = if libtorch_adam {
        let mut opt = tch::COptimizer::adam(1e-3, 0.9, 0.999, 0.0, 1e-8, false)?;
        for p in module.trainable() {
            opt.add_parameters(&p, 0)?;
        }
        BenchOptimizer::Libtorch(opt)
    } else {
        BenchOptimizer::Flat(optim::FlatOptimizer::new(OptimizerKind::Adam, module.trainable(), 1e-3, 0.0, 0.0))
    };
    let x = Tensor::randn([batch, 3, size, size], (Kind::Float, device));
    let y = Tensor::randint(classes, [batch], (Kind::Int64, device));
    let step = |opt: &mut BenchOptimizer| -> anyhow::Result<Tensor> {
        let loss = module.forward(&x)?.cross_entropy_for_logits(&y);
        match opt {
            BenchOptimizer::Flat(o) => o.backward_step(&loss),
            BenchOptimizer::Libtorch(o) => {
                o.zero_grad()?;
                loss.backward();
                o.step()?;
            }
        }
        Ok(loss)
    };
    for _ in 0..warmup {
        let _ = step(&mut opt)?;
    }
    sync(device);
    let t0 = Instant::now();
    let mut loss = Tensor::zeros([], (Kind::Float, device));
    for _ in 0..steps {
        loss = step(&mut opt)?;
    }
    sync(device);
    let seconds = t0.elapsed().as_secs_f64();
    Ok(TrainBench {
        device: format!("{device:?}"),
        optimizer: if libtorch_adam { "libtorch" } else { "flat" },
        batch,
        size,
        classes,
        steps,
        seconds,
        images_per_second: (batch as f64 * steps as f64) / seconds,
        final_loss: loss.double_value(&[]),
    })
}

fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}
