//! Boot the built-in guest through the `vmm` binary, as a user or a CI job would.

use tests::{crc32, expect_error, require_kvm, run_vmm};

const T: &str = "--timeout=60s";

#[test]
fn smoke_boot_exits_zero_and_reports() {
    if !require_kvm() {
        return;
    }
    let r = run_vmm(&[T], None);
    r.check(r.status == 0, "smoke boot should exit 0");
    r.check(!r.lines("rvmm-guest: booted").is_empty(), "banner");
    r.check(!r.lines("workload smoke: ok").is_empty(), "workload ok");
    r.check(!r.lines("rvmm-guest: done").is_empty(), "done marker");
    r.check(r.lines("cpus: 1 of 1 online").len() == 1, "one cpu");
}

#[test]
fn two_cpus_both_report() {
    if !require_kvm() {
        return;
    }
    let r = run_vmm(&[T, "--cpus", "2"], None);
    r.check(r.status == 0, "exit 0");
    r.check(r.lines("cpu 0: online").len() == 1, "cpu 0 reports");
    r.check(r.lines("cpu 1: online").len() == 1, "cpu 1 reports");
    r.check(r.lines("cpus: 2 of 2 online").len() == 1, "summary");
}

/// Parses `e820: 0x...-0x... usable` lines and sums the usable bytes.
fn usable_bytes(lines: &[&str]) -> u64 {
    lines
        .iter()
        .filter(|l| l.ends_with("usable"))
        .map(|l| {
            let range = l.split_whitespace().nth(1).unwrap();
            let (a, b) = range.split_once('-').unwrap();
            let a = u64::from_str_radix(a.trim_start_matches("0x"), 16).unwrap();
            let b = u64::from_str_radix(b.trim_start_matches("0x"), 16).unwrap();
            b - a + 1
        })
        .sum()
}

#[test]
fn e820_agrees_with_mem() {
    if !require_kvm() {
        return;
    }
    for (arg, mib) in [("64M", 64u64), ("1G", 1024)] {
        let r = run_vmm(&[T, "--mem", arg], None);
        r.check(r.status == 0, "exit 0");
        let usable = usable_bytes(&r.lines("e820:"));
        // Everything but the EBDA..1 MiB hole (0x9fc00..0x100000) is usable RAM.
        let expect = (mib << 20) - (0x10_0000 - 0x9_fc00);
        r.check(
            usable == expect,
            &format!("--mem {arg}: usable {usable} != {expect}"),
        );
        let total = format!("mem: usable {} MiB", usable >> 20);
        r.check(r.lines(&total).len() == 1, &format!("expected '{total}'"));
    }
}

