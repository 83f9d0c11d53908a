#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need, then runs them.
# Usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

# The model tests need no Python and no system packages: the ONNX models, photos and
# onnxruntime fixtures they compare against are committed (models/, tests/).
# The trainer (feature `train`) needs libtorch 2.11: a CPU-sized install under .venv/.
LIBTORCH=$(scripts/setup-libtorch.sh | tail -n 1)
export LIBTORCH
export LD_LIBRARY_PATH="$LIBTORCH/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

# Everything, the trainer included.
cargo test --locked --all-targets --features train
# The daemon's own build, without libtorch, must compile too.
cargo check --locked --all-targets
