//! The RCU domain: the grace-period counter, the reader registry, `synchronize`, and the two
//! kinds of reader (QSBR threads and read-lock guards) that share it.
//!
//! See the crate documentation for the algorithm and its correctness argument; the comments
//! here name which fence pairs with which.

use crate::event::Event;
use crate::reclaim::{CallbackLock, Reclaimer};
use crate::stats::{RcuStats, StatCounters};
#[cfg(loom)]
use crate::sync::thread;
use crate::sync::{fence, Arc, AtomicBool, AtomicU64, Mutex, Ordering};
use std::marker::PhantomData;
use std::time::Duration;
#[cfg(not(loom))]
use std::time::Instant;

/// Which kind of reader a registration is (reported in stall warnings).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReaderKind {
    /// A thread registered with [`Rcu::register_qsbr`] (vCPU threads, the main loop).
    Qsbr,
    /// A thread that took [`Rcu::read_lock`] at least once.
    ReadLock,
}

impl std::fmt::Display for ReaderKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ReaderKind::Qsbr => "QSBR thread",
            ReaderKind::ReadLock => "read-lock reader",
        })
    }
}

/// One registered reader. Written by its owner thread; read by writers in `synchronize`.
///
/// Aligned to two cache lines so that two readers never share one (the adjacent-line
/// prefetcher pulls lines in pairs).
#[repr(align(128))]
pub(crate) struct Slot {
    /// 0: holds no references (offline, or outside any read section). Otherwise the value of
    /// the domain's `gp` this reader observed when it last went online / quiescent / locked,
    /// plus, for a read-lock reader, its nesting depth in the low bits ([`NEST_MASK`]; `gp`
    /// is a multiple of [`GP_STEP`]), as liburcu keeps it: one word to load and store.
    pub(crate) ctr: AtomicU64,
    /// Set by a writer that is about to sleep waiting for this reader.
    pub(crate) waiting: AtomicBool,
    /// QSBR: the domain's key while the handle is online, 0 while offline, [`REVOKED`] once the
    /// thread's exit tore the registration down. Only the owner thread touches it; it lives
    /// here rather than in the [`QsbrThread`] so that the thread-exit clean-up, which cannot
    /// reach the handle, can revoke it. A std atomic even under loom: no other thread
    /// touches it, so it is no synchronization point to explore.
    pub(crate) reading: std::sync::atomic::AtomicU64,
    pub(crate) kind: ReaderKind,
    /// For stall warnings (not built under loom).
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) name: String,
    /// Under loom, the emulated `membarrier(2)` (see [`Inner::master_fence`]).
    #[cfg(loom)]
    pub(crate) mb: LoomMembarrier,
    /// The registering thread's key (`fork::thread_key`): the child of `fork()` keeps only
    /// the forking thread's registrations.
    #[cfg(not(loom))]
    owner: u64,
}

/// Under loom, `membarrier(2)` is emulated per read-lock reader: the writer fences, raises
/// `requested`, waits until the reader has executed a full fence at one of its membarrier
/// points ([`membarrier_point`]) or has exited, and fences again. Where in its program the
/// reader takes the fence is up to the interleaving, as the IPI's arrival is in reality.
#[cfg(loom)]
#[derive(Default)]
pub(crate) struct LoomMembarrier {
    requested: AtomicU64,
    served: AtomicU64,
    exited: AtomicBool,
}

/// A point of a read-lock reader's program where an emulated `membarrier` may force it
/// through a full fence (under loom; nothing otherwise).
#[inline(always)]
pub(crate) fn membarrier_point(slot: &Slot) {
    #[cfg(loom)]
    {
        let want = slot.mb.requested.load(Ordering::Acquire);
        if want != slot.mb.served.load(Ordering::Relaxed) {
            fence(Ordering::SeqCst);
            slot.mb.served.store(want, Ordering::Release);
        }
    }
    #[cfg(not(loom))]
    let _ = slot;
}

/// A read-lock reader under loom is gone: the emulated membarrier stops waiting for it.
#[cfg(loom)]
pub(crate) fn membarrier_exit(slot: &Slot) {
    membarrier_point(slot);
    slot.mb.exited.store(true, Ordering::Release);
}

impl Slot {
    pub(crate) fn new(kind: ReaderKind) -> Self {
        #[cfg(not(loom))]
        let name = {
            let t = std::thread::current();
            match t.name() {
                Some(n) => n.to_string(),
                None => format!("{:?}", t.id()),
            }
        };
        #[cfg(loom)]
        let name = String::from("loom thread");
        Slot {
            ctr: AtomicU64::new(0),
            waiting: AtomicBool::new(false),
            reading: std::sync::atomic::AtomicU64::new(0),
            kind,
            name,
            #[cfg(loom)]
            mb: LoomMembarrier::default(),
            #[cfg(not(loom))]
            owner: crate::fork::thread_key(),
        }
    }
}

/// Configuration of a domain; see [`RcuBuilder`].
pub(crate) struct Config {
    pub(crate) use_membarrier: bool,
    pub(crate) spin_passes: u32,
    #[cfg_attr(loom, allow(dead_code))] // time is not modelled under loom
    pub(crate) spin_budget: Duration,
    #[cfg_attr(loom, allow(dead_code))] // stalls are timed, not modelled, under loom
    pub(crate) stall_timeout: Duration,
    pub(crate) batch_min: usize,
    #[cfg_attr(loom, allow(dead_code))] // the batching wait is a timeout, not modelled
    pub(crate) batch_wait: Duration,
    pub(crate) high_water: usize,
}

/// Zero-sized and 128-byte aligned: in a `repr(C)` struct, the field after it starts on a
/// fresh pair of cache lines (the adjacent-line prefetcher pulls lines in pairs).
#[repr(align(128))]
struct LineBreak;

