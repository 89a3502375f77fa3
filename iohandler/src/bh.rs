//! Bottom halves: callbacks scheduled from any thread to run on the main loop, under the BQL,
//! at the end of the current or next dispatch round.
//!
//! Two kinds:
//!
//! * [`BottomHalf`] (QEMU's `QEMUBH`): a persistent callback that is scheduled again and again.
//!   Scheduling an already scheduled one does nothing (one run serves every schedule made
//!   before it starts); a schedule made while it runs makes it run once more. [`cancel`]
//!   (and drop) uses the same gate protocol as fd handlers: when it returns, the callback is
//!   not running and will not run until scheduled again.
//! * [`LoopHandle::call_soon`]: a one-shot `FnOnce`, not cancellable.
//!
//! The queue is a mutex-protected vector that the loop swaps out once per round; a bottom half
//! scheduled by a bottom half runs in the next round (the loop then polls with a zero
//! timeout), so a bottom half that keeps rescheduling itself cannot starve fd handlers.
//!
//! [`cancel`]: BottomHalf::cancel

use crate::bql::thread_token;
use crate::gate::Gate;
use crate::{LoopHandle, Shared};
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub(crate) struct BhInner {
    gate: Gate,
    scheduled: AtomicBool,
    dead: AtomicBool,
    cb: Mutex<Box<dyn FnMut() + Send>>,
}

pub(crate) enum BhEntry {
    Once(Box<dyn FnOnce() + Send>),
    Bh(Arc<BhInner>, u64),
}

/// A persistent bottom half. See the module documentation.
pub struct BottomHalf {
    inner: Arc<BhInner>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for BottomHalf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BottomHalf")
            .field("scheduled", &self.inner.scheduled.load(Ordering::Relaxed))
            .finish()
    }
}

impl LoopHandle {
    /// A new, unscheduled bottom half.
    pub fn bottom_half(&self, cb: impl FnMut() + Send + 'static) -> BottomHalf {
        BottomHalf {
            inner: Arc::new(BhInner {
                gate: Gate::new(),
                scheduled: AtomicBool::new(false),
                dead: AtomicBool::new(false),
                cb: Mutex::new(Box::new(cb)),
            }),
            shared: self.shared.clone(),
        }
    }

    /// Runs `f` once on the loop thread, under the BQL, at the end of the current or next
    /// round. Callable from any thread, including from loop callbacks.
    pub fn call_soon(&self, f: impl FnOnce() + Send + 'static) {
        self.shared.push_bh(BhEntry::Once(Box::new(f)));
    }
}

impl BottomHalf {
    /// Schedules the bottom half (from any thread). Does nothing if it is already scheduled.
    pub fn schedule(&self) {
        if self.inner.dead.load(Ordering::Relaxed) {
            log::warn!("scheduling a bottom half whose callback panicked earlier; ignored");
            return;
        }
        if !self.inner.scheduled.swap(true, Ordering::AcqRel) {
            let epoch = self.inner.gate.epoch();
            self.shared.push_bh(BhEntry::Bh(self.inner.clone(), epoch));
        }
    }

    /// Unschedules it. When this returns the callback is not running (unless called from the
    /// callback itself) and will not run until scheduled again.
    pub fn cancel(&self) {
        // Epoch first, then the flag: a concurrent `schedule` that sees the cleared flag also
        // sees the new epoch, so it never queues an entry that is skipped while the flag stays
        // set (which would make every later `schedule` a no-op).
        self.inner.gate.close();
        self.inner.scheduled.store(false, Ordering::Release);
        if self.shared.loop_thread.load(Ordering::Relaxed) != thread_token() {
            self.inner.gate.wait_idle();
        }
    }

    /// Whether it is scheduled and has not started running yet (a snapshot).
    pub fn is_scheduled(&self) -> bool {
        self.inner.scheduled.load(Ordering::Relaxed)
    }
}

impl Drop for BottomHalf {
    fn drop(&mut self) {
        self.cancel();
    }
}

impl Shared {
    pub(crate) fn push_bh(&self, e: BhEntry) {
        let was_empty = {
            let mut q = self.bhs.lock();
            q.push(e);
            q.len() == 1
        };
        if was_empty && self.loop_thread.load(Ordering::Relaxed) != thread_token() {
            self.kick();
        }
    }

    /// Loop side, under the BQL: runs the bottom halves queued before this call; `between` is
    /// called after each (the BQL hand-off point).
    pub(crate) fn run_bhs(&self, scratch: &mut Vec<BhEntry>, mut between: impl FnMut()) {
        debug_assert!(scratch.is_empty());
        std::mem::swap(&mut *self.bhs.lock(), scratch);
        for e in scratch.drain(..) {
            let res = match e {
                BhEntry::Once(f) => std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)),
                BhEntry::Bh(bh, epoch) => {
                    if !bh.gate.enter(epoch) {
                        continue;
                    }
                    if !bh.scheduled.swap(false, Ordering::AcqRel) {
                        // Already run by an earlier entry, or cancelled.
                        bh.gate.exit();
                        continue;
                    }
                    let res = {
                        let mut cb = bh.cb.lock();
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(&mut **cb))
                    };
                    bh.gate.exit();
                    if res.is_err() {
                        bh.dead.store(true, Ordering::Relaxed);
                        bh.gate.close();
                    }
                    res
                }
            };
            crate::mainloop::bump(&self.counters.bh_runs, 1);
            if let Err(p) = res {
                crate::mainloop::bump(&self.counters.bh_panics, 1);
                log::error!(
                    "a main-loop bottom half panicked ({}); it was disabled, the loop goes on",
                    crate::panic_message(&*p)
                );
            }
            between();
        }
    }
}
