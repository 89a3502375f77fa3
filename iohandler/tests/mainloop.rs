//! Behaviour of the main loop: handlers, removal semantics, the BQL, bottom halves, timers,
//! call_rcu under the BQL, panics and shutdown.
#![cfg(not(loom))]

mod common;

use common::{drain, spawn_loop, wait_until, Pipe};
use iohandler::{Bql, MainLoop};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(30);

#[test]
fn read_and_write_handlers_run_on_the_loop_under_the_bql() {
    let ml = MainLoop::new().unwrap();
    let p = Pipe::new();
    let reads = Arc::new(AtomicUsize::new(0));
    let bad = Arc::new(AtomicUsize::new(0));
    let (h, t) = spawn_loop(ml);
    let (r2, b2, h2, rfd) = (reads.clone(), bad.clone(), h.clone(), p.rfd());
    h.set_read_handler(rfd, move || {
        if !h2.is_loop_thread() || !h2.bql().held_by_current_thread() {
            b2.fetch_add(1, Ordering::Relaxed);
        }
        r2.fetch_add(drain(rfd), Ordering::Relaxed);
    })
    .unwrap();
    // A write handler on the (empty, hence writable) write end fires once per edge.
    let writable = Arc::new(AtomicUsize::new(0));
    let w2 = writable.clone();
    h.set_fd_handler(
        p.wfd(),
        None,
        Some(Box::new(move || {
            w2.fetch_add(1, Ordering::Relaxed);
        })),
    )
    .unwrap();
    assert_eq!(p.write(10), 10);
    wait_until("10 bytes read", LONG, || {
        reads.load(Ordering::Relaxed) == 10
    });
    wait_until("a writable event", LONG, || {
        writable.load(Ordering::Relaxed) >= 1
    });
    assert_eq!(h.handler_count(), 2);
    let mut fds = h.handler_fds();
    fds.sort();
    assert_eq!(fds, vec![p.rfd(), p.wfd()]);
    assert!(!h.is_loop_thread());
    assert!(!h.bql().held_by_current_thread());
    h.quit();
    t.join().unwrap().unwrap();
    assert_eq!(bad.load(Ordering::Relaxed), 0);
    let s = h.stats();
    assert_eq!(s.handlers, 0, "run() removes every handler on quit");
    assert_eq!(s.handler_records, 0, "and frees them before it returns");
}

#[test]
fn replacing_and_removing_a_handler() {
    let ml = MainLoop::new().unwrap();
    let p = Pipe::new();
    let (h, t) = spawn_loop(ml);
    let first = Arc::new(AtomicUsize::new(0));
    let second = Arc::new(AtomicUsize::new(0));
    let rfd = p.rfd();
    let f2 = first.clone();
    h.set_read_handler(rfd, move || {
        f2.fetch_add(drain(rfd), Ordering::Relaxed);
    })
    .unwrap();
    p.write(1);
    wait_until("first handler", LONG, || first.load(Ordering::Relaxed) == 1);
    let s2 = second.clone();
    h.set_read_handler(rfd, move || {
        s2.fetch_add(drain(rfd), Ordering::Relaxed);
    })
    .unwrap();
    p.write(2);
    wait_until("second handler", LONG, || {
        second.load(Ordering::Relaxed) == 2
    });
    assert_eq!(
        first.load(Ordering::Relaxed),
        1,
        "the replaced handler never runs again"
    );
    assert!(h.remove_fd_handler(rfd));
    assert!(!h.remove_fd_handler(rfd), "a second removal finds nothing");
    // Removing with no callbacks is also a no-op when there is nothing.
    h.set_fd_handler(rfd, None, None).unwrap();
    p.write(3);
    // Prove the loop went round after the write: a bottom half queued now runs after it.
    let done = Arc::new(AtomicBool::new(false));
    let d2 = done.clone();
    h.call_soon(move || d2.store(true, Ordering::Release));
    wait_until("a round", LONG, || done.load(Ordering::Acquire));
    assert_eq!(
        second.load(Ordering::Relaxed),
        2,
        "a removed handler never runs"
    );
    assert_eq!(drain(rfd), 3, "nobody read the bytes written after removal");
    assert!(matches!(
        h.set_read_handler(-1, || {}),
        Err(iohandler::Error::BadFd(-1))
    ));
    h.quit();
    t.join().unwrap().unwrap();
}

