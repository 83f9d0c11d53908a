//! `vigil train`: fine-tune, evaluate and export (see docs/training.md).

use super::{CliError, TrainArgs};
use crate::model::Task;
use crate::train::{self, Augment, TrainOptions};

pub(super) fn run(a: TrainArgs) -> Result<(), CliError> {
    let device = train::parse_device(&a.device).map_err(CliError::failure)?;
    let augment = if a.no_augment {
        Augment::NONE
    } else {
        Augment { flip: a.flip, rotation: a.rotation, min_scale: a.min_scale, jitter: a.jitter }
    };
    let task = crate::model::ModelManifest::load(&a.model)?.task;
    let opts = TrainOptions {
        base: a.model,
        data: a.data,
        out: a.out,
        name: a.name.unwrap_or_else(|| if task == Task::Detect { "detector" } else { "classifier" }.into()),
        version: a.version,
        size: a.size,
        epochs: a.epochs,
        batch: a.batch.max(1),
        lr: a.lr,
        weight_decay: a.weight_decay,
        momentum: a.momentum,
        optimizer: a.optimizer,
        label_smoothing: a.label_smoothing,
        warmup_epochs: a.warmup_epochs,
        patience: a.patience.max(1),
        freeze_backbone: a.freeze_backbone,
        freeze_bn: a.freeze_bn,
        backbone_lr: a.backbone_lr,
        head_warmup_epochs: a.head_warmup_epochs,
        clip_grad: Some(a.clip_grad).filter(|&c| c > 0.0),
        resume: a.resume,
        amp: a.amp,
        augment,
        val_fraction: a.val_fraction,
        test_fraction: a.test_fraction,
        seed: a.seed,
        cache_mb: a.cache_mb,
        loader_threads: a.loader_threads,
        device,
    };
    eprintln!("training on {device:?}");
    if task == Task::Detect {
        let report = train::train_detector(&opts).map_err(CliError::failure)?;
        println!("the exported model on the {} split (tract, as vigil eval computes it):", report.test_split);
        print!("{}", report.test.summary(&report.classes));
        println!(
            "exported {} (tract matches tch within {:.2e} on the test vector)",
            report.manifest.display(),
            report.parity
        );
        return Ok(());
    }
    let report = train::train(&opts).map_err(CliError::failure)?;
    print!("{}", report.test.summary(&report.classes));
    println!(
        "exported {} (tract matches tch within {:.2e} on the test vector)",
        report.manifest.display(),
        report.parity
    );
    Ok(())
}