/// The state shared by a domain's handles, readers and reclamation thread.
///
/// `repr(C)` to control the layout: the fields that readers load on every section come
/// first, alone on their lines, so that the stores writers make on every grace period (the
/// locks, `completed`, statistics) and on every `call_rcu` (the queue) do not invalidate them.
#[repr(C)]
pub(crate) struct Inner {
    /// Unique for the life of the process (never reused, unlike an address).
    pub(crate) id: u64,
    /// The grace-period counter: starts at [`GP_STEP`], `+= GP_STEP` per grace period.
    pub(crate) gp: AtomicU64,
    pub(crate) config: Config,
    _line_break: LineBreak,
    /// The `gp` value of the last completed grace period.
    pub(crate) completed: AtomicU64,
    /// Serializes grace periods; holds a scratch list reused by every grace period.
    gp_lock: Mutex<Vec<Arc<Slot>>>,
    /// Every registered reader.
    registry: Mutex<Vec<Arc<Slot>>>,
    /// The writer sleeps on this; readers set it when they see their `waiting` flag.
    pub(crate) event: Event,
    pub(crate) stats: StatCounters,
    pub(crate) reclaim: Reclaimer,
}

/// The grace-period counter's increment. The bits below it hold a read-lock reader's nesting
/// depth in its `ctr`, so a reader's `ctr` (snapshot plus depth) compares with `gp` as its
/// snapshot does. 2^56 grace periods at ten million a second last 228 years: it never wraps.
pub(crate) const GP_STEP: u64 = 1 << 8;

/// The low bits of a read-lock reader's `ctr`: [`FENCE_MODE`] and the nesting depth.
pub(crate) const NEST_MASK: u64 = GP_STEP - 1;

/// The nesting depth in a read-lock reader's `ctr` (1 to 127 while it reads).
pub(crate) const DEPTH_MASK: u64 = 0x7f;

/// Set in a read-lock reader's `ctr` while it reads a domain that does not use membarrier,
/// so that the unlock tells the two modes' outermost levels apart by `ctr` alone (1 and
/// `0x81`) and needs no load of the domain's mode.
pub(crate) const FENCE_MODE: u64 = 0x80;

/// [`Slot::reading`] of a QSBR registration torn down at thread exit (never a domain key).
pub(crate) const REVOKED: u64 = u64::MAX;

