//! The VM's run state: one explicit state machine in place of separate stop and pause flags.
//!
//! ```text
//!              pause()                 stop(outcome), from either state
//!   Running  ----------->  Paused  ------------------------------+
//!      ^   <-----------              (the first outcome wins;    |
//!      |       resume()               Stopping is final)         v
//!      +------------------------------------------------->  Stopping(outcome)
//! ```
//!
//! The state lives under a mutex with a condvar that every transition signals: paused
//! vCPU threads wait on it for `resume` (or the end), and [`Running::wait`] waits on it for
//! the outcome. A vCPU thread reads the state on every exit, so an atomic **mirror** of the
//! state's kind is kept beside it, written under the mutex at each transition: the exit path
//! reads it with one atomic load and never takes the lock.
//!
//! [`Running::wait`]: crate::kvm::vm::Running::wait

use crate::outcome::Outcome;
use parking_lot::{Condvar, Mutex};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Instant;

/// Where the VM is in its life.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VmState {
    /// The vCPUs run the guest.
    Running,
    /// The vCPUs wait (offline for RCU) for `resume`.
    Paused,
    /// The run has ended with this outcome; the vCPUs leave `KVM_RUN` and stop.
    Stopping {
        /// Why the run ended.
        outcome: Outcome,
        /// What the report says about it (exit reason, registers), if anything.
        diagnostic: Option<String>,
    },
}

/// The kind of a [`VmState`], without its outcome: what the atomic mirror holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum StateKind {
    /// [`VmState::Running`].
    Running = 0,
    /// [`VmState::Paused`].
    Paused = 1,
    /// [`VmState::Stopping`].
    Stopping = 2,
}

impl VmState {
    /// This state's kind.
    pub fn kind(&self) -> StateKind {
        match self {
            VmState::Running => StateKind::Running,
            VmState::Paused => StateKind::Paused,
            VmState::Stopping { .. } => StateKind::Stopping,
        }
    }
}

/// The state machine: the state under a mutex, a condvar signalled on every transition, and
/// the atomic mirror of its kind for the exit path.
pub struct Lifecycle {
    state: Mutex<VmState>,
    changed: Condvar,
    mirror: AtomicU8,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self::new()
    }
}

impl Lifecycle {
    /// A VM that runs.
    pub fn new() -> Lifecycle {
        Lifecycle {
            state: Mutex::new(VmState::Running),
            changed: Condvar::new(),
            mirror: AtomicU8::new(StateKind::Running as u8),
        }
    }

    /// The state's kind, from the mirror (one atomic load; no lock).
    #[inline]
    pub fn kind(&self) -> StateKind {
        match self.mirror.load(Ordering::Acquire) {
            0 => StateKind::Running,
            1 => StateKind::Paused,
            _ => StateKind::Stopping,
        }
    }

    /// Whether the run has ended (the mirror: for the exit path).
    #[inline]
    pub fn stopping(&self) -> bool {
        self.kind() == StateKind::Stopping
    }

    /// A copy of the whole state.
    pub fn get(&self) -> VmState {
        self.state.lock().clone()
    }

    /// Makes `next` the state; the caller holds the lock.
    fn set(&self, state: &mut VmState, next: VmState) {
        let kind = next.kind();
        *state = next;
        // Release: whoever sees the new kind also sees what happened before the transition.
        self.mirror.store(kind as u8, Ordering::Release);
        self.changed.notify_all();
    }

    /// Running -> Paused. False (and no change) in any other state.
    pub fn pause(&self) -> bool {
        let mut s = self.state.lock();
        let ok = *s == VmState::Running;
        if ok {
            self.set(&mut s, VmState::Paused);
        }
        ok
    }

    /// Paused -> Running. False (and no change) in any other state.
    pub fn resume(&self) -> bool {
        let mut s = self.state.lock();
        let ok = *s == VmState::Paused;
        if ok {
            self.set(&mut s, VmState::Running);
        }
        ok
    }

    /// Running or Paused -> Stopping with the outcome `decide` returns, called under the
    /// lock so that it sees the last word on the run (it may rewrite the outcome it was
    /// given). The first stop wins: once stopping, `decide` is not called and this returns
    /// false.
    pub fn stop_with(&self, decide: impl FnOnce() -> (Outcome, Option<String>)) -> bool {
        let mut s = self.state.lock();
        if matches!(*s, VmState::Stopping { .. }) {
            return false;
        }
        let (outcome, diagnostic) = decide();
        self.set(
            &mut s,
            VmState::Stopping {
                outcome,
                diagnostic,
            },
        );
        true
    }

