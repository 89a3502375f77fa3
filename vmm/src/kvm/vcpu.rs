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

use crate::kvm::state::StateKind;
use crate::kvm::vm::VmShared;
use crate::outcome::Outcome;
use devices::{Access, ExitRequest};
use kvm_ioctls::{VcpuExit, VcpuFd};
use rcu::QsbrThread;
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

impl ExitCounters {
    /// The exit counts as the report lists them: pio, mmio, interrupted, other.
    pub fn counts(&self) -> [u64; 4] {
        [&self.pio, &self.mmio, &self.interrupted, &self.other].map(|c| c.load(Ordering::Relaxed))
    }
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
    let mut state = State::Running;
    let mut first = id == 0;
    loop {
        match state {
            State::Stopped => break,
            State::Paused => {
                me.offline_while(|| shared.wait_while_paused());
                state = State::Running;
                continue;
            }
            State::Running => {}
        }
        // One atomic load of the VM state's mirror per exit.
        match shared.state() {
            StateKind::Stopping => {
                state = State::Stopped;
                continue;
            }
            StateKind::Paused => {
                state = State::Paused;
                continue;
            }
            StateKind::Running => {}
        }
        if first {
            first = false;
            shared.mark_first_run();
        }
        let result = me.offline_while(|| vcpu.run());
        // Back online: this is the quiescent state for everything read before the exit.
        let after = handle_exit(id, result, &shared, &me);
        if let Some((outcome, diagnostic)) = conclude(id, after, &mut vcpu) {
            shared.finish(outcome, diagnostic);
            state = State::Stopped;
        }
        me.quiescent_state();
    }
    crate::kvm::kick::unregister();
    drop(me);
}

/// What an exit leaves to do once its data (which borrows the vCPU) is no longer needed.
enum After {
    /// Nothing: run again.
    Continue,
    /// `KVM_RUN` returned EINTR: clear `immediate_exit`, then run again.
    Kicked,
    /// A device the exit reached asked to end the VM.
    Request(ExitRequest),
    /// `KVM_EXIT_INTERNAL_ERROR`: its suberror names the outcome.
    InternalError,
    /// The exit ends the VM.
    Stop(Outcome),
}

/// Handles one return from `KVM_RUN`: counts it and makes its bus access (through the RCU
/// buses, with `me` as the read-side proof).
fn handle_exit(
    id: usize,
    result: Result<VcpuExit<'_>, kvm_ioctls::Error>,
    shared: &VmShared,
    me: &QsbrThread,
) -> After {
    let counters = &shared.exits[id];
    let access = Access::new(id, me);
    let request = |r: Option<ExitRequest>| r.map_or(After::Continue, After::Request);
    match result {
        Ok(VcpuExit::IoIn(port, data)) => {
            bump(&counters.pio);
            shared.pio.read(&access, port as u64, data);
            After::Continue
        }
        Ok(VcpuExit::IoOut(port, data)) => {
            bump(&counters.pio);
            request(shared.pio.write(&access, port as u64, data))
        }
        Ok(VcpuExit::MmioRead(addr, data)) => {
            bump(&counters.mmio);
            shared.mmio.read(&access, addr, data);
            After::Continue
        }
        Ok(VcpuExit::MmioWrite(addr, data)) => {
            bump(&counters.mmio);
            request(shared.mmio.write(&access, addr, data))
        }
        Ok(VcpuExit::InternalError) => After::InternalError,
        Ok(VcpuExit::Intr) => {
            bump(&counters.interrupted);
            After::Continue
        }
        Ok(other) => After::Stop(stopping_exit(other, counters)),
        Err(e) if e.errno() == libc::EINTR => {
            bump(&counters.interrupted);
            After::Kicked
        }
        Err(e) if e.errno() == libc::EAGAIN => {
            // Once after INIT (see KVM-FACTS.md): retry.
            bump(&counters.interrupted);
            After::Continue
        }
        Err(e) => After::Stop(Outcome::Error(format!("KVM_RUN on vCPU {id}: {e}"))),
    }
}

/// Finishes an exit with the vCPU at hand: the outcome and its diagnostic (registers) if it
/// ends the VM.
fn conclude(id: usize, after: After, vcpu: &mut VcpuFd) -> Option<(Outcome, Option<String>)> {
    let outcome = match after {
        After::Continue => return None,
        After::Kicked => {
            vcpu.set_kvm_immediate_exit(0);
            return None;
        }
        // A device this exit reached stopped the VM: a panic says where.
        After::Request(ExitRequest::Reset) => Outcome::Reset,
        After::Request(ExitRequest::PowerOff) => Outcome::PowerOff,
        After::Request(ExitRequest::Panic) => {
            return Some((
                Outcome::Panic,
                Some(format!(
                    "the guest reported a panic through pvpanic (port 0x505)\nvCPU {id} \
                     registers at the access:\n{}",
                    crate::x86_64::cpu::dump(vcpu)
                )),
            ))
        }
        After::InternalError => internal_error_outcome(vcpu),
        After::Stop(o) => o,
    };
    let diagnostic = match &outcome {
        Outcome::Reset | Outcome::PowerOff => None,
        o => Some(format!(
            "vCPU {id} stopped the VM: {}\n{}",
            describe(o),
            crate::x86_64::cpu::dump(vcpu)
        )),
    };
    Some((outcome, diagnostic))
}

/// The outcome of an exit that is not a bus access or a kick: each ends the VM.
fn stopping_exit(exit: VcpuExit<'_>, counters: &ExitCounters) -> Outcome {
    match exit {
        VcpuExit::Hlt => Outcome::Halted,
        VcpuExit::Shutdown => Outcome::TripleFault,
        VcpuExit::SystemEvent(kind, _) => match kind {
            KVM_SYSTEM_EVENT_SHUTDOWN => Outcome::PowerOff,
            KVM_SYSTEM_EVENT_RESET => Outcome::Reset,
            KVM_SYSTEM_EVENT_CRASH => Outcome::Panic,
            other => Outcome::Crash(format!("unknown KVM system event {other}")),
        },
        VcpuExit::FailEntry(reason, cpu) => Outcome::Crash(format!(
            "KVM could not enter the guest (hardware entry failure reason {reason:#x} on host \
             CPU {cpu})"
        )),
        other => {
            bump(&counters.other);
            Outcome::Crash(format!("unexpected KVM exit {other:?}"))
        }
    }
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
