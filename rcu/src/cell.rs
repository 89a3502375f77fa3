//! [`RcuCell`]: an RCU-protected pointer (`rcu_assign_pointer` / `rcu_dereference`).

use crate::domain::ReadSide;
use crate::sync::{AtomicPtr, AtomicU64, Ordering};
use crate::{QsbrThread, Rcu};
use std::marker::PhantomData;
use std::ptr::{self, NonNull};

/// An optional, heap-allocated `T` that readers load with no lock and writers replace.
///
/// Readers call [`load`](Self::load) with proof of being on the read side (a [`ReadGuard`]
/// or an online [`QsbrThread`]); the reference they get borrows that proof, so it cannot
/// outlive the read-side section. Writers [`store`](Self::store), [`swap`](Self::swap) or
/// [`compare_exchange`](Self::compare_exchange) a new value (a release store: the new value is
/// fully initialized before any reader can see it) and get the old one back as a [`Retired`],
/// which can be freed only after a grace period.
///
/// Writers that must not interleave (read-modify-write of the value) serialize among
/// themselves with a lock of their own; `compare_exchange` suffices for simple cases.
///
/// [`ReadGuard`]: crate::ReadGuard
pub struct RcuCell<T: Send + Sync + 'static> {
    ptr: AtomicPtr<T>,
    /// The domain's key ([`Rcu::key`]), for the readers' check.
    key: u64,
    rcu: Rcu,
    _owns: PhantomData<Box<T>>,
}

impl<T: Send + Sync + 'static> std::fmt::Debug for RcuCell<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RcuCell")
            .field("domain", &self.rcu.id())
            .field("is_some", &!self.ptr.load(Ordering::Relaxed).is_null())
            .finish()
    }
}

fn into_raw<T>(value: Option<Box<T>>) -> *mut T {
    value.map_or(ptr::null_mut(), Box::into_raw)
}

