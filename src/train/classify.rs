//! Fine-tuning a classifier: the loop over an ImageFolder's batches, validation with early
//! stopping, the test evaluation, the test vector with its tract parity check, and the
//! run's reports.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use serde::Serialize;
use tch::{Device, Kind, Tensor};

use super::augment::augment;
use super::export::{remove_stale_export, write_manifest, write_onnx};
use super::loader::{LoaderOptions, Split};
use super::options::recipe_for;
use super::run::{
    clear_progress, divergence_advice, history_csv, optimizer_for, progress, LossScaler, LrPlan, Normalizer,
};
use super::{GraphModule, Recipe, TrainOptions};
use crate::dataset::{shuffle, SplitMix64, Splits};
use crate::metrics::{evaluate, ranking, Evaluation};
use crate::model::manifest::{ClassifierOutput, DecoderSpec, InputSpec, Layout, RawThresholds};
use crate::model::{max_scaled_diff, InputTensor, Model, ModelManifest, Task};

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

    remove_stale_export(&opts.out)?;

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
    let opt_state = opts.out.join("optimizer.pt");
    let mut opt = optimizer_for(opts, &module, &opt_state);
    let norm = Normalizer::new(&spec, device);
    let steps_per_epoch = (splits.train.len()).div_ceil(opts.batch).max(1);
    // Parameter groups: the new head at `lr`; the pretrained backbone at `backbone_lr` of
    // it, and held still during the head's warm-up.
    let mut rates = LrPlan::new(opts, &recipe, steps_per_epoch, module.trainable_in_head()?);
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
            lr = rates.apply(&mut opt, step);
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
        // The checkpoints first, the history line last (as the detector's loop): a run
        // stopped in between resumes from the epoch before, whose checkpoint is whole.
        write_onnx(&module, size, &opts.out.join("last.onnx"))?;
        opt.save(&opt_state)?;
        let improved = val_acc > best_acc;
        if improved {
            best_acc = val_acc;
            best_epoch = epoch;
            write_onnx(&module, size, &opts.out.join("best.onnx"))?;
        }
        writeln!(
            csv,
            "{},{:.6},{:.6},{:.6},{:.6},{:.6e},{:.3}",
            epoch, record.train_loss, record.train_accuracy, val_loss, val_acc, lr, record.seconds
        )?;
        history.push(record);
        if !improved && epoch - best_epoch >= opts.patience {
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
    let text = crate::files::read_text_capped(path, super::MAX_RUN_FILE)
        .with_context(|| format!("cannot resume: no {}", path.display()))?;
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
    use crate::plot::{line_chart, save, Axes, Series, COLOURS};
    let curve = |f: fn(&EpochRecord) -> f64| history.iter().map(|h| (h.epoch as f64, f(h))).collect::<Vec<_>>();
    let charts = [
        ("loss.png", "loss", "cross-entropy", curve(|h| h.train_loss), curve(|h| h.val_loss)),
        ("accuracy.png", "accuracy", "top-1 accuracy", curve(|h| h.train_accuracy), curve(|h| h.val_accuracy)),
    ];
    for (file, title, y, train, val) in charts {
        let axes = Axes { title, x: "epoch", y, x_range: None, y_range: None };
        let series = [
            Series { name: "train", colour: COLOURS[0], points: train },
            Series { name: "validation", colour: COLOURS[1], points: val },
        ];
        save(&line_chart(&axes, &series)?, &out.join(file))?;
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

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
