#!/bin/sh
# Builds and runs the liburcu reference benchmark (QSBR and memb flavours) and writes
# <target>/liburcu/results.json, which report.py merges into its tables.
#   rcu/benches/liburcu/run.sh [all|read|sync|call_rcu|mix]
# Needs gcc and liburcu-dev (Debian: apt-get install -y liburcu-dev).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
target=${CARGO_TARGET_DIR:-$here/../../../target}
out=$target/liburcu
mkdir -p "$out"
what=${1:-all}
for flavor in qsbr memb; do
    lib=urcu-$flavor
    [ "$flavor" = memb ] && lib=urcu
    upper=$(echo "$flavor" | tr a-z A-Z)
    gcc -O2 -Wall -Wextra -DFLAVOR_"$upper" -o "$out/bench-$flavor" "$here/bench.c" \
        -l"$lib" -lpthread
done
{
    "$out/bench-qsbr" "$what"
    "$out/bench-memb" "$what"
} > "$out/results.jsonl"
python3 -c 'import json,sys; rows=[json.loads(l) for l in open(sys.argv[1]) if l.strip()]; json.dump(rows, open(sys.argv[2], "w"), indent=1); print(f"{len(rows)} liburcu results -> {sys.argv[2]}")' \
    "$out/results.jsonl" "$out/results.json"
