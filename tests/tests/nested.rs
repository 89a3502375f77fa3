//! Every path of the VMM on a **real** KVM: Debian's cloud kernel with the project's
//! initramfs, and the built-in guest, run through the nested-KVM harness (`tests::nested`:
//! an L1 under QEMU's TCG that emulates SVM, or the host's own KVM where it has vmx/svm).
//!
//! The whole suite is one batch, so the L1 boots once: the first test to need it runs the
//! batch, the others wait for it and then check their own jobs. Nothing here skips: a
//! missing kernel or QEMU is fetched or installed by the harness, and when that fails every
//! test fails with the reason.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;
use tests::nested::{Batch, Harness, Job, JobResult, NestedError};

/// The lines a clean kernel log never has (also `vmm --fail-on-kernel-errors`'s set).
const BAD_LINES: &[&str] = &[
    "WARNING:",
    "Call Trace",
    "BUG:",
    "XSAVE consistency problem",
    "Unhandled",
    "Kernel panic",
];

/// (vCPUs, memory, expected MemTotal range in MiB) of the Linux boots.
const CONFIGS: &[(u8, &str, u64, u64)] = &[
    (1, "128M", 80, 128),
    (2, "128M", 80, 128),
    (2, "512M", 400, 512),
    (1, "2G", 1850, 2048),
    (2, "2G", 1850, 2048),
];

fn config_name(cpus: u8, mem: &str) -> String {
    format!("linux-{cpus}cpu-{mem}")
}

/// `$VMM` on the Linux guest with the default command line; `extra` goes last.
fn linux(cpus: u8, mem: &str, initrd: &str, extra: &str) -> String {
    format!(
        "\"$VMM\" --kernel \"$FILES/bzImage\" --initrd {initrd} --cpus {cpus} --mem {mem} \
         --timeout 90s --log guest.log --result-json result.json {extra}\n"
    )
}

/// An initrd with the guest's action set by an appended archive.
fn with_action(action: &str) -> String {
    format!("cat \"$FILES/initramfs.cpio.gz\" \"$FILES/action-{action}.cpio.gz\" > initrd\n")
}

/// A console session: `vmm` with stdin from a FIFO; waits for `ready`, types `line`, waits
/// for `answer`, then types `poweroff -f`.
fn console_session(cpus: u8, line: &str, answer: &str) -> String {
    let launch = format!(
        "{}{} < in > stdout.vmm 2> stderr.vmm &\npid=$!",
        with_action("shell"),
        linux(cpus, "256M", "initrd", "").trim_end()
    );
    format!(
        r#"mkfifo in
{launch}
exec 3> in
wait_for() {{ i=0; while ! grep -q "$1" stdout.vmm; do i=$((i+1)); [ $i -gt 600 ] && return 1; sleep 0.1; done; }}
wait_for "rvmm-linux: shell ready" || echo "no shell prompt"
sleep 1
echo '{line}' >&3
wait_for "{answer}" || echo "no answer"
echo 'poweroff -f' >&3
wait $pid
st=$?
exec 3>&-
cat stdout.vmm
exit $st
"#
    )
}

/// The built-in guest with `--control`, driven by `vmmctl`.
fn builtin_with_control(args: &str, cmdline: &str, client: &str) -> String {
    format!(
        r#""$VMM" {args} --timeout 100s --control ./sock --log guest.log --result-json result.json --cmdline "{cmdline}" > stdout.vmm 2> stderr.vmm &
pid=$!
{client}
wait $pid
st=$?
cat stdout.vmm
cat stderr.vmm >&2
exit $st
"#
    )
}

/// A Linux boot from a copy of the root image (`scripts/mkrootfs.sh`) as `--disk`
/// `disk_opts`, asking the root to be mounted `mode`, running the root image's `tasks`;
/// console to `NAME.out`, then `NAME status N`.
fn disk_boot(name: &str, cpus: u8, disk_opts: &str, mode: &str, tasks: &str) -> String {
    format!(
        "\"$VMM\" --kernel \"$FILES/bzImage\" --initrd \"$FILES/initramfs.cpio.gz\" --cpus {cpus} \
         --mem 256M --timeout 90s --fail-on-kernel-errors --disk disk.img{disk_opts} \
         --append 'root=/dev/vda {mode} rvmm.run={tasks} rvmm.token={DISK_TOKEN}' \
         --log {name}.log --result-json {name}.json > {name}.out 2> {name}.err\n\
         echo \"{name} status $?\"\n"
    )
}

