//! Fine-tuning a detector: NanoDet-m and other anchor-point detectors with Generalized Focal
//! Loss heads (a class map and four box-side distributions per point of each stride).
//!
//! The pretrained graph is imported as for a classifier; each head's class rows are replaced
//! for the user's classes and its box rows kept ([`GraphModule::detection_logits`]). Every
//! batch is letterboxed exactly as the daemon letterboxes (the loader is the classifier's),
//! augmented with its boxes ([`super::box_augment`]), and run through the graph; ATSS
//! ([`super::assign`]) picks each box's points, and the loss is NanoDet's: quality focal
//! loss on the class logits over every point not in a crowd, and on the positive points
//! GIoU (weight 2) and distribution focal loss (weight 0.25) on the boxes, both weighted by
//! the point's best class score ([`super::gfl`]).
//!
//! Validation decodes the graph's outputs with the manifest's own decoder and NMS, and
//! scores them with COCO's mAP ([`crate::metrics::detection`]); early stopping and the best
//! checkpoint follow val mAP50-95. The exported model's test figures come from tract
//! through the same function as `vigil eval`, so `vigil eval` reproduces them exactly.
//!
//! A second family (YOLOv8-style heads, say) would add its own output layout, assigner and
//! loss beside [`HeadLayout`] and [`gfl_loss`]; the loop, data, checkpoints and export stay.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context};
use serde::Serialize;
use tch::{Device, Kind, Tensor};

use super::box_augment::{self, BoxAugment};
use super::export::{remove_stale_export, write_manifest, write_onnx};
use super::gfl_head::{gfl_loss, targets, Geometry, HeadLayout, InputBoxes};
use super::loader::{LoaderOptions, Split};
use super::options::recipe_for;
use super::run::{
    clear_progress, divergence_advice, history_csv, optimizer_for, progress, LossScaler, LrPlan, Normalizer,
};
use super::{GraphModule, Recipe, TrainOptions};
use crate::dataset::{shuffle, DetectionData, DetectionImage, Sample, SplitMix64};
use crate::metrics::detection::{
    evaluate_detections, predicted_in_pixels, truth_in_pixels, DetectionEvaluation, ImageBoxes, MAP_SCORE_THRESHOLD,
};
use crate::model::manifest::{DecoderSpec, InputSpec, Layout, RawThresholds, Resize};
use crate::model::preprocess::placement;
use crate::model::{max_scaled_diff, BBox, DecodeParams, Decoded, Decoder, GraphOutputs, InputTensor, Model};
use crate::model::{ModelManifest, OutputTensor, Task, Transform};

/// NanoDet's augmentation ranges (its configs' `scale`, `translate`, `flip` and colour jitter).
const NANODET_AUGMENT: BoxAugment = BoxAugment { flip: true, scale: (0.6, 1.4), translate: 0.2, jitter: 0.2 };

/// One epoch's line in history.csv.
#[derive(Debug, Clone, Serialize)]
pub struct DetectEpoch {
    pub epoch: usize,
    pub train_loss: f64,
    pub train_qfl: f64,
    pub train_giou: f64,
    pub train_dfl: f64,
    pub val_map50: f64,
    pub val_map50_95: f64,
    pub val_precision: f64,
    pub val_recall: f64,
    pub lr: f64,
    pub seconds: f64,
}

const HISTORY_HEADER: &str =
    "epoch,train_loss,train_qfl,train_giou,train_dfl,val_map50,val_map50_95,val_precision,val_recall,lr,seconds";

/// What a detection run produced.
#[derive(Debug, Clone, Serialize)]
pub struct DetectReport {
    pub classes: Vec<String>,
    pub history: Vec<DetectEpoch>,
    pub best_epoch: usize,
    /// The validation figures of the pretrained graph with its new, untrained class rows.
    pub untrained: DetectionEvaluation,
    pub recipe: Recipe,
    /// Which split `test` is: "test", or "val" for data without a test split.
    pub test_split: &'static str,
    /// The exported model on the test split, computed by tract (as `vigil eval`).
    pub test: DetectionEvaluation,
    /// Largest |tract − tch| on the test vector's outputs, relative above 1.
    pub parity: f32,
    pub manifest: std::path::PathBuf,
}