/// A handler that, from its callback, removes another handler that is ready in the same round,
/// removes itself, and adds a new handler.
#[test]
fn add_and_remove_while_dispatching() {
    let ml = MainLoop::new().unwrap();
    let (a, b, c) = (Pipe::new(), Pipe::new(), Pipe::new());
    let b_calls = Arc::new(AtomicUsize::new(0));
    let c_calls = Arc::new(AtomicUsize::new(0));
    let a_calls = Arc::new(AtomicUsize::new(0));
    let (h, t) = spawn_loop(ml);
    // B first, so that some rounds see B's event before A's and some after.
    let (bfd, afd, cfd) = (b.rfd(), a.rfd(), c.rfd());
    let b2 = b_calls.clone();
    let b_removed = Arc::new(AtomicBool::new(false));
    let b_removed2 = b_removed.clone();
    h.set_read_handler(bfd, move || {
        assert!(
            !b_removed2.load(Ordering::Relaxed),
            "handler B ran after its removal returned"
        );
        drain(bfd);
        b2.fetch_add(1, Ordering::Relaxed);
    })
    .unwrap();
    let (h2, a2, c2, br) = (
        h.clone(),
        a_calls.clone(),
        c_calls.clone(),
        b_removed.clone(),
    );
    h.set_read_handler(afd, move || {
        drain(afd);
        a2.fetch_add(1, Ordering::Relaxed);
        // Remove B (ready in this very round: both pipes were written before the round).
        assert!(h2.remove_fd_handler(bfd));
        br.store(true, Ordering::Relaxed);
        // Remove ourselves: this callback finishes, but never runs again.
        assert!(h2.remove_fd_handler(afd));
        // Add C from inside dispatch.
        let c3 = c2.clone();
        h2.set_read_handler(cfd, move || {
            drain(cfd);
            c3.fetch_add(1, Ordering::Relaxed);
        })
        .unwrap();
    })
    .unwrap();
    // Make both A and B ready before the loop's next round: hold the BQL (the loop cannot
    // dispatch without it) while writing.
    {
        let _g = h.bql().lock();
        a.write(1);
        b.write(1);
    }
    wait_until("A ran", LONG, || a_calls.load(Ordering::Relaxed) == 1);
    a.write(1);
    b.write(1);
    c.write(1);
    wait_until("C ran", LONG, || c_calls.load(Ordering::Relaxed) == 1);
    // One more round for good measure.
    let done = Arc::new(AtomicBool::new(false));
    let d2 = done.clone();
    h.call_soon(move || d2.store(true, Ordering::Release));
    wait_until("a round", LONG, || done.load(Ordering::Acquire));
    assert_eq!(a_calls.load(Ordering::Relaxed), 1, "A removed itself");
    assert!(
        b_calls.load(Ordering::Relaxed) <= 1,
        "B ran at most before A removed it"
    );
    assert_eq!(h.handler_fds(), vec![cfd]);
    h.quit();
    t.join().unwrap().unwrap();
    assert_eq!(h.stats().handler_records, 0);
}

