//! Command-line interface: the argument definitions and one module per subcommand.

mod bench;
mod bench_source;
#[cfg(feature = "train")]
mod bench_train;
mod dataset;
mod deploy;
pub mod eval;
mod infer;
mod run;
#[cfg(feature = "train")]
mod train;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::Count;
use crate::model::Engine;

/// Exit codes, shared by every subcommand.
/// `--tolerance`: a positive, finite number.
fn tolerance(text: &str) -> Result<f32, String> {
    match text.parse::<f32>() {
        Ok(t) if t.is_finite() && t > 0.0 => Ok(t),
        _ => Err(format!("{text:?} is not a positive number")),
    }
}

/// A finite number, 0 or more (rates, fractions, degrees).
#[cfg(feature = "train")]
fn finite_non_negative(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("{text:?} is not a finite number, 0 or more")),
    }
}

/// A count of at least 1.
#[cfg(feature = "train")]
fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("{text:?} is not a whole number of at least 1")),
    }
}

/// An input side in pixels, as a manifest may have it.
#[cfg(feature = "train")]
fn input_side(text: &str) -> Result<usize, String> {
    let max = crate::model::manifest::MAX_INPUT_SIDE;
    match text.parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(format!("{text:?} is not a side of 1 to {max} pixels")),
    }
}

pub mod exit {
    /// Something failed while running (an image could not be read, a model failed).
    pub const FAILURE: i32 = 1;
    /// The command line itself is wrong (clap's own code).
    pub const USAGE: i32 = 2;
    /// A model or its manifest was refused at load time.
    pub const BAD_MODEL: i32 = 3;
    /// A deploy bundle was refused (by `check-bundle`, or by a device for `deploy` and
    /// `rollback`).
    pub const BAD_BUNDLE: i32 = 4;
    /// `deploy` / `rollback`: a device expected to answer did not within the timeout.
    pub const NO_ANSWER: i32 = 5;
    /// The daemon's configuration was refused (sysexits' EX_CONFIG).
    pub const BAD_CONFIG: i32 = 78;
}

#[derive(Debug, Parser)]
#[command(name = "vigil", version, about = "Edge camera inference: ONNX CNNs on-device, detections over MQTT")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: cameras → models → MQTT (docs/config.md, docs/mqtt.md).
    Run(RunArgs),
    /// Check a daemon configuration and exit (for systemd's ExecStartPre).
    Validate(ValidateArgs),
    /// Make an ed25519 key pair for signing deploy bundles.
    Keygen(KeygenArgs),
    /// Make a signed deploy bundle of a model, with a test vector computed by tract.
    Bundle(BundleArgs),
    /// Verify a deploy bundle as a device would (signature, digests, target, model, test vector).
    CheckBundle(CheckBundleArgs),
    /// Publish a bundle to devices over MQTT (retained) and wait for their answers.
    Deploy(DeployArgs),
    /// Return devices to the previous version of a model, and wait for their answers.
    Rollback(RollbackArgs),
    /// Run a model on image files and print what it sees.
    Infer(InferArgs),
    /// Measure a model's inference latency.
    Bench(BenchArgs),
    /// Measure what a camera source costs alone: pictures decoded and CPU per picture.
    BenchSource(BenchSourceArgs),
    /// Evaluate a classifier (on a folder per class) or a detector (on YOLO or COCO data).
    Eval(EvalArgs),
    /// Turn collected frames or photos into a training set: prelabel, merge, stats, accept.
    #[command(subcommand)]
    Dataset(DatasetCommand),
    /// Measure training throughput (forward, backward, Adam step) of a classifier or detector.
    #[cfg(feature = "train")]
    BenchTrain(BenchTrainArgs),
    /// Fine-tune a pretrained classifier or detector on labelled images, evaluate it, export it.
    #[cfg(feature = "train")]
    Train(TrainArgs),
    /// Fine-tune a classifier or detector (this build has no trainer: see the message it prints).
    #[cfg(not(feature = "train"))]
    Train(NoTrainer),
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The configuration file (TOML; keys in docs/config.md).
    #[arg(long, short, default_value = "/etc/vigil/vigil.toml")]
    pub config: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// The configuration file to check.
    #[arg(long, short, default_value = "/etc/vigil/vigil.toml")]
    pub config: PathBuf,
    /// Also load every camera's model and check it against its graph.
    #[arg(long)]
    pub models: bool,
}