fn next_domain_id() -> u64 {
    // Not part of the algorithm: a plain std atomic even under loom.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl Inner {
    /// The writer's half of every store-buffering pair: a full fence here, or, with
    /// `membarrier` (the domain uses it and a read-lock reader is involved), a full fence on
    /// every thread of the process (which is what lets read-lock readers use a compiler
    /// barrier on their side). QSBR readers always fence fully, so they need no membarrier.
    ///
    /// `readers` are the readers the caller is about to check; under loom only their
    /// read-lock readers take part in the emulated membarrier (see [`LoomMembarrier`]).
    #[inline]
    pub(crate) fn master_fence(&self, membarrier: bool, readers: &[Arc<Slot>]) {
        if !membarrier {
            fence(Ordering::SeqCst);
            return;
        }
        #[cfg(not(loom))]
        {
            let _ = readers;
            crate::membarrier::barrier_all_threads();
        }
        #[cfg(loom)]
        {
            fence(Ordering::SeqCst);
            let lock_readers = || readers.iter().filter(|s| s.kind == ReaderKind::ReadLock);
            let wanted: Vec<u64> = lock_readers()
                .map(|s| s.mb.requested.fetch_add(1, Ordering::AcqRel) + 1)
                .collect();
            for (s, want) in lock_readers().zip(wanted) {
                while s.mb.served.load(Ordering::Acquire) < want
                    && !s.mb.exited.load(Ordering::Acquire)
                {
                    thread::yield_now();
                }
            }
            fence(Ordering::SeqCst);
        }
    }

    pub(crate) fn register(&self, kind: ReaderKind) -> Arc<Slot> {
        let slot = Arc::new(Slot::new(kind));
        self.registry.lock().push(slot.clone());
        slot
    }

    /// The thread that owns the QSBR registration `slot` is exiting and its handle may outlive
    /// this (it sits in a thread-local whose destructor runs later): take it offline, revoke
    /// it, so that a later read through the handle panics instead of running unprotected,
    /// and unregister it.
    pub(crate) fn revoke_qsbr(&self, slot: &Arc<Slot>) {
        if slot.reading.load(Ordering::Relaxed) == self.key() {
            self.reader_exit(slot);
        }
        // The deliberately broken variant (loom): the handle stays readable after its slot is
        // unregistered, so grace periods no longer see its reads.
        #[cfg(not(rcu_broken_exit))]
        slot.reading.store(REVOKED, Ordering::Relaxed);
        #[cfg(rcu_broken_exit)]
        {
            let id = slot.reading.load(Ordering::Relaxed);
            slot.reading
                .store(if id == 0 { 0 } else { self.key() }, Ordering::Relaxed);
        }
        self.unregister(slot);
    }

    /// The domain's key: its address, which readers compare in their checks (a register
    /// compare on the read-lock path, where an id would cost a load). Unique among live
    /// domains, and every holder of a key (cells, lists, QSBR handles) keeps its domain alive.
    #[inline(always)]
    pub(crate) fn key(&self) -> u64 {
        self as *const Inner as usize as u64
    }

    /// Removes `slot` from the registry. The slot must already be at `ctr == 0`.
    pub(crate) fn unregister(&self, slot: &Arc<Slot>) {
        let mut reg = self.registry.lock();
        if let Some(i) = reg.iter().position(|s| Arc::ptr_eq(s, slot)) {
            reg.swap_remove(i);
        }
    }

    /// Reader (QSBR going offline, a thread's exit): leaves the read side (`ctr = 0`) with a
    /// full fence and wakes a writer that sleeps on us.
    #[inline]
    pub(crate) fn reader_exit(&self, slot: &Slot) {
        self.leave(slot, || fence(Ordering::SeqCst));
    }

    /// The read-lock reader's exit (outermost level): as [`reader_exit`](Self::reader_exit)
    /// with the slave fence; `membarrier` is the domain's `use_membarrier`.
    #[inline(always)]
    pub(crate) fn read_unlock_outermost(&self, slot: &Slot, membarrier: bool) {
        self.leave(slot, || reader_slave_fence(membarrier));
    }

    #[inline(always)]
    fn leave(&self, slot: &Slot, fence_here: impl FnOnce()) {
        // Release: every read of the section happens before a writer that sees 0.
        slot.ctr.store(0, Ordering::Release);
        fence_here();
        // Pairs with the writer's `waiting = true; master_fence; load ctr`.
        self.wake_writer_if_waiting(slot);
    }

    #[inline]
    pub(crate) fn wake_writer_if_waiting(&self, slot: &Slot) {
        if slot.waiting.load(Ordering::Acquire) {
            slot.waiting.store(false, Ordering::Relaxed);
            self.event.set();
        }
    }

    /// QSBR: go online (or report a quiescent state) with the current `gp`.
    #[inline]
    pub(crate) fn qsbr_online(&self, slot: &Slot) {
        let gp = self.gp.load(Ordering::Acquire);
        self.qsbr_store(slot, gp);
    }

    #[inline]
    pub(crate) fn qsbr_store(&self, slot: &Slot, gp: u64) {
        // Release: reads before the quiescent state happen before a writer that sees it.
        slot.ctr.store(gp, Ordering::Release);
        // Pairs with the writer's master fence (store-buffering): either the writer sees our
        // new ctr, or our later reads see everything the writer published before its fence.
        fence(Ordering::SeqCst);
        self.wake_writer_if_waiting(slot);
    }

    /// Read lock, outermost level. `membarrier` is the domain's `use_membarrier` (the caller
    /// reads it once for the lock path).
    #[inline(always)]
    pub(crate) fn lock_outermost(&self, slot: &Slot, membarrier: bool) {
        // Acquire: if this reads a `gp` of a grace period that has begun, every pointer store
        // made before that grace period began (by its caller and by every caller sharing it)
        // happens before this section's loads, so the section cannot see an old pointer
        // although the writer skips it (`ctr >= gp`). Free on x86 (a plain load); on weakly
        // ordered CPUs it keeps the section's loads from being satisfied before this one,
        // which the compiler barrier of the membarrier path does not (see the crate docs).
        #[cfg(not(rcu_broken_memb))]
        let gp = self.gp.load(Ordering::Acquire);
        // The deliberately broken variant (loom): the relaxed load the membarrier path used to
        // have, which a weakly ordered CPU may satisfy after the section's pointer load.
        #[cfg(rcu_broken_memb)]
        let gp = self.gp.load(Ordering::Relaxed);
        let depth_one = if membarrier { 1 } else { FENCE_MODE | 1 };
        slot.ctr.store(gp + depth_one, Ordering::Relaxed);
        // Pairs with the writer's master fence (store-buffering), as for QSBR.
        #[cfg(not(rcu_broken))]
        reader_slave_fence(membarrier);
        // The deliberately broken variant (for the loom tests): no fence, so the writer may
        // miss this reader while the reader still reads the old pointer.
        membarrier_point(slot);
    }

    /// `synchronize`: waits until every reader that was inside a read-side section (or online,
    /// for QSBR) when it was called has left it.
    ///
    /// The caller must not be a reader of this domain (checked by the public wrappers).
    pub(crate) fn synchronize(&self) {
        // Orders the caller's earlier stores (the new pointer) before the read of `gp`, so that
        // the grace period we wait for began after them (see the crate docs, "sharing").
        // A release read-modify-write (not a load): the increment below is a read-modify-write
        // too, so it acquires this caller's stores even when another caller runs the grace
        // period we share, and readers that acquire the new `gp` see them.
        fence(Ordering::SeqCst);
        let target = self.gp.fetch_add(0, Ordering::AcqRel) + GP_STEP;
        let mut pending = self.gp_lock.lock();
        if self.completed.load(Ordering::Acquire) >= target {
            // Another caller ran a whole grace period that began after we were called.
            self.stats
                .shared_grace_periods
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        // Start the grace period, then snapshot the readers. One that registers after the
        // snapshot does so under the registry lock, so it happens after the `gp` store: it reads
        // the new `gp` (so it is not waited for) and sees our caller's update and those of the
        // callers sharing this grace period (they read the old `gp`, so their fences precede
        // the new one's readers'). Storing `gp` only after the snapshot would let a reader
        // register in between with the old `gp`, missed by this grace period though it may
        // hold a sharer's old pointer (loom: gp_concurrent_writers_share_grace_periods).
        // The snapshot also tells whether any read-lock reader (the only kind whose side of
        // the fence pairs may be a compiler barrier) is involved; if none is, a plain fence on
        // our side completes every pair and the membarrier system call (IPIs to every CPU
        // running one of our threads) is skipped.
        let new = self.gp.fetch_add(GP_STEP, Ordering::AcqRel) + GP_STEP;
        // Under gp_lock no other grace period is running (gp == completed, or one step ahead
        // in a forked child whose parent was in one): this one is exactly `target`.
        debug_assert_eq!(new, target);
        pending.clear();
        pending.extend(self.registry.lock().iter().cloned());
        let membarrier =
            self.config.use_membarrier && pending.iter().any(|s| s.kind == ReaderKind::ReadLock);
        self.master_fence(membarrier, &pending);

        let waited = self.wait_for_readers(&mut pending, new, membarrier);
        pending.clear();

        // Everything the readers did before leaving happens before what our caller does next.
        fence(Ordering::Acquire);
        self.completed.store(new, Ordering::Release);
        self.stats.record_grace_period(waited);
    }

    /// Waits until no slot of `pending` is a reader older than `gp`; returns for how long it
    /// waited (zero, without reading the clock, when nobody had to be waited for).
    fn wait_for_readers(
        &self,
        pending: &mut Vec<Arc<Slot>>,
        gp: u64,
        membarrier: bool,
    ) -> Duration {
        let active = |s: &Arc<Slot>| {
            let c = s.ctr.load(Ordering::Relaxed);
            c != 0 && c < gp
        };
        pending.retain(active);
        if pending.is_empty() {
            return Duration::ZERO;
        }
        let mut passes = 0u32;
        #[cfg(not(loom))]
        let started = Instant::now();
        #[cfg(not(loom))]
        let done = || started.elapsed();
        #[cfg(loom)]
        let done = || Duration::ZERO;
        let mut stall_reported = false;
        // `pending` is non-empty at the top of every pass.
        loop {
            #[cfg(not(loom))]
            let spin = passes < self.config.spin_passes
                && (passes < 2 || started.elapsed() < self.config.spin_budget);
            #[cfg(loom)]
            let spin = passes < self.config.spin_passes;
            if spin {
                passes += 1;
                // Back-off from 2 to 8 pauses per pass: a busy reader on another CPU answers
                // within a few hundred ns, and a pause can cost ~30 ns, so a long fixed step
                // would add microseconds to every grace period. No `yield_now`: when the
                // reader shares our CPU, a yield lets it run for a whole time slice (ms)
                // before we look again, whereas sleeping on the event (after the passes) lets
                // its next quiescent state wake us at once.
                #[cfg(not(loom))]
                for _ in 0..(1u32 << passes.min(3)) {
                    std::hint::spin_loop();
                }
                #[cfg(loom)]
                thread::yield_now();
            } else {
                // Sleep. Reset first, then announce, then re-check: a reader that leaves after
                // our re-check sees `waiting` (store-buffering pair through master_fence) and
                // sets the event, which was reset before, so `wait` cannot miss it.
                self.event.reset();
                for s in pending.iter() {
                    s.waiting.store(true, Ordering::Release);
                }
                #[cfg(not(rcu_broken_wakeup))]
                self.master_fence(membarrier, pending);
                pending.retain(|s| {
                    let keep = active(s);
                    if !keep {
                        s.waiting.store(false, Ordering::Relaxed);
                    }
                    keep
                });
                if pending.is_empty() {
                    return done();
                }
                #[cfg(loom)]
                self.event.wait();
                #[cfg(not(loom))]
                {
                    let timeout = self.config.stall_timeout.min(Duration::from_millis(100));
                    self.event.wait_timeout(timeout);
                    let waited = started.elapsed();
                    if !stall_reported && waited >= self.config.stall_timeout {
                        stall_reported = true;
                        pending.retain(active);
                        self.report_stall(pending, gp, waited);
                    }
                }
                #[cfg(loom)]
                let _ = &mut stall_reported;
            }
            pending.retain(active);
            if pending.is_empty() {
                return done();
            }
        }
    }

    #[cfg(not(loom))]
    fn report_stall(&self, pending: &[Arc<Slot>], gp: u64, waited: Duration) {
        if pending.is_empty() {
            return;
        }
        self.stats.stalls.fetch_add(1, Ordering::Relaxed);
        for s in pending {
            let ctr = s.ctr.load(Ordering::Relaxed);
            let behind = gp.saturating_sub(ctr) / GP_STEP;
            log::warn!(
                "rcu stall: grace period {} has waited {:?} for {} '{}': it has not passed a \
                 quiescent state since grace period {} began ({} grace period(s) ago){}",
                gp / GP_STEP,
                waited,
                s.kind,
                s.name,
                ctr / GP_STEP,
                behind,
                match s.kind {
                    ReaderKind::Qsbr =>
                        "; a QSBR thread must call quiescent_state() or go \
                                         offline before it blocks",
                    ReaderKind::ReadLock => "; a read_lock() guard is held too long",
                }
            );
        }
    }

    /// `fork()` prepare handler: holds the short-held locks across the fork.
    #[cfg(not(loom))]
    pub(crate) fn before_fork(&self) {
        self.registry.lock_and_forget();
        self.reclaim.before_fork();
    }

    /// `fork()` parent handler: releases what [`before_fork`](Self::before_fork) took.
    ///
    /// # Safety
    ///
    /// Only after `before_fork` on this thread.
    #[cfg(not(loom))]
    pub(crate) unsafe fn after_fork_parent(&self) {
        // SAFETY: per this function's contract, `before_fork` took these locks on this thread
        // and forgot their guards.
        unsafe {
            self.reclaim.after_fork_parent();
            self.registry.force_unlock();
        }
    }

    /// `fork()` child handler: only the thread with key `me` exists now. Keeps its
    /// registrations only, abandons a grace period another thread was running, and forgets
    /// the reclamation thread; then releases the locks.
    ///
    /// # Safety
    ///
    /// Only in the child, after `before_fork` on this thread.
    #[cfg(not(loom))]
    pub(crate) unsafe fn after_fork_child(&self, me: u64) {
        // SAFETY: this thread holds the registry lock (taken by `before_fork`), and is the only
        // thread of the process.
        let registry = unsafe { self.registry.data_mut() };
        registry.retain(|s| s.owner == me);
        if self.gp_lock.is_locked() {
            // A thread that no longer exists was in a grace period (the forking thread cannot
            // be: it called fork()). Its scratch list may be mid-update: leak it, start afresh.
            // SAFETY: the only thread of the child holds no guard of gp_lock.
            unsafe {
                std::mem::forget(std::mem::take(self.gp_lock.data_mut()));
                self.gp_lock.force_unlock();
            }
            // The abandoned grace period never completes: `completed` stays behind, and the
            // next grace period (numbered after it) completes it for whoever waits.
        }
        // SAFETY: as above, this thread took the locks in `before_fork`.
        unsafe {
            self.reclaim.after_fork_child();
            self.registry.force_unlock();
        }
    }

    /// Snapshot of the registered readers, for stall tests and diagnostics.
    pub(crate) fn reader_count(&self) -> usize {
        self.registry.lock().len()
    }
}

/// An RCU domain: one grace-period counter and one registry of readers of both kinds.
///
/// Cheap to clone (a reference count). Most programs use the process-wide [`Rcu::global`];
/// separate domains isolate subsystems (and tests) from each other's grace periods.
/// Dropping the last handle runs the callbacks still queued (after a grace period) and stops
/// the domain's reclamation thread. If the caller holds the domain's [`CallbackLock`], the
/// drop does not wait for that final batch (which needs the lock): it runs once the lock is
/// released.
#[derive(Clone)]
pub struct Rcu {
    pub(crate) handle: Arc<DomainHandle>,
    /// The handle's `inner`, held directly so that reaching it is one load, not two (the
    /// read-lock fast path starts here).
    inner: Arc<Inner>,
}

/// Owns the reclamation thread; its drop drains and stops it.
pub(crate) struct DomainHandle {
    pub(crate) inner: Arc<Inner>,
}

impl Drop for DomainHandle {
    fn drop(&mut self) {
        Reclaimer::shutdown(&self.inner);
    }
}

impl std::fmt::Debug for Rcu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rcu")
            .field("id", &self.inner().id)
            .field("gp", &self.inner().gp.load(Ordering::Relaxed))
            .finish()
    }
}

