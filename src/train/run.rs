//! The pieces every training loop shares: the optimiser and its saved state, the learning
//! rate schedule, the loss scaler for mixed precision, the manifest's normalisation as
//! tensor ops, history.csv, and the progress bar.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use tch::{Device, Tensor};

use super::optim::FlatOptimizer;
use super::{GraphModule, Recipe, TrainOptions};
use crate::model::manifest::{ChannelOrder, InputSpec};

/// The optimiser over `module`'s trainable variables; on `--resume` its moments are read
/// back from `state` when they fit.
pub(super) fn optimizer_for(opts: &TrainOptions, module: &GraphModule, state: &Path) -> FlatOptimizer {
    let mut opt = FlatOptimizer::new(opts.optimizer, module.trainable(), opts.lr, opts.weight_decay, opts.momentum);
    opt.set_max_grad_norm(opts.clip_grad);
    if opts.resume {
        match opt.load(state) {
            Ok(()) => eprintln!("optimiser state restored ({} steps) from {}", opt.steps(), state.display()),
            Err(e) => eprintln!("the optimiser's moments start afresh: {e:#}"),
        }
    }
    opt
}

/// The learning rates of a run, step by step: the schedule's rate (linear warm-up, cosine
/// decay) for the new head, and the recipe's share of it for the pretrained backbone, which
/// is held still during the head's warm-up.
pub(super) struct LrPlan {
    base: f64,
    warmup_steps: usize,
    total_steps: usize,
    head_warmup_steps: usize,
    backbone_lr: f64,
    /// Per trainable variable, in the optimiser's order: whether it belongs to the head.
    in_head: Vec<bool>,
    /// The backbone scale last set on the optimiser.
    groups_at: f64,
}

impl LrPlan {
    pub(super) fn new(opts: &TrainOptions, recipe: &Recipe, steps_per_epoch: usize, in_head: Vec<bool>) -> LrPlan {
        LrPlan {
            base: opts.lr,
            warmup_steps: (opts.warmup_epochs * steps_per_epoch as f64) as usize,
            total_steps: steps_per_epoch * opts.epochs,
            head_warmup_steps: (recipe.head_warmup_epochs * steps_per_epoch as f64) as usize,
            backbone_lr: recipe.backbone_lr,
            in_head,
            groups_at: f64::NAN,
        }
    }

    /// Sets the rates of `step` on `opt`; returns the head's.
    pub(super) fn apply(&mut self, opt: &mut FlatOptimizer, step: usize) -> f64 {
        let lr = schedule(self.base, step, self.warmup_steps, self.total_steps);
        opt.set_lr(lr);
        let backbone = if step < self.head_warmup_steps { 0.0 } else { self.backbone_lr };
        if backbone != self.groups_at {
            let scales: Vec<f64> = self.in_head.iter().map(|&h| if h { 1.0 } else { backbone }).collect();
            opt.set_lr_scales(&scales);
            self.groups_at = backbone;
        }
        lr
    }
}

/// history.csv: appended to on `--resume`, else started with `header`.
pub(super) fn history_csv(opts: &TrainOptions, header: &str) -> anyhow::Result<std::fs::File> {
    let path = opts.out.join("history.csv");
    if opts.resume {
        return std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()));
    }
    let mut f = std::fs::File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
    writeln!(f, "{header}")?;
    Ok(f)
}

/// Dynamic loss scaling for fp16 training, as PyTorch's GradScaler does it: the loss is
/// multiplied by `scale` before the backward pass so that small gradients survive fp16;
/// the gradients are divided by it again before the optimiser step. A step whose gradients
/// hold an inf or NaN is skipped and the scale halved; after 2000 good steps it doubles.
pub(super) struct LossScaler {
    scale: f64,
    good_steps: usize,
}

impl LossScaler {
    pub(super) fn new() -> LossScaler {
        LossScaler { scale: 65536.0, good_steps: 0 }
    }

    /// A scaler when `--amp` asks for one and the device is CUDA; fp32 otherwise (said).
    pub(super) fn for_run(amp: bool, device: Device) -> Option<LossScaler> {
        match (amp, device) {
            (true, Device::Cuda(_)) => Some(LossScaler::new()),
            (true, _) => {
                eprintln!("--amp applies to CUDA only; training in fp32 on {device:?}");
                None
            }
            (false, _) => None,
        }
    }

    pub(super) fn step(&mut self, opt: &mut FlatOptimizer, loss: &Tensor) {
        let grad = opt.gradients(&(loss * self.scale));
        if !bool::try_from(grad.isfinite().all()).unwrap_or(false) {
            self.scale /= 2.0;
            self.good_steps = 0;
            return;
        }
        opt.step(&(grad / self.scale));
        self.good_steps += 1;
        if self.good_steps.is_multiple_of(2000) {
            self.scale *= 2.0;
        }
    }
}