impl<T: Send + Sync + 'static> RcuCell<T> {
    /// A cell in the process-wide domain.
    #[cfg(not(loom))]
    pub fn new(value: Option<T>) -> Self {
        Self::new_in(Rcu::global(), value)
    }

    /// A cell in `rcu`'s domain: readers and grace periods of that domain protect it.
    pub fn new_in(rcu: &Rcu, value: Option<T>) -> Self {
        RcuCell {
            ptr: AtomicPtr::new(into_raw(value.map(Box::new))),
            key: rcu.key(),
            rcu: rcu.clone(),
            _owns: PhantomData,
        }
    }

    /// The domain that protects this cell.
    pub fn domain(&self) -> &Rcu {
        &self.rcu
    }

    /// `rcu_dereference`: the current value, valid for as long as the reader's borrow.
    ///
    /// # Panics
    ///
    /// If `reader` is a [`QsbrThread`] of another domain, or an offline one.
    ///
    /// # Aborts
    ///
    /// If `reader` is a [`ReadGuard`](crate::ReadGuard) of another domain: with a message,
    /// since unwinding would make every `read_lock` section keep its guard in memory.
    #[inline(always)]
    #[track_caller]
    pub fn load<'r, R: ReadSide + ?Sized>(&'r self, reader: &'r R) -> Option<&'r T> {
        self.reader(reader).load()
    }

    /// Checks `reader` once and returns a [`CellReader`] whose loads are a bare acquire load:
    /// the check-once, read-many form of [`load`](Self::load) for hot loops (a vCPU's lookups
    /// between two quiescent states). Its references borrow `reader` exactly as `load`'s do,
    /// so the compiler still rejects one held across a quiescent state:
    ///
    /// ```compile_fail
    /// let rcu = rcu::Rcu::new();
    /// let cell = rcu::RcuCell::new_in(&rcu, Some(5u32));
    /// let mut me = rcu.register_qsbr();
    /// let five = cell.reader(&me).load().unwrap();
    /// me.quiescent_state(); // error: `me` is borrowed by `five`
    /// assert_eq!(*five, 5);
    /// ```
    ///
    /// # Panics
    ///
    /// As [`load`](Self::load): if `reader` is a [`QsbrThread`] of another domain, or an
    /// offline or revoked one. A [`ReadGuard`](crate::ReadGuard) of another domain aborts.
    #[inline(always)]
    #[track_caller]
    pub fn reader<'r, R: ReadSide + ?Sized>(&'r self, reader: &'r R) -> CellReader<'r, T> {
        reader.check(self.key);
        CellReader { ptr: &self.ptr }
    }

    /// The check-once reader of a QSBR thread that also reports its quiescent states: it
    /// holds the handle (`&mut`) for as long as it lives, so the handle stays online and in
    /// this domain, and [`QsbrCellReader::quiescent_state`] needs no new check. A vCPU's
    /// loop of lookups and quiescent states, checked once. References still end at the next
    /// quiescent state:
    ///
    /// ```compile_fail
    /// let rcu = rcu::Rcu::new();
    /// let cell = rcu::RcuCell::new_in(&rcu, Some(5u32));
    /// let mut me = rcu.register_qsbr();
    /// let mut reader = cell.qsbr_reader(&mut me);
    /// let five = reader.load().unwrap();
    /// reader.quiescent_state(); // error: `reader` is borrowed by `five`
    /// assert_eq!(*five, 5);
    /// ```
    ///
    /// # Panics
    ///
    /// As [`load`](Self::load): if `me` belongs to another domain, or is offline or revoked.
    #[inline(always)]
    #[track_caller]
    pub fn qsbr_reader<'r>(&'r self, me: &'r mut QsbrThread) -> QsbrCellReader<'r, T> {
        me.check(self.key);
        QsbrCellReader {
            ptr: &self.ptr,
            gp: &self.rcu.inner().gp,
            ctr: me.ctr(),
            me,
        }
    }

    /// The current value, for a writer that owns the cell exclusively.
    pub fn get_mut(&mut self) -> Option<&mut T> {
        // SAFETY: `&mut self` excludes readers (they borrow `&self`) and other writers.
        unsafe { self.ptr.load(Ordering::Relaxed).as_mut() }
    }

    /// `rcu_assign_pointer`: publishes `value`; returns the old value, retired.
    pub fn store(&self, value: Option<T>) -> Option<Retired<T>> {
        self.swap(value.map(Box::new))
    }

    /// Publishes an already boxed value; returns the old value, retired.
    pub fn swap(&self, value: Option<Box<T>>) -> Option<Retired<T>> {
        let old = self.ptr.swap(into_raw(value), Ordering::AcqRel);
        Retired::from_raw(old, &self.rcu)
    }

    /// Publishes `new` if the cell still holds `current` (compared by address). On success
    /// returns the old value, retired; on failure gives `new` back.
    pub fn compare_exchange(
        &self,
        current: Option<&T>,
        new: Option<Box<T>>,
    ) -> Result<Option<Retired<T>>, Option<Box<T>>> {
        let cur = current.map_or(ptr::null_mut(), |r| r as *const T as *mut T);
        let new_raw = into_raw(new);
        match self
            .ptr
            .compare_exchange(cur, new_raw, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(old) => Ok(Retired::from_raw(old, &self.rcu)),
            Err(_) => Err(if new_raw.is_null() {
                None
            } else {
                // SAFETY: `new_raw` came from `Box::into_raw` above and was not published.
                Some(unsafe { Box::from_raw(new_raw) })
            }),
        }
    }

    /// Takes the value out, for an owner with exclusive access (no grace period needed).
    pub fn into_inner(mut self) -> Option<T> {
        let p = std::mem::replace(self.ptr.get_mut_compat(), ptr::null_mut());
        if p.is_null() {
            None
        } else {
            // SAFETY: ownership of the cell means no reader can hold a reference.
            Some(*unsafe { Box::from_raw(p) })
        }
    }
}

