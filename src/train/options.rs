//! What a training run is asked to do: the options `vigil train` fills in, and the recipe
//! by which the pretrained backbone trains beside the new head.

use std::path::PathBuf;

use serde::Serialize;
use tch::Device;

/// Which optimiser.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    Adam,
    Adamw,
    Sgd,
}

/// Augmentation applied to training batches.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Augment {
    pub flip: bool,
    /// Maximum rotation, degrees either way.
    pub rotation: f64,
    /// Smallest crop side as a fraction of the image (random resized crop / zoom).
    pub min_scale: f64,
    /// Brightness, contrast and saturation are each multiplied by a factor in [1 − j, 1 + j].
    pub jitter: f64,
}

impl Augment {
    pub const NONE: Augment = Augment { flip: false, rotation: 0.0, min_scale: 1.0, jitter: 0.0 };
}

/// How the pretrained backbone trains beside the new head.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Recipe {
    /// The backbone's learning rate as a fraction of the head's.
    pub backbone_lr: f64,
    /// Epochs during which only the head trains.
    pub head_warmup_epochs: f64,
}

impl Recipe {
    /// The default, measured on five seeds each (docs/training.md, "The default recipe"):
    /// a graph whose BatchNorm trains learns fastest with every layer at the full rate from
    /// the start; a graph without normalisation (BatchNorm folded, or frozen) collapses to
    /// chance on some seeds that way, and converges on all of them when the new head trains
    /// alone for an epoch and the backbone then follows at a tenth of the rate.
    pub fn default_for(batchnorm_trains: bool) -> Recipe {
        if batchnorm_trains {
            Recipe { backbone_lr: 1.0, head_warmup_epochs: 0.0 }
        } else {
            Recipe { backbone_lr: 0.1, head_warmup_epochs: 1.0 }
        }
    }
}

/// Everything a training run needs.
#[derive(Debug, Clone, Serialize)]
pub struct TrainOptions {
    /// The pretrained model's manifest: its ONNX graph and input conventions.
    pub base: PathBuf,
    pub data: PathBuf,
    pub out: PathBuf,
    pub name: String,
    pub version: String,
    /// Training (and exported) input size; the base model's when `None`.
    pub size: Option<usize>,
    pub epochs: usize,
    pub batch: usize,
    pub lr: f64,
    pub weight_decay: f64,
    pub momentum: f64,
    pub optimizer: OptimizerKind,
    pub label_smoothing: f64,
    pub warmup_epochs: f64,
    /// Stop when validation accuracy has not improved for this many epochs.
    pub patience: usize,
    pub freeze_backbone: bool,
    /// Run BatchNormalization as at inference during training (running statistics fixed),
    /// for batches too small for useful batch statistics.
    pub freeze_bn: bool,
    /// The backbone's learning rate as a fraction of the head's (`lr`); `None`: the
    /// default recipe's for the graph ([`Recipe::default_for`]).
    pub backbone_lr: Option<f64>,
    /// Epochs at the start during which only the new head trains (the backbone's learning
    /// rate is 0); `None`: the default recipe's for the graph.
    pub head_warmup_epochs: Option<f64>,
    /// Largest global gradient norm per step (`None`: no clipping).
    pub clip_grad: Option<f64>,
    /// Continue the run in `out` from its last checkpoint and history.
    pub resume: bool,
    /// Mixed precision on CUDA: fp16 autocast for the forward pass, dynamic loss scaling.
    pub amp: bool,
    pub augment: Augment,
    pub val_fraction: f64,
    pub test_fraction: f64,
    pub seed: u64,
    /// Decoded images kept on the device, MiB in all; splits beyond it are streamed.
    pub cache_mb: usize,
    /// Threads decoding images (0: one per core).
    pub loader_threads: usize,
    #[serde(skip)]
    pub device: Device,
}

/// The recipe a run trains with: each flag given, else the default for the graph; said on
/// stderr unless the backbone is frozen.
pub(super) fn recipe_for(opts: &TrainOptions, batchnorm_trains: bool) -> Recipe {
    let default = Recipe::default_for(batchnorm_trains);
    let recipe = Recipe {
        backbone_lr: opts.backbone_lr.unwrap_or(default.backbone_lr),
        head_warmup_epochs: opts.head_warmup_epochs.unwrap_or(default.head_warmup_epochs),
    };
    if !opts.freeze_backbone {
        eprintln!(
            "recipe: {} head-only epoch(s), then the backbone at {} of the head's learning rate{}",
            recipe.head_warmup_epochs,
            recipe.backbone_lr,
            if recipe == default { " (the default for this graph)" } else { "" }
        );
    }
    recipe
}