#[derive(Debug, clap::Args)]
pub struct KeygenArgs {
    /// The secret key file to write (mode 0600); the public key goes to <OUT>.pub.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct BundleArgs {
    /// The model's manifest.
    #[arg(long, short)]
    pub model: PathBuf,
    /// The secret key (from `vigil keygen`).
    #[arg(long)]
    pub key: PathBuf,
    /// The bundle file to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Devices the bundle is for (repeatable); with no --device and no --group, any device.
    #[arg(long = "device")]
    pub devices: Vec<String>,
    /// Device groups the bundle is for (repeatable).
    #[arg(long = "group")]
    pub groups: Vec<String>,
    /// Largest relative difference a device may see on the test vector.
    #[arg(long, default_value_t = 1e-4, value_parser = tolerance)]
    pub tolerance: f32,
}

#[derive(Debug, clap::Args)]
pub struct CheckBundleArgs {
    /// The bundle file.
    #[arg(long)]
    pub bundle: PathBuf,
    /// Trusted public key files (repeatable).
    #[arg(long = "trust", required = true)]
    pub trust: Vec<PathBuf>,
    /// Check the target as this device would.
    #[arg(long)]
    pub device: Option<String>,
    #[arg(long = "group")]
    pub groups: Vec<String>,
    /// Largest bundle accepted, bytes.
    #[arg(long, default_value_t = 256 << 20)]
    pub max_size: usize,
}

#[derive(Debug, clap::Args)]
pub struct DeployArgs {
    /// The bundle file (from `vigil bundle`).
    #[arg(long)]
    pub bundle: PathBuf,
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub broker: BrokerArgs,
}

#[derive(Debug, clap::Args)]
pub struct RollbackArgs {
    /// The model name to roll back (default: the only model each device serves).
    #[arg(long)]
    pub model: Option<String>,
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub broker: BrokerArgs,
}

/// Which devices, and how long to wait for them.
#[derive(Debug, clap::Args)]
pub struct TargetArgs {
    /// A device id (repeatable).
    #[arg(long = "device")]
    pub devices: Vec<String>,
    /// A device group, as in the devices' deploy.groups (repeatable).
    #[arg(long = "group")]
    pub groups: Vec<String>,
    /// Device topics are <PREFIX>/<device>/…: the devices' mqtt.topic_prefix without the id.
    #[arg(long, default_value = "vigil")]
    pub prefix: String,
    /// The devices' deploy.group_prefix.
    #[arg(long, default_value = "vigil/groups")]
    pub group_prefix: String,
    /// Wait until at least this many devices have answered (for groups).
    #[arg(long)]
    pub expect: Option<usize>,
    /// Seconds to wait for the answers.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
}

