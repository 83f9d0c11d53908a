//! `vigil bench`: how fast a model runs, alone (each stage timed: JPEG decode, preprocess,
//! inference, decode) or, with `--pipeline`, inside a camera's whole path
//! ([`crate::daemon::bench`]). bench/compare_ort.py runs it beside onnxruntime on the same
//! input and reports ratios.

use std::time::Instant;

use anyhow::Context;
use serde_json::json;

use super::{BenchArgs, CliError};
use crate::config::Count;
use crate::daemon::bench::{pipeline, PipelineBench};
use crate::dataset::read_image;
use crate::model::{preprocess, Model, Runner};

/// JPEG quality of the frames the benchmark decodes (a typical MJPEG camera's).
const JPEG_QUALITY: u8 = 90;

pub(super) fn run(args: BenchArgs) -> Result<(), CliError> {
    if args.pipeline {
        // As the daemon runs.
        crate::daemon::one_malloc_arena();
    }
    let model = Model::load_on(&args.model, args.engine)?;
    let spec = &model.manifest.input;
    let image = match &args.image {
        Some(path) => read_image(path).map_err(CliError::failure)?,
        None => image::RgbImage::from_pixel(spec.width as u32, spec.height as u32, image::Rgb([128, 128, 128])),
    };
    let mut jpeg = Vec::new();
    image
        .write_with_encoder(image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, JPEG_QUALITY))
        .context("encoding the frame as JPEG")
        .map_err(CliError::failure)?;
    if args.pipeline {
        return run_pipeline(&args, model, jpeg);
    }
    let (input, transform) = preprocess(&image, spec);
    if let Some(path) = &args.save_input {
        crate::npy::write_f32(path, &input.shape, &input.data)
            .with_context(|| format!("cannot write {}", path.display()))
            .map_err(CliError::failure)?;
    }
    let threads = match args.threads {
        None => 1,
        Some(Count::Fixed(n)) => n,
        Some(Count::Auto) => crate::daemon::pipeline::cpu_share(1),
    };
    let mut runner = Runner::with_threads(threads, "vigil-bench");
    let params = model.default_params();
    for _ in 0..args.warmup {
        model.run_in(&mut runner, input.clone())?;
    }
    let iterations = args.iterations.max(1);
    let mut stages: [Vec<f64>; 5] = Default::default();
    let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1e3;
    for _ in 0..iterations {
        let t0 = Instant::now();
        let frame = image::load_from_memory_with_format(&jpeg, image::ImageFormat::Jpeg)
            .context("decoding the JPEG frame")
            .map_err(CliError::failure)?
            .into_rgb8();
        let t1 = Instant::now();
        let (input, _) = preprocess(&frame, spec);
        let t2 = Instant::now();
        let outputs = model.run_in(&mut runner, input)?;
        let t3 = Instant::now();
        let _ = model.decode(&outputs, &transform, &params);
        let t4 = Instant::now();
        for (samples, ms) in stages.iter_mut().zip([ms(t0, t1), ms(t1, t2), ms(t2, t3), ms(t3, t4), ms(t1, t4)]) {
            samples.push(ms);
        }
    }
    let [jpeg_ms, pre, inf, post, all] = stages.map(|mut s| Summary::of(&mut s));
    let (width, height) = image.dimensions();
    if args.json {
        let doc = json!({
            "model": model.manifest.name,
            "version": model.manifest.version,
            "engine": model.engine().name(),
            "sha256": model.sha256,
            "input_shape": input.shape,
            "frame": [width, height],
            "threads": runner.threads(),
            "iterations": iterations,
            "jpeg_decode_ms": jpeg_ms.json(),
            "preprocess_ms": pre.json(),
            "inference_ms": inf.json(),
            "decode_ms": post.json(),
            "pipeline_ms": all.json(),
        });
        println!("{doc}");
    } else {
        println!(
            "{} {} on {}: input {:?}, frame {width}x{height}, {} runs, {} thread(s)",
            model.manifest.name,
            model.manifest.version,
            model.engine().name(),
            input.shape,
            iterations,
            runner.threads()
        );
        println!("  JPEG decode ms:  {}", jpeg_ms.text());
        println!("  preprocess ms:   {}", pre.text());
        println!("  inference ms:    {}", inf.text());
        println!("  decode ms:       {}", post.text());
        println!("  all but JPEG ms: {}", all.text());
    }
    Ok(())
}

