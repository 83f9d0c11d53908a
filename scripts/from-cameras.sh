#!/usr/bin/env bash
# The loop from a camera to a retrained model, long (docs/training.md, "From your cameras"):
# a device collects frames with pre-labels, they are merged and reviewed (the truth standing in
# for a person), NanoDet-m is fine-tuned on them, measured before and after on the data set's
# test split, and deployed back to the device. About 10 minutes on 2 cores; prints the mAP.
# Usage: scripts/from-cameras.sh
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-system.sh test
LIBTORCH=$(scripts/setup-libtorch.sh | tail -n 1)
export LIBTORCH LD_LIBRARY_PATH="$LIBTORCH/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# The whole output goes to target/from-cameras.log; the figures to the terminal.
cargo test --release --features train --test daemon -- --ignored --nocapture \
  from_the_camera_long_run_reports_map_before_and_after 2>&1 | tee target/from-cameras.log \
  | grep -E "mAP50|item\(s\)|review|boxes|test result|panicked"
