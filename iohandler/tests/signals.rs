//! SIGTERM (and any other signal) arrives as an fd handler and shuts the loop down cleanly.
//!
//! Its own test binary with its own `main` (harness = false): the signals must be blocked in
//! every thread, which only works if they are blocked before any thread exists, as the VMM's
//! `main` does with `block_termination_signals()`.

#[cfg(not(loom))]
fn main() {
    use iohandler::MainLoop;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    iohandler::block_termination_signals().expect("block SIGINT/SIGTERM");
    iohandler::signals::block_signals(&[libc::SIGUSR1]).expect("block SIGUSR1");

    let mut ml = MainLoop::new().expect("main loop");
    let got = Arc::new(Mutex::new(Vec::new()));
    let g2 = got.clone();
    ml.on_signals(&[libc::SIGUSR1], move |sig| g2.lock().unwrap().push(sig))
        .expect("SIGUSR1 handler");
    ml.quit_on_termination_signals().expect("SIGTERM handler");
    assert_eq!(ml.handler_count(), 2);

    let started = Arc::new(AtomicBool::new(false));
    let s2 = started.clone();
    ml.call_soon(move || s2.store(true, Ordering::Release));
    let h = ml.handle();
    let sender = std::thread::spawn(move || {
        while !started.load(Ordering::Acquire) {
            std::thread::yield_now();
        }
        // SAFETY: kill/getpid have no memory-safety preconditions; the signals are blocked in
        // every thread, so they stay pending until the signalfd reads them.
        unsafe { libc::kill(libc::getpid(), libc::SIGUSR1) };
        while h.stats().handler_calls == 0 {
            std::thread::yield_now();
        }
        // SAFETY: as above.
        unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
    });
    ml.run().expect("run");
    sender.join().unwrap();
    assert_eq!(*got.lock().unwrap(), vec![libc::SIGUSR1]);
    let s = ml.stats();
    assert!(
        s.handler_calls >= 2,
        "both signals came through the signalfd handlers"
    );
    assert_eq!(s.handlers, 0);
    assert_eq!(
        s.handler_records, 0,
        "the signalfd handlers were dropped before run returned"
    );
    println!("signals: 1 passed, 0 failed");
}

#[cfg(loom)]
fn main() {}