/// How to reach the MQTT broker the devices use.
#[derive(Debug, clap::Args)]
pub struct BrokerArgs {
    /// mqtt://host[:port] or mqtts://host[:port].
    #[arg(long)]
    pub broker: String,
    #[arg(long)]
    pub username: Option<String>,
    /// A file whose first line is the password.
    #[arg(long)]
    pub password_file: Option<PathBuf>,
    /// The CA certificate (PEM) for mqtts://.
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// A client certificate (PEM), for brokers that ask for one; with --client-key.
    #[arg(long, requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    #[arg(long, requires = "client_cert")]
    pub client_key: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// The model's manifest: a classifier or a detector.
    #[arg(long, short)]
    pub model: PathBuf,
    /// A classifier: an ImageFolder, one folder per class named after the model's labels.
    /// A detector: a YOLO data.yaml or a COCO folder, class names among the model's labels.
    #[arg(long)]
    pub data: PathBuf,
    /// A detector's split to evaluate: train, val or test [default: test if the data has one,
    /// else val].
    #[arg(long)]
    pub split: Option<String>,
    /// Also write the reports here: metrics.csv, confusion.csv and evaluation.json for a
    /// classifier; per_class.csv, evaluation.json, pr_curve.csv, pr_curve.png and ap_per_class.png for a detector.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print the evaluation as JSON.
    #[arg(long)]
    pub json: bool,
    /// What runs the graph, overriding the manifest's `engine`: tract, or onnxruntime (a build
    /// with feature `onnxruntime` and the library, docs/models.md "Engines").
    #[arg(long, value_parser = parse_engine)]
    pub engine: Option<Engine>,
}

/// `vigil dataset …` (docs/dataset.md).
#[derive(Debug, Subcommand)]
pub enum DatasetCommand {
    /// Run a detector on photos and write them as a collection, its detections as pre-labels.
    Prelabel(PrelabelArgs),
    /// Merge collections (copied from devices) into a data set for `vigil train` and `vigil eval`.
    Merge(MergeArgs),
    /// Count a collection's or data set's items by split, camera, review state and class.
    Stats(StatsArgs),
    /// Mark items reviewed (their label files as they are), negative (nothing in them) or discarded.
    Accept(AcceptArgs),
}

#[derive(Debug, clap::Args)]
pub struct PrelabelArgs {
    /// The detector's manifest.
    #[arg(long, short)]
    pub model: PathBuf,
    /// Image files (PNG, JPEG) or folders of them (searched with their subfolders).
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// The collection to write (created, or added to).
    #[arg(long)]
    pub out: PathBuf,
    /// Detections scored at least this become pre-labels.
    #[arg(long, default_value_t = 0.5, value_parser = unit_interval)]
    pub score: f32,
    #[arg(long, value_parser = parse_engine)]
    pub engine: Option<Engine>,
}

#[derive(Debug, clap::Args)]
pub struct MergeArgs {
    /// The data set to write (created, or added to).
    #[arg(long)]
    pub out: PathBuf,
    /// Collections (or data sets) to merge in.
    #[arg(required = true)]
    pub sources: Vec<PathBuf>,
    /// The share of items for validation [default: 0.15 for a new data set; an existing one
    /// keeps its own].
    #[arg(long, value_parser = unit_interval_f64)]
    pub val: Option<f64>,
    /// The share of items for testing [default: 0.10, as --val].
    #[arg(long, value_parser = unit_interval_f64)]
    pub test: Option<f64>,
}

#[derive(Debug, clap::Args)]
pub struct StatsArgs {
    /// A collection or a data set.
    pub folder: PathBuf,
    /// Print the counts as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct AcceptArgs {
    /// A collection or a data set.
    pub folder: PathBuf,
    /// The items (their ids, the file names' stems).
    pub ids: Vec<String>,
    /// Every unreviewed item.
    #[arg(long, conflicts_with = "ids")]
    pub all: bool,
    /// Mark them negative: nothing to label in them (their label files are emptied).
    #[arg(long, conflicts_with = "discard")]
    pub negative: bool,
    /// Mark them discarded: not to be used.
    #[arg(long)]
    pub discard: bool,
}

/// A score or share: 0 to 1.
fn unit_interval(text: &str) -> Result<f32, String> {
    match text.parse::<f32>() {
        Ok(v) if v.is_finite() && (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("{text:?} is not a number from 0 to 1")),
    }
}

fn unit_interval_f64(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() && (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("{text:?} is not a number from 0 to 1")),
    }
}

