//! The loop's waker: an eventfd that other threads write to wake `poll`, and whose descriptor
//! a seccomp filter can name ([`LoopHandle::waker_fd`](crate::LoopHandle::waker_fd)), so that
//! a thread may be allowed to wake the loop and write nothing else. (mio's `Waker` is an
//! eventfd too, but does not say which.) The eventfd is vmm-sys-util's.

use std::os::fd::{AsRawFd, RawFd};
use vmm_sys_util::eventfd::EventFd;

/// A non-blocking, close-on-exec eventfd.
pub(crate) struct EventWaker {
    fd: EventFd,
}

impl EventWaker {
    pub(crate) fn new() -> std::io::Result<Self> {
        Ok(EventWaker {
            fd: EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)?,
        })
    }

    /// Makes the descriptor readable (one `write(2)` of 8 bytes). A full counter (EAGAIN)
    /// is readable already.
    pub(crate) fn wake(&self) -> std::io::Result<()> {
        match self.fd.write(1) {
            Err(e) if e.kind() != std::io::ErrorKind::WouldBlock => Err(e),
            _ => Ok(()),
        }
    }

    /// Resets the counter (the loop, after a wake-up).
    pub(crate) fn reset(&self) {
        // EAGAIN (already reset) is fine.
        let _ = self.fd.read();
    }

    pub(crate) fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
