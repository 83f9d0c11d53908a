//! `vigil bench`: latency percentiles of one model on one input, single-threaded.
//! bench/compare_ort.py runs it beside onnxruntime on the same input and reports ratios.

use std::time::Instant;

use anyhow::Context;
use serde_json::json;

use super::{BenchArgs, CliError};
use crate::dataset::read_image;
use crate::model::{preprocess, Model};

pub(super) fn run(args: BenchArgs) -> Result<(), CliError> {
    let model = Model::load(&args.model)?;
    let spec = &model.manifest.input;
    let image = match &args.image {
        Some(path) => read_image(path).map_err(CliError::failure)?,
        None => image::RgbImage::from_pixel(spec.width as u32, spec.height as u32, image::Rgb([128, 128, 128])),
    };
    let (input, transform) = preprocess(&image, spec);
    if let Some(path) = &args.save_input {
        crate::npy::write_f32(path, &input.shape, &input.data)
            .with_context(|| format!("cannot write {}", path.display()))
            .map_err(CliError::failure)?;
    }
    let params = model.default_params();
    for _ in 0..args.warmup {
        model.run_raw(&input)?;
    }
    let iterations = args.iterations.max(1);
    let mut inference = Vec::with_capacity(iterations);
    let mut pipeline = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let t0 = Instant::now();
        let (input, _) = preprocess(&image, spec);
        let t1 = Instant::now();
        let outputs = model.run_raw(&input)?;
        let t2 = Instant::now();
        let _ = model.decode(&outputs, &transform, &params);
        let t3 = Instant::now();
        inference.push((t2 - t1).as_secs_f64() * 1e3);
        pipeline.push((t3 - t0).as_secs_f64() * 1e3);
    }
    let inf = Summary::of(&mut inference);
    let all = Summary::of(&mut pipeline);
    if args.json {
        let doc = json!({
            "model": model.manifest.name,
            "version": model.manifest.version,
            "sha256": model.sha256,
            "input_shape": input.shape,
            "threads": 1,
            "iterations": iterations,
            "inference_ms": inf.json(),
            "pipeline_ms": all.json(),
        });
        println!("{doc}");
    } else {
        println!(
            "{} {}: input {:?}, {} runs, 1 thread",
            model.manifest.name, model.manifest.version, input.shape, iterations
        );
        println!("  inference ms: {}", inf.text());
        println!("  with pre/post-processing ms: {}", all.text());
    }
    Ok(())
}

struct Summary {
    mean: f64,
    p50: f64,
    p90: f64,
    p99: f64,
    min: f64,
    max: f64,
}

impl Summary {
    fn of(samples: &mut [f64]) -> Summary {
        samples.sort_by(f64::total_cmp);
        let pct = |p: f64| samples[((samples.len() - 1) as f64 * p).round() as usize];
        Summary {
            mean: samples.iter().sum::<f64>() / samples.len() as f64,
            p50: pct(0.5),
            p90: pct(0.9),
            p99: pct(0.99),
            min: samples[0],
            max: samples[samples.len() - 1],
        }
    }
    fn json(&self) -> serde_json::Value {
        json!({"mean": self.mean, "p50": self.p50, "p90": self.p90, "p99": self.p99, "min": self.min, "max": self.max})
    }
    fn text(&self) -> String {
        format!(
            "p50 {:.2}  p90 {:.2}  p99 {:.2}  mean {:.2}  min {:.2}  max {:.2}",
            self.p50, self.p90, self.p99, self.mean, self.min, self.max
        )
    }
}
