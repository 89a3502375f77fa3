//! The big global lock (BQL).
//!
//! One `parking_lot` mutex that knows which thread holds it. Device models that are not
//! thread-safe on their own, the main loop's callbacks and the `call_rcu` callbacks of the
//! VMM's RCU domain all run under it, so they never run concurrently with each other.
//!
//! # Who holds it when
//!
//! * The **main loop thread** holds it for a whole dispatch round (fd handlers, then timers,
//!   then bottom halves) and releases it, after going QSBR-offline, before it blocks in
//!   `epoll_wait`. It therefore never blocks in poll holding the BQL: a thread that wants the
//!   BQL while the loop sleeps gets it at once, with no kick and no poll timeout to wait out.
//! * While the loop is dispatching, a thread that finds the lock taken registers as a
//!   **waiter** ([`Bql::has_waiters`]). The loop checks that count after every callback and,
//!   when it is non-zero, hands the lock over fairly (`unlock_fair`: the waiter is woken and
//!   owns the lock before the loop can take it back), going QSBR-offline while it waits to get
//!   it back. So a waiter waits for at most one callback, not a whole round of a thousand
//!   handlers, and never for a poll timeout.
//! * The **`call_rcu` thread** takes it once per batch of callbacks (the [`CallbackLock`]
//!   hook, see [`rcu_domain`]).
//! * **Other threads** (vCPUs for devices that need it, the control socket) take it briefly
//!   with [`Bql::lock`].
//!
//! The lock is not recursive: [`Bql::lock`] on a thread that already holds it panics with a
//! message instead of deadlocking. Code that may run either way uses
//! [`Bql::lock_unless_held`].
//!
//! # Lock order and RCU
//!
//! Take the BQL before any device lock. Never wait for a grace period (`synchronize`,
//! `rcu_barrier`) while holding it: `call_rcu` callbacks need it to finish (the `rcu` crate
//! panics on `rcu_barrier` under it, detected through [`Bql::held_by_current_thread`]).
//! The main loop acquires the BQL *while offline* and only then goes online, so a BQL holder
//! that waits for a grace period never waits for the loop.

use parking_lot::{Mutex, MutexGuard};
use rcu::{CallbackLock, Rcu};
use std::cell::Cell;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// A number that names the calling thread for as long as it lives (never 0, never reused).
pub(crate) fn thread_token() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    thread_local! {
        static TOKEN: Cell<u64> = const { Cell::new(0) };
    }
    TOKEN.with(|t| {
        let mut v = t.get();
        if v == 0 {
            v = NEXT.fetch_add(1, Ordering::Relaxed);
            t.set(v);
        }
        v
    })
}

/// The big global lock. See the module documentation.
#[derive(Debug, Default)]
pub struct Bql {
    mutex: Mutex<()>,
    /// `thread_token()` of the holder, 0 when free. Written only by the holder.
    owner: AtomicU64,
    /// Threads blocked in `lock` (they found it taken).
    waiters: AtomicUsize,
    /// How many times the loop handed the lock to a waiter in the middle of a round.
    handoffs: AtomicU64,
}

impl Bql {
    /// A new, unlocked BQL.
    pub fn new() -> Arc<Bql> {
        Arc::new(Bql::default())
    }

    /// Takes the lock, waiting if another thread holds it. See the module docs for how long.
    ///
    /// # Panics
    ///
    /// If the calling thread already holds it (the lock is not recursive; use
    /// [`lock_unless_held`](Self::lock_unless_held) in code that may run under it).
    pub fn lock(&self) -> BqlGuard<'_> {
        if self.held_by_current_thread() {
            panic!(
                "the BQL is not recursive and this thread already holds it (inside a main-loop \
                 callback, a call_rcu callback or an explicit lock()); use \
                 Bql::lock_unless_held() in code that can run either way"
            );
        }
        let guard = match self.mutex.try_lock() {
            Some(g) => g,
            None => {
                self.waiters.fetch_add(1, Ordering::Relaxed);
                let g = self.mutex.lock();
                self.waiters.fetch_sub(1, Ordering::Relaxed);
                g
            }
        };
        self.owner.store(thread_token(), Ordering::Relaxed);
        BqlGuard {
            bql: self,
            guard: Some(guard),
            _not_send: PhantomData,
        }
    }

    /// Takes the lock unless the calling thread already holds it (then returns `None` and the
    /// caller goes on under the outer hold).
    pub fn lock_unless_held(&self) -> Option<BqlGuard<'_>> {
        if self.held_by_current_thread() {
            None
        } else {
            Some(self.lock())
        }
    }

    /// Takes the lock if it is free.
    pub fn try_lock(&self) -> Option<BqlGuard<'_>> {
        if self.held_by_current_thread() {
            return None;
        }
        let guard = self.mutex.try_lock()?;
        self.owner.store(thread_token(), Ordering::Relaxed);
        Some(BqlGuard {
            bql: self,
            guard: Some(guard),
            _not_send: PhantomData,
        })
    }

    /// Whether the calling thread holds the lock. Exact for the caller (only the holder writes
    /// its own token, and a thread always sees its own last write).
    pub fn held_by_current_thread(&self) -> bool {
        self.owner.load(Ordering::Relaxed) == thread_token()
    }

    /// Whether the lock is held by any thread (a snapshot).
    pub fn is_locked(&self) -> bool {
        self.mutex.is_locked()
    }

    /// Whether some thread is blocked waiting for the lock (a snapshot).
    pub fn has_waiters(&self) -> bool {
        self.waiters.load(Ordering::Relaxed) > 0
    }

    /// How many times the main loop handed the lock to a waiter in the middle of a round.
    pub fn handoffs(&self) -> u64 {
        self.handoffs.load(Ordering::Relaxed)
    }
}

