//! How a run ends, and the exit status that says so.

/// Why the VM stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The guest reset the machine: the i8042's 0xFE command (also ACPI's RESET_REG, which
    /// points there), or a `KVM_SYSTEM_EVENT_RESET` exit.
    Reset,
    /// The guest powered the machine off: ACPI S5 through the FADT's sleep control register,
    /// or a `KVM_SYSTEM_EVENT_SHUTDOWN` exit.
    PowerOff,
    /// A vCPU triple-faulted (`KVM_EXIT_SHUTDOWN`). Linux booted with `reboot=t` resets this
    /// way; for anything else it is a crash.
    TripleFault,
    /// The guest reported a panic: through pvpanic, a KVM crash event, or (Linux kernels)
    /// the kernel's "Kernel panic - not syncing" console line.
    Panic,
    /// KVM could not run the guest on: an internal or emulation error, or a failed entry.
    Crash(String),
    /// A vCPU executed HLT with interrupts the VMM does not deliver (no in-kernel irqchip).
    Halted,
    /// The `--expect` string appeared on the serial port.
    ExpectSeen,
    /// `--timeout` passed.
    Timeout,
    /// The user stopped the VM: SIGINT, SIGTERM, Ctrl-A x, or a `quit` request.
    Stopped,
    /// The VMM failed while running the guest.
    Error(String),
}

/// The documented exit statuses (also in `vmm --help` and the README).
pub mod status {
    /// The guest reset or powered off; or, with `--expect`, the string appeared in time.
    pub const OK: i32 = 0;
    /// The VMM failed (set-up or KVM error).
    pub const ERROR: i32 = 1;
    /// Bad command-line usage.
    pub const USAGE: i32 = 2;
    /// `--timeout` passed first, or (with `--expect`) the guest stopped before the string
    /// appeared.
    pub const TIMEOUT: i32 = 3;
    /// The guest crashed: a panic (pvpanic, or a Linux kernel's panic line), a KVM internal
    /// or emulation error, a failed entry, HLT with nothing to wake it.
    pub const CRASH: i32 = 4;
    /// A vCPU triple-faulted (Linux's `reboot=t` reset looks like this too).
    pub const TRIPLE_FAULT: i32 = 5;
    /// Stopped by the user (SIGINT, SIGTERM, Ctrl-A x, quit).
    pub const STOPPED: i32 = 6;
}

impl Outcome {
    /// The process exit status for this outcome; `expecting` is whether `--expect` was given.
    pub fn exit_status(&self, expecting: bool) -> i32 {
        match self {
            Outcome::ExpectSeen => status::OK,
            Outcome::Timeout => status::TIMEOUT,
            Outcome::Stopped => status::STOPPED,
            Outcome::Error(_) => status::ERROR,
            Outcome::Panic | Outcome::Crash(_) | Outcome::Halted => status::CRASH,
            Outcome::TripleFault if !expecting => status::TRIPLE_FAULT,
            Outcome::Reset | Outcome::PowerOff if !expecting => status::OK,
            Outcome::Reset | Outcome::PowerOff | Outcome::TripleFault => status::TIMEOUT,
        }
    }

    /// A short machine-readable name.
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Reset => "reset",
            Outcome::PowerOff => "power-off",
            Outcome::TripleFault => "triple-fault",
            Outcome::Panic => "guest-panic",
            Outcome::Crash(_) => "crash",
            Outcome::Halted => "halted",
            Outcome::ExpectSeen => "expect-seen",
            Outcome::Timeout => "timeout",
            Outcome::Stopped => "stopped",
            Outcome::Error(_) => "error",
        }
    }
}

#[cfg(test)]
mod status_tests {
    use super::*;

    fn all() -> Vec<Outcome> {
        vec![
            Outcome::Reset,
            Outcome::PowerOff,
            Outcome::TripleFault,
            Outcome::Panic,
            Outcome::Crash("x".into()),
            Outcome::Halted,
            Outcome::ExpectSeen,
            Outcome::Timeout,
            Outcome::Stopped,
            Outcome::Error("x".into()),
        ]
    }

    #[test]
    fn power_off_is_its_own_outcome_and_succeeds_like_a_reset() {
        assert_eq!(Outcome::PowerOff.name(), "power-off");
        assert_eq!(Outcome::PowerOff.exit_status(false), status::OK);
        // With --expect, stopping before the string is a failure, as for a reset.
        assert_eq!(Outcome::PowerOff.exit_status(true), status::TIMEOUT);
        assert_eq!(Outcome::Reset.exit_status(false), status::OK);
        assert_eq!(Outcome::Reset.exit_status(true), status::TIMEOUT);
    }

    #[test]
    fn triple_faults_and_panics_keep_their_failing_statuses() {
        assert_eq!(
            Outcome::TripleFault.exit_status(false),
            status::TRIPLE_FAULT
        );
        assert_eq!(Outcome::TripleFault.exit_status(true), status::TIMEOUT);
        assert_eq!(Outcome::Panic.exit_status(false), status::CRASH);
        assert_eq!(Outcome::Panic.exit_status(true), status::CRASH);
    }

    #[test]
    fn names_are_distinct() {
        let names: Vec<&str> = all().iter().map(Outcome::name).collect();
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "{names:?}");
    }
}
