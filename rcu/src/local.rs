//! Per-thread registrations: the read-lock fast path and the thread-exit clean-up.
//!
//! Each thread keeps a list of its registrations (read-lock slots it created lazily and the
//! QSBR handles it registered), plus a one-entry cache (domain address -> slot) that makes the
//! outermost `read_lock` a thread-local compare, one load of `gp` and two stores. When the
//! thread exits, the destructor takes every registration offline and unregisters it, so an
//! exited thread can never stall a grace period.

use crate::domain::{Inner, ReadGuard, ReaderKind, Slot};
use crate::Rcu;
use std::cell::{Cell, RefCell};
use std::marker::PhantomData;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

struct Registration {
    id: u64,
    domain: Weak<Inner>,
    slot: Arc<Slot>,
}

struct ThreadRegs {
    regs: RefCell<Vec<Registration>>,
}

/// The `read_lock` fast path's one-entry cache (domain -> slot). Kept apart from `REGS`
/// because it has no destructor, so reaching it needs no "destructor registered?" check.
///
/// Keyed by the domain's *address*, which the fast path has in a register (an id would cost a
/// load), with the low bit set for a domain without membarrier ([`cache_key`]), so that the
/// comparison also gives the mode and `read_lock` never loads it. An address can be reused once its allocation is freed, but never while the cache
/// holds it: the cached slot's registration in `REGS` holds a `Weak` of that domain, which
/// keeps the allocation, and the cache is overwritten or cleared whenever that registration
/// is dropped (`slow_lookup`, thread exit).
struct Cache {
    key: Cell<u64>,
    slot: Cell<*const Slot>,
}

impl Drop for ThreadRegs {
    fn drop(&mut self) {
        // The slots below are about to be unregistered and freed: later `read_lock`s on this
        // thread must take the slow path (which panics, REGS being gone).
        let _ = CACHE.try_with(|c| c.key.set(0));
        for reg in self.regs.get_mut().drain(..) {
            let Some(inner) = reg.domain.upgrade() else {
                continue;
            };
            match reg.slot.kind {
                ReaderKind::Qsbr => {
                    // A QsbrThread still alive: leaked (mem::forget), or kept in another
                    // thread-local whose destructor runs after this one and may still read
                    // through it. Revoke it, so that such a read panics instead of running
                    // unseen by grace periods.
                    inner.revoke_qsbr(&reg.slot);
                }
                ReaderKind::ReadLock => {
                    if reg.slot.ctr.load(Ordering::Relaxed) == 0 {
                        inner.unregister(&reg.slot);
                    } else {
                        // A guard is still alive (held by another thread-local's destructor).
                        // Keep the slot registered and allocated: the guard's drop will still
                        // clear it, and until then grace periods must wait for it.
                        std::mem::forget(reg.slot);
                    }
                }
            }
        }
    }
}

thread_local! {
    static REGS: ThreadRegs = const {
        ThreadRegs {
            regs: RefCell::new(Vec::new()),
        }
    };
    static CACHE: Cache = const {
        Cache {
            key: Cell::new(0),
            slot: Cell::new(std::ptr::null()),
        }
    };
}

impl Rcu {
    /// Enters a read-side critical section on this thread; it lasts until the guard drops.
    ///
    /// Nestable and cheap: the outermost level stores the grace-period counter into the
    /// thread's slot and issues a compiler barrier (with membarrier) or a full fence. The first
    /// call on a thread registers it (one allocation).
    ///
    /// # Panics
    ///
    /// If called while the thread's thread-local storage is being destroyed.
    #[inline]
    pub fn read_lock(&self) -> ReadGuard<'_> {
        let inner = self.inner();
        // The cache's key says the domain's mode too (see `Cache`): the inline path, which
        // matches only a membarrier domain, needs no load of it.
        let cached = CACHE.with(|c| (c.key.get() == inner.key()).then(|| c.slot.get()));
        let slot = match cached {
            Some(slot) => {
                // SAFETY: `slot` is owned by this thread's registration list, which keeps it
                // alive until the thread exits; the guard cannot leave the thread.
                ReadGuard::enter(inner, unsafe { &*slot }, true);
                slot
            }
            None => lock_slow(self),
        };
        ReadGuard {
            inner,
            slot,
            _not_send: PhantomData,
        }
    }
}