/// What the disk jobs write in one boot and read back in the next.
const DISK_TOKEN: &str = "tok-4242";

fn jobs() -> Vec<Job> {
    let mut v = Vec::new();
    let t = Duration::from_secs;
    // The harness's own failure modes first (cheap).
    v.push(Job::new("hang", "echo started; sleep 1000").timeout(t(3)));
    for &(cpus, mem, _, _) in CONFIGS {
        v.push(Job::new(
            &config_name(cpus, mem),
            &linux(
                cpus,
                mem,
                "\"$FILES/initramfs.cpio.gz\"",
                "--fail-on-kernel-errors",
            ),
        ));
    }
    for cpus in [1u8, 2] {
        v.push(Job::new(
            &format!("console-{cpus}cpu"),
            &console_session(
                cpus,
                "echo answer-$((6*7)); grep ^0: /proc/tty/driver/serial",
                "answer-42",
            ),
        ));
    }
    v.push(Job::new(
        "reboot",
        &(with_action("reboot") + &linux(2, "256M", "initrd", "")),
    ));
    v.push(Job::new(
        "panic",
        &(with_action("panic") + &linux(1, "256M", "initrd", "")),
    ));
    v.push(Job::new(
        "reboot-triple-fault",
        &(with_action("reboot")
            + &linux(
                1,
                "256M",
                "initrd",
                "--cmdline 'console=ttyS0 reboot=t panic=-1'",
            )),
    ));
    v.push(Job::new(
        "no-init",
        &linux(
            1,
            "256M",
            "\"$FILES/initramfs.cpio.gz\"",
            "--cmdline 'console=ttyS0 rdinit=/no/such/init'",
        ),
    ));
    v.push(Job::new(
        "fail-on",
        &linux(
            1,
            "256M",
            "\"$FILES/initramfs.cpio.gz\"",
            "--fail-on 'cpus: '",
        ),
    ));
    // Booting from a virtio-blk disk: a write survives into the next boot (with 1, then 2
    // vCPUs); a read-only disk refuses writes even when the guest asks for rw.
    v.push(Job::new(
        "disk-persist",
        &format!(
            "cp \"$FILES/root.img\" disk.img\n{}{}echo \"host-side token lines: $(grep -c {DISK_TOKEN} disk.img)\"\n\
             cat boot1.out boot2.out\ncat boot1.err boot2.err >&2\n",
            disk_boot("boot1", 1, "", "rw", "info,write"),
            disk_boot("boot2", 2, "", "rw", "info,read"),
        ),
    ));
    v.push(Job::new(
        "disk-ro",
        &format!(
            "cp \"$FILES/root.img\" disk.img\n{}cat ro.out\ncat ro.err >&2\n",
            disk_boot("ro", 1, ",ro", "rw", "info,try-write"),
        ),
    ));
    // The built-in guest.
    let builtin = |extra: &str, cmdline: &str| {
        format!(
            "\"$VMM\" {extra} --timeout 60s --log guest.log --result-json result.json --cmdline '{cmdline}'\n"
        )
    };
    for (name, extra, cmdline) in [
        ("builtin-smoke", "", "workload=smoke"),
        ("builtin-smp", "--cpus 2", "workload=smoke"),
        ("builtin-smp-acpi", "--cpus 2", "workload=smoke cpus=acpi"),
        ("builtin-io-storm", "", "workload=io-storm count=10000"),
        ("builtin-triple-fault", "", "workload=triple-fault"),
    ] {
        v.push(Job::new(name, &builtin(extra, cmdline)));
    }
    v.push(Job::new(
        "builtin-hotplug",
        &builtin_with_control(
            "",
            "workload=hotplug cycles=5",
            r#""$VMMCTL" ./sock --wait 20 churn --name side --gpa 0xf0000000 --size 0x200000 --rate 200 > churn.json 2> churn.err &
cpid=$!
for i in 1 2 3 4 5; do
    "$VMMCTL" ./sock --wait 20 send ram-add "{\"name\": \"hot\", \"gpa\": 3758096384, \"size\": 2097152, \"pattern\": $((4660 + i))}" >> ctl.out || echo "ram-add $i failed"
    sleep 0.5
    "$VMMCTL" ./sock send ram-remove '{"name": "hot"}' >> ctl.out || echo "ram-remove $i failed"
    sleep 0.5
done
wait $cpid
echo "churn status $?""#,
        ),
    ));
    for design in ["rcu", "mutex", "rwlock", "vm-memory"] {
        v.push(Job::new(
            &format!("builtin-lookup-{design}"),
            &builtin_with_control(
                &format!("--cpus 2 --ram-lookup {design}"),
                "workload=lookup-bench count=1024 rounds=300",
                r#""$VMMCTL" ./sock --wait 20 churn --size 0x10000 --rate 1000 > churn.json 2> churn.err
echo "churn status $?""#,
            ),
        ));
    }
    v
}

