#!/usr/bin/env bash
# Installs ONNX Runtime's shared library for vigil's optional onnxruntime engine (cargo
# feature `onnxruntime`, `engine = "onnxruntime"` in a model manifest): the wheel of
# onnxruntime 1.32.0 from the Python package index, with only its libonnxruntime.so kept,
# under .venv/onnxruntime/. vigil opens the library at run time; nothing is linked.
#
# Prints the library's path on its last line. Idempotent.
#   export ORT_DYLIB_PATH=$(scripts/setup-onnxruntime.sh | tail -n 1)
# On a device, copy that file (about 35 MB on x86-64; it needs only glibc and libstdc++) anywhere and
# set ORT_DYLIB_PATH in the service's environment (docs/models.md, "Engines").
set -euo pipefail
cd "$(dirname "$0")/.."
version=1.32.0
dir=${VIGIL_ONNXRUNTIME_DIR:-.venv/onnxruntime}
lib="$dir/libonnxruntime.so.$version"
if [[ ! -f "$lib" ]]; then
  mkdir -p "$dir/wheel"
  if [[ ! -x "$dir/pip/bin/pip" ]]; then
    python3 -m venv "$dir/pip" >&2
  fi
  "$dir/pip/bin/pip" download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --dest "$dir/wheel" "onnxruntime==$version" >&2
  wheel=$(ls "$dir"/wheel/onnxruntime-"$version"-*.whl | head -n 1)
  python3 - "$wheel" "$lib" <<'PY'
import shutil, sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if n.startswith("onnxruntime/capi/libonnxruntime.so")]
    if not names:
        sys.exit(f"{wheel} holds no onnxruntime/capi/libonnxruntime.so*")
    with z.open(sorted(names)[-1]) as src, open(out + ".part", "wb") as dst:
        shutil.copyfileobj(src, dst)
PY
  mv "$lib.part" "$lib"
  rm -rf "$dir/wheel"
fi
echo "$(cd "$(dirname "$lib")" && pwd)/$(basename "$lib")"
