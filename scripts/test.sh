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

# Everything, the trainer included.
cargo test --locked --all-targets --features train
# The daemon's own build, without libtorch: the command-line tests again, which also
# check that `vigil train` there explains how to get the trainer.
cargo test --locked --test cli
