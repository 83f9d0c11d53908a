#!/usr/bin/env bash
# Debian packages vigil's build and tests need; installs only what is missing.
#   libclang-dev           nokhwa's V4L2 bindings run bindgen at build time (feature `camera`)
#   mosquitto(-clients)    the MQTT broker the daemon's tests start, and mosquitto_sub for the demo
#   dataset-fashion-mnist  labelled images for the trainer's tests
#   openssl                certificates for the daemon's TLS test
# Usage: scripts/setup-system.sh [build|test]   (build: only what building needs)
set -euo pipefail
want=(libclang-dev mosquitto mosquitto-clients)
[[ ${1:-test} == test ]] && want+=(dataset-fashion-mnist openssl)
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
