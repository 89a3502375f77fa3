//! The machine-readable result of a run (`--result-json`).

use crate::kvm::vm::RunReport;
use serde_json::json;
use std::path::Path;

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

/// One JSON object: outcome, exit status, times, exit reason, vCPUs, memory, serial log.
/// `fail_pattern` and `fail_line` name the `--fail-on` pattern and the guest's line that
/// ended the run (exit reason "fail-pattern"), and are null otherwise.
pub fn to_json(r: &RunReport, status: i32, cfg: &ConfigSummary, log: Option<&Path>) -> String {
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
    let v = json!({
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
        "exits": r.exits.iter().map(|e| json!({"pio": e[0], "mmio": e[1], "interrupted": e[2], "other": e[3]})).collect::<Vec<_>>(),
        "test_counter": r.test_counter,
        "rss_kib": r.rss_kib,
        "guest_resident_kib": r.guest_resident_kib,
        "vmm_overhead_kib": r.rss_kib.saturating_sub(r.guest_resident_kib),
        "vmm_private_overhead_kib": r.anon_kib.saturating_sub(r.guest_resident_kib),
        "console": r.console.to_json('_'),
        "stuck_vcpus": r.stuck_vcpus,
        "unassigned": {"pio_reads": r.unassigned_pio.0, "pio_writes": r.unassigned_pio.1,
                        "mmio_reads": r.unassigned_mmio.0, "mmio_writes": r.unassigned_mmio.1},
    });
    v.to_string()
}
