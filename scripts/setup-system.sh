#!/usr/bin/env bash
# Debian packages vigil's build and tests need; installs only what is missing.
#   libclang-dev           nokhwa's V4L2 bindings run bindgen at build time (feature `camera`)
#   g++, nasm              OpenH264, the RTSP source's H.264 decoder, is C++ with x86 assembly
#   mosquitto(-clients)    the MQTT broker the daemon's tests start, and mosquitto_sub for the demo
#   dataset-fashion-mnist  labelled images for the trainer's tests
#   openssl                certificates for the daemon's TLS test
#   python3-gi, gir1.2-gst-rtsp-server-1.0, gstreamer1.0-plugins-{base,good,ugly}
#   gstreamer1.0-tools     the RTSP camera the tests start (GStreamer's RTSP server, x264),
#                          and gst-launch-1.0, which makes the H.264 fuzz harness's seed
#   gcc-aarch64-linux-gnu, gcc-arm-linux-gnueabihf (with their libc and kernel headers,
#                          and g++ for OpenH264)
#                          cross builds for the devices (cross/env.sh)
#   qemu-user              runs those builds' tests here (cross/test.sh)
#   lintian                checks the Debian packages (cross/check-deb.sh)
# and the Rust targets aarch64-unknown-linux-gnu and armv7-unknown-linux-gnueabihf (rustup).
# Usage: scripts/setup-system.sh [build|cross|test]
#   build: only what building for this machine needs; cross: that and the cross tools;
#   test: everything (the default)
set -euo pipefail
want=(libclang-dev g++ nasm mosquitto mosquitto-clients)
cross=(gcc-aarch64-linux-gnu g++-aarch64-linux-gnu libc6-dev-arm64-cross linux-libc-dev-arm64-cross
       gcc-arm-linux-gnueabihf g++-arm-linux-gnueabihf libc6-dev-armhf-cross linux-libc-dev-armhf-cross
       qemu-user lintian)
rtsp=(python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good
      gstreamer1.0-plugins-ugly gstreamer1.0-tools)
case ${1:-test} in
  build) ;;
  cross) want+=("${cross[@]}") ;;
  test) want+=(dataset-fashion-mnist openssl "${rtsp[@]}" "${cross[@]}") ;;
  *) echo "usage: scripts/setup-system.sh [build|cross|test]" >&2; exit 2 ;;
esac
if [[ ${1:-test} != build ]]; then
  # Said loudly when it cannot be done: cross/test.sh then fails rather than skips.
  rustup target add aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf >&2 \
    || echo "setup-system: WARNING: rustup could not add the ARM targets; the ARM tests will fail" >&2
fi
missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0
sudo=""; [[ $(id -u) -ne 0 ]] && sudo=sudo
echo "installing Debian packages: ${missing[*]}" >&2
$sudo apt-get update -q >&2
# No services started by the package: the tests start their own brokers.
RUNLEVEL=1 $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
