//! `vigil bench-train`: training throughput of an ONNX classifier with libtorch.
//! bench/compare_torch_train.py runs it beside PyTorch on the same model and batch.

use super::{BenchTrainArgs, CliError};
use crate::train;

pub(super) fn run(args: BenchTrainArgs) -> Result<(), CliError> {
    let device = train::parse_device(&args.device).map_err(CliError::failure)?;
    if args.threads > 0 {
        tch::set_num_threads(args.threads);
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