/// An [`RcuCell`] checked once against a read-side proof ([`RcuCell::reader`]); every
/// [`load`](Self::load) is then one acquire load, with no per-read check.
///
/// It borrows both the cell and the proof for `'r`, so it cannot outlive the read-side
/// section, and a QSBR thread cannot report a quiescent state while it exists.
pub struct CellReader<'r, T> {
    ptr: &'r AtomicPtr<T>,
}

impl<T> Clone for CellReader<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for CellReader<'_, T> {}

impl<T> std::fmt::Debug for CellReader<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CellReader").finish_non_exhaustive()
    }
}

impl<'r, T> CellReader<'r, T> {
    /// `rcu_dereference`: the current value (each call sees the latest published one).
    #[inline(always)]
    pub fn load(&self) -> Option<&'r T> {
        // Acquire pairs with the writer's release: the value's contents are visible.
        let p = self.ptr.load(Ordering::Acquire);
        // SAFETY: `RcuCell::reader` checked that the proof borrowed for 'r is a live reader of
        // the cell's domain; a published pointer is freed only after a grace period that waits
        // for that reader, whose borrow bounds 'r.
        unsafe { p.as_ref() }
    }
}

/// An [`RcuCell`] checked once against an online [`QsbrThread`] that it holds exclusively
/// ([`RcuCell::qsbr_reader`]): loads are one acquire load, and quiescent states are reported
/// through it.
pub struct QsbrCellReader<'r, T> {
    ptr: &'r AtomicPtr<T>,
    /// The domain's `gp` (the handle's and the cell's: checked), kept here so that a loop
    /// holds it in a register rather than reloading it through the handle.
    gp: &'r AtomicU64,
    /// A copy of the handle's `ctr` (only the handle's owner, this reader while it lives,
    /// writes it): the fast path compares `gp` with a register, not the shared slot.
    ctr: u64,
    me: &'r mut QsbrThread,
}

impl<T> std::fmt::Debug for QsbrCellReader<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QsbrCellReader")
            .field("thread", &self.me)
            .finish_non_exhaustive()
    }
}

impl<T> QsbrCellReader<'_, T> {
    /// `rcu_dereference`: the current value, valid until the next
    /// [`quiescent_state`](Self::quiescent_state) (it borrows the reader).
    #[inline(always)]
    pub fn load(&self) -> Option<&T> {
        let p = self.ptr.load(Ordering::Acquire);
        // SAFETY: `RcuCell::qsbr_reader` checked that the handle, which this reader holds
        // exclusively, is an online reader of the cell's domain; nothing but this reader can
        // take it offline while it lives (bar the thread-exit revocation of a leaked handle,
        // see `QsbrThread`), and `quiescent_state` takes `&mut self`, so the reference cannot
        // outlive the online stretch it was read in.
        unsafe { p.as_ref() }
    }

    /// Reports a quiescent state ([`QsbrThread::quiescent_state`]); the thread stays online.
    #[inline(always)]
    pub fn quiescent_state(&mut self) {
        let gp = self.gp.load(Ordering::Acquire);
        if gp != self.ctr {
            self.me.quiescent_state_at(gp);
            self.ctr = gp;
        }
    }
}

trait GetMutCompat<T> {
    fn get_mut_compat(&mut self) -> &mut *mut T;
}

#[cfg(not(loom))]
impl<T> GetMutCompat<T> for AtomicPtr<T> {
    fn get_mut_compat(&mut self) -> &mut *mut T {
        self.get_mut()
    }
}

#[cfg(loom)]
impl<T> GetMutCompat<T> for AtomicPtr<T> {
    fn get_mut_compat(&mut self) -> &mut *mut T {
        // loom's AtomicPtr has no get_mut; `with_mut` gives the same exclusive access.
        let mut out: *mut *mut T = ptr::null_mut();
        self.with_mut(|p| out = p as *mut *mut T);
        // SAFETY: `&mut self` keeps the storage exclusively borrowed for the returned lifetime.
        unsafe { &mut *out }
    }
}

impl<T: Send + Sync + 'static> Drop for RcuCell<T> {
    fn drop(&mut self) {
        let p = *self.ptr.get_mut_compat();
        if !p.is_null() {
            // SAFETY: dropping the cell requires ownership: no reader borrows it any more.
            drop(unsafe { Box::from_raw(p) });
        }
    }
}

