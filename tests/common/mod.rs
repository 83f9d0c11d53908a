//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod detection_set;

use std::path::PathBuf;
use std::process::Command;

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A fresh scratch folder for one test, unique to this process.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vigil-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
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