fn run_suite() -> Result<Batch, String> {
    let mut h = Harness::new(tests::vmm_bin(), tests::vmmctl_bin());
    let guest = h.prepare().map_err(|e| e.to_string())?;
    let dir = std::env::temp_dir().join(format!("rvmm-nested-suite-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let mut overlays = Vec::new();
    for action in ["reboot", "panic", "shell"] {
        let p: PathBuf = dir.join(format!("action-{action}.cpio.gz"));
        let a = vmm::images::initramfs::action_overlay(action).map_err(|e| e.to_string())?;
        // Compressed: Linux finds a compressed archive at any offset after the first one, an
        // uncompressed one only at a 4-byte boundary.
        std::fs::write(&p, a.to_cpio_gz()).map_err(|e| e.to_string())?;
        overlays.push((p, format!("action-{action}.cpio.gz")));
    }
    let root = dir.join("root.img");
    let made = std::process::Command::new("bash")
        .arg(tests::nested::repo_dir().join("scripts/mkrootfs.sh"))
        .arg(&root)
        .arg("64")
        .status()
        .map_err(|e| format!("running scripts/mkrootfs.sh: {e}"))?;
    if !made.success() {
        return Err(format!(
            "scripts/mkrootfs.sh {} 64 failed ({made}); run it by hand to see why",
            root.display()
        ));
    }
    h.file(&guest.kernel, "bzImage")
        .file(&guest.initramfs, "initramfs.cpio.gz")
        .file(&root, "root.img");
    for (p, n) in &overlays {
        h.file(p, n);
    }
    let jobs = jobs();
    let r = h.run(&jobs).and_then(|mut b| {
        // A triple fault the job does not expect, once: QEMU 7.2's emulated SVM now and then
        // shut a nested guest down by itself (README, "real KVM"). Likewise a guest that
        // stalled until the VMM's own --timeout (status 3; no job expects it): seen with
        // 2-vCPU guests in about 1 of 12 jobs in some runs, the guest printing nothing more
        // while the VMM stayed responsive (not explained yet). When the guest's own
        // watchdog notices such a stall first, it prints "BUG: soft lockup", which
        // --fail-on-kernel-errors turns into status 7: the same stall, treated the same; and
        // a job whose script waits for the guest (the console sessions) can reach its own
        // deadline first (killed, TIMED OUT). The job runs again in a fresh L1, at most
        // RERUNS times (this stall hit one 2-vCPU job in 3 of 4 suite runs on 2026-12-07,
        // once twice in a row); a last failure stands, and every failed attempt is printed.
        let stalled = |r: &JobResult| {
            r.status == 3
                || (r.status == 7 && r.text("stderr").contains("BUG: soft lockup"))
                || (r.timed_out && !EXPECTS_TIMEOUT.contains(&r.name.as_str()))
        };
        // Up to RERUNS more attempts, each in a fresh L1, for the jobs still failing so.
        for attempt in 1..=RERUNS {
            let again: Vec<Job> = jobs
                .iter()
                .filter(|j| {
                    let r = b.job(&j.name);
                    (r.status == 5 && !EXPECTS_TRIPLE_FAULT.contains(&j.name.as_str()))
                        || stalled(r)
                })
                .cloned()
                .collect();
            if again.is_empty() {
                break;
            }
            for j in &again {
                let what = match b.job(&j.name).status {
                    _ if b.job(&j.name).timed_out => "the job's deadline (the guest stalled)",
                    5 => "an unexpected triple fault",
                    7 => "the guest's soft-lockup watchdog (the guest stalled)",
                    _ => "the VMM's --timeout (the guest stalled)",
                };
                eprintln!(
                    "nested suite: warning: {} ended in {what}; running it again in a fresh \
                     L1 (rerun {attempt} of at most {RERUNS}). The failed attempt:\n{}",
                    j.name,
                    b.job(&j.name).describe()
                );
            }
            let b2 = h.run(&again)?;
            for r in b2.jobs {
                if let Some(slot) = b.jobs.iter_mut().find(|x| x.name == r.name) {
                    *slot = r;
                }
            }
            b.l1_restarts.extend(b2.l1_restarts);
        }
        Ok(b)
    });
    let _ = std::fs::remove_dir_all(&dir);
    match r {
        Ok(b) => {
            eprintln!(
                "nested suite: {} jobs in {:.1} s ({})",
                b.jobs.len(),
                b.took.as_secs_f64(),
                b.mode
            );
            for r in &b.l1_restarts {
                eprintln!("nested suite: an L1 was replaced: {r}");
            }
            Ok(b)
        }
        Err(e @ NestedError::L1Failed { .. }) => {
            let mut s = e.to_string();
            if let NestedError::L1Failed { finished, .. } = &e {
                for j in finished {
                    s += &format!("\n{}", j.describe());
                }
            }
            Err(s)
        }
        Err(e) => Err(e.to_string()),
    }
}

/// How many more times a job that stalled (or hit an unexpected triple fault) runs, each in a
/// fresh L1.
const RERUNS: usize = 2;

/// The jobs that reach their deadline on purpose (the harness's own check).
const EXPECTS_TIMEOUT: &[&str] = &["hang"];

/// The jobs that end in a triple fault on purpose.
const EXPECTS_TRIPLE_FAULT: &[&str] = &["reboot-triple-fault", "builtin-triple-fault"];

fn suite() -> &'static Batch {
    static SUITE: OnceLock<Result<Batch, String>> = OnceLock::new();
    match SUITE.get_or_init(run_suite) {
        Ok(b) => b,
        Err(e) => panic!("the nested-KVM suite could not run: {e}"),
    }
}

fn json(j: &JobResult) -> serde_json::Value {
    let text = j.text("result.json");
    serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("result.json of {}: {e}\n{}", j.name, j.describe()))
}

