#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need, then runs them.
# Usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

# The model tests need no Python and no system packages: the ONNX models, photos and
# onnxruntime fixtures they compare against are committed (models/, tests/).
# The trainer's tests need labelled images: Debian's Fashion-MNIST package.
if [[ ! -d /usr/share/datasets/fashion-mnist ]]; then
  sudo=""; [[ $(id -u) -ne 0 ]] && sudo=sudo
  $sudo apt-get update -q
  $sudo apt-get install -y -q dataset-fashion-mnist
fi
# The trainer (feature `train`) needs libtorch 2.11: a CPU-sized install under .venv/.
LIBTORCH=$(scripts/setup-libtorch.sh | tail -n 1)
export LIBTORCH
export LD_LIBRARY_PATH="$LIBTORCH/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

# Everything, the trainer included.
cargo test --locked --all-targets --features train
# The daemon's own build, without libtorch: the command-line tests again, which also
# check that `vigil train` there explains how to get the trainer.
cargo test --locked --test cli
