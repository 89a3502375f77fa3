#![cfg(loom)]
//! loom model checks of the grace-period core (both reader kinds), the wake-up protocol, the
//! `Event`, and the `call_rcu` queue-and-batch hand-off.
//!
//! ```text
//! RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test --release -p rcu --test loom
//! ```
//!
//! Every model runs the crate's real code on loom's primitives (`rcu/src/sync.rs`); the
//! read-lock reader is `Rcu::loom_reader`, which runs `read_lock`'s enter/exit code without
//! the thread-locals. A freed value is modelled by *poisoning* it: once the grace period (or
//! the callback) says it may be freed, the writer writes `POISON` into it through a
//! `loom::cell::UnsafeCell`. loom checks that this write happens-after every reader's read of
//! the cell (a "causality violation" fails the model otherwise), and readers also assert that
//! they never read `POISON`. The memory itself stays allocated until the model ends, so even a
//! deliberately broken build never touches freed memory.
//!
//! Models whose name starts with `gp_`, `wakeup_`, `event_` or `call_rcu_` check the correct
//! code. `tests/loom-broken.sh` rebuilds with each deliberately broken variant and checks that
//! the models it names FAIL there:
//!
//! | cfg | what is removed | models that must fail |
//! |---|---|---|
//! | `rcu_broken` | the read-lock reader's fence | `gp_read_lock_*` (fence mode), `gp_concurrent_writers_*` |
//! | `rcu_broken_wakeup` | the writer's fence between `waiting` and the re-check | `wakeup_*` (deadlock) |
//! | `rcu_broken_reclaim` | the grace period before a callback batch | `call_rcu_batch_*` |
//! | `rcu_broken_memb` | the acquire on the reader's `gp` load (membarrier mode) | `gp_read_lock_reader_is_waited_for_membarrier` |
//! | `rcu_broken_batch` | taking the batch before its grace period | `call_rcu_queued_during_*` |
//! | `rcu_broken_exit` | revoking a live `QsbrThread` at thread exit | `exit_revokes_*` |
//! | `rcu_broken_throttle` | the throttle's counter + condvar (a shared reset event) | `throttle_*` (deadlock) |
//! | `rcu_broken_pending` | counting a callback before publishing it | `call_rcu_pending_*` |
//!
//! Each model has its own preemption bound (`None`: exhaustive), chosen so that the file runs
//! in about four minutes on two cores (and every broken variant is still caught);
//! `LOOM_MAX_PREEMPTIONS` overrides them all. `--nocapture`
//! shows how many executions each model explored.
//!
//! `membarrier(2)` is emulated (`domain::LoomMembarrier`): the writer fences, asks every
//! read-lock reader it checks to fence, waits until each has done so at one of its membarrier
//! points (around every step of its lock, load and unlock; which one is the interleaving's
//! choice) or exited, and fences again. `*_membarrier` models run read-lock readers that way,
//! with only a compiler barrier of their own; the others use real fences on both sides.
//!
//! What loom cannot model stays outside these models: time (the batching delay, stall warnings
//! and timeouts are compiled out under `cfg(loom)`), and the thread-local registration of
//! `read_lock` (`local.rs`, replaced by `loom_reader`; its thread-exit path is modelled through
//! `QsbrThread::loom_thread_exit`, which runs the same revocation).

use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;
use rcu::{CallbackLock, Event, Rcu, RcuCell};
use std::sync::atomic::{AtomicUsize as StdCounter, Ordering as StdOrdering};

/// What a freed value holds.
const POISON: u64 = u64::MAX;
const OLD: u64 = 1;
const NEW: u64 = 2;

/// Runs `f` under every interleaving loom explores with at most `bound` preemptions (`None`:
/// all of them), then prints how many executions that was.
fn check(bound: Option<usize>, f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if std::env::var_os("LOOM_MAX_PREEMPTIONS").is_none() {
        builder.preemption_bound = bound;
    }
    let runs = std::sync::Arc::new(StdCounter::new(0));
    let r = runs.clone();
    let started = std::time::Instant::now();
    builder.check(move || {
        r.fetch_add(1, StdOrdering::Relaxed);
        f();
    });
    eprintln!(
        "{}: {} executions, preemption bound {:?}, {:.1?}",
        std::thread::current().name().unwrap_or("model"),
        runs.load(StdOrdering::Relaxed),
        builder.preemption_bound,
        started.elapsed()
    );
}

