//! SIGINT / SIGTERM as an fd handler, through `signalfd(2)`.
//!
//! A signalfd turns signals into readable records, so the VMM shuts down from an ordinary
//! main-loop callback (under the BQL, with nothing async-signal-unsafe to worry about) instead
//! of from a signal handler. The signals must be **blocked in every thread** (otherwise the
//! kernel delivers them the default way, which kills the process): call
//! [`block_termination_signals`] at the very start of `main`, before any thread is spawned, so
//! every thread inherits the mask (vCPU threads then are not interrupted by them either).
//! [`SignalFd::new`] blocks them in the calling thread as well.
//!
//! With `wake.rs`, the crate's only `unsafe` FFI; every block says why it is sound.

use crate::{Error, LoopHandle, Result};
use std::io;
use std::mem::{size_of, MaybeUninit};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;

/// The signals a VMM treats as "shut down cleanly".
pub const TERMINATION_SIGNALS: [libc::c_int; 2] = [libc::SIGINT, libc::SIGTERM];

fn sigset(signals: &[libc::c_int]) -> Result<libc::sigset_t> {
    let mut set = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initializes the set it is given; `set` is valid for writes.
    if unsafe { libc::sigemptyset(set.as_mut_ptr()) } != 0 {
        return Err(Error::Signal {
            what: "sigemptyset",
            source: io::Error::last_os_error(),
        });
    }
    for &s in signals {
        // SAFETY: `set` was initialized by sigemptyset above.
        if unsafe { libc::sigaddset(set.as_mut_ptr(), s) } != 0 {
            return Err(Error::Signal {
                what: "sigaddset (invalid signal number?)",
                source: io::Error::last_os_error(),
            });
        }
    }
    // SAFETY: initialized above.
    Ok(unsafe { set.assume_init() })
}

/// Blocks `signals` in the calling thread (threads it spawns later inherit the mask).
pub fn block_signals(signals: &[libc::c_int]) -> Result<()> {
    let set = sigset(signals)?;
    // SAFETY: `set` is a valid, initialized sigset; a null old-set pointer is allowed.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(Error::Signal {
            what: "pthread_sigmask",
            source: io::Error::from_raw_os_error(rc),
        });
    }
    Ok(())
}

/// Blocks SIGINT and SIGTERM in the calling thread. Call it first thing in `main`.
pub fn block_termination_signals() -> Result<()> {
    block_signals(&TERMINATION_SIGNALS)
}

/// A non-blocking, close-on-exec signalfd.
#[derive(Debug)]
pub struct SignalFd {
    fd: OwnedFd,
}

impl SignalFd {
    /// A signalfd for `signals`, which are also blocked in the calling thread (see the module
    /// docs: they must be blocked in every thread).
    pub fn new(signals: &[libc::c_int]) -> Result<Self> {
        block_signals(signals)?;
        let set = sigset(signals)?;
        // SAFETY: -1 asks for a new fd; `set` is a valid sigset; the flags are valid.
        let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) };
        if fd < 0 {
            return Err(Error::Signal {
                what: "signalfd",
                source: io::Error::last_os_error(),
            });
        }
        Ok(SignalFd {
            // SAFETY: `fd` is a new descriptor that nothing else owns.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// The next pending signal number, or `None` when none is pending.
    pub fn read_signal(&self) -> Option<libc::c_int> {
        let mut info = MaybeUninit::<libc::signalfd_siginfo>::uninit();
        let len = size_of::<libc::signalfd_siginfo>();
        loop {
            // SAFETY: the buffer is valid for `len` bytes of writes; the fd is ours and open.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), info.as_mut_ptr().cast(), len) };
            if n == len as isize {
                // SAFETY: the kernel wrote a whole record.
                return Some(unsafe { info.assume_init() }.ssi_signo as libc::c_int);
            }
            if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return None;
        }
    }
}

impl AsRawFd for SignalFd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl LoopHandle {
    /// Delivers `signals` to `cb` (signal number) on the loop thread, under the BQL, through a
    /// signalfd registered as an fd handler. Blocks them in the calling thread; see the module
    /// docs for the other threads. Returns the signalfd's number (remove it with
    /// [`remove_fd_handler`](Self::remove_fd_handler)).
    pub fn on_signals(
        &self,
        signals: &[libc::c_int],
        mut cb: impl FnMut(libc::c_int) + Send + 'static,
    ) -> Result<RawFd> {
        let sfd = SignalFd::new(signals)?;
        let fd = sfd.as_raw_fd();
        // The closure owns the signalfd: it is closed when the handler is freed, after it was
        // deregistered and a grace period has passed.
        self.set_fd_handler(
            fd,
            Some(Box::new(move || {
                while let Some(sig) = sfd.read_signal() {
                    cb(sig);
                }
            })),
            None,
        )?;
        Ok(fd)
    }

    /// SIGINT and SIGTERM make the loop quit (logged at info level): `run()` then drops the
    /// handlers, drains `call_rcu` and returns, so the VMM shuts down cleanly.
    pub fn quit_on_termination_signals(&self) -> Result<RawFd> {
        // A weak reference: the handler lives in the loop it would otherwise keep alive.
        let weak = Arc::downgrade(&self.shared);
        self.on_signals(&TERMINATION_SIGNALS, move |sig| {
            log::info!("received signal {sig}; quitting the main loop");
            if let Some(shared) = weak.upgrade() {
                shared.request_quit();
            }
        })
    }
}
