//! [`MainLoop`] and [`LoopHandle`]: the poll loop, dispatch, and shutdown.

use crate::bh::BhEntry;
use crate::bql::{thread_token, Bql};
use crate::handlers::{Callback, FdState, Handler, Registrar, SlotTable, SLOT_MASK};
use crate::timer::{TimerInner, TimerQueue};
use crate::wake::EventWaker;
use crate::{Error, Result};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use parking_lot::Mutex;
use rcu::{QsbrThread, Rcu, RcuList};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const WAKER: Token = Token(0);

/// How long [`MainLoop::run`] waits, after quit, for the handlers it removed to be freed.
pub const QUIT_BARRIER_BOUND: Duration = Duration::from_secs(2);

/// Counters kept by the loop and by registration (never on a hot path's shared line except
/// the loop's own).
#[derive(Default, Debug)]
pub(crate) struct Counters {
    pub(crate) rounds: AtomicU64,
    pub(crate) events: AtomicU64,
    pub(crate) handler_calls: AtomicU64,
    pub(crate) stale_events: AtomicU64,
    pub(crate) skipped_removed: AtomicU64,
    pub(crate) handler_panics: AtomicU64,
    pub(crate) bh_runs: AtomicU64,
    pub(crate) bh_panics: AtomicU64,
    pub(crate) timer_fires: AtomicU64,
    pub(crate) timer_panics: AtomicU64,
    pub(crate) handler_records: AtomicUsize,
}

/// Bumps a counter that only the loop thread writes: a load and a store, no locked
/// read-modify-write on the dispatch path (readers of `stats()` see a recent value).
#[inline]
pub(crate) fn bump(c: &AtomicU64, by: u64) {
    c.store(c.load(Ordering::Relaxed) + by, Ordering::Relaxed);
}

/// A snapshot of the loop's counters, from [`LoopHandle::stats`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoopStats {
    /// Dispatch rounds (poll returns).
    pub rounds: u64,
    /// fd events received (waker wake-ups excluded).
    pub events: u64,
    /// fd handler callbacks run.
    pub handler_calls: u64,
    /// Events whose token no longer named a live handler (removed or replaced since).
    pub stale_events: u64,
    /// Calls skipped because the handler was removed after its event was looked up.
    pub skipped_removed: u64,
    /// fd handler callbacks that panicked (each such handler was removed).
    pub handler_panics: u64,
    /// Bottom halves run (both kinds).
    pub bh_runs: u64,
    /// Bottom halves that panicked (each was disabled).
    pub bh_panics: u64,
    /// Timer callbacks run.
    pub timer_fires: u64,
    /// Timer callbacks that panicked (each timer was cancelled and disabled).
    pub timer_panics: u64,
    /// Handler records in memory: registered ones plus removed ones not yet freed by
    /// `call_rcu`. Back to 0 once every handler is removed and `rcu_barrier` has run (which
    /// `run()` does before it returns).
    pub handler_records: usize,
    /// Handlers registered now.
    pub handlers: usize,
    /// Times the loop handed the BQL to a waiting thread in the middle of a round.
    pub bql_handoffs: u64,
}

/// State shared by the loop, its handles, timers and bottom halves.
pub(crate) struct Shared {
    pub(crate) bql: Arc<Bql>,
    pub(crate) rcu: Rcu,
    registry: mio::Registry,
    waker: EventWaker,
    kick_pending: AtomicBool,
    quit: AtomicBool,
    /// `thread_token()` of the thread inside `run()`, 0 when none.
    pub(crate) loop_thread: AtomicU64,
    handlers: RcuList<Arc<Handler>>,
    slots: SlotTable,
    fds: Mutex<FdState>,
    pub(crate) bhs: Mutex<Vec<BhEntry>>,
    pub(crate) timers: Mutex<TimerQueue>,
    pub(crate) counters: Arc<Counters>,
}

impl Shared {
    /// Wakes the loop from poll (coalesced: one eventfd write per sleep).
    pub(crate) fn kick(&self) {
        if !self.kick_pending.swap(true, Ordering::SeqCst) {
            if let Err(e) = self.waker.wake() {
                log::error!("cannot wake the main loop: {e}");
            }
        }
    }

