//! Behaviour of the domain: both reader kinds, synchronize, thread exit, misuse panics.

use rcu::{Rcu, RcuCell};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

#[test]
fn synchronize_with_no_readers_returns() {
    let rcu = Rcu::new();
    rcu.synchronize();
    rcu.synchronize();
    assert_eq!(rcu.stats().grace_periods, 2);
}

#[test]
fn read_lock_nests_and_loads() {
    let rcu = Rcu::new();
    let cell = RcuCell::new_in(&rcu, Some(7u64));
    let g1 = rcu.read_lock();
    {
        let g2 = rcu.read_lock();
        assert_eq!(cell.load(&g2), Some(&7));
    }
    assert_eq!(cell.load(&g1), Some(&7));
    drop(g1);
    let old = cell.store(Some(8)).unwrap();
    assert_eq!(*old.synchronize(), 7);
    assert_eq!(cell.load(&rcu.read_lock()), Some(&8));
}

/// A writer's synchronize must wait for a read-lock reader that began before it.
#[test]
fn synchronize_waits_for_a_read_lock_reader() {
    let rcu = Rcu::new();
    let inside = Arc::new(Barrier::new(2));
    let released = Arc::new(AtomicBool::new(false));
    let t = {
        let (rcu, inside, released) = (rcu.clone(), inside.clone(), released.clone());
        thread::spawn(move || {
            let g = rcu.read_lock();
            inside.wait();
            thread::sleep(Duration::from_millis(50));
            released.store(true, Ordering::SeqCst);
            drop(g);
        })
    };
    inside.wait();
    rcu.synchronize();
    assert!(
        released.load(Ordering::SeqCst),
        "grace period ended while a reader was inside"
    );
    t.join().unwrap();
}

/// ... and for an online QSBR thread until it reports a quiescent state.
#[test]
fn synchronize_waits_for_an_online_qsbr_thread() {
    let rcu = Rcu::new();
    let ready = Arc::new(Barrier::new(2));
    let quiesced = Arc::new(AtomicBool::new(false));
    let t = {
        let (rcu, ready, quiesced) = (rcu.clone(), ready.clone(), quiesced.clone());
        thread::spawn(move || {
            let mut me = rcu.register_qsbr();
            ready.wait();
            thread::sleep(Duration::from_millis(50));
            quiesced.store(true, Ordering::SeqCst);
            me.quiescent_state();
            // Offline threads never hold up grace periods.
            me.offline();
            thread::sleep(Duration::from_millis(50));
        })
    };
    ready.wait();
    rcu.synchronize();
    assert!(quiesced.load(Ordering::SeqCst));
    let t0 = Instant::now();
    rcu.synchronize(); // the thread is offline or sleeping offline: no wait
    assert!(t0.elapsed() < Duration::from_millis(45));
    t.join().unwrap();
}

#[test]
fn offline_while_releases_grace_periods() {
    let rcu = Rcu::new();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let ready = Arc::new(Barrier::new(2));
    let t = {
        let (rcu, ready) = (rcu.clone(), ready.clone());
        thread::spawn(move || {
            let mut me = rcu.register_qsbr();
            me.offline_while(|| {
                ready.wait();
                rx.recv().unwrap(); // a "blocking KVM_RUN"
            });
            assert!(me.is_online());
        })
    };
    ready.wait();
    rcu.synchronize(); // must not wait for the blocked thread
    tx.send(()).unwrap();
    t.join().unwrap();
}

/// A thread that exits while registered (even with a leaked QSBR handle) never stalls.
#[test]
fn exited_threads_are_unregistered() {
    let rcu = Rcu::new();
    let r2 = rcu.clone();
    thread::spawn(move || {
        let _g = r2.read_lock();
        drop(_g);
        let me = r2.register_qsbr();
        std::mem::forget(me); // online, leaked
    })
    .join()
    .unwrap();
    assert_eq!(rcu.reader_count(), 0);
    rcu.synchronize();
}

#[test]
#[should_panic(expected = "inside a read_lock() section")]
fn synchronize_inside_read_lock_panics() {
    let rcu = Rcu::new();
    let _g = rcu.read_lock();
    rcu.synchronize();
}

#[test]
#[should_panic(expected = "QsbrThread is online")]
fn synchronize_on_online_qsbr_thread_panics() {
    let rcu = Rcu::new();
    let _me = rcu.register_qsbr();
    rcu.synchronize();
}

#[test]
fn qsbr_synchronize_goes_offline_for_the_wait() {
    let rcu = Rcu::new();
    let mut me = rcu.register_qsbr();
    me.synchronize();
    assert!(me.is_online());
}

#[test]
#[should_panic(expected = "offline QsbrThread")]
fn reading_through_an_offline_handle_panics() {
    let rcu = Rcu::new();
    let cell = RcuCell::new_in(&rcu, Some(1));
    let mut me = rcu.register_qsbr();
    me.offline();
    let _ = cell.load(&me);
}

#[test]
#[should_panic(expected = "another RCU domain")]
fn reading_with_another_domains_reader_panics() {
    let a = Rcu::new();
    let b = Rcu::new();
    let cell = RcuCell::new_in(&a, Some(1));
    let g = b.read_lock();
    let _ = cell.load(&g);
}

/// Concurrent synchronize callers share grace periods, and all of them return.
#[test]
fn concurrent_synchronize_callers_share_grace_periods() {
    let rcu = Rcu::new();
    let n = 4;
    let per = 500;
    let done = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (rcu, stop) = (rcu.clone(), stop.clone());
        thread::spawn(move || {
            let mut me = rcu.register_qsbr();
            while !stop.load(Ordering::Relaxed) {
                me.quiescent_state();
                std::hint::spin_loop();
            }
        })
    };
    let ts: Vec<_> = (0..n)
        .map(|_| {
            let (rcu, done) = (rcu.clone(), done.clone());
            thread::spawn(move || {
                for _ in 0..per {
                    rcu.synchronize();
                }
                done.fetch_add(1, Ordering::SeqCst);
            })
        })
        .collect();
    for t in ts {
        t.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    reader.join().unwrap();
    let s = rcu.stats();
    assert_eq!(done.load(Ordering::SeqCst), n);
    assert_eq!(s.grace_periods + s.shared_grace_periods, (n * per) as u64);
}

#[test]
fn membarrier_is_used_where_available_and_can_be_disabled() {
    let no = Rcu::builder().membarrier(false).build();
    assert!(!no.uses_membarrier());
    let yes = Rcu::new();
    // On Linux >= 4.14 this is true; elsewhere the fallback is a real fence.
    if cfg!(target_os = "linux") {
        eprintln!("membarrier in use: {}", yes.uses_membarrier());
    }
    let cell = RcuCell::new_in(&no, Some(1));
    assert_eq!(cell.load(&no.read_lock()), Some(&1));
    drop(cell.store(Some(2)).unwrap().synchronize());
}
