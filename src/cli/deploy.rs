//! `vigil keygen`, `vigil bundle` and `vigil check-bundle`.

use anyhow::Context;

use super::{exit, BundleArgs, CheckBundleArgs, CliError, KeygenArgs};
use crate::deploy::{bundle, keys, DeployBundle, Target};

pub fn keygen(args: KeygenArgs) -> Result<(), CliError> {
    let (public_path, public) = keys::generate(&args.out).map_err(|e| CliError::failure(anyhow::anyhow!(e)))?;
    println!("secret key: {} (keep it on the host)", args.out.display());
    println!("public key: {} = {}", public_path.display(), keys::hex(public.as_bytes()));
    Ok(())
}

pub fn bundle(args: BundleArgs) -> Result<(), CliError> {
    let key = keys::read_secret(&args.key).map_err(|e| CliError::failure(anyhow::anyhow!(e)))?;
    let target = Target { devices: args.devices, groups: args.groups };
    let bytes = bundle::build(&args.model, &key, target.clone(), args.tolerance).map_err(refused)?;
    std::fs::write(&args.out, &bytes)
        .with_context(|| format!("writing {}", args.out.display()))
        .map_err(CliError::failure)?;
    println!(
        "{}: {} bytes, for {target}, signed by {}",
        args.out.display(),
        bytes.len(),
        keys::hex(key.verifying_key().as_bytes())
    );
    Ok(())
}

pub fn check(args: CheckBundleArgs) -> Result<(), CliError> {
    let trusted = args
        .trust
        .iter()
        .map(|p| keys::read_public(p))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CliError::failure(anyhow::anyhow!(e)))?;
    let bytes = std::fs::read(&args.bundle)
        .with_context(|| format!("reading {}", args.bundle.display()))
        .map_err(CliError::failure)?;
    let bundle = DeployBundle::open(&bytes, &trusted, args.max_size).map_err(refused)?;
    if let Some(device) = &args.device {
        bundle.check_target(device, &args.groups).map_err(refused)?;
    }
    let dir = std::env::temp_dir().join(format!("vigil-check-bundle-{}", std::process::id()));
    let result = bundle.unpack(&dir).and_then(|manifest| bundle.load_and_test(&manifest));
    let _ = std::fs::remove_dir_all(&dir);
    let (model, worst) = result.map_err(refused)?;
    println!(
        "{}: accepted: {} {} (sha256 {}), test vector within {:.1e} (tolerance {:.1e})",
        args.bundle.display(),
        model.manifest.name,
        model.manifest.version,
        model.sha256,
        worst,
        bundle.header.tolerance
    );
    Ok(())
}

fn refused(e: crate::deploy::DeployError) -> CliError {
    CliError { code: exit::BAD_BUNDLE, error: e.into() }
}
