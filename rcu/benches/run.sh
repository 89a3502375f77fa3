#!/bin/sh
# Runs the rcu benchmarks and liburcu's beside them in one go, then prints the tables.
#   rcu/benches/run.sh                 every part (about 10 minutes on 2 cores)
#   rcu/benches/run.sh sync call_rcu   some parts: read sync call_rcu mix callgrind
# Builds once (so that every round measures the same code), then per part, in $ROUNDS
# rounds (default 3) that interleave us and liburcu (the machine is noisy: the report takes
# the median over the rounds):
#   read       liburcu QSBR, liburcu memb, ours: the read loops, 1 and 2 threads
#   sync       ours, liburcu QSBR, liburcu memb: synchronize latency, 0/1/2 busy readers
#   call_rcu   ours, liburcu QSBR, liburcu memb: batches of 20,000 and 1,000,000
# and once:
#   mix        our criterion update_mix bench, then liburcu's
#   callgrind  instruction counts (callgrind.sh)
# Results go to <target>/rcu-bench/ (a part's old results are removed when it runs);
# `cargo run --release -p benchreport -- rcu` prints them again (the workspace's report
# writer, benchreport/). Needs gcc, liburcu-dev, valgrind.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
out=$target/rcu-bench
mkdir -p "$out"
export CARGO_TARGET_DIR=$target
export CRITERION_HOME=$out/criterion
parts=${*:-read sync call_rcu mix callgrind}
rounds=${ROUNDS:-3}

# Build every bench executable once; run them directly afterwards.
(cd "$root" && cargo bench -p rcu --no-run --message-format=json) >"$out/build.json"
exe() {
    python3 - "$out/build.json" "$1" <<'EOF'
import json, sys
for line in open(sys.argv[1]):
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") \
            and m["target"]["name"] == sys.argv[2]:
        print(m["executable"])
EOF
}
"$here/liburcu/run.sh" build
c_qsbr=$target/liburcu/bench-qsbr
c_memb=$target/liburcu/bench-memb

for part in $parts; do
    echo "== $part" >&2
    case $part in
    read)
        : >"$out/read.jsonl"
        i=1
        while [ "$i" -le "$rounds" ]; do
            echo "-- round $i of $rounds" >&2
            "$c_qsbr" read | tee -a "$out/read.jsonl"
            "$c_memb" read | tee -a "$out/read.jsonl"
            RCU_BENCH_OUT=$out/read.jsonl "$(exe read_side)" --bench
            i=$((i + 1))
        done
        ;;
    sync)
        : >"$out/sync.jsonl"
        i=1
        while [ "$i" -le "$rounds" ]; do
            echo "-- round $i of $rounds" >&2
            RCU_BENCH_OUT=$out/sync.jsonl "$(exe synchronize)" --bench
            "$c_qsbr" sync | tee -a "$out/sync.jsonl"
            "$c_memb" sync | tee -a "$out/sync.jsonl"
            i=$((i + 1))
        done
        ;;
    call_rcu)
        : >"$out/call_rcu.jsonl"
        i=1
        while [ "$i" -le "$rounds" ]; do
            echo "-- round $i of $rounds" >&2
            RCU_BENCH_OUT=$out/call_rcu.jsonl "$(exe call_rcu)" --bench
            "$c_qsbr" call_rcu | tee -a "$out/call_rcu.jsonl"
            "$c_memb" call_rcu | tee -a "$out/call_rcu.jsonl"
            i=$((i + 1))
        done
        ;;
    mix)
        rm -rf "$CRITERION_HOME/update_mix"
        "$(exe update_mix)" --bench
        "$c_qsbr" mix >"$out/mix.jsonl"
        "$c_memb" mix >>"$out/mix.jsonl"
        ;;
    callgrind)
        READ_SIDE_EXE=$(exe read_side) "$here/callgrind.sh"
        ;;
    *)
        echo "unknown part $part (read sync call_rcu mix callgrind)" >&2
        exit 2
        ;;
    esac
done
(cd "$root" && cargo run --release -q -p benchreport -- rcu --target "$target")
