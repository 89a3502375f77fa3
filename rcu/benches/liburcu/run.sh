#!/bin/sh
# Builds the liburcu reference benchmark (QSBR and memb flavours) into <target>/liburcu/ and
# runs it; prints one JSON row per line (rcu/benches/run.sh collects them for the report).
#   rcu/benches/liburcu/run.sh [all|read|sync|call_rcu|mix]   build, then run both flavours
#   rcu/benches/liburcu/run.sh build                          build only
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
    gcc -O2 -Wall -Wextra -Werror -DFLAVOR_"$upper" -o "$out/bench-$flavor" "$here/bench.c" \
        -l"$lib" -lpthread
done
[ "$what" = build ] && exit 0
"$out/bench-qsbr" "$what"
"$out/bench-memb" "$what"
