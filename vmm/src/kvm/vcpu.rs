//! The vCPU thread: a small explicit state machine around `KVM_RUN`.
//!
//! ```text
//!            +---------+  exit handled   +---------+
//!   start -> | Running | --------------> | Running |   (quiescent state on every exit)
//!            +---------+                 +---------+
//!              |    ^ resume
//!        pause |    |
//!              v    |
//!            +---------+  (offline: a paused vCPU never holds up a grace period)
//!            | Paused  |
//!            +---------+
//!                 | stop requested / fatal exit (from Running or Paused)
//!                 v
//!            +---------+
//!            | Stopped |  -> thread ends, QSBR handle dropped (unregistered)
//!            +---------+
//! ```
//!
//! The thread is a QSBR reader of the VM's RCU domain: **offline** while inside `KVM_RUN` (a
//! halted vCPU may sit there for seconds and must not hold up grace periods) and online,
//! which is also its quiescent state, on every exit. Port and MMIO exits are dispatched
//! through the RCU buses with no lock; the device takes its own.

use crate::kvm::vm::VmShared;
use crate::outcome::Outcome;
use devices::{Access, ExitRequest};
use kvm_ioctls::{VcpuExit, VcpuFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Exit counters of one vCPU. Written only by its own thread (a load and a store, no
/// read-modify-write), on its own cache lines; read by anyone.
#[repr(align(128))]
#[derive(Default)]
pub struct ExitCounters {
    /// Port I/O exits.
    pub pio: AtomicU64,
    /// MMIO exits.
    pub mmio: AtomicU64,
    /// Returns with EINTR (kicks) and EAGAIN.
    pub interrupted: AtomicU64,
    /// Everything else.
    pub other: AtomicU64,
    /// RAM lookups that hit this vCPU's MRU hint (device emulation on this vCPU).
    pub mru_hits: AtomicU64,
    /// RAM lookups that missed it.
    pub mru_misses: AtomicU64,
}

#[inline]
fn bump(c: &AtomicU64) {
    c.store(c.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
}

enum State {
    Running,
    Paused,
    Stopped,
}

const KVM_INTERNAL_ERROR_EMULATION: u32 = 1;
const KVM_SYSTEM_EVENT_SHUTDOWN: u32 = 1;
const KVM_SYSTEM_EVENT_RESET: u32 = 2;
const KVM_SYSTEM_EVENT_CRASH: u32 = 3;

/// Reads the internal-error suberror out of the `kvm_run` union.
fn internal_suberror(vcpu: &mut VcpuFd) -> u32 {
    let run = vcpu.get_kvm_run();
    // SAFETY: called only right after KVM_RUN returned KVM_EXIT_INTERNAL_ERROR, which tells
    // us the `internal` member of the union is the valid one.
    unsafe { run.__bindgen_anon_1.internal.suberror }
}

/// The outcome of a `KVM_EXIT_INTERNAL_ERROR`, named after its suberror.
fn internal_error_outcome(vcpu: &mut VcpuFd) -> Outcome {
    let sub = internal_suberror(vcpu);
    Outcome::Crash(if sub == KVM_INTERNAL_ERROR_EMULATION {
        format!(
            "KVM internal error: emulation failure (suberror {sub}): KVM's instruction \
             emulator could not handle a guest instruction.{}",
            crate::kvm::pvm::emulation_hint()
        )
    } else {
        format!("KVM internal error (suberror {sub})")
    })
}

/// Runs vCPU `id` until the VM stops.
pub fn run(id: usize, mut vcpu: VcpuFd, shared: Arc<VmShared>) {
    crate::kvm::kick::register(vcpu.get_kvm_run() as *mut _);
    let mut me = shared.rcu.register_qsbr();
    let counters = &shared.exits[id];
    let mut state = State::Running;
    let mut first = id == 0;
    loop {
        match state {
            State::Stopped => break,
            State::Paused => {
                me.offline_while(|| shared.wait_while_paused());
                state = if shared.stopping() {
                    State::Stopped
                } else {
                    State::Running
                };
                continue;
            }
            State::Running => {}
        }
        if shared.stopping() {
            state = State::Stopped;
            continue;
        }
        if shared.is_paused() {
            state = State::Paused;
            continue;
        }
        if first {
            first = false;
            shared.mark_first_run();
        }
        let result = me.offline_while(|| vcpu.run());
        let mut internal_error = false;
        // A device that ended the VM (its write's return value).
        let mut request = None;
        // Back online: this is the quiescent state for everything read before the exit.
        let access = Access::new(id, &me);
        let outcome = match result {
            Ok(exit) => match exit {
                VcpuExit::IoIn(port, data) => {
                    bump(&counters.pio);
                    shared.pio.read(&access, port as u64, data);
                    None
                }
                VcpuExit::IoOut(port, data) => {
                    bump(&counters.pio);
                    request = shared.pio.write(&access, port as u64, data);
                    None
                }
                VcpuExit::MmioRead(addr, data) => {
                    bump(&counters.mmio);
                    shared.mmio.read(&access, addr, data);
                    None
                }
                VcpuExit::MmioWrite(addr, data) => {
                    bump(&counters.mmio);
                    request = shared.mmio.write(&access, addr, data);
                    None
                }
                VcpuExit::Hlt => Some(Outcome::Halted),
                VcpuExit::Shutdown => Some(Outcome::TripleFault),
                VcpuExit::SystemEvent(kind, _) => match kind {
                    KVM_SYSTEM_EVENT_SHUTDOWN => Some(Outcome::PowerOff),
                    KVM_SYSTEM_EVENT_RESET => Some(Outcome::Reset),
                    KVM_SYSTEM_EVENT_CRASH => Some(Outcome::Panic),
                    other => Some(Outcome::Crash(format!("unknown KVM system event {other}"))),
                },
                VcpuExit::FailEntry(reason, cpu) => Some(Outcome::Crash(format!(
                    "KVM could not enter the guest (hardware entry failure reason {reason:#x} \
                     on host CPU {cpu})"
                ))),
                // The suberror is read below, once `exit` no longer borrows the vCPU.
                VcpuExit::InternalError => {
                    internal_error = true;
                    None
                }
                VcpuExit::Intr => {
                    bump(&counters.interrupted);
                    None
                }
                other => {
                    bump(&counters.other);
                    Some(Outcome::Crash(format!("unexpected KVM exit {other:?}")))
                }
            },
            Err(e) if e.errno() == libc::EINTR => {
                bump(&counters.interrupted);
                vcpu.set_kvm_immediate_exit(0);
                None
            }
            Err(e) if e.errno() == libc::EAGAIN => {
                // Once after INIT (see KVM-FACTS.md): retry.
                bump(&counters.interrupted);
                None
            }
            Err(e) => Some(Outcome::Error(format!("KVM_RUN on vCPU {id}: {e}"))),
        };
        let outcome = if internal_error {
            Some(internal_error_outcome(&mut vcpu))
        } else {
            outcome
        };
        if let Some(req) = request {
            // A device this exit reached stopped the VM: a panic says where.
            let (outcome, diagnostic) = match req {
                ExitRequest::Reset => (Outcome::Reset, None),
                ExitRequest::PowerOff => (Outcome::PowerOff, None),
                ExitRequest::Panic => (
                    Outcome::Panic,
                    Some(format!(
                        "the guest reported a panic through pvpanic (port 0x505)\nvCPU {id} \
                         registers at the access:\n{}",
                        crate::x86_64::cpu::dump(&vcpu)
                    )),
                ),
            };
            shared.finish(outcome, diagnostic);
            state = State::Stopped;
        } else if let Some(outcome) = outcome {
            let diagnostic = match &outcome {
                Outcome::Reset | Outcome::PowerOff => None,
                o => Some(format!(
                    "vCPU {id} stopped the VM: {}\n{}",
                    describe(o),
                    crate::x86_64::cpu::dump(&vcpu)
                )),
            };
            shared.finish(outcome, diagnostic);
            state = State::Stopped;
        }
        me.quiescent_state();
    }
    crate::kvm::kick::unregister();
    drop(me);
}

fn describe(o: &Outcome) -> String {
    match o {
        Outcome::TripleFault => "triple fault (KVM_EXIT_SHUTDOWN)".into(),
        Outcome::Halted => "HLT with no interrupt source to wake it".into(),
        Outcome::Panic => "guest panic (KVM crash event)".into(),
        Outcome::Crash(s) | Outcome::Error(s) => s.clone(),
        o => o.name().into(),
    }
}