/// Any arguments, for the `train` command of a build without the trainer.
#[cfg(not(feature = "train"))]
#[derive(Debug, clap::Args)]
pub struct NoTrainer {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    pub args: Vec<String>,
}

#[cfg(feature = "train")]
#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// The pretrained model's manifest: a classifier (e.g. models/mobilenet-v2.toml) or a
    /// detector (models/nanodet-m.toml); its task picks what is trained.
    #[arg(long, short)]
    pub model: PathBuf,
    /// A classifier: an ImageFolder (class folders, or train/ val/ test/ folders of class
    /// folders). A detector: a YOLO data.yaml or a COCO folder.
    #[arg(long)]
    pub data: PathBuf,
    /// Output folder for checkpoints, reports and the exported model.
    #[arg(long)]
    pub out: PathBuf,
    /// Name and version written into the exported manifest [default: "classifier" or
    /// "detector", after the base model's task].
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long, default_value = "1")]
    pub version: String,
    /// Input size to train and export at (default: the base model's).
    #[arg(long, value_parser = input_side)]
    pub size: Option<usize>,
    #[arg(long, default_value_t = 10, value_parser = at_least_one)]
    pub epochs: usize,
    #[arg(long, default_value_t = 32, value_parser = at_least_one)]
    pub batch: usize,
    #[arg(long, default_value_t = 1e-3, value_parser = finite_non_negative)]
    pub lr: f64,
    #[arg(long, value_enum, default_value = "adamw")]
    pub optimizer: crate::train::OptimizerKind,
    #[arg(long, default_value_t = 0.01, value_parser = finite_non_negative)]
    pub weight_decay: f64,
    /// SGD momentum.
    #[arg(long, default_value_t = 0.9, value_parser = finite_non_negative)]
    pub momentum: f64,
    #[arg(long, default_value_t = 0.0, value_parser = finite_non_negative)]
    pub label_smoothing: f64,
    /// Linear warm-up before the cosine decay, in epochs.
    #[arg(long, default_value_t = 1.0, value_parser = finite_non_negative)]
    pub warmup_epochs: f64,
    /// Early stopping: epochs without a better validation accuracy.
    #[arg(long, default_value_t = 5)]
    pub patience: usize,
    /// Train only the new head.
    #[arg(long)]
    pub freeze_backbone: bool,
    /// Run BatchNormalization on its stored running statistics during training instead of
    /// each batch's (for batches of a few images).
    #[arg(long)]
    pub freeze_bn: bool,
    /// The pretrained backbone's learning rate as a fraction of --lr (the new head's)
    /// [default: 1 when the graph's BatchNorm trains, 0.1 for a graph without normalisation].
    #[arg(long, value_parser = finite_non_negative)]
    pub backbone_lr: Option<f64>,
    /// Epochs at the start that train only the new head, the backbone held still
    /// [default: 0 when the graph's BatchNorm trains, 1 for a graph without normalisation].
    #[arg(long, value_parser = finite_non_negative)]
    pub head_warmup_epochs: Option<f64>,
    /// Largest global gradient norm per step; larger ones are scaled down (0: no clipping).
    #[arg(long, default_value_t = 0.0, value_parser = finite_non_negative)]
    pub clip_grad: f64,
    /// Continue the run in --out from last.onnx, optimizer.pt and history.csv, up to
    /// --epochs in all.
    #[arg(long)]
    pub resume: bool,
    /// Mixed precision on CUDA (fp16 autocast with dynamic loss scaling).
    #[arg(long)]
    pub amp: bool,
    /// Turn off augmentation.
    #[arg(long)]
    pub no_augment: bool,
    /// Augmentation: random horizontal flips.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub flip: bool,
    /// Augmentation: maximum rotation in degrees.
    #[arg(long, default_value_t = 10.0, value_parser = finite_non_negative)]
    pub rotation: f64,
    /// Augmentation: smallest random crop, as a fraction of the side.
    #[arg(long, default_value_t = 0.8, value_parser = finite_non_negative)]
    pub min_scale: f64,
    /// Augmentation: brightness / contrast / saturation jitter.
    #[arg(long, default_value_t = 0.2, value_parser = finite_non_negative)]
    pub jitter: f64,
    /// Fractions held out when the data has no train/ val/ test/ folders.
    #[arg(long, default_value_t = 0.15, value_parser = finite_non_negative)]
    pub val_fraction: f64,
    #[arg(long, default_value_t = 0.15, value_parser = finite_non_negative)]
    pub test_fraction: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// MiB of decoded images kept on the training device; splits that do not fit are read
    /// from disk for every pass.
    #[arg(long, default_value_t = 4096)]
    pub cache_mb: usize,
    /// Threads decoding images (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub loader_threads: usize,
    /// cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "auto")]
    pub device: String,
}

