//! `vigil infer`: run a model on image files; text, JSON or annotated images out.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::json;

use super::{CliError, InferArgs};
use crate::annotate;
use crate::dataset::read_image;
use crate::model::{Model, Prediction, Timings};

pub(super) fn run(args: InferArgs) -> Result<(), CliError> {
    let model = Model::load(&args.model)?;
    let mut params = model.default_params();
    if let Some(t) = args.threshold {
        if !(0.0..=1.0).contains(&t) {
            return Err(CliError::failure(anyhow::anyhow!("--threshold must be within 0–1, got {t}")));
        }
        params.score = t;
    }
    if let Some(k) = args.top_k {
        params.top_k = k.max(1);
    }
    let draw_into_folder = args.images.len() > 1;
    if let (Some(out), true) = (&args.draw, draw_into_folder) {
        std::fs::create_dir_all(out)
            .with_context(|| format!("cannot create the --draw folder {}", out.display()))
            .map_err(CliError::failure)?;
    }

    let mut failed = 0;
    for path in &args.images {
        let result = infer_one(&model, path, &params, args.json).and_then(|(image, prediction)| {
            if let Some(out) = &args.draw {
                let target = if draw_into_folder { drawn_name(out, path) } else { out.clone() };
                let mut canvas = image;
                annotate::draw(&mut canvas, &prediction);
                canvas.save(&target).with_context(|| format!("cannot write {}", target.display()))?;
            }
            Ok(())
        });
        if let Err(e) = result {
            eprintln!("error: {e:#}");
            failed += 1;
        }
    }
    if failed > 0 {
        return Err(CliError::failure(anyhow::anyhow!("{failed} of {} image(s) failed", args.images.len())));
    }
    Ok(())
}

fn infer_one(
    model: &Model,
    path: &Path,
    params: &crate::model::DecodeParams,
    as_json: bool,
) -> anyhow::Result<(image::RgbImage, Prediction)> {
    let image = read_image(path)?;
    let (prediction, timings) = model.predict(&image, params)?;
    if as_json {
        println!("{}", serde_json::to_string(&json_report(model, path, &image, &prediction, &timings))?);
    } else {
        print!("{}", text_report(model, path, &prediction, &timings));
    }
    Ok((image, prediction))
}

/// The JSON document for one image (documented in docs/cli.md).
pub fn json_report(
    model: &Model,
    path: &Path,
    image: &image::RgbImage,
    prediction: &Prediction,
    timings: &Timings,
) -> serde_json::Value {
    let ms = |d: std::time::Duration| (d.as_secs_f64() * 1e5).round() / 100.0;
    let mut doc = json!({
        "image": path.display().to_string(),
        "width": image.width(),
        "height": image.height(),
        "model": {
            "name": model.manifest.name,
            "version": model.manifest.version,
            "sha256": model.sha256,
        },
        "timings_ms": {
            "preprocess": ms(timings.preprocess),
            "inference": ms(timings.inference),
            "decode": ms(timings.decode),
        },
    });
    match prediction {
        Prediction::Classes(c) => doc["classes"] = json!(c),
        Prediction::Detections(d) => doc["detections"] = json!(d),
    }
    doc
}

fn text_report(model: &Model, path: &Path, prediction: &Prediction, timings: &Timings) -> String {
    let mut out = format!(
        "{}  ({} {}, {:.1} ms)\n",
        path.display(),
        model.manifest.name,
        model.manifest.version,
        timings.inference.as_secs_f64() * 1e3
    );
    match prediction {
        Prediction::Classes(classes) => {
            for c in classes {
                out += &format!("  {:.3}  {}\n", c.score, c.label);
            }
        }
        Prediction::Detections(dets) if dets.is_empty() => out += "  nothing detected\n",
        Prediction::Detections(dets) => {
            for d in dets {
                let b = d.bbox;
                out += &format!(
                    "  {:.3}  {:<16} [{:.0}, {:.0}, {:.0}, {:.0}]\n",
                    d.score, d.label, b.x1, b.y1, b.x2, b.y2
                );
            }
        }
    }
    out
}

/// `<folder>/<image stem>.png` for drawing several images.
fn drawn_name(folder: &Path, image: &Path) -> PathBuf {
    let stem = image.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "image".into());
    folder.join(format!("{stem}.png"))
}