impl Default for Rcu {
    fn default() -> Self {
        Self::new()
    }
}

/// Builds an [`Rcu`] domain with non-default settings.
pub struct RcuBuilder {
    membarrier: bool,
    spin_passes: u32,
    spin_budget: Duration,
    stall_timeout: Duration,
    batch_min: usize,
    batch_wait: Duration,
    high_water: usize,
    lock: Option<Arc<dyn CallbackLock>>,
    on_reclaimer_start: Option<crate::reclaim::StartHook>,
}

impl Default for RcuBuilder {
    fn default() -> Self {
        RcuBuilder {
            membarrier: true,
            #[cfg(not(loom))]
            spin_passes: 1000,
            #[cfg(loom)]
            spin_passes: 1,
            spin_budget: Duration::from_micros(2),
            stall_timeout: Duration::from_secs(10),
            batch_min: 32,
            batch_wait: Duration::from_millis(50),
            high_water: 100_000,
            lock: None,
            on_reclaimer_start: None,
        }
    }
}

impl RcuBuilder {
    /// Whether read-lock readers may rely on `membarrier(2)` (default: yes, where the kernel
    /// supports it). Without it every outermost `read_lock` executes a full fence.
    pub fn membarrier(mut self, on: bool) -> Self {
        self.membarrier = on;
        self
    }

