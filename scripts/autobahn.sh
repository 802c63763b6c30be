#!/usr/bin/env bash
# Autobahn TestSuite conformance runs for wsbridge, driven by `kosoku`
# (https://pypi.org/project/kosoku/ — a native re-implementation of Autobahn's
# wstest runner that executes the original Autobahn case files).
#
# Usage:
#   scripts/autobahn.sh server CMD...   start CMD (an echo server that must listen
#                                       on 127.0.0.1:9001), run kosoku in
#                                       fuzzingclient mode against it, stop it.
#   scripts/autobahn.sh client CMD...   start kosoku in fuzzingserver mode on
#                                       127.0.0.1:9002, then run CMD (a client
#                                       speaking the Autobahn client protocol:
#                                       /getCaseCount, /runCase?case=N&agent=A,
#                                       /updateReports?agent=A). CMD must carry
#                                       the URL (ws://127.0.0.1:9002) itself.
#
# Cases 1.*–10.* run by default; 12.*/13.* (permessage-deflate) are excluded.
# Exit status is non-zero if any case did not pass (behavior FAILED/ERROR/
# UNIMPLEMENTED, or close verdict FAILED/UNCLEAN/WRONG CODE/FAILED BY CLIENT),
# if any selected case is missing from the results, if no case ran at all, or
# if the peer under test crashed.
#
# Environment knobs (all optional):
#   AUTOBAHN_SUMMARY      Markdown summary path   (default reports/autobahn-<mode>.md)
#   AUTOBAHN_OUTDIR       kosoku report directory (default reports/autobahn-<mode>/)
#   AUTOBAHN_INCLUDE      space-separated case globs to run (default: all)
#   AUTOBAHN_EXCLUDE      space-separated case globs to skip (default "12.* 13.*")
#   AUTOBAHN_PARALLELISM  concurrent cases, server mode only (default 1)
#   AUTOBAHN_PATH         path and query of the server URL, server mode only
#                         (default /; ws2http needs /connect?f=…&d=…)
#   AUTOBAHN_TIMEOUT      seconds bound for the kosoku run / client CMD (default 900)
#   AUTOBAHN_STARTUP_TIMEOUT  seconds to wait for a port to accept (default 60)
#   AUTOBAHN_VENV         venv used if kosoku must be installed and plain pip
#                         install is refused (default target/autobahn-venv)
#   KOSOKU_VERSION        version pin used when installing kosoku (default 0.1.0)
set -euo pipefail

