//! Deferred reclamation: `call_rcu`, `defer_drop`, `rcu_barrier`, grace-period polling and
//! the bounded-garbage throttle, all served by one reclamation thread per domain.
//!
//! # The queue and the batch hand-off
//!
//! Callbacks are pushed onto a lock-free multi-producer stack (a compare-and-swap on `head`).
//! Each node is one allocation holding the callback inline behind a small header (the
//! `rcu_head` idea: a `next` pointer and a function pointer that knows the node's type).
//! The reclamation thread takes the whole stack with one swap, so producers never contend
//! with it for more than that word, reverses it into arrival order, waits for **one** grace
//! period, and runs the batch while holding the application's lock (a [`CallbackLock`], which
//! the VMM makes its big global lock). Every callback in a batch was queued before the batch
//! was taken, hence before the grace period began, hence after the writer unpublished what the
//! callback frees: that is the whole correctness argument.
//!
//! Batching: the thread waits until `batch_min` callbacks are queued or `batch_wait` has
//! passed (QEMU uses 30 callbacks / 50 ms), unless someone is waiting for it (`rcu_barrier`,
//! a throttled producer, a poll request), in which case it goes at once.
//!
//! # Wake-ups
//!
//! A producer wakes the thread only when it turns an empty stack into a non-empty one (or
//! reaches `batch_min`): the thread resets its event and re-checks `head` before it sleeps,
//! and the producer's swap of `head` is followed by the event's fence, a store-buffering pair,
//! so one of the two always sees the other.
//!
//! # Bounded garbage
//!
//! Above the high-water mark, a `call_rcu` caller that is allowed to block (it is not on the
//! read side, not the reclamation thread, and does not hold the callback lock) waits until the
//! reclamation thread has brought the queue back under the mark. So a writer that retires
//! faster than grace periods complete is slowed to their pace instead of growing memory
//! without bound. A caller that may not block (a reader) enqueues anyway and is counted in
//! [`RcuStats::over_high_water`](crate::RcuStats::over_high_water); a QSBR thread should use
//! [`QsbrThread::call_rcu`](crate::QsbrThread::call_rcu), which goes offline to wait.

use crate::domain::Inner;
use crate::event::Event;
use crate::sync::{
    thread, Arc, AtomicBool, AtomicPtr, AtomicU32, AtomicUsize, Condvar, Mutex, Ordering,
};
use std::ptr;
use std::time::Duration;
#[cfg(not(loom))]
use std::time::Instant;

/// The lock that `call_rcu` callbacks run under.
///
/// The VMM implements it for its big global lock, so that callbacks may touch any state the
/// BQL protects (the seed's "run call_rcu callbacks under the BQL").
pub trait CallbackLock: Send + Sync + 'static {
    /// Runs `f` while holding the lock. Called only on the reclamation thread, once per batch.
    fn with_lock(&self, f: &mut dyn FnMut());

    /// Whether the calling thread holds the lock. `rcu_barrier` panics when it does (it would
    /// wait for a batch that needs this lock), and a throttled `call_rcu` or the domain's
    /// last drop do not wait for the reclamation thread then. The default, `false`, disables
    /// the `rcu_barrier` check; the other two then notice that the reclamation thread is stuck
    /// waiting for the lock and stop waiting after about 50 ms.
    fn held_by_current_thread(&self) -> bool {
        false
    }
}

#[repr(C)]
struct Head {
    next: *mut Head,
    call: unsafe fn(*mut Head),
}

#[repr(C)]
struct Node<F> {
    head: Head,
    f: F,
}

/// Runs and frees a node created by `Reclaimer::enqueue::<F>`.
///
/// # Safety
///
/// `h` must come from `Box::into_raw(Box<Node<F>>)` for this same `F`, and be called once.
unsafe fn call_node<F: FnOnce()>(h: *mut Head) {
    // SAFETY: per this function's contract; `Head` is the first field of the repr(C) node.
    let node = unsafe { Box::from_raw(h as *mut Node<F>) };
    (node.f)();
}

/// A token from [`Rcu::start_poll`](crate::Rcu::start_poll) naming a grace period.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GpToken(pub(crate) u64);

