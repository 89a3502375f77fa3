//! The synchronization primitives the crate is built on, switched to loom's models under
//! `--cfg loom` so that `tests/loom.rs` explores every interleaving of the real algorithm.
//!
//! Only accesses that loom models correctly are used by the algorithm: relaxed, acquire and
//! release accesses plus explicit `fence(SeqCst)`. (loom treats SeqCst *accesses* as AcqRel,
//! but it does model SeqCst *fences*, which is what every store-buffering pair here relies on.)

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{
    fence, AtomicBool, AtomicI32, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize,
};
#[cfg(loom)]
pub(crate) use loom::sync::Arc;
#[cfg(loom)]
pub(crate) use loom::thread;

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{
    fence, AtomicBool, AtomicI32, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize,
};
#[cfg(not(loom))]
pub(crate) use std::sync::Arc;
#[cfg(not(loom))]
pub(crate) use std::thread;

pub(crate) use std::sync::atomic::Ordering;

/// A compiler-only barrier. Under loom there is no membarrier, so this is never used there
/// (the domain always takes the real-fence path under loom).
#[inline(always)]
pub(crate) fn compiler_fence() {
    std::sync::atomic::compiler_fence(Ordering::SeqCst);
}

/// A mutex whose `lock` returns the guard directly on both backends.
#[derive(Default)]
pub(crate) struct Mutex<T>(
    #[cfg(loom)] loom::sync::Mutex<T>,
    #[cfg(not(loom))] parking_lot::Mutex<T>,
);

#[cfg(loom)]
pub(crate) type MutexGuard<'a, T> = loom::sync::MutexGuard<'a, T>;
#[cfg(not(loom))]
pub(crate) type MutexGuard<'a, T> = parking_lot::MutexGuard<'a, T>;

impl<T> Mutex<T> {
    pub(crate) fn new(value: T) -> Self {
        #[cfg(loom)]
        return Mutex(loom::sync::Mutex::new(value));
        #[cfg(not(loom))]
        return Mutex(parking_lot::Mutex::new(value));
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
        #[cfg(loom)]
        return self.0.lock().unwrap();
        #[cfg(not(loom))]
        return self.0.lock();
    }
}

/// A condition variable paired with [`Mutex`].
#[derive(Default)]
#[allow(dead_code)] // only the portable Event backend uses it
pub(crate) struct Condvar(
    #[cfg(loom)] loom::sync::Condvar,
    #[cfg(not(loom))] parking_lot::Condvar,
);

#[allow(dead_code)]
impl Condvar {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Waits for a notification (or a spurious wake-up), giving the guard back.
    pub(crate) fn wait<'a, T>(&self, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
        #[cfg(loom)]
        return self.0.wait(guard).unwrap();
        #[cfg(not(loom))]
        {
            let mut guard = guard;
            self.0.wait(&mut guard);
            guard
        }
    }

    /// Waits for at most `timeout`. Under loom time does not exist: this is a plain wait.
    pub(crate) fn wait_timeout<'a, T>(
        &self,
        guard: MutexGuard<'a, T>,
        timeout: std::time::Duration,
    ) -> MutexGuard<'a, T> {
        #[cfg(loom)]
        {
            let _ = timeout;
            self.wait(guard)
        }
        #[cfg(not(loom))]
        {
            let mut guard = guard;
            self.0.wait_for(&mut guard, timeout);
            guard
        }
    }

    pub(crate) fn notify_all(&self) {
        self.0.notify_all();
    }
}

/// What the `fork()` handlers (`fork.rs`) need from a mutex: hold it across `fork()` without a
/// guard, and release it afterwards in the parent and in the child.
#[cfg(not(loom))]
impl<T> Mutex<T> {
    /// Locks and forgets the guard; [`force_unlock`](Self::force_unlock) releases it.
    pub(crate) fn lock_and_forget(&self) {
        std::mem::forget(self.0.lock());
    }

    /// Whether some thread holds the lock.
    pub(crate) fn is_locked(&self) -> bool {
        self.0.is_locked()
    }

    /// Releases a lock whose guard was forgotten.
    ///
    /// # Safety
    ///
    /// The lock must be held, and no guard of it may be alive (in the child of `fork()`, the
    /// thread that held it no longer exists).
    pub(crate) unsafe fn force_unlock(&self) {
        // SAFETY: per this function's contract.
        unsafe { self.0.force_unlock() }
    }

    /// The protected value, for a caller that holds the lock without a guard.
    ///
    /// # Safety
    ///
    /// The caller must hold the lock (through [`lock_and_forget`](Self::lock_and_forget)), or
    /// be the only thread of the process, and must not create two such references at once.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn data_mut(&self) -> &mut T {
        // SAFETY: per this function's contract, no other reference to the data exists.
        unsafe { &mut *self.0.data_ptr() }
    }
}
