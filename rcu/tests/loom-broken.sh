#!/usr/bin/env bash
# Shows that the loom models in rcu/tests/loom.rs can fail: rebuilds them with each
# deliberately broken variant of the rcu crate and runs the models that must catch it.
#
#   rcu_broken          read-lock reader's fence removed          -> a reader sees a freed value
#   rcu_broken_wakeup   writer's fence before the re-check         -> lost wake-up (loom: deadlock)
#   rcu_broken_reclaim  no grace period before a callback batch    -> a callback frees under a reader
#   rcu_broken_memb     relaxed load of gp in read_lock (membarrier mode) -> freed under a reader
#   rcu_broken_batch    batch taken after its grace period         -> a callback queued during a
#                                                                     grace period frees under a reader
#   rcu_broken_exit     thread exit does not revoke a live QsbrThread -> it reads unseen, freed
#   rcu_broken_throttle throttled producers share a reset event    -> lost wake-up (loom: deadlock)
#   rcu_broken_pending  pending counted after publishing           -> pending wraps below zero
#
# Every listed model must FAIL, and for the expected reason (the panic message is checked, so
# a build error or an unrelated panic is not mistaken for a catch). Prints one verdict line per
# variant; exits 0 only if every variant was caught, 1 otherwise. A variant is selected with
# RCU_BROKEN (rcu/build.rs), so only the rcu crate is rebuilt per variant.
set -uo pipefail
cd "$(dirname "$0")/../.."

export CARGO_TARGET_DIR=target/loom
export RUSTFLAGS="--cfg loom"
# A model that is not caught runs to completion; this only stops a real hang.
per_test_timeout=${LOOM_BROKEN_TIMEOUT:-600}

race='Causality violation|a reader saw a value freed|began after synchronize read OLD|callback panicked'
declare -A expect=(
    [rcu_broken]="$race"
    [rcu_broken_wakeup]='deadlock'
    [rcu_broken_reclaim]="$race"
    [rcu_broken_memb]="$race"
    [rcu_broken_batch]="$race"
    [rcu_broken_exit]="$race"
    [rcu_broken_throttle]='deadlock'
    [rcu_broken_pending]='pending went below zero'
)
declare -A models=(
    [rcu_broken]="gp_read_lock_reader_is_waited_for gp_read_lock_reader_after_synchronize_sees_new gp_concurrent_writers_share_grace_periods"
    [rcu_broken_wakeup]="wakeup_read_lock_reader_wakes_sleeping_writer wakeup_read_lock_reader_wakes_sleeping_writer_membarrier wakeup_qsbr_reader_wakes_sleeping_writer wakeup_both_kinds_wake_sleeping_writer"
    [rcu_broken_reclaim]="call_rcu_batch_waits_for_readers_and_barrier_for_callbacks"
    [rcu_broken_memb]="gp_read_lock_reader_is_waited_for_membarrier"
    [rcu_broken_batch]="call_rcu_queued_during_a_grace_period_waits_for_the_next"
    [rcu_broken_exit]="exit_revokes_a_qsbr_handle_that_outlives_its_registration"
    [rcu_broken_throttle]="throttle_wakes_every_waiting_producer"
    [rcu_broken_pending]="call_rcu_pending_never_goes_below_zero"
)
variants="${LOOM_BROKEN_VARIANTS:-rcu_broken rcu_broken_wakeup rcu_broken_reclaim rcu_broken_memb rcu_broken_batch rcu_broken_exit rcu_broken_throttle rcu_broken_pending}"

status=0
for variant in $variants; do
    export RCU_BROKEN=$variant
    if ! build=$(cargo test --release -p rcu --test loom --no-run 2>&1); then
        echo "$build" | tail -20
        echo "FAIL  $variant: the loom tests do not build"
        status=1
        continue
    fi
    caught=() missed=()
    for model in ${models[$variant]}; do
        out=$(timeout "$per_test_timeout" \
            cargo test -q --release -p rcu --test loom -- --exact "$model" 2>&1)
        rc=$?
        if [ $rc -ne 0 ] && [ $rc -ne 124 ] && echo "$out" | grep -Eq "${expect[$variant]}"; then
            caught+=("$model")
        else
            [ $rc -eq 124 ] && echo "$model: timed out after ${per_test_timeout}s"
            [ $rc -eq 0 ] && echo "$model: passed"
            [ $rc -ne 0 ] && [ $rc -ne 124 ] && echo "$out" | tail -15
            missed+=("$model")
        fi
    done
    if [ ${#missed[@]} -eq 0 ]; then
        echo "ok    $variant: caught by all ${#caught[@]} models (${caught[*]})"
    else
        echo "FAIL  $variant: NOT caught by ${missed[*]}"
        status=1
    fi
done
exit $status