#[test]
fn initrd_arrives_intact() {
    if !require_kvm() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("vmm-initrd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("initrd.bin");
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let data: Vec<u8> = (0..300_001)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect();
    std::fs::write(&path, &data).unwrap();
    let r = run_vmm(&[T, "--initrd", path.to_str().unwrap()], None);
    let want = format!("initrd: {} bytes crc32 {:#010x}", data.len(), crc32(&data));
    r.check(r.status == 0, "exit 0");
    r.check(r.lines(&want).len() == 1, &format!("expected '{want}'"));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn io_storm_counts_every_write() {
    if !require_kvm() {
        return;
    }
    let n = 20_000;
    let r = run_vmm(
        &[T, "--cmdline", &format!("workload=io-storm count={n}")],
        None,
    );
    r.check(r.status == 0, "exit 0");
    let want = format!("io-storm: {n} writes to port 0x510, counter advanced by {n}");
    r.check(r.lines(&want).len() == 1, &format!("expected '{want}'"));
}

#[test]
fn mem_touch_covers_all_ram() {
    if !require_kvm() {
        return;
    }
    let r = run_vmm(
        &[T, "--mem", "128M", "--cmdline", "workload=mem-touch"],
        None,
    );
    r.check(r.status == 0, "exit 0");
    r.check(r.lines("workload mem-touch: ok").len() == 1, "mem-touch ok");
}

#[test]
fn guest_panic_gives_crash_status_and_diagnostic() {
    if !require_kvm() {
        return;
    }
    let r = run_vmm(&[T, "--cmdline", "workload=panic"], None);
    r.check(r.status == 4, "pvpanic -> status 4");
    r.check(r.stderr.contains("pvpanic"), "diagnostic names pvpanic");
    r.check(r.stderr.contains("rip"), "diagnostic shows registers");
}

#[test]
fn triple_fault_gives_its_status_and_diagnostic() {
    if !require_kvm() {
        return;
    }
    let r = run_vmm(&[T, "--cmdline", "workload=triple-fault"], None);
    r.check(r.status == 5, "triple fault -> status 5");
    r.check(
        r.stderr.contains("triple fault"),
        "diagnostic names the exit",
    );
    r.check(r.stderr.contains("rip"), "diagnostic shows registers");
}

#[test]
fn i8042_reset_exits_zero() {
    if !require_kvm() {
        return;
    }
    let r = run_vmm(
        &[T, "--cmdline", "workload=reset", "--result-json", "-"],
        None,
    );
    r.check(r.status == 0, "reset -> 0");
    r.check(
        r.stdout.contains(r#""exit_reason":"reset""#),
        "the i8042's 0xFE ends the run as a reset",
    );
}

#[test]
fn unassigned_port_and_mmio_accesses_are_harmless() {
    if !require_kvm() {
        return;
    }
    let r = run_vmm(&[T, "--cmdline", "workload=probe"], None);
    r.check(r.status == 0, "exit 0");
    r.check(
        r.lines("workload probe: ok").len() == 1,
        "all-ones everywhere",
    );
}

#[test]
fn expect_and_timeout_give_ci_statuses() {
    if !require_kvm() {
        return;
    }
    let r = run_vmm(&["--timeout=60s", "--expect", "workload smoke: ok"], None);
    r.check(r.status == 0, "marker seen -> 0");
    let r = run_vmm(&["--timeout=60s", "--expect", "never printed"], None);
    r.check(r.status == 3, "guest ended without the marker -> 3");
    let r = run_vmm(&["--timeout=300ms", "--cmdline", "workload=echo"], None);
    r.check(r.status == 3, "timeout -> 3");
}

#[test]
fn eight_vms_boot_at_once_in_ci_mode_with_json_results() {
    if !require_kvm() {
        return;
    }
    let ts: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(|| {
                run_vmm(
                    &[
                        "--timeout=120s",
                        "--expect",
                        "workload smoke: ok",
                        "--result-json",
                        "-",
                    ],
                    None,
                )
            })
        })
        .collect();
    for t in ts {
        let r = t.join().unwrap();
        r.check(r.status == 0, "each of eight parallel boots succeeds");
        // With --result-json -, standard output is exactly one JSON object.
        let json = r.stdout.trim();
        r.check(
            json.starts_with('{') && json.ends_with('}') && json.lines().count() == 1,
            "one JSON object",
        );
        for field in [
            r#""outcome":"success""#,
            r#""exit_status":0"#,
            r#""exit_reason":"expect-seen""#,
            r#""vcpus":1"#,
            r#""mem_mib":256"#,
            r#""time_to_marker_ms":"#,
            r#""total_ms":"#,
            r#""serial_log":null"#,
        ] {
            r.check(json.contains(field), &format!("JSON has {field}"));
        }
    }
}

/// The end-to-end lookup benchmark's device answers correctly with every translation design,
/// on two vCPUs at once (the guest checks every round's sum).
#[test]
fn lookup_bench_is_correct_with_every_design_on_two_cpus() {
    if !require_kvm() {
        return;
    }
    for design in ["rcu", "mutex", "rwlock", "vm-memory"] {
        let r = run_vmm(
            &[
                T,
                "--cpus",
                "2",
                "--ram-lookup",
                design,
                "--cmdline",
                "workload=lookup-bench count=1024 rounds=10",
            ],
            None,
        );
        r.check(r.status == 0, &format!("{design}: exit 0"));
        r.check(
            r.lines("workload lookup-bench: ok").len() == 1,
            &format!("{design}: every round's sum right"),
        );
        r.check(
            r.stdout.contains("errors 0"),
            &format!("{design}: no errors"),
        );
    }
}

/// `--append` adds words to the command line (the built-in guest prints the one it got), and
/// `--hugepages on` boots the same guest on 2 MiB-aligned, THP-advised RAM; bad values are
/// usage errors.
#[test]
fn append_and_hugepages_options() {
    if !require_kvm() {
        return;
    }
    let r = run_vmm(
        &[T, "--cmdline", "workload=smoke", "--append", "extra=1"],
        None,
    );
    r.check(r.status == 0, "exit 0");
    r.check(
        r.stdout
            .contains("rvmm-guest: booted (cmdline \"workload=smoke extra=1\")"),
        "the appended word reaches the guest",
    );
    for mem in ["256M", "1G"] {
        let r = run_vmm(&[T, "--hugepages", "on", "--mem", mem], None);
        r.check(r.status == 0, "--hugepages on boots");
        r.check(!r.lines("workload smoke: ok").is_empty(), "workload ok");
    }
    // A bad value is a usage error that names the choices.
    expect_error(&[T, "--hugepages", "maybe"], 2, "possible values: on, off");
}
