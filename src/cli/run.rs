//! `vigil run` and `vigil validate`.

use super::{exit, CliError, RunArgs, ValidateArgs};
use crate::config::Config;
use crate::daemon::{self, DaemonError};

pub fn run(args: RunArgs) -> Result<(), CliError> {
    daemon::one_malloc_arena();
    // Errors go to stderr through main (the journal captures stderr under systemd).
    let config = Config::load(&args.config)?;
    crate::service::logging::init(config.log_level);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("vigil-io")
        .enable_all()
        .build()
        .map_err(|e| CliError::failure(anyhow::anyhow!("cannot start the async runtime: {e}")))?;
    let result = runtime.block_on(daemon::run(args.config, config));
    // Threads stuck in a device read must not hold the process: the drain deadline is over.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    result.map_err(|e| {
        let code = match &e {
            // The event journal's folder (mqtt.spool_dir) is the user's to fix, like a setting.
            DaemonError::Config(_) | DaemonError::Labels(_) | DaemonError::Journal(_) => exit::BAD_CONFIG,
            DaemonError::Model { .. } => exit::BAD_MODEL,
            _ => exit::FAILURE,
        };
        CliError { code, error: e.into() }
    })
}

pub fn validate(args: ValidateArgs) -> Result<(), CliError> {
    let config = Config::load(&args.config)?;
    if args.models {
        let mut problems = Vec::new();
        for (camera, settings) in &config.cameras {
            let model = crate::model::Model::load(&settings.model).map_err(|e| {
                let mut err = CliError::from(e);
                err.error = err.error.context(format!("camera {camera}"));
                err
            })?;
            problems.extend(daemon::check_labels(camera, settings, &model).err());
        }
        if !problems.is_empty() {
            let error = crate::config::ConfigError { path: args.config.clone(), problems };
            return Err(error.into());
        }
    }
    println!(
        "{}: configuration is valid ({} camera(s){})",
        args.config.display(),
        config.cameras.len(),
        if args.models { ", models load" } else { "" }
    );
    Ok(())
}
