#!/usr/bin/env bash
# Debian packages of vigil: the release binary, the hardened systemd unit, an example
# /etc/vigil/vigil.toml, the bundled models under /usr/share/vigil/models, the docs and a
# manual page. Installing one enables and starts nothing (cross/deb/postinst says why).
#   cross/deb.sh [amd64|arm64|armhf ...]   (default: this machine's architecture)
# Writes target/deb/vigil_<version>-1_<arch>.deb and prints each path. arm64 and armhf are
# cross-built here (cross/env.sh; scripts/setup-system.sh cross installs the toolchains).
# The maintainer field comes from VIGIL_DEB_MAINTAINER ("Name <address>").
set -euo pipefail
cd "$(dirname "$0")/.."
source cross/env.sh

rust_target() {
  case $1 in
    amd64) echo x86_64-unknown-linux-gnu ;;
    arm64) echo aarch64-unknown-linux-gnu ;;
    armhf) echo armv7-unknown-linux-gnueabihf ;;
    *) echo "deb.sh: unknown architecture $1 (amd64, arm64, armhf)" >&2; return 1 ;;
  esac
}

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
debversion="$version-1"
maintainer=${VIGIL_DEB_MAINTAINER:-vigil developers <vigil-devel@example.org>}
# Dates in the package (changelog, file times) are the last commit's: rebuilds are the same.
# Not exported to cargo: C build scripts (ring, tract-linalg) rerun when it changes, and
# the release build would no longer be the one cross/test.sh tested.
epoch=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}

# Depends from the binary itself: the packages of the libraries it links, libc6 at least
# the newest glibc symbol version it uses.
depends() {
  local bin=$1 objdump=$2 needed glibc cxx deps=()
  needed=$($objdump -p "$bin" | awk '$1 == "NEEDED" { print $2 }')
  glibc=$($objdump -T "$bin" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -Vu | tail -n 1)
  [[ -n $glibc ]] || { echo "deb.sh: no glibc symbol versions in $bin" >&2; return 1; }
  for lib in $needed; do
    case $lib in
      libc.so.6|libm.so.6|ld-linux*|libpthread.so.0|libdl.so.2|librt.so.1) ;;
      libgcc_s.so.1) deps+=("libgcc-s1") ;;
      # OpenH264 (the RTSP source's decoder) is C++: the GCC release that brought the newest
      # GLIBCXX symbol version it uses.
      libstdc++.so.6) cxx=$(glibcxx_gcc "$bin" "$objdump") || return 1; deps+=("libstdc++6$cxx") ;;
      *) echo "deb.sh: $bin links $lib, which this script does not map to a package" >&2; return 1 ;;
    esac
  done
  echo "libc6 (>= $glibc)${deps[*]/#/, }"
}

# " (>= GCC)" for the newest GLIBCXX_3.4.N symbol version a binary uses (GCC 9 brought
# 3.4.26, 10 3.4.28, 11 3.4.29, 12 3.4.30, 13 3.4.31-32), empty for older ones.
glibcxx_gcc() {
  local n
  n=$($2 -T "$1" | grep -o 'GLIBCXX_3\.4\.[0-9]*' | sed 's/GLIBCXX_3\.4\.//' | sort -n | tail -n 1)
  case ${n:-0} in
    26|27) echo " (>= 9)" ;; 28) echo " (>= 10)" ;; 29) echo " (>= 11)" ;; 30) echo " (>= 12)" ;;
    31|32) echo " (>= 13)" ;;
    *) [[ ${n:-0} -gt 32 ]] && { echo "deb.sh: $1 uses GLIBCXX_3.4.$n, newer than this script knows" >&2; return 1; }
       echo "" ;;
  esac
}