/// Counts, across all executions of one model, how often an outcome occurred, so that a model
/// can assert it really explored the case it is about (and is not passing vacuously).
#[derive(Clone, Default)]
struct Outcomes(std::sync::Arc<[StdCounter; 2]>);

impl Outcomes {
    fn record(&self, which: bool) {
        self.0[usize::from(which)].fetch_add(1, StdOrdering::Relaxed);
    }

    fn get(&self, which: bool) -> usize {
        self.0[usize::from(which)].load(StdOrdering::Relaxed)
    }
}

/// An RCU-protected value whose "free" is a poisoning write that loom race-checks.
struct Payload {
    value: UnsafeCell<u64>,
}

// SAFETY: readers only read `value` (`read`); the single write (`poison`) is what the
// algorithm under test must order after every read, and loom's cell tracking fails the model
// if it is not (loom runs one thread at a time, so the accesses never truly overlap).
unsafe impl Sync for Payload {}

impl Payload {
    fn new(v: u64) -> Self {
        Payload {
            value: UnsafeCell::new(v),
        }
    }

    /// A reader's access: checked by loom against the writer's `poison`.
    fn read(&self) -> u64 {
        // SAFETY: see the `Sync` impl; loom checks this read against every write.
        let v = self.value.with(|p| unsafe { *p });
        assert_ne!(v, POISON, "a reader saw a value freed under it");
        v
    }

    /// The writer's "free": only legal once no reader can still hold a reference.
    fn poison(&self) {
        // SAFETY: see the `Sync` impl; loom checks this write against every read.
        self.value.with_mut(|p| unsafe { *p = POISON });
    }
}

/// The writer's side shared by the grace-period models: publish NEW, wait for a grace period,
/// free OLD. Returns the freed value (kept allocated until the readers are joined).
fn replace_and_free(cell: &RcuCell<Payload>) -> Box<Payload> {
    let retired = cell
        .store(Some(Payload::new(NEW)))
        .expect("the cell held OLD");
    let old = retired.synchronize();
    old.poison();
    old
}

/// A domain whose read-lock readers use a full fence (`membarrier: false`) or, with
/// `membarrier: true`, only a compiler barrier, the writer emulating `membarrier(2)`: a full
/// fence, then each read-lock reader forced through a full fence at a point of its program
/// that the interleaving chooses, then a full fence.
fn domain(membarrier: bool) -> Rcu {
    Rcu::builder().membarrier(membarrier).build()
}

// ---------------------------------------------------------------------------------------------
// 1-2. A reader that began before synchronize is waited for.
// ---------------------------------------------------------------------------------------------

/// Model 1: a read-lock reader (the same enter/exit code as `read_lock`) registers, enters a
/// section and reads the cell while the writer replaces the value, synchronizes and frees the
/// old one. The free must happen-after the read. Fails under `--cfg rcu_broken`.
#[test]
fn gp_read_lock_reader_is_waited_for() {
    read_lock_reader_is_waited_for(false, Some(5));
}

/// Model 1, membarrier mode (the production configuration). Fails under
/// `--cfg rcu_broken_memb` (the reader's relaxed load of `gp`: the section's pointer load may
/// then see the old value although the reader stored the new `gp`, so the writer skips it).
#[test]
fn gp_read_lock_reader_is_waited_for_membarrier() {
    read_lock_reader_is_waited_for(true, Some(3));
}

