//! `vigil bench-train`: training throughput of an ONNX classifier or NanoDet-style detector
//! with libtorch. bench/compare_torch_train.py and bench/compare_torch_detect.py run it beside
//! PyTorch on the same model and batch.

use super::{BenchTrainArgs, CliError};
use crate::train;

pub(super) fn run(args: BenchTrainArgs) -> Result<(), CliError> {
    let device = train::parse_device(&args.device).map_err(CliError::failure)?;
    if args.threads > 0 {
        tch::set_num_threads(args.threads);
    }
    // A graph without a fully-connected head is taken for a NanoDet-style detector.
    let classifier = train::GraphModule::load(&args.onnx, tch::Device::Cpu).map_err(CliError::failure)?.head().is_ok();
    if !classifier {
        if args.libtorch_adam {
            return Err(CliError::failure(anyhow::anyhow!("--libtorch-adam is for classifiers")));
        }
        let size = args.size.unwrap_or(320);
        let report = train::detect::bench_detector_training(
            &args.onnx,
            device,
            args.batch,
            size,
            args.classes,
            args.steps,
            args.warmup,
        )
        .map_err(CliError::failure)?;
        println!("{}", serde_json::to_string(&report).map_err(CliError::failure)?);
        return Ok(());
    }
    if args.size.is_some() {
        return Err(CliError::failure(anyhow::anyhow!(
            "--size is for detectors; a classifier runs at its graph's size"
        )));
    }
    let report = train::bench_training(
        &args.onnx,
        device,
        args.batch,
        args.classes,
        args.steps,
        args.warmup,
        args.libtorch_adam,
    )
    .map_err(CliError::failure)?;
    println!("{}", serde_json::to_string(&report).map_err(CliError::failure)?);
    Ok(())
}
