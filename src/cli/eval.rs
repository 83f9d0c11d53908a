//! `vigil eval`: a classifier on a labelled image folder, with the device runtime (tract),
//! reporting the same metrics the trainer reports.

use std::path::Path;

use anyhow::{bail, Context};

use super::{CliError, EvalArgs};
use crate::dataset::{read_image, ImageFolder};
use crate::metrics::{evaluate, ranking, Evaluation};
use crate::model::{preprocess, Model, Task};

pub(super) fn run(args: EvalArgs) -> Result<(), CliError> {
    let model = Model::load(&args.model)?;
    let evaluation = evaluate_folder(&model, &args.data).map_err(CliError::failure)?;
    let labels = &model.manifest.labels;
    if args.json {
        println!("{}", serde_json::to_string(&evaluation).map_err(CliError::failure)?);
    } else {
        print!("{}", evaluation.summary(labels));
    }
    if let Some(out) = &args.out {
        evaluation.write_reports(out, labels).map_err(CliError::failure)?;
    }
    Ok(())
}

/// Runs `model` on every image of the ImageFolder at `data`; folder names must be labels
/// of the model.
pub fn evaluate_folder(model: &Model, data: &Path) -> anyhow::Result<Evaluation> {
    if model.manifest.task != Task::Classify {
        bail!("vigil eval measures classifiers; {} is a detector", model.manifest.name);
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
    for sample in &folder.samples {
        let image = read_image(&sample.path)?;
        let (input, _) = preprocess(&image, &model.manifest.input);
        let outputs = model.run_raw(&input)?;
        truth.push(class_of[sample.class]);
        rankings.push(ranking(&outputs[0].data));
    }
    Ok(evaluate(&truth, &rankings, labels.len()))
}
