//! call_rcu, defer_drop, rcu_barrier, polling, the callback lock and bounded garbage.

use parking_lot::Mutex;
use rcu::{CallbackLock, Rcu, RcuCell};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

fn fast_domain() -> Rcu {
    Rcu::builder().batch(1, Duration::from_millis(1)).build()
}

#[test]
fn callback_waits_for_a_reader_and_runs_on_another_thread() {
    let rcu = fast_domain();
    let ran = Arc::new(AtomicBool::new(false));
    let ran_on = Arc::new(Mutex::new(None));
    let g = rcu.read_lock();
    {
        let (ran, ran_on) = (ran.clone(), ran_on.clone());
        rcu.call_rcu(move || {
            *ran_on.lock() = Some(thread::current().id());
            ran.store(true, Ordering::SeqCst);
        });
    }
    thread::sleep(Duration::from_millis(100));
    assert!(
        !ran.load(Ordering::SeqCst),
        "callback ran while a reader was inside"
    );
    drop(g);
    rcu.rcu_barrier();
    assert!(ran.load(Ordering::SeqCst));
    assert_ne!(*ran_on.lock(), Some(thread::current().id()));
    let s = rcu.stats();
    assert_eq!(s.callbacks_run, 2); // ours and the barrier's own
    assert_eq!(s.callbacks_pending, 0);
}

#[test]
fn retired_values_are_dropped_after_a_grace_period() {
    struct Tracked(Arc<AtomicUsize>);
    impl Drop for Tracked {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let rcu = fast_domain();
    let drops = Arc::new(AtomicUsize::new(0));
    let cell = RcuCell::new_in(&rcu, Some(Tracked(drops.clone())));
    for _ in 0..10 {
        let old = cell.store(Some(Tracked(drops.clone())));
        drop(old); // Retired's Drop defers through call_rcu
    }
    rcu.rcu_barrier();
    assert_eq!(drops.load(Ordering::SeqCst), 10);
    drop(cell);
    assert_eq!(drops.load(Ordering::SeqCst), 11);
}

/// A big-lock stand-in that knows its owner, as the VMM's BQL does.
#[derive(Default)]
struct OwnedLock {
    lock: Mutex<()>,
    owner: Mutex<Option<thread::ThreadId>>,
}

impl OwnedLock {
    fn with<R>(&self, f: impl FnOnce() -> R) -> R {
        let _g = self.lock.lock();
        *self.owner.lock() = Some(thread::current().id());
        let r = f();
        *self.owner.lock() = None;
        r
    }
}

impl CallbackLock for OwnedLock {
    fn with_lock(&self, f: &mut dyn FnMut()) {
        self.with(f)
    }
    fn held_by_current_thread(&self) -> bool {
        *self.owner.lock() == Some(thread::current().id())
    }
}

#[test]
fn callbacks_run_under_the_application_lock() {
    let lock = Arc::new(OwnedLock::default());
    let rcu = Rcu::builder()
        .callback_lock(lock.clone())
        .batch(1, Duration::from_millis(1))
        .build();
    let held = Arc::new(AtomicUsize::new(0));
    for _ in 0..100 {
        let (lock, held) = (lock.clone(), held.clone());
        rcu.call_rcu(move || {
            if lock.held_by_current_thread() {
                held.fetch_add(1, Ordering::SeqCst);
            }
        });
    }
    rcu.rcu_barrier();
    assert_eq!(held.load(Ordering::SeqCst), 100);
}

#[test]
fn rcu_barrier_while_holding_the_callback_lock_panics_instead_of_deadlocking() {
    let lock = Arc::new(OwnedLock::default());
    let rcu = Rcu::builder().callback_lock(lock.clone()).build();
    let err = lock.with(|| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rcu.rcu_barrier())).unwrap_err()
    });
    let msg = err
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| err.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    assert!(msg.contains("holding the callback lock"), "{msg}");
}

#[test]
fn rcu_barrier_from_a_callback_panics_and_the_panic_is_counted() {
    let rcu = fast_domain();
    let r2 = rcu.clone();
    rcu.call_rcu(move || r2.rcu_barrier());
    rcu.rcu_barrier();
    assert_eq!(rcu.stats().callback_panics, 1);
}