/// A removal from another thread while the handler is running returns only after the
/// callback has returned.
#[test]
fn removal_from_another_thread_waits_for_a_running_callback() {
    let ml = MainLoop::new().unwrap();
    let p = Pipe::new();
    let (h, t) = spawn_loop(ml);
    let entered = Arc::new(AtomicBool::new(false));
    let release = Arc::new(AtomicBool::new(false));
    let finished = Arc::new(AtomicBool::new(false));
    let (e2, r2, f2, rfd) = (entered.clone(), release.clone(), finished.clone(), p.rfd());
    h.set_read_handler(rfd, move || {
        drain(rfd);
        e2.store(true, Ordering::Release);
        while !r2.load(Ordering::Acquire) {
            std::thread::yield_now();
        }
        f2.store(true, Ordering::Release);
    })
    .unwrap();
    p.write(1);
    wait_until("callback entered", LONG, || entered.load(Ordering::Acquire));
    let remover = {
        let h = h.clone();
        let finished = finished.clone();
        std::thread::spawn(move || {
            assert!(h.remove_fd_handler(rfd));
            // The callback must have returned before the removal did.
            finished.load(Ordering::Acquire)
        })
    };
    // Give the remover time to reach its wait, then let the callback finish.
    std::thread::sleep(Duration::from_millis(50));
    release.store(true, Ordering::Release);
    assert!(
        remover.join().unwrap(),
        "removal returned while the callback was running"
    );
    h.quit();
    t.join().unwrap().unwrap();
}

/// The BQL: not recursive (panics instead of deadlocking), owner tracking, and a thread that
/// waits for it while the loop dispatches a long round gets it between two callbacks.
#[test]
fn bql_is_handed_to_a_waiter_in_the_middle_of_a_round() {
    let ml = MainLoop::new().unwrap();
    const N: usize = 100;
    let pipes: Vec<Pipe> = (0..N).map(|_| Pipe::new()).collect();
    let (h, t) = spawn_loop(ml);
    let calls = Arc::new(AtomicUsize::new(0));
    for p in &pipes {
        let (c, fd) = (calls.clone(), p.rfd());
        h.set_read_handler(fd, move || {
            drain(fd);
            c.fetch_add(1, Ordering::Relaxed);
            // A slow device model.
            std::thread::sleep(Duration::from_millis(2));
        })
        .unwrap();
    }
    let seen_at = {
        let _g = h.bql().lock();
        for p in &pipes {
            p.write(1);
        }
        // Released here: the loop's next round has all N handlers ready.
        drop(_g);
        wait_until("the round started", LONG, || {
            calls.load(Ordering::Relaxed) >= 1
        });
        let g = h.bql().lock();
        assert!(h.bql().held_by_current_thread());
        let at = calls.load(Ordering::Relaxed);
        drop(g);
        at
    };
    assert!(!h.bql().held_by_current_thread());
    assert!(
        seen_at < N,
        "the waiter got the BQL only after the whole round ({seen_at} of {N} callbacks)"
    );
    assert!(h.stats().bql_handoffs >= 1);
    wait_until("all handlers", LONG, || calls.load(Ordering::Relaxed) == N);
    h.quit();
    t.join().unwrap().unwrap();

    let bql = Bql::new();
    let g = bql.lock();
    let again = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| bql.lock()));
    assert!(
        again.is_err(),
        "locking the BQL twice must panic, not deadlock"
    );
    assert!(bql.lock_unless_held().is_none());
    drop(g);
    assert!(bql.try_lock().is_some());
}

