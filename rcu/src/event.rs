//! [`Event`]: a one-bit, level-triggered wake-up (QEMU's `QemuEvent`).
//!
//! An event is *set* or *reset*. [`Event::wait`] returns at once while the event is set and
//! otherwise sleeps until some thread calls [`Event::set`]. The grace-period code uses one per
//! domain: the writer resets it, announces that it is about to sleep, re-checks the readers and
//! waits; a reader that sees the announcement sets it.
//!
//! # The three states
//!
//! The state is one `i32` with three values, so that the common paths make no system call:
//!
//! | value | meaning |
//! |---|---|
//! | `SET` (0) | set; `wait` returns immediately |
//! | `FREE` (1) | reset, and nobody is asleep: `set` is a single atomic swap |
//! | `BUSY` (-1) | reset, and at least one thread may be asleep: `set` must wake them |
//!
//! `reset` turns `SET` into `FREE` with an atomic OR (0|1 = 1) and leaves `BUSY` alone
//! (-1|1 = -1). A waiter moves `FREE` to `BUSY` with a compare-and-swap before sleeping, and
//! sleeps only while the value is still `BUSY`. `set` swaps in `SET` and calls the wake-up
//! primitive only when the old value was `BUSY`.
//!
//! # Backends
//!
//! The sleeping primitive has futex semantics: `futex_wait(addr, expected)` sleeps only if
//! `*addr == expected` *atomically with respect to* `futex_wake(addr)`. On Linux that is the
//! `futex(2)` system call. Elsewhere (and on Linux with the `parking-lot-event` feature, so the
//! fallback is built and tested there too) it is a parking_lot mutex and condition variable:
//! the waiter re-checks the value under the mutex and the waker takes the mutex before
//! notifying, which gives the same atomicity. Under loom the fallback runs on loom's models.

use crate::sync::{fence, AtomicI32, Ordering};
use std::time::{Duration, Instant};

const SET: i32 = 0;
const FREE: i32 = 1;
const BUSY: i32 = -1;

/// A futex-backed, level-triggered event: `set`, `reset`, `wait`, `wait_timeout`.
///
/// Cheap when nobody sleeps: `set` on an event with no sleeper is one atomic swap and makes no
/// system call; `wait` on a set event is one load.
pub struct Event {
    value: AtomicI32,
    backend: backend::Futex,
}

impl std::fmt::Debug for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Event")
            .field("set", &self.is_set())
            .finish()
    }
}

impl Default for Event {
    fn default() -> Self {
        Self::new(false)
    }
}

impl Event {
    /// Creates an event, initially set if `set` is true.
    pub fn new(set: bool) -> Self {
        Event {
            value: AtomicI32::new(if set { SET } else { FREE }),
            backend: backend::Futex::new(),
        }
    }

    /// Whether the event is currently set.
    pub fn is_set(&self) -> bool {
        self.value.load(Ordering::Acquire) == SET
    }

    /// Sets the event, waking every thread asleep in [`wait`](Self::wait).
    ///
    /// Everything the caller wrote before `set` is visible to a waiter after its `wait` returns.
    /// Makes a system call only when a thread is (or may be) asleep.
    pub fn set(&self) {
        // Order the caller's earlier stores before the state change a waiter will observe.
        fence(Ordering::SeqCst);
        if self.value.load(Ordering::Relaxed) != SET
            && self.value.swap(SET, Ordering::AcqRel) == BUSY
        {
            self.backend.wake_all(&self.value);
        }
    }

    /// Resets the event. A later `wait` sleeps until the next `set`.
    ///
    /// Anything the caller writes after `reset` is ordered after it, so a thread that sees such
    /// a write and then calls `set` is guaranteed to wake the caller's next `wait`.
    pub fn reset(&self) {
        if self.value.load(Ordering::Relaxed) == SET {
            // SET -> FREE; FREE and BUSY stay as they are.
            self.value.fetch_or(FREE, Ordering::AcqRel);
        }
        fence(Ordering::SeqCst);
    }

    /// Sleeps until the event is set. Returns at once if it already is.
    pub fn wait(&self) {
        self.wait_until(None);
    }

    /// Sleeps until the event is set or `timeout` passes; returns whether it was set.
    ///
    /// Under loom there is no time: this behaves as [`wait`](Self::wait) and returns true.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        // Under loom, reading the clock would make a model's path depend on how fast the
        // machine runs it (loom then aborts: "is the model fully deterministic?").
        #[cfg(loom)]
        {
            let _ = timeout;
            self.wait_until(None)
        }
        #[cfg(not(loom))]
        self.wait_until(Some(Instant::now() + timeout))
    }

    fn wait_until(&self, deadline: Option<Instant>) -> bool {
        loop {
            let value = self.value.load(Ordering::Acquire);
            if value == SET {
                return true;
            }
            if value == FREE {
                // Announce a sleeper so that `set` knows to wake us.
                if let Err(actual) =
                    self.value
                        .compare_exchange(FREE, BUSY, Ordering::AcqRel, Ordering::Acquire)
                {
                    if actual == SET {
                        return true;
                    }
                }
            }
            let timeout = match deadline {
                None => None,
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return self.is_set();
                    }
                    Some(d - now)
                }
            };
            self.backend.wait(&self.value, BUSY, timeout);
        }
    }
}

