#!/usr/bin/env bash
# Installs libtorch for building vigil's trainer (cargo feature `train`, tch 0.24 ↔ PyTorch
# 2.11.0) into .venv/libtorch, from PyPI's torch wheel without its CUDA dependencies (about
# 550 MB instead of 2.7 GB): enough to build and to train on the CPU. On a CUDA machine
# with PyTorch 2.11 installed, point LIBTORCH at that installation's torch/ folder instead.
#
# Prints the LIBTORCH path on its last line. Idempotent.
#   export LIBTORCH=$(scripts/setup-libtorch.sh | tail -n 1)
#   export LD_LIBRARY_PATH=$LIBTORCH/lib:$LD_LIBRARY_PATH
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${VIGIL_LIBTORCH_VENV:-.venv/libtorch}
marker="$venv/.vigil-libtorch-2.11.0"
if [[ ! -f "$marker" ]]; then
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps \
    torch==2.11.0 nvidia-cuda-runtime==13.0.96 nvidia-cuda-cupti==13.0.85 >&2
  touch "$marker"
fi
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$(cd "$site/torch" && pwd)"
