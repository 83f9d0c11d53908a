//! `vigil infer`: run a model on image files; text, JSON or annotated images out.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::json;

use super::{CliError, InferArgs};
use crate::annotate;
use crate::dataset::read_image;
use crate::model::{Model, Prediction, Runner, Timings};

pub(super) fn run(args: InferArgs) -> Result<(), CliError> {
    let usage = |message: String| CliError { code: super::exit::USAGE, error: anyhow::anyhow!(message) };
    if let Some(t) = args.threshold {
        if !(0.0..=1.0).contains(&t) {
            return Err(usage(format!("--threshold must be within 0–1, got {t}")));
        }
    }
    let targets = match &args.draw {
        Some(out) => drawn_paths(out, &args.images).map_err(usage)?,
        None => Vec::new(),
    };
    let model = Model::load_on(&args.model, args.engine)?;
    let mut params = model.default_params();
    if let Some(t) = args.threshold {
        params.score = t;
    }
    if let Some(k) = args.top_k {
        params.top_k = k.max(1);
    }
    if let (Some(out), true) = (&args.draw, draws_into_folder(args.draw.as_deref(), &args.images)) {
        std::fs::create_dir_all(out)
            .with_context(|| format!("cannot create the --draw folder {}", out.display()))
            .map_err(CliError::failure)?;
    }

    let mut stdout = std::io::stdout().lock();
    let mut failed = 0;
    // One runner for every image: the onnxruntime engine builds its session once.
    let mut runner = Runner::single();
    for (i, path) in args.images.iter().enumerate() {
        let result =
            infer_one(&model, &mut runner, path, &params, args.json).and_then(|(report, image, prediction)| {
                if let Err(e) = stdout.write_all(report.as_bytes()).and_then(|_| stdout.flush()) {
                    return Err(Output(e).into());
                }
                if let Some(target) = targets.get(i) {
                    let mut canvas = image;
                    annotate::draw(&mut canvas, &prediction);
                    canvas.save(target).with_context(|| format!("cannot write {}", target.display()))?;
                }
                Ok(())
            });
        match result {
            Ok(()) => {}
            // Whoever reads the output has gone (`vigil infer … | head`): stop quietly (the
            // exit code still says whether an image before failed).
            Err(e) if e.downcast_ref::<Output>().is_some_and(|o| o.0.kind() == std::io::ErrorKind::BrokenPipe) => break,
            Err(e) if e.is::<Output>() => return Err(CliError::failure(e)),
            Err(e) => {
                eprintln!("error: {e:#}");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        return Err(CliError::failure(anyhow::anyhow!("{failed} of {} image(s) failed", args.images.len())));
    }
    Ok(())
}

/// Writing the report to standard output failed: no further image is worth running.
#[derive(Debug, thiserror::Error)]
#[error("cannot write to standard output: {0}")]
struct Output(std::io::Error);

/// With several images, or an existing folder, `--draw` names a folder.
fn draws_into_folder(out: Option<&Path>, images: &[PathBuf]) -> bool {
    images.len() > 1 || out.is_some_and(Path::is_dir)
}

/// Where each image's drawing goes: `out` itself for one image, else `<out>/<stem>.png`,
/// with `-2`, `-3`… added where two images share a stem. Refused before anything runs: a
/// target that is one of the input images (it would be overwritten).
fn drawn_paths(out: &Path, images: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let targets: Vec<PathBuf> = if draws_into_folder(Some(out), images) {
        let mut taken = std::collections::BTreeSet::new();
        images
            .iter()
            .map(|image| {
                let stem =
                    image.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "image".into());
                let mut name = format!("{stem}.png");
                let mut n = 1;
                while !taken.insert(name.clone()) {
                    n += 1;
                    name = format!("{stem}-{n}.png");
                }
                out.join(name)
            })
            .collect()
    } else {
        vec![out.to_path_buf()]
    };
    let same_file = |a: &Path, b: &Path| match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    for target in &targets {
        if let Some(input) = images.iter().find(|i| same_file(i, target)) {
            return Err(format!(
                "--draw would write {} over the input image {}; choose another path",
                target.display(),
                input.display()
            ));
        }
    }
    Ok(targets)
}

/// Runs one image: its report (text or a JSON line), the image and the prediction.
fn infer_one(
    model: &Model,
    runner: &mut Runner,
    path: &Path,
    params: &crate::model::DecodeParams,
    as_json: bool,
) -> anyhow::Result<(String, image::RgbImage, Prediction)> {
    let image = read_image(path)?;
    let (prediction, timings) = model.predict_in(runner, &image, params)?;
    let report = if as_json {
        format!("{}\n", serde_json::to_string(&json_report(model, path, &image, &prediction, &timings))?)
    } else {
        text_report(model, path, &prediction, &timings)
    };
    Ok((report, image, prediction))
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
            "engine": model.engine().name(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drawings_never_overwrite_an_input_nor_each_other() {
        let dir = std::env::temp_dir().join(format!("vigil-drawn-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("a")).unwrap();
        std::fs::create_dir_all(dir.join("b")).unwrap();
        for f in ["a/cat.jpg", "b/cat.jpg", "a/dog.png"] {
            std::fs::write(dir.join(f), b"x").unwrap();
        }
        let images: Vec<PathBuf> = ["a/cat.jpg", "b/cat.jpg", "a/dog.png"].iter().map(|f| dir.join(f)).collect();
        let out = dir.join("out");
        let names: Vec<PathBuf> = drawn_paths(&out, &images).unwrap();
        assert_eq!(names, [out.join("cat.png"), out.join("cat-2.png"), out.join("dog.png")]);
        // Into the inputs' own folder: dog.png would be drawn over itself.
        let e = drawn_paths(&dir.join("a"), &images).unwrap_err();
        assert!(e.contains("over the input image") && e.contains("dog.png"), "{e}");
        // One image drawn onto itself, by another spelling of its path.
        let e = drawn_paths(&dir.join("b/../a/dog.png"), &images[2..]).unwrap_err();
        assert!(e.contains("over the input image"), "{e}");
        // One image and an existing folder: drawn into it.
        assert_eq!(
            drawn_paths(&out, &images[..1]).unwrap(),
            std::slice::from_ref(&out),
            "a file while it does not exist"
        );
        std::fs::create_dir_all(&out).unwrap();
        assert_eq!(drawn_paths(&out, &images[..1]).unwrap(), [out.join("cat.png")]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
