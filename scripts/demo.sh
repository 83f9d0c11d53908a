#!/usr/bin/env bash
# vigil's main job on its bundled defaults: the bundled models on the bundled photos.
# Writes annotated images to target/demo/. Until the daemon lands (`vigil run`), the main
# job is `vigil infer`.
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/demo
mkdir -p "$out/nanodet-m" "$out/blazeface"
cargo build --locked --bin vigil
vigil=target/debug/vigil
photos=(tests/photos/motorcycle_left.png tests/photos/group.png tests/photos/astronaut.png tests/photos/coffee.png)
"$vigil" infer --model models/nanodet-m.toml --draw "$out/nanodet-m" "${photos[@]}"
"$vigil" infer --model models/blazeface.toml --draw "$out/blazeface" tests/photos/astronaut.png tests/photos/group.png
"$vigil" infer --model models/mobilenet-v2.toml tests/photos/chelsea.png tests/photos/coffee.png
echo "annotated images: $out/"
