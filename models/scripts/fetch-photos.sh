#!/usr/bin/env bash
# Copy the test photos into tests/photos/:
#   scikit-image (BSD-3-Clause, version pinned in requirements-torch.txt), from the
#   installed package's skimage/data/: astronaut.png chelsea.png coffee.png motorcycle_left.png
#   @vladmandic/face-api 1.7.15 (MIT), demo/sample1.jpg and sample4.jpg (via fetch-sources.sh)
# Needs setup-venvs.sh and fetch-sources.sh to have run. Idempotent.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV_DIR="${VIGIL_VENV_DIR:-$REPO/.venv}"
SRC="${VIGIL_SOURCES_DIR:-$REPO/.venv/sources}"
DEST="$REPO/tests/photos"
mkdir -p "$DEST"

SKDATA="$("$VENV_DIR/torch/bin/python" -c \
  'import importlib.util, os; print(os.path.join(importlib.util.find_spec("skimage").submodule_search_locations[0], "data"))')"
for f in astronaut.png chelsea.png coffee.png motorcycle_left.png; do
  [[ -f "$SKDATA/$f" ]] || { echo "[photos] $f is not shipped in the scikit-image wheel" >&2; exit 1; }
  cp "$SKDATA/$f" "$DEST/$f"
done
for i in 1 4; do
  cp "$SRC/face-api-1.7.15/demo/sample$i.jpg" "$DEST/sample$i.jpg"
done
# group.png: sample4 (four people standing) decoded once by Pillow and halved to 960 px
# wide, as PNG, so that every reader (vigil's Rust decoders, Pillow in the fixture
# script) sees the same pixels: JPEG decoders may differ by a level here and there.
"$VENV_DIR/torch/bin/python" - "$DEST/sample4.jpg" "$DEST/group.png" <<'PY'
import sys
from PIL import Image
im = Image.open(sys.argv[1]).convert("RGB")
im.resize((im.width // 2, im.height // 2), Image.BILINEAR).save(sys.argv[2], optimize=True)
PY
echo "[photos] copied to $DEST"
