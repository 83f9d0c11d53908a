#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need, then runs them.
# Usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: libclang (camera bindings), mosquitto (the daemon's tests start their own
# brokers), Fashion-MNIST (the trainer's tests). The model tests need no Python: the ONNX
# models, photos and onnxruntime fixtures they compare against are committed.
scripts/setup-system.sh test
# The trainer (feature `train`) needs libtorch 2.11: a CPU-sized install under .venv/.
LIBTORCH=$(scripts/setup-libtorch.sh | tail -n 1)
export LIBTORCH
export LD_LIBRARY_PATH="$LIBTORCH/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

# The onnxruntime engine (feature `onnxruntime`) opens ONNX Runtime's library at run time:
# taken from the onnxruntime wheel into .venv/onnxruntime/.
ORT_DYLIB_PATH=$(scripts/setup-onnxruntime.sh | tail -n 1)
export ORT_DYLIB_PATH

# Everything, the trainer and the onnxruntime engine included.
cargo test --locked --all-targets --features train,onnxruntime
# The daemon's own build, without libtorch or ONNX Runtime: the command-line tests again,
# which also check that `vigil train` there explains how to get the trainer, and the
# refusals of bad models, which check that engine = "onnxruntime" says how to get it.
cargo test --locked --test cli --test bad_input

# The devices (cross/README.md). The model tests cross-built for aarch64 and run under
# qemu-user on a Pi 4's CPU; then the Debian packages for amd64 and arm64 (from that same
# release build) built and checked, the amd64 one installed into a scratch root. More than
# CI's time allows, so on demand: the Pi 3's and Pi 5's CPUs (`cross/test.sh --all-cpus
# aarch64`, 4-5 minutes each), and armv7 and armhf, which cost one more cross build
# (`cross/test.sh armv7`, `cross/deb.sh armhf`, ~20 minutes on 2 cores).
cross/test.sh aarch64
debs=$(cross/deb.sh amd64 arm64)
# shellcheck disable=SC2086
cross/check-deb.sh $debs
