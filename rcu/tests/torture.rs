//! Drives the `rcutorture` binary: a short stress run per update mode must pass, the
//! deliberately broken mode must be caught, and bad arguments must be usage errors.
#![cfg(not(loom))]

use std::process::{Command, Output};

fn rcutorture(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rcutorture"))
        .args(args)
        .output()
        .expect("cannot run rcutorture")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The value after `key` (e.g. `"n_reads:"`) on the first line that contains it.
fn field(text: &str, key: &str) -> u64 {
    let rest = text
        .lines()
        .find_map(|l| l.split_once(key).map(|(_, r)| r))
        .unwrap_or_else(|| panic!("no '{key}' in output:\n{text}"));
    rest.split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("bad '{key}' value in output:\n{text}"))
}

fn stress_passes(update: &str) {
    let out = rcutorture(&[
        "stress",
        "--duration",
        "2s",
        "--readers",
        "2",
        "--qsbr-readers",
        "2",
        "--update",
        update,
    ]);
    let text = stdout(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stress {update} failed:\n{text}"
    );
    assert_eq!(field(&text, "errors:"), 0, "{text}");
    assert_eq!(field(&text, "n_mberror:"), 0, "{text}");
    assert_eq!(field(&text, "n_stale:"), 0, "{text}");
    // Not vacuous: readers read and updaters updated.
    assert!(field(&text, "n_reads:") > 0, "{text}");
    assert!(field(&text, "n_updates:") > 0, "{text}");
    assert!(text.contains("result: PASS"), "{text}");
}

#[test]
fn stress_synchronize() {
    stress_passes("synchronize");
}

#[test]
fn stress_call_rcu() {
    stress_passes("call-rcu");
}

#[test]
fn stress_poll() {
    stress_passes("poll");
}

/// Reclaiming without a grace period must be caught: readers see poisoned elements.
#[test]
fn stress_catches_the_broken_mode() {
    let out = rcutorture(&["stress", "--duration", "1s", "--broken"]);
    let text = stdout(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "broken mode not caught:\n{text}"
    );
    assert!(field(&text, "errors:") > 0, "{text}");
    assert!(field(&text, "n_mberror:") > 0, "{text}");
    assert!(text.contains("result: FAIL"), "{text}");
}

#[test]
fn bad_arguments_are_usage_errors() {
    for args in [
        &[][..],
        &["bogus"],
        &["stress", "--duration", "10"],
        &["stress", "--duration", "ten seconds"],
        &["stress", "--duration", "-1s"],
        &["stress", "--duration"],
        &["stress", "--readers", "two"],
        &["stress", "--update", "fast"],
        &["stress", "--frobnicate"],
        &["stress", "--readers", "0", "--qsbr-readers", "0"],
        &["rperf", "--broken"],
        &["uperf", "--updaters", "0"],
    ] {
        let out = rcutorture(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("error:") && err.contains("usage:"),
            "{args:?}: {err}"
        );
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    let help = rcutorture(&["--help"]);
    assert_eq!(help.status.code(), Some(0));
    assert!(stdout(&help).contains("usage:"));
}

/// The perf modes run and print one result line with a sane number.
#[test]
fn perf_modes_report() {
    for (args, key) in [
        (
            &["rperf", "--duration", "200ms", "--readers", "1"][..],
            "ns/read",
        ),
        (&["rperf", "--duration", "200ms", "--qsbr"], "ns/read"),
        (
            &["uperf", "--duration=200ms", "--qsbr-readers", "1"],
            "ns/synchronize",
        ),
    ] {
        let out = rcutorture(args);
        let text = stdout(&out);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {text}");
        let line = text
            .lines()
            .find(|l| l.contains(key))
            .unwrap_or_else(|| panic!("{args:?}: no '{key}' in {text}"));
        let value: f64 = line
            .split_once(key)
            .and_then(|(before, _)| before.split_whitespace().last())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{args:?}: no number before '{key}' in {line}"));
        assert!(value.is_finite() && value > 0.0, "{line}");
    }
}