/// A split: the loader's letterboxed images, and per image its boxes in input pixels and
/// the transform back to the image.
struct DetSplit {
    images: Vec<DetectionImage>,
    split: Split,
    boxes: Vec<InputBoxes>,
    transforms: Vec<Transform>,
}

impl DetSplit {
    fn load(
        images: &[DetectionImage],
        spec: &InputSpec,
        device: Device,
        loader: &LoaderOptions,
        budget: &mut usize,
    ) -> anyhow::Result<DetSplit> {
        let samples: Vec<Sample> = images.iter().map(|i| Sample { path: i.path.clone(), class: 0 }).collect();
        let split = Split::load(&samples, spec, device, loader, budget)?;
        let mut boxes = Vec::with_capacity(images.len());
        let mut transforms = Vec::with_capacity(images.len());
        for image in images {
            let (_, _, t) = placement(spec, image.width, image.height);
            let (w, h) = (image.width as f32, image.height as f32);
            let to_input = |b: &BBox| BBox {
                x1: b.x1 * w * t.scale_x + t.pad_x,
                y1: b.y1 * h * t.scale_y + t.pad_y,
                x2: b.x2 * w * t.scale_x + t.pad_x,
                y2: b.y2 * h * t.scale_y + t.pad_y,
            };
            boxes.push(image.boxes.iter().map(|b| (b.class, to_input(&b.bbox), b.crowd)).collect());
            transforms.push(t);
        }
        Ok(DetSplit { images: images.to_vec(), split, boxes, transforms })
    }

    fn len(&self) -> usize {
        self.images.len()
    }
}

/// The manifest's decoder bound to the training graph's outputs (at batch 1), so that
/// validation decodes exactly as the exported model will be decoded.
fn bind_decoder(spec: &DecoderSpec, shapes: &[Vec<i64>], size: usize, classes: usize) -> anyhow::Result<Decoder> {
    let names: Vec<String> = (0..shapes.len()).map(|i| format!("output{i}")).collect();
    let shapes: Vec<Vec<usize>> =
        shapes.iter().map(|s| std::iter::once(1).chain(s[1..].iter().map(|&d| d as usize)).collect()).collect();
    Decoder::bind(spec, GraphOutputs { names: &names, shapes: &shapes, input_width: size, input_height: size, classes })
        .map_err(|e| anyhow::anyhow!("the training graph does not fit its decoder: {e}"))
}

/// Validation in tch: every image's outputs (class maps through the sigmoid the export puts
/// back) decoded and scored as `vigil eval` scores them.
struct Validator<'a> {
    layout: &'a HeadLayout,
    decoder: Decoder,
    params: DecodeParams,
    score_threshold: f32,
}

impl Validator<'_> {
    fn evaluate(
        &self,
        module: &GraphModule,
        split: &DetSplit,
        norm: &Normalizer,
        batch: usize,
    ) -> anyhow::Result<DetectionEvaluation> {
        let _guard = tch::no_grad_guard();
        let identity: Vec<usize> = (0..self.layout.classes as usize).collect();
        let mut all = Vec::with_capacity(split.len());
        for b in split.split.in_order(batch) {
            let (x, _) = b?;
            let outputs = module.forward_all_t(&norm.apply(&x), false)?;
            let outputs: Vec<Tensor> = outputs
                .iter()
                .enumerate()
                .map(|(i, o)| {
                    let o = o.to_device(Device::Cpu).to_kind(Kind::Float);
                    if self.layout.is_class_output(i) {
                        o.sigmoid()
                    } else {
                        o
                    }
                })
                .collect();
            for n in 0..x.size()[0] {
                let index = all.len();
                let one: Vec<OutputTensor> = outputs
                    .iter()
                    .enumerate()
                    .map(|(i, o)| {
                        let o = o.select(0, n).contiguous();
                        Ok(OutputTensor {
                            name: format!("output{i}"),
                            shape: std::iter::once(1).chain(o.size().iter().map(|&d| d as usize)).collect(),
                            data: Vec::<f32>::try_from(o.reshape([-1]))?,
                        })
                    })
                    .collect::<anyhow::Result<_>>()?;
                let Decoded::Boxes(candidates) = self.decoder.decode(&one, &self.params) else {
                    bail!("the detector's decoder gave classes");
                };
                all.push(ImageBoxes {
                    truth: truth_in_pixels(&split.images[index], &identity),
                    predicted: predicted_in_pixels(&candidates, &split.transforms[index]),
                });
            }
        }
        Ok(evaluate_detections(&all, self.layout.classes as usize, self.score_threshold))
    }
}