pub(crate) struct Reclaimer {
    head: AtomicPtr<Head>,
    pending: AtomicUsize,
    /// The reclamation thread sleeps on this.
    wake: Event,
    /// Batches (and grace periods) the thread has completed; throttled producers wait on
    /// `progress_cv` for it to move. A counter under a mutex, not an [`Event`]: with several
    /// producers throttled at once, one's `reset` of a shared event would erase the wake-up
    /// another is about to wait for.
    progress: Mutex<u64>,
    progress_cv: Condvar,
    /// The deliberately broken variant (loom): the shared, reset-before-wait progress event.
    #[cfg(rcu_broken_throttle)]
    progress_event: Event,
    /// Threads waiting for the reclamation thread (barrier, throttle, poll): skip batching.
    urgent: AtomicUsize,
    gp_requested: AtomicBool,
    stop: AtomicBool,
    started: AtomicBool,
    thread: Mutex<Option<thread::JoinHandle<()>>>,
    lock: Option<Arc<dyn CallbackLock>>,
    /// Runs first on each reclamation thread ([`crate::RcuBuilder::on_reclaimer_start`]).
    on_start: Option<StartHook>,
    /// Barriers whose callback ran in the current batch; set once the batch's statistics are
    /// recorded, so a caller of `rcu_barrier` sees them up to date.
    barriers_done: Mutex<Vec<Arc<Event>>>,
    /// The batch in hand (newest first), taken from `head` before its grace period. It stays
    /// here until it has run, so that if the grace period or the callback lock panics, the
    /// next round runs it (after another grace period). Only the reclamation thread uses it.
    carry: AtomicPtr<Head>,
    /// The reclamation thread is waiting to acquire the callback lock. A throttled producer
    /// or the domain's drop that sees it stay so may be the holder (when the lock cannot tell,
    /// see [`CallbackLock::held_by_current_thread`]) and stops waiting instead of deadlocking.
    acquiring_lock: AtomicBool,
    /// Rounds in a row that panicked outside a callback (reset by a successful round).
    failures: AtomicU32,
    /// The last such panic's message, for the error of a waiter that gives up.
    last_failure: Mutex<String>,
}

/// The reclamation thread's start hook ([`crate::RcuBuilder::on_reclaimer_start`]).
pub(crate) type StartHook = std::sync::Arc<dyn Fn() + Send + Sync>;

/// After this many failed rounds in a row, `rcu_barrier` panics instead of waiting, and a
/// throttled producer stops waiting.
const GIVE_UP_AFTER: u32 = 3;

/// How long a waiter sleeps between checks of the reclamation thread's health (under loom,
/// where time does not exist, the waits are plain waits).
const CHECK_EVERY: Duration = Duration::from_millis(10);

/// How many checks in a row without progress, the thread waiting for the callback lock, make
/// a throttled producer (or the domain's drop) stop waiting: it may hold that lock itself.
const STUCK_CHECKS: u32 = 5;

// SAFETY: the raw pointers in the queue are owned by it and handed between threads only
// through the atomic `head`; the callbacks they hold are `Send`.
unsafe impl Send for Reclaimer {}
// SAFETY: as above; all shared mutation goes through atomics and mutexes.
unsafe impl Sync for Reclaimer {}