fn check(j: &JobResult, cond: bool, what: &str) {
    assert!(cond, "{what}\n{}", j.describe());
}

/// The guest's console (stdout, or the session's copy of it).
fn console(j: &JobResult) -> String {
    j.stdout()
}

fn line_value<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    text.lines()
        .map(|l| l.trim_end_matches('\r'))
        .find_map(|l| l.strip_prefix(prefix))
        .map(str::trim)
}

/// A `/proc/tty/driver/serial` field such as `tx:123`.
fn serial_field(line: &str, field: &str) -> Option<u64> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(field))
        .and_then(|v| v.parse().ok())
}

fn clean(j: &JobResult, text: &str) {
    for bad in BAD_LINES {
        let hit = text.lines().find(|l| l.contains(bad));
        check(
            j,
            hit.is_none(),
            &format!("the guest log has a `{bad}` line: {hit:?}"),
        );
    }
}

#[test]
fn linux_boots_prints_every_init_line_and_powers_off_in_every_configuration() {
    let b = suite();
    for &(cpus, mem, lo, hi) in CONFIGS {
        let j = b.job(&config_name(cpus, mem));
        check(j, j.status == 0 && !j.timed_out, "exit status 0");
        let v = json(j);
        check(j, v["exit_reason"] == "power-off", "outcome power-off");
        let log = j.text("guest.log");
        let out = console(j);
        for text in [&out, &log] {
            for line in [
                vmm::images::initramfs::MARKER,
                "uptime: ",
                "kernel: ",
                "cpus: ",
                "MemTotal:",
                "serial-irq: ",
                "serial-port: ",
                "rvmm-linux: action poweroff",
            ] {
                check(
                    j,
                    text.lines().any(|l| l.starts_with(line)),
                    &format!("`{line}` on the console and in --log"),
                );
            }
        }
        let got: u64 = line_value(&out, "cpus:").unwrap().parse().unwrap();
        check(
            j,
            got == cpus as u64,
            &format!("the guest sees {cpus} CPUs"),
        );
        let kb: u64 = line_value(&out, "MemTotal:")
            .unwrap()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .unwrap();
        check(
            j,
            (lo * 1024..=hi * 1024).contains(&kb),
            &format!("MemTotal {kb} kB within {lo}..{hi} MiB for --mem {mem}"),
        );
    }
}