/// Fine-tunes the detector `opts.base` on the YOLO or COCO data at `opts.data`, evaluates
/// and exports it; everything is written under `opts.out`.
pub fn train_detector(opts: &TrainOptions) -> anyhow::Result<DetectReport> {
    let base = ModelManifest::load(&opts.base)?;
    let DecoderSpec::Nanodet { strides, reg_max, centre_offset } = &base.decoder else {
        bail!(
            "{} decodes its outputs as \"{}\"; vigil train fine-tunes NanoDet-style detectors (decoder \"nanodet\"), \
             see docs/training.md",
            base.name,
            base.decoder.kind()
        );
    };
    if base.input.layout != Layout::Nchw
        || base.input.resize != Resize::Letterbox
        || base.input.width != base.input.height
    {
        bail!("{}: the detection trainer needs a square NCHW letterboxed input", opts.base.display());
    }
    let size = opts.size.unwrap_or(base.input.width);
    if let Some(s) = strides.iter().find(|&&s| !size.is_multiple_of(s)) {
        bail!("--size {size} is not a multiple of the stride {s}: use a multiple of {}", strides.iter().max().unwrap());
    }
    let spec = InputSpec { width: size, height: size, ..base.input.clone() };
    std::fs::create_dir_all(&opts.out).with_context(|| format!("cannot create {}", opts.out.display()))?;
    let data = DetectionData::load(&opts.data, crate::dataset::ALL_SPLITS, crate::dataset::TRAINING_SPLITS)?;
    eprint!("data: {}\n{}", opts.data.display(), data.summary());
    let classes = data.names.clone();
    let n_classes = classes.len() as i64;
    if data.train.iter().all(|i| i.boxes.is_empty()) {
        bail!("the training split of {} has no boxes", opts.data.display());
    }
    if data.val.iter().all(|i| i.boxes.iter().all(|b| b.crowd)) {
        bail!("the validation split of {} has no boxes to measure mAP on", opts.data.display());
    }
    let device = opts.device;
    let threads = if opts.loader_threads == 0 { LoaderOptions::threads_default() } else { opts.loader_threads };
    let loader = LoaderOptions { budget: opts.cache_mb << 20, threads };
    let mut budget = loader.budget;
    let train_set = DetSplit::load(&data.train, &spec, device, &loader, &mut budget)?;
    let val_set = DetSplit::load(&data.val, &spec, device, &loader, &mut budget)?;
    let test_split = data.default_test_split();
    if test_split == "val" {
        eprintln!("data: no test split; the exported model is tested on the validation split");
    }
    let test_images = data.split(test_split)?.to_vec();

    remove_stale_export(&opts.out)?;

    tch::manual_seed(opts.seed as i64);
    let mut history = if opts.resume { read_history(&opts.out.join("history.csv"))? } else { Vec::new() };
    let module = if opts.resume {
        let last = opts.out.join("last.onnx");
        let mut module = GraphModule::load(&last, device).context("cannot resume")?;
        module.detection_logits(None).context("cannot resume")?;
        eprintln!("resuming after epoch {} from {}", history.len(), last.display());
        module
    } else {
        let graph = base.train_model_path.as_ref().unwrap_or(&base.model_path);
        let mut module = GraphModule::load(graph, device)?;
        let heads = module.detection_logits(Some(n_classes))?;
        eprintln!("base graph: {} ({heads} heads, new class rows for {n_classes} classes)", graph.display());
        module
    };
    if opts.freeze_backbone {
        module.freeze_backbone()?;
    }
    let bins = *reg_max as i64 + 1;
    let shapes: Vec<Vec<i64>> = tch::no_grad(|| {
        module.forward_all_t(&Tensor::zeros([1, 3, size as i64, size as i64], (Kind::Float, device)), false)
    })?
    .iter()
    .map(Tensor::size)
    .collect();
    let layout = HeadLayout::find(&shapes, size as i64, strides, n_classes, bins)
        .with_context(|| format!("{} after resuming or replacing the class rows", opts.base.display()))?;
    let geometry = Geometry::new(size, strides, *centre_offset, device);
    let validator = Validator {
        layout: &layout,
        decoder: bind_decoder(&base.decoder, &shapes, size, classes.len())?,
        params: DecodeParams {
            score: MAP_SCORE_THRESHOLD,
            iou: base.thresholds.iou,
            max_detections: base.thresholds.max_detections,
            top_k: base.thresholds.top_k,
        },
        score_threshold: base.thresholds.score,
    };

    let batchnorm_trains = module.has_batchnorm() && !opts.freeze_bn && !opts.freeze_backbone;
    if batchnorm_trains && opts.batch < 2 {
        bail!("--batch {}: BatchNorm trains on batch statistics, which need two images or more", opts.batch);
    }
    let recipe = recipe_for(opts, batchnorm_trains);
    let norm = Normalizer::new(&spec, device);
    // The untrained head's figures are measured once, at the start of the run, and kept for
    // a resumed run (which starts from a trained checkpoint).
    let untrained_path = opts.out.join("untrained.json");
    let untrained: DetectionEvaluation = if opts.resume {
        let text = crate::files::read_text_capped(&untrained_path, super::MAX_RUN_FILE)
            .with_context(|| format!("cannot resume: no {}", untrained_path.display()))?;
        serde_json::from_str(&text)
            .with_context(|| format!("cannot resume: {} is damaged", untrained_path.display()))?
    } else {
        let e = validator.evaluate(&module, &val_set, &norm, opts.batch)?;
        std::fs::write(&untrained_path, serde_json::to_string_pretty(&e)?)
            .with_context(|| format!("cannot write {}", untrained_path.display()))?;
        e
    };
    eprintln!(
        "before training: val mAP50 {:.4}  mAP50-95 {:.4} (the new class rows untrained)",
        untrained.map50.unwrap_or(0.0),
        untrained.map50_95.unwrap_or(0.0)
    );

    let opt_state = opts.out.join("optimizer.pt");
    let mut opt = optimizer_for(opts, &module, &opt_state);
    let steps_per_epoch = train_set.len().div_ceil(opts.batch).max(1);
    let mut rates = LrPlan::new(opts, &recipe, steps_per_epoch, module.trainable_in_head()?);
    let mut scaler = LossScaler::for_run(opts.amp, device);
    let augment = if opts.augment == super::Augment::NONE {
        None
    } else {
        Some(BoxAugment { flip: opts.augment.flip, jitter: opts.augment.jitter, ..NANODET_AUGMENT })
    };
    let done = history.len();
    let mut rng = SplitMix64(opts.seed.wrapping_add(done as u64));
    let (mut best, mut best_epoch) =
        history.iter().fold((-1.0, 0), |(m, e), h| if h.val_map50_95 > m { (h.val_map50_95, h.epoch) } else { (m, e) });
    let mut step = done * steps_per_epoch;
    let mut csv = history_csv(opts, HISTORY_HEADER)?;

    for epoch in done + 1..=opts.epochs {
        let t0 = Instant::now();
        let mut order: Vec<usize> = (0..train_set.len()).collect();
        shuffle(&mut order, &mut rng);
        let mut sums = [0.0f64; 4];
        let (mut seen, mut lr) = (0i64, opts.lr);
        let chunks: Vec<&[usize]> = order.chunks(opts.batch).collect();
        for (b, (batch, chunk)) in train_set.split.batches(&order, opts.batch).zip(&chunks).enumerate() {
            let (x, _) = batch?;
            let len = x.size()[0];
            if batchnorm_trains && len == 1 {
                continue;
            }
            lr = rates.apply(&mut opt, step);
            let boxes: Vec<&InputBoxes> = chunk.iter().map(|&i| &train_set.boxes[i]).collect();
            let (x, boxes): (Tensor, Vec<InputBoxes>) = match &augment {
                Some(a) => {
                    let plain: Vec<Vec<BBox>> = boxes.iter().map(|bs| bs.iter().map(|b| b.1).collect()).collect();
                    let (x, moved) = box_augment::augment(&x, &plain, a, spec.pad as f64, &mut rng);
                    let kept = moved
                        .iter()
                        .zip(&boxes)
                        .map(|(m, orig)| m.iter().map(|(i, b)| (orig[*i].0, *b, orig[*i].2)).collect())
                        .collect();
                    (x, kept)
                }
                None => (x, boxes.into_iter().cloned().collect()),
            };
            let t = targets(&geometry, &boxes, n_classes);
            let input = norm.apply(&x);
            let outputs = match scaler.as_ref() {
                Some(_) => tch::autocast(true, || module.forward_all_t(&input, batchnorm_trains))?,
                None => module.forward_all_t(&input, batchnorm_trains)?,
            };
            let (cls, reg) = layout.gather(&outputs);
            let losses = gfl_loss(&cls, &reg, &t, &geometry, bins);
            let values: Vec<f64> = losses.iter().map(|l| l.double_value(&[])).collect();
            if !values[0].is_finite() {
                clear_progress();
                bail!(
                    "training diverged: the loss became {} at epoch {epoch}, batch {} (learning rate {lr:.2e}); {}",
                    values[0],
                    b + 1,
                    divergence_advice(opts)
                );
            }
            match scaler.as_mut() {
                Some(scaler) => scaler.step(&mut opt, &losses[0]),
                None => opt.backward_step(&losses[0]),
            }
            for (s, v) in sums.iter_mut().zip(&values) {
                *s += v * len as f64;
            }
            seen += len;
            step += 1;
            progress(
                epoch,
                opts.epochs,
                b + 1,
                steps_per_epoch,
                sums[0] / seen as f64,
                seen,
                t0.elapsed().as_secs_f64(),
            );
        }
        if seen == 0 {
            bail!("the training split holds a single image: batch statistics need two; add images or use --freeze-bn");
        }
        let val = validator.evaluate(&module, &val_set, &norm, opts.batch)?;
        let record = DetectEpoch {
            epoch,
            train_loss: sums[0] / seen as f64,
            train_qfl: sums[1] / seen as f64,
            train_giou: sums[2] / seen as f64,
            train_dfl: sums[3] / seen as f64,
            val_map50: val.map50.unwrap_or(0.0),
            val_map50_95: val.map50_95.unwrap_or(0.0),
            val_precision: val.precision,
            val_recall: val.recall,
            lr,
            seconds: t0.elapsed().as_secs_f64(),
        };
        clear_progress();
        eprintln!(
            "epoch {epoch}/{}  loss {:.4} (qfl {:.4} giou {:.4} dfl {:.4})  val mAP50 {:.4}  mAP50-95 {:.4}  P {:.3}  R {:.3}  \
             lr {lr:.2e}  {:.1} s",
            opts.epochs,
            record.train_loss,
            record.train_qfl,
            record.train_giou,
            record.train_dfl,
            record.val_map50,
            record.val_map50_95,
            record.val_precision,
            record.val_recall,
            record.seconds
        );
        // The checkpoints first, the history line last: a run stopped in between resumes
        // from the epoch before, whose checkpoint is whole.
        let score = record.val_map50_95;
        write_onnx(&module, size, &opts.out.join("last.onnx"))?;
        opt.save(&opt_state)?;
        let improved = score > best;
        if improved {
            best = score;
            best_epoch = epoch;
            write_onnx(&module, size, &opts.out.join("best.onnx"))?;
        }
        writeln!(
            csv,
            "{},{:.6},{:.6},{:.6},{:.6},{:.6},{:.6},{:.6},{:.6},{:.6e},{:.3}",
            epoch,
            record.train_loss,
            record.train_qfl,
            record.train_giou,
            record.train_dfl,
            record.val_map50,
            record.val_map50_95,
            record.val_precision,
            record.val_recall,
            lr,
            record.seconds
        )?;
        history.push(record);
        if !improved && epoch - best_epoch >= opts.patience {
            eprintln!("early stop: validation mAP50-95 has not improved for {} epochs", opts.patience);
            break;
        }
    }

    let before = untrained.map50_95.unwrap_or(0.0);
    if best <= before {
        bail!(
            "training failed: the best validation mAP50-95, {best:.4} (epoch {best_epoch}), is no better than the \
             untrained head's {before:.4}; none was exported. Try more --epochs, a different --lr (now {}), or check \
             the labels (vigil train printed the boxes per class above)",
            opts.lr
        );
    }

    // The export: the best checkpoint, whose class maps go through their Sigmoid again.
    let model_onnx = opts.out.join("model.onnx");
    std::fs::copy(opts.out.join("best.onnx"), &model_onnx)?;
    let manifest_path = opts.out.join("model.toml");
    let thresholds = RawThresholds {
        score: Some(base.thresholds.score),
        iou: Some(base.thresholds.iou),
        max_detections: Some(base.thresholds.max_detections),
        top_k: None,
    };
    let comment = format!(
        "Written by vigil train from {} on {}: best epoch {best_epoch}.",
        opts.base.display(),
        opts.data.display()
    );
    write_manifest(&manifest_path, &comment, opts, &spec, Task::Detect, &classes, base.decoder.clone(), thresholds)?;
    let exported = Model::load(&manifest_path)?;
    let parity = test_vector(&model_onnx, &exported, &test_images[0], &spec, &opts.out)?;
    let identity: Vec<usize> = (0..classes.len()).collect();
    let test = crate::cli::eval::evaluate_detector(&exported, &test_images, &identity)?;
    test.write_reports(&opts.out, &classes)?;
    write_curves(&history, &opts.out)?;
    let report = DetectReport {
        classes,
        history,
        best_epoch,
        untrained,
        recipe,
        test_split,
        test,
        parity,
        manifest: manifest_path,
    };
    std::fs::write(opts.out.join("report.md"), report_text(opts, &report))?;
    std::fs::write(opts.out.join("train.json"), serde_json::to_string_pretty(&report)?)?;
    Ok(report)
}