    pub(crate) fn request_quit(&self) {
        self.quit.store(true, Ordering::Release);
        self.kick();
    }

    fn on_loop_thread(&self) -> bool {
        self.loop_thread.load(Ordering::Relaxed) == thread_token()
    }

    fn registrar(&self) -> Registrar<'_> {
        Registrar {
            registry: &self.registry,
            list: &self.handlers,
            slots: &self.slots,
            counters: &self.counters,
        }
    }

    /// After a removal: wait for a call of the removed record still in flight, unless we are
    /// that call's own thread (see `gate`).
    fn wait_removed(&self, old: Option<Arc<Handler>>) {
        if let Some(old) = old {
            if !self.on_loop_thread() {
                old.gate.wait_idle();
            }
        }
    }

    /// Runs `f` on the writers' state.
    ///
    /// Inside a read-side section of the domain: retiring a record calls `call_rcu` (the index
    /// cell, the list node), and `call_rcu` may block a caller that is not a reader when the
    /// queue is above its high-water mark. Blocking there, while holding the writers' mutex or
    /// the list's writer lock, could deadlock with a loop callback that registers a handler
    /// (it would wait for the lock, online, and the reclamation thread would wait for it).
    /// Readers never block in `call_rcu`, and this section never waits for anything but those
    /// two short locks.
    fn with_writers<R>(&self, f: impl FnOnce(&Registrar<'_>, &mut FdState) -> R) -> R {
        let _reader = self.rcu.read_lock();
        let mut st = self.fds.lock();
        f(&self.registrar(), &mut st)
    }

    fn set_fd_handler(
        &self,
        fd: RawFd,
        read: Option<Callback>,
        write: Option<Callback>,
    ) -> Result<()> {
        let old = self.with_writers(|reg, st| reg.set(st, fd, read, write))?;
        // Outside the writers' mutex: the call we may wait for may itself (un)register.
        self.wait_removed(old);
        Ok(())
    }

    /// Removes the handler `token` of `fd` if it is still the registered one.
    fn remove_token(&self, fd: RawFd, token: u64) {
        let old = self.with_writers(|reg, st| {
            if st.by_fd.get(&fd).is_some_and(|e| e.handler.token == token) {
                reg.set(st, fd, None, None).ok().flatten()
            } else {
                None
            }
        });
        self.wait_removed(old);
    }

    /// Removes every handler, drops queued bottom halves and disarms every timer.
    fn clear_all(&self) {
        let olds: Vec<Arc<Handler>> = self.with_writers(|reg, st| {
            let fds: Vec<RawFd> = st.by_fd.keys().copied().collect();
            fds.into_iter()
                .filter_map(|fd| reg.set(st, fd, None, None).ok().flatten())
                .collect()
        });
        for old in olds {
            self.wait_removed(Some(old));
        }
        let bhs = std::mem::take(&mut *self.bhs.lock());
        drop(bhs);
        self.timers.lock().clear();
    }

    /// Loop side, online, under the BQL: one epoll event.
    #[inline]
    fn dispatch(&self, ev: &mio::event::Event, me: &QsbrThread) {
        let token = ev.token().0 as u64;
        let Some(h) = self.slots.get((token & SLOT_MASK) as usize, me) else {
            bump(&self.counters.stale_events, 1);
            return;
        };
        if h.token != token {
            bump(&self.counters.stale_events, 1);
            return;
        }
        let readable = ev.is_readable() || ev.is_read_closed() || ev.is_error();
        let writable = ev.is_writable() || ev.is_write_closed() || ev.is_error();
        if readable {
            if let Some(cb) = &h.read {
                self.call(h, cb, "read");
            }
        }
        if writable {
            if let Some(cb) = &h.write {
                self.call(h, cb, "write");
            }
        }
    }

    #[inline]
    fn call(&self, h: &Handler, cb: &Mutex<Callback>, which: &str) {
        // The gate: a handler removed before this point (by any thread) is not called; a
        // remover racing with this call waits until it returns. See `gate`.
        if !h.gate.enter(0) {
            bump(&self.counters.skipped_removed, 1);
            return;
        }
        let res = match cb.try_lock() {
            Some(mut f) => std::panic::catch_unwind(std::panic::AssertUnwindSafe(&mut **f)),
            None => Ok(()), // unreachable: only this thread calls handlers, never re-entrantly
        };
        h.gate.exit();
        bump(&self.counters.handler_calls, 1);
        if let Err(p) = res {
            log::error!(
                "the {which} handler of fd {} panicked ({}); the handler was removed (the fd \
                 stays open and is the owner's to close), the loop goes on",
                h.fd,
                crate::panic_message(&*p)
            );
            self.remove_token(h.fd, h.token);
            bump(&self.counters.handler_panics, 1);
        }
    }

    /// How long the next poll may sleep.
    fn timeout(&self) -> Option<Duration> {
        if !self.bhs.lock().is_empty() || self.quit.load(Ordering::Relaxed) {
            return Some(Duration::ZERO);
        }
        self.timers
            .lock()
            .next_deadline()
            .map(|d| d.saturating_duration_since(Instant::now()))
    }
}

