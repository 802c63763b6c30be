#!/usr/bin/env bash
# The server under test of the Autobahn run through ws2http (`.ci/run`, docs/conformance.md):
# `wsbridge ws2http` on 127.0.0.1:9001 in front of scripts/autobahn/ws2http_echo_backend.py on
# 127.0.0.1:9003, which pushes every frame back through the callback URL with its type. Meant to be
# started by `scripts/autobahn.sh server`, which kills this process group when the run ends:
#
#   AUTOBAHN_PATH='/connect?f=http%3A%2F%2F127.0.0.1%3A9003%2Fframe&d=http%3A%2F%2F127.0.0.1%3A9003%2Fdisconnect' \
#     scripts/autobahn.sh server scripts/autobahn/ws2http_stack.sh target/release/wsbridge
#
# Autobahn's largest messages are 16 MiB, so the message cap is raised to that (the default is 1 MiB).
set -euo pipefail
bin=${1:?usage: ws2http_stack.sh PATH/TO/wsbridge}
here=$(dirname "$0")
python3 "$here/ws2http_echo_backend.py" 127.0.0.1:9003 &
backend=$!
trap 'kill $backend 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  (exec 3<>/dev/tcp/127.0.0.1/9003) 2>/dev/null && break
  kill -0 $backend 2>/dev/null || { echo "ws2http_stack: the echo backend died" >&2; exit 1; }
  sleep 0.1
done
"$bin" ws2http --listen 127.0.0.1:9001 --allowlist 'http://127\.0\.0\.1:9003/(frame|disconnect)' \
  --max-message-size 16777216 --log-level warn &
bridge=$!
trap 'kill $backend $bridge 2>/dev/null || true' EXIT
wait -n $backend $bridge