#[cfg(all(target_os = "linux", not(feature = "parking-lot-event"), not(loom)))]
mod backend {
    //! futex(2): the only `unsafe` in this module is the system call itself.
    use super::AtomicI32;
    use std::time::Duration;

    pub(super) struct Futex;

    impl Futex {
        pub(super) fn new() -> Self {
            Futex
        }

        /// Sleeps while `*value == expected`, for at most `timeout`. May return spuriously.
        pub(super) fn wait(&self, value: &AtomicI32, expected: i32, timeout: Option<Duration>) {
            let ts = timeout.map(|t| libc::timespec {
                tv_sec: t.as_secs().min(i64::MAX as u64) as libc::time_t,
                tv_nsec: t.subsec_nanos() as libc::c_long,
            });
            let ts_ptr = ts
                .as_ref()
                .map_or(std::ptr::null(), |t| t as *const libc::timespec);
            // SAFETY: `value` is a live, aligned i32 for the duration of the call; FUTEX_WAIT
            // only reads it, and `ts_ptr` is null or points at a timespec on this stack frame.
            // Errors (EAGAIN: the value changed, EINTR, ETIMEDOUT) all mean "re-check", which
            // every caller does.
            unsafe {
                libc::syscall(
                    libc::SYS_futex,
                    value.as_ptr(),
                    libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
                    expected,
                    ts_ptr,
                );
            }
        }

        /// Wakes every thread asleep on `value`.
        pub(super) fn wake_all(&self, value: &AtomicI32) {
            // SAFETY: `value` is a live, aligned i32; FUTEX_WAKE does not access memory.
            unsafe {
                libc::syscall(
                    libc::SYS_futex,
                    value.as_ptr(),
                    libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
                    i32::MAX,
                );
            }
        }
    }
}

#[cfg(not(all(target_os = "linux", not(feature = "parking-lot-event"), not(loom))))]
mod backend {
    //! The portable fallback: a mutex and a condition variable with futex semantics.
    use crate::sync::{AtomicI32, Condvar, Mutex, Ordering};
    use std::time::Duration;

    pub(super) struct Futex {
        lock: Mutex<()>,
        cond: Condvar,
    }

    impl Futex {
        pub(super) fn new() -> Self {
            Futex {
                lock: Mutex::new(()),
                cond: Condvar::new(),
            }
        }

        pub(super) fn wait(&self, value: &AtomicI32, expected: i32, timeout: Option<Duration>) {
            let guard = self.lock.lock();
            // Checked under the mutex: a waker changes the value before taking the mutex, so
            // either we see its change here or its notification finds us waiting.
            if value.load(Ordering::Acquire) != expected {
                return;
            }
            let _guard = match timeout {
                None => self.cond.wait(guard),
                Some(t) => self.cond.wait_timeout(guard, t),
            };
        }

        pub(super) fn wake_all(&self, _value: &AtomicI32) {
            let _guard = self.lock.lock();
            self.cond.notify_all();
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn set_then_wait_returns() {
        let e = Event::new(false);
        assert!(!e.is_set());
        e.set();
        assert!(e.is_set());
        e.wait();
        assert!(e.wait_timeout(Duration::from_millis(1)));
    }

    #[test]
    fn reset_then_wait_times_out() {
        let e = Event::new(true);
        e.reset();
        assert!(!e.is_set());
        let t = Instant::now();
        assert!(!e.wait_timeout(Duration::from_millis(20)));
        assert!(t.elapsed() >= Duration::from_millis(20));
    }

    #[test]
    fn set_wakes_a_sleeper() {
        let e = Arc::new(Event::new(false));
        let e2 = e.clone();
        let t = std::thread::spawn(move || {
            e2.wait();
        });
        std::thread::sleep(Duration::from_millis(20));
        e.set();
        t.join().unwrap();
    }

    #[test]
    fn ping_pong_many_rounds() {
        // Two events, two threads, many rounds: a lost wake-up would hang (the timeout turns
        // that into a failure).
        let a = Arc::new(Event::new(false));
        let b = Arc::new(Event::new(false));
        let (a2, b2) = (a.clone(), b.clone());
        let t = std::thread::spawn(move || {
            for _ in 0..20_000 {
                assert!(a2.wait_timeout(Duration::from_secs(10)), "lost wake-up");
                a2.reset();
                b2.set();
            }
        });
        for _ in 0..20_000 {
            a.set();
            assert!(b.wait_timeout(Duration::from_secs(10)), "lost wake-up");
            b.reset();
        }
        t.join().unwrap();
    }
}
