#!/usr/bin/env bash
# Runs every fuzz target for a bounded time on the committed corpus (a copy:
# what libFuzzer adds is not written into the repository), as CI does.
# A crash, a timeout or a memory blow-up fails the run and leaves the input
# under fuzz/artifacts/<target>/.
#
#   bash fuzz/run.sh [seconds per target, default 30] [target ...]
#
# Needs the nightly toolchain (libFuzzer's sanitizer flags) and cargo-fuzz,
# installed here when missing (pinned version).
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-30}"
shift || true
if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz/run.sh: the nightly toolchain is missing (rustup toolchain install nightly)" >&2
    exit 1
fi
if ! cargo fuzz --version 2>/dev/null | grep -q "0.13.2"; then
    echo "fuzz/run.sh: installing cargo-fuzz 0.13.2"
    cargo install --quiet --locked cargo-fuzz --version 0.13.2
fi
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo +nightly fuzz list)
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cargo +nightly fuzz build >/dev/null
for t in "${targets[@]}"; do
    mkdir -p "$work/$t"
    # -timeout: one input may take at most 10 s; -rss_limit_mb: bounded memory.
    if ! cargo +nightly fuzz run "$t" "$work/$t" "corpus/$t" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$work/$t.log" 2>&1; then
        tail -n 60 "$work/$t.log" >&2
        echo "fuzz/run.sh: $t FAILED (input under fuzz/artifacts/$t/)" >&2
        exit 1
    fi
    runs=$(grep -m1 "stat::number_of_executed_units" "$work/$t.log" | awk '{print $2}')
    cov=$(grep -E "^#[0-9]+.*DONE" "$work/$t.log" | grep -o "cov: [0-9]*" | tail -1)
    echo "fuzz/run.sh: $t ok: ${runs:-?} executions in ${seconds} s, $cov"
done
