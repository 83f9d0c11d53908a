#!/usr/bin/env bash
# vigil's model tests on ARM, under qemu-user: the library's unit tests (the decoders
# among them) and tests/models.rs (the bundled models on real photos against onnxruntime's
# outputs, within 1e-4), cross-built for each target and run as ARM binaries, so tract's
# NEON kernels, which x86 never executes, are checked on the graphs vigil ships.
#   cross/test.sh [--all-cpus] [aarch64|armv7 ...]   (default: both)
# Built with the release profile, as the packages are (cross/deb.sh reuses the build).
#
# qemu-user shows the program the host's /proc/cpuinfo, and its default CPU has every
# extension (SVE, SME), which tract would use and no Pi has. So each run names the CPU
# qemu emulates (QEMU_CPU) and tells tract which kernels that CPU gets:
#   aarch64: Cortex-A72 (Pi 4) with tract's A72 kernels; with --all-cpus also Cortex-A53
#            (Pi 3, Zero 2 W) with its A53 kernels and Cortex-A76 (Pi 5) with the generic
#            NEON kernels and dotprod (each run of the tests takes 4-5 minutes under qemu)
#   armv7:   Cortex-A7 (Pi 2) with NEON forced on (tract reads it from /proc/cpuinfo)
set -euo pipefail
cd "$(dirname "$0")/.."
source cross/env.sh

# Each target fails loudly if its toolchain is missing: never a silent pass.
need() {
  local target=$1 triple qemu
  triple=$(cross_triple "$target")
  qemu=$(cross_qemu "$target")
  if ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
    echo "cross/test.sh: FAILED: Rust target $target is not installed (rustup target add $target)" >&2
    return 1
  fi
  for tool in "$triple-gcc" "$triple-g++" "$qemu"; do
    if ! command -v "$tool" > /dev/null; then
      echo "cross/test.sh: FAILED: $tool is missing (scripts/setup-system.sh cross)" >&2
      return 1
    fi
  done
}

# run TARGET: build the test binaries, then run each under every CPU for that target.
run() {
  local target=$1 cpus
  need "$target"
  cross_env "$target"
  case $target in
    aarch64-unknown-linux-gnu)
      cpus=("cortex-a72 TRACT_CPU_AARCH64_KIND=a72" "cortex-a53 TRACT_CPU_AARCH64_KIND=a53" "cortex-a76 TRACT_CPU_AARCH64_KIND=generic") ;;
    armv7-unknown-linux-gnueabihf)
      cpus=("cortex-a7 TRACT_CPU_ARM32_NEON=true") ;;
  esac
  [[ $all_cpus == yes ]] || cpus=("${cpus[0]}")
  local args=(--locked --release --target "$target")
  cargo test "${args[@]}" --lib --test models --no-run
  mkdir -p target/cross
  for cpu in "${cpus[@]}"; do
    read -r qemu_cpu knob <<< "$cpu"
    echo "== $target on $qemu_cpu ($knob)" >&2
    env QEMU_CPU="$qemu_cpu" "$knob" cargo test "${args[@]}" --lib
    # The models' differences from onnxruntime, kept in target/cross/ and summed up here.
    local log=target/cross/$target-$qemu_cpu.log
    env QEMU_CPU="$qemu_cpu" "$knob" cargo test "${args[@]}" --test models -- --nocapture 2>&1 | tee "$log"
    echo "== $target on $qemu_cpu: largest differences from onnxruntime" >&2
    grep 'max difference' "$log" >&2
  done
}

all_cpus=no
if [[ ${1:-} == --all-cpus ]]; then
  all_cpus=yes
  shift
fi
targets=()
for a in "${@:-aarch64 armv7}"; do
  for t in $a; do
    case $t in
      aarch64) targets+=(aarch64-unknown-linux-gnu) ;;
      armv7) targets+=(armv7-unknown-linux-gnueabihf) ;;
      *) echo "cross/test.sh: unknown target $t (aarch64, armv7)" >&2; exit 2 ;;
    esac
  done
done
for t in "${targets[@]}"; do
  run "$t"
done
