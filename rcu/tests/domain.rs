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
fn reading_with_another_domains_qsbr_thread_panics() {
    let a = Rcu::new();
    let b = Rcu::new();
    let cell = RcuCell::new_in(&a, Some(1));
    let me = b.register_qsbr();
    let _ = cell.load(&me);
}

/// A `ReadGuard` of another domain aborts the process with a message naming the caller's line
/// (a panic would make every section keep its guard in memory for the unwinder). The test runs
/// itself in a child process that does the bad read.
#[test]
fn reading_with_another_domains_guard_aborts_with_a_message() {
    const CHILD: &str = "RCU_TEST_FOREIGN_GUARD_CHILD";
    if std::env::var_os(CHILD).is_some() {
        let a = Rcu::new();
        let b = Rcu::new();
        let cell = RcuCell::new_in(&a, Some(1));
        let g = b.read_lock();
        let _ = cell.load(&g);
        println!("the read through a foreign guard returned");
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "reading_with_another_domains_guard_aborts_with_a_message",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .output()
        .unwrap();
    use std::os::unix::process::ExitStatusExt;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGABRT),
        "{:?}: {stderr}",
        out.status
    );
    assert!(
        stderr.contains("tests/domain.rs:") && stderr.contains("another RCU domain"),
        "{stderr}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("returned"));
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

/// Runs `body` on a thread; it must call the function it is given exactly once, while it is
/// on the domain's read side, and leave the read side before it returns. Checks that
/// `synchronize` waits for that reader until it has left, and no longer.
fn synchronize_waits_for(rcu: &Rcu, body: impl FnOnce(&Rcu, &dyn Fn()) + Send + 'static) {
    let inside = Arc::new(Barrier::new(2));
    let released = Arc::new(AtomicBool::new(false));
    let t = {
        let (rcu, inside, released) = (rcu.clone(), inside.clone(), released.clone());
        thread::spawn(move || {
            body(&rcu, &|| {
                inside.wait();
                thread::sleep(Duration::from_millis(50));
                released.store(true, Ordering::SeqCst);
            });
            // Still registered, outside any section: must not hold up grace periods.
            thread::sleep(Duration::from_millis(300));
        })
    };
    inside.wait();
    assert!(
        synchronize_within(rcu, Duration::from_secs(5)),
        "the reader left, but the grace period still waits for it"
    );
    assert!(
        released.load(Ordering::SeqCst),
        "grace period ended while a reader was inside"
    );
    assert!(
        synchronize_within(rcu, Duration::from_millis(250)),
        "the reader left, but grace periods still wait for it"
    );
    t.join().unwrap();
}

/// Runs `synchronize` on another thread; whether it returned within `limit` (so that a grace
/// period that never ends fails a test instead of hanging it).
fn synchronize_within(rcu: &Rcu, limit: Duration) -> bool {
    let (done, finished) = std::sync::mpsc::channel();
    let writer = rcu.clone();
    thread::spawn(move || {
        writer.synchronize();
        let _ = done.send(());
    });
    finished.recv_timeout(limit).is_ok()
}

/// Both modes' outermost unlock, which take different paths (a membarrier domain's inline, a
/// fence domain's out of line with the nested levels), end the section exactly at the
/// outermost level, also when the thread alternates between the two domains' sections.
#[test]
fn read_lock_sections_end_exactly_at_the_outermost_unlock_in_both_modes() {
    let mb = Rcu::new();
    let fence = Rcu::builder().membarrier(false).build();
    for (rcu, other) in [(&mb, &fence), (&fence, &mb)] {
        synchronize_waits_for(rcu, |r, inside| {
            let _g = r.read_lock();
            inside();
        });
        let other = other.clone();
        synchronize_waits_for(rcu, move |r, inside| {
            let a = r.read_lock();
            let o = other.read_lock();
            let b = r.read_lock();
            drop(o);
            let c = r.read_lock();
            drop(c);
            drop(b);
            // Only `a` is left: the nested exits must not have ended the section.
            inside();
            drop(a);
        });
    }
}

/// The nesting depth has room for 127 levels in both modes; the 128th panics and says why.
#[test]
fn read_lock_nests_127_deep_in_both_modes_and_then_panics() {
    for rcu in [Rcu::new(), Rcu::builder().membarrier(false).build()] {
        let cell = RcuCell::new_in(&rcu, Some(3u8));
        let r = rcu.clone();
        let err = thread::spawn(move || {
            let mut guards = Vec::new();
            for _ in 0..127 {
                guards.push(r.read_lock());
            }
            assert_eq!(cell.load(guards.last().unwrap()), Some(&3));
            let _one_too_many = r.read_lock();
        })
        .join()
        .expect_err("the 128th level must panic");
        let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(msg.contains("nested more than 127 deep"), "{msg}");
        // The panic unwound every level: the thread's exit left nothing behind.
        let t0 = Instant::now();
        rcu.synchronize();
        assert!(t0.elapsed() < Duration::from_secs(1));
    }
}

/// A `QsbrCellReader` keeps its thread online: a grace period waits for it until it reports
/// a quiescent state through the reader, and its loads see the new value afterwards.
#[test]
fn qsbr_cell_reader_reports_quiescent_states() {
    let rcu = Rcu::new();
    let cell = Arc::new(RcuCell::new_in(&rcu, Some(1u64)));
    let c = cell.clone();
    synchronize_waits_for(&rcu, move |r, inside| {
        let mut me = r.register_qsbr();
        let mut reader = c.qsbr_reader(&mut me);
        assert_eq!(reader.load(), Some(&1));
        inside();
        reader.quiescent_state();
        me.offline();
    });
    let old = cell.store(Some(2)).unwrap();
    assert_eq!(*old.synchronize(), 1);
    let mut me = rcu.register_qsbr();
    let mut reader = cell.qsbr_reader(&mut me);
    assert_eq!(reader.load(), Some(&2));
    reader.quiescent_state();
    assert_eq!(reader.load(), Some(&2));
}

#[test]
#[should_panic(expected = "offline QsbrThread")]
fn qsbr_cell_reader_of_an_offline_thread_panics() {
    let rcu = Rcu::new();
    let cell = RcuCell::new_in(&rcu, Some(1u64));
    let mut me = rcu.register_qsbr();
    me.offline();
    let _ = cell.qsbr_reader(&mut me);
}

#[test]
#[should_panic(expected = "another RCU domain")]
fn qsbr_cell_reader_of_another_domain_panics() {
    let (a, b) = (Rcu::new(), Rcu::new());
    let cell = RcuCell::new_in(&a, Some(1u64));
    let mut me = b.register_qsbr();
    let _ = cell.qsbr_reader(&mut me);
}
