#!/usr/bin/env bash
# The Python side of the benchmarks: .venv/ort with onnxruntime (the reference engine of
# bench/compare_ort.py), numpy and Pillow, from the Python package index.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/ort/bin/python ]; then
    python3 -m venv .venv/ort
fi
.venv/ort/bin/pip install --quiet onnxruntime==1.32.0 numpy pillow
.venv/ort/bin/python -c "import onnxruntime; print('onnxruntime', onnxruntime.__version__, 'in .venv/ort')"