/// Result of [`bench_detector_training`].
#[derive(Debug, Clone, Serialize)]
pub struct DetectBench {
    pub device: String,
    pub batch: i64,
    pub size: i64,
    pub classes: i64,
    pub steps: usize,
    /// The graph's step: forward, the mean square of every output summed (the same
    /// stand-in loss bench/compare_torch_detect.py gives PyTorch), backward, Adam.
    pub images_per_second: f64,
    /// vigil's whole training step: forward, ATSS targets for three boxes per image,
    /// NanoDet's loss, backward, Adam.
    pub full_step_images_per_second: f64,
    pub final_loss: f64,
}

/// Training throughput of a NanoDet-style detector (strides 8, 16, 32, `reg_max` 10, cell
/// centres) on random images at `size`, with fresh class rows for `classes` classes; no data
/// loading, no augmentation; `warmup` untimed steps before each timing.
pub fn bench_detector_training(
    onnx: &Path,
    device: Device,
    batch: i64,
    size: i64,
    classes: i64,
    steps: usize,
    warmup: usize,
) -> anyhow::Result<DetectBench> {
    const STRIDES: [usize; 3] = [8, 16, 32];
    const BINS: i64 = 11;
    // A size the strides do not divide breaks the graph's own joins (its upsampled maps no
    // longer line up), which libtorch would report by a panic.
    if size <= 0 || STRIDES.iter().any(|&s| size % s as i64 != 0) {
        bail!("--size {size} is not a multiple of the strides {STRIDES:?}");
    }
    tch::manual_seed(0);
    let mut module = GraphModule::load(onnx, device)?;
    module.detection_logits(Some(classes))?;
    let x = Tensor::randn([batch, 3, size, size], (Kind::Float, device));
    let outputs = tch::no_grad(|| module.forward_all_t(&x.narrow(0, 0, 1), false))?;
    let shapes: Vec<Vec<i64>> = outputs.iter().map(Tensor::size).collect();
    let layout = HeadLayout::find(&shapes, size, &STRIDES, classes, BINS)?;
    let geometry = Geometry::new(size as usize, &STRIDES, 0.5, device);
    let s = size as f32;
    let boxes: Vec<InputBoxes> = (0..batch)
        .map(|i| {
            let o = (i % 4) as f32 * 0.05 * s;
            vec![
                (0, BBox { x1: 0.1 * s + o, y1: 0.1 * s, x2: 0.4 * s + o, y2: 0.5 * s }, false),
                ((1 % classes) as usize, BBox { x1: 0.5 * s, y1: 0.2 * s + o, x2: 0.9 * s, y2: 0.6 * s + o }, false),
                (0, BBox { x1: 0.2 * s, y1: 0.6 * s, x2: 0.35 * s, y2: 0.9 * s }, false),
            ]
        })
        .collect();
    let mut opt = super::optim::FlatOptimizer::new(super::OptimizerKind::Adam, module.trainable(), 1e-3, 0.0, 0.0);
    let graph_step = |opt: &mut super::optim::FlatOptimizer| -> anyhow::Result<Tensor> {
        let outputs = module.forward_all_t(&x, false)?;
        let loss = outputs
            .iter()
            .map(|o| o.square().mean(Kind::Float))
            .fold(Tensor::zeros([], (Kind::Float, device)), |a, b| a + b);
        opt.backward_step(&loss);
        Ok(loss)
    };
    let full_step = |opt: &mut super::optim::FlatOptimizer| -> anyhow::Result<Tensor> {
        let t = targets(&geometry, &boxes, classes);
        let (cls, reg) = layout.gather(&module.forward_all_t(&x, false)?);
        let [loss, ..] = gfl_loss(&cls, &reg, &t, &geometry, BINS);
        opt.backward_step(&loss);
        Ok(loss)
    };
    let mut time =
        |step: &dyn Fn(&mut super::optim::FlatOptimizer) -> anyhow::Result<Tensor>| -> anyhow::Result<(f64, f64)> {
            for _ in 0..warmup {
                let _ = step(&mut opt)?;
            }
            super::sync(device);
            let t0 = Instant::now();
            let mut loss = 0.0;
            for _ in 0..steps {
                loss = step(&mut opt)?.double_value(&[]);
            }
            super::sync(device);
            Ok(((batch as f64 * steps as f64) / t0.elapsed().as_secs_f64(), loss))
        };
    let (images_per_second, final_loss) = time(&graph_step)?;
    let (full_step_images_per_second, _) = time(&full_step)?;
    Ok(DetectBench {
        device: format!("{device:?}"),
        batch,
        size,
        classes,
        steps,
        images_per_second,
        full_step_images_per_second,
        final_loss,
    })
}