    /// The outcome, once stopping.
    pub fn outcome(&self) -> Option<(Outcome, Option<String>)> {
        match &*self.state.lock() {
            VmState::Stopping {
                outcome,
                diagnostic,
            } => Some((outcome.clone(), diagnostic.clone())),
            _ => None,
        }
    }

    /// The outcome's short name, once stopping.
    pub fn outcome_name(&self) -> Option<&'static str> {
        self.outcome().map(|(o, _)| o.name())
    }

    /// Blocks while the VM is paused: returns once it runs again or stops.
    pub fn wait_while_paused(&self) {
        let mut s = self.state.lock();
        while *s == VmState::Paused {
            self.changed.wait(&mut s);
        }
    }

    /// Blocks until the VM stops or `until` passes (`None`: no limit); true if it stopped.
    /// Also returns early, false, when [`wake`](Self::wake) is called.
    pub fn wait_stopping(&self, until: Option<Instant>) -> bool {
        let mut s = self.state.lock();
        if !matches!(*s, VmState::Stopping { .. }) {
            match until {
                Some(t) => {
                    self.changed.wait_until(&mut s, t);
                }
                None => self.changed.wait(&mut s),
            }
        }
        matches!(*s, VmState::Stopping { .. })
    }

    /// Wakes the waiters of [`wait_stopping`](Self::wait_stopping) with no transition (a
    /// new deadline for them to watch).
    pub fn wake(&self) {
        let _s = self.state.lock();
        self.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn transitions_follow_the_diagram() {
        let l = Lifecycle::new();
        assert_eq!(l.kind(), StateKind::Running);
        assert!(!l.resume(), "resume of a running VM");
        assert!(l.pause());
        assert!(!l.pause(), "pause of a paused VM");
        assert_eq!(l.kind(), StateKind::Paused);
        assert!(l.resume());
        assert_eq!(l.get(), VmState::Running);
        assert!(l.stop_with(|| (Outcome::PowerOff, None)));
        assert!(l.stopping());
        assert!(!l.pause() && !l.resume(), "Stopping is final");
        assert_eq!(l.outcome_name(), Some("power-off"));
    }

    #[test]
    fn the_first_outcome_wins_and_later_ones_are_not_even_computed() {
        let l = Lifecycle::new();
        assert!(l.pause());
        assert!(l.stop_with(|| (Outcome::Reset, Some("first".into()))));
        assert!(!l.stop_with(|| panic!("a second stop must not decide anything")));
        assert_eq!(l.outcome(), Some((Outcome::Reset, Some("first".into()))));
    }

    #[test]
    fn the_mirror_matches_the_state_after_every_transition() {
        let l = Lifecycle::new();
        let check = |l: &Lifecycle| assert_eq!(l.kind(), l.get().kind());
        check(&l);
        l.pause();
        check(&l);
        l.resume();
        check(&l);
        l.stop_with(|| (Outcome::Stopped, None));
        check(&l);
    }

    #[test]
    fn a_paused_waiter_returns_on_resume_and_on_stop() {
        for stop in [false, true] {
            let l = Arc::new(Lifecycle::new());
            assert!(l.pause());
            let l2 = l.clone();
            let t = std::thread::spawn(move || {
                l2.wait_while_paused();
                l2.kind()
            });
            std::thread::sleep(Duration::from_millis(20));
            assert!(!t.is_finished(), "the waiter must block while paused");
            if stop {
                l.stop_with(|| (Outcome::Stopped, None));
            } else {
                l.resume();
            }
            let seen = t.join().unwrap();
            let want = if stop {
                StateKind::Stopping
            } else {
                StateKind::Running
            };
            assert_eq!(seen, want);
        }
    }

    #[test]
    fn wait_stopping_times_out_or_sees_the_stop() {
        let l = Arc::new(Lifecycle::new());
        let t0 = Instant::now();
        assert!(!l.wait_stopping(Some(t0 + Duration::from_millis(30))));
        assert!(t0.elapsed() >= Duration::from_millis(30));
        let l2 = l.clone();
        let t = std::thread::spawn(move || l2.wait_stopping(None));
        std::thread::sleep(Duration::from_millis(20));
        l.stop_with(|| (Outcome::Halted, None));
        assert!(t.join().unwrap());
        // Already stopped: no wait at all.
        assert!(l.wait_stopping(None));
    }
}