#[test]
fn rcu_barrier_waits_for_every_earlier_callback() {
    let rcu = Rcu::new(); // default batching: 32 callbacks or 50 ms
    let n = Arc::new(AtomicUsize::new(0));
    let producers: Vec<_> = (0..2)
        .map(|_| {
            let (rcu, n) = (rcu.clone(), n.clone());
            thread::spawn(move || {
                for _ in 0..10_000 {
                    let n = n.clone();
                    rcu.call_rcu(move || {
                        n.fetch_add(1, Ordering::Relaxed);
                    });
                }
            })
        })
        .collect();
    for p in producers {
        p.join().unwrap();
    }
    rcu.rcu_barrier();
    assert_eq!(n.load(Ordering::Relaxed), 20_000);
    let s = rcu.stats();
    assert!(s.batches >= 1 && s.max_batch >= 1);
    assert_eq!(s.callbacks_queued, 20_001); // + the barrier's own callback
}

#[test]
fn poll_completes_only_after_readers_leave() {
    let rcu = Rcu::new();
    let inside = Arc::new(Barrier::new(2));
    let release = Arc::new(AtomicBool::new(false));
    let t = {
        let (rcu, inside, release) = (rcu.clone(), inside.clone(), release.clone());
        thread::spawn(move || {
            let mut me = rcu.register_qsbr();
            inside.wait();
            while !release.load(Ordering::SeqCst) {
                thread::sleep(Duration::from_millis(1));
            }
            me.quiescent_state();
            me.offline();
            inside.wait();
        })
    };
    inside.wait();
    let token = rcu.start_poll();
    thread::sleep(Duration::from_millis(50));
    assert!(
        !rcu.poll(token),
        "grace period completed under an online reader"
    );
    release.store(true, Ordering::SeqCst);
    let t0 = Instant::now();
    while !rcu.poll(token) {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "poll never completed"
        );
        thread::sleep(Duration::from_millis(1));
    }
    inside.wait();
    t.join().unwrap();
    // A token taken now is not yet complete (no grace period began after it)...
    let later = rcu.current_token();
    assert!(!rcu.poll(later));
    // ...until one runs.
    rcu.synchronize();
    assert!(rcu.poll(later));
}

/// Bounded garbage: a writer retiring as fast as it can stays under the high-water mark,
/// while a QSBR reader is active.
#[test]
fn flood_stays_under_the_high_water_mark() {
    const HW: usize = 2_000;
    let rcu = Rcu::builder().high_water(HW).build();
    let live = Arc::new(AtomicUsize::new(0));
    let max_live = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (rcu, stop) = (rcu.clone(), stop.clone());
        thread::spawn(move || {
            let mut me = rcu.register_qsbr();
            while !stop.load(Ordering::Relaxed) {
                me.quiescent_state();
            }
        })
    };
    struct Garbage {
        live: Arc<AtomicUsize>,
        _payload: [u64; 16],
    }
    impl Drop for Garbage {
        fn drop(&mut self) {
            self.live.fetch_sub(1, Ordering::Relaxed);
        }
    }
    let total = 300_000;
    for _ in 0..total {
        let now = live.fetch_add(1, Ordering::Relaxed) + 1;
        max_live.fetch_max(now, Ordering::Relaxed);
        rcu.defer_drop(Garbage {
            live: live.clone(),
            _payload: [0; 16],
        });
    }
    rcu.rcu_barrier();
    stop.store(true, Ordering::Relaxed);
    reader.join().unwrap();
    let s = rcu.stats();
    assert_eq!(live.load(Ordering::Relaxed), 0);
    assert!(s.throttled > 0, "the flood never reached the mark: {s:?}");
    assert!(
        s.max_pending as usize <= HW + 1,
        "pending callbacks exceeded the bound: {s:?}"
    );
    assert!(max_live.load(Ordering::Relaxed) <= HW + 2);
    assert_eq!(s.over_high_water, 0);
}

/// A reader cannot wait for reclamation (it would wait for itself): it is counted instead.
#[test]
fn a_reader_over_the_mark_is_counted_not_blocked() {
    let rcu = Rcu::builder().high_water(10).build();
    {
        let _g = rcu.read_lock();
        for _ in 0..50 {
            rcu.call_rcu(|| {});
        }
    }
    rcu.rcu_barrier();
    assert!(rcu.stats().over_high_water > 0);
}