#[cfg(not(loom))]
thread_local! {
    /// The id of the domain whose reclamation thread this is (0 elsewhere).
    static RECLAIMER_OF: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

fn on_reclaimer_thread(id: u64) -> bool {
    #[cfg(not(loom))]
    return RECLAIMER_OF.with(|c| c.get()) == id;
    #[cfg(loom)]
    {
        let _ = id;
        false
    }
}

impl Reclaimer {
    pub(crate) fn new(lock: Option<Arc<dyn CallbackLock>>, on_start: Option<StartHook>) -> Self {
        Reclaimer {
            head: AtomicPtr::new(ptr::null_mut()),
            pending: AtomicUsize::new(0),
            wake: Event::new(false),
            progress: Mutex::new(0),
            progress_cv: Condvar::new(),
            #[cfg(rcu_broken_throttle)]
            progress_event: Event::new(false),
            urgent: AtomicUsize::new(0),
            gp_requested: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            started: AtomicBool::new(false),
            thread: Mutex::new(None),
            lock,
            on_start,
            barriers_done: Mutex::new(Vec::new()),
            carry: AtomicPtr::new(ptr::null_mut()),
            acquiring_lock: AtomicBool::new(false),
            failures: AtomicU32::new(0),
            last_failure: Mutex::new(String::new()),
        }
    }

    /// `fork()` prepare handler (see `fork.rs`).
    #[cfg(not(loom))]
    pub(crate) fn before_fork(&self) {
        self.thread.lock_and_forget();
        self.barriers_done.lock_and_forget();
        self.progress.lock_and_forget();
        self.last_failure.lock_and_forget();
    }

    /// `fork()` parent handler.
    ///
    /// # Safety
    ///
    /// Only after `before_fork` on this thread.
    #[cfg(not(loom))]
    pub(crate) unsafe fn after_fork_parent(&self) {
        // SAFETY: per this function's contract.
        unsafe { self.unlock_after_fork() }
    }

    /// Releases the locks `before_fork` took.
    ///
    /// # Safety
    ///
    /// `before_fork` took them on this thread and forgot the guards.
    #[cfg(not(loom))]
    unsafe fn unlock_after_fork(&self) {
        // SAFETY: per this function's contract.
        unsafe {
            self.last_failure.force_unlock();
            self.progress.force_unlock();
            self.barriers_done.force_unlock();
            self.thread.force_unlock();
        }
    }

    /// `fork()` child handler: the parent's reclamation thread does not exist here. Forget
    /// it (a new one starts lazily and runs what the parent had queued) and the waiters that
    /// were other threads.
    ///
    /// # Safety
    ///
    /// Only in the child, after `before_fork` on this thread.
    #[cfg(not(loom))]
    pub(crate) unsafe fn after_fork_child(&self) {
        // SAFETY: this thread holds the lock (from `before_fork`) and is the only thread.
        let handle = unsafe { self.thread.data_mut() }.take();
        // Joining or detaching would name a thread of the parent: just forget the handle.
        std::mem::forget(handle);
        self.started.store(false, Ordering::Release);
        self.urgent.store(0, Ordering::Relaxed);
        self.acquiring_lock.store(false, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { self.unlock_after_fork() }
    }

    /// Whether the thread has failed too many rounds in a row to be waited for.
    fn failing(&self) -> bool {
        self.failures.load(Ordering::Acquire) >= GIVE_UP_AFTER
    }

    /// Panics with the reason the reclamation thread keeps failing (for `rcu_barrier`).
    fn give_up(inner: &Inner, what: &str) -> ! {
        let r = &inner.reclaim;
        panic!(
            "rcu: {what}() gives up: the reclamation thread of domain {} failed {} rounds in \
             a row outside any callback (last: {}); callbacks cannot run until the \
             CallbackLock or grace period it panics in is fixed",
            inner.id,
            r.failures.load(Ordering::Acquire),
            *r.last_failure.lock()
        );
    }

    /// Waits for batches until `done()` holds (checked under the progress lock, which the
    /// thread takes to announce a batch, so no announcement is missed). Stops early, returning
    /// false, once `stuck()` has held for [`STUCK_CHECKS`] checks in a row without a batch.
    fn wait_for_progress(&self, mut done: impl FnMut() -> bool, stuck: impl Fn() -> bool) -> bool {
        let mut batches = self.progress.lock();
        let mut seen = *batches;
        let mut stuck_checks = 0;
        while !done() {
            batches = self.progress_cv.wait_timeout(batches, CHECK_EVERY);
            if *batches != seen {
                seen = *batches;
                stuck_checks = 0;
            } else if stuck() {
                stuck_checks += 1;
                if stuck_checks >= STUCK_CHECKS {
                    return false;
                }
            } else {
                stuck_checks = 0;
            }
        }
        true
    }

    pub(crate) fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    fn ensure_started(inner: &Arc<Inner>) {
        let r = &inner.reclaim;
        if r.started.load(Ordering::Acquire) {
            return;
        }
        let mut t = r.thread.lock();
        if r.started.load(Ordering::Relaxed) || r.stop.load(Ordering::Relaxed) {
            return;
        }
        let inner2 = inner.clone();
        #[cfg(not(loom))]
        let handle = std::thread::Builder::new()
            .name(format!("rcu-reclaim-{}", inner.id))
            .spawn(move || Reclaimer::run(inner2))
            .expect("rcu: cannot spawn the reclamation thread");
        #[cfg(loom)]
        let handle = thread::spawn(move || Reclaimer::run(inner2));
        *t = Some(handle);
        r.started.store(true, Ordering::Release);
    }

    /// Queues `f`; returns whether the queue is above the high-water mark.
    pub(crate) fn enqueue<F: FnOnce() + Send + 'static>(inner: &Arc<Inner>, f: F) -> bool {
        let r = &inner.reclaim;
        let node = Box::into_raw(Box::new(Node {
            head: Head {
                next: ptr::null_mut(),
                call: call_node::<F>,
            },
            f,
        })) as *mut Head;
        // Count before publishing: once the node is visible the reclamation thread may run it
        // and subtract it, and `pending` must never go below zero (it would read as ~2^64 and
        // throttle every producer).
        #[cfg(not(rcu_broken_pending))]
        let n = r.pending.fetch_add(1, Ordering::Relaxed) + 1;
        let mut old = r.head.load(Ordering::Relaxed);
        loop {
            // SAFETY: `node` is ours until the compare-and-swap below publishes it.
            unsafe { (*node).next = old };
            match r
                .head
                .compare_exchange_weak(old, node, Ordering::Release, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(actual) => old = actual,
            }
        }
        // The deliberately broken variant (loom): counted only after publishing.
        #[cfg(rcu_broken_pending)]
        let n = r.pending.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
        if n as u64 > inner.stats.max_pending.load(Ordering::Relaxed) {
            inner
                .stats
                .max_pending
                .fetch_max(n as u64, Ordering::Relaxed);
        }
        if old.is_null() || n == inner.config.batch_min {
            Reclaimer::ensure_started(inner);
            r.wake.set();
        }
        n > inner.config.high_water
    }

    /// Waits until the queue is back under the high-water mark (the caller may block).
    pub(crate) fn throttle(inner: &Arc<Inner>) {
        let r = &inner.reclaim;
        if on_reclaimer_thread(inner.id)
            || r.lock.as_ref().is_some_and(|l| l.held_by_current_thread())
        {
            inner.stats.over_high_water.fetch_add(1, Ordering::Relaxed);
            return;
        }
        inner.stats.throttled.fetch_add(1, Ordering::Relaxed);
        r.urgent.fetch_add(1, Ordering::Relaxed);
        Reclaimer::ensure_started(inner);
        r.wake.set();
        // The thread lowers `pending` before it announces the batch; while the queue is still
        // over the mark, each check nudges the thread again.
        #[cfg(not(rcu_broken_throttle))]
        if !r.wait_for_progress(
            || {
                let under = r.pending.load(Ordering::Relaxed) <= inner.config.high_water;
                if !under {
                    r.wake.set();
                }
                under
            },
            || r.acquiring_lock.load(Ordering::Relaxed) || r.failing(),
        ) {
            // The thread waits for the callback lock, which this thread may hold (the lock
            // cannot tell), or it keeps failing: go over the mark.
            inner.stats.over_high_water.fetch_add(1, Ordering::Relaxed);
            log::debug!(
                "rcu: call_rcu stops waiting for the reclamation thread of domain {}, which \
                 makes no progress",
                inner.id
            );
        }
        // The deliberately broken variant (loom): every throttled producer resets one shared
        // event before it checks and waits, erasing a wake-up meant for another.
        #[cfg(rcu_broken_throttle)]
        loop {
            r.progress_event.reset();
            if r.pending.load(Ordering::Relaxed) <= inner.config.high_water {
                break;
            }
            r.wake.set();
            r.progress_event.wait_timeout(Duration::from_millis(100));
        }
        r.urgent.fetch_sub(1, Ordering::Relaxed);
    }

    /// Announces a completed batch (or grace period) to throttled producers.
    fn announce_progress(&self) {
        *self.progress.lock() += 1;
        self.progress_cv.notify_all();
        #[cfg(rcu_broken_throttle)]
        self.progress_event.set();
    }

    /// `rcu_barrier`: returns when every callback queued before the call has run.
    pub(crate) fn barrier(inner: &Arc<Inner>) {
        Reclaimer::barrier_until(inner, None);
    }

    /// The barrier, giving up at `deadline` (then false: the callbacks still run later).
    pub(crate) fn barrier_until(inner: &Arc<Inner>, deadline: Option<std::time::Instant>) -> bool {
        let r = &inner.reclaim;
        if on_reclaimer_thread(inner.id) {
            panic!(
                "rcu: rcu_barrier() called from a call_rcu callback; it would wait for its own \
                 batch forever"
            );
        }
        if r.lock.as_ref().is_some_and(|l| l.held_by_current_thread()) {
            panic!(
                "rcu: rcu_barrier() called while holding the callback lock (the BQL in the \
                 VMM); callbacks run under that lock, so the barrier would wait forever. \
                 Release the lock around rcu_barrier()."
            );
        }
        let done = Arc::new(Event::new(false));
        let done2 = done.clone();
        let inner2 = inner.clone();
        r.urgent.fetch_add(1, Ordering::Relaxed);
        Reclaimer::enqueue(inner, move || {
            inner2.reclaim.barriers_done.lock().push(done2)
        });
        r.wake.set();
        let mut finished = true;
        while !done.wait_timeout(CHECK_EVERY) {
            if r.failing() {
                r.urgent.fetch_sub(1, Ordering::Relaxed);
                Reclaimer::give_up(inner, "rcu_barrier");
            }
            if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
                finished = false;
                break;
            }
        }
        r.urgent.fetch_sub(1, Ordering::Relaxed);
        finished
    }

    /// Asks the reclamation thread for a grace period (for polling).
    pub(crate) fn request_gp(inner: &Arc<Inner>) {
        let r = &inner.reclaim;
        if !r.gp_requested.load(Ordering::Relaxed) {
            r.gp_requested.store(true, Ordering::Release);
        }
        Reclaimer::ensure_started(inner);
        r.wake.set();
    }

    fn has_work(&self) -> bool {
        !self.head.load(Ordering::Acquire).is_null()
            || !self.carry.load(Ordering::Relaxed).is_null()
            || self.gp_requested.load(Ordering::Relaxed)
            || self.stop.load(Ordering::Relaxed)
    }

    fn run(inner: Arc<Inner>) {
        #[cfg(not(loom))]
        RECLAIMER_OF.with(|c| c.set(inner.id));
        let r = &inner.reclaim;
        if let Some(hook) = &r.on_start {
            if let Err(payload) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| hook()))
            {
                log::error!(
                    "rcu: the start hook of domain {}'s reclamation thread panicked ({}); \
                     reclamation runs anyway",
                    inner.id,
                    panic_message(&*payload)
                );
            }
        }
        loop {
            // A panic outside a callback (in the callback lock or a grace period) must not
            // kill the thread: `rcu_barrier` and throttled producers would wait for it forever.
            // The batch in hand stays in `carry` and runs next round.
            let round =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Reclaimer::round(&inner)));
            match round {
                Ok(false) => {}
                Ok(true) => return,
                Err(payload) => {
                    r.acquiring_lock.store(false, Ordering::Relaxed);
                    let msg = panic_message(&*payload);
                    let failures = r.failures.load(Ordering::Relaxed) + 1;
                    *r.last_failure.lock() = msg.clone();
                    r.failures.store(failures, Ordering::Release);
                    inner
                        .stats
                        .reclaimer_failures
                        .fetch_add(1, Ordering::Relaxed);
                    log::error!(
                        "rcu: the reclamation thread of domain {} caught a panic outside any \
                         callback ({msg}); it retries the batch (failure {failures} in a row)",
                        inner.id
                    );
                    // Let waiters see the failure (they give up after GIVE_UP_AFTER).
                    r.announce_progress();
                    if r.stop.load(Ordering::Acquire) && failures >= GIVE_UP_AFTER {
                        // The domain is being dropped and the batch cannot run: leave it to
                        // `Reclaimer::drop`, which runs it once no reader can exist.
                        return;
                    }
                    #[cfg(not(loom))]
                    std::thread::sleep(Duration::from_millis(1 << failures.min(10)));
                }
            }
        }
    }

    /// Moves everything queued into `carry` (newest first, ahead of what is already there,
    /// which is older).
    fn take_batch(r: &Reclaimer) {
        let taken = r.head.swap(ptr::null_mut(), Ordering::Acquire);
        if taken.is_null() {
            return;
        }
        let mut tail = taken;
        // SAFETY: the taken nodes are exclusively ours; walk to the oldest one.
        while !unsafe { (*tail).next }.is_null() {
            // SAFETY: as above.
            tail = unsafe { (*tail).next };
        }
        // SAFETY: as above; `carry` is only used by this thread.
        unsafe { (*tail).next = r.carry.load(Ordering::Relaxed) };
        r.carry.store(taken, Ordering::Relaxed);
    }

    /// One round: wait for work, batch, one grace period, run the batch. Returns whether the
    /// thread should exit.
    fn round(inner: &Arc<Inner>) -> bool {
        let r = &inner.reclaim;
        // Wait for work.
        while !r.has_work() {
            r.wake.reset();
            if r.has_work() {
                break;
            }
            r.wake.wait();
        }
        // Batch: wait for batch_min callbacks or batch_wait, unless someone is waiting.
        #[cfg(not(loom))]
        {
            let deadline = Instant::now() + inner.config.batch_wait;
            let go = || {
                r.pending.load(Ordering::Relaxed) >= inner.config.batch_min
                    || r.urgent.load(Ordering::Relaxed) > 0
                    || r.gp_requested.load(Ordering::Relaxed)
                    || r.stop.load(Ordering::Relaxed)
            };
            loop {
                let now = Instant::now();
                if go() || now >= deadline {
                    break;
                }
                // Reset, then re-check everything that sets the event: a request made
                // between the check above and the reset is seen here, one made after it
                // finds the event reset and sets it.
                r.wake.reset();
                if go() {
                    break;
                }
                r.wake.wait_timeout(deadline - now);
            }
        }
        // The batch is taken *before* its grace period begins: every callback in it was
        // queued before, so what it frees was unpublished before the grace period.
        #[cfg(not(rcu_broken_batch))]
        Reclaimer::take_batch(r);
        // A poll request made before this point is satisfied by the grace period below
        // (Acquire: that grace period's target is at least the requester's token).
        r.gp_requested.swap(false, Ordering::Acquire);
        // The deliberately broken variant (`--cfg rcu_broken_reclaim`, for showing that the
        // list and torture tests catch it) runs callbacks without a grace period.
        #[cfg(not(rcu_broken_reclaim))]
        inner.synchronize();
        // The deliberately broken variant (loom): the batch taken after the grace period, so
        // a callback queued while it was in progress runs without one of its own.
        #[cfg(rcu_broken_batch)]
        Reclaimer::take_batch(r);
        if !r.carry.load(Ordering::Relaxed).is_null() {
            Reclaimer::run_batch(inner);
        }
        r.failures.store(0, Ordering::Release);
        r.announce_progress();
        r.stop.load(Ordering::Acquire)
            && r.head.load(Ordering::Acquire).is_null()
            && r.carry.load(Ordering::Relaxed).is_null()
    }

    /// Runs `carry` under the callback lock. It is taken only once the lock is held, so if
    /// `with_lock` panics before calling us, the batch is still there for the next round.
    fn run_batch(inner: &Inner) {
        let r = &inner.reclaim;
        let mut run_all = || {
            r.acquiring_lock.store(false, Ordering::Relaxed);
            let batch = r.carry.swap(ptr::null_mut(), Ordering::Relaxed);
            // Reverse into arrival order.
            let mut list: *mut Head = ptr::null_mut();
            let mut cur = batch;
            let mut n = 0u64;
            while !cur.is_null() {
                // SAFETY: every node in the taken stack is exclusively ours now.
                let next = unsafe { (*cur).next };
                // SAFETY: as above.
                unsafe { (*cur).next = list };
                list = cur;
                cur = next;
                n += 1;
            }
            let mut panics = 0u64;
            let mut cur = list;
            while !cur.is_null() {
                // SAFETY: exclusively ours; read `next` before the node is freed by its call.
                let (next, call) = unsafe { ((*cur).next, (*cur).call) };
                let node = cur;
                // SAFETY: `call` is the `call_node::<F>` that was stored with this node, and
                // each node is called exactly once.
                let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| unsafe {
                    call(node)
                }));
                if res.is_err() {
                    panics += 1;
                    log::error!("rcu: a call_rcu callback panicked; it was skipped");
                }
                cur = next;
            }
            let s = &inner.stats;
            s.callbacks_run.fetch_add(n, Ordering::Relaxed);
            s.batches.fetch_add(1, Ordering::Relaxed);
            if panics > 0 {
                s.callback_panics.fetch_add(panics, Ordering::Relaxed);
            }
            if n > s.max_batch.load(Ordering::Relaxed) {
                s.max_batch.fetch_max(n, Ordering::Relaxed);
            }
            r.pending.fetch_sub(n as usize, Ordering::Release);
            for done in r.barriers_done.lock().drain(..) {
                done.set();
            }
        };
        match &r.lock {
            Some(lock) => {
                r.acquiring_lock.store(true, Ordering::Relaxed);
                lock.with_lock(&mut run_all);
                r.acquiring_lock.store(false, Ordering::Relaxed);
            }
            None => run_all(),
        }
    }

    /// Drains the queue and stops the thread (the domain's last handle is being dropped).
    ///
    /// Never deadlocks: when the caller holds the callback lock (as far as
    /// [`CallbackLock::held_by_current_thread`] says, or because the thread keeps waiting for
    /// that lock), the final batch cannot run before the caller releases it, so the thread is
    /// left to finish on its own instead of being joined.
    pub(crate) fn shutdown(inner: &Arc<Inner>) {
        let r = &inner.reclaim;
        r.stop.store(true, Ordering::Release);
        r.wake.set();
        let handle = r.thread.lock().take();
        let Some(h) = handle else {
            return;
        };
        if on_reclaimer_thread(inner.id) {
            // Dropped from one of our own callbacks: the thread exits by itself after
            // draining; joining ourselves would deadlock.
            return;
        }
        if r.lock.as_ref().is_some_and(|l| l.held_by_current_thread()) {
            log::debug!(
                "rcu: domain {} dropped under its callback lock; its last callbacks run once \
                 the lock is released",
                inner.id
            );
            return;
        }
        #[cfg(not(loom))]
        if !r.wait_for_progress(
            || h.is_finished(),
            || r.acquiring_lock.load(Ordering::Relaxed),
        ) {
            log::debug!(
                "rcu: domain {} dropped while its reclamation thread waits for the callback \
                 lock (held by the caller?); not waiting for it",
                inner.id
            );
            return;
        }
        let _ = h.join();
    }
}