#[test]
fn serial_transmit_and_receive_interrupts_flow_with_one_and_two_vcpus() {
    let b = suite();
    for &(cpus, mem, _, _) in CONFIGS {
        let j = b.job(&config_name(cpus, mem));
        let out = console(j);
        let irq = line_value(&out, "serial-irq:").unwrap_or("");
        // "4: 12 0 IO-APIC 4-edge ttyS0": the counts of every CPU.
        let count: u64 = irq
            .split_whitespace()
            .skip(1)
            .take(cpus as usize)
            .filter_map(|w| w.parse::<u64>().ok())
            .sum();
        check(
            j,
            irq.contains("ttyS0") && count > 0,
            "the serial port's interrupt line in /proc/interrupts counts interrupts",
        );
        let port = line_value(&out, "serial-port:").unwrap_or("");
        check(
            j,
            serial_field(port, "tx:").unwrap_or(0) > 0,
            "ttyS0 transmitted through the tty layer",
        );
    }
    // Receive: the console sessions typed a line; the port counted what it received.
    for cpus in [1, 2] {
        let j = b.job(&format!("console-{cpus}cpu"));
        check(j, j.status == 0, "console session ends with status 0");
        let out = console(j);
        let rx = out
            .lines()
            .filter(|l| l.starts_with("0: uart:16550A"))
            .filter_map(|l| serial_field(l, "rx:"))
            .max()
            .unwrap_or(0);
        check(
            j,
            rx > 0,
            "ttyS0 received the typed line (rx > 0 after typing)",
        );
    }
}

#[test]
fn console_input_reaches_a_guest_shell_and_its_answer_comes_back() {
    let b = suite();
    for cpus in [1, 2] {
        let j = b.job(&format!("console-{cpus}cpu"));
        let out = console(j);
        check(
            j,
            out.contains("rvmm-linux: shell ready"),
            "the shell started",
        );
        check(
            j,
            out.lines().any(|l| l.trim_end_matches('\r') == "answer-42"),
            "echo $((6*7)) typed on stdin answered 42",
        );
        check(j, j.status == 0, "poweroff from the shell: status 0");
        check(
            j,
            json(j)["exit_reason"] == "power-off",
            "outcome power-off",
        );
    }
}

#[test]
fn guest_reboot_is_a_reset_with_status_0_and_triple_fault_stays_a_failure() {
    let b = suite();
    let j = b.job("reboot");
    check(
        j,
        j.status == 0,
        "a reboot with the default command line: status 0",
    );
    check(j, json(j)["exit_reason"] == "reset", "outcome reset");
    check(
        j,
        console(j).contains("rvmm-linux: action reboot"),
        "the guest rebooted on purpose",
    );
    let j = b.job("reboot-triple-fault");
    check(j, j.status == 5, "reboot=t is a triple fault: status 5");
    check(
        j,
        json(j)["exit_reason"] == "triple-fault",
        "outcome triple-fault",
    );
    let j = b.job("builtin-triple-fault");
    check(
        j,
        j.status == 5,
        "the built-in guest's triple fault: status 5",
    );
    check(j, json(j)["outcome"] == "failure", "a failure");
}

