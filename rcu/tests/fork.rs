//! `fork()` from a multi-threaded process (issue 13, item 6): in the child only the forking
//! thread exists, yet at the moment of the fork other threads of the parent were readers (a
//! QSBR thread online, a read-lock section open), another was in the middle of a grace period
//! (holding the grace-period lock, waiting for them), and the reclamation thread was running.
//! The child must still be able to `synchronize`, `call_rcu` and `rcu_barrier`; the parent must
//! be unaffected. Before the atfork handlers, the child hung in `synchronize`.

use rcu::{Rcu, RcuCell};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

/// The child's part: returns its exit code (0: pass). Runs on the only thread of the child.
fn in_child(rcu: &Rcu, cell: &RcuCell<u64>) -> i32 {
    // SAFETY: alarm only arms a timer; SIGALRM's default action ends a hung child.
    unsafe { libc::alarm(20) };
    // Only this thread's registrations survive.
    if rcu.reader_count() > 1 {
        return 10;
    }
    // A grace period, with the parent's readers (gone here) not waited for.
    let old = cell.store(Some(2)).expect("the cell held a value");
    if *old.synchronize() != 1 {
        return 11;
    }
    // call_rcu + rcu_barrier: the reclamation thread is restarted lazily.
    let ran = Arc::new(AtomicBool::new(false));
    let r = ran.clone();
    rcu.call_rcu(move || r.store(true, Ordering::SeqCst));
    rcu.rcu_barrier();
    if !ran.load(Ordering::SeqCst) {
        return 12;
    }
    // This thread may still read and register anew.
    {
        let g = rcu.read_lock();
        if cell.load(&g).copied() != Some(2) {
            return 13;
        }
    }
    let t = thread::spawn({
        let rcu = rcu.clone();
        move || {
            let mut me = rcu.register_qsbr();
            me.quiescent_state();
        }
    });
    if t.join().is_err() {
        return 14;
    }
    rcu.synchronize();
    0
}

#[test]
fn the_child_of_fork_can_synchronize_and_reclaim() {
    let rcu = Rcu::builder().batch(1, Duration::from_millis(1)).build();
    let cell = Arc::new(RcuCell::new_in(&rcu, Some(1u64)));
    // Start the reclamation thread.
    rcu.call_rcu(|| {});
    rcu.rcu_barrier();
    // This thread has a read-lock registration of its own (kept in the child).
    drop(rcu.read_lock());

    let stop = Arc::new(AtomicBool::new(false));
    let ready = Arc::new(Barrier::new(3));
    // A QSBR thread that stays online without quiescent states until told to stop.
    let qsbr = {
        let (rcu, stop, ready) = (rcu.clone(), stop.clone(), ready.clone());
        thread::spawn(move || {
            let mut me = rcu.register_qsbr();
            ready.wait();
            while !stop.load(Ordering::SeqCst) {
                thread::sleep(Duration::from_millis(1));
            }
            me.quiescent_state();
        })
    };
    // A read-lock reader inside its section.
    let locker = {
        let (rcu, stop, ready) = (rcu.clone(), stop.clone(), ready.clone());
        thread::spawn(move || {
            let g = rcu.read_lock();
            ready.wait();
            while !stop.load(Ordering::SeqCst) {
                thread::sleep(Duration::from_millis(1));
            }
            drop(g);
        })
    };
    ready.wait();
    // A writer inside a grace period that waits for both.
    let (gp_started, gp_rx) = mpsc::channel();
    let writer = {
        let rcu = rcu.clone();
        thread::spawn(move || {
            gp_started.send(()).unwrap();
            let t = Instant::now();
            rcu.synchronize();
            t.elapsed()
        })
    };
    gp_rx.recv().unwrap();
    thread::sleep(Duration::from_millis(50));

    // SAFETY: fork() in a multi-threaded process; the child only runs in_child (the rcu crate,
    // the allocator and a thread spawn, all fork-safe with glibc) and leaves with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed: {}", std::io::Error::last_os_error());
    if pid == 0 {
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| in_child(&rcu, &cell)))
            .unwrap_or(99);
        // SAFETY: ends the child without running the parent's exit handlers or test harness.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waits for our own child.
    let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(rc, pid);
    stop.store(true, Ordering::SeqCst);
    qsbr.join().unwrap();
    locker.join().unwrap();
    let waited = writer.join().unwrap();
    assert!(
        waited >= Duration::from_millis(50),
        "the parent's grace period waited for its readers"
    );
    assert!(
        libc::WIFEXITED(status),
        "the child did not exit normally (signal {}: SIGALRM means it hung)",
        if libc::WIFSIGNALED(status) {
            libc::WTERMSIG(status)
        } else {
            0
        }
    );
    let code = libc::WEXITSTATUS(status);
    assert_eq!(
        code, 0,
        "the child failed step {code} (10: stale registrations, 11: synchronize, \
         12: call_rcu/rcu_barrier, 13: read_lock, 14: new QSBR thread, 99: panic)"
    );
    // The parent is unaffected.
    let old = cell.store(Some(3)).unwrap();
    assert_eq!(*old.synchronize(), 1);
    rcu.call_rcu(|| {});
    rcu.rcu_barrier();
}
