#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need, then runs them.
# Usage: scripts/test.sh [extra cargo test arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

# The model tests need no Python and no system packages: the ONNX models, photos and
# onnxruntime fixtures they compare against are committed (models/, tests/).
cargo test --locked --all-targets "$@"
