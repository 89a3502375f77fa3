#!/usr/bin/env bash
# Coverage-guided fuzzing on stable Rust: libFuzzer (the libfuzzer-sys crate builds it from
# source with the system C++ compiler) and rustc's stable SanitizerCoverage pass.
#
#   scripts/fuzz.sh [TARGET|all] [SECONDS]     (defaults: all, 60 seconds per target)
#
# Targets: fuzz/fuzz_targets/*.rs. Each run starts from the committed seeds (fuzz/corpus/T/,
# read only) and a working corpus (fuzz/target/corpus/T/, kept between runs, git-ignored)
# where libFuzzer stores every input that reached new coverage. A crash, panic, timeout
# (FUZZ_TIMEOUT s per input, 10) or memory blow-up (FUZZ_RSS_MB, 2048) is kept under
# fuzz/artifacts/T/ and its path is printed; the script then exits 1 after the other targets.
# Turn such an input into a regression test in the crate's own tests.
#
# Extra libFuzzer flags: FUZZ_ARGS="-jobs=2 ...". Reproduce one input:
#   fuzz/target/x86_64-unknown-linux-gnu/release/T fuzz/artifacts/T/crash-...
set -euo pipefail
cd "$(dirname "$0")/.."

target_arg=${1:-all}
secs=${2:-60}
triple=x86_64-unknown-linux-gnu
all=(memory_access loader buses lookup_tables control virtio_blk_request)

if [ "$target_arg" = all ]; then
    targets=("${all[@]}")
else
    [ -f "fuzz/fuzz_targets/$target_arg.rs" ] || {
        echo "fuzz.sh: no target '$target_arg'; targets: ${all[*]}" >&2
        exit 2
    }
    targets=("$target_arg")
fi
case $secs in '' | *[!0-9]*) echo "fuzz.sh: SECONDS must be a whole number" >&2; exit 2 ;; esac

# Instrumentation for libFuzzer, as cargo-fuzz does it, but with no nightly flag: edge
# coverage as inline 8-bit counters with a PC table, and comparison tracing (so that the
# fuzzer learns magic numbers such as "HdrS" and command names). --target keeps the flags off
# build scripts and proc macros.
export RUSTFLAGS="${RUSTFLAGS:-} -Cpasses=sancov-module \
 -Cllvm-args=-sanitizer-coverage-level=4 \
 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
 -Cllvm-args=-sanitizer-coverage-pc-table \
 -Cllvm-args=-sanitizer-coverage-trace-compares"
export CARGO_TARGET_DIR=$PWD/fuzz/target
bins=()
for t in "${targets[@]}"; do bins+=(--bin "$t"); done
echo "fuzz.sh: building ${targets[*]}"
cargo build --release --locked --manifest-path fuzz/Cargo.toml --target "$triple" "${bins[@]}"

failed=()
for t in "${targets[@]}"; do
    work=fuzz/target/corpus/$t
    art=fuzz/artifacts/$t
    mkdir -p "$work" "$art"
    log=fuzz/target/$t.log
    before=$(find "$work" -type f | wc -l)
    echo "fuzz.sh: $t for ${secs}s (seeds fuzz/corpus/$t, corpus $work, log $log)"
    set +e
    "fuzz/target/$triple/release/$t" "$work" "fuzz/corpus/$t" \
        -max_total_time="$secs" -timeout="${FUZZ_TIMEOUT:-10}" \
        -rss_limit_mb="${FUZZ_RSS_MB:-2048}" -artifact_prefix="$art/" \
        -print_final_stats=1 ${FUZZ_ARGS:-} >"$log" 2>&1
    rc=$?
    set -e
    after=$(find "$work" -type f | wc -l)
    grep -E '^INFO: Loaded [0-9]+ modules|^#[0-9]+ +DONE|^stat::number_of_executed_units' "$log" || true
    # Guided or not: without coverage counters libFuzzer is a blind random tester.
    if ! grep -qE 'INFO: Loaded [0-9]+ modules +\([1-9][0-9]* inline 8-bit counters' "$log"; then
        echo "fuzz.sh: $t has no coverage instrumentation (see $log)" >&2
        failed+=("$t")
        continue
    fi
    echo "fuzz.sh: $t: corpus $before -> $after inputs"
    if [ $rc -ne 0 ]; then
        tail -n 60 "$log"
        for f in $(grep -oE "Test unit written to [^ ]+" "$log" | awk '{print $5}'); do
            echo "fuzz.sh: CRASH in $t: input kept at $PWD/$f (reproduce: fuzz/target/$triple/release/$t $f)"
        done
        failed+=("$t")
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz.sh: FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz.sh: ${#targets[@]} target(s) ran ${secs}s each without a crash"
