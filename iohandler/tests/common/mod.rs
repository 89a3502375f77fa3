//! Test helpers: non-blocking pipes through libc, and the open-file limit.
#![allow(dead_code)]

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// A non-blocking, close-on-exec pipe.
pub struct Pipe {
    pub r: OwnedFd,
    pub w: OwnedFd,
}

impl Pipe {
    pub fn new() -> Pipe {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes.
        let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
        assert_eq!(rc, 0, "pipe2: {}", std::io::Error::last_os_error());
        // SAFETY: both descriptors are new and owned by nobody else.
        unsafe {
            Pipe {
                r: OwnedFd::from_raw_fd(fds[0]),
                w: OwnedFd::from_raw_fd(fds[1]),
            }
        }
    }

    pub fn rfd(&self) -> RawFd {
        self.r.as_raw_fd()
    }

    pub fn wfd(&self) -> RawFd {
        self.w.as_raw_fd()
    }

    /// Writes `n` bytes; returns how many the pipe took.
    pub fn write(&self, n: usize) -> usize {
        write_fd(self.wfd(), n)
    }
}

/// Writes up to `n` bytes to `fd` (non-blocking); returns how many were written.
pub fn write_fd(fd: RawFd, n: usize) -> usize {
    let buf = [0x5au8; 256];
    let n = n.min(buf.len());
    // SAFETY: `buf` is valid for `n` bytes of reads.
    let rc = unsafe { libc::write(fd, buf.as_ptr().cast(), n) };
    if rc < 0 {
        0
    } else {
        rc as usize
    }
}

/// Reads everything available from `fd` (non-blocking); returns the byte count.
pub fn drain(fd: RawFd) -> usize {
    let mut buf = [0u8; 4096];
    let mut total = 0;
    loop {
        // SAFETY: `buf` is valid for `buf.len()` bytes of writes.
        let rc = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if rc <= 0 {
            return total;
        }
        total += rc as usize;
    }
}

/// Raises the soft RLIMIT_NOFILE to at least `want` (up to the hard limit); returns the new
/// soft limit.
pub fn raise_nofile(want: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid rlimit to fill.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    if lim.rlim_cur >= want {
        return lim.rlim_cur;
    }
    let mut new = lim;
    new.rlim_cur = want.min(lim.rlim_max);
    if lim.rlim_max < want {
        // root may raise the hard limit too.
        new.rlim_max = want;
        new.rlim_cur = want;
    }
    // SAFETY: `new` is a valid rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &new) } != 0 {
        new.rlim_cur = lim.rlim_max;
        new.rlim_max = lim.rlim_max;
        // SAFETY: as above.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &new) };
    }
    // SAFETY: as above.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    lim.rlim_cur
}

/// Waits (polling) until `cond` holds; panics with `what` after `limit`.
pub fn wait_until(what: &str, limit: std::time::Duration, mut cond: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !cond() {
        if start.elapsed() > limit {
            panic!("timed out waiting for {what}");
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Runs a loop on its own thread; returns its handle and the thread.
pub fn spawn_loop(
    mut ml: iohandler::MainLoop,
) -> (
    iohandler::LoopHandle,
    std::thread::JoinHandle<iohandler::Result<()>>,
) {
    let h = ml.handle();
    let t = std::thread::Builder::new()
        .name("main-loop".into())
        .spawn(move || ml.run())
        .unwrap();
    (h, t)
}