/// Learning rate at `step`: linear warm-up, then cosine decay to zero.
pub fn schedule(base: f64, step: usize, warmup: usize, total: usize) -> f64 {
    if step < warmup {
        return base * (step + 1) as f64 / warmup as f64;
    }
    let span = (total - warmup).max(1) as f64;
    let t = (step - warmup) as f64 / span;
    base * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
}

/// The manifest's normalisation and channel order, as tensor ops.
pub(super) struct Normalizer {
    mul: Tensor,
    add: Tensor,
    bgr: bool,
}

impl Normalizer {
    pub(super) fn new(spec: &InputSpec, device: Device) -> Normalizer {
        let mul: Vec<f32> = (0..3).map(|c| spec.scale / spec.std[c]).collect();
        let add: Vec<f32> = (0..3).map(|c| -spec.mean[c] / spec.std[c]).collect();
        let col = |v: Vec<f32>| Tensor::from_slice(&v).reshape([1, 3, 1, 1]).to_device(device);
        Normalizer { mul: col(mul), add: col(add), bgr: spec.channels == ChannelOrder::Bgr }
    }

    /// Raw RGB 0–255 [N, 3, H, W] → model input.
    pub(super) fn apply(&self, x: &Tensor) -> Tensor {
        let x = if self.bgr { x.flip([1]) } else { x.shallow_clone() };
        x * &self.mul + &self.add
    }
}

/// The end of a divergence message: what to change.
pub(super) fn divergence_advice(opts: &TrainOptions) -> String {
    let clip = if opts.clip_grad.is_none() { " or --clip-grad 1" } else { "" };
    format!("no model was exported. Try a lower --lr (now {}){clip}", opts.lr)
}

/// The progress bar of an epoch, redrawn on one stderr line after every batch when stderr
/// is a terminal (a log gets only the per-epoch lines).
pub(super) fn progress(
    epoch: usize,
    epochs: usize,
    batch: usize,
    batches: usize,
    loss: f64,
    images: i64,
    elapsed: f64,
) {
    use std::io::IsTerminal;
    if std::io::stderr().is_terminal() {
        eprint!("\r{}", progress_line(epoch, epochs, batch, batches, loss, images, elapsed));
        let _ = std::io::stderr().flush();
    }
}

/// Erases the progress bar's line before a log line takes it.
pub(super) fn clear_progress() {
    use std::io::IsTerminal;
    if std::io::stderr().is_terminal() {
        eprint!("\r\x1b[2K");
    }
}

/// `epoch 3/10 [#########...........] 12/30  loss 0.4213  48.0 img/s  eta 7 s`
fn progress_line(
    epoch: usize,
    epochs: usize,
    batch: usize,
    batches: usize,
    loss: f64,
    images: i64,
    elapsed: f64,
) -> String {
    const WIDTH: usize = 20;
    let filled = (batch * WIDTH).checked_div(batches).unwrap_or(WIDTH).min(WIDTH);
    let bar: String = "#".repeat(filled) + &".".repeat(WIDTH - filled);
    let rate = if elapsed > 0.0 { images as f64 / elapsed } else { 0.0 };
    let eta = if batch > 0 { elapsed / batch as f64 * (batches.saturating_sub(batch)) as f64 } else { 0.0 };
    format!("epoch {epoch}/{epochs} [{bar}] {batch}/{batches}  loss {loss:.4}  {rate:.1} img/s  eta {eta:.0} s")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_progress_bar_fills_with_the_batches() {
        let line = progress_line(3, 10, 15, 30, 0.42134, 480, 10.0);
        assert_eq!(line, "epoch 3/10 [##########..........] 15/30  loss 0.4213  48.0 img/s  eta 10 s");
        assert!(progress_line(1, 1, 30, 30, 0.1, 10, 1.0).contains("[####################] 30/30"));
    }

    #[test]
    fn schedule_warms_up_then_decays_to_zero() {
        assert!((schedule(1.0, 0, 4, 20) - 0.25).abs() < 1e-12);
        assert!((schedule(1.0, 3, 4, 20) - 1.0).abs() < 1e-12);
        assert!((schedule(1.0, 4, 4, 20) - 1.0).abs() < 1e-12);
        assert!((schedule(1.0, 12, 4, 20) - 0.5).abs() < 1e-12);
        assert!(schedule(1.0, 19, 4, 20) < 0.01);
    }
}
