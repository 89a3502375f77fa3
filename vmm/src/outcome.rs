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
    /// A line of the guest's console output contained a `--fail-on` pattern.
    FailPattern {
        /// The pattern (the first one the line matched).
        pattern: String,
        /// The whole line, line end removed (at most [`MAX_LINE`] bytes, invalid UTF-8
        /// replaced).
        line: String,
    },
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
    /// A line of guest console output contained a `--fail-on` pattern (with `--expect`
    /// too: the pattern came first).
    pub const FAIL_PATTERN: i32 = 7;
}

impl Outcome {
    /// The process exit status for this outcome; `expecting` is whether `--expect` was given.
    pub fn exit_status(&self, expecting: bool) -> i32 {
        match self {
            Outcome::ExpectSeen => status::OK,
            Outcome::FailPattern { .. } => status::FAIL_PATTERN,
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
            Outcome::FailPattern { .. } => "fail-pattern",
            Outcome::Timeout => "timeout",
            Outcome::Stopped => "stopped",
            Outcome::Error(_) => "error",
        }
    }
}

/// The patterns `--fail-on-kernel-errors` adds: what a Linux kernel prints when something
/// went wrong (a panic, an oops or BUG, a WARN with its call trace, the FPU set-up's XSAVE
/// check, an unhandled fault or signal).
pub const KERNEL_ERROR_PATTERNS: [&str; 6] = [
    "Kernel panic",
    "BUG:",
    "WARNING:",
    "Call Trace",
    "XSAVE consistency problem",
    "Unhandled",
];

/// The longest line [`FailScanner`] keeps: a longer one is scanned in pieces of this size, so
/// a guest that never ends a line cannot make the VMM buffer without bound.
pub const MAX_LINE: usize = 4096;

/// What [`FailScanner::push`] saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scan {
    /// The current line now contains pattern `i` (the first one it matched; reported once
    /// per line).
    Hit(usize),
    /// A line that matched pattern `pattern` ended; `line` is its text without the line end.
    LineDone {
        /// The index of the pattern.
        pattern: usize,
        /// The line, `\r`/`\n` removed.
        line: Vec<u8>,
    },
}

/// Scans guest console output, byte by byte as the UART emits it, for lines containing any of
/// a set of patterns (plain substrings; a line ends at `\n`, a `\r` before it is dropped).
/// Writes may split a line or a pattern anywhere.
#[derive(Debug, Default)]
pub struct FailScanner {
    patterns: Vec<String>,
    line: Vec<u8>,
    hit: Option<usize>,
}

impl FailScanner {
    /// A scanner for `patterns` (none: it never reports anything).
    pub fn new(patterns: &[String]) -> FailScanner {
        FailScanner {
            patterns: patterns.to_vec(),
            line: Vec::new(),
            hit: None,
        }
    }

    /// Whether there is nothing to look for.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// The current line so far (line end removed), for a report before the line ends.
    pub fn partial_line(&self) -> &[u8] {
        trim_line_end(&self.line)
    }

    /// The outcome for a line that matched pattern `pattern` (an index from [`Scan`]).
    pub fn outcome(&self, pattern: usize, line: &[u8]) -> Outcome {
        Outcome::FailPattern {
            pattern: self.patterns.get(pattern).cloned().unwrap_or_default(),
            line: String::from_utf8_lossy(line).into_owned(),
        }
    }

    /// If the current, unfinished line matched: the outcome with the line so far.
    pub fn pending(&self) -> Option<Outcome> {
        self.hit.map(|i| self.outcome(i, self.partial_line()))
    }

    /// Feeds one byte of output.
    pub fn push(&mut self, b: u8) -> Option<Scan> {
        if self.patterns.is_empty() {
            return None;
        }
        if b == b'\n' {
            return self.end_line();
        }
        self.line.push(b);
        let hit = match self.hit {
            None => self
                .patterns
                .iter()
                .position(|p| self.line.ends_with(p.as_bytes())),
            Some(_) => None,
        };
        if hit.is_some() {
            self.hit = hit;
        }
        if self.line.len() >= MAX_LINE {
            return self.end_line();
        }
        hit.map(Scan::Hit)
    }

    fn end_line(&mut self) -> Option<Scan> {
        let done = self.hit.take().map(|pattern| Scan::LineDone {
            pattern,
            line: trim_line_end(&self.line).to_vec(),
        });
        self.line.clear();
        done
    }
}

fn trim_line_end(mut l: &[u8]) -> &[u8] {
    while let [rest @ .., b'\r' | b'\n'] = l {
        l = rest;
    }
    l
}