    /// At most how many polling passes `synchronize` makes before it sleeps on the event
    /// (default 1000; the time budget below usually ends the polling first).
    pub fn spin_passes(mut self, passes: u32) -> Self {
        self.spin_passes = passes;
        self
    }

    /// For how long `synchronize` polls busy readers before it sleeps (default 2 µs). A busy
    /// reader on another CPU answers within a few hundred nanoseconds; one that shares the
    /// writer's CPU cannot answer until the writer sleeps, so a long spin only delays it
    /// (liburcu spins about 100 passes, about the same time).
    pub fn spin_budget(mut self, budget: Duration) -> Self {
        self.spin_budget = budget;
        self
    }

    /// After how long a grace period that waits on a reader logs a stall warning (default 10 s).
    pub fn stall_timeout(mut self, timeout: Duration) -> Self {
        self.stall_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// Batching of `call_rcu`: the reclamation thread waits until `min` callbacks are queued or
    /// `wait` has passed, then runs them all after one grace period (default 32 / 50 ms).
    pub fn batch(mut self, min: usize, wait: Duration) -> Self {
        self.batch_min = min.max(1);
        self.batch_wait = wait;
        self
    }

    /// Bounded garbage: above `callbacks` queued callbacks, `call_rcu` callers that can block
    /// wait for the reclamation thread to catch up (default 100,000).
    pub fn high_water(mut self, callbacks: usize) -> Self {
        self.high_water = callbacks.max(1);
        self
    }

    /// The lock that `call_rcu` callbacks run under (the VMM passes its big global lock).
    pub fn callback_lock(mut self, lock: Arc<dyn CallbackLock>) -> Self {
        self.lock = Some(lock);
        self
    }

    /// A function that runs first on the domain's reclamation thread, before that thread
    /// takes its first batch (the VMM installs the thread's seccomp filter with it).
    ///
    /// Contract:
    /// - It runs once per reclamation thread: on the thread the domain starts on first need
    ///   (the first `call_rcu`, `defer_drop`, `rcu_barrier` or `start_poll`, or
    ///   [`Rcu::start_reclaimer`]), and again on the new thread a child of `fork()` starts.
    ///   It never runs on the caller's thread.
    /// - Nothing waits for it: the thread that caused the start goes on at once. A caller
    ///   that needs it to have run (before it lets untrusted input in, say) makes the hook
    ///   signal it.
    /// - It runs holding no lock of the domain and not as a reader, so it may block, but it
    ///   must not wait for anything the domain's users may hold while they queue callbacks
    ///   (the callback lock, say): callbacks queue up meanwhile.
    /// - If it panics, the panic is logged and reclamation runs anyway: a hook that must not
    ///   be skipped handles its own failure (the VMM ends the process).
    pub fn on_reclaimer_start(mut self, hook: impl Fn() + Send + Sync + 'static) -> Self {
        self.on_reclaimer_start = Some(std::sync::Arc::new(hook));
        self
    }

    /// Creates the domain.
    pub fn build(self) -> Rcu {
        let use_membarrier = self.membarrier && crate::membarrier::available();
        let inner = Arc::new(Inner {
            id: next_domain_id(),
            gp: AtomicU64::new(GP_STEP),
            completed: AtomicU64::new(GP_STEP),
            gp_lock: Mutex::new(Vec::new()),
            registry: Mutex::new(Vec::new()),
            event: Event::new(false),
            _line_break: LineBreak,
            config: Config {
                use_membarrier,
                spin_passes: self.spin_passes,
                spin_budget: self.spin_budget,
                stall_timeout: self.stall_timeout,
                batch_min: self.batch_min,
                batch_wait: self.batch_wait,
                high_water: self.high_water,
            },
            stats: StatCounters::default(),
            reclaim: Reclaimer::new(self.lock, self.on_reclaimer_start),
        });
        #[cfg(not(loom))]
        crate::fork::track(&inner);
        Rcu {
            handle: Arc::new(DomainHandle {
                inner: inner.clone(),
            }),
            inner,
        }
    }
}

impl Rcu {
    /// A new domain with default settings.
    pub fn new() -> Rcu {
        RcuBuilder::default().build()
    }