/// A cheap, cloneable, `Send + Sync` handle to a [`MainLoop`]: register handlers, schedule
/// bottom halves, arm timers and quit, from any thread.
#[derive(Clone)]
pub struct LoopHandle {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for LoopHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoopHandle")
            .field("handlers", &self.shared.handlers.len())
            .finish()
    }
}

impl LoopHandle {
    /// `qemu_set_fd_handler`: installs `read` and/or `write` callbacks for `fd`, replacing
    /// any handler it had; with neither, removes the handler (a no-op if there is none).
    ///
    /// Callable from any thread, holding the BQL or not, including from inside any loop
    /// callback. When it returns, the replaced or removed callbacks are not running (unless
    /// called from one of them) and will never be called again; they are dropped after a
    /// grace period, on the `call_rcu` thread, under the BQL.
    ///
    /// Readiness is **edge-triggered** (mio): a read callback must read until the fd would
    /// block (`EAGAIN`), or it is not called again until new data arrives. Error and hang-up
    /// conditions call the read callback (and the write callback) so it sees EOF or the error.
    ///
    /// The caller keeps owning `fd`: remove the handler before closing it. Do not remove a
    /// handler while holding a lock its callback takes (the removal waits for a running call).
    pub fn set_fd_handler(
        &self,
        fd: RawFd,
        read: Option<Callback>,
        write: Option<Callback>,
    ) -> Result<()> {
        self.shared.set_fd_handler(fd, read, write)
    }

    /// Installs a read callback for `fd` (replacing any handler it had).
    pub fn set_read_handler(&self, fd: RawFd, read: impl FnMut() + Send + 'static) -> Result<()> {
        self.set_fd_handler(fd, Some(Box::new(read)), None)
    }

    /// Removes the handler of `fd` (same guarantees as [`set_fd_handler`](Self::set_fd_handler)
    /// with no callbacks). Returns whether there was one.
    pub fn remove_fd_handler(&self, fd: RawFd) -> bool {
        let old = self
            .shared
            .with_writers(|reg, st| reg.set(st, fd, None, None).ok().flatten());
        let had = old.is_some();
        self.shared.wait_removed(old);
        had
    }

    /// How many fd handlers are registered.
    pub fn handler_count(&self) -> usize {
        self.shared.handlers.len()
    }

    /// The fds that have handlers, read by walking the RCU list with no lock (any thread that
    /// is not an online QSBR reader of the loop's domain; it takes a read-side guard).
    pub fn handler_fds(&self) -> Vec<RawFd> {
        let guard = self.shared.rcu.read_lock();
        self.shared.handlers.iter(&guard).map(|h| h.fd).collect()
    }

    /// Makes `run()` return: it finishes the current round, removes every handler, drops
    /// queued bottom halves, disarms timers, waits for pending `call_rcu` callbacks, and
    /// returns. Callable from any thread, including loop callbacks; if the loop is not
    /// running, the next `run()` returns at once.
    pub fn quit(&self) {
        self.shared.request_quit();
    }

    /// The big global lock.
    pub fn bql(&self) -> &Arc<Bql> {
        &self.shared.bql
    }