#[test]
fn bottom_halves_run_once_per_schedule_and_cancel_works() {
    let ml = MainLoop::new().unwrap();
    let (h, t) = spawn_loop(ml);
    let runs = Arc::new(AtomicUsize::new(0));
    let under_bql = Arc::new(AtomicBool::new(true));
    let (r2, u2, h2) = (runs.clone(), under_bql.clone(), h.clone());
    let bh = h.bottom_half(move || {
        if !(h2.is_loop_thread() && h2.bql().held_by_current_thread()) {
            u2.store(false, Ordering::Relaxed);
        }
        r2.fetch_add(1, Ordering::Relaxed);
    });
    // Scheduled three times before the loop can run it (it needs the BQL): runs once.
    {
        let _g = h.bql().lock();
        bh.schedule();
        bh.schedule();
        bh.schedule();
        assert!(bh.is_scheduled());
    }
    wait_until("bh ran", LONG, || runs.load(Ordering::Relaxed) == 1);
    // Cancelled before it can run: does not run.
    {
        let _g = h.bql().lock();
        bh.schedule();
        bh.cancel();
        assert!(!bh.is_scheduled());
    }
    // Scheduled again after a cancel: runs.
    bh.schedule();
    wait_until("bh ran again", LONG, || runs.load(Ordering::Relaxed) == 2);
    // call_soon from a foreign thread, and a bottom half scheduled by a bottom half.
    let order = Arc::new(Mutex::new(Vec::new()));
    let (o2, h3) = (order.clone(), h.clone());
    std::thread::spawn(move || {
        let o3 = o2.clone();
        h3.call_soon(move || {
            o2.lock().unwrap().push(1);
        });
        let h4 = h3.clone();
        h3.call_soon(move || {
            h4.call_soon(move || o3.lock().unwrap().push(3));
        });
    })
    .join()
    .unwrap();
    wait_until("nested call_soon", LONG, || {
        order.lock().unwrap().len() == 2
    });
    assert_eq!(*order.lock().unwrap(), vec![1, 3]);
    assert!(under_bql.load(Ordering::Relaxed));
    drop(bh);
    h.quit();
    t.join().unwrap().unwrap();
    assert_eq!(runs.load(Ordering::Relaxed), 2);
}

#[test]
fn timers_fire_in_deadline_order_and_can_be_cancelled() {
    let ml = MainLoop::new().unwrap();
    let (h, t) = spawn_loop(ml);
    let order = Arc::new(Mutex::new(Vec::new()));
    let mk = |n: u32| {
        let o = order.clone();
        let h2 = h.clone();
        h.timer(move || {
            assert!(h2.bql().held_by_current_thread());
            o.lock().unwrap().push(n)
        })
    };
    let (t30, t10, t20, cancelled) = (mk(30), mk(10), mk(20), mk(99));
    let now = Instant::now();
    t30.arm_at(now + Duration::from_millis(30));
    t10.arm_at(now + Duration::from_millis(10));
    t20.arm_at(now + Duration::from_millis(20));
    cancelled.arm_at(now + Duration::from_millis(15));
    assert!(cancelled.is_armed());
    cancelled.cancel();
    assert!(!cancelled.is_armed());
    wait_until("three timers", LONG, || order.lock().unwrap().len() == 3);
    assert_eq!(*order.lock().unwrap(), vec![10, 20, 30]);
    assert!(!t10.is_armed(), "one-shot timers disarm after firing");

    // Periodic: fires repeatedly until cancelled; then never again.
    let ticks = Arc::new(AtomicUsize::new(0));
    let t2 = ticks.clone();
    let periodic = h.timer(move || {
        t2.fetch_add(1, Ordering::Relaxed);
    });
    periodic.arm_periodic(Duration::from_millis(2));
    wait_until("five ticks", LONG, || ticks.load(Ordering::Relaxed) >= 5);
    periodic.cancel();
    let after_cancel = ticks.load(Ordering::Relaxed);
    // Several rounds later, no more ticks.
    for _ in 0..5 {
        let done = Arc::new(AtomicBool::new(false));
        let d2 = done.clone();
        h.call_soon(move || d2.store(true, Ordering::Release));
        wait_until("a round", LONG, || done.load(Ordering::Acquire));
    }
    std::thread::sleep(Duration::from_millis(10));
    assert_eq!(ticks.load(Ordering::Relaxed), after_cancel);

    // A timer re-armed from its own callback through a shared slot.
    let slot: Arc<Mutex<Option<iohandler::Timer>>> = Arc::new(Mutex::new(None));
    let count = Arc::new(AtomicUsize::new(0));
    let (s2, c2) = (Arc::downgrade(&slot), count.clone());
    let rearming = h.timer(move || {
        if c2.fetch_add(1, Ordering::Relaxed) < 2 {
            if let Some(s) = s2.upgrade() {
                s.lock()
                    .unwrap()
                    .as_ref()
                    .unwrap()
                    .arm(Duration::from_millis(1));
            }
        }
    });
    rearming.arm(Duration::from_millis(1));
    *slot.lock().unwrap() = Some(rearming);
    wait_until("three re-armed firings", LONG, || {
        count.load(Ordering::Relaxed) == 3
    });
    drop(slot);
    h.quit();
    t.join().unwrap().unwrap();
    assert!(h.stats().timer_fires >= 3 + 5 + 3);
}

