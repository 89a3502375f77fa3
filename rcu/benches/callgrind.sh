#!/bin/sh
# Instructions per iteration of the read-side loops, ours (benches/read_side.rs, `loops`) and
# liburcu's (liburcu/bench.c, `loop_*`), which have the same shape: valgrind's callgrind runs
# each row once with N and once with 2N iterations, and (Ir(2N) - Ir(N)) / N is the count per
# iteration (start-up, registration and warm-up cancel out). Deterministic, unlike the time.
#   rcu/benches/callgrind.sh              build, measure every row, print a table
# Writes <target>/rcu-bench/callgrind.jsonl (for `benchreport rcu`) and the loops' disassembly,
# <target>/rcu-bench/loops.s. Needs valgrind, gcc, liburcu-dev. N: $CALLGRIND_ITERS (1e6).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
out=$target/rcu-bench
mkdir -p "$out"
n=${CALLGRIND_ITERS:-1000000}

# The read_side bench executable (READ_SIDE_EXE when run.sh already built it).
exe=${READ_SIDE_EXE:-}
if [ -z "$exe" ]; then
    exe=$(cd "$root" && cargo bench -p rcu --bench read_side --no-run --message-format=json \
        2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and \
            m["target"]["name"] == "read_side":
        print(m["executable"])')
fi
[ -x "$exe" ] || { echo "no read_side bench executable" >&2; exit 1; }
CARGO_TARGET_DIR=$target "$here/liburcu/run.sh" build

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Total instructions of one run: callgrind's "summary:" line.
count() {
    valgrind --tool=callgrind --callgrind-out-file="$tmp/cg.out" "$@" >/dev/null 2>"$tmp/err" \
        || { cat "$tmp/err" >&2; exit 1; }
    sed -n 's/^summary: //p' "$tmp/cg.out"
}

rows=$out/callgrind.jsonl
: >"$rows"
measure() { # source id command...
    src=$1
    id=$2
    shift 2
    a=$(count "$@" "$id" "$n")
    b=$(count "$@" "$id" $((2 * n)))
    per=$(python3 -c "print(f'{($b - $a) / $n:.3f}')")
    echo "{\"group\": \"callgrind\", \"id\": \"$id\", \"source\": \"$src\", \"instr_per_iter\": $per, \"iters\": $n}" >>"$rows"
    printf '%-36s %8s instructions/iteration\n' "$id" "$per"
}
for id in $("$exe" --callgrind list); do
    measure rust "$id" "$exe" --callgrind
done
for flavor in qsbr memb; do
    bin=$target/liburcu/bench-$flavor
    for id in $("$bin" callgrind list); do
        measure liburcu "$id" "$bin" callgrind
    done
done

# The loops' machine code, for reading what an iteration executes.
{
    objdump -d --no-show-raw-insn -C "$exe" |
        awk '/^[0-9a-f]+ <read_side::loops::/ { p = 1 } /^$/ { if (p) print ""; p = 0 } p'
    for flavor in qsbr memb; do
        echo "== liburcu $flavor"
        objdump -d --no-show-raw-insn "$target/liburcu/bench-$flavor" |
            awk '/^[0-9a-f]+ <loop_/ { p = 1 } /^$/ { if (p) print ""; p = 0 } p'
    done
} >"$out/loops.s"
echo "-> $rows, $out/loops.s"