fn read_lock_reader_is_waited_for(membarrier: bool, bound: Option<usize>) {
    let seen = Outcomes::default();
    let s = seen.clone();
    check(bound, move || {
        let rcu = domain(membarrier);
        let cell = Arc::new(RcuCell::new_in(&rcu, Some(Payload::new(OLD))));
        let reader = {
            let (rcu, cell) = (rcu.clone(), cell.clone());
            thread::spawn(move || {
                let me = rcu.loom_reader();
                let outer = me.lock();
                let value = cell.load(&outer).expect("never empty");
                let v = value.read();
                {
                    // A nested section: its exit must not end the outer one.
                    let inner = me.lock();
                    cell.load(&inner).expect("never empty").read();
                }
                value.read();
                drop(outer);
                v
            })
        };
        let old = replace_and_free(&cell);
        let v = reader.join().unwrap();
        s.record(v == OLD);
        drop(old);
    });
    assert!(seen.get(true) > 0, "no execution had the reader read OLD");
    assert!(seen.get(false) > 0, "no execution had the reader read NEW");
}

/// Model 1b: two writers synchronize concurrently (each may return on the other's grace
/// period: the `completed >= target` shortcut) while a read-lock reader reads both cells.
/// Neither free may overlap the reader's section.
#[test]
fn gp_concurrent_writers_share_grace_periods() {
    concurrent_writers_share_grace_periods(false, Some(3));
}

/// Model 1b in membarrier mode: the sharer's pointer store must reach a reader that acquires
/// the `gp` of the grace period it shares.
#[test]
fn gp_concurrent_writers_share_grace_periods_membarrier() {
    concurrent_writers_share_grace_periods(true, Some(2));
}

fn concurrent_writers_share_grace_periods(membarrier: bool, bound: Option<usize>) {
    let shared = Outcomes::default();
    let s = shared.clone();
    check(bound, move || {
        let rcu = domain(membarrier);
        let a = Arc::new(RcuCell::new_in(&rcu, Some(Payload::new(OLD))));
        let b = Arc::new(RcuCell::new_in(&rcu, Some(Payload::new(OLD))));
        let reader = {
            let (rcu, a, b) = (rcu.clone(), a.clone(), b.clone());
            thread::spawn(move || {
                let me = rcu.loom_reader();
                let guard = me.lock();
                a.load(&guard).expect("never empty").read();
                b.load(&guard).expect("never empty").read();
                drop(guard);
            })
        };
        let writer = thread::spawn(move || replace_and_free(&a));
        let old_b = replace_and_free(&b);
        let old_a = writer.join().unwrap();
        reader.join().unwrap();
        s.record(rcu.stats().shared_grace_periods > 0);
        drop((old_a, old_b));
    });
    assert!(shared.get(true) > 0, "no execution shared a grace period");
}

/// Model 2: the same with a QSBR reader: it reads, reports a quiescent state, reads again,
/// goes offline and comes back online, reads again, and unregisters. None of its reads may
/// overlap the free.
#[test]
fn gp_qsbr_reader_is_waited_for() {
    let seen = Outcomes::default();
    let s = seen.clone();
    check(Some(5), move || {
        let rcu = Rcu::new();
        let cell = Arc::new(RcuCell::new_in(&rcu, Some(Payload::new(OLD))));
        let reader = {
            let (rcu, cell) = (rcu.clone(), cell.clone());
            thread::spawn(move || {
                let mut me = rcu.register_qsbr();
                let first = cell.load(&me).expect("never empty").read();
                me.quiescent_state();
                cell.load(&me).expect("never empty").read();
                me.offline();
                me.online();
                cell.load(&me).expect("never empty").read();
                first
            })
        };
        let old = replace_and_free(&cell);
        let first = reader.join().unwrap();
        s.record(first == OLD);
        drop(old);
    });
    assert!(
        seen.get(true) > 0,
        "no execution had the reader read OLD first"
    );
    assert!(
        seen.get(false) > 0,
        "no execution had the reader read NEW first"
    );
}

// ---------------------------------------------------------------------------------------------
// 3. A reader that begins after synchronize returns sees the new value.
// ---------------------------------------------------------------------------------------------

/// The writer of model 3: publish NEW, synchronize, then raise `done` with a *relaxed* store,
/// so that only the grace period (not the flag) can order the reader's view.
fn publish_then_flag(cell: &RcuCell<Payload>, done: &AtomicBool) -> Box<Payload> {
    let old = replace_and_free(cell);
    done.store(true, Ordering::Relaxed);
    old
}