    /// A builder for a domain with non-default settings.
    pub fn builder() -> RcuBuilder {
        RcuBuilder::default()
    }

    /// The process-wide default domain (created on first use, never dropped).
    #[cfg(not(loom))]
    pub fn global() -> &'static Rcu {
        static GLOBAL: std::sync::OnceLock<Rcu> = std::sync::OnceLock::new();
        GLOBAL.get_or_init(Rcu::new)
    }

    #[inline(always)]
    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }

    /// This domain's unique id.
    pub fn id(&self) -> u64 {
        self.inner().id
    }

    /// The key readers' checks compare (see `Inner::key`).
    #[inline(always)]
    pub(crate) fn key(&self) -> u64 {
        self.inner().key()
    }

    /// Whether read-lock readers of this domain use the membarrier fast path.
    pub fn uses_membarrier(&self) -> bool {
        self.inner().config.use_membarrier
    }

    /// How many readers (of both kinds) are registered.
    pub fn reader_count(&self) -> usize {
        self.inner().reader_count()
    }

    /// Registers the calling thread as a QSBR reader, initially online.
    ///
    /// The handle is tied to this thread (it is not `Send`). While it is online, the thread
    /// must report a quiescent state regularly ([`QsbrThread::quiescent_state`]) or go offline
    /// before it blocks, or grace periods wait for it.
    pub fn register_qsbr(&self) -> QsbrThread {
        let slot = self.inner().register(ReaderKind::Qsbr);
        #[cfg(not(loom))]
        crate::local::remember(self, &slot, ReaderKind::Qsbr);
        slot.reading.store(self.inner().key(), Ordering::Relaxed);
        self.inner().qsbr_online(&slot);
        QsbrThread {
            rcu: self.clone(),
            slot,
            key: self.inner().key(),
            _not_send: PhantomData,
        }
    }

    /// Waits for a grace period: every read-side section of this domain (and every online
    /// stretch of a QSBR thread) that began before the call has ended when it returns.
    /// Concurrent callers share grace periods.
    ///
    /// # Panics
    ///
    /// When called inside a read-side section of this domain (it would wait for itself), or on
    /// a thread whose [`QsbrThread`] of this domain is online: use
    /// [`QsbrThread::synchronize`] there, which goes offline for the wait.
    pub fn synchronize(&self) {
        #[cfg(not(loom))]
        crate::local::assert_may_block(self, "synchronize");
        self.inner().synchronize();
    }

    /// A snapshot of this domain's statistics.
    pub fn stats(&self) -> RcuStats {
        self.inner().stats.snapshot(&self.inner().reclaim)
    }

    /// Test support (loom): a read-lock reader with an explicit handle instead of a
    /// thread-local registration, running the same lock/unlock code as [`Rcu::read_lock`].
    #[cfg(loom)]
    pub fn loom_reader(&self) -> LoomReader {
        LoomReader {
            rcu: self.clone(),
            slot: self.inner().register(ReaderKind::ReadLock),
        }
    }
}

/// A registered QSBR reader: what vCPU threads and the main-loop thread are.
///
/// A QSBR thread reads RCU-protected data with no per-read cost at all: references obtained
/// through it (e.g. [`RcuCell::load`](crate::RcuCell::load)) borrow the handle, and everything
/// that ends the read side — [`quiescent_state`](Self::quiescent_state),
/// [`offline`](Self::offline), [`synchronize`](Self::synchronize) — takes `&mut self`, so the
/// compiler rejects a reference held across a quiescent state:
///
/// ```compile_fail
/// let rcu = rcu::Rcu::new();
/// let cell = rcu::RcuCell::new_in(&rcu, Some(5u32));
/// let mut me = rcu.register_qsbr();
/// let five = cell.load(&me).unwrap();
/// me.quiescent_state(); // error: `me` is borrowed by `five`
/// assert_eq!(*five, 5);
/// ```
///
/// Dropping the handle (including during unwinding, or at thread exit if it was leaked)
/// takes the thread offline and unregisters it, so it never stalls a grace period.
///
/// A handle kept in a thread-local whose destructor runs after the crate's own (which
/// unregisters every registration of the exiting thread) is *revoked* by it: reading through
/// it, or bringing it online, then panics with a message saying so, instead of reading
/// unseen by grace periods. What revocation cannot reach is a reference (or a
/// [`CellReader`](crate::CellReader) / [`QsbrCellReader`](crate::QsbrCellReader)) obtained
/// before it through a handle leaked for `'static` and kept in such a thread-local: leak no
/// online handle into a thread-local.
pub struct QsbrThread {
    rcu: Rcu,
    slot: Arc<Slot>,
    /// The domain's key (`Inner::key`), what `reading` holds while online.
    key: u64,
    _not_send: PhantomData<*const ()>,
}

impl std::fmt::Debug for QsbrThread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QsbrThread")
            .field("domain", &self.rcu.id())
            .field("online", &self.is_online())
            .finish()
    }
}

