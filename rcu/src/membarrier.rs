//! `membarrier(2)`: lets read-lock readers replace their full fence with a compiler barrier.
//!
//! With `MEMBARRIER_CMD_PRIVATE_EXPEDITED` a writer forces a full memory barrier on every
//! running thread of the process; a reader's program order plus that barrier then gives the
//! same store-buffering guarantee as a fence on both sides. The process must register its
//! intent once (`MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED`) before the first expedited call.

#[cfg(all(target_os = "linux", not(loom)))]
mod imp {
    use std::sync::OnceLock;

    // From <linux/membarrier.h>; libc does not export these for every target.
    const MEMBARRIER_CMD_QUERY: libc::c_int = 0;
    const MEMBARRIER_CMD_PRIVATE_EXPEDITED: libc::c_int = 1 << 3;
    const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_int = 1 << 4;

    fn membarrier(cmd: libc::c_int) -> libc::c_long {
        // SAFETY: membarrier takes two integer arguments and touches no memory of ours.
        unsafe { libc::syscall(libc::SYS_membarrier, cmd, 0 as libc::c_uint) }
    }

    /// Registers the process for private expedited membarrier once; returns whether it works.
    pub(crate) fn available() -> bool {
        static AVAILABLE: OnceLock<bool> = OnceLock::new();
        *AVAILABLE.get_or_init(|| {
            if std::env::var_os("RCU_NO_MEMBARRIER").is_some() {
                return false;
            }
            let supported = membarrier(MEMBARRIER_CMD_QUERY);
            if supported < 0 || supported & MEMBARRIER_CMD_PRIVATE_EXPEDITED as libc::c_long == 0 {
                return false;
            }
            membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) == 0
        })
    }

    /// A full memory barrier on every running thread of this process (and on this one).
    pub(crate) fn barrier_all_threads() {
        let ret = membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED);
        if ret != 0 {
            // Registration succeeded, so this cannot fail; if it somehow does, readers that
            // rely on it would be unsafe. Stop rather than continue unsynchronized.
            panic!(
                "membarrier(PRIVATE_EXPEDITED) failed: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

/// Under loom, membarrier is emulated (see `domain::LoomMembarrier`), so it is always there.
#[cfg(loom)]
mod imp {
    pub(crate) fn available() -> bool {
        true
    }
}

#[cfg(all(not(target_os = "linux"), not(loom)))]
mod imp {
    pub(crate) fn available() -> bool {
        false
    }
    pub(crate) fn barrier_all_threads() {
        unreachable!("membarrier is never selected where it is unavailable")
    }
}

pub(crate) use imp::available;
#[cfg(not(loom))]
pub(crate) use imp::barrier_all_threads;