/// Model 3a: a read-lock reader that observed `done` (so began after `synchronize` returned)
/// must read NEW: the RCU guarantee "if a reader sees anything done after a grace period, it
/// sees everything done before it".
#[test]
fn gp_read_lock_reader_after_synchronize_sees_new() {
    read_lock_reader_after_synchronize_sees_new(false, None);
}

/// Model 3a in membarrier mode.
#[test]
fn gp_read_lock_reader_after_synchronize_sees_new_membarrier() {
    read_lock_reader_after_synchronize_sees_new(true, Some(3));
}

fn read_lock_reader_after_synchronize_sees_new(membarrier: bool, bound: Option<usize>) {
    let seen = Outcomes::default();
    let s = seen.clone();
    check(bound, move || {
        let rcu = domain(membarrier);
        let cell = Arc::new(RcuCell::new_in(&rcu, Some(Payload::new(OLD))));
        let done = Arc::new(AtomicBool::new(false));
        let reader = {
            let (rcu, cell, done) = (rcu.clone(), cell.clone(), done.clone());
            thread::spawn(move || {
                let me = rcu.loom_reader();
                let after = done.load(Ordering::Relaxed);
                let guard = me.lock();
                let v = cell.load(&guard).expect("never empty").read();
                if after {
                    assert_eq!(v, NEW, "a reader that began after synchronize read OLD");
                }
                drop(guard);
                after
            })
        };
        let old = publish_then_flag(&cell, &done);
        s.record(reader.join().unwrap());
        drop(old);
    });
    assert!(
        seen.get(true) > 0,
        "no execution had the reader begin after synchronize"
    );
}

/// Model 3b: the same with a QSBR reader, whose quiescent state after observing `done` begins
/// its new read-side stretch.
#[test]
fn gp_qsbr_reader_after_synchronize_sees_new() {
    let seen = Outcomes::default();
    let s = seen.clone();
    check(Some(6), move || {
        let rcu = Rcu::new();
        let cell = Arc::new(RcuCell::new_in(&rcu, Some(Payload::new(OLD))));
        let done = Arc::new(AtomicBool::new(false));
        let reader = {
            let (rcu, cell, done) = (rcu.clone(), cell.clone(), done.clone());
            thread::spawn(move || {
                let mut me = rcu.register_qsbr();
                let after = done.load(Ordering::Relaxed);
                me.quiescent_state();
                let v = cell.load(&me).expect("never empty").read();
                if after {
                    assert_eq!(
                        v, NEW,
                        "a QSBR reader that began after synchronize read OLD"
                    );
                }
                after
            })
        };
        let old = publish_then_flag(&cell, &done);
        s.record(reader.join().unwrap());
        drop(old);
    });
    assert!(
        seen.get(true) > 0,
        "no execution had the reader begin after synchronize"
    );
}

// ---------------------------------------------------------------------------------------------
// 4. No lost wake-up between the per-reader `waiting` flag and the Event.
// ---------------------------------------------------------------------------------------------

/// A domain whose writer sleeps on the Event at once instead of polling first (read-lock
/// readers with full fences; `wakeup_*_membarrier` models use the emulated membarrier).
fn sleepy_domain() -> Rcu {
    Rcu::builder().spin_passes(0).membarrier(false).build()
}

/// Model 4a: a read-lock reader leaves its section while the writer goes to sleep waiting for
/// it. A lost wake-up leaves the writer asleep forever, which loom reports as a deadlock.
/// Fails (deadlocks) under `--cfg rcu_broken_wakeup`.
#[test]
fn wakeup_read_lock_reader_wakes_sleeping_writer() {
    check(None, || {
        let rcu = sleepy_domain();
        let me = rcu.loom_reader();
        let reader = thread::spawn(move || {
            let guard = me.lock();
            drop(guard);
        });
        rcu.synchronize();
        reader.join().unwrap();
    });
}