#[cfg(feature = "train")]
#[derive(Debug, clap::Args)]
pub struct BenchTrainArgs {
    /// The ONNX classifier (its head is replaced for --classes classes), or a NanoDet-style
    /// detector (its class rows are).
    #[arg(long)]
    pub onnx: PathBuf,
    /// A detector's input size [default: 320].
    #[arg(long, value_parser = clap::value_parser!(i64).range(1..=4096))]
    pub size: Option<i64>,
    /// cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "auto")]
    pub device: String,
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(i64).range(1..=4096))]
    pub batch: i64,
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(i64).range(1..=100_000))]
    pub classes: i64,
    /// Timed steps.
    #[arg(long, default_value_t = 20, value_parser = at_least_one)]
    pub steps: usize,
    /// Untimed steps first.
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// CPU threads for libtorch (0: its default, one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: i32,
    /// Step with libtorch's torch::optim::Adam (one parameter at a time) instead of
    /// vigil's flat optimiser, to compare the two.
    #[arg(long)]
    pub libtorch_adam: bool,
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
    /// What runs the graph, overriding the manifest's `engine`: tract, or onnxruntime (a build
    /// with feature `onnxruntime` and the library, docs/models.md "Engines").
    #[arg(long, value_parser = parse_engine)]
    pub engine: Option<Engine>,
    /// Image files (PNG or JPEG).
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct BenchSourceArgs {
    /// The camera: an rtsp:// or http:// (MJPEG) URL, credentials in it.
    pub url: String,
    /// How long to time, after the first picture.
    #[arg(long, default_value_t = 20.0, value_parser = parse_seconds)]
    pub seconds: f64,
    /// Frames taken a second, as a camera's `fps` takes them (default: every picture, each
    /// converted to RGB).
    #[arg(long, default_value_t = 1000.0, value_parser = parse_fps)]
    pub fps: f64,
    /// RTSP transport: tcp or udp.
    #[arg(long, default_value = "tcp")]
    pub transport: String,
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
    /// Threads: for the model alone, the threads each run splits its matrix products over
    /// (default 1); with --pipeline, the camera's `threads` ("auto": every core).
    #[arg(long, value_parser = parse_count)]
    pub threads: Option<Count>,
    /// What runs the graph, overriding the manifest's `engine`: tract, or onnxruntime (a build
    /// with feature `onnxruntime` and the library, docs/models.md "Engines").
    #[arg(long, value_parser = parse_engine)]
    pub engine: Option<Engine>,
    /// Run the camera's whole path (JPEG decode → model → tracker → MQTT to the embedded
    /// broker) instead of the model alone, and report frames/s, latency, CPU and memory.
    #[arg(long)]
    pub pipeline: bool,
    /// With --pipeline: the camera's `in_flight` (frames inferred at once).
    #[arg(long, value_parser = parse_count, requires = "pipeline")]
    pub in_flight: Option<Count>,
    /// With --pipeline: frames timed (after --warmup frames).
    #[arg(long, default_value_t = 200, requires = "pipeline")]
    pub frames: u64,
    /// With --pipeline: a camera delivering this many frames a second (default: each frame
    /// as soon as the pipeline takes the last), timed for --seconds.
    #[arg(long, requires = "pipeline", value_parser = parse_fps)]
    pub fps: Option<f64>,
    /// With --pipeline --fps: how long to time.
    #[arg(long, default_value_t = 30.0, requires = "pipeline", value_parser = parse_seconds)]
    pub seconds: f64,
    /// With --pipeline: motion gating on (its defaults).
    #[arg(long, requires = "pipeline")]
    pub motion: bool,
    /// With --pipeline: run it with collection off and on (a frame saved each second), twice
    /// each, alternately, and report the ratio of frames/s.
    #[arg(long, requires = "pipeline")]
    pub collect: bool,
}

