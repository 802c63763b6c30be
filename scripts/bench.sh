#!/usr/bin/env bash
# The benchmark suite (first slice): every system side by side in ONE run, on 127.0.0.1.
# Usage: scripts/bench.sh [--quick]
#
# Systems (each a fresh set of processes per scenario):
#   direct          client -> target, no relay (the physical limit)
#   socat           socat -> socat byte relay chain, default buffers (8 KiB)
#   socat-b256k     the same with -b 262144
#   wsbridge-mio    wsbridge tcp2ws --half-close eof -> wsbridge ws2tcp --target (the wsbridge.v1 tunnel)
#   wsbridge-smol   the same tunnel on wsbridge-smol (runtime-smol/examples/tunnel.rs), also two processes
# Scenarios:
#   bulk one way    --bytes client -> target sink over one connection; MiB/s, CPU s/GiB of the relay processes
#   bulk both ways  --bytes each way at once; MiB/s counts both directions
#   idle            N connections bridged end to end and left idle; PSS gained per connection by each relay
#                   process, then again after one byte each way on every connection; the kernel's memory
#                   (system-wide) apart
# Every byte is counted and checksummed where it lands (runtime-mio/examples/bench_bulk.rs); every idle
# connection carries one checked byte each way (bench_idle.rs). Any loss fails the run.
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
  BYTES=$((256 << 20)); REPS=3; CONNS=1000
else
  BYTES=$((1 << 30)); REPS=5; CONNS=5000
fi
BULK_SYSTEMS=(direct socat socat-b256k wsbridge-mio wsbridge-smol)
IDLE_SYSTEMS=(direct socat wsbridge-mio wsbridge-smol)

t0=$(date +%s)
say() { echo "bench: [$(( $(date +%s) - t0 ))s] $*" >&2; }

ulimit -n "$(ulimit -Hn)"
# The load generator holds both ends of every idle connection; each relay process holds 2 per connection.
if (( $(ulimit -n) < 2 * CONNS + 100 )); then
  echo "bench: error: $CONNS idle connections need $((2 * CONNS + 100)) descriptors per process; the limit is $(ulimit -n)" >&2
  exit 1
fi
if ! command -v socat >/dev/null; then
  echo "bench: error: socat is missing (apt-get install socat)" >&2
  exit 1
fi

say "building (release)"
cargo build --release -p wsbridge-mio --bin wsbridge --example bench_bulk --example bench_idle \
  -p wsbridge-smol --example tunnel >&2
R="${CARGO_TARGET_DIR:-target}/release"
CLK=$(getconf CLK_TCK)

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
# (the relay processes, entry side first, comma-separated).
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
      socat "${opts[@]}" "TCP-LISTEN:$b,bind=127.0.0.1,fork,reuseaddr,backlog=1024" "TCP:$TARGET" 2>"$WORK/exit.log" &
      RUNNING+=($!)
      socat "${opts[@]}" "TCP-LISTEN:$a,bind=127.0.0.1,fork,reuseaddr,backlog=1024" "TCP:127.0.0.1:$b" 2>"$WORK/entry.log" &
      RUNNING+=($!) ;;
    wsbridge-mio)
      "$R/wsbridge" --log-level warn ws2tcp --listen "127.0.0.1:$b" --target "$TARGET" \
        --max-connections 20000 2>"$WORK/exit.log" &
      RUNNING+=($!)
      "$R/wsbridge" --log-level warn tcp2ws --listen "127.0.0.1:$a" --backend "ws://127.0.0.1:$b/" \
        --half-close eof --max-connections 20000 2>"$WORK/entry.log" &
      RUNNING+=($!) ;;
    wsbridge-smol)
      "$R/examples/tunnel" ws2tcp --listen "127.0.0.1:$b" --target "$TARGET" \
        --max-connections 20000 >/dev/null 2>"$WORK/exit.log" &
      RUNNING+=($!)
      "$R/examples/tunnel" tcp2ws --listen "127.0.0.1:$a" --backend "ws://127.0.0.1:$b/" \
        --max-connections 20000 >/dev/null 2>"$WORK/entry.log" &
      RUNNING+=($!) ;;
  esac
  wait_listening "$a"; wait_listening "$b"
  ENTRY=127.0.0.1:$a
  PIDS="${RUNNING[1]},${RUNNING[0]}"
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

for sys in "${BULK_SYSTEMS[@]}"; do
  start_system "$sys"
  for mode in one both; do
    say "bulk $mode $sys ($REPS x $BYTES bytes)"
    "$R/examples/bench_bulk" --system "$sys" --mode "$mode" --bytes "$BYTES" --reps "$REPS" \
      --target-listen "$TARGET" --connect "$ENTRY" --pids "$PIDS" --clk-tck "$CLK" --timeout 120 \
      | tee -a "$RESULTS" | sed 's/^/bench:   /' >&2
  done
  stop_system