/// Model 4a in membarrier mode: the writer's fence before the re-check is the emulated
/// membarrier. Fails (deadlocks) under `--cfg rcu_broken_wakeup`.
#[test]
fn wakeup_read_lock_reader_wakes_sleeping_writer_membarrier() {
    check(Some(3), || {
        let rcu = Rcu::builder().spin_passes(0).membarrier(true).build();
        let me = rcu.loom_reader();
        let reader = thread::spawn(move || {
            let guard = me.lock();
            drop(guard);
        });
        rcu.synchronize();
        reader.join().unwrap();
    });
}

/// Model 4b: the same with a QSBR reader, which wakes the writer from `quiescent_state` or
/// from going offline (when its handle drops).
#[test]
fn wakeup_qsbr_reader_wakes_sleeping_writer() {
    check(Some(6), || {
        let rcu = sleepy_domain();
        let reader = {
            let rcu = rcu.clone();
            thread::spawn(move || {
                let mut me = rcu.register_qsbr();
                me.quiescent_state();
                drop(me);
            })
        };
        rcu.synchronize();
        reader.join().unwrap();
    });
}

/// Model 4c: both reader kinds at once; the writer sleeps on one Event for both.
#[test]
fn wakeup_both_kinds_wake_sleeping_writer() {
    check(Some(3), || {
        let rcu = sleepy_domain();
        let lock_reader = rcu.loom_reader();
        let a = thread::spawn(move || {
            drop(lock_reader.lock());
        });
        let b = {
            let rcu = rcu.clone();
            thread::spawn(move || {
                let mut me = rcu.register_qsbr();
                me.offline();
            })
        };
        rcu.synchronize();
        a.join().unwrap();
        b.join().unwrap();
    });
}

// ---------------------------------------------------------------------------------------------
// 5. The Event alone.
// ---------------------------------------------------------------------------------------------

/// Model 5a: two threads ping-pong over two events for two rounds, handing a plain value
/// back and forth: every `wait` must be woken (else loom reports a deadlock) and must make the
/// setter's earlier writes visible (else loom reports a data race on the cell).
#[test]
fn event_ping_pong_hands_off_data() {
    check(Some(7), || {
        let ping = Arc::new(Event::new(false));
        let pong = Arc::new(Event::new(false));
        let data = Arc::new(Payload::new(0));
        let t = {
            let (ping, pong, data) = (ping.clone(), pong.clone(), data.clone());
            thread::spawn(move || {
                for round in 0..2u64 {
                    ping.wait();
                    ping.reset();
                    // SAFETY: the ping/pong hand-off orders every access (what is checked).
                    data.value.with_mut(|p| unsafe {
                        assert_eq!(*p, 2 * round + 1);
                        *p += 1;
                    });
                    pong.set();
                }
            })
        };
        for round in 0..2u64 {
            // SAFETY: as above.
            data.value.with_mut(|p| unsafe {
                assert_eq!(*p, 2 * round);
                *p += 1;
            });
            ping.set();
            pong.wait();
            pong.reset();
        }
        t.join().unwrap();
    });
}

/// Model 5b: the pattern the writer and the reclamation thread use: reset, announce/re-check a
/// condition, wait; the other side makes the condition true and sets. Two rounds, so the second
/// `reset` races with a `set` that may still be in flight from the first.
#[test]
fn event_reset_recheck_wait_loses_no_wakeup() {
    check(None, || {
        let event = Arc::new(Event::new(false));
        let work = Arc::new(AtomicUsize::new(0));
        let t = {
            let (event, work) = (event.clone(), work.clone());
            thread::spawn(move || {
                for _ in 0..2 {
                    work.fetch_add(1, Ordering::Relaxed);
                    event.set();
                }
            })
        };
        let mut taken = 0;
        while taken < 2 {
            event.reset();
            let available = work.load(Ordering::Relaxed);
            if available > taken {
                taken = available;
                continue;
            }
            event.wait();
        }
        t.join().unwrap();
    });
}

// ---------------------------------------------------------------------------------------------
// 6. call_rcu: the queue-and-batch hand-off to the reclamation thread, and rcu_barrier.
// ---------------------------------------------------------------------------------------------

