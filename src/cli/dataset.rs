//! `vigil dataset`: from collected frames (or photos) to a data set the trainer reads
//! (docs/dataset.md).

use super::{exit, AcceptArgs, CliError, DatasetCommand, MergeArgs, PrelabelArgs, StatsArgs};
use crate::collect::ReviewStatus;
use crate::dataset::folder;
use crate::model::Model;

pub fn run(command: DatasetCommand) -> Result<(), CliError> {
    match command {
        DatasetCommand::Prelabel(args) => prelabel(args),
        DatasetCommand::Merge(args) => merge(args),
        DatasetCommand::Stats(args) => stats(args),
        DatasetCommand::Accept(args) => accept(args),
    }
}

fn prelabel(args: PrelabelArgs) -> Result<(), CliError> {
    let model =
        Model::load_on(&args.model, args.engine).map_err(|e| CliError { code: exit::BAD_MODEL, error: e.into() })?;
    let report = folder::prelabel(&model, &args.inputs, &args.out, args.score).map_err(CliError::failure)?;
    for f in &report.failed {
        eprintln!("error: {f}");
    }
    println!(
        "{}: {} photo(s) added with pre-labels from {} {}, {} there already, {} failed",
        args.out.display(),
        report.added,
        model.manifest.name,
        model.manifest.version,
        report.present,
        report.failed.len()
    );
    if !report.failed.is_empty() {
        return Err(CliError::failure(anyhow::anyhow!("{} photo(s) could not be read", report.failed.len())));
    }
    Ok(())
}

fn merge(args: MergeArgs) -> Result<(), CliError> {
    let ratios = match (args.val, args.test) {
        (None, None) => None,
        (val, test) => Some((val.unwrap_or(0.15), test.unwrap_or(0.10))),
    };
    let report = folder::merge(&args.out, &args.sources, ratios).map_err(CliError::failure)?;
    for s in &report.skipped {
        eprintln!("warning: {s}");
    }
    let splits: Vec<String> = report.per_split.iter().map(|(s, n)| format!("{s} {n}")).collect();
    println!(
        "{}: {} item(s) added ({}), {} already there (same image), {} skipped",
        args.out.display(),
        report.added,
        if splits.is_empty() { "none".to_string() } else { splits.join(", ") },
        report.duplicates,
        report.skipped.len()
    );
    Ok(())
}

fn stats(args: StatsArgs) -> Result<(), CliError> {
    let s = folder::stats(&args.folder).map_err(CliError::failure)?;
    for p in &s.problems {
        eprintln!("warning: {p}");
    }
    if args.json {
        let doc = serde_json::json!({
            "items": s.items,
            "splits": s.per_split,
            "cameras": s.per_camera,
            "review": s.per_status,
            "boxes": s.boxes,
            "reviewed_boxes": s.reviewed_boxes,
            "without_boxes": s.empty,
            "problems": s.problems.len(),
        });
        println!("{doc}");
        return Ok(());
    }
    let line = |what: &str, counts: Vec<(String, usize)>| {
        let parts: Vec<String> = counts.into_iter().map(|(k, n)| format!("{k} {n}")).collect();
        println!("{what}: {}", if parts.is_empty() { "none".to_string() } else { parts.join(", ") });
    };
    println!("{}: {} item(s), {} without a box", args.folder.display(), s.items, s.empty);
    let named = |key: &str, none: &str| if key.is_empty() { none.to_string() } else { key.to_string() };
    line("splits", s.per_split.iter().map(|(k, n)| (named(k, "(collection)"), *n)).collect());
    line("cameras", s.per_camera.iter().map(|(k, n)| (named(k, "(photos)"), *n)).collect());
    line("review", s.per_status.iter().map(|(k, n)| (k.to_string(), *n)).collect());
    line("boxes", s.boxes.iter().map(|(k, n)| (k.clone(), *n)).collect());
    line("reviewed boxes", s.reviewed_boxes.iter().map(|(k, n)| (k.clone(), *n)).collect());
    Ok(())
}

fn accept(args: AcceptArgs) -> Result<(), CliError> {
    if args.ids.is_empty() && !args.all {
        return Err(CliError {
            code: exit::USAGE,
            error: anyhow::anyhow!("name the items to mark, or give --all for every unreviewed one"),
        });
    }
    let status = if args.negative {
        ReviewStatus::Negative
    } else if args.discard {
        ReviewStatus::Discarded
    } else {
        ReviewStatus::Reviewed
    };
    let changed = folder::mark(&args.folder, &args.ids, args.all, status).map_err(CliError::failure)?;
    println!("{}: {} item(s) marked {}", args.folder.display(), changed.len(), status.name());
    Ok(())
}
