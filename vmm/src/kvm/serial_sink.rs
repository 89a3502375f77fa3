//! What the VMM watches for in the guest's console output, on the vCPU thread that wrote the
//! UART's register: `--expect`, `--fail-on` patterns and Linux's panic lines, each ending the
//! run through [`VmShared::finish`]; the bytes themselves go to the console queue that the
//! main loop drains.

use crate::frontend::console_out::Console;
use crate::kvm::vm::{is_external, VmConfig, VmShared};
use crate::outcome::{FailScanner, Outcome, Scan};
use parking_lot::Mutex;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The UART's writer, on the vCPU thread that wrote the register: scans guest output for
/// `--expect`, `--fail-on` and Linux panic lines, and queues it for the outputs (stdout,
/// `--serial file:`, `--log`), which the main loop writes ([`Console`]). Nothing here blocks
/// or fails: a full queue drops bytes and counts them.
struct SerialSink {
    console: Arc<Console>,
    expect: Vec<u8>,
    matched: usize,
    on_match: Option<Box<dyn FnMut() + Send>>,
    /// `--fail-on`.
    fail: Option<FailWatch>,
    /// For Linux kernels: the console watched for the kernel's panic lines.
    panic: Option<PanicWatch>,
}

/// What Linux's `panic()` prints first (kernel/panic.c), after any log prefix.
const LINUX_PANIC: &str = "Kernel panic - not syncing";
/// What it prints last, after the backtrace, unless `panic=N` makes it reboot first.
const LINUX_PANIC_END: &str = "---[ end Kernel panic - not syncing";
/// Longer lines are cut to this many bytes before the check (the marker comes after a
/// timestamp of about 15 bytes).
const PANIC_LINE_MAX: usize = 512;

/// What a console line says about a Linux panic.
#[derive(Debug, PartialEq, Eq)]
enum PanicLine {
    /// Not a panic line.
    No,
    /// `panic()`'s first line: the report (backtrace) follows.
    Start,
    /// Its last line: the kernel now spins (or, with `panic=N`, reboots after N seconds).
    End,
}

fn classify_panic_line(line: &str) -> PanicLine {
    if line.contains(LINUX_PANIC_END) {
        PanicLine::End
    } else if line.contains(LINUX_PANIC) {
        PanicLine::Start
    } else {
        PanicLine::No
    }
}

/// Collects console lines and reports panic lines to the VM.
///
/// pvpanic would be the better channel, but Debian's cloud kernel builds its ACPI pvpanic
/// driver as a module (`CONFIG_PVPANIC_MMIO=m`) that a minimal initramfs does not load;
/// the console line works with any kernel that has `console=ttyS0`. (A userspace program
/// that prints the marker is taken for a panic too.)
struct PanicWatch {
    line: Vec<u8>,
    shared: std::sync::Weak<VmShared>,
}

impl PanicWatch {
    /// Takes one console byte; at the end of a panic line, returns the line (trimmed) and
    /// what it is.
    fn feed(&mut self, b: u8) -> Option<(String, PanicLine)> {
        match b {
            b'\n' => {
                let line = String::from_utf8_lossy(&self.line).trim().to_string();
                self.line.clear();
                match classify_panic_line(&line) {
                    PanicLine::No => None,
                    kind => Some((line, kind)),
                }
            }
            _ if self.line.len() < PANIC_LINE_MAX => {
                self.line.push(b);
                None
            }
            _ => None,
        }
    }
}