    /// The RCU domain that protects the handler list (and whose `call_rcu` callbacks run
    /// under the BQL).
    pub fn rcu(&self) -> &Rcu {
        &self.shared.rcu
    }

    /// Whether the calling thread is the one running the loop.
    pub fn is_loop_thread(&self) -> bool {
        self.shared.on_loop_thread()
    }

    /// Wakes the loop from poll (e.g. after changing state its callbacks read).
    pub fn kick(&self) {
        self.shared.kick();
    }

    /// The eventfd that wakes the loop: [`kick`](Self::kick), [`quit`](Self::quit),
    /// [`call_soon`](Self::call_soon) and arming a timer from another thread `write(2)` to it
    /// and to nothing else, so a seccomp filter can allow exactly that write.
    pub fn waker_fd(&self) -> RawFd {
        self.shared.waker.fd()
    }

    /// A snapshot of the loop's counters.
    pub fn stats(&self) -> LoopStats {
        let c = &self.shared.counters;
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        LoopStats {
            rounds: r(&c.rounds),
            events: r(&c.events),
            handler_calls: r(&c.handler_calls),
            stale_events: r(&c.stale_events),
            skipped_removed: r(&c.skipped_removed),
            handler_panics: r(&c.handler_panics),
            bh_runs: r(&c.bh_runs),
            bh_panics: r(&c.bh_panics),
            timer_fires: r(&c.timer_fires),
            timer_panics: r(&c.timer_panics),
            handler_records: c.handler_records.load(Ordering::Relaxed),
            handlers: self.shared.handlers.len(),
            bql_handoffs: self.shared.bql.handoffs(),
        }
    }
}

/// The main loop. Owns the poll instance; everything else goes through [`LoopHandle`], which
/// `MainLoop` dereferences to.
pub struct MainLoop {
    poll: Poll,
    events: Events,
    handle: LoopHandle,
}

impl std::fmt::Debug for MainLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MainLoop")
            .field("handle", &self.handle)
            .finish()
    }
}

impl std::ops::Deref for MainLoop {
    type Target = LoopHandle;
    fn deref(&self) -> &LoopHandle {
        &self.handle
    }
}

impl MainLoop {
    /// A loop with its own BQL and its own RCU domain (whose `call_rcu` callbacks run under
    /// that BQL).
    pub fn new() -> Result<Self> {
        let bql = Bql::new();
        let rcu = crate::rcu_domain(&bql);
        Self::with_domain(bql, rcu)
    }

    /// A loop that uses the VMM's BQL and RCU domain. `rcu` should be built with
    /// [`rcu_domain`](crate::rcu_domain)`(&bql)`, so that handler records (and their
    /// closures) are dropped under the BQL.
    pub fn with_domain(bql: Arc<Bql>, rcu: Rcu) -> Result<Self> {
        let poll = Poll::new().map_err(Error::CreatePoll)?;
        let registry = poll.registry().try_clone().map_err(Error::CreatePoll)?;
        let waker = EventWaker::new().map_err(Error::CreatePoll)?;
        poll.registry()
            .register(&mut SourceFd(&waker.fd()), WAKER, Interest::READABLE)
            .map_err(Error::CreatePoll)?;
        let shared = Arc::new(Shared {
            bql,
            registry,
            waker,
            kick_pending: AtomicBool::new(false),
            quit: AtomicBool::new(false),
            loop_thread: AtomicU64::new(0),
            handlers: RcuList::new_in(&rcu),
            slots: SlotTable::new(&rcu),
            fds: Mutex::new(FdState::default()),
            bhs: Mutex::new(Vec::new()),
            timers: Mutex::new(TimerQueue::default()),
            counters: Arc::new(Counters::default()),
            rcu,
        });
        Ok(MainLoop {
            poll,
            events: Events::with_capacity(1024),
            handle: LoopHandle { shared },
        })
    }

    /// A handle for other threads and for callbacks.
    pub fn handle(&self) -> LoopHandle {
        self.handle.clone()
    }