#[cfg(test)]
mod fail_scan_tests {
    use super::*;

    fn scanner(p: &[&str]) -> FailScanner {
        FailScanner::new(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    /// Feeds `writes` in turn; returns every event with the number of bytes fed before it.
    fn feed(s: &mut FailScanner, writes: &[&[u8]]) -> Vec<(usize, Scan)> {
        let mut n = 0;
        let mut out = Vec::new();
        for w in writes {
            for &b in *w {
                n += 1;
                if let Some(e) = s.push(b) {
                    out.push((n, e));
                }
            }
        }
        out
    }

    fn done(pattern: usize, line: &str) -> Scan {
        Scan::LineDone {
            pattern,
            line: line.as_bytes().to_vec(),
        }
    }

    #[test]
    fn a_pattern_split_across_writes_matches() {
        let mut s = scanner(&["Kernel panic"]);
        let ev = feed(&mut s, &[b"[ 1.0] Ker", b"nel pa", b"nic - not syncing\n"]);
        assert_eq!(
            ev,
            vec![
                (19, Scan::Hit(0)),
                (34, done(0, "[ 1.0] Kernel panic - not syncing"))
            ]
        );
    }

    #[test]
    fn crlf_and_pattern_at_the_line_end() {
        let mut s = scanner(&["BUG:"]);
        let ev = feed(&mut s, &[b"ok\r\n", b"x BUG:\r", b"\n", b"after\r\n"]);
        assert_eq!(ev, vec![(10, Scan::Hit(0)), (12, done(0, "x BUG:"))]);
    }

    #[test]
    fn a_pattern_never_spans_lines() {
        let mut s = scanner(&["WARNING:"]);
        assert!(feed(&mut s, &[b"WARN\nING:\n", b"WARNING\n:\n"]).is_empty());
    }

    #[test]
    fn several_patterns_the_first_to_complete_wins_once_per_line() {
        let mut s = scanner(&["Call Trace", "BUG:", "oops"]);
        let ev = feed(
            &mut s,
            &[b"BUG: oops Call Trace\n", b"Call Trace:\n", b"clean\n"],
        );
        assert_eq!(
            ev,
            vec![
                (4, Scan::Hit(1)),
                (21, done(1, "BUG: oops Call Trace")),
                (31, Scan::Hit(0)),
                (33, done(0, "Call Trace:")),
            ]
        );
    }

    #[test]
    fn overlapping_prefixes_still_match() {
        let mut s = scanner(&["aab"]);
        let ev = feed(&mut s, &[b"aaab\n"]);
        assert_eq!(ev, vec![(4, Scan::Hit(0)), (5, done(0, "aaab"))]);
    }

    #[test]
    fn long_lines_are_cut_and_no_patterns_report_nothing() {
        let mut s = scanner(&["x"]);
        let long = vec![b'y'; MAX_LINE + 10];
        assert!(feed(&mut s, &[&long, b"\n"]).is_empty());
        assert!(s.partial_line().is_empty());
        let mut s = scanner(&["needle"]);
        let mut long = vec![b'y'; MAX_LINE - 6];
        long.extend_from_slice(b"needle and more");
        let ev = feed(&mut s, &[&long]);
        assert_eq!(ev.len(), 1, "the line is cut at {MAX_LINE} bytes: {ev:?}");
        assert!(matches!(&ev[0].1, Scan::LineDone { line, .. } if line.len() == MAX_LINE));
        assert_eq!(s.partial_line(), b" and more");
        assert_eq!(s.pending(), None);
        let mut s = scanner(&[]);
        assert!(s.is_empty());
        assert!(feed(&mut s, &[b"anything\n"]).is_empty());
    }

    #[test]
    fn partial_line_is_what_came_so_far() {
        let mut s = scanner(&["oops", "panic"]);
        feed(&mut s, &[b"done\r\nKernel pan"]);
        assert_eq!(s.pending(), None);
        feed(&mut s, &[b"ic - no\xff"]);
        assert_eq!(s.partial_line(), b"Kernel panic - no\xff");
        assert_eq!(
            s.pending(),
            Some(Outcome::FailPattern {
                pattern: "panic".into(),
                line: "Kernel panic - no\u{fffd}".into()
            })
        );
    }

    #[test]
    fn fail_pattern_status_and_name() {
        let o = Outcome::FailPattern {
            pattern: "BUG:".into(),
            line: "BUG: x".into(),
        };
        assert_eq!(o.exit_status(false), status::FAIL_PATTERN);
        assert_eq!(o.exit_status(true), status::FAIL_PATTERN);
        assert_eq!(o.name(), "fail-pattern");
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