fn run_pipeline(args: &BenchArgs, model: Model, jpeg: Vec<u8>) -> Result<(), CliError> {
    // The camera serves this very model: a second copy would count in the memory figures.
    let model = std::sync::Arc::new(model);
    let bench = PipelineBench {
        manifest: args.model.clone(),
        model: model.clone(),
        jpeg,
        threads: args.threads.unwrap_or(Count::Auto),
        in_flight: args.in_flight.unwrap_or(Count::Auto),
        warmup: args.warmup as u64,
        frames: args.frames,
        fps: args.fps,
        seconds: args.seconds,
        motion: args.motion,
        collect: false,
    };
    if args.collect {
        return compare_collection(args, &model, bench);
    }
    let report = pipeline(&bench).map_err(|e| CliError::failure(anyhow::anyhow!("{e}")))?;
    let mut latency = report.latency_ms.clone();
    let latency = Summary::of(&mut latency);
    let mb = |b: u64| b as f64 / (1 << 20) as f64;
    if args.json {
        let doc = json!({
            "model": model.manifest.name,
            "version": model.manifest.version,
            "engine": model.engine().name(),
            "threads": report.threads,
            "in_flight": report.in_flight,
            "frames": report.frames,
            "inferred": report.inferred,
            "seconds": report.seconds,
            "frames_per_s": report.frames_per_s,
            "cpu_ms_per_frame": report.cpu_s_per_frame * 1e3,
            "cpu_s_per_minute": report.cpu_s_per_minute,
            "latency_ms": latency.json(),
            "rss_mb": mb(report.rss_bytes),
            "peak_rss_mb": mb(report.peak_rss_bytes),
        });
        println!("{doc}");
    } else {
        println!(
            "{} {} on {}: camera pipeline, {} thread(s), {} frame(s) in flight, {} frames in {:.2} s",
            model.manifest.name,
            model.manifest.version,
            model.engine().name(),
            report.threads,
            report.in_flight,
            report.frames,
            report.seconds
        );
        println!(
            "  frames/s:           {:.2} ({} of {} frames inferred)",
            report.frames_per_s, report.inferred, report.frames
        );
        println!("  CPU ms per frame:   {:.2}", report.cpu_s_per_frame * 1e3);
        println!("  CPU s per minute:   {:.2}", report.cpu_s_per_minute);
        println!("  latency ms:         {}", latency.text());
        println!(
            "  memory:             {:.1} MB resident, {:.1} MB at peak",
            mb(report.rss_bytes),
            mb(report.peak_rss_bytes)
        );
    }
    Ok(())
}

/// `--pipeline --collect`: the pipeline with collection off and on, twice each in turns
/// (off, on, off, on: a drift of the machine's speed weighs on both alike), and the ratio of
/// their frames/s.
fn compare_collection(args: &BenchArgs, model: &Model, bench: PipelineBench) -> Result<(), CliError> {
    let mut rounds = Vec::new();
    for collect in [false, true, false, true] {
        let run = PipelineBench { collect, ..bench.clone() };
        let report = pipeline(&run).map_err(|e| CliError::failure(anyhow::anyhow!("{e}")))?;
        eprintln!(
            "collection {}: {:.2} frames/s, {} saved, {} dropped",
            if collect { "on " } else { "off" },
            report.frames_per_s,
            report.collected,
            report.collect_dropped
        );
        rounds.push((collect, report));
    }
    let total = |on: bool| -> (f64, f64, u64) {
        rounds
            .iter()
            .filter(|(c, _)| *c == on)
            .fold((0.0, 0.0, 0), |(f, s, n), (_, r)| (f + r.frames as f64, s + r.seconds, n + r.collected))
    };
    let ((f_off, s_off, _), (f_on, s_on, saved)) = (total(false), total(true));
    let (off, on) = (f_off / s_off, f_on / s_on);
    if args.json {
        println!(
            "{}",
            json!({"model": model.manifest.name, "frames_per_s_off": off, "frames_per_s_on": on, "ratio": on / off,
                   "saved": saved, "seconds_on": s_on})
        );
    } else {
        println!(
            "{} on {}: collection on ÷ off = {:.3} ({on:.2} ÷ {off:.2} frames/s; {saved} frames saved in {s_on:.1} s on)",
            model.manifest.name,
            model.engine().name(),
            on / off
        );
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
        if samples.is_empty() {
            return Summary {
                mean: f64::NAN,
                p50: f64::NAN,
                p90: f64::NAN,
                p99: f64::NAN,
                min: f64::NAN,
                max: f64::NAN,
            };
        }
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
