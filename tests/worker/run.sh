#!/usr/bin/env bash
# The example Cloudflare Worker (examples/worker, a POP3 server) run in workerd behind `wsbridge tcp2ws`
# (implicit TLS and STARTTLS), proven with real curl (tests/worker/*.test.mjs).
# Installs what is missing (apt curl/openssl, npm ci for the pinned workerd), builds the binary unless
# WSBRIDGE_BIN is set, runs `node --test`. Never skips: if workerd cannot start, the run fails.
set -euo pipefail
cd "$(dirname "$0")/../.."

missing=()
command -v curl >/dev/null || missing+=(curl)
command -v openssl >/dev/null || missing+=(openssl)
if [ "${#missing[@]}" -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get -o DPkg::Lock::Timeout=300 update
  $sudo apt-get -o DPkg::Lock::Timeout=300 install -y "${missing[@]}"
fi
command -v node >/dev/null || { echo "run.sh: node is required" >&2; exit 1; }
if [ ! -x tests/worker/node_modules/.bin/workerd ]; then
  (cd tests/worker && npm ci --no-audit --no-fund)
fi

if [ -z "${WSBRIDGE_BIN:-}" ]; then
  cargo build -p wsbridge-mio --bin wsbridge
  target_dir="${CARGO_TARGET_DIR:-target}"
  case "$target_dir" in /*) ;; *) target_dir="$PWD/$target_dir" ;; esac
  export WSBRIDGE_BIN="$target_dir/debug/wsbridge"
fi

echo "node $(node --version), workerd $(tests/worker/node_modules/.bin/workerd --version), $(curl --version | head -n1 | cut -d' ' -f1-2), WSBRIDGE_BIN=$WSBRIDGE_BIN"
# Explicit files, not a directory: node >= 21 takes globs rather than directories after --test.
exec node --test tests/worker/*.test.mjs
