//! `vigil keygen`, `vigil bundle`, `vigil check-bundle`, and the MQTT side: `vigil deploy`
//! and `vigil rollback`.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::Context;

use super::{
    exit, BrokerArgs, BundleArgs, CheckBundleArgs, CliError, DeployArgs, KeygenArgs, RollbackArgs, TargetArgs,
};
use crate::deploy::remote::{self, Answer, BrokerAddress, Payload, Progress, Report, Request};
use crate::deploy::{bundle, keys, DeployBundle, Target};
use crate::mqtt::payload::DeployResult;

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
        .map_err(|e| usage(format!("--trust {e}")))?;
    let bytes = read_bundle(&args.bundle, args.max_size)?;
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

/// A bundle file, read whole but never beyond `max` bytes (a bundle is one MQTT message): an
/// unreadable or oversized file is a refused bundle (exit 4).
fn read_bundle(path: &std::path::Path, max: usize) -> Result<Vec<u8>, CliError> {
    let bad = |e: String| CliError { code: exit::BAD_BUNDLE, error: anyhow::anyhow!("{}: {e}", path.display()) };
    crate::files::read_capped(path, max as u64).map_err(|e| bad(e.to_string()))
}

pub fn deploy(args: DeployArgs) -> Result<(), CliError> {
    // The largest MQTT message there is; the device applies its own, smaller limit.
    let bytes = read_bundle(&args.bundle, crate::mqtt::MQTT_MAX_PACKET)?;
    let header = bundle::peek(&bytes).ok_or_else(|| CliError {
        code: exit::BAD_BUNDLE,
        error: anyhow::anyhow!("{} is not a vigil deploy bundle", args.bundle.display()),
    })?;
    let t = &header.target;
    let outside: Vec<&String> = args.target.devices.iter().filter(|d| !t.devices.contains(d)).collect();
    if !t.devices.is_empty() && t.groups.is_empty() && !outside.is_empty() {
        return Err(usage(format!(
            "the bundle is for {t}: {} would refuse it (make it with `vigil bundle --device …`)",
            outside.iter().map(|d| d.as_str()).collect::<Vec<_>>().join(", ")
        )));
    }
    println!("{} {} ({} bytes, for {t}): publishing, retained", header.name, header.version, bytes.len());
    let payload = Payload::Bundle { bytes, name: header.name.clone(), version: header.version.clone() };
    let report = send(payload, &args.target, &args.broker)?;
    let bad = report.answers.iter().filter(|a| a.refused()).count();
    conclude(&report, bad, "refused the bundle", "they take the retained bundle when they reconnect")
}

pub fn rollback(args: RollbackArgs) -> Result<(), CliError> {
    let name = args.model.clone().unwrap_or_default();
    println!("rollback of {}: publishing", if name.is_empty() { "each device's model" } else { &name });
    let report = send(Payload::Rollback { name }, &args.target, &args.broker)?;
    let bad = report.answers.iter().filter(|a| a.refused()).count();
    conclude(&report, bad, "refused the rollback", "a rollback is not retained: ask again when they are online")
}

fn usage(message: String) -> CliError {
    CliError { code: exit::USAGE, error: anyhow::anyhow!(message) }
}