/// Holding the BQL. Not `Send`: the lock belongs to the thread that took it.
#[must_use = "the BQL is released as soon as the guard is dropped"]
pub struct BqlGuard<'a> {
    bql: &'a Bql,
    guard: Option<MutexGuard<'a, ()>>,
    _not_send: PhantomData<*const ()>,
}

impl std::fmt::Debug for BqlGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BqlGuard")
    }
}

impl BqlGuard<'_> {
    /// Releases the lock while `f` runs and takes it back afterwards.
    pub fn unlocked<R>(&mut self, f: impl FnOnce() -> R) -> R {
        self.release(false);
        let r = f();
        self.reacquire();
        r
    }

    /// As [`unlocked`](Self::unlocked), but hands the lock directly to a waiting thread, if
    /// any, so the caller cannot barge back in ahead of it.
    pub fn unlocked_fair<R>(&mut self, f: impl FnOnce() -> R) -> R {
        self.release(true);
        let r = f();
        self.reacquire();
        r
    }

    /// The main loop's hand-off point: if a thread waits for the BQL, hands the lock to it
    /// fairly and takes it back, running `while_released` (the loop goes QSBR-offline there)
    /// around the wait. Returns whether it did.
    pub(crate) fn yield_to_waiters(
        &mut self,
        while_released: impl FnOnce(&mut dyn FnMut()),
    ) -> bool {
        if !self.bql.has_waiters() {
            return false;
        }
        self.bql.handoffs.fetch_add(1, Ordering::Relaxed);
        while_released(&mut || {
            self.release(true);
            self.reacquire();
        });
        true
    }

    fn release(&mut self, fair: bool) {
        if let Some(g) = self.guard.take() {
            self.bql.owner.store(0, Ordering::Relaxed);
            if fair {
                MutexGuard::unlock_fair(g);
            } else {
                drop(g);
            }
        }
    }

    fn reacquire(&mut self) {
        let g = match self.bql.mutex.try_lock() {
            Some(g) => g,
            None => {
                self.bql.waiters.fetch_add(1, Ordering::Relaxed);
                let g = self.bql.mutex.lock();
                self.bql.waiters.fetch_sub(1, Ordering::Relaxed);
                g
            }
        };
        self.bql.owner.store(thread_token(), Ordering::Relaxed);
        self.guard = Some(g);
    }
}

impl Drop for BqlGuard<'_> {
    fn drop(&mut self) {
        // Clear the owner before the unlock, so the next holder's store is the last one.
        self.release(false);
    }
}

/// `call_rcu` callbacks of a domain built with [`rcu_domain`] run holding the BQL.
impl CallbackLock for Bql {
    fn with_lock(&self, f: &mut dyn FnMut()) {
        let _g = self.lock();
        f();
    }

    fn held_by_current_thread(&self) -> bool {
        Bql::held_by_current_thread(self)
    }
}

/// The VMM's RCU domain: `call_rcu` callbacks run holding `bql` (the seed's "run call_rcu
/// callbacks under the BQL"), and `rcu_barrier` under the BQL is caught instead of
/// deadlocking.
pub fn rcu_domain(bql: &Arc<Bql>) -> Rcu {
    rcu_domain_builder(bql).build()
}

/// As [`rcu_domain`], returning the builder for further settings.
pub fn rcu_domain_builder(bql: &Arc<Bql>) -> rcu::RcuBuilder {
    let lock: Arc<dyn CallbackLock> = bql.clone();
    Rcu::builder().callback_lock(lock)
}
