#!/usr/bin/env bash
# Real-browser tests of `wsbridge ws2tcp`: headless Debian Chromium driven by playwright-core (tests/browser/*.test.mjs).
# Installs what is missing (apt chromium, npm ci), builds the binary unless WSBRIDGE_BIN is set, runs `node --test`.
# Never skips: if Chromium cannot start, the run fails.
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ ! -x /usr/bin/chromium ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get -o DPkg::Lock::Timeout=300 update
  $sudo apt-get -o DPkg::Lock::Timeout=300 install -y chromium
fi
command -v node >/dev/null || { echo "run.sh: node is required" >&2; exit 1; }
if [ ! -d tests/browser/node_modules/playwright-core ]; then
  (cd tests/browser && npm ci --no-audit --no-fund)
fi

if [ -z "${WSBRIDGE_BIN:-}" ]; then
  cargo build -p wsbridge-mio --bin wsbridge
  target_dir="${CARGO_TARGET_DIR:-target}"
  case "$target_dir" in /*) ;; *) target_dir="$PWD/$target_dir" ;; esac
  export WSBRIDGE_BIN="$target_dir/debug/wsbridge"
fi

echo "node $(node --version), $(/usr/bin/chromium --version 2>/dev/null | head -n1), WSBRIDGE_BIN=$WSBRIDGE_BIN"
# Explicit files, not a directory: node >= 21 takes globs rather than directories after --test.
exec node --test tests/browser/*.test.mjs
