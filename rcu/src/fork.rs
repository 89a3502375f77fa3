//! Surviving `fork()`, as liburcu does with its atfork handlers.
//!
//! In the child of a multi-threaded process only the thread that called `fork()` exists. Left
//! alone, a domain would still list the parent's other threads as readers (so `synchronize`
//! waits for them forever), its reclamation thread would be gone though marked as started
//! (so `rcu_barrier` waits forever), and a lock held by another thread at the moment of the
//! fork would stay held for ever.
//!
//! So every domain is recorded here, and `pthread_atfork` handlers run around every fork:
//!
//! * **prepare** (in the parent, before the fork): take every domain's short-held locks (the
//!   registry, the reclamation thread's handle, the barrier list, the progress counter), so
//!   that no other thread is inside one of them when the address space is copied;
//! * **parent**: release them;
//! * **child**: drop every registration that does not belong to the forking thread, release
//!   the grace-period lock if a (now vanished) thread was in the middle of a grace period,
//!   forget the parent's reclamation thread (a new one starts on the next `call_rcu`,
//!   `rcu_barrier` or poll, and runs what the parent had queued), then release the locks.
//!
//! The grace-period lock is not taken in *prepare*: it is held for whole grace periods, and
//! one may be waiting for the very thread that forks. A grace period in progress at the fork
//! is simply abandoned in the child; the next one starts from its number.
//!
//! Not supported: calling `fork()` from a `call_rcu` callback (the child would then run the
//! reclamation loop on its only thread and also start a new one).

use crate::domain::Inner;
use parking_lot::Mutex;
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Once, Weak};

/// Every domain ever built that may still exist.
static DOMAINS: Mutex<Vec<Weak<Inner>>> = parking_lot::const_mutex(Vec::new());

/// The domains held across the current fork (filled by `prepare`, emptied after).
static HELD: Mutex<Vec<Arc<Inner>>> = parking_lot::const_mutex(Vec::new());

static NEXT_THREAD: AtomicU64 = AtomicU64::new(1);

thread_local! {
    static THREAD_KEY: Cell<u64> = const { Cell::new(0) };
}

/// A process-unique key of the calling thread, which the child of `fork()` keeps (thread
/// ids from the kernel do not survive the fork; the thread-local storage is copied).
pub(crate) fn thread_key() -> u64 {
    THREAD_KEY
        .try_with(|k| {
            if k.get() == 0 {
                k.set(NEXT_THREAD.fetch_add(1, Ordering::Relaxed));
            }
            k.get()
        })
        .unwrap_or(0)
}

/// Records a new domain (and installs the fork handlers, once per process).
pub(crate) fn track(inner: &Arc<Inner>) {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // SAFETY: the three handlers are `extern "C" fn()` with no arguments, as
        // pthread_atfork requires, and stay valid for the life of the process.
        let rc = unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
        if rc != 0 {
            log::warn!("rcu: pthread_atfork failed ({rc}); a forked child cannot use RCU");
        }
    });
    let mut domains = DOMAINS.lock();
    domains.retain(|d| d.strong_count() > 0);
    domains.push(Arc::downgrade(inner));
}

extern "C" fn prepare() {
    let domains = DOMAINS.lock();
    let live: Vec<Arc<Inner>> = domains.iter().filter_map(Weak::upgrade).collect();
    // DOMAINS stays locked across the fork (no domain is created meanwhile).
    std::mem::forget(domains);
    for inner in &live {
        inner.before_fork();
    }
    *HELD.lock() = live;
}

fn finish(in_child: bool) {
    let live = std::mem::take(&mut *HELD.lock());
    for inner in &live {
        if in_child {
            // SAFETY: called from the child handler: the locks were taken by `prepare` on
            // this (the forking) thread, which is the only thread of the child.
            unsafe { inner.after_fork_child(thread_key()) };
        } else {
            // SAFETY: the locks were taken by `prepare`, on this thread, just before.
            unsafe { inner.after_fork_parent() };
        }
    }
    drop(live);
    // SAFETY: `prepare` locked DOMAINS on this thread and forgot the guard.
    unsafe { DOMAINS.force_unlock() };
}

extern "C" fn parent() {
    finish(false);
}

extern "C" fn child() {
    finish(true);
}
