//! The fine-tuning loop: data on the device, augmentation as tensor ops, optimiser and
//! schedule, validation with early stopping, checkpoints as ONNX, test evaluation, export
//! with a manifest and a test vector, and the tract parity check.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use serde::Serialize;
use tch::{Device, Kind, Tensor};

use super::loader::{LoaderOptions, Split};
use super::optim::FlatOptimizer;
use super::GraphModule;
use crate::dataset::{shuffle, SplitMix64, Splits};
use crate::metrics::{evaluate, ranking, Evaluation};
use crate::model::manifest::{
    ChannelOrder, ClassifierOutput, DecoderSpec, InputSpec, Layout, RawInput, RawLabels, RawManifest, RawThresholds,
};
use crate::model::{max_scaled_diff, InputTensor, Model, ModelManifest, Task};

/// Which optimiser.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    Adam,
    Adamw,
    Sgd,
}

/// Augmentation applied to training batches.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Augment {
    pub flip: bool,
    /// Maximum rotation, degrees either way.
    pub rotation: f64,
    /// Smallest crop side as a fraction of the image (random resized crop / zoom).
    pub min_scale: f64,
    /// Brightness, contrast and saturation are each multiplied by a factor in [1 − j, 1 + j].
    pub jitter: f64,
}

impl Augment {
    pub const NONE: Augment = Augment { flip: false, rotation: 0.0, min_scale: 1.0, jitter: 0.0 };
}

/// How the pretrained backbone trains beside the new head.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Recipe {
    /// The backbone's learning rate as a fraction of the head's.
    pub backbone_lr: f64,
    /// Epochs during which only the head trains.
    pub head_warmup_epochs: f64,
}

impl Recipe {
    /// The default, measured on five seeds each (docs/training.md, "The default recipe"):
    /// a graph whose BatchNorm trains learns fastest with every layer at the full rate from
    /// the start; a graph without normalisation (BatchNorm folded, or frozen) collapses to
    /// chance on some seeds that way, and converges on all of them when the new head trains
    /// alone for an epoch and the backbone then follows at a tenth of the rate.
    pub fn default_for(batchnorm_trains: bool) -> Recipe {
        if batchnorm_trains {
            Recipe { backbone_lr: 1.0, head_warmup_epochs: 0.0 }
        } else {
            Recipe { backbone_lr: 0.1, head_warmup_epochs: 1.0 }
        }
    }
}

/// Everything a training run needs.
#[derive(Debug, Clone, Serialize)]
pub struct TrainOptions {
    /// The pretrained model's manifest: its ONNX graph and input conventions.
    pub base: PathBuf,
    pub data: PathBuf,
    pub out: PathBuf,
    pub name: String,
    pub version: String,
    /// Training (and exported) input size; the base model's when `None`.
    pub size: Option<usize>,
    pub epochs: usize,
    pub batch: usize,
    pub lr: f64,
    pub weight_decay: f64,
    pub momentum: f64,
    pub optimizer: OptimizerKind,
    pub label_smoothing: f64,
    pub warmup_epochs: f64,
    /// Stop when validation accuracy has not improved for this many epochs.
    pub patience: usize,
    pub freeze_backbone: bool,
    /// Run BatchNormalization as at inference during training (running statistics fixed),
    /// for batches too small for useful batch statistics.
    pub freeze_bn: bool,
    /// The backbone's learning rate as a fraction of the head's (`lr`); `None`: the
    /// default recipe's for the graph ([`Recipe::default_for`]).
    pub backbone_lr: Option<f64>,
    /// Epochs at the start during which only the new head trains (the backbone's learning
    /// rate is 0); `None`: the default recipe's for the graph.
    pub head_warmup_epochs: Option<f64>,
    /// Largest global gradient norm per step (`None`: no clipping).
    pub clip_grad: Option<f64>,
    /// Continue the run in `out` from its last checkpoint and history.
    pub resume: bool,
    /// Mixed precision on CUDA: fp16 autocast for the forward pass, dynamic loss scaling.
    pub amp: bool,
    pub augment: Augment,
    pub val_fraction: f64,
    pub test_fraction: f64,
    pub seed: u64,
    /// Decoded images kept on the device, MiB in all; splits beyond it are streamed.
    pub cache_mb: usize,
    /// Threads decoding images (0: one per core).
    pub loader_threads: usize,
    #[serde(skip)]
    pub device: Device,
}

