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
//! Sigsets and the signal mask are vmm-sys-util's; the `signalfd(2)` call (which vmm-sys-util
//! does not wrap) is the crate's only `unsafe` FFI.

use crate::{Error, LoopHandle, Result};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::sync::Arc;
use vmm_sys_util::signal as sys;

/// The signals a VMM treats as "shut down cleanly".
pub const TERMINATION_SIGNALS: [libc::c_int; 2] = [libc::SIGINT, libc::SIGTERM];

/// The size of one `struct signalfd_siginfo` record (fixed by the kernel ABI).
const SIGINFO_LEN: usize = std::mem::size_of::<libc::signalfd_siginfo>();
// `read_signal` takes the signal number from a record's first four bytes.
const _: () = assert!(std::mem::offset_of!(libc::signalfd_siginfo, ssi_signo) == 0);

fn sigset(signals: &[libc::c_int]) -> Result<libc::sigset_t> {
    sys::create_sigset(signals).map_err(|e| Error::Signal {
        what: "sigaddset (invalid signal number?)",
        source: e.into(),
    })
}

/// Blocks `signals` in the calling thread (threads it spawns later inherit the mask).
/// Signals that are blocked already are fine.
pub fn block_signals(signals: &[libc::c_int]) -> Result<()> {
    for &s in signals {
        let (what, source) = match sys::block_signal(s) {
            Ok(()) | Err(sys::Error::SignalAlreadyBlocked(_)) => continue,
            Err(sys::Error::CreateSigset(e)) => ("sigaddset (invalid signal number?)", e.into()),
            Err(sys::Error::RetrieveSignalMask(rc)) => {
                ("pthread_sigmask", io::Error::from_raw_os_error(rc))
            }
            Err(e) => ("pthread_sigmask", io::Error::other(e.to_string())),
        };
        return Err(Error::Signal { what, source });
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
    fd: File,
}

impl SignalFd {
    /// A signalfd for `signals`, which are also blocked in the calling thread (see the module
    /// docs: they must be blocked in every thread).
    pub fn new(signals: &[libc::c_int]) -> Result<Self> {
        block_signals(signals)?;
        let set = sigset(signals)?;
        // vmm-sys-util has no signalfd wrapper: this call is the module's only FFI.
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
            fd: unsafe { File::from_raw_fd(fd) },
        })
    }

    /// The next pending signal number, or `None` when none is pending.
    pub fn read_signal(&self) -> Option<libc::c_int> {
        let mut rec = [0u8; SIGINFO_LEN];
        loop {
            match (&self.fd).read(&mut rec) {
                // A signalfd returns whole records; `ssi_signo` (u32) comes first.
                Ok(SIGINFO_LEN) => {
                    let signo = u32::from_ne_bytes([rec[0], rec[1], rec[2], rec[3]]);
                    return libc::c_int::try_from(signo).ok();
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                _ => return None,
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_signal_numbers_are_clear_errors() {
        for bad in [&[0][..], &[libc::SIGUSR2, 100_000], &[-1]] {
            match block_signals(bad) {
                Err(Error::Signal { what, .. }) => assert!(what.contains("sigaddset"), "{what}"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        match SignalFd::new(&[100_000]) {
            Err(e @ Error::Signal { .. }) => assert!(e.to_string().contains("signal number")),
            other => panic!("{other:?}"),
        }
    }
}