/// Writes one test image as the test vector (input.npy and expected-N.npy per output, by
/// tch on the CPU from the exported file) and checks that tract computes the same.
fn test_vector(
    onnx: &Path,
    model: &Model,
    image: &DetectionImage,
    spec: &InputSpec,
    out: &Path,
) -> anyhow::Result<f32> {
    let pixels = crate::dataset::read_image(&image.path)?;
    let (input, _) = crate::model::preprocess(&pixels, spec);
    let reference = GraphModule::load(onnx, Device::Cpu)?;
    let shape: Vec<i64> = input.shape.iter().map(|&d| d as i64).collect();
    let expected =
        tch::no_grad(|| reference.forward_all_t(&Tensor::from_slice(&input.data).reshape(shape.as_slice()), false))?;
    let got = model.run_raw(&InputTensor { shape: input.shape, data: input.data.clone() })?;
    let dir = out.join("test-vector");
    std::fs::create_dir_all(&dir)?;
    crate::npy::write_f32(&dir.join("input.npy"), &input.shape, &input.data)?;
    if expected.len() != got.len() {
        bail!("the exported model has {} outputs in tract and {} in tch", got.len(), expected.len());
    }
    let mut worst = 0.0f32;
    for (i, (want, got)) in expected.iter().zip(&got).enumerate() {
        let dims: Vec<usize> = want.size().iter().map(|&d| d as usize).collect();
        let want = Vec::<f32>::try_from(want.contiguous().reshape([-1]))?;
        crate::npy::write_f32(&dir.join(format!("expected-{i}.npy")), &dims, &want)?;
        if got.data.len() != want.len() {
            bail!("output {i}: tract gives {:?}, tch {dims:?}", got.shape);
        }
        let d = max_scaled_diff(&got.data, &want);
        if d.is_nan() || d > 1e-4 {
            bail!(
                "the exported model differs between tract and tch by {d} on output {i} of the test vector (limit 1e-4)"
            );
        }
        worst = worst.max(d);
    }
    Ok(worst)
}