#[test]
fn guest_kernel_panic_ends_with_the_panic_status() {
    let b = suite();
    let j = b.job("panic");
    check(j, j.status == 4, "a kernel panic: status 4");
    check(
        j,
        json(j)["exit_reason"] == "guest-panic",
        "outcome guest-panic",
    );
    check(
        j,
        j.text("guest.log").contains("Kernel panic"),
        "the panic is in the log",
    );
}

#[test]
fn kernel_logs_are_clean_in_every_configuration() {
    let b = suite();
    for &(cpus, mem, _, _) in CONFIGS {
        let j = b.job(&config_name(cpus, mem));
        clean(j, &j.text("guest.log"));
    }
    for name in ["console-1cpu", "console-2cpu", "reboot"] {
        let j = b.job(name);
        clean(j, &j.text("guest.log"));
    }
}

#[test]
fn fail_on_ends_the_vm_at_the_pattern_and_names_it() {
    let b = suite();
    let j = b.job("fail-on");
    let v = json(j);
    check(j, j.status == 7, "--fail-on: status 7");
    check(
        j,
        v["exit_reason"] == "fail-pattern",
        "outcome fail-pattern",
    );
    check(
        j,
        v["fail_pattern"] == "cpus: ",
        "the JSON names the pattern",
    );
    check(
        j,
        v["fail_line"]
            .as_str()
            .is_some_and(|l| l.starts_with("cpus: ")),
        "the JSON names the line",
    );
}

#[test]
fn builtin_guest_paths_run_on_real_kvm() {
    let b = suite();
    for (name, want) in [
        ("builtin-smoke", "workload smoke: ok"),
        ("builtin-smp", "cpus: 2 of 2 online"),
        ("builtin-smp-acpi", "cpus: 2 of 2 online"),
        ("builtin-io-storm", "workload io-storm: ok"),
    ] {
        let j = b.job(name);
        check(j, j.status == 0, "status 0");
        check(j, j.stdout().contains(want), &format!("`{want}`"));
        check(j, j.text("guest.log").contains(want), "the same in --log");
    }
    let j = b.job("builtin-io-storm");
    check(
        j,
        json(j)["test_counter"] == 10000,
        "10000 port writes counted",
    );
}

#[test]
fn builtin_hotplug_under_the_control_socket_and_vmmctl_churn() {
    let b = suite();
    let j = b.job("builtin-hotplug");
    let out = j.stdout();
    check(j, j.status == 0, "status 0");
    check(
        j,
        out.contains("workload hotplug: ok (5 cycles"),
        "5 RAM cycles seen by the guest",
    );
    check(
        j,
        out.contains("churn status 0"),
        "the churn ran without a failed pair",
    );
    check(
        j,
        !out.contains("failed"),
        "every ram-add and ram-remove succeeded",
    );
    let churn: serde_json::Value =
        serde_json::from_str(j.text("churn.json").trim()).unwrap_or_default();
    check(
        j,
        churn["pairs"].as_u64().unwrap_or(0) > 0,
        "the churn added and removed blocks",
    );
}

#[test]
fn builtin_lookup_bench_in_every_design_under_the_ram_writer() {
    let b = suite();
    for design in ["rcu", "mutex", "rwlock", "vm-memory"] {
        let j = b.job(&format!("builtin-lookup-{design}"));
        let out = j.stdout();
        check(j, j.status == 0, "status 0");
        check(
            j,
            out.contains("workload lookup-bench: ok"),
            "lookup-bench ok",
        );
        check(j, out.contains("errors 0"), "no lookup errors");
        check(j, out.contains("churn status 0"), "the writer ran");
    }
}

