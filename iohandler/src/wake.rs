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

    /// Makes the descriptor readable (one `write(2)` of 8 bytes), which wakes the loop's
    /// edge-triggered poll once per write.
    ///
    /// The loop never reads the counter on a wake-up: a read that comes after a later
    /// kick's write would consume that write, and the kick (coalesced by the loop's
    /// `kick_pending` flag, which then stays set) would be lost with every kick after it, so
    /// the loop would sleep through `quit`, timers and bottom halves. The counter is only
    /// reset here, when it is full (after 2^64 - 2 kicks: never in practice).
    pub(crate) fn wake(&self) -> std::io::Result<()> {
        match self.fd.write(1) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let _ = self.fd.read();
                self.fd.write(1)
            }
            r => r,
        }
    }

    pub(crate) fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
