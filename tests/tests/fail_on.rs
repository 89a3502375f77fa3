//! `--fail-on PATTERN` and `--fail-on-kernel-errors`: a guest line containing a pattern ends
//! the run with status 7, wherever the serial output goes, and the JSON names the pattern
//! and the line. The built-in guest's output lines are in guest/README.md.

use serde_json::Value;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use tests::{expect_error, require_kvm, run_vmm, Run};

const FAIL_PATTERN: i32 = vmm::outcome::status::FAIL_PATTERN;

/// A fresh directory for one run's files.
fn scratch() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "vmm-fail-on-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs the built-in guest with `args` plus `--timeout` and `--result-json -`; returns the
/// run and its JSON object.
fn run_json(args: &[&str]) -> (Run, Value) {
    let mut all = vec!["--timeout=60s", "--result-json", "-"];
    all.extend_from_slice(args);
    let r = run_vmm(&all, None);
    let v: Value = serde_json::from_str(r.stdout.trim())
        .unwrap_or_else(|e| panic!("{args:?}: no JSON object ({e})\n{r:?}"));
    (r, v)
}

fn check_failed(r: &Run, v: &Value, pattern: &str, line_starts: &str) {
    r.check(r.status == FAIL_PATTERN, "status 7");
    r.check(v["exit_status"] == FAIL_PATTERN, "JSON exit_status 7");
    r.check(v["outcome"] == "failure", "JSON outcome failure");
    r.check(v["exit_reason"] == "fail-pattern", "JSON exit_reason");
    r.check(v["fail_pattern"] == pattern, "JSON fail_pattern");
    let line = v["fail_line"].as_str().unwrap_or_default();
    r.check(
        line.starts_with(line_starts) && line.contains(pattern),
        "JSON fail_line is the guest's whole line",
    );
    r.check(!line.ends_with('\r'), "no line end in fail_line");
    r.check(
        r.stderr.contains("--fail-on pattern") && r.stderr.contains(pattern),
        "stderr says which pattern",
    );
}

#[test]
fn a_line_the_guest_prints_fails_the_run_with_status_7() {
    if !require_kvm() {
        return;
    }
    // A part of the line, in the middle.
    let (r, v) = run_json(&["--fail-on", "of 1 onl"]);
    check_failed(&r, &v, "of 1 onl", "cpus: 1 of 1 online");
    r.check(v["fail_line"] == "cpus: 1 of 1 online", "the whole line");
    r.check(
        v["fail_on"] == serde_json::json!(["of 1 onl"]),
        "JSON fail_on",
    );

    // Several patterns: the first line to match decides, whatever the order given.
    let (r, v) = run_json(&[
        "--fail-on",
        "workload smoke: ok",
        "--fail-on",
        "mem: usable",
    ]);
    check_failed(&r, &v, "mem: usable", "mem: usable ");
}

#[test]
fn a_pattern_never_printed_changes_nothing() {
    if !require_kvm() {
        return;
    }
    let (r, v) = run_json(&["--fail-on", "never printed", "--fail-on-kernel-errors"]);
    r.check(r.status == 0, "smoke run still succeeds");
    r.check(v["exit_reason"] == "reset", "reset");
    r.check(
        v["fail_pattern"].is_null() && v["fail_line"].is_null(),
        "null fields",
    );
    r.check(
        v["fail_on"].as_array().map(Vec::len) == Some(7),
        "1 + 6 patterns",
    );
    // Text that spans two lines is not a match.
    let (r, v) = run_json(&["--fail-on", "okrvmm-guest: done"]);
    r.check(
        r.status == 0 && v["fail_pattern"].is_null(),
        "no match across lines",
    );
}

