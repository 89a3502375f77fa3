//! The machine-readable result of one VMM run, as `vmm --result-json FILE` writes it: plain
//! data, serde only, so that the VMM (which fills it in from its run report) and the report
//! tools (`benchreport`, which must not pull in KVM crates) share one definition instead of
//! one writing a `json!` literal and the others guessing its fields.
//!
//! Fields are declared in alphabetical order: that is the order the VMM has always written
//! them in (serde_json's `json!` object keeps its keys sorted), so the file's bytes did not
//! change when the VMM moved to these types.
#![warn(missing_docs)]

use serde::{Deserialize, Serialize};

/// One run: outcome, exit status, times, exit reason, vCPUs, memory, serial log, counters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    /// The console's counters (`query-console`'s fields, `_`-separated names).
    pub console: serde_json::Value,
    /// For a crash or an error: what happened.
    pub detail: Option<String>,
    /// Why the run ended (`expect`, `shutdown`, `timeout`, `fail-pattern`, ...).
    pub exit_reason: String,
    /// The VMM's exit status.
    pub exit_status: i32,
    /// Per vCPU: the exits it took.
    pub exits: Vec<Exits>,
    /// The `--expect` string.
    pub expect: Option<String>,
    /// The guest's line that matched a `--fail-on` pattern (exit reason `fail-pattern`).
    pub fail_line: Option<String>,
    /// The `--fail-on` patterns (with `--fail-on-kernel-errors`'s).
    pub fail_on: Vec<String>,
    /// The `--fail-on` pattern that matched.
    pub fail_pattern: Option<String>,
    /// Guest memory the guest touched, KiB.
    pub guest_resident_kib: u64,
    /// `builtin` or the kernel's path.
    pub kernel: String,
    /// Guest memory, MiB.
    pub mem_mib: u64,
    /// `success` (exit status 0) or `failure`.
    pub outcome: String,
    /// The VMM process's resident set, KiB.
    pub rss_kib: u64,
    /// The serial log's path (`--log`).
    pub serial_log: Option<String>,
    /// vCPUs that did not stop when asked.
    pub stuck_vcpus: Vec<usize>,
    /// The test device's counter.
    pub test_counter: u64,
    /// Milliseconds until the first vCPU ran.
    pub time_to_first_run_ms: Option<f64>,
    /// Milliseconds until the `--expect` marker.
    pub time_to_marker_ms: Option<f64>,
    /// Milliseconds, whole run.
    pub total_ms: f64,
    /// Guest accesses nobody answered.
    pub unassigned: Unassigned,
    /// vCPUs.
    pub vcpus: u8,
    /// `rss_kib` minus `guest_resident_kib`.
    pub vmm_overhead_kib: u64,
    /// Anonymous RSS minus `guest_resident_kib`: the VMM's own private memory.
    pub vmm_private_overhead_kib: u64,
}

/// One vCPU's exits by kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exits {
    /// Exits because a signal interrupted `KVM_RUN`.
    pub interrupted: u64,
    /// MMIO exits.
    pub mmio: u64,
    /// Other exits.
    pub other: u64,
    /// Port I/O exits.
    pub pio: u64,
}

/// Guest accesses to addresses with no device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unassigned {
    /// MMIO reads.
    pub mmio_reads: u64,
    /// MMIO writes.
    pub mmio_writes: u64,
    /// Port reads.
    pub pio_reads: u64,
    /// Port writes.
    pub pio_writes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_the_sorted_key_order() {
        let r = RunResult {
            console: serde_json::json!({"guest_bytes": 3}),
            detail: None,
            exit_reason: "expect".into(),
            exit_status: 0,
            exits: vec![Exits {
                interrupted: 1,
                mmio: 2,
                other: 3,
                pio: 4,
            }],
            expect: Some("ok".into()),
            fail_line: None,
            fail_on: vec![],
            fail_pattern: None,
            guest_resident_kib: 10,
            kernel: "builtin".into(),
            mem_mib: 64,
            outcome: "success".into(),
            rss_kib: 20,
            serial_log: None,
            stuck_vcpus: vec![],
            test_counter: 0,
            time_to_first_run_ms: Some(1.5),
            time_to_marker_ms: None,
            total_ms: 12.25,
            unassigned: Unassigned {
                mmio_reads: 0,
                mmio_writes: 0,
                pio_reads: 5,
                pio_writes: 6,
            },
            vcpus: 1,
            vmm_overhead_kib: 10,
            vmm_private_overhead_kib: 7,
        };
        let s = serde_json::to_string(&r).unwrap();
        // Same bytes as the value built with json! (whose object keys are sorted).
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v.to_string(), s);
        assert_eq!(serde_json::from_str::<RunResult>(&s).unwrap(), r);
    }
}