done

for sys in "${IDLE_SYSTEMS[@]}"; do
  start_system "$sys"
  say "idle $sys ($CONNS connections)"
  "$R/examples/bench_idle" --system "$sys" --conns "$CONNS" \
    --target-listen "$TARGET" --connect "$ENTRY" --pids "$PIDS" --clk-tck "$CLK" --timeout 240 \
    | tee -a "$RESULTS" | sed 's/^/bench:   /' >&2
  stop_system
done
say "done"

python3 - "$RESULTS" "$quick" "$BYTES" "$REPS" "$CONNS" "$LOAD_BEFORE" "$(( $(date +%s) - t0 ))" <<'PY'
import sys, subprocess
path, quick, nbytes, reps, conns, load_before, secs = sys.argv[1:]
bulk, idle = {}, {}
for line in open(path):
    f = line.split()
    if not f or f[0] not in ("bulk", "idle"):
        continue
    kv = dict(x.split("=", 1) for x in f[1:])
    if f[0] == "bulk":
        bulk[(kv["system"], kv["mode"])] = kv
    else:
        idle[kv["system"]] = kv

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
print(f"Bulk: {mib} MiB over one connection, median of {reps} runs; both ways = {mib} MiB each way at once, "
      "MiB/s of both directions together. CPU = utime+stime of the relay processes per GiB moved "
      "(entry + exit process). Every byte counted and checksummed at the receiver. Others' CPU = share of the "
      "2 CPUs that processes other than the load generator and the relays used meanwhile (one way / both ways).")
print()
print("| system | one way MiB/s | vs direct | relay CPU s/GiB | both ways MiB/s | vs direct | relay CPU s/GiB | others' CPU % |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
systems = [s for s in ("direct", "socat", "socat-b256k", "wsbridge-mio", "wsbridge-smol") if (s, "one") in bulk]
lines = []
def cpu_cell(kv):
    if kv["cpu_s_per_gib"] == "-":
        return "—"
    parts = kv["cpu_by_pid"].split("/")
    return f"{float(kv['cpu_s_per_gib']):.2f} ({' + '.join(f'{float(p):.2f}' for p in parts)})"
for s in systems:
    row = [s]
    for mode, scen in (("one", "bulk_one_way"), ("both", "bulk_both_ways")):
        kv = bulk[(s, mode)]
        base = float(bulk[("direct", mode)]["mibs"])
        v = float(kv["mibs"])
        row += [f"{v:.0f}", f"{v / base:.2f}", cpu_cell(kv)]
        lines.append(f"scenario={scen} system={s} value={v:.0f} unit=MiB/s ratio_vs_direct={v / base:.2f}")
        if kv["cpu_s_per_gib"] != "-":
            lines.append(f"scenario={scen}_cpu system={s} value={float(kv['cpu_s_per_gib']):.3f} unit=cpu_s/GiB "
                         f"ratio_vs_direct=n/a per_process={kv['cpu_by_pid']}")
    row.append(f"{float(bulk[(s, 'one')]['others_cpu_pct']):.0f} / {float(bulk[(s, 'both')]['others_cpu_pct']):.0f}")
    print("| " + " | ".join(row) + " |")
print()
print(f"Idle: {conns} connections bridged end to end (client → relay → relay → target), then idle. User space = "
      "PSS gained per connection (PSS_after − PSS_before)/N from /proc/PID/smaps_rollup, entry + exit process "
      "(socat: each listener with its forked per-connection processes). Kernel = slab objects in use (but "
      "TIME_WAIT sockets) + kernel stacks + page tables + TCP buffer pages gained, system-wide, per connection: "
      "every socket of the chain (2 direct, 6 bridged), and socat's processes. Set-up = time to open them all, "
      "64 in flight at most.")
print()
print("| system | connections | user space KiB/conn, idle | after 1 byte each way | kernel KiB/conn | set-up s | others' CPU % |")
print("|---|---:|---:|---:|---:|---:|---:|")
kbase = float(idle["direct"]["kernel_kib"]) if "direct" in idle else None
for s in ("direct", "socat", "wsbridge-mio", "wsbridge-smol"):
    if s not in idle:
        continue
    kv = idle[s]
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
        lines.append(f"scenario=idle_user_mem system={s} value={fv:.1f} unit=KiB/conn ratio_vs_direct=n/a per_process={kv['fresh_kib']}")
        lines.append(f"scenario=idle_user_mem_after_echo system={s} value={ev:.1f} unit=KiB/conn ratio_vs_direct=n/a per_process={kv['echo_kib']}")
    ratio = f"{k / kbase:.2f}" if kbase else "n/a"
    lines.append(f"scenario=idle_kernel_mem system={s} value={k:.1f} unit=KiB/conn ratio_vs_direct={ratio}")
print()
print("\n".join(lines))
PY