#[test]
fn a_hanging_job_is_killed_at_its_deadline_and_reported() {
    let b = suite();
    let j = b.job("hang");
    check(j, j.timed_out, "marked timed out");
    check(j, j.status != 0, "a failing status");
    check(j, j.stdout().contains("started"), "its output came back");
    check(
        j,
        j.describe().contains("TIMED OUT"),
        "the report says it timed out",
    );
}

#[test]
fn a_kernel_that_does_not_boot_is_reported_with_status_and_log_tail() {
    let b = suite();
    let j = b.job("no-init");
    check(j, j.status != 0, "a failing status");
    let d = j.describe();
    check(
        j,
        d.contains(&format!("status {}", j.status)) && d.contains("No working init found")
            || d.contains("Kernel panic"),
        "the report has vmm's status and the log's tail",
    );
}

/// The console lines of a disk boot that start with `prefix`.
fn disk_lines<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    text.lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| l.starts_with(prefix))
        .collect()
}

#[test]
fn linux_boots_from_a_virtio_disk_and_a_write_survives_into_the_next_boot() {
    let j = suite().job("disk-persist");
    check(j, j.status == 0 && !j.timed_out, "exit status 0");
    let out = console(j);
    for boot in ["boot1", "boot2"] {
        check(
            j,
            out.contains(&format!("{boot} status 0")),
            &format!("{boot}: status 0"),
        );
        let v: serde_json::Value = serde_json::from_str(j.text(&format!("{boot}.json")).trim())
            .unwrap_or_else(|e| panic!("{boot}.json: {e}\n{}", j.describe()));
        check(
            j,
            v["exit_reason"] == "power-off",
            &format!("{boot}: power-off"),
        );
        clean(j, &j.text(&format!("{boot}.log")));
    }
    // Both boots mounted the disk read-write and ran the disk's own init.
    check(
        j,
        disk_lines(&out, "RVMM-ROOT-MOUNTED /dev/vda rw").len() == 2,
        "the root mounted rw twice",
    );
    check(
        j,
        disk_lines(&out, "RVMM-DISK-INIT").len() == 2,
        "the disk's init ran twice",
    );
    for cpus in [1, 2] {
        check(
            j,
            out.lines().any(|l| l.contains(&format!("cpus {cpus}"))),
            &format!("a boot with {cpus} vCPU(s)"),
        );
    }
    check(
        j,
        disk_lines(&out, &format!("RVMM-WROTE {DISK_TOKEN}")).len() == 1,
        "boot 1 wrote the token",
    );
    check(
        j,
        disk_lines(&out, &format!("RVMM-READ {DISK_TOKEN}")).len() == 1,
        "boot 2 read it back",
    );
    check(
        j,
        line_value(&out, "host-side token lines:").is_some_and(|n| n != "0"),
        "the image file holds the token after the VMM exited (the guest's sync was flushed)",
    );
    check(
        j,
        disk_lines(&out, "RVMM-TASK-FAILED").is_empty(),
        "no task failed",
    );
}

#[test]
fn a_read_only_disk_refuses_writes_and_the_vmm_stays_up() {
    let j = suite().job("disk-ro");
    check(j, j.status == 0 && !j.timed_out, "exit status 0");
    let out = console(j);
    check(
        j,
        out.contains("ro status 0"),
        "the VMM ran to the guest's power-off",
    );
    let v: serde_json::Value = serde_json::from_str(j.text("ro.json").trim())
        .unwrap_or_else(|e| panic!("ro.json: {e}\n{}", j.describe()));
    check(j, v["exit_reason"] == "power-off", "power-off");
    // The guest asked for rw; the device says read-only (VIRTIO_BLK_F_RO), so the kernel
    // mounts it ro and the write fails with EROFS.
    check(
        j,
        disk_lines(&out, "RVMM-ROOT-MOUNTED /dev/vda ro").len() == 1,
        "mounted ro although rw was asked",
    );
    let refused = disk_lines(&out, "RVMM-WRITE-REFUSED");
    check(
        j,
        refused.len() == 1 && refused[0].contains("Read-only file system"),
        "the write is refused with EROFS",
    );
    clean(j, &j.text("ro.log"));
}
