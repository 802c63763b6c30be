#!/usr/bin/env bash
# Tests of @wsbridge/client (clients/js) against a real `wsbridge ws2tcp` and TCP/TLS echo targets on 127.0.0.1.
# Installs the test-only dependency (npm ci: the `ws` package, Node 20 has no global WebSocket), builds the
# binary unless WSBRIDGE_BIN is set, runs `node --test`. Needs node >= 20 and the openssl CLI (test certificates).
set -euo pipefail
cd "$(dirname "$0")/../.."

command -v node >/dev/null || { echo "run.sh: node is required" >&2; exit 1; }
command -v openssl >/dev/null || { echo "run.sh: the openssl CLI is required" >&2; exit 1; }
(cd clients/js && npm ci --no-audit --no-fund)

if [ -z "${WSBRIDGE_BIN:-}" ]; then
  cargo build -p wsbridge-mio --bin wsbridge
  target_dir="${CARGO_TARGET_DIR:-target}"
  case "$target_dir" in /*) ;; *) target_dir="$PWD/$target_dir" ;; esac
  export WSBRIDGE_BIN="$target_dir/debug/wsbridge"
fi

echo "node $(node --version), $(openssl version), WSBRIDGE_BIN=$WSBRIDGE_BIN"
# Explicit files, not a directory: node >= 21 takes globs rather than directories after --test.
exec node --test clients/js/test/*.test.mjs
