#!/usr/bin/env bash
# Fine-tunes one model on one data set with five seeds and prints each seed's test top-1,
# its validation accuracy per epoch, and the spread (best − worst top-1): the recipe check
# of docs/training.md. Each run is `vigil train … --size 64 --epochs 6 --device cpu`, plus
# any extra arguments given.
#
#   bench/train_seeds.sh VIGIL MANIFEST DATA OUT [extra vigil train arguments…]
#   e.g. bench/train_seeds.sh target/debug/vigil models/mobilenet-v2.toml /tmp/digits /tmp/seeds
#
# DATA as written by tests/data/make_digits.py (scikit-learn's digits) or
# tests/data/make_fashion_mnist.py. Needs LIBTORCH's lib/ on LD_LIBRARY_PATH (docs/training.md).
set -uo pipefail
if [[ $# -lt 4 ]]; then
  sed -n '2,11p' "$0" >&2
  exit 2
fi
vigil=$1 manifest=$2 data=$3 out=$4
shift 4
mkdir -p "$out"
tops=()
for seed in ${SEEDS:-0 1 2 3 4}; do
  run="$out/seed-$seed"
  rm -rf "$run"
  "$vigil" train --model "$manifest" --data "$data" --out "$run" --size 64 --epochs 6 --device cpu \
    --seed "$seed" "$@" > "$run.log" 2>&1
  rc=$?
  top1=$(python3 -c "import json, sys; print(json.load(open(sys.argv[1]))['test']['top1'])" "$run/train.json" 2>/dev/null || echo "none")
  val=$(grep -o 'val acc [0-9.]*' "$run.log" | cut -d' ' -f3 | tr '\n' ' ')
  echo "seed $seed: exit $rc, test top-1 $top1, validation accuracy by epoch: $val"
  [[ "$top1" != none ]] && tops+=("$top1")
done
if [[ ${#tops[@]} -gt 0 ]]; then
  printf '%s\n' "${tops[@]}" | python3 -c "import sys; v = [float(l) for l in sys.stdin]; print(f'top-1: worst {min(v):.3f}, best {max(v):.3f}, spread {max(v) - min(v):.3f} over {len(v)} exported runs')"
fi
