//! The call gate: how a callback that is removed (an fd handler), cancelled (a timer) or
//! deleted (a bottom half) is never called after the removal returns, even when the remover is
//! another thread that does not hold the BQL.
//!
//! Every callback owner has a [`Gate`] with two words:
//!
//! * `epoch`: bumped by every removal / cancellation. A caller that wants to run the callback
//!   names the epoch it was scheduled under (0 for an fd handler, the arming epoch for a timer);
//!   a different epoch means "removed since".
//! * `calling`: true while the loop thread is inside the callback.
//!
//! The loop ([`Gate::enter`]): `calling = true; fence(SeqCst); if epoch != expected {
//! calling = false; skip }; call; calling = false (release)`.
//!
//! The remover ([`Gate::close`] then [`Gate::wait_idle`]): `epoch += 1; fence(SeqCst); while
//! calling { wait }` (acquire).
//!
//! That is a store-buffering pair (the two SeqCst fences are totally ordered): either the loop's
//! fence comes first, and then the remover's load of `calling` sees `true` (or the later
//! `false` written when that call returned) so it waits for the call to finish; or the
//! remover's fence comes first, and then the loop's load of `epoch` sees the bump and it does
//! not call. Every later call attempt by the loop is later in its program order, so it sees the
//! bump too (coherence). Hence once `wait_idle` returns, the callback is not running and never
//! runs again. `tests/loom.rs` model-checks this, and `--cfg iohandler_broken_gate` (no fence
//! on the loop's side) makes that model check fail; `--cfg iohandler_broken_remove` (no gate)
//! makes the stress test in `tests/stress.rs` fail.
//!
//! The remover must not wait when it *is* the running callback (a handler that removes itself,
//! or another handler, from inside a callback): the loop thread never waits, because whatever
//! callback is running is one of its own stack frames and returns first, and its next `enter`
//! sees the bump in program order. A thread that holds the BQL never finds `calling` set either,
//! because the loop holds the BQL for the whole of every call.
//!
//! Cost on the loop: one store, one fence and one load per call (the fence is a locked
//! instruction on x86, a few nanoseconds); no lock and no read-modify-write on the shared
//! line, and removers never make the loop wait.

use crate::sync::{fence, AtomicBool, AtomicU64, Ordering};

/// See the module documentation.
#[derive(Debug, Default)]
pub struct Gate {
    calling: AtomicBool,
    epoch: AtomicU64,
}

impl Gate {
    /// A gate at epoch 0 with no call in progress.
    pub fn new() -> Self {
        Gate {
            calling: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
        }
    }

    /// The current epoch (what a caller scheduled now would pass to [`enter`](Self::enter)).
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Loop side: announces a call made under `expected`; returns false (and announces
    /// nothing) if the gate was closed since. After `true`, call [`exit`](Self::exit) once the
    /// callback has returned (or unwound).
    #[inline]
    pub fn enter(&self, expected: u64) -> bool {
        // The deliberately broken variant (`--cfg iohandler_broken_remove`, to show that the
        // stress test catches it): no gate at all, removed callbacks may still be called.
        #[cfg(iohandler_broken_remove)]
        {
            let _ = expected;
            return true;
        }
        #[allow(unreachable_code)]
        self.calling.store(true, Ordering::Relaxed);
        // Pairs with the fence in `close` (store-buffering); see the module docs.
        #[cfg(not(iohandler_broken_gate))]
        fence(Ordering::SeqCst);
        if self.epoch.load(Ordering::Relaxed) != expected {
            self.calling.store(false, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Loop side: the call announced by a successful [`enter`](Self::enter) has returned.
    #[inline]
    pub fn exit(&self) {
        // Release: everything the callback did happens before a remover that sees `false`.
        self.calling.store(false, Ordering::Release);
    }

    /// Remover side: invalidates every call scheduled under an earlier epoch; returns the new
    /// epoch. Whether a call is still in flight is then told by [`is_calling`](Self::is_calling)
    /// and awaited by [`wait_idle`](Self::wait_idle).
    #[inline]
    pub fn close(&self) -> u64 {
        let new = self.epoch.fetch_add(1, Ordering::Relaxed) + 1;
        // Pairs with the fence in `enter`.
        fence(Ordering::SeqCst);
        new
    }

    /// Whether a call is in progress (acquire: a `false` orders the call's effects before us).
    #[inline]
    pub fn is_calling(&self) -> bool {
        self.calling.load(Ordering::Acquire)
    }

    /// Remover side, after [`close`](Self::close): waits until no call is in progress. Must
    /// not be called on the loop thread (it would wait for its own caller).
    pub fn wait_idle(&self) {
        #[cfg(not(loom))]
        let mut spins = 0u32;
        while self.is_calling() {
            #[cfg(loom)]
            crate::sync::yield_now();
            #[cfg(not(loom))]
            {
                spins += 1;
                if spins < 64 {
                    std::hint::spin_loop();
                } else if spins < 1024 {
                    std::thread::yield_now();
                } else {
                    // A long callback: stop burning the CPU it may need.
                    std::thread::sleep(std::time::Duration::from_micros(50));
                }
            }
        }
    }
}
