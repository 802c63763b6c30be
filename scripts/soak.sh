#!/usr/bin/env bash
# Soak run (not in CI): one `wsbridge` process per mode on 127.0.0.1 under a mixed load for MINUTES,
# watching each process's open descriptors and resident set.
#
#   scripts/soak.sh MINUTES            e.g. nice -n 10 scripts/soak.sh 10
#
# - tcp2ws  → a WebSocket echo backend (scripts/soak/backends.py, Python `websockets`);
# - ws2tcp  (--target) → a TCP echo target (the same process);
# - ws2http → scripts/autobahn/ws2http_echo_backend.py (through scripts/soak/ws2http_backend.py, for a
#   deeper listen backlog), which pushes every frame back through the callback URL.
# The load (scripts/soak/load.py) keeps CONCURRENCY (default 200) clients busy, each doing checked echo
# round trips and leaving cleanly, abruptly (reset) or in the middle of a message; every 10 s it prints
# a line per bridge (descriptors, RSS, clients done, errors), and at the end a summary (min/max/last
# of both, and whether they came back to the idle baseline once the load stopped). Exit status 0 only
# if no bridge died, no client saw an error and every bridge's descriptors came back.
#
# Environment: CONCURRENCY (200), LOG_LEVEL (of the bridges, warn), SETTLE (seconds to wait for the
# descriptors after the load, 30), SOAK_DIR (where the bridges' logs go; default a fresh temp
# directory, kept), WSBRIDGE (a binary to use instead of building target/release/wsbridge).
# Needs python3 with `websockets` (>= 13, for websockets.asyncio).
set -euo pipefail
minutes=${1:?usage: scripts/soak.sh MINUTES}
root=$(cd "$(dirname "$0")/.." && pwd)
here="$root/scripts/soak"
concurrency=${CONCURRENCY:-200}
settle=${SETTLE:-30}
dir=${SOAK_DIR:-$(mktemp -d /tmp/wsbridge-soak.XXXXXX)}
mkdir -p "$dir"

if [[ -z "${WSBRIDGE:-}" ]]; then
  echo "building the release binary…" >&2
  (cd "$root" && cargo build --release -p wsbridge-mio --bin wsbridge >&2)
  WSBRIDGE="$root/target/release/wsbridge"
  # A private copy: a rebuild by someone else during the run must not replace the binary under test.
  cp "$WSBRIDGE" "$dir/wsbridge"
  WSBRIDGE="$dir/wsbridge"
fi
python3 -c 'import websockets' 2>/dev/null || { echo "soak: needs python3 with websockets" >&2; exit 2; }

# Six free ports on 127.0.0.1.
read -r p_tcp2ws p_ws2tcp p_ws2http p_wsback p_tcpback p_httpback < <(python3 - <<'PY'
import socket
socks = [socket.socket() for _ in range(6)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
PY
)

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

wait_port() { # PORT PID NAME
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    kill -0 "$2" 2>/dev/null || { echo "soak: $3 died (logs in $dir)" >&2; exit 1; }
    sleep 0.1
  done
  echo "soak: $3 does not listen on $1" >&2
  exit 1
}

python3 "$here/backends.py" "$p_wsback" "$p_tcpback" >"$dir/backends.log" 2>&1 &
pids+=($!); wait_port "$p_wsback" $! backends; wait_port "$p_tcpback" "${pids[-1]}" backends
python3 "$here/ws2http_backend.py" "127.0.0.1:$p_httpback" >"$dir/http_backend.log" 2>&1 &
pids+=($!); wait_port "$p_httpback" $! "ws2http backend"

common=(--log-level "${LOG_LEVEL:-warn}" --max-connections 1000)
"$WSBRIDGE" tcp2ws --listen "127.0.0.1:$p_tcp2ws" --backend "ws://127.0.0.1:$p_wsback/" \
  --ping-interval 5 "${common[@]}" >"$dir/tcp2ws.log" 2>&1 &
pid_tcp2ws=$!; pids+=($pid_tcp2ws)
"$WSBRIDGE" ws2tcp --listen "127.0.0.1:$p_ws2tcp" --target "127.0.0.1:$p_tcpback" \
  --ping-interval 5 "${common[@]}" >"$dir/ws2tcp.log" 2>&1 &
pid_ws2tcp=$!; pids+=($pid_ws2tcp)
"$WSBRIDGE" ws2http --listen "127.0.0.1:$p_ws2http" \
  --allowlist "http://127\\.0\\.0\\.1:$p_httpback/(frame|disconnect)" \
  --ping-interval 5 "${common[@]}" >"$dir/ws2http.log" 2>&1 &
pid_ws2http=$!; pids+=($pid_ws2http)
wait_port "$p_tcp2ws" $pid_tcp2ws tcp2ws
wait_port "$p_ws2tcp" $pid_ws2tcp ws2tcp
wait_port "$p_ws2http" $pid_ws2http ws2http
sleep 1 # the probes above were connections too: let them close before the baseline

echo "soak: $minutes min, concurrency $concurrency, logs in $dir" >&2
status=0
python3 "$here/load.py" --minutes "$minutes" --concurrency "$concurrency" --settle "$settle" \
  --tcp2ws "127.0.0.1:$p_tcp2ws" --ws2tcp "127.0.0.1:$p_ws2tcp" --ws2http "127.0.0.1:$p_ws2http" \
  --ws2http-backend "http://127.0.0.1:$p_httpback" \
  --pid "tcp2ws=$pid_tcp2ws" --pid "ws2tcp=$pid_ws2tcp" --pid "ws2http=$pid_ws2http" || status=$?

for m in tcp2ws ws2tcp ws2http; do
  n=$(grep -c -E 'level=error|panicked' "$dir/$m.log" || true)
  echo "$m log: $(wc -l <"$dir/$m.log") lines, $n errors or panics ($dir/$m.log)"
  [[ $n -eq 0 ]] || status=1
done
exit $status
