# Sourced by the cross scripts: what cargo needs to build vigil for a device target on this
# x86_64 Debian machine, with rustup's target and Debian's cross toolchain, and to run the
# result under qemu-user.
#   cross_env TARGET   exports the linker, C compiler and archiver for TARGET (ring and
#                      tract's assembly kernels are C/asm, OpenH264 is C++), bindgen's sysroot (the camera
#                      feature's V4L2 headers), and the qemu runner for `cargo test` and
#                      for the tests that start the vigil binary (VIGIL_TEST_RUNNER)
# Targets: aarch64-unknown-linux-gnu (Pi 4/5, Jetson; 64-bit OS) and
# armv7-unknown-linux-gnueabihf (Pi 2/3/Zero 2; 32-bit OS).

# The Debian triple of a Rust target, and the qemu-user binary that runs it.
cross_triple() {
  case $1 in
    aarch64-unknown-linux-gnu) echo aarch64-linux-gnu ;;
    armv7-unknown-linux-gnueabihf) echo arm-linux-gnueabihf ;;
    *) echo "cross: unsupported target $1 (aarch64-unknown-linux-gnu, armv7-unknown-linux-gnueabihf)" >&2; return 1 ;;
  esac
}

cross_qemu() {
  case $1 in
    aarch64-unknown-linux-gnu) echo qemu-aarch64 ;;
    armv7-unknown-linux-gnueabihf) echo qemu-arm ;;
  esac
}

cross_env() {
  local target=$1 triple var runner
  triple=$(cross_triple "$target") || return 1
  var=$(echo "$target" | tr 'a-z-' 'A-Z_')
  export "CARGO_TARGET_${var}_LINKER=$triple-gcc"
  runner="$(cross_qemu "$target") -L /usr/$triple"
  export "CARGO_TARGET_${var}_RUNNER=$runner"
  # Tests that start the vigil binary start this ARM one through qemu too (tests/common).
  export "VIGIL_TEST_RUNNER=$runner"
  export "CC_${target//-/_}=$triple-gcc" "CXX_${target//-/_}=$triple-g++" "AR_${target//-/_}=$triple-ar"
  # bindgen (nokhwa's V4L2 bindings) parses the target's kernel headers, not the host's.
  export "BINDGEN_EXTRA_CLANG_ARGS_${target//-/_}=--sysroot=/usr/$triple"
}
