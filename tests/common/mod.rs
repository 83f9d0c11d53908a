//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod detection_set;
pub mod mjpeg;
pub mod rtsp;

use std::path::PathBuf;
use std::process::Command;

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A fresh scratch folder for one test, unique to this process. Kept after the test, for
/// a look at what a failing one left; the next test process removes the folders of those no
/// longer running (the training tests write hundreds of MB each).
pub fn scratch(name: &str) -> PathBuf {
    static SWEEP: std::sync::Once = std::sync::Once::new();
    SWEEP.call_once(remove_stale_scratch);
    let dir = std::env::temp_dir().join(format!("vigil-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Removes the scratch folders (`vigil-test-NAME-PID`, `vigil-fuzz-NAME-PID`) of test
/// processes that have ended; those of running ones, this one's included, stay.
fn remove_stale_scratch() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !(name.starts_with("vigil-test-") || name.starts_with("vigil-fuzz-")) {
            continue;
        }
        let Some(pid) = name.rsplit('-').next().and_then(|p| p.parse::<u32>().ok()) else { continue };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Runs the `vigil` binary from the repository root: (exit code, stdout, stderr).
pub fn vigil(args: &[&str]) -> (i32, String, String) {
    vigil_with(args, &[])
}

/// The vigil binary as a command. Under cross/test.sh that binary is an ARM one, which
/// this machine runs through qemu-user: `VIGIL_TEST_RUNNER` names the runner and its
/// arguments ("qemu-aarch64 -L /usr/aarch64-linux-gnu"), as cargo's target runner does for
/// the test binaries themselves.
pub fn vigil_command() -> Command {
    let bin = env!("CARGO_BIN_EXE_vigil");
    let runner = std::env::var("VIGIL_TEST_RUNNER").unwrap_or_default();
    let mut words = runner.split_whitespace();
    match words.next() {
        Some(program) => {
            let mut cmd = Command::new(program);
            cmd.args(words).arg(bin);
            cmd
        }
        None => Command::new(bin),
    }
}

/// [`vigil`] with these environment variables set as well.
pub fn vigil_with(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = vigil_command().current_dir(root()).args(args).envs(env.iter().copied()).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