#[test]
fn qsbr_call_rcu_goes_offline_to_wait_over_the_mark() {
    let rcu = Rcu::builder().high_water(100).build();
    let mut me = rcu.register_qsbr();
    for _ in 0..5_000 {
        me.call_rcu(|| {});
        me.quiescent_state();
    }
    me.rcu_barrier();
    let s = rcu.stats();
    assert!(s.throttled > 0);
    assert!(s.max_pending <= 101, "{s:?}");
}

#[test]
fn dropping_the_domain_runs_pending_callbacks() {
    let n = Arc::new(AtomicUsize::new(0));
    {
        let rcu = Rcu::builder()
            .batch(1_000_000, Duration::from_secs(60))
            .build();
        for _ in 0..100 {
            let n = n.clone();
            rcu.call_rcu(move || {
                n.fetch_add(1, Ordering::SeqCst);
            });
        }
    }
    assert_eq!(n.load(Ordering::SeqCst), 100);
}

/// The start hook runs once, first, on the reclamation thread (the thread that runs the
/// callbacks), not on the caller's; `start_reclaimer` starts that thread with no callback.
#[test]
fn the_start_hook_runs_first_and_once_on_the_reclamation_thread() {
    let (tx, rx) = std::sync::mpsc::channel();
    let calls = Arc::new(AtomicUsize::new(0));
    let rcu = {
        let calls = calls.clone();
        Rcu::builder()
            .batch(1, Duration::from_millis(1))
            .on_reclaimer_start(move || {
                calls.fetch_add(1, Ordering::SeqCst);
                tx.send(thread::current().id()).unwrap();
            })
            .build()
    };
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "no thread before it is needed"
    );
    rcu.start_reclaimer();
    let hook_thread = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("start_reclaimer ran the hook");
    assert_ne!(hook_thread, thread::current().id());
    let ran_on = Arc::new(Mutex::new(None));
    for _ in 0..3 {
        let ran_on = ran_on.clone();
        rcu.call_rcu(move || *ran_on.lock() = Some(thread::current().id()));
        rcu.rcu_barrier();
    }
    rcu.start_reclaimer();
    rcu.rcu_barrier();
    assert_eq!(
        *ran_on.lock(),
        Some(hook_thread),
        "callbacks run where the hook ran"
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "once per reclamation thread"
    );
}

/// A hook that panics does not take reclamation down with it.
#[test]
fn a_panicking_start_hook_does_not_stop_reclamation() {
    let rcu = Rcu::builder()
        .batch(1, Duration::from_millis(1))
        .on_reclaimer_start(|| panic!("deliberate"))
        .build();
    let ran = Arc::new(AtomicBool::new(false));
    {
        let ran = ran.clone();
        rcu.call_rcu(move || ran.store(true, Ordering::SeqCst));
    }
    rcu.rcu_barrier();
    assert!(ran.load(Ordering::SeqCst));
}

/// `rcu_barrier_timeout` gives up while a reader holds the grace period (the callback has not
/// run, and runs once the reader leaves), and returns true when nothing holds it.
#[test]
fn rcu_barrier_timeout_gives_up_under_a_stuck_reader_and_succeeds_without_one() {
    let rcu = fast_domain();
    let ran = Arc::new(AtomicBool::new(false));
    let (entered_tx, entered_rx) = std::sync::mpsc::channel();
    let (leave_tx, leave_rx) = std::sync::mpsc::channel::<()>();
    let r2 = rcu.clone();
    let reader = thread::spawn(move || {
        let _g = r2.read_lock();
        entered_tx.send(()).unwrap();
        let _ = leave_rx.recv();
    });
    entered_rx.recv().unwrap();
    let r3 = ran.clone();
    rcu.call_rcu(move || r3.store(true, Ordering::SeqCst));
    let t = Instant::now();
    assert!(!rcu.rcu_barrier_timeout(Duration::from_millis(200)));
    assert!(t.elapsed() >= Duration::from_millis(200));
    assert!(!ran.load(Ordering::SeqCst), "ran under the reader");
    leave_tx.send(()).unwrap();
    reader.join().unwrap();
    assert!(rcu.rcu_barrier_timeout(Duration::from_secs(60)));
    assert!(ran.load(Ordering::SeqCst));
}