impl QsbrThread {
    /// Reports a quiescent state: the thread holds no reference obtained before this call.
    /// Cheap when no grace period is in progress (one load and a compare).
    #[inline]
    pub fn quiescent_state(&mut self) {
        let gp = self.rcu.inner().gp.load(Ordering::Acquire);
        self.quiescent_state_at(gp);
    }

    /// `quiescent_state` with `gp` already loaded (Acquire) from this handle's domain.
    #[inline(always)]
    pub(crate) fn quiescent_state_at(&mut self, gp: u64) {
        // The fast path needs no online check: offline (or revoked), `ctr` is 0, never `gp`.
        if self.slot.ctr.load(Ordering::Relaxed) != gp && self.is_online() {
            self.rcu.inner().qsbr_store(&self.slot, gp);
        }
    }

    /// What the handle last stored in its slot's `ctr` (its owner is the only writer).
    #[inline(always)]
    pub(crate) fn ctr(&self) -> u64 {
        self.slot.ctr.load(Ordering::Relaxed)
    }

    /// Goes offline: grace periods stop waiting for this thread until [`online`](Self::online).
    /// Reading through an offline handle panics.
    #[inline]
    pub fn offline(&mut self) {
        if self.is_online() {
            self.slot.reading.store(0, Ordering::Relaxed);
            self.rcu.inner().reader_exit(&self.slot);
        }
    }

    /// Comes back online (which is also a quiescent state).
    ///
    /// # Panics
    ///
    /// If the handle was revoked: its thread is exiting and the crate's thread-exit clean-up
    /// has already unregistered it (the handle lives in a thread-local destroyed after the
    /// crate's).
    #[inline]
    pub fn online(&mut self) {
        match self.slot.reading.load(Ordering::Relaxed) {
            0 => {
                self.slot.reading.store(self.key, Ordering::Relaxed);
                self.rcu.inner().qsbr_online(&self.slot);
            }
            REVOKED => revoked(),
            _ => {}
        }
    }

    /// Whether the thread is online.
    #[inline]
    pub fn is_online(&self) -> bool {
        self.slot.reading.load(Ordering::Relaxed) == self.key
    }

    /// Runs `f` offline (for blocking calls: `KVM_RUN`, `poll`) and comes back online.
    #[inline]
    pub fn offline_while<R>(&mut self, f: impl FnOnce() -> R) -> R {
        let was_online = self.is_online();
        self.offline();
        let r = f();
        if was_online {
            self.online();
        }
        r
    }

    /// Waits for a grace period, going offline for the wait as liburcu's QSBR flavour does.
    pub fn synchronize(&mut self) {
        let rcu = self.rcu.clone();
        self.offline_while(|| rcu.synchronize());
    }

    /// The domain this thread is registered with.
    pub fn domain(&self) -> &Rcu {
        &self.rcu
    }

    /// Test support (loom): what the thread-exit clean-up does to a QSBR registration whose
    /// handle is still alive (`local.rs`, which loom does not build).
    #[cfg(loom)]
    pub fn loom_thread_exit(&self) {
        self.rcu.inner().revoke_qsbr(&self.slot);
    }

    /// Test support (loom): whether a read through this handle would be allowed (the check
    /// of [`ReadSide`] without its panic).
    #[cfg(loom)]
    pub fn loom_may_read(&self) -> bool {
        self.slot.reading.load(Ordering::Relaxed) == self.key
    }
}

impl Drop for QsbrThread {
    fn drop(&mut self) {
        self.offline();
        self.rcu.inner().unregister(&self.slot);
        #[cfg(not(loom))]
        crate::local::forget(self.rcu.id(), &self.slot);
    }
}

/// Proof that the calling thread is on the read side of a domain.
///
/// Implemented by [`QsbrThread`] (while online) and [`ReadGuard`]. References read under it
/// borrow it, so they cannot outlive the read-side section.
///
/// # Safety
///
/// Sealed: only this crate implements it. `check` must panic (or abort) unless the implementor
/// guarantees that grace periods of domain `id` wait for the current thread for as long as the
/// `&self` borrow lasts.
pub unsafe trait ReadSide: sealed::Sealed {
    /// Panics unless this is a live reader of the domain whose key is `key` (an opaque value
    /// the crate's data structures take from their domain). A [`ReadGuard`] of another domain
    /// aborts instead (see its implementation).
    #[track_caller]
    fn check(&self, key: u64);
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::QsbrThread {}
    impl Sealed for super::ReadGuard<'_> {}
    #[cfg(loom)]
    impl Sealed for super::LoomGuard<'_> {}
}

#[cold]
#[inline(never)]
#[track_caller]
fn not_a_reader(what: &str) -> ! {
    panic!("{what}")
}

#[cold]
#[inline(never)]
fn revoked() -> ! {
    panic!(
        "rcu: QsbrThread used after its thread's exit unregistered it (it lives in a \
         thread-local destroyed after the rcu crate's, so grace periods no longer wait for \
         it). Drop the QsbrThread before the thread exits, or keep it out of thread-locals."
    )
}

// SAFETY: an online QsbrThread's slot holds ctr != 0 until `quiescent_state`/`offline`, which
// take `&mut self` and so cannot run while a `&self` borrow is alive. The thread-exit clean-up
// (which unregisters the slot without `&mut self`) revokes `reading` first, so the check
// fails from then on; it runs on this same thread, between two of its reads.
unsafe impl ReadSide for QsbrThread {
    #[inline(always)]
    fn check(&self, key: u64) {
        let reading = self.slot.reading.load(Ordering::Relaxed);
        if reading != key {
            match reading {
                0 => not_a_reader("read through an offline QsbrThread: call online() first"),
                REVOKED => revoked(),
                _ => {
                    not_a_reader("read through a QsbrThread of another RCU domain than the data's")
                }
            }
        }
    }
}