/// The VMM's domain runs call_rcu callbacks under the BQL; handler records (and so the
/// closures they own) are dropped there too.
#[test]
fn call_rcu_callbacks_and_handler_drops_run_under_the_bql() {
    let bql = Bql::new();
    let rcu = iohandler::rcu_domain(&bql);
    let observed = Arc::new(Mutex::new(None));
    let (o2, b2) = (observed.clone(), bql.clone());
    rcu.call_rcu(move || {
        *o2.lock().unwrap() = Some(b2.held_by_current_thread());
    });
    rcu.rcu_barrier();
    assert_eq!(*observed.lock().unwrap(), Some(true));

    // rcu_barrier under the BQL would deadlock: the rcu crate sees the BQL held and panics.
    let g = bql.lock();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rcu.rcu_barrier()));
    assert!(r.is_err());
    drop(g);

    struct DropProbe(Arc<Bql>, Arc<Mutex<Option<bool>>>);
    impl Drop for DropProbe {
        fn drop(&mut self) {
            *self.1.lock().unwrap() = Some(self.0.held_by_current_thread());
        }
    }
    let ml = MainLoop::with_domain(bql.clone(), rcu.clone()).unwrap();
    let p = Pipe::new();
    let dropped = Arc::new(Mutex::new(None));
    let probe = DropProbe(bql.clone(), dropped.clone());
    ml.set_read_handler(p.rfd(), move || {
        let _keep = &probe;
    })
    .unwrap();
    assert!(ml.remove_fd_handler(p.rfd()));
    rcu.rcu_barrier();
    assert_eq!(
        *dropped.lock().unwrap(),
        Some(true),
        "handler dropped under the BQL"
    );
    assert_eq!(ml.stats().handler_records, 0);
}

/// Captures error logs, to check that panics are reported.
struct Capture;
static ERRORS: Mutex<Vec<String>> = Mutex::new(Vec::new());
impl log::Log for Capture {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::Level::Warn
    }
    fn log(&self, r: &log::Record) {
        if r.level() == log::Level::Error {
            ERRORS.lock().unwrap().push(r.args().to_string());
        }
    }
    fn flush(&self) {}
}

/// A handler that panics is logged, counted and removed; the loop goes on with the others.
#[test]
fn a_panicking_handler_is_reported_and_removed_and_the_loop_goes_on() {
    let _ = log::set_logger(&Capture);
    log::set_max_level(log::LevelFilter::Warn);
    let ml = MainLoop::new().unwrap();
    let (bad, good) = (Pipe::new(), Pipe::new());
    let (h, t) = spawn_loop(ml);
    let bad_calls = Arc::new(AtomicUsize::new(0));
    let good_bytes = Arc::new(AtomicUsize::new(0));
    let (bc, bfd) = (bad_calls.clone(), bad.rfd());
    h.set_read_handler(bfd, move || {
        bc.fetch_add(1, Ordering::Relaxed);
        panic!("device model bug (deliberate, from a test)");
    })
    .unwrap();
    let (gb, gfd) = (good_bytes.clone(), good.rfd());
    h.set_read_handler(gfd, move || {
        gb.fetch_add(drain(gfd), Ordering::Relaxed);
    })
    .unwrap();
    bad.write(1);
    wait_until("the panic", LONG, || h.stats().handler_panics == 1);
    assert_eq!(
        h.handler_fds(),
        vec![gfd],
        "the panicking handler was removed"
    );
    bad.write(1);
    good.write(5);
    wait_until("the good handler", LONG, || {
        good_bytes.load(Ordering::Relaxed) == 5
    });
    assert_eq!(bad_calls.load(Ordering::Relaxed), 1);
    assert!(ERRORS
        .lock()
        .unwrap()
        .iter()
        .any(|m| m.contains(&format!("fd {bfd}")) && m.contains("deliberate")));
    // A panicking timer and bottom half are disabled the same way.
    let tm = h.timer(|| panic!("timer bug (deliberate)"));
    tm.arm(Duration::from_millis(1));
    let bh = h.bottom_half(|| panic!("bh bug (deliberate)"));
    bh.schedule();
    wait_until("both panics", LONG, || {
        let s = h.stats();
        s.timer_panics == 1 && s.bh_panics == 1
    });
    tm.arm(Duration::from_millis(1));
    bh.schedule();
    assert!(
        !tm.is_armed() && !bh.is_scheduled(),
        "disabled after a panic"
    );
    h.quit();
    t.join().unwrap().unwrap();
}

