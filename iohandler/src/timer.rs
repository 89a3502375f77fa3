//! Timers: deadline-ordered, one-shot or periodic, cancellable, run by the main loop under the
//! BQL after the fd handlers of a round.
//!
//! The queue is a `BTreeMap` keyed by `(deadline, sequence)` under a mutex that the loop holds
//! only to pop due entries (never while calling). Each entry carries the timer's gate epoch at
//! arming time; arming again or cancelling bumps the epoch, so an entry popped just before a
//! cancellation is skipped (the same gate protocol as fd handlers: after [`Timer::cancel`]
//! returns, the callback is not running and will not run until armed again).

use crate::bql::thread_token;
use crate::gate::Gate;
use crate::{LoopHandle, Shared};
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) struct TimerInner {
    id: u64,
    gate: Gate,
    cb: Mutex<Box<dyn FnMut() + Send>>,
    dead: AtomicBool,
}

struct Fire {
    timer: Arc<TimerInner>,
    epoch: u64,
    period: Option<Duration>,
}

#[derive(Default)]
pub(crate) struct TimerQueue {
    by_deadline: BTreeMap<(Instant, u64), Fire>,
    keys: HashMap<u64, (Instant, u64)>,
    seq: u64,
}

impl TimerQueue {
    fn insert(&mut self, deadline: Instant, fire: Fire) -> bool {
        self.seq += 1;
        let key = (deadline, self.seq);
        let earliest = self
            .by_deadline
            .keys()
            .next()
            .is_none_or(|first| key < *first);
        self.keys.insert(fire.timer.id, key);
        self.by_deadline.insert(key, fire);
        earliest
    }

    fn remove(&mut self, id: u64) {
        if let Some(key) = self.keys.remove(&id) {
            self.by_deadline.remove(&key);
        }
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.by_deadline.keys().next().map(|k| k.0)
    }

    pub(crate) fn clear(&mut self) {
        self.by_deadline.clear();
        self.keys.clear();
    }

    /// Pops every entry due at `now`; periodic ones are put back with their next deadline.
    fn pop_due(&mut self, now: Instant, out: &mut Vec<(Arc<TimerInner>, u64)>) {
        while let Some(entry) = self.by_deadline.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let ((deadline, _), fire) = entry.remove_entry();
            self.keys.remove(&fire.timer.id);
            out.push((fire.timer.clone(), fire.epoch));
            if let Some(p) = fire.period {
                // Skip missed periods instead of firing a burst after a stall.
                let mut next = deadline + p;
                if next <= now {
                    let p_ns = p.as_nanos().max(1);
                    let k = now.duration_since(next).as_nanos() / p_ns + 1;
                    next = u64::try_from(k * p_ns)
                        .ok()
                        .and_then(|ns| next.checked_add(Duration::from_nanos(ns)))
                        .unwrap_or(now + p);
                }
                self.insert(next, fire);
            }
        }
    }
}

/// A timer of the main loop. Created unarmed by [`LoopHandle::timer`]; dropping it cancels it.
pub struct Timer {
    inner: Arc<TimerInner>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Timer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timer")
            .field("id", &self.inner.id)
            .field("armed", &self.is_armed())
            .finish()
    }
}

impl LoopHandle {
    /// A new, unarmed timer whose callback runs on the loop thread under the BQL.
    ///
    /// A callback that wants to re-arm its own timer should use
    /// [`arm_periodic`](Timer::arm_periodic) rather than capture the `Timer` (which would keep
    /// it alive through its own callback).
    pub fn timer(&self, cb: impl FnMut() + Send + 'static) -> Timer {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Timer {
            inner: Arc::new(TimerInner {
                id: NEXT.fetch_add(1, Ordering::Relaxed),
                gate: Gate::new(),
                cb: Mutex::new(Box::new(cb)),
                dead: AtomicBool::new(false),
            }),
            shared: self.shared.clone(),
        }
    }
}

impl Timer {
    fn arm_inner(&self, deadline: Instant, period: Option<Duration>) {
        if self.inner.dead.load(Ordering::Relaxed) {
            log::warn!("arming a timer whose callback panicked earlier; ignored");
            return;
        }
        let earliest = {
            let mut q = self.shared.timers.lock();
            q.remove(self.inner.id);
            // Invalidates a firing already popped by the loop (re-arming replaces it).
            let epoch = self.inner.gate.close();
            q.insert(
                deadline,
                Fire {
                    timer: self.inner.clone(),
                    epoch,
                    period,
                },
            )
        };
        if earliest && self.shared.loop_thread.load(Ordering::Relaxed) != thread_token() {
            // The loop may be asleep with a later timeout (on the loop thread itself, it
            // computes the timeout after this callback anyway).
            self.shared.kick();
        }
    }

    /// Fires once at `deadline` (replacing any earlier arming).
    pub fn arm_at(&self, deadline: Instant) {
        self.arm_inner(deadline, None);
    }

    /// Fires once after `delay` (replacing any earlier arming).
    pub fn arm(&self, delay: Duration) {
        self.arm_inner(Instant::now() + delay, None);
    }

    /// Fires every `period`, the first time one period from now (replacing any earlier
    /// arming). Periods missed while the loop was busy are skipped, not fired in a burst.
    pub fn arm_periodic(&self, period: Duration) {
        let period = period.max(Duration::from_micros(1));
        self.arm_inner(Instant::now() + period, Some(period));
    }

    /// Disarms the timer. When this returns, the callback is not running (unless this is
    /// called from the callback itself) and will not run again until the timer is re-armed.
    pub fn cancel(&self) {
        self.shared.timers.lock().remove(self.inner.id);
        self.inner.gate.close();
        if self.shared.loop_thread.load(Ordering::Relaxed) != thread_token() {
            self.inner.gate.wait_idle();
        }
    }

    /// Whether the timer is armed (a snapshot).
    pub fn is_armed(&self) -> bool {
        self.shared.timers.lock().keys.contains_key(&self.inner.id)
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        self.cancel();
    }
}

impl Shared {
    /// Loop side, under the BQL: runs the due timers; `between` is called after each one (the
    /// BQL hand-off point). Returns how many fired.
    pub(crate) fn run_timers(
        &self,
        scratch: &mut Vec<(Arc<TimerInner>, u64)>,
        mut between: impl FnMut(),
    ) {
        scratch.clear();
        {
            let mut q = self.timers.lock();
            if q.by_deadline.is_empty() {
                return;
            }
            q.pop_due(Instant::now(), scratch);
        }
        for (t, epoch) in scratch.drain(..) {
            if !t.gate.enter(epoch) {
                continue;
            }
            let res = {
                let mut cb = t.cb.lock();
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(&mut **cb))
            };
            t.gate.exit();
            crate::mainloop::bump(&self.counters.timer_fires, 1);
            if let Err(p) = res {
                crate::mainloop::bump(&self.counters.timer_panics, 1);
                t.dead.store(true, Ordering::Relaxed);
                self.timers.lock().remove(t.id);
                t.gate.close();
                log::error!(
                    "a main-loop timer callback panicked ({}); the timer was cancelled and \
                     disabled, the loop goes on",
                    crate::panic_message(&*p)
                );
            }
            between();
        }
    }
}
