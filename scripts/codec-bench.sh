#!/usr/bin/env bash
# Decode/encode throughput of 64 KiB masked frames, wsbridge-core vs tungstenite, measured in one run.
# Usage: scripts/codec-bench.sh [--quick]
# Prints a Markdown table and machine-readable lines: scenario=… system=… value=… unit=MiB/s ratio_vs_tungstenite=…
set -euo pipefail
cd "$(dirname "$0")/.."

args=()
if [[ "${1:-}" == "--quick" ]]; then
  args=(--warm-up-time 1 --measurement-time 2 --sample-size 10)
fi
cargo bench -p wsbridge-core --bench codec -- "${args[@]}" >&2

python3 - <<'PY'
import json, os
root = "target/criterion"
rows = []
for group in ("decode_64k_masked", "encode_64k_masked"):
    mibs = {}
    for system in ("wsbridge", "tungstenite"):
        path = os.path.join(root, group, system, "65536", "new")
        with open(os.path.join(path, "estimates.json")) as f:
            est = json.load(f)
        with open(os.path.join(path, "benchmark.json")) as f:
            bench = json.load(f)
        nbytes = bench["throughput"]["Bytes"]
        ns = est["median"]["point_estimate"]
        mibs[system] = nbytes / (ns / 1e9) / (1 << 20)
    rows.append((group, mibs))
print("| operation | wsbridge-core MiB/s | tungstenite MiB/s | ratio |")
print("|---|---:|---:|---:|")
for group, m in rows:
    print(f"| {group} | {m['wsbridge']:.0f} | {m['tungstenite']:.0f} | {m['wsbridge'] / m['tungstenite']:.2f}x |")
for group, m in rows:
    for system, v in m.items():
        print(f"scenario={group} system={system} value={v:.0f} unit=MiB/s ratio_vs_tungstenite={v / m['tungstenite']:.2f}")
PY
