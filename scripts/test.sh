#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need, then runs them.
# Usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

# Each step's start, with the minutes since the suite began: CI's log says where the time goes.
start=$SECONDS
step() { echo "== test.sh: $* (at $(((SECONDS - start) / 60)) min)" >&2; }

# Debian packages: libclang (camera bindings), mosquitto (the daemon's tests start their own
# brokers), Fashion-MNIST (the trainer's tests). The model tests need no Python: the ONNX
# models, photos and onnxruntime fixtures they compare against are committed.
step "setup"
scripts/setup-system.sh test
# The trainer (feature `train`) needs libtorch 2.11: a CPU-sized install under .venv/.
LIBTORCH=$(scripts/setup-libtorch.sh | tail -n 1)
export LIBTORCH
export LD_LIBRARY_PATH="$LIBTORCH/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

# The onnxruntime engine (feature `onnxruntime`) opens ONNX Runtime's library at run time:
# taken from the onnxruntime wheel into .venv/onnxruntime/.
ORT_DYLIB_PATH=$(scripts/setup-onnxruntime.sh | tail -n 1)
export ORT_DYLIB_PATH

# The tests run on the release profile, as the packages are built: the same optimised code,
# and one build of the dependencies serves the tests and the amd64 package. (This whole
# script from a clean clone, on 2 cores: 45.6 minutes, ARM included; a debug build beside
# the release one made it 55 without armv7.) vigil's own code is compiled with debug
# assertions and overflow checks on, so an overflow on hostile input fails a test rather than
# wrapping; the dependencies are pinned without them in Cargo.toml, so they are not rebuilt.
export CARGO_PROFILE_RELEASE_DEBUG_ASSERTIONS=true CARGO_PROFILE_RELEASE_OVERFLOW_CHECKS=true
# Everything, the trainer and the onnxruntime engine included.
step "all tests, features train and onnxruntime"
cargo test --locked --release --all-targets --features train,onnxruntime
# The daemon's own build, without libtorch or ONNX Runtime: the command-line tests again,
# which also check that `vigil train` there explains how to get the trainer, and the
# refusals of bad models, which check that engine = "onnxruntime" says how to get it.
step "command-line and bad-input tests, default features"
cargo test --locked --release --test cli --test bad_input
unset CARGO_PROFILE_RELEASE_DEBUG_ASSERTIONS CARGO_PROFILE_RELEASE_OVERFLOW_CHECKS

# The devices (cross/README.md). The library's and the model tests cross-built for aarch64
# and armv7 and run under qemu-user on a Pi 4's and a Pi 2's CPU; then the Debian packages
# for amd64, arm64 and armhf (the ARM ones from those same release builds) built and
# checked, the amd64 one installed into a scratch root. On demand, beyond CI's time: the
# Pi 3's and Pi 5's CPUs (`cross/test.sh --all-cpus aarch64`, 4-5 minutes each).
step "ARM tests under qemu"
cross/test.sh aarch64 armv7
step "Debian packages"
debs=$(cross/deb.sh amd64 arm64 armhf)
# shellcheck disable=SC2086
cross/check-deb.sh $debs
step "done"