/// What the callback saw, shared by the callback lock and the callback.
#[derive(Default)]
struct Witness {
    /// The callback lock is held (set by `with_lock` on the reclamation thread).
    held: AtomicBool,
    /// 0: not run; 1: ran under the callback lock, off the caller's thread; 2: ran wrongly.
    ran: AtomicUsize,
}

/// A callback lock that records when it is held.
struct WitnessLock(Arc<Witness>);

impl CallbackLock for WitnessLock {
    fn with_lock(&self, f: &mut dyn FnMut()) {
        self.0.held.store(true, Ordering::Relaxed);
        f();
        self.0.held.store(false, Ordering::Relaxed);
    }
}

/// Two versions of a value and the index of the published one (an `AtomicPtr`-like cell whose
/// values stay allocated, so that even a broken reclamation is only a checked poisoning).
struct Versions {
    slots: [Payload; 2],
    current: AtomicUsize,
}

/// Model 6: a reader inside a section; a writer that unpublishes OLD and hands its
/// destruction to `call_rcu`, then calls `rcu_barrier`. The callback runs on the reclamation
/// thread, under the callback lock, never while the reader can still see OLD; `rcu_barrier`
/// returns only after it ran; dropping the domain joins the reclamation thread. Fails under
/// `--cfg rcu_broken_reclaim` (callbacks run without a grace period).
#[test]
fn call_rcu_batch_waits_for_readers_and_barrier_for_callbacks() {
    let seen = Outcomes::default();
    let s = seen.clone();
    check(Some(2), move || {
        let witness = Arc::new(Witness::default());
        let lock: std::sync::Arc<dyn CallbackLock> =
            std::sync::Arc::new(WitnessLock(witness.clone()));
        let rcu = Rcu::builder()
            .membarrier(false)
            .callback_lock(Arc::from_std(lock))
            .build();
        let data = Arc::new(Versions {
            slots: [Payload::new(OLD), Payload::new(NEW)],
            current: AtomicUsize::new(0),
        });
        let reader = {
            let (rcu, data) = (rcu.clone(), data.clone());
            thread::spawn(move || {
                let me = rcu.loom_reader();
                let guard = me.lock();
                let v = data.slots[data.current.load(Ordering::Acquire)].read();
                drop(guard);
                v
            })
        };
        data.current.store(1, Ordering::Release);
        let caller = thread::current().id();
        let (d, w) = (data.clone(), witness.clone());
        rcu.call_rcu(move || {
            let ok = w.held.load(Ordering::Relaxed) && thread::current().id() != caller;
            w.ran.store(if ok { 1 } else { 2 }, Ordering::Relaxed);
            d.slots[0].poison();
        });
        rcu.rcu_barrier();
        assert_eq!(
            witness.ran.load(Ordering::Relaxed),
            1,
            "after rcu_barrier the callback must have run, on the reclamation thread, under \
             the callback lock"
        );
        let v = reader.join().unwrap();
        s.record(v == OLD);
        let stats = rcu.stats();
        // A race loom detects inside a callback panics there, and the reclamation thread
        // catches callback panics: they are counted, so check the count.
        assert_eq!(stats.callback_panics, 0, "a callback panicked (see above)");
        assert_eq!(stats.callbacks_run, stats.callbacks_queued);
        // The last handle: shuts the reclamation thread down and joins it (loom reports a
        // deadlock if it never exits, and a leak if it keeps the domain alive).
        drop(rcu);
    });
    assert!(seen.get(true) > 0, "no execution had the reader read OLD");
}