fn read_history(path: &Path) -> anyhow::Result<Vec<DetectEpoch>> {
    let text = crate::files::read_text_capped(path, super::MAX_RUN_FILE)
        .with_context(|| format!("cannot resume: no {}", path.display()))?;
    let mut lines = text.lines();
    if lines.next() != Some(HISTORY_HEADER) {
        bail!("cannot resume: {} is not a detection run's history", path.display());
    }
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<f64> = l
                .split(',')
                .map(|v| v.trim().parse::<f64>())
                .collect::<Result<_, _>>()
                .with_context(|| format!("{}: bad line {l:?}", path.display()))?;
            let [epoch, train_loss, train_qfl, train_giou, train_dfl, val_map50, val_map50_95, val_precision, val_recall, lr, seconds] =
                f[..]
            else {
                bail!("{}: expected 11 columns in {l:?}", path.display());
            };
            Ok(DetectEpoch {
                epoch: epoch as usize,
                train_loss,
                train_qfl,
                train_giou,
                train_dfl,
                val_map50,
                val_map50_95,
                val_precision,
                val_recall,
                lr,
                seconds,
            })
        })
        .collect()
}

/// loss.png and map.png: training loss and validation mAP per epoch.
fn write_curves(history: &[DetectEpoch], out: &Path) -> anyhow::Result<()> {
    use crate::plot::{line_chart, save, Axes, Series, COLOURS};
    let curve = |f: fn(&DetectEpoch) -> f64| history.iter().map(|h| (h.epoch as f64, f(h))).collect::<Vec<_>>();
    let charts = [
        (
            "loss.png",
            Axes { title: "training loss", x: "epoch", y: "loss", x_range: None, y_range: None },
            vec![
                ("total", curve(|h| h.train_loss)),
                ("quality focal", curve(|h| h.train_qfl)),
                ("GIoU", curve(|h| h.train_giou)),
                ("distribution focal", curve(|h| h.train_dfl)),
            ],
        ),
        (
            "map.png",
            Axes { title: "validation mAP", x: "epoch", y: "mAP", x_range: None, y_range: Some((0.0, 1.0)) },
            vec![("mAP50", curve(|h| h.val_map50)), ("mAP50-95", curve(|h| h.val_map50_95))],
        ),
    ];
    for (file, axes, series) in charts {
        let series: Vec<Series> = series
            .into_iter()
            .enumerate()
            .map(|(i, (name, points))| Series { name, colour: COLOURS[i], points })
            .collect();
        save(&line_chart(&axes, &series)?, &out.join(file))?;
    }
    Ok(())
}