/// `read_lock` of a fence domain, or the first of this domain since the cache last changed.
#[cold]
#[inline(never)]
fn lock_slow(rcu: &Rcu) -> *const Slot {
    let inner = rcu.inner();
    let slot = CACHE.with(|c| {
        if c.key.get() == inner.key() | 1 {
            // A fence domain's entry ([`cache_key`]).
            c.slot.get()
        } else {
            REGS.with(|r| slow_lookup(r, c, rcu))
        }
    });
    // SAFETY: as in `read_lock`.
    ReadGuard::enter(inner, unsafe { &*slot }, inner.config.use_membarrier);
    slot
}

/// The cache's key for `inner`: its address, with the low bit set when it does not use
/// membarrier (an `Inner`'s address is even), so that `read_lock` knows the mode from the
/// key it compares anyway.
fn cache_key(inner: &Inner) -> u64 {
    inner.key() | u64::from(!inner.config.use_membarrier)
}

#[cold]
fn slow_lookup(r: &ThreadRegs, cache: &Cache, rcu: &Rcu) -> *const Slot {
    let inner = rcu.inner();
    let mut regs = r.regs.borrow_mut();
    // Drop registrations of domains that no longer exist (their ids are never reused).
    regs.retain(|g| g.domain.strong_count() > 0);
    let found = regs
        .iter()
        .find(|g| g.id == inner.id && g.slot.kind == ReaderKind::ReadLock)
        .map(|g| Arc::as_ptr(&g.slot));
    let slot = match found {
        Some(s) => s,
        None => {
            let slot = inner.register(ReaderKind::ReadLock);
            let p = Arc::as_ptr(&slot);
            regs.push(Registration {
                id: inner.id,
                domain: Arc::downgrade(&rcu.handle.inner),
                slot,
            });
            p
        }
    };
    cache.key.set(cache_key(inner));
    cache.slot.set(slot);
    slot
}

/// Records a QSBR registration so that thread exit cleans it up even if the handle leaks.
pub(crate) fn remember(rcu: &Rcu, slot: &Arc<Slot>, kind: ReaderKind) {
    debug_assert_eq!(kind, ReaderKind::Qsbr);
    let _ = REGS.try_with(|r| {
        r.regs.borrow_mut().push(Registration {
            id: rcu.inner().id,
            domain: Arc::downgrade(&rcu.handle.inner),
            slot: slot.clone(),
        })
    });
}

/// Forgets a QSBR registration whose handle was dropped normally.
pub(crate) fn forget(id: u64, slot: &Arc<Slot>) {
    let _ = REGS.try_with(|r| {
        if let Ok(mut regs) = r.regs.try_borrow_mut() {
            regs.retain(|g| !(g.id == id && Arc::ptr_eq(&g.slot, slot)));
        }
    });
}

/// Panics if the calling thread is a reader of `rcu` (a blocking wait would wait for itself).
pub(crate) fn assert_may_block(rcu: &Rcu, what: &str) {
    if let Some(kind) = reading_kind(rcu) {
        match kind {
            ReaderKind::ReadLock => panic!(
                "rcu: {what}() called inside a read_lock() section of the same domain; it \
                 would wait for this thread forever. Drop the guard first."
            ),
            ReaderKind::Qsbr => panic!(
                "rcu: {what}() called on a thread whose QsbrThread is online; it would wait \
                 for this thread forever. Call QsbrThread::{what}(&mut self) instead, which \
                 goes offline for the wait (and so proves no RCU reference is held)."
            ),
        }
    }
}

/// Whether the calling thread is currently on the read side of `rcu`, and how.
pub(crate) fn reading_kind(rcu: &Rcu) -> Option<ReaderKind> {
    let id = rcu.inner().id;
    REGS.try_with(|r| {
        let regs = r.regs.try_borrow().ok()?;
        regs.iter()
            .filter(|g| g.id == id)
            // Either kind holds ctr != 0 exactly while it reads.
            .find(|g| g.slot.ctr.load(Ordering::Relaxed) != 0)
            .map(|g| g.slot.kind)
    })
    .ok()
    .flatten()
}