/// One epoch's line in history.csv.
#[derive(Debug, Clone, Serialize)]
pub struct EpochRecord {
    pub epoch: usize,
    pub train_loss: f64,
    pub train_accuracy: f64,
    pub val_loss: f64,
    pub val_accuracy: f64,
    pub lr: f64,
    pub seconds: f64,
}

/// What a run produced.
#[derive(Debug, Clone, Serialize)]
pub struct TrainReport {
    pub classes: Vec<String>,
    pub history: Vec<EpochRecord>,
    pub best_epoch: usize,
    /// Whether BatchNorm ran on batch statistics during training.
    pub batchnorm_trained: bool,
    /// How the backbone trained (unused with `freeze_backbone`).
    pub recipe: Recipe,
    pub test: Evaluation,
    /// Largest |tract − tch| on the test vector, relative above 1.
    pub parity: f32,
    pub manifest: PathBuf,
}

/// Trains, evaluates and exports; everything is written under `opts.out`.
pub fn train(opts: &TrainOptions) -> anyhow::Result<TrainReport> {
    let base = ModelManifest::load(&opts.base)?;
    if base.task != Task::Classify {
        bail!("{} is a {:?} model; vigil train fine-tunes classifiers", base.name, base.task);
    }
    if base.input.layout != Layout::Nchw {
        bail!("{}: the trainer needs an NCHW model", opts.base.display());
    }
    let size = opts.size.unwrap_or(base.input.width);
    let spec = InputSpec { width: size, height: size, ..base.input.clone() };
    std::fs::create_dir_all(&opts.out).with_context(|| format!("cannot create {}", opts.out.display()))?;
    let splits = Splits::load(&opts.data, opts.val_fraction, opts.test_fraction, opts.seed)?;
    let classes = splits.classes.clone();
    let n_classes = classes.len() as i64;
    eprintln!(
        "data: {} classes, {} train / {} val / {} test images from {}",
        classes.len(),
        splits.train.len(),
        splits.val.len(),
        splits.test.len(),
        opts.data.display()
    );
    for (name, split) in [("training", &splits.train), ("validation", &splits.val), ("test", &splits.test)] {
        if split.is_empty() {
            bail!(
                "the {name} split of {} is empty: give train/, val/ and test/ folders with images, or \
                 fractions that leave each class some of each",
                opts.data.display()
            );
        }
    }
    let device = opts.device;
    let threads = if opts.loader_threads == 0 { LoaderOptions::threads_default() } else { opts.loader_threads };
    let loader = LoaderOptions { budget: opts.cache_mb << 20, threads };
    let mut budget = loader.budget;
    let train_set = Split::load(&splits.train, &spec, device, &loader, &mut budget)?;
    let val_set = Split::load(&splits.val, &spec, device, &loader, &mut budget)?;
    let test_set = Split::load(&splits.test, &spec, device, &loader, &mut budget)?;
    let streamed: Vec<&str> = [("train", &train_set), ("val", &val_set), ("test", &test_set)]
        .into_iter()
        .filter(|(_, s)| !s.resident())
        .map(|(name, _)| name)
        .collect();
    if !streamed.is_empty() {
        eprintln!(
            "data: {} read from disk for every pass ({threads} reader threads): the decoded images \
             exceed --cache-mb {}",
            streamed.join(", "),
            opts.cache_mb
        );
    }

    // A failed run must not leave an earlier run's deployable model behind.
    for stale in ["model.onnx", "model.toml"] {
        let path = opts.out.join(stale);
        if path.exists() {
            std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
        }
    }

    tch::manual_seed(opts.seed as i64);
    let mut history = if opts.resume { read_history(&opts.out.join("history.csv"))? } else { Vec::new() };
    let module = if opts.resume {
        let last = opts.out.join("last.onnx");
        let module = GraphModule::load(&last, device).context("cannot resume")?;
        let head = module.head()?;
        if head.classes != n_classes {
            bail!("cannot resume: {} has {} classes, the data {n_classes}", last.display(), head.classes);
        }
        eprintln!("resuming after epoch {} from {}", history.len(), last.display());
        module
    } else {
        let graph = base.train_model_path.as_ref().unwrap_or(&base.model_path);
        let mut module = GraphModule::load(graph, device)?;
        module.replace_head(n_classes)?;
        eprintln!("base graph: {}", graph.display());
        module
    };
    if opts.freeze_backbone {
        module.freeze_backbone()?;
    }
    let batchnorm_trains = module.has_batchnorm() && !opts.freeze_bn && !opts.freeze_backbone;
    if batchnorm_trains && opts.batch < 2 {
        bail!("--batch {}: BatchNorm trains on batch statistics, which need two images or more; use a larger --batch or --freeze-bn", opts.batch);
    }
    eprintln!(
        "normalisation: {}",
        match (module.has_batchnorm(), batchnorm_trains) {
            (false, _) => "none in the graph",
            (true, true) => "BatchNormalization on batch statistics, running statistics updated",
            (true, false) => "BatchNormalization on its running statistics, kept fixed",
        }
    );
    let recipe = recipe_for(opts, batchnorm_trains);
    let in_head = module.trainable_in_head()?;
    let opt_state = opts.out.join("optimizer.pt");
    let mut opt = optimizer_for(opts, &module, &opt_state);
    let norm = Normalizer::new(&spec, device);
    let steps_per_epoch = (splits.train.len()).div_ceil(opts.batch).max(1);
    let total_steps = steps_per_epoch * opts.epochs;
    let warmup_steps = (opts.warmup_epochs * steps_per_epoch as f64) as usize;
    let head_warmup_steps = (recipe.head_warmup_epochs * steps_per_epoch as f64) as usize;
    // Parameter groups: the new head at `lr`; the pretrained backbone at `backbone_lr` of
    // it, and held still during the head's warm-up.
    let backbone_scale = |step: usize| if step < head_warmup_steps { 0.0 } else { recipe.backbone_lr };
    let mut groups_at = f64::NAN;
    let mut scaler = LossScaler::for_run(opts.amp, device);
    let done = history.len();
    let mut rng = SplitMix64(opts.seed.wrapping_add(done as u64));
    let (mut best_acc, mut best_epoch) =
        history
            .iter()
            .fold((-1.0, 0), |(acc, e), h| if h.val_accuracy > acc { (h.val_accuracy, h.epoch) } else { (acc, e) });
    let mut step = done * steps_per_epoch;
    let mut csv = history_csv(opts, "epoch,train_loss,train_accuracy,val_loss,val_accuracy,lr,seconds")?;

    for epoch in done + 1..=opts.epochs {
        let t0 = Instant::now();
        let mut order: Vec<usize> = (0..train_set.len()).collect();
        shuffle(&mut order, &mut rng);
        let (mut loss_sum, mut correct, mut seen) = (0.0, 0i64, 0i64);
        let mut lr = opts.lr;
        for (b, batch) in train_set.batches(&order, opts.batch).enumerate() {
            let (x, y) = batch?;
            let len = y.size()[0];
            // Batch statistics of one image are no statistics (torch refuses them where a
            // channel has a single value): a last batch of one image sits this epoch out.
            if batchnorm_trains && len == 1 {
                continue;
            }
            lr = schedule(opts.lr, step, warmup_steps, total_steps);
            opt.set_lr(lr);
            let backbone = backbone_scale(step);
            if backbone != groups_at {
                let scales: Vec<f64> = in_head.iter().map(|&h| if h { 1.0 } else { backbone }).collect();
                opt.set_lr_scales(&scales);
                groups_at = backbone;
            }
            let x = augment(&x, &opts.augment, &mut rng);
            let logits = match scaler.as_ref() {
                Some(_) => {
                    tch::autocast(true, || module.forward_t(&norm.apply(&x), batchnorm_trains))?.to_kind(Kind::Float)
                }
                None => module.forward_t(&norm.apply(&x), batchnorm_trains)?,
            };
            let loss = smoothed_cross_entropy(&logits, &y, opts.label_smoothing);
            let loss_value = loss.double_value(&[]);
            if !loss_value.is_finite() {
                clear_progress();
                bail!(
                    "training diverged: the loss became {loss_value} at epoch {epoch}, batch {} (learning rate \
                     {lr:.2e}); {}",
                    b + 1,
                    divergence_advice(opts)
                );
            }
            match scaler.as_mut() {
                Some(scaler) => scaler.step(&mut opt, &loss),
                None => opt.backward_step(&loss),
            }
            loss_sum += loss_value * len as f64;
            correct += logits.argmax(-1, false).eq_tensor(&y).sum(Kind::Int64).int64_value(&[]);
            seen += len;
            step += 1;
            let (loss_so_far, elapsed) = (loss_sum / seen as f64, t0.elapsed().as_secs_f64());
            progress(epoch, opts.epochs, b + 1, steps_per_epoch, loss_so_far, seen, elapsed);
        }
        if seen == 0 {
            bail!("the training split holds a single image: batch statistics need two; add images or use --freeze-bn");
        }
        let (val_loss, val_acc) = validate(&module, &val_set, &norm, opts.batch)?;
        if !val_loss.is_finite() {
            bail!(
                "training diverged: the validation loss became {val_loss} after epoch {epoch} (learning rate \
                 {lr:.2e}); {}",
                divergence_advice(opts)
            );
        }
        let record = EpochRecord {
            epoch,
            train_loss: loss_sum / seen as f64,
            train_accuracy: correct as f64 / seen as f64,
            val_loss,
            val_accuracy: val_acc,
            lr,
            seconds: t0.elapsed().as_secs_f64(),
        };
        clear_progress();
        eprintln!(
            "epoch {epoch}/{}  train loss {:.4}  train acc {:.4}  val loss {:.4}  val acc {:.4}  lr {:.2e}  {:.1} s",
            opts.epochs, record.train_loss, record.train_accuracy, val_loss, val_acc, lr, record.seconds
        );
        writeln!(
            csv,
            "{},{:.6},{:.6},{:.6},{:.6},{:.6e},{:.3}",
            epoch, record.train_loss, record.train_accuracy, val_loss, val_acc, lr, record.seconds
        )?;
        history.push(record);
        write_onnx(&module, size, &opts.out.join("last.onnx"))?;
        opt.save(&opt_state)?;
        if val_acc > best_acc {
            best_acc = val_acc;
            best_epoch = epoch;
            write_onnx(&module, size, &opts.out.join("best.onnx"))?;
        } else if epoch - best_epoch >= opts.patience {
            eprintln!("early stop: validation accuracy has not improved for {} epochs", opts.patience);
            break;
        }
    }

    // A model no better than always answering the commonest class is not worth a deploy.
    let chance = chance_accuracy(&val_set, classes.len())?;
    if best_acc < chance_floor(chance) {
        bail!(
            "training failed: the best validation accuracy, {best_acc:.3} (epoch {best_epoch}), is at chance level \
             ({chance:.3}, always answering the commonest class); the model learned nothing and none was exported. \
             Try a lower --lr (now {}), --freeze-backbone, more --epochs, or check that each class folder holds what \
             its name says",
            opts.lr
        );
    }

    // The exported model is the best checkpoint, read back from its ONNX file.
    let model_onnx = opts.out.join("model.onnx");
    std::fs::copy(opts.out.join("best.onnx"), &model_onnx)?;
    let best = GraphModule::load(&model_onnx, device)?;
    let (truth, rankings) = predict(&best, &test_set, &norm, opts.batch)?;
    let test = evaluate(&truth, &rankings, classes.len());
    test.write_reports(&opts.out, &classes)?;

    let manifest_path = opts.out.join("model.toml");
    let comment = format!(
        "Written by vigil train from {} on {}: best epoch {best_epoch}, test top-1 {:.4}.",
        opts.base.display(),
        opts.data.display(),
        test.top1
    );
    let thresholds = RawThresholds { top_k: Some(classes.len().min(5)), score: Some(0.0), ..Default::default() };
    let decoder = DecoderSpec::Classify { output: ClassifierOutput::Logits };
    write_manifest(&manifest_path, &comment, opts, &spec, Task::Classify, &classes, decoder, thresholds)?;
    // The test vector's expected output is computed in full fp32 on the CPU: on CUDA,
    // libtorch runs convolutions in TF32 by default, about 1e-3 relative.
    let reference = if device == Device::Cpu { best } else { GraphModule::load(&model_onnx, Device::Cpu)? };
    let parity = test_vector(&reference, &test_set, &norm, &manifest_path, &opts.out)?;
    write_curves(&history, &opts.out)?;
    let report = TrainReport {
        classes,
        history,
        best_epoch,
        batchnorm_trained: batchnorm_trains,
        recipe,
        test,
        parity,
        manifest: manifest_path,
    };
    std::fs::write(opts.out.join("report.md"), report_text(opts, &report))?;
    std::fs::write(opts.out.join("train.json"), serde_json::to_string_pretty(&report)?)?;
    Ok(report)
}