fn parse_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if (0.1..=86_400.0).contains(&s) => Ok(s),
        _ => Err(format!("\"{text}\" is not a number of seconds from 0.1 to 86400")),
    }
}

fn parse_fps(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(f) if (0.001..=1000.0).contains(&f) => Ok(f),
        _ => Err(format!("\"{text}\" is not a frame rate from 0.001 to 1000")),
    }
}

fn parse_engine(text: &str) -> Result<Engine, String> {
    Engine::parse(text).ok_or_else(|| format!("\"{text}\" is not an engine: tract or onnxruntime"))
}

/// `auto` or a whole number from 1 to 256.
fn parse_count(text: &str) -> Result<Count, String> {
    match text {
        "auto" => Ok(Count::Auto),
        n => match n.parse::<usize>() {
            Ok(n) if (1..=256).contains(&n) => Ok(Count::Fixed(n)),
            _ => Err(format!("\"{n}\" is not \"auto\" or a whole number from 1 to 256")),
        },
    }
}

/// Runs the parsed command; the error carries the exit code to use.
pub fn run(cli: Cli) -> Result<(), CliError> {
    // Warnings reach the user of every command (a model's decoder warns about a manifest
    // that disagrees with what the graph gives); `vigil run` sets its configured level.
    crate::service::logging::init(log::LevelFilter::Warn);
    match cli.command {
        Command::Run(args) => run::run(args),
        Command::Validate(args) => run::validate(args),
        Command::Keygen(args) => deploy::keygen(args),
        Command::Bundle(args) => deploy::bundle(args),
        Command::CheckBundle(args) => deploy::check(args),
        Command::Deploy(args) => deploy::deploy(args),
        Command::Rollback(args) => deploy::rollback(args),
        Command::Infer(args) => infer::run(args),
        Command::Bench(args) => bench::run(args),
        Command::BenchSource(args) => bench_source::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Dataset(command) => dataset::run(command),
        #[cfg(feature = "train")]
        Command::BenchTrain(args) => bench_train::run(args),
        #[cfg(feature = "train")]
        Command::Train(args) => train::run(args),
        #[cfg(not(feature = "train"))]
        Command::Train(_) => Err(CliError::failure(anyhow::anyhow!(
            "this vigil was built without its trainer, which needs libtorch 2.11: build it with \
             `export LIBTORCH=$(scripts/setup-libtorch.sh | tail -n 1)` and \
             `cargo build --release --features train` (docs/training.md)"
        ))),
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

impl From<crate::config::ConfigError> for CliError {
    fn from(e: crate::config::ConfigError) -> CliError {
        CliError { code: exit::BAD_CONFIG, error: e.into() }
    }
}

impl From<crate::model::ModelError> for CliError {
    fn from(e: crate::model::ModelError) -> CliError {
        use crate::model::ModelError::*;
        let code = match e {
            Manifest { .. } | Onnx { .. } | Mismatch { .. } | Io { .. } | Engine { .. } => exit::BAD_MODEL,
            Run { .. } => exit::FAILURE,
        };
        CliError { code, error: e.into() }
    }
}
