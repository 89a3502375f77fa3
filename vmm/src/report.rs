//! The machine-readable result of a run (`--result-json`).

use crate::kvm::vm::RunReport;
use std::path::Path;
pub use vmm_result::{Exits, RunResult, Unassigned};

/// What the JSON says about the configuration.
#[derive(Clone, Debug)]
pub struct ConfigSummary {
    /// vCPUs.
    pub vcpus: u8,
    /// Guest memory in MiB.
    pub mem_mib: u64,
    /// "builtin" or the kernel's path.
    pub kernel: String,
    /// The `--expect` string.
    pub expect: Option<String>,
    /// The `--fail-on` patterns (with `--fail-on-kernel-errors`'s).
    pub fail_on: Vec<String>,
}

fn ms(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// The record (`vmm_result::RunResult`, shared with the report tools): outcome, exit status,
/// times, exit reason, vCPUs, memory, serial log. `fail_pattern` and `fail_line` name the
/// `--fail-on` pattern and the guest's line that ended the run (exit reason "fail-pattern"),
/// and are null otherwise.
pub fn to_result(r: &RunReport, status: i32, cfg: &ConfigSummary, log: Option<&Path>) -> RunResult {
    let detail = match &r.outcome {
        crate::outcome::Outcome::Crash(s) | crate::outcome::Outcome::Error(s) => Some(s.clone()),
        _ => None,
    };
    let (fail_pattern, fail_line) = match &r.outcome {
        crate::outcome::Outcome::FailPattern { pattern, line } => {
            (Some(pattern.clone()), Some(line.clone()))
        }
        _ => (None, None),
    };
    RunResult {
        outcome: if status == 0 { "success" } else { "failure" }.into(),
        exit_status: status,
        exit_reason: r.outcome.name().into(),
        detail,
        expect: cfg.expect.clone(),
        fail_on: cfg.fail_on.clone(),
        fail_pattern,
        fail_line,
        time_to_marker_ms: r.to_expect.map(ms),
        time_to_first_run_ms: r.to_first_run.map(ms),
        total_ms: ms(r.total),
        vcpus: cfg.vcpus,
        mem_mib: cfg.mem_mib,
        kernel: cfg.kernel.clone(),
        serial_log: log.map(|p| p.display().to_string()),
        exits: r
            .exits
            .iter()
            .map(|e| Exits {
                pio: e[0],
                mmio: e[1],
                interrupted: e[2],
                other: e[3],
            })
            .collect(),
        test_counter: r.test_counter,
        rss_kib: r.rss_kib,
        guest_resident_kib: r.guest_resident_kib,
        vmm_overhead_kib: r.rss_kib.saturating_sub(r.guest_resident_kib),
        vmm_private_overhead_kib: r.anon_kib.saturating_sub(r.guest_resident_kib),
        console: r.console.to_json('_'),
        stuck_vcpus: r.stuck_vcpus.clone(),
        unassigned: Unassigned {
            pio_reads: r.unassigned_pio.0,
            pio_writes: r.unassigned_pio.1,
            mmio_reads: r.unassigned_mmio.0,
            mmio_writes: r.unassigned_mmio.1,
        },
    }
}

/// [`to_result`] as one line of JSON (the `--result-json` file's content).
pub fn to_json(r: &RunReport, status: i32, cfg: &ConfigSummary, log: Option<&Path>) -> String {
    serde_json::to_string(&to_result(r, status, cfg, log)).expect("plain data always serializes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::Outcome;
    use std::time::Duration;

    /// The JSON as the VMM built it before the shared types (a `json!` literal).
    fn old_to_json(r: &RunReport, status: i32, cfg: &ConfigSummary, log: Option<&Path>) -> String {
        let detail = match &r.outcome {
            Outcome::Crash(s) | Outcome::Error(s) => Some(s.clone()),
            _ => None,
        };
        let (fail_pattern, fail_line) = match &r.outcome {
            Outcome::FailPattern { pattern, line } => (Some(pattern.clone()), Some(line.clone())),
            _ => (None, None),
        };
        serde_json::json!({
            "outcome": if status == 0 { "success" } else { "failure" },
            "exit_status": status,
            "exit_reason": r.outcome.name(),
            "detail": detail,
            "expect": cfg.expect,
            "fail_on": cfg.fail_on,
            "fail_pattern": fail_pattern,
            "fail_line": fail_line,
            "time_to_marker_ms": r.to_expect.map(ms),
            "time_to_first_run_ms": r.to_first_run.map(ms),
            "total_ms": ms(r.total),
            "vcpus": cfg.vcpus,
            "mem_mib": cfg.mem_mib,
            "kernel": cfg.kernel,
            "serial_log": log.map(|p| p.display().to_string()),
            "exits": r.exits.iter().map(|e| serde_json::json!({"pio": e[0], "mmio": e[1], "interrupted": e[2], "other": e[3]})).collect::<Vec<_>>(),
            "test_counter": r.test_counter,
            "rss_kib": r.rss_kib,
            "guest_resident_kib": r.guest_resident_kib,
            "vmm_overhead_kib": r.rss_kib.saturating_sub(r.guest_resident_kib),
            "vmm_private_overhead_kib": r.anon_kib.saturating_sub(r.guest_resident_kib),
            "console": r.console.to_json('_'),
            "stuck_vcpus": r.stuck_vcpus,
            "unassigned": {"pio_reads": r.unassigned_pio.0, "pio_writes": r.unassigned_pio.1,
                            "mmio_reads": r.unassigned_mmio.0, "mmio_writes": r.unassigned_mmio.1},
        })
        .to_string()
    }

    #[test]
    fn same_bytes_as_before_the_shared_types() {
        let report = |outcome| RunReport {
            outcome,
            diagnostic: None,
            to_first_run: Some(Duration::from_micros(1234)),
            to_expect: None,
            total: Duration::from_millis(2500),
            test_counter: 7,
            exits: vec![[1, 2, 3, 4], [5, 6, 7, 8]],
            unassigned_pio: (9, 10),
            unassigned_mmio: (11, 12),
            rss_kib: 5000,
            guest_resident_kib: 3000,
            anon_kib: 3500,
            console: Default::default(),
            stuck_vcpus: vec![1],
        };
        let cfg = ConfigSummary {
            vcpus: 2,
            mem_mib: 256,
            kernel: "builtin".into(),
            expect: Some("done \"quoted\"".into()),
            fail_on: vec!["Oops".into()],
        };
        for (outcome, status) in [
            (Outcome::ExpectSeen, 0),
            (Outcome::Crash("emulation failure".into()), 1),
            (
                Outcome::FailPattern {
                    pattern: "Oops".into(),
                    line: "Oops: 0000".into(),
                },
                1,
            ),
        ] {
            let r = report(outcome);
            let log = Some(Path::new("/tmp/serial.log"));
            let new = to_json(&r, status, &cfg, log);
            assert_eq!(new, old_to_json(&r, status, &cfg, log));
            let back: RunResult = serde_json::from_str(&new).unwrap();
            assert_eq!(back.exits[1].interrupted, 7);
        }
    }
}
