#!/usr/bin/env bash
# Copies DejaVu Sans (the charts' text, src/plot/DejaVuSans.ttf) out of Debian's
# fonts-dejavu-core package, with its licence. The font is committed; run this only to
# refresh it. Idempotent.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
apt-get download fonts-dejavu-core
dpkg-deb -x fonts-dejavu-core_*.deb root
cp root/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf "$REPO/src/plot/DejaVuSans.ttf"
cp root/usr/share/doc/fonts-dejavu-core/copyright "$REPO/src/plot/DejaVuSans.copyright"
echo "src/plot/DejaVuSans.ttf from $(ls fonts-dejavu-core_*.deb)"
