//! The loop's waker: an eventfd that other threads write to wake `poll`, and whose descriptor
//! a seccomp filter can name ([`LoopHandle::waker_fd`](crate::LoopHandle::waker_fd)), so that
//! a thread may be allowed to wake the loop and write nothing else. (mio's `Waker` is an
//! eventfd too, but does not say which.)
//!
//! With `signals.rs`, the crate's only `unsafe` FFI; every block says why it is sound.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// A non-blocking, close-on-exec eventfd.
pub(crate) struct EventWaker {
    fd: OwnedFd,
}

impl EventWaker {
    pub(crate) fn new() -> std::io::Result<Self> {
        // SAFETY: eventfd takes no pointers; a negative result is an error, reported below.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(EventWaker {
            // SAFETY: `fd` was just created and nothing else owns it.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Makes the descriptor readable (one `write(2)` of 8 bytes). A full counter (EAGAIN)
    /// is readable already.
    pub(crate) fn wake(&self) -> std::io::Result<()> {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64, as eventfd requires.
        let n = unsafe { libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
        if n == 8 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        match e.kind() {
            std::io::ErrorKind::WouldBlock => Ok(()),
            _ => Err(e),
        }
    }

    /// Resets the counter (the loop, after a wake-up).
    pub(crate) fn reset(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64, as eventfd requires; EAGAIN (already
        // reset) is fine.
        let _ = unsafe { libc::read(self.fd.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
    }

    pub(crate) fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
