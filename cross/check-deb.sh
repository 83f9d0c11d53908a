#!/usr/bin/env bash
# Checks vigil's Debian packages (cross/deb.sh):
#   cross/check-deb.sh target/deb/vigil_*.deb
# - lintian on every package: no error, and no warning but the explained ones below;
# - the one for this machine's architecture installed by dpkg into a scratch root (its
#   maintainer scripts run there, chrooted), then inside that root, as the service would:
#   `vigil validate --models` on the packaged /etc/vigil/vigil.toml (the packaged models
#   loaded), refused until a camera is there; systemd-analyze on the installed unit
#   (hardening exposure at most 2.0); then removed and purged, leaving nothing behind.
# The scratch root is a chroot holding the package and what runs it (the dynamic loader,
# glibc, a shell): entered through a user namespace, so no real root is needed.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $# -gt 0 ]] || { echo "usage: cross/check-deb.sh DEB..." >&2; exit 2; }
fail() { echo "check-deb: FAILED: $*" >&2; exit 1; }

# lintian: no error, no warning. What is not fixed is overridden in the package itself,
# each with its reason (cross/deb/lintian-overrides); the overrides are shown.
for deb in "$@"; do
  echo "== lintian $deb" >&2
  lintian --fail-on error,warning "$deb" >&2 || fail "lintian on $deb"
  lintian --show-overrides --tags embedded-library,initial-upload-closes-no-bugs "$deb" | grep '^O:' >&2 || true
done

host=$(dpkg --print-architecture)
deb=""
for d in "$@"; do
  [[ $(dpkg-deb -f "$d" Architecture) == "$host" ]] && deb=$d
done
[[ -n $deb ]] || fail "no $host package among $* to install here"

root=$(mktemp -d "${TMPDIR:-/tmp}/vigil-deb-root.XXXXXX")
trap 'rm -rf "$root"' EXIT
in_root() { unshare --map-root-user --root="$root" "$@"; }
# dpkg chroots into the root for the maintainer scripts: as root, or in a user namespace.
dpkg() { if [[ $(id -u) -eq 0 ]]; then command dpkg "$@"; else unshare --map-root-user dpkg "$@"; fi; }

# The scratch root: dpkg's database, a shell and rm for the maintainer scripts, and the
# libraries they and vigil load (vigil's own, read off the package's binary).
mkdir -p "$root"/{bin,tmp,dev,etc,var/lib/dpkg/info,var/lib/dpkg/updates,run}
touch "$root/var/lib/dpkg/status" "$root/var/lib/dpkg/available"
cp /bin/sh /bin/rm "$root/bin/"
dpkg-deb -x "$deb" "$root/tmp/unpacked"
for lib in $( (ldd /bin/sh; ldd /bin/rm; ldd "$root/tmp/unpacked/usr/bin/vigil") | grep -o '/[^ ]*' | sort -u); do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
rm -rf "$root/tmp/unpacked"

echo "== dpkg --install $deb into $root" >&2
# libc6 and libgcc-s1 are in the root as files, not in its dpkg database.
dpkg --root="$root" --force-depends --force-not-root --install "$deb" >&2
dpkg --root="$root" --status vigil | grep -qx 'Status: install ok installed' || fail "vigil not installed"
dpkg --root="$root" --listfiles vigil > "$root/tmp/files"
for f in /usr/bin/vigil /lib/systemd/system/vigil.service /etc/vigil/vigil.toml \
         /usr/share/vigil/models/nanodet-m.onnx /usr/share/vigil/models/nanodet-m.toml \
         /usr/share/vigil/models/mobilenet-v2.onnx /usr/share/vigil/models/blazeface.onnx \
         /usr/share/vigil/models/labels/coco-80.txt /usr/share/doc/vigil/copyright \
         /usr/share/man/man1/vigil.1.gz; do
  grep -qx "$f" "$root/tmp/files" || fail "$f is not in the package"
done
[[ $(dpkg-query --admindir="$root/var/lib/dpkg" -W -f='${Conffiles}' vigil) == *" /etc/vigil/vigil.toml "* ]] \
  || fail "/etc/vigil/vigil.toml is not a conffile"
grep -q '^ExecStart=/usr/bin/vigil run' "$root/lib/systemd/system/vigil.service" || fail "the unit does not run /usr/bin/vigil"

echo "== vigil validate --models in the root" >&2
in_root /usr/bin/vigil --version
# No camera: the packaged configuration is refused, naming the device (exit 78).
set +e
out=$(in_root /usr/bin/vigil validate --config /etc/vigil/vigil.toml --models 2>&1)
rc=$?
set -e
[[ $rc -eq 78 && $out == *"camera device /dev/video0 does not exist"* ]] \
  || fail "validate without a camera: exit $rc, expected 78 naming /dev/video0: $out"
# A camera is the one thing this machine cannot have: an empty file stands in for
# /dev/video0 (validate checks that the device is there; nothing opens it).
touch "$root/dev/video0"
in_root /usr/bin/vigil validate --config /etc/vigil/vigil.toml --models \
  || fail "vigil validate --models on the packaged configuration"

echo "== systemd-analyze on the installed unit" >&2
systemd-analyze security --offline=true --root="$root" --threshold=20 vigil.service \
  | tail -n 1 >&2 || fail "systemd-analyze security: the unit's exposure is over 2.0"

echo "== dpkg --remove, --purge" >&2
dpkg --root="$root" --force-not-root --remove vigil >&2
[[ ! -e $root/usr/bin/vigil && -e $root/etc/vigil/vigil.toml ]] || fail "remove: the binary stays or the configuration went"
# What the service leaves in its StateDirectory (with DynamicUser=yes): a purge removes it.
mkdir -p "$root/var/lib/private/vigil/spool" && ln -s private/vigil "$root/var/lib/vigil"
dpkg --root="$root" --force-not-root --purge vigil >&2
left=$(cd "$root" && find usr/share/vigil usr/share/doc/vigil etc/vigil lib/systemd var/lib/vigil var/lib/private/vigil 2>/dev/null || true)
[[ -z $left ]] || fail "purge left: $left"
echo "check-deb: $deb installs, validates, removes and purges; lintian clean on $*" >&2