    /// Runs the loop on the calling thread until [`quit`](LoopHandle::quit).
    ///
    /// The thread registers as a QSBR reader of the loop's domain for the duration. Each round:
    /// go offline, release the BQL, block in poll (until an fd is ready, the next timer is due,
    /// or a kick); take the BQL back while still offline; come online; dispatch the fd events,
    /// then the due timers, then the queued bottom halves, handing the BQL to a waiting thread
    /// between callbacks; report a quiescent state.
    ///
    /// On quit, under the BQL, it removes every handler, drops queued bottom halves and
    /// disarms timers; then it releases the BQL, unregisters from RCU and runs `rcu_barrier`,
    /// so every removed handler has been dropped when it returns, unless a reader of the
    /// domain holds the grace period for longer than [`QUIT_BARRIER_BOUND`]: then it logs
    /// that and returns anyway (the handlers are dropped once the reader reports).
    ///
    /// Call it on a thread that is not otherwise an RCU reader of this domain (no online
    /// `QsbrThread`, no read guard) and does not hold the BQL: the final barrier would wait for
    /// itself.
    pub fn run(&mut self) -> Result<()> {
        let sh = self.handle.shared.clone();
        sh.loop_thread.store(thread_token(), Ordering::Relaxed);
        let result = {
            let mut me = sh.rcu.register_qsbr();
            // Take the BQL offline: a BQL holder may be waiting for a grace period.
            me.offline();
            let mut bql = sh.bql.lock();
            me.online();
            let result = self.rounds(&sh, &mut me, &mut bql);
            sh.clear_all();
            drop(bql);
            result
            // `me` drops here: offline and unregistered.
        };
        // Not under the BQL (callbacks need it) and not as a reader: drain call_rcu, which
        // frees every handler removed above or earlier. Bounded: a reader that never reports
        // (a stuck vCPU thread) must not keep the process from ending.
        if !sh.rcu.rcu_barrier_timeout(QUIT_BARRIER_BOUND) {
            log::error!(
                "the main loop quit, but its removed handlers are still waiting for a grace \
                 period after {QUIT_BARRIER_BOUND:?} (an RCU reader of the loop's domain is \
                 stuck); returning without them"
            );
        }
        sh.loop_thread.store(0, Ordering::Relaxed);
        sh.quit.store(false, Ordering::Relaxed);
        result
    }

    fn rounds(
        &mut self,
        sh: &Shared,
        me: &mut QsbrThread,
        bql: &mut crate::BqlGuard<'_>,
    ) -> Result<()> {
        let mut timer_scratch: Vec<(Arc<TimerInner>, u64)> = Vec::new();
        let mut bh_scratch: Vec<BhEntry> = Vec::new();
        loop {
            if sh.quit.load(Ordering::Acquire) {
                return Ok(());
            }
            let timeout = sh.timeout();
            me.quiescent_state();
            let poll = &mut self.poll;
            let events = &mut self.events;
            let polled = me.offline_while(|| bql.unlocked(|| poll.poll(events, timeout)));
            if let Err(e) = polled {
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(Error::Poll(e));
                }
            }
            // Kicks from here on wake the next poll.
            sh.kick_pending.swap(false, Ordering::SeqCst);
            bump(&sh.counters.rounds, 1);
            let mut n = 0;
            for ev in self.events.iter() {
                if ev.token() == WAKER {
                    // Not read: see `EventWaker::wake`.
                    continue;
                }
                n += 1;
                sh.dispatch(ev, me);
                bql.yield_to_waiters(|relock| me.offline_while(relock));
            }
            bump(&sh.counters.events, n);
            sh.run_timers(&mut timer_scratch, || {
                bql.yield_to_waiters(|relock| me.offline_while(relock));
            });
            sh.run_bhs(&mut bh_scratch, || {
                bql.yield_to_waiters(|relock| me.offline_while(relock));
            });
        }
    }
}

impl Drop for MainLoop {
    fn drop(&mut self) {
        // Break reference cycles through closures that captured a LoopHandle: removed
        // handlers are freed by call_rcu, pending bottom halves dropped here.
        let sh = &self.handle.shared;
        let _bql = sh.bql.lock_unless_held();
        sh.clear_all();
    }
}