/// The validation accuracy of always answering the split's commonest class.
fn chance_accuracy(split: &Split, classes: usize) -> anyhow::Result<f64> {
    let labels = Vec::<i64>::try_from(split.labels().to_device(Device::Cpu))?;
    let mut counts = vec![0usize; classes];
    for l in &labels {
        counts[*l as usize] += 1;
    }
    Ok(counts.iter().max().copied().unwrap_or(0) as f64 / labels.len().max(1) as f64)
}

/// The least validation accuracy a run must reach to be exported: a tenth of the way from
/// chance to perfect (0.19 for ten balanced classes, 0.55 for two).
fn chance_floor(chance: f64) -> f64 {
    chance + 0.1 * (1.0 - chance)
}

/// Reads history.csv back (for resuming).
fn read_history(path: &Path) -> anyhow::Result<Vec<EpochRecord>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot resume: no {}", path.display()))?;
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<f64> = l
                .split(',')
                .map(|v| v.trim().parse::<f64>())
                .collect::<Result<_, _>>()
                .with_context(|| format!("{}: bad line {l:?}", path.display()))?;
            if f.len() != 7 {
                bail!("{}: expected 7 columns in {l:?}", path.display());
            }
            Ok(EpochRecord {
                epoch: f[0] as usize,
                train_loss: f[1],
                train_accuracy: f[2],
                val_loss: f[3],
                val_accuracy: f[4],
                lr: f[5],
                seconds: f[6],
            })
        })
        .collect()
}