/// A read-side critical section of a domain, from [`Rcu::read_lock`].
///
/// Nestable; not `Send` (the section belongs to the thread). While any guard of the thread is
/// alive, grace periods of the domain wait for the thread.
pub struct ReadGuard<'a> {
    pub(crate) inner: &'a Inner,
    pub(crate) slot: *const Slot,
    pub(crate) _not_send: PhantomData<*const ()>,
}

// SAFETY: the guard's slot has ctr != 0 from `read_lock` until the outermost guard drops, and
// the guard cannot outlive its `&'a Rcu` or leave its thread.
unsafe impl ReadSide for ReadGuard<'_> {
    /// Aborts, rather than panics, on a guard of another domain: see [`guard_of_another_domain`].
    #[inline(always)]
    fn check(&self, key: u64) {
        if self.inner.key() != key {
            guard_of_another_domain(std::panic::Location::caller());
        }
    }
}

/// A read through a [`ReadGuard`] of another domain than the data's: a bug that, unchecked,
/// would be a use-after-free. It aborts the process with this message instead of panicking,
/// because a panic would unwind through the caller's frame, which owns the guard: then every
/// `read_lock` section that reads a cell would have to keep its guard in memory for the
/// unwinder (two stack stores per section, about a quarter of its time). A function that
/// cannot unwind (`extern "C"`) needs no such landing pad.
#[cold]
#[inline(never)]
extern "C" fn guard_of_another_domain(at: &'static std::panic::Location<'static>) -> ! {
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "{at}: rcu: read through a ReadGuard of another RCU domain than the data's; aborting \
         (take the guard from the Rcu that the cell or list was created in)"
    );
    std::process::abort()
}

impl ReadGuard<'_> {
    // The nesting depth lives in `ctr`'s low bits: the outermost lock and unlock are one load
    // and one store of `ctr` (plus `gp` and the fence), and the nested cases are out of line,
    // so that the outermost path is straight-line code. The outermost unlock stores the
    // constant 0, which breaks the data dependency through `ctr` between iterations.
    #[inline(always)]
    pub(crate) fn enter(inner: &Inner, slot: &Slot, membarrier: bool) {
        membarrier_point(slot);
        let c = slot.ctr.load(Ordering::Relaxed);
        if c == 0 {
            inner.lock_outermost(slot, membarrier);
        } else {
            nest_enter(slot, c);
        }
    }

    /// The unlock. Needs no load of the domain's mode: `ctr`'s low bits say whether this is
    /// a membarrier domain's outermost level (1, inline), or a fence domain's
    /// (`FENCE_MODE | 1`) or a nested level (both out of line); see [`FENCE_MODE`].
    #[inline(always)]
    pub(crate) fn exit(inner: &Inner, slot: &Slot) {
        membarrier_point(slot);
        let c = slot.ctr.load(Ordering::Relaxed);
        if c & NEST_MASK == 1 {
            inner.read_unlock_outermost(slot, true);
        } else {
            exit_slow(inner, slot, c);
        }
        membarrier_point(slot);
    }
}

/// A nested `read_lock`: only the depth changes.
#[cold]
#[inline(never)]
fn nest_enter(slot: &Slot, ctr: u64) {
    if ctr & DEPTH_MASK == DEPTH_MASK {
        panic!("rcu: read_lock() nested more than {DEPTH_MASK} deep on one thread");
    }
    slot.ctr.store(ctr + 1, Ordering::Relaxed);
}

/// A fence domain's outermost unlock, or a nested one (only the depth changes).
#[cold]
#[inline(never)]
fn exit_slow(inner: &Inner, slot: &Slot, ctr: u64) {
    if ctr & NEST_MASK == FENCE_MODE | 1 {
        inner.read_unlock_outermost(slot, false);
    } else {
        slot.ctr.store(ctr - 1, Ordering::Relaxed);
    }
}

/// The reader's half of the store-buffering pairs: a compiler barrier when the domain uses
/// membarrier (the writer's membarrier fences this thread), else a full fence.
#[inline(always)]
fn reader_slave_fence(membarrier: bool) {
    if membarrier {
        crate::sync::compiler_fence();
    } else {
        reader_full_fence();
    }
}

/// The reader's full fence when the domain does not use membarrier (out of line, so that the
/// membarrier fast path is straight-line code; the fence dwarfs the call).
#[cold]
#[inline(never)]
fn reader_full_fence() {
    fence(Ordering::SeqCst);
}

impl Drop for ReadGuard<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        // SAFETY: the slot is kept alive by the thread's registration, which outlives every
        // guard of the thread (see `local`).
        let slot = unsafe { &*self.slot };
        ReadGuard::exit(self.inner, slot);
    }
}

/// Test support (loom): a read-lock reader with an explicit registration.
#[cfg(loom)]
pub struct LoomReader {
    rcu: Rcu,
    slot: Arc<Slot>,
}

#[cfg(loom)]
impl LoomReader {
    /// Enters a read-side section, exactly as [`Rcu::read_lock`] does.
    pub fn lock(&self) -> LoomGuard<'_> {
        let inner = self.rcu.inner();
        ReadGuard::enter(inner, &self.slot, inner.config.use_membarrier);
        LoomGuard { reader: self }
    }
}

#[cfg(loom)]
impl Drop for LoomReader {
    fn drop(&mut self) {
        membarrier_exit(&self.slot);
        self.rcu.inner().unregister(&self.slot);
    }
}

/// Test support (loom): the guard of a [`LoomReader`].
#[cfg(loom)]
pub struct LoomGuard<'a> {
    reader: &'a LoomReader,
}

#[cfg(loom)]
unsafe impl ReadSide for LoomGuard<'_> {
    fn check(&self, key: u64) {
        assert_eq!(self.reader.rcu.inner().key(), key);
        membarrier_point(&self.reader.slot);
    }
}

#[cfg(loom)]
impl Drop for LoomGuard<'_> {
    fn drop(&mut self) {
        let inner = self.reader.rcu.inner();
        ReadGuard::exit(inner, &self.reader.slot);
    }
}
