//! Kicking a vCPU out of `KVM_RUN`: a signal whose handler sets `immediate_exit`.
//!
//! The handler runs on the vCPU thread; it finds that thread's `kvm_run` through a
//! thread-local pointer registered before the first `KVM_RUN`. Setting `immediate_exit`
//! (rather than relying on the signal interrupting the ioctl) closes the race in which the
//! signal arrives just before the thread enters `KVM_RUN`: the next entry then returns
//! `EINTR` at once.

use std::cell::Cell;
use std::sync::Once;

thread_local! {
    static RUN: Cell<*mut kvm_bindings::kvm_run> = const { Cell::new(std::ptr::null_mut()) };
}

/// The signal used for kicks.
pub fn signal() -> libc::c_int {
    libc::SIGRTMIN()
}

extern "C" fn handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    let _ = RUN.try_with(|r| {
        let p = r.get();
        if !p.is_null() {
            // SAFETY: `p` is this thread's kvm_run mapping, registered by `register` and valid
            // until `unregister`; a volatile byte store is async-signal-safe.
            unsafe { std::ptr::addr_of_mut!((*p).immediate_exit).write_volatile(1) };
        }
    });
}

/// Installs the kick handler (once per process), through vmm-sys-util's
/// `register_signal_handler` (no SA_RESTART: KVM_RUN must return EINTR; every signal is
/// blocked while the handler runs).
pub fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Cannot fail for SIGRTMIN with a valid handler; if it ever did, say so: kicks would
        // then kill the process instead of stopping a vCPU.
        if let Err(e) = vmm_sys_util::signal::register_signal_handler(signal(), handler) {
            log::error!(
                "cannot install the vCPU kick handler for signal {}: {e}",
                signal()
            );
        }
    });
}

/// Registers the calling vCPU thread's `kvm_run` for the handler.
pub fn register(run: *mut kvm_bindings::kvm_run) {
    RUN.with(|r| r.set(run));
}

/// Unregisters it (before the vCPU fd and its mapping go away).
pub fn unregister() {
    RUN.with(|r| r.set(std::ptr::null_mut()));
}

/// Sends the kick signal to `thread`.
pub fn kick(thread: libc::pthread_t) {
    // SAFETY: pthread_kill with a thread id from a live JoinHandle and a handled signal.
    unsafe {
        libc::pthread_kill(thread, signal());
    }
}