impl Write for SerialSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.console.push(buf);
        if let Some(p) = &mut self.panic {
            for &b in buf {
                if let Some((line, kind)) = p.feed(b) {
                    if let Some(s) = p.shared.upgrade() {
                        s.guest_panicked(&line, kind == PanicLine::End);
                    }
                }
            }
        }
        let expecting = !self.expect.is_empty() && self.on_match.is_some();
        if expecting || self.fail.is_some() {
            for &b in buf {
                // --fail-on and --expect see the bytes in order: whichever matches first
                // decides (a fail pattern in a line still being printed included).
                if self.fail.as_mut().is_some_and(|f| f.feed(b)) {
                    self.on_match = None;
                }
                if self.on_match.is_none() || self.expect.is_empty() {
                    continue;
                }
                // Naive restart-on-mismatch matching, made correct by re-checking `b`
                // against the first byte (the marker strings have no self-overlap worth KMP).
                if b == self.expect[self.matched] {
                    self.matched += 1;
                } else {
                    self.matched = usize::from(b == self.expect[0]);
                }
                if self.matched == self.expect.len() {
                    self.matched = 0;
                    if let Some(mut f) = self.on_match.take() {
                        f();
                    }
                }
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// After a `--fail-on` pattern, how long the rest of its line may take: then the run ends
/// with the line as printed so far (a guest that stops printing mid-line still fails fast).
pub(crate) const FAIL_LINE_GRACE: Duration = Duration::from_millis(200);

/// What the console says when a `--fail-on` pattern ends the run.
pub(crate) fn fail_diagnostic(o: &Outcome) -> String {
    match o {
        Outcome::FailPattern { pattern, line } => {
            format!("the guest printed the --fail-on pattern {pattern:?}: {line}")
        }
        o => o.name().to_string(),
    }
}

/// The serial sink's side of `--fail-on`.
struct FailWatch {
    scan: Arc<Mutex<FailScanner>>,
    shared: std::sync::Weak<VmShared>,
    /// A pattern matched: the grace timer runs, `--expect` no longer counts.
    hit: bool,
}

impl FailWatch {
    /// Feeds one console byte; true once a pattern has matched (the run ends with it).
    fn feed(&mut self, b: u8) -> bool {
        let done = {
            let mut scan = self.scan.lock();
            match scan.push(b) {
                Some(Scan::LineDone { pattern, line }) => Some(scan.outcome(pattern, &line)),
                Some(Scan::Hit(_)) => {
                    if !self.hit {
                        self.hit = true;
                        self.start_grace_timer();
                    }
                    None
                }
                None => None,
            }
        };
        if let Some(o) = done {
            self.hit = true;
            if let Some(s) = self.shared.upgrade() {
                let d = fail_diagnostic(&o);
                s.finish(o, Some(d));
            }
        }
        self.hit
    }

    fn start_grace_timer(&self) {
        if let Some(s) = self.shared.upgrade() {
            s.arm_fail_grace();
        }
    }
}

/// `--fail-on`'s grace: when it ends, and the main loop's timer for it.
#[derive(Default)]
pub(crate) struct FailGrace {
    pub(crate) deadline: Option<Instant>,
    pub(crate) timer: Option<iohandler::Timer>,
}

/// The UART's writer for this VM: its console, `--expect`, `--fail-on` and, for a Linux
/// kernel, the panic watch.
pub(crate) fn serial_sink(shared: &Arc<VmShared>, cfg: &VmConfig) -> Box<dyn Write + Send> {
    let on_match: Option<Box<dyn FnMut() + Send>> = cfg.expect.as_ref().map(|_| {
        let weak = Arc::downgrade(shared);
        Box::new(move || {
            if let Some(s) = weak.upgrade() {
                *s.expect_seen.lock() = Some(s.started().elapsed());
                s.finish(Outcome::ExpectSeen, None);
            }
        }) as Box<dyn FnMut() + Send>
    });
    Box::new(SerialSink {
        console: shared.console.clone(),
        expect: cfg.expect.clone().unwrap_or_default().into_bytes(),
        matched: 0,
        on_match,
        fail: shared.fail_scan.as_ref().map(|scan| FailWatch {
            scan: scan.clone(),
            shared: Arc::downgrade(shared),
            hit: false,
        }),
        panic: is_external(&cfg.boot.kernel).then(|| PanicWatch {
            line: Vec::new(),
            shared: Arc::downgrade(shared),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch() -> PanicWatch {
        PanicWatch {
            line: Vec::new(),
            shared: std::sync::Weak::new(),
        }
    }

    fn feed(w: &mut PanicWatch, text: &[u8]) -> Vec<(String, PanicLine)> {
        text.iter().filter_map(|&b| w.feed(b)).collect()
    }

    #[test]
    fn linux_panic_lines_are_recognized_with_and_without_timestamps() {
        let mut w = watch();
        let got = feed(
            &mut w,
            b"[    1.000000] Run /init as init process\r\n\
              [    2.345678] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100\r\n\
              [    2.345700] CPU: 0 PID: 1 Comm: init Not tainted 6.1.0-57-cloud-amd64\r\n\
              [    2.346000] ---[ end Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100 ]---\r\n",
        );
        assert_eq!(
            got,
            vec![
                (
                    "[    2.345678] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100"
                        .to_string(),
                    PanicLine::Start
                ),
                (
                    "[    2.346000] ---[ end Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100 ]---"
                        .to_string(),
                    PanicLine::End
                ),
            ]
        );
        let got = feed(
            &mut w,
            b"Kernel panic - not syncing: VFS: Unable to mount root fs\n",
        );
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1, PanicLine::Start);
    }

    #[test]
    fn other_lines_and_unfinished_lines_are_not_panics() {
        let mut w = watch();
        assert!(feed(&mut w, b"Kernel panic\nnot syncing\n").is_empty());
        assert!(feed(&mut w, b"Kernel panic - not syncing: no newline yet").is_empty());
        // A long line is cut, not grown without bound; the marker near its start still counts.
        let mut long = b"Kernel panic - not syncing: ".to_vec();
        long.extend(std::iter::repeat_n(b'x', 10 * PANIC_LINE_MAX));
        let mut w = watch();
        assert!(feed(&mut w, &long).is_empty());
        assert_eq!(w.line.len(), PANIC_LINE_MAX);
        let got = feed(&mut w, b"\n");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0.len(), PANIC_LINE_MAX);
        assert!(w.line.is_empty());
        // Invalid UTF-8 does not stop the check.
        assert_eq!(
            feed(&mut w, b"\xff\xfe Kernel panic - not syncing: x\n").len(),
            1
        );
    }
}
