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
use crate::sync::{thread, Arc, AtomicBool, AtomicPtr, AtomicUsize, Mutex, Ordering};
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

    /// Whether the calling thread holds the lock. Used to detect `rcu_barrier` deadlocks in
    /// debug builds (the barrier waits for a batch that needs this lock). The default, `false`,
    /// disables the check.
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
    /// Set after every batch (and grace period) the thread completes.
    progress: Event,
    /// Threads waiting for the reclamation thread (barrier, throttle, poll): skip batching.
    urgent: AtomicUsize,
    gp_requested: AtomicBool,
    stop: AtomicBool,
    started: AtomicBool,
    thread: Mutex<Option<thread::JoinHandle<()>>>,
    lock: Option<Arc<dyn CallbackLock>>,
    /// Barriers whose callback ran in the current batch; set once the batch's statistics are
    /// recorded, so a caller of `rcu_barrier` sees them up to date.
    barriers_done: Mutex<Vec<Arc<Event>>>,
}

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
    pub(crate) fn new(lock: Option<Arc<dyn CallbackLock>>) -> Self {
        Reclaimer {
            head: AtomicPtr::new(ptr::null_mut()),
            pending: AtomicUsize::new(0),
            wake: Event::new(false),
            progress: Event::new(false),
            urgent: AtomicUsize::new(0),
            gp_requested: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            started: AtomicBool::new(false),
            thread: Mutex::new(None),
            lock,
            barriers_done: Mutex::new(Vec::new()),
        }
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
        let n = r.pending.fetch_add(1, Ordering::Relaxed) + 1;
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
        loop {
            r.progress.reset();
            if r.pending.load(Ordering::Relaxed) <= inner.config.high_water {
                break;
            }
            r.wake.set();
            r.progress.wait_timeout(Duration::from_millis(100));
        }
        r.urgent.fetch_sub(1, Ordering::Relaxed);
    }

    /// `rcu_barrier`: returns when every callback queued before the call has run.
    pub(crate) fn barrier(inner: &Arc<Inner>) {
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
        done.wait();
        r.urgent.fetch_sub(1, Ordering::Relaxed);
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
            || self.gp_requested.load(Ordering::Relaxed)
            || self.stop.load(Ordering::Relaxed)
    }

    fn run(inner: Arc<Inner>) {
        #[cfg(not(loom))]
        RECLAIMER_OF.with(|c| c.set(inner.id));
        let r = &inner.reclaim;
        loop {
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
            let batch = r.head.swap(ptr::null_mut(), Ordering::Acquire);
            // A poll request made before this point is satisfied by the grace period below
            // (Acquire: that grace period's target is at least the requester's token).
            r.gp_requested.swap(false, Ordering::Acquire);
            // The deliberately broken variant (`--cfg rcu_broken_reclaim`, for showing that the
            // list and torture tests catch it) runs callbacks without a grace period.
            #[cfg(not(rcu_broken_reclaim))]
            inner.synchronize();
            if !batch.is_null() {
                Reclaimer::run_batch(&inner, batch);
            }
            r.progress.set();
            if r.stop.load(Ordering::Acquire) && r.head.load(Ordering::Acquire).is_null() {
                return;
            }
        }
    }

    fn run_batch(inner: &Inner, batch: *mut Head) {
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
        let mut run_all = || {
            let mut cur = list;
            list = ptr::null_mut();
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
        };
        match &inner.reclaim.lock {
            Some(lock) => lock.with_lock(&mut run_all),
            None => run_all(),
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
        inner
            .reclaim
            .pending
            .fetch_sub(n as usize, Ordering::Release);
        for done in inner.reclaim.barriers_done.lock().drain(..) {
            done.set();
        }
    }

    /// Drains the queue and stops the thread (the domain's last handle is being dropped).
    pub(crate) fn shutdown(inner: &Arc<Inner>) {
        let r = &inner.reclaim;
        r.stop.store(true, Ordering::Release);
        r.wake.set();
        let handle = r.thread.lock().take();
        if let Some(h) = handle {
            if on_reclaimer_thread(inner.id) {
                // Dropped from one of our own callbacks: the thread exits by itself after
                // draining; joining ourselves would deadlock.
                return;
            }
            let _ = h.join();
        }
    }
}

impl Drop for Reclaimer {
    fn drop(&mut self) {
        // Only reached when no thread was ever started but callbacks... cannot happen (the
        // first enqueue starts it); still, never leak: free any node left without running it
        // would be wrong (its memory may still be read), and with no readers left there are
        // none, so run them.
        let mut cur = self.head.swap(ptr::null_mut(), Ordering::Acquire);
        while !cur.is_null() {
            // SAFETY: the domain is gone, so no reader or producer remains; nodes are ours.
            let (next, call) = unsafe { ((*cur).next, (*cur).call) };
            // SAFETY: the node's own call function, called once.
            unsafe { call(cur) };
            cur = next;
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
    /// release builds too): each would wait forever.
    ///
    /// [`QsbrThread`]: crate::QsbrThread
    /// [`QsbrThread::rcu_barrier`]: crate::QsbrThread::rcu_barrier
    pub fn rcu_barrier(&self) {
        #[cfg(not(loom))]
        crate::local::assert_may_block(self, "rcu_barrier");
        Reclaimer::barrier(&self.handle.inner);
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
        crate::sync::fence(Ordering::SeqCst);
        GpToken(self.inner().gp.load(Ordering::Relaxed) + 2)
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
