//! `vigil eval`: a classifier on a labelled image folder, or a detector on YOLO or COCO
//! data, with the device runtime (tract), reporting the metrics the trainer reports.

use std::path::Path;

use anyhow::{bail, Context};

use super::{CliError, EvalArgs};
use crate::dataset::{read_image, DetectionData, DetectionImage, ImageFolder};
use crate::metrics::detection::{
    evaluate_detections, predicted_in_pixels, truth_in_pixels, DetectionEvaluation, ImageBoxes, MAP_SCORE_THRESHOLD,
};
use crate::metrics::{evaluate, ranking, Evaluation};
use crate::model::decode::{DecodeParams, Decoded};
use crate::model::{preprocess, Model, Runner, Task};

pub(super) fn run(args: EvalArgs) -> Result<(), CliError> {
    let model = Model::load_on(&args.model, args.engine)?;
    let labels = &model.manifest.labels;
    match model.manifest.task {
        Task::Classify => {
            if args.split.is_some() {
                return Err(CliError::failure(anyhow::anyhow!(
                    "--split is for detectors; a classifier is evaluated on the whole ImageFolder --data"
                )));
            }
            let e = evaluate_folder(&model, &args.data).map_err(CliError::failure)?;
            show(&e, e.summary(labels), |out| e.write_reports(out, labels), &args)
        }
        Task::Detect => {
            let e = evaluate_detection_data(&model, &args.data, args.split.as_deref()).map_err(CliError::failure)?;
            show(&e, e.summary(labels), |out| e.write_reports(out, labels), &args)
        }
    }
}

/// Prints an evaluation (`--json`: as JSON, else its `summary`) and, with `--out`, writes
/// its reports there.
fn show(
    evaluation: &impl serde::Serialize,
    summary: String,
    write_reports: impl FnOnce(&Path) -> anyhow::Result<()>,
    args: &EvalArgs,
) -> Result<(), CliError> {
    if args.json {
        println!("{}", serde_json::to_string(evaluation).map_err(CliError::failure)?);
    } else {
        print!("{summary}");
    }
    if let Some(out) = &args.out {
        write_reports(out).map_err(CliError::failure)?;
    }
    Ok(())
}

/// Reads detection data and evaluates `model` on one split of it (`None`: test if there is
/// one, else val).
pub fn evaluate_detection_data(model: &Model, path: &Path, split: Option<&str>) -> anyhow::Result<DetectionEvaluation> {
    // Only the split evaluated is read (COCO's own val2017 comes without its train2017
    // images); without --split, test and val, for test or else val.
    let data = match split {
        Some(s) => DetectionData::load(path, &[s], &[s])?,
        None => DetectionData::load(path, &["val", "test"], &[])?,
    };
    let split = split.unwrap_or(data.default_test_split());
    let images = data.split(split)?;
    if images.is_empty() {
        bail!("the {split} split of {} has no images", path.display());
    }
    let class_map = class_map(&data.names, &model.manifest.labels)?;
    if let Some(r) = &data.review {
        eprintln!(
            "vigil data set: {} reviewed and {} negative item(s) read; skipped {} unreviewed, {} discarded, {} without a \
             sidecar (docs/dataset.md)",
            r.reviewed, r.negative, r.unreviewed, r.discarded, r.without_sidecar
        );
    }
    eprintln!("evaluating {} on the {split} split: {} images", model.manifest.name, images.len());
    evaluate_detector(model, images, &class_map)
}

/// For each class name of the data, its index among the model's labels.
pub fn class_map(names: &[String], labels: &[String]) -> anyhow::Result<Vec<usize>> {
    let missing: Vec<&String> = names.iter().filter(|n| !labels.contains(n)).collect();
    if !missing.is_empty() {
        bail!(
            "the data's classes {missing:?} are not among the model's labels ({} labels, e.g. {:?})",
            labels.len(),
            &labels[..labels.len().min(5)]
        );
    }
    Ok(names.iter().map(|n| labels.iter().position(|l| l == n).unwrap()).collect())
}

/// mAP and the rest of a detector on `images` (classes mapped to the model's by
/// `class_map`), every image through the daemon's own path: preprocessing, tract, the
/// manifest's decoder and NMS, with detections down to [`MAP_SCORE_THRESHOLD`].
pub fn evaluate_detector(
    model: &Model,
    images: &[DetectionImage],
    class_map: &[usize],
) -> anyhow::Result<DetectionEvaluation> {
    if model.manifest.task != Task::Detect {
        bail!("{} is not a detector", model.manifest.name);
    }
    let params = DecodeParams { score: MAP_SCORE_THRESHOLD, ..model.default_params() };
    let mut boxes = Vec::with_capacity(images.len());
    // One runner for every image: the onnxruntime engine builds its session once.
    let mut runner = Runner::single();
    for image in images {
        let pixels = read_image(&image.path)?;
        let (input, transform) = preprocess(&pixels, &model.manifest.input);
        let outputs =
            model.run_in(&mut runner, input).with_context(|| format!("running on {}", image.path.display()))?;
        let Decoded::Boxes(candidates) = model.decode_raw(&outputs, &params) else {
            bail!("{}: the decoder gave classes, not boxes", model.manifest.name);
        };
        boxes.push(ImageBoxes {
            truth: truth_in_pixels(image, class_map),
            predicted: predicted_in_pixels(&candidates, &transform),
        });
    }
    Ok(evaluate_detections(&boxes, model.manifest.labels.len(), model.manifest.thresholds.score))
}

/// Runs `model` on every image of the ImageFolder at `data`; folder names must be labels
/// of the model.
pub fn evaluate_folder(model: &Model, data: &Path) -> anyhow::Result<Evaluation> {
    if model.manifest.task != Task::Classify {
        bail!("{} is a detector: give it detection data (a YOLO data.yaml or a COCO folder)", model.manifest.name);
    }
    let folder = ImageFolder::scan(data)?;
    let labels = &model.manifest.labels;
    let class_of: Vec<usize> = folder
        .classes
        .iter()
        .map(|c| {
            labels.iter().position(|l| l == c).with_context(|| {
                format!("class folder \"{c}\" in {} is not one of the model's labels {labels:?}", data.display())
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let mut truth = Vec::new();
    let mut rankings = Vec::new();
    let mut runner = Runner::single();
    for sample in &folder.samples {
        let image = read_image(&sample.path)?;
        let (input, _) = preprocess(&image, &model.manifest.input);
        let outputs = model.run_in(&mut runner, input)?;
        truth.push(class_of[sample.class]);
        rankings.push(ranking(&outputs[0].data));
    }
    Ok(evaluate(&truth, &rankings, labels.len()))
}
