#!/usr/bin/env bash
# vigil's main job on its bundled defaults: the daemon, with the bundled photos replayed as a
# camera through the bundled NanoDet-m, publishing on vigil's embedded MQTT broker
# (127.0.0.1:1883). Objects appear in the log as events; every MQTT message can be watched with
#   mosquitto_sub -h 127.0.0.1 -t 'vigil/#' -v
# Usage: scripts/demo.sh [seconds]     (default: until Ctrl-C)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-system.sh build          # libclang for the camera bindings, mosquitto clients
cargo build --locked --bin vigil
vigil=target/debug/vigil
"$vigil" validate --config scripts/demo.toml --models
echo "watch it: mosquitto_sub -h 127.0.0.1 -t 'vigil/#' -v" >&2
if [[ $# -ge 1 ]]; then
  # A bounded run (CI, a quick look): also show what a subscriber receives.
  "$vigil" run --config scripts/demo.toml &
  pid=$!
  for _ in $(seq 100); do (: </dev/tcp/127.0.0.1/1883) 2>/dev/null && break; sleep 0.2; done
  mosquitto_sub -h 127.0.0.1 -t 'vigil/demo/photos/events' -t 'vigil/demo/availability' -v -W "$1" || true
  kill -TERM "$pid"
  wait "$pid"
else
  exec "$vigil" run --config scripts/demo.toml
fi
