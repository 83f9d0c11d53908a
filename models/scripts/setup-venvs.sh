#!/usr/bin/env bash
# Create the two Python venvs used to rebuild the bundled models:
#   <VIGIL_VENV_DIR>/tf     from models/scripts/requirements-tf.txt
#   <VIGIL_VENV_DIR>/torch  from models/scripts/requirements-torch.txt
# VIGIL_VENV_DIR defaults to "$REPO/.venv"; PYTHON (default python3; 3.11 tested) makes them.
# Idempotent: a venv whose marker file holds the sha256 of its requirements file is skipped.
# An existing venv without a matching marker is updated in place with `pip install -r`;
# set VIGIL_VENV_RECREATE=1 to delete and recreate it instead.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SCRIPTS="$REPO/models/scripts"
VENV_DIR="${VIGIL_VENV_DIR:-$REPO/.venv}"
PYTHON="${PYTHON:-python3}"
MARKER=".vigil-requirements.sha256"

make_venv() { # name
  local req="$SCRIPTS/requirements-$1.txt" dir="$VENV_DIR/$1" hash
  hash="$(sha256sum "$req" | cut -d' ' -f1)"
  if [[ -f "$dir/$MARKER" && "$(cat "$dir/$MARKER")" == "$hash" ]]; then
    echo "[venv] $dir up to date"
    return
  fi
  if [[ "${VIGIL_VENV_RECREATE:-0}" == 1 ]]; then rm -rf "$dir"; fi
  if [[ ! -x "$dir/bin/python" ]]; then
    echo "[venv] creating $dir"
    "$PYTHON" -m venv "$dir"
  fi
  echo "[venv] installing $(basename "$req") into $dir"
  rm -f "$dir/$MARKER"
  "$dir/bin/python" -m pip install --quiet -r "$req"
  "$dir/bin/python" -m pip check
  echo "$hash" > "$dir/$MARKER"
}

mkdir -p "$VENV_DIR"
make_venv tf
make_venv torch