/// Model 7: a callback queued while a grace period is already in progress must wait for a
/// grace period of its own. A first `call_rcu` starts the reclamation thread and its grace
/// period; meanwhile a reader enters a section and reads OLD, and the writer unpublishes OLD
/// and queues its poisoning. The batch must be taken *before* its grace period begins, so the
/// poisoning callback waits for the next grace period, which waits for the reader. Fails
/// under `--cfg rcu_broken_batch` (batch taken after the grace period).
#[test]
fn call_rcu_queued_during_a_grace_period_waits_for_the_next() {
    check(Some(2), || {
        let rcu = Rcu::builder().membarrier(false).build();
        let data = Arc::new(Versions {
            slots: [Payload::new(OLD), Payload::new(NEW)],
            current: AtomicUsize::new(0),
        });
        rcu.call_rcu(|| {});
        let reader = {
            let (rcu, data) = (rcu.clone(), data.clone());
            thread::spawn(move || {
                let me = rcu.loom_reader();
                let guard = me.lock();
                let slot = &data.slots[data.current.load(Ordering::Acquire)];
                slot.read();
                slot.read();
                drop(guard);
            })
        };
        data.current.store(1, Ordering::Release);
        let d = data.clone();
        rcu.call_rcu(move || d.slots[0].poison());
        rcu.rcu_barrier();
        reader.join().unwrap();
        assert_eq!(
            rcu.stats().callback_panics,
            0,
            "a callback panicked (see above)"
        );
        drop(rcu);
    });
}

// ---------------------------------------------------------------------------------------------
// 8. Thread exit, the throttle, and the pending count.
// ---------------------------------------------------------------------------------------------

/// Model 8: a QSBR handle whose thread's exit clean-up ran (what the crate's thread-local
/// destructor does when the handle lives in a thread-local destroyed later) must not read
/// unseen by grace periods: the clean-up revokes it. The reader reads, the clean-up runs,
/// then it reads again if the handle still allows it, while a writer frees OLD. Fails under
/// `--cfg rcu_broken_exit` (the handle stays readable though unregistered).
#[test]
fn exit_revokes_a_qsbr_handle_that_outlives_its_registration() {
    let reread = Outcomes::default();
    let r = reread.clone();
    check(Some(3), move || {
        let rcu = Rcu::new();
        let cell = Arc::new(RcuCell::new_in(&rcu, Some(Payload::new(OLD))));
        let reader = {
            let (rcu, cell) = (rcu.clone(), cell.clone());
            thread::spawn(move || {
                let me = rcu.register_qsbr();
                cell.load(&me).expect("never empty").read();
                me.loom_thread_exit();
                let allowed = me.loom_may_read();
                if allowed {
                    cell.load(&me).expect("never empty").read();
                }
                allowed
            })
        };
        let old = replace_and_free(&cell);
        r.record(reader.join().unwrap());
        drop(old);
    });
    assert!(
        reread.get(true) == 0,
        "a revoked handle was allowed to read"
    );
}

/// Model 9: two producers throttled at the high-water mark at the same time must both be
/// woken when reclamation catches up (a lost wake-up is a loom deadlock). Fails under
/// `--cfg rcu_broken_throttle` (one shared progress event that each waiter resets).
#[test]
fn throttle_wakes_every_waiting_producer() {
    check(Some(2), || {
        let rcu = Rcu::builder().membarrier(false).high_water(1).build();
        // One callback queued: each of the next two is over the mark and waits.
        rcu.call_rcu(|| {});
        let producer = {
            let rcu = rcu.clone();
            thread::spawn(move || rcu.call_rcu(|| {}))
        };
        rcu.call_rcu(|| {});
        producer.join().unwrap();
        drop(rcu);
    });
}

/// Model 10: `pending` is counted before a callback is published, so the reclamation thread
/// can never subtract it first, which wrapped `pending` below zero: meanwhile the count read
/// ~2^64 (and producers were throttled for nothing). Fails under `--cfg rcu_broken_pending`
/// (counted after publishing).
#[test]
fn call_rcu_pending_never_goes_below_zero() {
    check(Some(2), || {
        let rcu = Rcu::builder().membarrier(false).build();
        rcu.call_rcu(|| {});
        let producer = {
            let rcu = rcu.clone();
            thread::spawn(move || rcu.call_rcu(|| {}))
        };
        let pending = rcu.stats().callbacks_pending;
        assert!(pending <= 2, "pending went below zero: {pending}");
        producer.join().unwrap();
        drop(rcu);
    });
}
