#!/usr/bin/env bash
# CI's fuzzing stage (docs/fuzzing.md): installs the nightly toolchain and cargo-fuzz when they
# are missing, builds every target once, then runs each for a bounded time from its committed
# corpus. Fails on the first crash, printing the input (base64) and where libFuzzer saved it:
# add that file to fuzz/corpus/<target>/ as regression-<what>, fix the bug, and the stable suite
# (tests/suite/fuzz_corpus.rs) guards it from then on.
#
#   FUZZ_SECONDS  seconds per target (default 60)
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${FUZZ_SECONDS:-60}
targets=(decoder control_request payment_api_answer config_load state_load)

timed() {
    local start=$SECONDS
    "$@"
    echo "($*: $((SECONDS - start)) s)"
}

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    timed rustup toolchain install nightly --profile minimal
fi
rustup run nightly rustc --version
if ! cargo fuzz --version >/dev/null 2>&1; then
    timed cargo install --locked cargo-fuzz
fi
cargo fuzz --version

# No sanitizer: the crate has no unsafe code, Rust checks bounds and (debug assertions on, as
# cargo-fuzz builds by default) overflow, and ASan would halve the executions per second.
# The fuzz crate is its own workspace. Its lock file starts as a copy of the product's, so the
# targets link the very versions the product locks; cargo only adds libfuzzer-sys and its
# build dependencies.
cp Cargo.lock fuzz/Cargo.lock
timed cargo +nightly fuzz build -s none

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for target in "${targets[@]}"; do
    echo "--- $target: ${seconds}s from fuzz/corpus/$target"
    mkdir -p "$scratch/$target" "fuzz/artifacts/$target"
    # libFuzzer writes new inputs to the first corpus directory: a scratch one, so the committed
    # seeds stay as they are. -malloc_limit_mb makes any single huge allocation a crash
    # (bounded memory); -rss_limit_mb bounds the whole process.
    if ! cargo +nightly fuzz run -s none "$target" "$scratch/$target" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -max_len=8192 -malloc_limit_mb=256 -rss_limit_mb=1024 \
        -print_final_stats=1 >"$scratch/$target.log" 2>&1; then
        tail -n 60 "$scratch/$target.log"
        for crash in "fuzz/artifacts/$target"/*; do
            [ -f "$crash" ] || continue
            echo "input that fails ($crash), base64:"
            base64 "$crash"
        done
        echo "!!! fuzz target $target failed" >&2
        exit 1
    fi
    grep -E '^(Done|stat::number_of_executed_units|stat::peak_rss_mb)' "$scratch/$target.log" || true
    grep -E '^#[0-9]+.*(DONE|cov:)' "$scratch/$target.log" | tail -n 1
done
echo "every fuzz target ran ${seconds}s without a failure"