/// quit() from another thread: run() returns with every handler dropped and every call_rcu
/// callback queued before the quit already run.
#[test]
fn quit_drops_handlers_and_drains_call_rcu() {
    let ml = MainLoop::new().unwrap();
    let pipes: Vec<Pipe> = (0..16).map(|_| Pipe::new()).collect();
    let (h, t) = spawn_loop(ml);
    let live = Arc::new(AtomicUsize::new(0));
    struct Counted(Arc<AtomicUsize>);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::Relaxed);
        }
    }
    for p in &pipes {
        live.fetch_add(1, Ordering::Relaxed);
        let c = Counted(live.clone());
        h.set_read_handler(p.rfd(), move || {
            let _ = &c;
        })
        .unwrap();
    }
    let ran = Arc::new(AtomicBool::new(false));
    let r2 = ran.clone();
    h.rcu().call_rcu(move || r2.store(true, Ordering::Release));
    let quitter = {
        let h = h.clone();
        std::thread::spawn(move || h.quit())
    };
    quitter.join().unwrap();
    t.join().unwrap().unwrap();
    assert_eq!(
        live.load(Ordering::Relaxed),
        0,
        "every handler closure was dropped"
    );
    assert!(
        ran.load(Ordering::Acquire),
        "pending call_rcu callbacks were drained"
    );
    assert_eq!(h.stats().handler_records, 0);

    // quit() before run() makes run() return at once; the loop can run again after a quit.
    let mut ml = MainLoop::new().unwrap();
    ml.quit();
    ml.run().unwrap();
    let p = Pipe::new();
    let (h2, rfd, got) = (ml.handle(), p.rfd(), Arc::new(AtomicUsize::new(0)));
    let g2 = got.clone();
    ml.set_read_handler(rfd, move || {
        g2.fetch_add(drain(rfd), Ordering::Relaxed);
        h2.quit();
    })
    .unwrap();
    p.write(4);
    ml.run().unwrap();
    assert_eq!(got.load(Ordering::Relaxed), 4);
    assert_eq!(ml.stats().handler_records, 0);
}