build() {
  local arch=$1 target triple bin root doc
  target=$(rust_target "$arch")
  if [[ $arch == "$(dpkg --print-architecture)" ]]; then
    triple=""
    cargo build --release --locked >&2
    bin=target/release/vigil
  else
    triple="$(cross_triple "$target")-"
    cross_env "$target"
    cargo build --release --locked --target "$target" >&2
    bin=target/$target/release/vigil
  fi

  root=target/deb/$arch/root
  rm -rf "$root"
  install -d "$root/DEBIAN"
  install -m 755 -D "$bin" "$root/usr/bin/vigil"
  "${triple}strip" --strip-unneeded --remove-section=.comment --remove-section=.note "$root/usr/bin/vigil"

  # The unit as systemd/vigil.service has it, with the packaged binary's path.
  install -d "$root/lib/systemd/system"
  sed 's|/usr/local/bin/vigil|/usr/bin/vigil|g' systemd/vigil.service > "$root/lib/systemd/system/vigil.service"
  install -m 644 -D systemd/vigil.toml "$root/etc/vigil/vigil.toml"
  echo /etc/vigil/vigil.toml > "$root/DEBIAN/conffiles"

  # The models a device runs (not mobilenet-v2-train.onnx: the trainer's, not packaged).
  install -d "$root/usr/share/vigil/models/labels"
  for m in nanodet-m mobilenet-v2 blazeface; do
    install -m 644 "models/$m.onnx" "models/$m.toml" "$root/usr/share/vigil/models/"
  done
  install -m 644 models/labels/*.txt "$root/usr/share/vigil/models/labels/"
  install -m 644 models/README.md "$root/usr/share/vigil/models/README.md"

  doc=$root/usr/share/doc/vigil
  install -d "$doc/docs"
  install -m 644 README.md "$doc/README.md"
  install -m 644 systemd/README.md "$doc/systemd.md"
  for f in docs/*.md; do
    gzip -9n < "$f" > "$doc/docs/$(basename "$f").gz"
  done
  install -m 644 cross/deb/copyright "$doc/copyright"
  {
    echo "vigil ($debversion) unstable; urgency=medium"
    echo
    echo "  * Built by cross/deb.sh; the history is the project's git log."
    echo
    echo " -- $maintainer  $(date -R -u -d "@$epoch")"
  } | gzip -9n > "$doc/changelog.Debian.gz"
  install -m 644 -D cross/deb/lintian-overrides "$root/usr/share/lintian/overrides/vigil"
  install -d "$root/usr/share/man/man1"
  gzip -9n < cross/deb/vigil.1 > "$root/usr/share/man/man1/vigil.1.gz"
  find "$root" -path "$root/DEBIAN" -prune -o -type f -exec chmod 644 {} + -o -type d -exec chmod 755 {} +
  chmod 755 "$root/usr/bin/vigil"

  install -m 755 cross/deb/postinst cross/deb/prerm cross/deb/postrm "$root/DEBIAN/"
  (cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) > "$root/DEBIAN/md5sums"
  chmod 644 "$root/DEBIAN/md5sums" "$root/DEBIAN/conffiles"
  # Worked out before the heredoc: a failure inside it would not stop the script.
  local deps size
  deps=$(depends "$root/usr/bin/vigil" "${triple}objdump")
  size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
  cat > "$root/DEBIAN/control" <<EOF
Package: vigil
Version: $debversion
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $size
Depends: $deps
Suggests: mosquitto, mosquitto-clients
Section: video
Priority: optional
Description: edge camera inference daemon publishing detections over MQTT
 vigil watches cameras (V4L2 devices, or replays of image files), runs ONNX
 models on their frames on the device with tract, tracks what it sees and
 publishes detections, events, counts, snapshots and statistics over MQTT,
 with Home Assistant discovery and signed model deploys.
 .
 This package holds the daemon, a hardened systemd unit (installed, not
 enabled), an example configuration in /etc/vigil/vigil.toml and three
 bundled models: NanoDet-m (COCO objects), MobileNetV2 (ImageNet classes)
 and BlazeFace (faces).
EOF
  install -d target/deb
  local deb=target/deb/vigil_${debversion}_$arch.deb
  SOURCE_DATE_EPOCH=$epoch dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >&2
  echo "$deb"
}

archs=("$@")
[[ ${#archs[@]} -eq 0 ]] && archs=("$(dpkg --print-architecture)")
for arch in "${archs[@]}"; do
  rust_target "$arch" > /dev/null
  build "$arch"
done
