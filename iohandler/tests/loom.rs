//! Model check of the call gate (`src/gate.rs`) under loom: a handler removed by another
//! thread is never called after the removal returns, and a call in progress finishes before
//! the removal returns (so the remover may free what the callback uses).
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test -p iohandler --test loom --release`.
//! With `--cfg iohandler_broken_gate` (no fence on the loop's side) loom finds the
//! interleaving in which the remover frees the state while the loop still calls the handler.
#![cfg(loom)]

use iohandler::gate::Gate;
use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::thread;

/// What the callback uses: the remover "frees" it (writes) after the removal returns; the
/// callback reads it. loom reports any read not ordered before that write as a data race.
struct Handler {
    gate: Gate,
    state: UnsafeCell<u32>,
}

// SAFETY: `state` is only accessed through loom's checked cell, whose whole point here is to
// detect unsynchronized access.
unsafe impl Sync for Handler {}

fn dispatch(h: &Handler, epoch: u64) -> bool {
    if !h.gate.enter(epoch) {
        return false;
    }
    // SAFETY: checked by loom (see above).
    let v = h.state.with(|p| unsafe { *p });
    assert_eq!(v, 1, "the callback ran after its removal returned");
    h.gate.exit();
    true
}

fn remove_and_free(h: &Handler) {
    h.gate.close();
    h.gate.wait_idle();
    // SAFETY: checked by loom (see above).
    h.state.with_mut(|p| unsafe { *p = 0 });
}

#[test]
fn removal_from_another_thread() {
    loom::model(|| {
        let h = Arc::new(Handler {
            gate: Gate::new(),
            state: UnsafeCell::new(1),
        });
        let h2 = h.clone();
        let looper = thread::spawn(move || {
            // Two dispatch attempts (two rounds).
            dispatch(&h2, 0);
            dispatch(&h2, 0);
        });
        remove_and_free(&h);
        looper.join().unwrap();
    });
}

/// Timers and bottom halves: arming bumps the epoch too, so a firing scheduled under an old
/// epoch never runs after a later cancel has returned.
#[test]
fn rearm_then_cancel() {
    loom::model(|| {
        let h = Arc::new(Handler {
            gate: Gate::new(),
            state: UnsafeCell::new(1),
        });
        let first = h.gate.close(); // armed: epoch 1
        let h2 = h.clone();
        let looper = thread::spawn(move || {
            dispatch(&h2, first);
        });
        let _second = h.gate.close(); // re-armed
        remove_and_free(&h); // cancelled
        looper.join().unwrap();
    });
}