fn report_text(opts: &TrainOptions, r: &DetectReport) -> String {
    let best = &r.history[r.best_epoch.saturating_sub(1).min(r.history.len().saturating_sub(1))];
    format!(
        "# Training report: {} {} (detector)\n\nBase model: {}\nData: {}\nDevice: {:?}, input {}, batch {}, {:?}, lr {}, \
         backbone {}\n\nBefore training (new class rows untrained): val mAP50 {:.4}, mAP50-95 {:.4}.\n\
         Best epoch {} of {} run: val mAP50 {:.4}, mAP50-95 {:.4}.\n\n## Exported model on the {} split (tract, as \
         `vigil eval`)\n\n```\n{}```\n\nFiles: model.onnx + model.toml (deployable), test-vector/ (input and expected \
         outputs; tract matches tch within {:.2e}), best.onnx, last.onnx, optimizer.pt, history.csv, loss.png, map.png, \
         per_class.csv, pr_curve.csv, pr_curve.png, ap_per_class.png, evaluation.json, train.json.\n\n![loss](loss.png) \
         ![mAP](map.png) ![precision-recall](pr_curve.png)\n",
        opts.name,
        opts.version,
        opts.base.display(),
        opts.data.display(),
        opts.device,
        opts.size.map(|s| s.to_string()).unwrap_or_else(|| "the base model's".into()),
        opts.batch,
        opts.optimizer,
        opts.lr,
        if opts.freeze_backbone {
            "frozen".to_string()
        } else {
            format!("at {} of the head's rate after {} head-only epochs", r.recipe.backbone_lr, r.recipe.head_warmup_epochs)
        },
        r.untrained.map50.unwrap_or(0.0),
        r.untrained.map50_95.unwrap_or(0.0),
        r.best_epoch,
        r.history.len(),
        best.val_map50,
        best.val_map50_95,
        r.test_split,
        r.test.summary(&r.classes),
        r.parity,
    )
}