usage() {
  sed -n '2,35p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

[[ $# -ge 2 ]] || usage
MODE=$1
shift
case "$MODE" in
  server | client) ;;
  *) usage ;;
esac

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HOST=127.0.0.1
SERVER_PORT=9001 # our echo server (kosoku fuzzingclient target)
FUZZ_PORT=9002   # kosoku fuzzingserver (our client connects here)
TIMEOUT=${AUTOBAHN_TIMEOUT:-900}
STARTUP_TIMEOUT=${AUTOBAHN_STARTUP_TIMEOUT:-60}
PARALLELISM=${AUTOBAHN_PARALLELISM:-1}
URL_PATH=${AUTOBAHN_PATH:-/}
INCLUDE=${AUTOBAHN_INCLUDE:-}
EXCLUDE=${AUTOBAHN_EXCLUDE-12.* 13.*}
KOSOKU_VERSION=${KOSOKU_VERSION:-0.1.0}

abspath() { case "$1" in /*) printf '%s\n' "$1" ;; *) printf '%s/%s\n' "$PWD" "$1" ;; esac; }
OUTDIR=$(abspath "${AUTOBAHN_OUTDIR:-$ROOT/reports/autobahn-$MODE}")
SUMMARY=$(abspath "${AUTOBAHN_SUMMARY:-$ROOT/reports/autobahn-$MODE.md}")
LOGDIR=$ROOT/reports/logs
mkdir -p "$ROOT/reports" "$LOGDIR" "$(dirname "$SUMMARY")"

log() { printf '[autobahn] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------- processes
# Every child runs in its own session (setsid) so that cleanup can kill the
# whole process tree (e.g. `cargo run` plus the binary it spawned).
declare -a CHILDREN=()
if command -v setsid >/dev/null 2>&1; then SETSID=(setsid); else SETSID=(); fi

spawn_cmd() { # spawn_cmd LOGFILE CMD...
  local logfile=$1
  shift
  "${SETSID[@]}" "$@" >"$logfile" 2>&1 &
  SPAWNED_PID=$!
  CHILDREN+=("$SPAWNED_PID")
}

alive() { kill -0 "$1" 2>/dev/null; }

stop_tree() { # stop_tree PID: TERM the process group, then KILL after 5 s
  local pid=$1 i
  alive "$pid" || return 0
  if [[ ${#SETSID[@]} -gt 0 ]]; then kill -TERM -- "-$pid" 2>/dev/null || true; fi
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    alive "$pid" || break
    sleep 0.1
  done
  if alive "$pid"; then
    if [[ ${#SETSID[@]} -gt 0 ]]; then kill -KILL -- "-$pid" 2>/dev/null || true; fi
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local pid
  for pid in "${CHILDREN[@]+"${CHILDREN[@]}"}"; do stop_tree "$pid"; done
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

wait_port() { # wait_port PORT PID WHAT
  local port=$1 pid=$2 what=$3 deadline=$((SECONDS + STARTUP_TIMEOUT))
  until port_open "$port"; do
    alive "$pid" || die "$what exited before listening on $HOST:$port (see its log)"
    ((SECONDS < deadline)) || die "$what did not listen on $HOST:$port within ${STARTUP_TIMEOUT}s"
    sleep 0.2
  done
}

# ------------------------------------------------------------------- kosoku
# KOSOKU_PY: a Python interpreter that can import kosoku. The CLI is invoked
# through it (`kosoku._cli:main` is the console-script entry point) so that
# the summary step can use the same installation for the case index.
find_kosoku_py() {
  local py
  for py in ${KOSOKU_PYTHON:-} "$AUTOBAHN_VENV_DIR/bin/python" python3 python; do
    if command -v "$py" >/dev/null 2>&1 && "$py" -c 'import kosoku' 2>/dev/null; then
      command -v "$py"
      return 0
    fi
  done
  # A `kosoku` console script on PATH (e.g. pyenv shim): use its interpreter.
  if command -v kosoku >/dev/null 2>&1; then
    py=$(head -n1 "$(command -v kosoku)" | sed -n 's/^#! *//p' | awk '{print $1}')
    if [[ -n $py && $py != */bash && $py != */sh ]] && "$py" -c 'import kosoku' 2>/dev/null; then
      echo "$py"
      return 0
    fi
  fi
  return 1
}

AUTOBAHN_VENV_DIR=$(abspath "${AUTOBAHN_VENV:-$ROOT/target/autobahn-venv}")
if ! KOSOKU_PY=$(find_kosoku_py); then
  log "kosoku not found; installing kosoku==$KOSOKU_VERSION from PyPI"
  command -v python3 >/dev/null 2>&1 || die "python3 is required"
  if ! python3 -m pip install --quiet "kosoku==$KOSOKU_VERSION" >"$LOGDIR/pip-install.log" 2>&1 ||
    ! KOSOKU_PY=$(find_kosoku_py); then
    log "plain pip install refused (see reports/logs/pip-install.log); using a venv at $AUTOBAHN_VENV_DIR"
    python3 -m venv "$AUTOBAHN_VENV_DIR"
    "$AUTOBAHN_VENV_DIR/bin/python" -m pip install --quiet "kosoku==$KOSOKU_VERSION"
    KOSOKU_PY=$(find_kosoku_py) || die "could not install kosoku"
  fi
fi
KOSOKU=("$KOSOKU_PY" -c 'import sys; from kosoku._cli import main; sys.argv[0] = "kosoku"; sys.exit(main())')

SELECT=()
read -r -a INCLUDE_GLOBS <<<"$INCLUDE" # read -a: split on spaces, no pathname expansion
read -r -a EXCLUDE_GLOBS <<<"$EXCLUDE"
for g in "${INCLUDE_GLOBS[@]+"${INCLUDE_GLOBS[@]}"}"; do SELECT+=(-i "$g"); done
for g in "${EXCLUDE_GLOBS[@]+"${EXCLUDE_GLOBS[@]}"}"; do SELECT+=(-x "$g"); done

# ---------------------------------------------------------------------- run
rm -rf "$OUTDIR" # kosoku writes nothing for an empty run; never read stale files
NOTES=()          # extra failure reasons, passed to the summary
KOSOKU_RC=0
START=$SECONDS

if [[ $MODE == server ]]; then
  if port_open "$SERVER_PORT"; then die "$HOST:$SERVER_PORT is already in use; refusing to test a stale server"; fi
  log "starting server under test: $*"
  spawn_cmd "$LOGDIR/autobahn-server-cmd.log" "$@"
  SERVER_PID=$SPAWNED_PID
  wait_port "$SERVER_PORT" "$SERVER_PID" "server command"
  log "server is up; running kosoku fuzzingclient (timeout ${TIMEOUT}s, parallelism $PARALLELISM)"
  KOSOKU_ARGS=(-m fuzzingclient "ws://$HOST:$SERVER_PORT$URL_PATH" -p "$PARALLELISM" "${SELECT[@]}" -o "$OUTDIR")
  log "kosoku ${KOSOKU_ARGS[*]}"
  spawn_cmd "$LOGDIR/autobahn-server-kosoku.log" timeout -k 10 "$TIMEOUT" "${KOSOKU[@]}" "${KOSOKU_ARGS[@]}"
  KOSOKU_PID=$SPAWNED_PID
  wait "$KOSOKU_PID" || KOSOKU_RC=$?
  if ! alive "$SERVER_PID"; then
    SERVER_RC=0
    wait "$SERVER_PID" || SERVER_RC=$?
    NOTES+=("server under test exited during the run (status $SERVER_RC); see reports/logs/autobahn-server-cmd.log")
  fi
  stop_tree "$SERVER_PID"
  KOSOKU_LOG=$LOGDIR/autobahn-server-kosoku.log
else
  if port_open "$FUZZ_PORT"; then die "$HOST:$FUZZ_PORT is already in use"; fi
  KOSOKU_ARGS=(-m fuzzingserver "$HOST:$FUZZ_PORT" "${SELECT[@]}" -o "$OUTDIR")
  log "kosoku ${KOSOKU_ARGS[*]}"
  spawn_cmd "$LOGDIR/autobahn-client-kosoku.log" timeout -k 10 "$TIMEOUT" "${KOSOKU[@]}" "${KOSOKU_ARGS[@]}"
  KOSOKU_PID=$SPAWNED_PID
  wait_port "$FUZZ_PORT" "$KOSOKU_PID" "kosoku fuzzingserver"
  log "fuzzingserver is up; running client under test: $*"
  # The client's output goes to the terminal (and a log), bounded in time.
  CLIENT_RC=0
  "${SETSID[@]}" timeout -k 10 "$TIMEOUT" "$@" > >(tee "$LOGDIR/autobahn-client-cmd.log") 2>&1 &
  CLIENT_PID=$!
  CHILDREN+=("$CLIENT_PID")
  wait "$CLIENT_PID" || CLIENT_RC=$?
  if ((CLIENT_RC != 0)); then
    WHY=""
    if ((CLIENT_RC == 124)); then WHY=" (timed out after ${TIMEOUT}s)"; fi
    NOTES+=("client under test exited with status $CLIENT_RC$WHY")
  fi
  # kosoku finishes (and writes its reports) once the client hits
  # /updateReports; give it a grace period, then give up.
  GRACE=$(( CLIENT_RC == 0 ? 600 : 50 )) # tenths of a second
  for ((i = 0; i < GRACE; i++)); do
    alive "$KOSOKU_PID" || break
    sleep 0.1
  done
  if alive "$KOSOKU_PID"; then
    NOTES+=("kosoku fuzzingserver did not finish within $((GRACE / 10))s of the client exiting (did the client call /updateReports?); no results were written")
    stop_tree "$KOSOKU_PID"
    KOSOKU_RC=124
  else
    wait "$KOSOKU_PID" || KOSOKU_RC=$?
  fi
  KOSOKU_LOG=$LOGDIR/autobahn-client-kosoku.log
fi
WALL=$((SECONDS - START))
if ((KOSOKU_RC == 124 || KOSOKU_RC == 137)); then NOTES+=("kosoku timed out or was stopped (status $KOSOKU_RC)"); fi

# ------------------------------------------------------------------ summary
log "kosoku exit status $KOSOKU_RC, wall time ${WALL}s; summarizing $OUTDIR"
printf '%s\n' "${NOTES[@]+"${NOTES[@]}"}" >"$LOGDIR/autobahn-$MODE-notes.txt"
export AB_MODE=$MODE AB_OUTDIR=$OUTDIR AB_SUMMARY=$SUMMARY AB_KOSOKU_RC=$KOSOKU_RC AB_WALL=$WALL \
  AB_INCLUDE=$INCLUDE AB_EXCLUDE=$EXCLUDE AB_NOTES=$LOGDIR/autobahn-$MODE-notes.txt \
  AB_KOSOKU_LOG=$KOSOKU_LOG AB_CMD="kosoku ${KOSOKU_ARGS[*]}" AB_PEER="$*"
"$KOSOKU_PY" - <<'PYEOF'
import collections, fnmatch, json, os, sys

mode, outdir, summary_path = os.environ["AB_MODE"], os.environ["AB_OUTDIR"], os.environ["AB_SUMMARY"]
kosoku_rc, wall = int(os.environ["AB_KOSOKU_RC"]), int(os.environ["AB_WALL"])
include, exclude = os.environ["AB_INCLUDE"].split(), os.environ["AB_EXCLUDE"].split()
notes = [n for n in open(os.environ["AB_NOTES"]).read().splitlines() if n.strip()]

PASS_BEHAVIOR = {"OK", "NON-STRICT", "INFORMATIONAL"}
PASS_CLOSE = {"OK", "INFORMATIONAL"}
ORDER = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED", "ERROR", "MISSING"]
CLOSE_ORDER = ["OK", "INFORMATIONAL", "WRONG CODE", "UNCLEAN", "FAILED BY CLIENT", "FAILED"]

def key(case_id):
    return [int(p) if p.isdigit() else 0 for p in case_id.split(".")]

# The cases kosoku should have run, for detecting partial runs (kosoku itself
# reports success for a client that skips cases, or runs none at all).
expected = None
CASES = {}
try:
    from kosoku.cases import CASES
    expected = [c for c in CASES
                if (not include or any(fnmatch.fnmatchcase(c, g) for g in include))
                and not any(fnmatch.fnmatchcase(c, g) for g in exclude)]
except Exception as exc:  # pragma: no cover - only if kosoku's layout changes
    notes.append(f"warning: could not load kosoku's case index ({exc}); missing-case check skipped")

index_path = os.path.join(outdir, "index.json")
index = json.load(open(index_path)) if os.path.exists(index_path) else {}
if not index:
    notes.append("no case results were produced (zero cases ran)")
    index = {"(none)": {}}

if mode == "server" and len(index) > 1:
    # kosoku names the agent after the server's `Server` header, or the address
    # when a case got no handshake response (e.g. the server died): one peer.
    index = {" + ".join(sorted(index)): {c: e for cases in index.values() for c, e in cases.items()}}

lines = []          # Markdown
failed_total = 0
ran_total = 0
for agent, cases in sorted(index.items()):
    rows = {}
    for cid, entry in cases.items():
        detail = {}
        rf = os.path.join(outdir, entry.get("reportfile", ""))
        if entry.get("reportfile") and os.path.exists(rf):
            try:
                detail = json.load(open(rf))
            except ValueError:
                pass
        desc = detail.get("description") or getattr(CASES.get(cid), "DESCRIPTION", "") or ""
        rows[cid] = {**entry, "description": " ".join(desc.split()),
                     "result": detail.get("result", ""), "resultClose": detail.get("resultClose", "")}
    ran_total += len(rows)
    missing = sorted(set(expected or []) - set(rows), key=key) if rows or expected else []
    beh = collections.Counter(r["behavior"] for r in rows.values())
    beh["MISSING"] += len(missing)
    close = collections.Counter(r["behaviorClose"] for r in rows.values())
    failing = sorted((c for c, r in rows.items()
                      if r["behavior"] not in PASS_BEHAVIOR or r["behaviorClose"] not in PASS_CLOSE), key=key)
    soft = sorted((c for c, r in rows.items() if c not in failing
                   and (r["behavior"] != "OK" or r["behaviorClose"] != "OK")), key=key)
    failed_total += len(failing) + len(missing)
    groups = collections.defaultdict(int)
    for c, r in rows.items():
        groups[c.split(".")[0]] += r.get("duration") or 0

    # ---- terminal
    print(f"\n=== Autobahn {mode} mode — agent {agent!r}: {len(rows)} cases ran"
          + (f" of {len(expected)} selected" if expected is not None else "") + " ===")
    print(f"{'behavior':<16}{'count':>6}")
    for b in ORDER + sorted(set(beh) - set(ORDER)):
        if beh.get(b):
            print(f"{b:<16}{beh[b]:>6}")
    print(f"{'close verdict':<16}{'count':>6}")
    for b in CLOSE_ORDER + sorted(set(close) - set(CLOSE_ORDER)):
        if close.get(b):
            print(f"{b:<16}{close[b]:>6}")
    for c in failing:
        r = rows[c]
        print(f"FAILED {c} [{r['behavior']} / close {r['behaviorClose']}, remote code {r.get('remoteCloseCode')}]: "
              f"{r['description']} -- {r['result']} / {r['resultClose']}")
    if missing:
        print(f"MISSING ({len(missing)}): {' '.join(missing[:40])}{' ...' if len(missing) > 40 else ''}")

    # ---- markdown
    lines += [f"## Agent `{agent}` — {len(rows)} cases ran"
              + (f" of {len(expected)} selected" if expected is not None else ""), "",
              "| behavior | count |", "|---|---:|"]
    lines += [f"| {b} | {beh[b]} |" for b in ORDER + sorted(set(beh) - set(ORDER)) if beh.get(b)]
    lines += ["", "| close verdict | count |", "|---|---:|"]
    lines += [f"| {b} | {close[b]} |" for b in CLOSE_ORDER + sorted(set(close) - set(CLOSE_ORDER)) if close.get(b)]
    lines += ["", "Case time by group (sum of per-case durations, ms): "
              + ", ".join(f"{g}.*: {groups[g]}" for g in sorted(groups, key=int)), ""]
    if failing:
        lines += [f"### Failing cases ({len(failing)})", "",
                  "| case | behavior | close | remote code | description | outcome |", "|---|---|---|---|---|---|"]
        for c in failing:
            r = rows[c]
            esc = lambda s: str(s).replace("|", "\\|").replace("\n", " ")
            lines.append(f"| {c} | {r['behavior']} | {r['behaviorClose']} | {r.get('remoteCloseCode')} | "
                         f"{esc(r['description'])} | {esc(r['result'])} / {esc(r['resultClose'])} |")
        lines.append("")
    if missing:
        lines += [f"### Missing cases ({len(missing)})", "", " ".join(missing), ""]
    if soft:
        lines += [f"### Passing with NON-STRICT / INFORMATIONAL verdicts ({len(soft)})", "",
                  ", ".join(f"{c} ({rows[c]['behavior']}/{rows[c]['behaviorClose']}, {rows[c].get('remoteCloseCode')})"
                            for c in soft), ""]

if kosoku_rc not in (0, 1, 124, 137):  # 124/137 (timeout) are already noted
    notes.append(f"kosoku exited with status {kosoku_rc}")
elif kosoku_rc == 1 and failed_total == 0:
    notes.append("kosoku reported failures that this summary did not detect")
ok = failed_total == 0 and ran_total > 0 and not notes
verdict = "PASS" if ok else "FAIL"

head = [f"# Autobahn conformance ({mode} mode): {verdict}", "",
        f"- peer under test: `{os.environ['AB_PEER']}`",
        f"- command: `{os.environ['AB_CMD']}`",
        f"- cases ran: {ran_total}, not passing: {failed_total}, wall time: {wall}s",
        f"- reports: `{outdir}/index.html` (per-case JSON next to it), kosoku log: `{os.environ['AB_KOSOKU_LOG']}`", ""]
head += [f"- **{n}**" for n in notes] + ([""] if notes else [])
with open(summary_path, "w") as f:
    f.write("\n".join(head + lines) + "\n")

for n in notes:
    print(f"NOTE: {n}")
print(f"\nAutobahn {mode}: {verdict} — {ran_total} cases ran, {failed_total} not passing, {wall}s wall; summary: {summary_path}")
sys.exit(0 if ok else 1)
PYEOF
