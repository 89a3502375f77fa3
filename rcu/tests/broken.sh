#!/usr/bin/env bash
# Shows that the RcuList stress test can fail: built with `--cfg rcu_broken_reclaim` (call_rcu
# callbacks run without waiting for a grace period) it must report a reader that saw a
# reclaimed node. Exits 0 when the broken build is caught, 1 when it slips through.
set -uo pipefail
cd "$(dirname "$0")/../.."
out=$(RUSTFLAGS="--cfg rcu_broken_reclaim" CARGO_TARGET_DIR=target/broken-reclaim \
    cargo test --release -p rcu --test list 2>&1)
if echo "$out" | grep -q "a reader saw a reclaimed node"; then
    echo "broken reclaim (no grace period before callbacks): caught by rcu/tests/list.rs"
    exit 0
fi
echo "$out" | tail -20
echo "broken reclaim was NOT caught by rcu/tests/list.rs"
exit 1