/// The message of a caught panic.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        String::from("a panic without a message")
    }
}

impl Drop for Reclaimer {
    fn drop(&mut self) {
        // Reached when the domain's last reference goes: no reader or producer remains, so
        // what is still queued (a batch the thread could not run, or nodes left when no
        // thread was started) can run now. Freeing the nodes without running them would leak
        // what they own.
        for list in [&self.carry, &self.head] {
            let mut cur = list.swap(ptr::null_mut(), Ordering::Acquire);
            while !cur.is_null() {
                // SAFETY: the domain is gone, so no reader or producer remains; nodes are ours.
                let (next, call) = unsafe { ((*cur).next, (*cur).call) };
                // SAFETY: the node's own call function, called once.
                unsafe { call(cur) };
                cur = next;
            }
        }
    }
}

impl crate::Rcu {
    /// Runs `f` on the domain's reclamation thread after a grace period: every read-side
    /// section that was in progress when `call_rcu` was called has ended by then.
    ///
    /// `f` runs while holding the domain's [`CallbackLock`] (if one was given), never on the
    /// caller's thread and never inside a read-side section. Never blocks, except that above
    /// the high-water mark a caller that is not a reader waits for reclamation to catch up.
    /// That wait never deadlocks: a caller holding the callback lock does not wait (when the
    /// lock says so through [`CallbackLock::held_by_current_thread`]), and one whose wait
    /// makes no progress while the reclamation thread waits for the lock stops waiting after
    /// about 50 ms (it may be the holder); both are counted in
    /// [`RcuStats::over_high_water`](crate::RcuStats::over_high_water).
    pub fn call_rcu<F: FnOnce() + Send + 'static>(&self, f: F) {
        let inner = &self.handle.inner;
        if Reclaimer::enqueue(inner, f) {
            self.throttle_if_allowed();
        }
    }

    /// Drops `value` after a grace period (`call_rcu` with a drop).
    pub fn defer_drop<T: Send + 'static>(&self, value: T) {
        self.call_rcu(move || drop(value));
    }

    fn throttle_if_allowed(&self) {
        let inner = &self.handle.inner;
        #[cfg(not(loom))]
        let may_block = crate::local::reading_kind(self).is_none();
        #[cfg(loom)]
        let may_block = true;
        if may_block {
            Reclaimer::throttle(inner);
        } else {
            inner.stats.over_high_water.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Waits until every callback queued (by any thread) before this call has run.
    ///
    /// # Panics
    ///
    /// Inside a read-side section of this domain, on a thread whose [`QsbrThread`] is online
    /// (use [`QsbrThread::rcu_barrier`]), from a callback, and while the calling thread holds
    /// the domain's [`CallbackLock`] (detected when the lock implements
    /// [`CallbackLock::held_by_current_thread`]; the check is one call, so it is made in
    /// release builds too): each would wait forever. Also when the reclamation thread has
    /// failed three rounds in a row outside any callback (its [`CallbackLock`] or a grace
    /// period panicked; the message says why): rather than wait for callbacks that cannot
    /// run, it gives up.
    ///
    /// [`QsbrThread`]: crate::QsbrThread
    /// [`QsbrThread::rcu_barrier`]: crate::QsbrThread::rcu_barrier
    pub fn rcu_barrier(&self) {
        #[cfg(not(loom))]
        crate::local::assert_may_block(self, "rcu_barrier");
        Reclaimer::barrier(&self.handle.inner);
    }

    /// [`rcu_barrier`](Self::rcu_barrier) for at most `timeout`: true if every callback
    /// queued before the call has run, false if the time ran out first (a reader that never
    /// reports a quiescent state holds the grace period; the callbacks still run once it
    /// does). For shutdown paths that must end within a bound.
    ///
    /// # Panics
    ///
    /// As [`rcu_barrier`](Self::rcu_barrier).
    pub fn rcu_barrier_timeout(&self, timeout: std::time::Duration) -> bool {
        #[cfg(not(loom))]
        crate::local::assert_may_block(self, "rcu_barrier");
        Reclaimer::barrier_until(
            &self.handle.inner,
            Some(std::time::Instant::now() + timeout),
        )
    }

    /// Starts the domain's reclamation thread now if it is not running (it otherwise starts
    /// on first need), so that its [start hook](crate::RcuBuilder::on_reclaimer_start) runs
    /// at a time the caller chooses. Returns at once; does nothing after the domain began
    /// to drop.
    pub fn start_reclaimer(&self) {
        Reclaimer::ensure_started(&self.handle.inner);
    }

    /// Starts polling for a grace period: returns a token that [`poll`](Self::poll) reports
    /// complete once a grace period that began after this call has ended. Asks the
    /// reclamation thread to run one (it is not started otherwise). No allocation.
    pub fn start_poll(&self) -> GpToken {
        let token = self.current_token();
        Reclaimer::request_gp(&self.handle.inner);
        token
    }

    /// Like [`start_poll`](Self::start_poll) but does not ask for a grace period (some other
    /// writer or `call_rcu` traffic will end one). The kernel's `get_state_synchronize_rcu`.
    pub fn current_token(&self) -> GpToken {
        // Orders the caller's earlier stores before the read of `gp`, as in `synchronize`.
        // A read-modify-write, as in `synchronize`, so that the grace period's increment
        // acquires the caller's stores.
        crate::sync::fence(Ordering::SeqCst);
        GpToken(self.inner().gp.fetch_add(0, Ordering::AcqRel) + crate::domain::GP_STEP)
    }

    /// Whether the grace period named by `token` has completed: a few loads, no allocation.
    /// After it returns true, everything read-side sections did before it is visible.
    #[inline]
    pub fn poll(&self, token: GpToken) -> bool {
        self.inner().completed.load(Ordering::Acquire) >= token.0
    }
}

impl crate::QsbrThread {
    /// [`Rcu::call_rcu`](crate::Rcu::call_rcu) from a QSBR thread: above the high-water mark
    /// it goes offline to wait for reclamation (which needs this thread's quiescent state).
    pub fn call_rcu<F: FnOnce() + Send + 'static>(&mut self, f: F) {
        let rcu = self.domain().clone();
        if Reclaimer::enqueue(&rcu.handle.inner, f) {
            self.offline_while(|| rcu.throttle_if_allowed());
        }
    }

    /// [`Rcu::defer_drop`](crate::Rcu::defer_drop) from a QSBR thread.
    pub fn defer_drop<T: Send + 'static>(&mut self, value: T) {
        self.call_rcu(move || drop(value));
    }

    /// [`Rcu::rcu_barrier`](crate::Rcu::rcu_barrier), going offline for the wait.
    pub fn rcu_barrier(&mut self) {
        let rcu = self.domain().clone();
        self.offline_while(|| rcu.rcu_barrier());
    }
}