#[test]
fn the_scan_works_wherever_the_output_goes() {
    if !require_kvm() {
        return;
    }
    let dir = scratch();
    let log = dir.join("serial.log");
    let file = dir.join("serial.out");
    let file_arg = format!("file:{}", file.display());
    let cases: [&[&str]; 4] = [
        &["--serial", "none"],
        &["--serial", "none", "--log", log.to_str().unwrap()],
        &["--serial", &file_arg],
        &["--serial", "stdio"],
    ];
    for extra in cases {
        let mut args = vec!["--timeout=60s", "--fail-on", "workload smoke: ok"];
        args.extend_from_slice(extra);
        let r = run_vmm(&args, None);
        r.check(r.status == FAIL_PATTERN, &format!("{extra:?}: status 7"));
        if extra[1] == "stdio" {
            r.check(
                r.stdout.contains("workload smoke: ok"),
                "stdout has the line",
            );
        }
    }
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("workload smoke: ok\r\n"), "{logged}");
    assert!(
        !logged.contains("rvmm-guest: done"),
        "stopped at the line: {logged}"
    );
    let out = std::fs::read_to_string(&file).unwrap();
    assert!(out.contains("workload smoke: ok"), "{out}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn expect_and_fail_on_whichever_comes_first_decides() {
    if !require_kvm() {
        return;
    }
    // The cpus line comes before the workload line.
    let (r, v) = run_json(&[
        "--expect",
        "workload smoke: ok",
        "--fail-on",
        "cpus: 1 of 1",
    ]);
    check_failed(&r, &v, "cpus: 1 of 1", "cpus: 1 of 1");
    let (r, v) = run_json(&[
        "--expect",
        "cpus: 1 of 1",
        "--fail-on",
        "workload smoke: ok",
    ]);
    r.check(r.status == 0, "the --expect string came first: 0");
    r.check(v["exit_reason"] == "expect-seen", "expect-seen");
    r.check(v["fail_pattern"].is_null(), "no fail pattern");
    // A fail pattern and the --expect string in the same line: the earlier one decides.
    let (r, v) = run_json(&["--expect", ": ok", "--fail-on", "smoke:"]);
    check_failed(&r, &v, "smoke:", "workload smoke: ok");
    let (r, _) = run_json(&["--expect", "smoke:", "--fail-on", ": ok"]);
    r.check(r.status == 0, "expect earlier in the line: 0");
}

#[test]
fn a_fail_line_beats_the_crash_that_follows_it() {
    if !require_kvm() {
        return;
    }
    // workload=panic prints its panic line, then writes pvpanic (status 4 on its own).
    let (r, v) = run_json(&["--cmdline", "workload=panic"]);
    r.check(r.status == 4, "pvpanic alone: 4");
    r.check(v["fail_pattern"].is_null(), "no pattern");
    let (r, v) = run_json(&[
        "--cmdline",
        "workload=panic",
        "--fail-on",
        "rvmm-guest: panic:",
    ]);
    check_failed(&r, &v, "rvmm-guest: panic:", "rvmm-guest: panic:");
}

#[test]
fn kernel_error_patterns_are_switched_on_by_one_flag() {
    if !require_kvm() {
        return;
    }
    // The built-in guest echoes its command line in its banner: put each default pattern
    // there in turn.
    for p in vmm::outcome::KERNEL_ERROR_PATTERNS {
        let cmdline = format!("workload=smoke note={p}");
        let (r, v) = run_json(&["--cmdline", &cmdline, "--fail-on-kernel-errors"]);
        check_failed(&r, &v, p, "rvmm-guest: booted (cmdline \"");
        // Without the flag the same run succeeds.
        let (r, _) = run_json(&["--cmdline", &cmdline]);
        r.check(r.status == 0, "without --fail-on-kernel-errors: 0");
    }
    let (r, v) = run_json(&["--fail-on-kernel-errors"]);
    r.check(r.status == 0, "a clean smoke run prints none of them");
    r.check(v["fail_pattern"].is_null(), "no pattern");
}

#[test]
fn bad_patterns_are_usage_errors() {
    for (args, needle) in [
        (&["--fail-on", ""][..], "must not be empty"),
        (&["--fail-on"][..], "a value is required"),
        (&["--fail-on", "a\nb"][..], "line break"),
        (&["--fail-on-kernel-errors=yes"][..], "unexpected value"),
    ] {
        expect_error(args, 2, needle);
    }
}

#[test]
fn a_pattern_in_a_line_that_never_ends_still_fails_fast() {
    if !require_kvm() {
        return;
    }
    // workload=echo echoes each typed byte at once: typed without a newline, the line stays
    // unfinished; the run ends after a short grace with the line as printed so far.
    let r = run_vmm(
        &[
            "--timeout=60s",
            "--cmdline",
            "workload=echo",
            "--fail-on",
            "xyz",
            "--result-json",
            "-",
        ],
        Some(b"abc xyz def"),
    );
    r.check(r.status == FAIL_PATTERN, "status 7");
    r.check(
        r.took < std::time::Duration::from_secs(30),
        "long before the timeout",
    );
    let v: Value = serde_json::from_str(r.stdout.trim()).expect("JSON");
    r.check(v["fail_pattern"] == "xyz", "the pattern");
    let line = v["fail_line"].as_str().unwrap_or_default();
    r.check(line.starts_with("abc xyz"), "the line so far");
    r.check(
        r.stderr.contains("not finished"),
        "stderr says the line was unfinished",
    );
}