/// Publishes and waits, printing progress: each publish and answer on a line of its own,
/// and on a terminal a line saying who is still awaited.
fn send(payload: Payload, target: &TargetArgs, broker: &BrokerArgs) -> Result<Report, CliError> {
    if target.devices.is_empty() && target.groups.is_empty() {
        return Err(usage("name at least one --device or --group".into()));
    }
    for (flag, ids) in [("--device", &target.devices), ("--group", &target.groups)] {
        if let Some(bad) = ids.iter().find(|id| !crate::mqtt::is_topic_word(id)) {
            return Err(usage(format!(
                "{flag} {}: must be 1 to 128 letters, digits, '-' or '_' (it is a topic level)",
                crate::service::logging::shown(bad.as_bytes())
            )));
        }
    }
    for (flag, prefix) in [("--prefix", &target.prefix), ("--group-prefix", &target.group_prefix)] {
        crate::mqtt::check_prefix(prefix).map_err(|why| usage(format!("{flag} {why}")))?;
    }
    let password = match &broker.password_file {
        None => None,
        Some(path) => {
            let bytes = crate::files::read_capped(path, 64 << 10)
                .with_context(|| format!("reading --password-file {}", path.display()))
                .map_err(CliError::failure)?;
            let password = crate::source::url::password_of(bytes)
                .map_err(|why| usage(format!("--password-file {} {why}", path.display())))?;
            Some(password)
        }
    };
    let address = BrokerAddress {
        url: broker.broker.clone(),
        username: broker.username.clone(),
        password,
        ca_file: broker.ca.clone(),
        client_cert: broker.client_cert.clone().zip(broker.client_key.clone()),
    };
    let largest = match &payload {
        Payload::Bundle { bytes, .. } => bytes.len(),
        Payload::Rollback { name } => name.len(),
    };
    let options = remote::options(&address, largest).map_err(|e| match e {
        remote::RemoteError::Url { .. } => usage(e.to_string()),
        e => CliError::failure(e),
    })?;
    let request = Request {
        payload,
        devices: target.devices.clone(),
        groups: target.groups.clone(),
        prefix: target.prefix.clone(),
        group_prefix: target.group_prefix.clone(),
        expect: target.expect,
        timeout: Duration::from_secs(target.timeout),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::failure(anyhow::anyhow!("cannot start the async runtime: {e}")))?;
    let terminal = std::io::stderr().is_terminal();
    let mut status_shown = false;
    let mut last_line: Option<u64> = None;
    let timeout = target.timeout;
    let report = runtime.block_on(remote::send(&request, options, |event| {
        if status_shown {
            eprint!("\r\x1b[2K");
            status_shown = false;
        }
        match event {
            Progress::Connected => println!("connected to {}", broker.broker),
            Progress::Published { topic, bytes } => println!("published on {topic} ({bytes} bytes)"),
            Progress::Answer(a) => println!("{}", describe(&a)),
            Progress::Waiting { pending, answered, elapsed } => {
                let who = if pending.is_empty() { "answers".to_string() } else { pending.join(", ") };
                let line = format!("waiting for {who}: {answered} answered, {} s of {timeout} s", elapsed.as_secs());
                if terminal {
                    eprint!("{line}");
                    let _ = std::io::stderr().flush();
                    status_shown = true;
                } else if last_line.is_none_or(|at| elapsed.as_secs() >= at + 10) {
                    // Not a terminal: a line every 10 s.
                    last_line = Some(elapsed.as_secs());
                    eprintln!("{line}");
                }
            }
        }
    }));
    if status_shown {
        eprint!("\r\x1b[2K");
    }
    report.map_err(CliError::failure)
}

/// One device's answer, as a line.
fn describe(a: &Answer) -> String {
    let after = format!("{:.1} s", a.after.as_secs_f64());
    match (a.result, &a.serving) {
        (DeployResult::Refused, _) => {
            format!("{}: refused after {after}: {}", a.device, a.reason.as_deref().unwrap_or("no reason given"))
        }
        (result, Some(serving)) => {
            let mut line = format!(
                "{}: {result} after {after}: serving {} {} (sha256 {})",
                a.device,
                serving.name,
                serving.version,
                serving.sha256.chars().take(12).collect::<String>()
            );
            if let Some(previous) = &a.previous {
                line += &format!(", previous {previous}");
            }
            if !a.cameras.is_empty() {
                line += &format!(", cameras {}", a.cameras.join(", "));
            }
            line
        }
        (result, None) => format!("{}: {result} after {after}", a.device),
    }
}

/// The summary line and the exit code: refusals first, then devices that did not answer.
fn conclude(report: &Report, refused: usize, refusal: &str, missing_hint: &str) -> Result<(), CliError> {
    let ok = report.answers.len() - refused;
    println!(
        "{ok} device(s) done, {refused} refused, {} did not answer{}",
        report.missing.len(),
        if report.missing.is_empty() { String::new() } else { format!(" ({})", report.missing.join(", ")) }
    );
    if refused > 0 {
        let who: Vec<&str> = report.answers.iter().filter(|a| a.refused()).map(|a| a.device.as_str()).collect();
        return Err(CliError { code: exit::BAD_BUNDLE, error: anyhow::anyhow!("{} {refusal}", who.join(", ")) });
    }
    if !report.missing.is_empty() {
        return Err(CliError {
            code: exit::NO_ANSWER,
            error: anyhow::anyhow!("no answer from {} in time; {missing_hint}", report.missing.join(", ")),
        });
    }
    if report.answers.is_empty() {
        return Err(CliError {
            code: exit::NO_ANSWER,
            error: anyhow::anyhow!("no device answered in time (for a group, --expect N says how many to wait for)"),
        });
    }
    Ok(())
}
