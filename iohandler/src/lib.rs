//! `iohandler`: the VMM's main loop on mio, with RCU-managed fd handlers, bottom halves,
//! timers, and the big global lock (BQL) under which `call_rcu` callbacks run.
//!
//! # The pieces
//!
//! * [`MainLoop`] owns the epoll instance and runs on one thread ([`MainLoop::run`]);
//!   [`LoopHandle`] (cloneable, `Send + Sync`) is what every other thread and every callback
//!   uses: [`set_fd_handler`](LoopHandle::set_fd_handler) in the manner of QEMU's
//!   `qemu_set_fd_handler`, [`bottom_half`](LoopHandle::bottom_half) /
//!   [`call_soon`](LoopHandle::call_soon), [`timer`](LoopHandle::timer),
//!   [`quit`](LoopHandle::quit), [`quit_on_termination_signals`](LoopHandle::quit_on_termination_signals).
//! * [`Bql`] is the big lock, with owner tracking; [`rcu_domain`] builds the VMM's RCU domain
//!   whose `call_rcu` callbacks run holding it.
//!
//! # Who holds the BQL when
//!
//! | who | holds the BQL | RCU state |
//! |---|---|---|
//! | loop thread, blocked in `epoll_wait` | **no** | QSBR offline |
//! | loop thread, waiting to retake the BQL after poll | no | offline |
//! | loop thread, dispatching fd handlers, timers, bottom halves | **yes**, for the whole round, except that it hands the lock to a waiting thread between two callbacks | online; quiescent state at the end of each round; offline while handing off |
//! | loop thread, shutting down (removing handlers) | yes | online |
//! | loop thread, `rcu_barrier` at the end of `run()` | no | unregistered |
//! | `call_rcu` thread, running a batch | **yes** | not a reader |
//! | any other thread | only inside `bql.lock()` | its own |
//!
//! The loop never blocks in poll while holding the BQL, so a thread that wants it never waits
//! for a poll timeout; while the loop dispatches, such a thread waits for at most the callback
//! that is running (see [`bql`] for the hand-off). Registration, removal, scheduling and timer
//! arming never need the BQL (but are fine under it); they wake the loop when its poll timeout
//! must change.
//!
//! # Why a removed handler cannot run
//!
//! Dispatch finds handlers with no lock: the loop is a QSBR reader, and epoll's token for a
//! handler leads, through an RCU-published index, to the handler's record (see `src/handlers.rs`).
//! Three properties make removal safe from any thread, with or without the BQL:
//!
//! 1. **Not called after removal returns**: every call passes through the record's
//!    [`gate::Gate`] (`calling = true; fence; check epoch`), and removal closes it
//!    (`epoch += 1; fence; wait while calling`). The two fences form a store-buffering pair,
//!    so either the loop sees the removal and skips the call, or the remover sees the call
//!    and waits for it to return. The loop thread itself (a callback removing itself or
//!    another handler) never waits: the running callback is its own stack frame. This is
//!    model-checked under loom (`tests/loom.rs`).
//! 2. **Not freed while the loop may touch it**: removal unpublishes the record (index cell and
//!    list node) and retires it through `call_rcu`; the loop only dereferences records it
//!    loaded while online, and it is online from the load to the end of the round, so the
//!    grace period before the free waits for it. Stale epoll events (queued before the removal)
//!    carry a token whose generation no longer matches anything published, and are dropped.
//! 3. **Freed under the BQL**: the record and its closures are dropped by the `call_rcu`
//!    thread, which holds the BQL ([`rcu_domain`]), so a closure's `Drop` may touch BQL state.
//!
//! # Panics in callbacks
//!
//! A panicking fd handler, timer or bottom half is caught: the panic is logged (`log::error!`)
//! and counted ([`LoopStats`]), and the culprit is disabled — an fd handler is removed (its fd
//! stays open: it belongs to the caller), a timer cancelled, a bottom half unscheduled, and
//! arming or scheduling them again is ignored with a warning. The loop goes on with the rest of
//! the round. The BQL is never poisoned.
//!
//! # Shutdown and signals
//!
//! [`LoopHandle::quit`] (any thread) ends `run()` after the current round; `run()` then removes
//! every handler, drops queued bottom halves, disarms timers, and — after releasing the BQL and
//! leaving the read side — waits with `rcu_barrier` until every `call_rcu` callback queued so
//! far has run, so all handler closures have been dropped when it returns. SIGINT and SIGTERM
//! arrive through a signalfd registered as an ordinary fd handler ([`signals`]).

//!
//! # Example
//!
//! ```
//! use iohandler::MainLoop;
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! let mut ml = MainLoop::new()?;
//! let h = ml.handle();
//! let ticks = Arc::new(AtomicUsize::new(0));
//! let t2 = ticks.clone();
//! let h2 = h.clone();
//! // A periodic timer that stops the loop on its third tick (callbacks hold the BQL).
//! let timer = h.timer(move || {
//!     assert!(h2.bql().held_by_current_thread());
//!     if t2.fetch_add(1, Ordering::Relaxed) == 2 {
//!         h2.quit();
//!     }
//! });
//! timer.arm_periodic(Duration::from_millis(1));
//! // Another thread (a vCPU, the control socket) hands work to the loop.
//! let h3 = h.clone();
//! std::thread::spawn(move || h3.call_soon(|| println!("on the loop, under the BQL")));
//! ml.run()?; // returns after quit(), with every handler dropped
//! assert_eq!(ticks.load(Ordering::Relaxed), 3);
//! # Ok::<(), iohandler::Error>(())
//! ```

#![warn(missing_docs)]

#[cfg(not(loom))]
mod bh;
#[cfg(not(loom))]
pub mod bql;
#[cfg(not(loom))]
mod error;
pub mod gate;
#[cfg(not(loom))]
mod handlers;
#[cfg(not(loom))]
mod mainloop;
#[cfg(not(loom))]
pub mod signals;
mod sync;
#[cfg(not(loom))]
mod timer;
#[cfg(not(loom))]
mod wake;

#[cfg(not(loom))]
pub use bh::BottomHalf;
#[cfg(not(loom))]
pub use bql::{rcu_domain, rcu_domain_builder, Bql, BqlGuard};
#[cfg(not(loom))]
pub use error::{Error, Result};
#[cfg(not(loom))]
pub use handlers::{Callback, MAX_HANDLERS};
#[cfg(not(loom))]
pub(crate) use mainloop::{Counters, Shared};
#[cfg(not(loom))]
pub use mainloop::{LoopHandle, LoopStats, MainLoop, QUIT_BARRIER_BOUND};
#[cfg(not(loom))]
pub use signals::{block_termination_signals, SignalFd};
#[cfg(not(loom))]
pub use timer::Timer;

/// The message of a caught panic, for the log.
#[cfg(not(loom))]
pub(crate) fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        String::from("non-string panic payload")
    }
}
