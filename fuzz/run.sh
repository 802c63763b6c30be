#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 60). Exits non-zero if any target crashed; the
# crashing input is in fuzz/artifacts/<target>/ (add it to fuzz/corpus/<target>/ once fixed, so that
# `cargo test` replays it).
#
# The committed corpus is only read: new inputs go to fuzz/target/corpus/<target>/. With MERGE=1, after
# a run without crash, each committed corpus is rebuilt as its hand-written seed-* files plus the
# fewest inputs that reach every further edge (libFuzzer's merge with -use_counters=0: hit counts are
# ignored, which keeps it to ~200 files), from the old corpus and the new inputs.
#
#   fuzz/run.sh 180            # fuzz each target for 3 minutes
#   MERGE=1 fuzz/run.sh 180    # and refresh fuzz/corpus/
set -euo pipefail

seconds="${1:-60}"
case "$seconds" in
'' | *[!0-9]*)
    echo "usage: $0 SECONDS" >&2
    exit 2
    ;;
esac

cd "$(dirname "$0")"
if cargo +nightly --version >/dev/null 2>&1; then
    fuzz=(cargo +nightly fuzz)
else
    # cargo-fuzz needs nightly-only flags (sanitizers); a stable toolchain can be told to allow them.
    export RUSTC_BOOTSTRAP=1
    fuzz=(cargo fuzz)
fi

targets=$("${fuzz[@]}" list)
"${fuzz[@]}" build

failed=()
for target in $targets; do
    work="target/corpus/$target"
    mkdir -p "$work" "corpus/$target"
    echo "=== $target: ${seconds}s"
    if ! "${fuzz[@]}" run "$target" "$work" "corpus/$target" -- \
        -max_total_time="$seconds" -print_final_stats=1; then
        failed+=("$target")
    fi
done

if ((${#failed[@]})); then
    echo "crashed: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi

if [[ "${MERGE:-0}" == 1 ]]; then
    for target in $targets; do
        all="target/merge/$target"
        rm -rf "$all"
        mkdir -p "$all"
        for dir in "corpus/$target" "target/corpus/$target"; do
            find "$dir" -type f ! -name 'seed-*' -exec cp -t "$all" {} +
        done
        find "corpus/$target" -type f ! -name 'seed-*' -delete
        # The first directory keeps its files (the seeds) and receives what adds coverage.
        if ! "${fuzz[@]}" run "$target" "corpus/$target" "$all" -- -merge=1 -use_counters=0 \
            >"$all.log" 2>&1; then
            cat "$all.log" >&2
            echo "merge of $target failed; its inputs are in fuzz/$all" >&2
            exit 1
        fi
        grep 'MERGE-OUTER: .* new files' "$all.log" || true
        echo "$target corpus: $(find "corpus/$target" -type f | wc -l) files," \
            "$(du -sk --apparent-size "corpus/$target" | cut -f1) KiB"
    done
fi
echo "no crash in: $(echo $targets)"
