//! The crate's one error type.

use std::io;
use std::os::fd::RawFd;

/// Everything that can fail in the main loop. Each message says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Creating the epoll instance or its waker failed.
    #[error(
        "cannot create the main loop's poll instance: {0}; the process is probably out of file \
         descriptors (raise `ulimit -n`) or of kernel memory"
    )]
    CreatePoll(#[source] io::Error),

    /// `epoll_ctl` refused an fd.
    #[error(
        "cannot {op} fd {fd} with the main loop: {source}; pass an open fd that supports poll \
         (pipes, sockets, eventfds, ttys; not regular files), and remove its handler before \
         closing it"
    )]
    Register {
        /// `register`, `reregister` or `deregister`.
        op: &'static str,
        /// The fd.
        fd: RawFd,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },

    /// A negative fd was passed.
    #[error("invalid fd {0}: pass the number of an open file descriptor (>= 0)")]
    BadFd(RawFd),

    /// More handlers than the loop's token space holds.
    #[error(
        "too many fd handlers registered at once (the limit is {max}); remove handlers you no \
         longer need"
    )]
    TooManyHandlers {
        /// The limit.
        max: usize,
    },

    /// `epoll_wait` failed (other than by a signal interrupting it).
    #[error("the main loop's poll failed: {0}; this is a bug or the process is out of memory")]
    Poll(#[source] io::Error),

    /// Setting up signal delivery through a signalfd failed.
    #[error(
        "cannot set up signal handling ({what}): {source}; check that the signal numbers are \
         valid and the process can open another fd"
    )]
    Signal {
        /// Which step failed.
        what: &'static str,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;