/// A value unpublished from an [`RcuCell`] (or an [`RcuList`](crate::RcuList)) that readers
/// may still be reading. It can be freed only after a grace period:
///
/// - dropping it hands it to [`Rcu::defer_drop`] (freed by the reclamation thread later);
/// - [`synchronize`](Self::synchronize) waits for a grace period and gives the value back;
/// - [`synchronize_qsbr`](Self::synchronize_qsbr) does the same from an online QSBR thread.
#[must_use = "dropping a Retired defers its destruction through call_rcu; say so explicitly \
              with defer_drop(), or wait with synchronize()"]
pub struct Retired<T: Send + 'static> {
    ptr: NonNull<T>,
    rcu: Rcu,
}

// SAFETY: a Retired owns its value (readers only read it, T: Sync for RcuCell values); moving
// the ownership to another thread needs T: Send.
unsafe impl<T: Send + 'static> Send for Retired<T> {}

impl<T: Send + 'static> std::fmt::Debug for Retired<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Retired").field("ptr", &self.ptr).finish()
    }
}

impl<T: Send + 'static> Retired<T> {
    pub(crate) fn from_raw(p: *mut T, rcu: &Rcu) -> Option<Self> {
        NonNull::new(p).map(|ptr| Retired {
            ptr,
            rcu: rcu.clone(),
        })
    }

    /// Waits for a grace period, then returns the value (now unreachable by any reader).
    ///
    /// # Panics
    ///
    /// As [`Rcu::synchronize`]: on the read side of the domain.
    pub fn synchronize(self) -> Box<T> {
        self.rcu.synchronize();
        self.into_box_unchecked()
    }

    /// As [`synchronize`](Self::synchronize), from a QSBR thread, which goes offline for the
    /// wait (so that a grace period of its own domain cannot wait for it).
    ///
    /// The grace period is always the *value's* domain's. If `me` belongs to another domain,
    /// it still goes offline for the wait (proving that it holds no reference of its own
    /// domain), and the wait is the value's domain's `synchronize`.
    ///
    /// # Panics
    ///
    /// As [`Rcu::synchronize`] on the value's domain: when the calling thread is on the read
    /// side of that domain by another handle (a [`ReadGuard`](crate::ReadGuard), or a second
    /// online [`QsbrThread`]).
    pub fn synchronize_qsbr(self, me: &mut QsbrThread) -> Box<T> {
        let rcu = self.rcu.clone();
        me.offline_while(|| rcu.synchronize());
        self.into_box_unchecked()
    }

    /// Frees the value after a grace period, on the reclamation thread.
    pub fn defer_drop(self) {
        drop(self)
    }

    fn into_box_unchecked(self) -> Box<T> {
        // Skip our Drop (which would defer the value) but still release the domain handle:
        // forgetting `self` whole would leak the `Rcu` and keep the domain alive for ever.
        let this = std::mem::ManuallyDrop::new(self);
        let p = this.ptr.as_ptr();
        // SAFETY: `this` is never dropped or used again, so its `rcu` is moved out exactly once.
        drop(unsafe { std::ptr::read(&this.rcu) });
        // SAFETY: came from Box::into_raw when published; a grace period has passed since it
        // was unpublished, so no reader holds a reference.
        unsafe { Box::from_raw(p) }
    }
}

/// Moves a retired pointer to the reclamation thread.
struct SendPtr<T>(NonNull<T>);
// SAFETY: the pointee is T: Send and owned by whoever holds the SendPtr.
unsafe impl<T: Send> Send for SendPtr<T> {}

impl<T: Send + 'static> Drop for Retired<T> {
    fn drop(&mut self) {
        let p = SendPtr(self.ptr);
        self.rcu.call_rcu(move || {
            let p = p;
            // SAFETY: runs after a grace period; came from Box::into_raw.
            drop(unsafe { Box::from_raw(p.0.as_ptr()) });
        });
    }
}