/// loss.png and accuracy.png: training and validation curves per epoch.
fn write_curves(history: &[EpochRecord], out: &Path) -> anyhow::Result<()> {
    use crate::plot::{line_chart, Series, COLOURS};
    let curve = |f: fn(&EpochRecord) -> f64| history.iter().map(|h| (h.epoch as f64, f(h))).collect::<Vec<_>>();
    let charts = [
        ("loss.png", "loss", curve(|h| h.train_loss), curve(|h| h.val_loss)),
        ("accuracy.png", "accuracy", curve(|h| h.train_accuracy), curve(|h| h.val_accuracy)),
    ];
    for (file, title, train, val) in charts {
        let chart = line_chart(
            title,
            "epoch",
            &[
                Series { name: "train", colour: COLOURS[0], points: train },
                Series { name: "validation", colour: COLOURS[1], points: val },
            ],
        );
        chart.save(out.join(file)).with_context(|| format!("cannot write {}", out.join(file).display()))?;
    }
    Ok(())
}

/// The recipe a run trains with: each flag given, else the default for the graph; said on
/// stderr unless the backbone is frozen.
pub(super) fn recipe_for(opts: &TrainOptions, batchnorm_trains: bool) -> Recipe {
    let default = Recipe::default_for(batchnorm_trains);
    let recipe = Recipe {
        backbone_lr: opts.backbone_lr.unwrap_or(default.backbone_lr),
        head_warmup_epochs: opts.head_warmup_epochs.unwrap_or(default.head_warmup_epochs),
    };
    if !opts.freeze_backbone {
        eprintln!(
            "recipe: {} head-only epoch(s), then the backbone at {} of the head's learning rate{}",
            recipe.head_warmup_epochs,
            recipe.backbone_lr,
            if recipe == default { " (the default for this graph)" } else { "" }
        );
    }
    recipe
}

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

