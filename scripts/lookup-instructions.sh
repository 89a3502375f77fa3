#!/bin/sh
# Instructions per gpa->hva lookup (callgrind) of the RCU design against its floor: see
# memory/examples/lookup_instructions.rs. Usage: scripts/lookup-instructions.sh [N]
set -eu
cd "$(dirname "$0")/.."
n=${1:-1000000}
cargo build --release -q -p memory --example lookup_instructions
bin=${CARGO_TARGET_DIR:-target}/release/examples/lookup_instructions
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
irs() { # total instructions of one run
    valgrind --tool=callgrind --callgrind-out-file="$tmp/out" "$bin" "$@" >/dev/null 2>&1
    callgrind_annotate "$tmp/out" | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1; exit }'
}
echo "| pattern | variant | instructions per lookup |"
echo "|---|---|---:|"
for pattern in mru uniform; do
    for variant in floor rcu checked; do
        a=$(irs "$variant" "$pattern" "$n")
        b=$(irs "$variant" "$pattern" $((3 * n)))
        echo "| $pattern | $variant | $(awk -v a="$a" -v b="$b" -v n="$n" 'BEGIN { printf "%.2f", (b - a) / (2 * n) }') |"
    done
done
