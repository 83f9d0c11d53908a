//! Command-line interface: the argument definitions and one module per subcommand.

mod bench;
#[cfg(feature = "train")]
mod bench_train;
pub mod eval;
mod infer;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Exit codes, shared by every subcommand.
pub mod exit {
    /// Something failed while running (an image could not be read, a model failed).
    pub const FAILURE: i32 = 1;
    /// The command line itself is wrong (clap's own code).
    pub const USAGE: i32 = 2;
    /// A model or its manifest was refused at load time.
    pub const BAD_MODEL: i32 = 3;
}

#[derive(Debug, Parser)]
#[command(name = "vigil", version, about = "Edge camera inference: ONNX CNNs on-device, detections over MQTT")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a model on image files and print what it sees.
    Infer(InferArgs),
    /// Measure a model's inference latency.
    Bench(BenchArgs),
    /// Evaluate a classifier on a labelled image folder (one folder per class).
    Eval(EvalArgs),
    /// Measure training throughput (forward, backward, Adam step) of an ONNX classifier.
    #[cfg(feature = "train")]
    BenchTrain(BenchTrainArgs),
}

#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// The classifier's manifest.
    #[arg(long, short)]
    pub model: PathBuf,
    /// An ImageFolder: one folder per class, named after the model's labels.
    #[arg(long)]
    pub data: PathBuf,
    /// Also write metrics.csv, confusion.csv and evaluation.json here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print the evaluation as JSON.
    #[arg(long)]
    pub json: bool,
}

#[cfg(feature = "train")]
#[derive(Debug, clap::Args)]
pub struct BenchTrainArgs {
    /// The ONNX classifier (its head is replaced for --classes classes).
    #[arg(long)]
    pub onnx: PathBuf,
    /// cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "auto")]
    pub device: String,
    #[arg(long, default_value_t = 16)]
    pub batch: i64,
    #[arg(long, default_value_t = 10)]
    pub classes: i64,
    /// Timed steps.
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    /// Untimed steps first.
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// CPU threads for libtorch (0: its default, one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: i32,
}

#[derive(Debug, clap::Args)]
pub struct InferArgs {
    /// The model manifest (<name>.toml beside the .onnx).
    #[arg(long, short)]
    pub model: PathBuf,
    /// Print one JSON document per image (one per line) instead of text.
    #[arg(long)]
    pub json: bool,
    /// Write the image with boxes and labels drawn. With several images, a folder.
    #[arg(long, value_name = "OUT")]
    pub draw: Option<PathBuf>,
    /// Minimum score, overriding the manifest's thresholds.score.
    #[arg(long, short)]
    pub threshold: Option<f32>,
    /// Number of classes to report for a classifier, overriding thresholds.top_k.
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Image files (PNG or JPEG).
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// The model manifest.
    #[arg(long, short)]
    pub model: PathBuf,
    /// The image fed to the model (default: a mid-grey frame).
    #[arg(long)]
    pub image: Option<PathBuf>,
    /// Timed runs.
    #[arg(long, default_value_t = 50)]
    pub iterations: usize,
    /// Untimed runs first.
    #[arg(long, default_value_t = 5)]
    pub warmup: usize,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    /// Also write the exact input tensor to this .npy file (for the reference runtime).
    #[arg(long, value_name = "FILE")]
    pub save_input: Option<PathBuf>,
}

/// Runs the parsed command; the error carries the exit code to use.
pub fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Infer(args) => infer::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Eval(args) => eval::run(args),
        #[cfg(feature = "train")]
        Command::BenchTrain(args) => bench_train::run(args),
    }
}

/// An error for `main` to print, with the process exit code it maps to.
#[derive(Debug)]
pub struct CliError {
    pub code: i32,
    pub error: anyhow::Error,
}

impl CliError {
    fn failure(error: impl Into<anyhow::Error>) -> CliError {
        CliError { code: exit::FAILURE, error: error.into() }
    }
}

impl From<crate::model::ModelError> for CliError {
    fn from(e: crate::model::ModelError) -> CliError {
        use crate::model::ModelError::*;
        let code = match e {
            Manifest { .. } | Onnx { .. } | Mismatch { .. } | Io { .. } => exit::BAD_MODEL,
            Run { .. } => exit::FAILURE,
        };
        CliError { code, error: e.into() }
    }
}

/// Reads an image file as RGB, naming the file in the error.
pub(crate) fn read_image(path: &std::path::Path) -> anyhow::Result<image::RgbImage> {
    use anyhow::Context;
    let reader = image::ImageReader::open(path)
        .with_context(|| format!("cannot open image {}", path.display()))?
        .with_guessed_format()
        .with_context(|| format!("cannot read image {}", path.display()))?;
    let image = reader
        .decode()
        .with_context(|| format!("{} is not a readable PNG or JPEG image", path.display()))?;
    Ok(image.to_rgb8())
}