/// Cross-entropy with label smoothing ε: (1 − ε)·NLL + ε·mean over classes of −log p.
fn smoothed_cross_entropy(logits: &Tensor, labels: &Tensor, epsilon: f64) -> Tensor {
    let logp = logits.log_softmax(-1, Kind::Float);
    let nll = -logp.gather(1, &labels.unsqueeze(1), false).squeeze_dim(1);
    if epsilon == 0.0 {
        return nll.mean(Kind::Float);
    }
    let smooth = -logp.mean_dim(-1, false, Kind::Float);
    (nll * (1.0 - epsilon) + smooth * epsilon).mean(Kind::Float)
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

/// Random resized crop, rotation and horizontal flip as one affine resampling per image,
/// then brightness, contrast and saturation jitter; on raw 0–255 images, on the device.
fn augment(x: &Tensor, a: &Augment, rng: &mut SplitMix64) -> Tensor {
    if *a == Augment::NONE {
        return x.shallow_clone();
    }
    let n = x.size()[0];
    let mut unit = || rng.unit();
    let mut theta = Vec::with_capacity(n as usize * 6);
    let mut factors = Vec::with_capacity(n as usize * 3);
    for _ in 0..n {
        let s = a.min_scale + (1.0 - a.min_scale) * unit();
        let angle = (unit() * 2.0 - 1.0) * a.rotation.to_radians();
        let flip = if a.flip && unit() < 0.5 { -1.0 } else { 1.0 };
        let (tx, ty) = ((unit() * 2.0 - 1.0) * (1.0 - s), (unit() * 2.0 - 1.0) * (1.0 - s));
        let (c, si) = (angle.cos() * s, angle.sin() * s);
        theta.extend([(c * flip) as f32, -si as f32, tx as f32, (si * flip) as f32, c as f32, ty as f32]);
        for _ in 0..3 {
            factors.push((1.0 + (unit() * 2.0 - 1.0) * a.jitter) as f32);
        }
    }
    let device = x.device();
    let theta = Tensor::from_slice(&theta).reshape([n, 2, 3]).to_device(device);
    let grid = Tensor::affine_grid_generator(&theta, x.size(), false);
    // Bilinear (0), border padding (1).
    let mut y = x.grid_sampler(&grid, 0, 1, false);
    if a.jitter > 0.0 {
        y = colour_jitter(&y, &Tensor::from_slice(&factors).reshape([n, 3]).to_device(device));
    }
    y
}

/// Multiplies brightness, contrast and saturation of each raw 0–255 image of `x` [N, 3, H, W]
/// by its row of `factors` [N, 3], and clamps to 0–255.
pub(crate) fn colour_jitter(x: &Tensor, factors: &Tensor) -> Tensor {
    let n = x.size()[0];
    let at = |k: i64| factors.select(1, k).reshape([n, 1, 1, 1]);
    let y = x * at(0);
    let mean = y.mean_dim([1i64, 2, 3].as_slice(), true, Kind::Float);
    let y = (&y - &mean) * at(1) + &mean;
    let gray = (y.select(1, 0) * 0.299 + y.select(1, 1) * 0.587 + y.select(1, 2) * 0.114).unsqueeze(1);
    ((&y - &gray) * at(2) + &gray).clamp(0.0, 255.0)
}

/// The end of a divergence message: what to change.
pub(super) fn divergence_advice(opts: &TrainOptions) -> String {
    let clip = if opts.clip_grad.is_none() { " or --clip-grad 1" } else { "" };
    format!("no model was exported. Try a lower --lr (now {}){clip}", opts.lr)
}

fn validate(module: &GraphModule, split: &Split, norm: &Normalizer, batch: usize) -> anyhow::Result<(f64, f64)> {
    // Never empty: train() refuses empty splits.
    let n = split.len();
    let _guard = tch::no_grad_guard();
    let (mut loss, mut correct) = (0.0, 0i64);
    for b in split.in_order(batch) {
        let (x, y) = b?;
        let logits = module.forward(&norm.apply(&x))?;
        loss += logits.cross_entropy_for_logits(&y).double_value(&[]) * y.size()[0] as f64;
        correct += logits.argmax(-1, false).eq_tensor(&y).sum(Kind::Int64).int64_value(&[]);
    }
    Ok((loss / n as f64, correct as f64 / n as f64))
}

/// True classes and predicted class rankings (best first) for every image of a split.
fn predict(
    module: &GraphModule,
    split: &Split,
    norm: &Normalizer,
    batch: usize,
) -> anyhow::Result<(Vec<usize>, Vec<Vec<usize>>)> {
    let _guard = tch::no_grad_guard();
    let mut all = Vec::new();
    for b in split.in_order(batch) {
        all.push(module.forward(&norm.apply(&b?.0))?.to_device(Device::Cpu));
    }
    let logits = Tensor::cat(&all, 0);
    let flat = Vec::<f32>::try_from(logits.reshape([-1]))?;
    let c = logits.size()[1] as usize;
    let rankings = flat.chunks(c).map(ranking).collect();
    let truth = Vec::<i64>::try_from(split.labels().to_device(Device::Cpu))?.into_iter().map(|v| v as usize).collect();
    Ok((truth, rankings))
}

pub(super) fn write_onnx(module: &GraphModule, size: usize, path: &Path) -> anyhow::Result<()> {
    let proto = module.to_onnx_with_input(Some([1, 3, size as i64, size as i64]))?;
    std::fs::write(path, prost::Message::encode_to_vec(&proto))
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Writes the first test image as the test vector (input and the output of `module`, which
/// lives on the CPU) and checks that tract, loading the exported manifest, computes the
/// same within 1e-4.
fn test_vector(
    module: &GraphModule,
    test: &Split,
    norm: &Normalizer,
    manifest: &Path,
    out: &Path,
) -> anyhow::Result<f32> {
    let _guard = tch::no_grad_guard();
    let (first, _) = test.batches(&[0], 1).next().expect("the test split is not empty")?;
    let x = norm.apply(&first).to_device(Device::Cpu).contiguous();
    let expected = module.forward(&x)?;
    let shape: Vec<usize> = x.size().iter().map(|&d| d as usize).collect();
    let input = Vec::<f32>::try_from(x.reshape([-1]))?;
    let want = Vec::<f32>::try_from(expected.reshape([-1]))?;
    let dir = out.join("test-vector");
    std::fs::create_dir_all(&dir)?;
    crate::npy::write_f32(&dir.join("input.npy"), &shape, &input)?;
    crate::npy::write_f32(&dir.join("expected.npy"), &[1, want.len()], &want)?;

    let model = Model::load(manifest)?;
    let got = model.run_raw(&InputTensor { shape: shape.try_into().unwrap(), data: input })?;
    let d = max_scaled_diff(&got[0].data, &want);
    // NaN (a model gone wrong) fails too.
    if d.is_nan() || d > 1e-4 {
        bail!("the exported model differs between tract and tch by {d} on the test vector (limit 1e-4)");
    }
    Ok(d)
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
        decoder,
        thresholds,
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

fn report_text(opts: &TrainOptions, r: &TrainReport) -> String {
    let mut out = format!(
        "# Training report: {} {}\n\nBase model: {}\nData: {}\nDevice: {:?}, input {}×{}, batch {}, {:?}, lr {}, \
         label smoothing {}, backbone {}\n\nBest epoch {} of {} run (validation accuracy {:.4}).\n\n## Test set\n\n```\n{}```\n\n\
         Files: model.onnx + model.toml (deployable), test-vector/ (input and expected output; tract matches tch \
         within {:.2e}), best.onnx, last.onnx, history.csv, loss.png, accuracy.png, metrics.csv, confusion.csv, \
         confusion.png, evaluation.json.\n\n![loss](loss.png) ![accuracy](accuracy.png) ![confusion](confusion.png)\n",
        opts.name,
        opts.version,
        opts.base.display(),
        opts.data.display(),
        opts.device,
        opts.size.map(|s| s.to_string()).unwrap_or_else(|| "base".into()),
        opts.size.map(|s| s.to_string()).unwrap_or_else(|| "base".into()),
        opts.batch,
        opts.optimizer,
        opts.lr,
        opts.label_smoothing,
        if opts.freeze_backbone {
            "frozen".to_string()
        } else {
            format!(
                "trained at {} of the head's rate after {} head-only epochs{}{}",
                r.recipe.backbone_lr,
                r.recipe.head_warmup_epochs,
                if r.batchnorm_trained { ", BatchNorm on batch statistics" } else { "" },
                opts.clip_grad.map(|c| format!(", gradients clipped to norm {c}")).unwrap_or_default()
            )
        },
        r.best_epoch,
        r.history.len(),
        r.history.get(r.best_epoch.saturating_sub(1)).map(|h| h.val_accuracy).unwrap_or(0.0),
        r.test.summary(&r.classes),
        r.parity,
    );
    out.push('\n');
    out
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

    #[test]
    fn label_smoothing_matches_its_definition() {
        let logits = Tensor::from_slice(&[2.0f32, 0.0, -1.0]).reshape([1, 3]);
        let y = Tensor::from_slice(&[0i64]);
        let logp: Vec<f32> = Vec::try_from(logits.log_softmax(-1, Kind::Float).reshape([-1])).unwrap();
        let want = 0.9 * -logp[0] as f64 + 0.1 * -(logp.iter().sum::<f32>() as f64) / 3.0;
        let got = smoothed_cross_entropy(&logits, &y, 0.1).double_value(&[]);
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        let plain = smoothed_cross_entropy(&logits, &y, 0.0).double_value(&[]);
        assert!((plain - logits.cross_entropy_for_logits(&y).double_value(&[])).abs() < 1e-6);
    }
}