/// Quit is bounded even when an RCU reader of the loop's domain never reports: `run` waits at
/// most `QUIT_BARRIER_BOUND` for the removed handlers, then returns without them (they are
/// dropped once the reader reports). With an unbounded barrier, `run` would never return.
#[test]
fn quit_returns_within_its_bound_while_a_reader_is_stuck() {
    let ml = MainLoop::new().unwrap();
    let p = Pipe::new();
    let (h, t) = spawn_loop(ml);
    let dropped = Arc::new(AtomicBool::new(false));
    struct Flag(Arc<AtomicBool>);
    impl Drop for Flag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Release);
        }
    }
    let f = Flag(dropped.clone());
    h.set_read_handler(p.rfd(), move || {
        let _ = &f;
    })
    .unwrap();
    // A stuck reader: a thread in a read-side section until told to leave.
    let (entered_tx, entered_rx) = std::sync::mpsc::channel();
    let (leave_tx, leave_rx) = std::sync::mpsc::channel::<()>();
    let rcu = h.rcu().clone();
    let reader = std::thread::spawn(move || {
        let _g = rcu.read_lock();
        entered_tx.send(()).unwrap();
        let _ = leave_rx.recv();
    });
    entered_rx.recv().unwrap();
    let quit_at = Instant::now();
    h.quit();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || done_tx.send(t.join().unwrap()).unwrap());
    let res = done_rx
        .recv_timeout(iohandler::QUIT_BARRIER_BOUND + LONG)
        .expect("run() did not return while a reader was stuck");
    res.unwrap();
    assert!(quit_at.elapsed() >= iohandler::QUIT_BARRIER_BOUND);
    assert!(
        !dropped.load(Ordering::Acquire),
        "the handler cannot be freed under the stuck reader"
    );
    leave_tx.send(()).unwrap();
    reader.join().unwrap();
    h.rcu().rcu_barrier();
    assert!(
        dropped.load(Ordering::Acquire),
        "freed once the reader left"
    );
}

/// A device's queue-notify handler (an eventfd, as a virtio disk's ioeventfd) added and
/// removed over and over from another thread while another eventfd handler is busy: the
/// busy handler keeps being served, each added handler is served (it was ready when added),
/// and no add or removal waits for long. This is how a disk's handler would come and go
/// while the guest runs.
#[test]
fn eventfd_handlers_come_and_go_while_another_is_busy_without_stalling_the_loop() {
    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
    let ml = MainLoop::new().unwrap();
    let (h, t) = spawn_loop(ml);
    let busy = Arc::new(EventFd::new(EFD_NONBLOCK).unwrap());
    let busy_calls = Arc::new(AtomicUsize::new(0));
    {
        let (b, n) = (busy.clone(), busy_calls.clone());
        h.set_read_handler(std::os::fd::AsRawFd::as_raw_fd(&*busy), move || {
            let _ = b.read();
            n.fetch_add(1, Ordering::Relaxed);
        })
        .unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (b, stop) = (busy.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let _ = b.write(1);
                std::thread::sleep(Duration::from_micros(200));
            }
        })
    };
    // The busy handler's progress, sampled: the longest time it was not served.
    let watcher = {
        let (n, stop) = (busy_calls.clone(), stop.clone());
        std::thread::spawn(move || {
            let (mut last, mut since, mut worst) = (0, Instant::now(), Duration::ZERO);
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(5));
                let now = n.load(Ordering::Relaxed);
                if now != last {
                    (last, since) = (now, Instant::now());
                }
                worst = worst.max(since.elapsed());
            }
            worst
        })
    };
    let mut slowest = Duration::ZERO;
    for i in 0..300 {
        let fd = EventFd::new(EFD_NONBLOCK).unwrap();
        fd.write(1).unwrap();
        let served = Arc::new(AtomicUsize::new(0));
        let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
        let s2 = served.clone();
        let t0 = Instant::now();
        h.set_read_handler(raw, move || {
            let _ = fd.read();
            s2.fetch_add(1, Ordering::Relaxed);
        })
        .unwrap();
        slowest = slowest.max(t0.elapsed());
        wait_until(&format!("added handler {i} served"), LONG, || {
            served.load(Ordering::Relaxed) == 1
        });
        let t0 = Instant::now();
        assert!(h.remove_fd_handler(raw), "handler {i} was registered");
        slowest = slowest.max(t0.elapsed());
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let starved = watcher.join().unwrap();
    assert!(
        slowest < Duration::from_secs(1),
        "an add or removal took {slowest:?}"
    );
    assert!(
        starved < Duration::from_secs(1),
        "the busy handler went {starved:?} without being served"
    );
    assert!(busy_calls.load(Ordering::Relaxed) > 0);
    h.quit();
    t.join().unwrap().unwrap();
}
