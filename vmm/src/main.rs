//! The `vmm` command: boot a guest on KVM.

use anyhow::Context;
use clap::Parser;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use vmm::kvm::vm::{SerialMode, Vm, VmConfig};
use vmm::outcome::status;
use vmm::seccomp::{self, ThreadKind};
use vmm::x86_64::boot::{BootConfig, KernelSource};

/// The command line a Linux `--kernel` gets without `--cmdline`:
/// - `reboot=k`: `reboot` resets through the i8042's 0xFE (outcome "reset"); the default,
///   ACPI's RESET_REG, points at the same port, but `k` does not depend on ACPI. (`reboot=t`,
///   the old default, ends in a triple fault, which is reported as a failure.)
/// - no `panic=`: a panicking kernel prints its report and spins instead of rebooting, and the
///   VMM ends the run with outcome "guest-panic" at the report's last line (Debian's cloud
///   kernel has its ACPI pvpanic driver only as a module, `CONFIG_PVPANIC_MMIO=m`).
/// - `8250.nr_uarts=1`: the one UART; Linux would otherwise probe three absent legacy ports.
///
/// Power-off needs nothing here: the DSDT's `\_S5` and the FADT's sleep registers.
const LINUX_CMDLINE: &str = "console=ttyS0 reboot=k 8250.nr_uarts=1";

/// What `ram-add` may add beyond `--mem` unless `--max-memory` says otherwise.
const DEFAULT_HOTPLUG_MEMORY: u64 = 256 << 20;

const AFTER_HELP: &str = "\
Exit status:
  0  the guest reset (outcome reset) or powered off (outcome power-off);
     with --expect: the string appeared in time
  1  the VMM failed (set-up or KVM error)
  2  bad usage
  3  --timeout passed first; with --expect: the guest stopped before the string appeared
  4  the guest crashed: a panic (pvpanic, or a Linux kernel's \"Kernel panic - not
     syncing\" console line), a KVM internal/emulation error, a failed entry
  5  a vCPU triple-faulted (Linux's reboot=t reset also ends this way)
  6  stopped by the user (SIGINT, SIGTERM, Ctrl-A x)
  7  a line of guest output contained a --fail-on pattern (before any --expect string)

A Linux --kernel gets, unless --cmdline says otherwise (--append adds to either):
  console=ttyS0 reboot=k 8250.nr_uarts=1
(reboot through the i8042, power-off through ACPI S5, no panic= so that a panicking
kernel never looks like a reset; the VMM recognizes its panic line)

With no --kernel the built-in test guest boots; its command line picks a workload:
  workload=smoke|io-storm count=N|mem-touch|panic|fault|triple-fault|reset|echo|probe
           |flood count=N
           |hotplug cycles=N|lookup-bench count=N rounds=R   (see guest/README.md)
`vmmctl SOCKET send COMMAND` talks to --control SOCKET.";

/// Boot a guest on KVM. Every shared structure of the VMM is read through RCU.
#[derive(Parser, Debug)]
#[command(name = "vmm", version, after_help = AFTER_HELP)]
struct Cli {
    /// A Linux bzImage to boot (default: the built-in test guest).
    #[arg(long)]
    kernel: Option<PathBuf>,
    /// An initial ramdisk.
    #[arg(long)]
    initrd: Option<PathBuf>,
    /// The kernel command line.
    #[arg(long)]
    cmdline: Option<String>,
    /// Words appended to the kernel command line (the default one or --cmdline's), e.g.
    /// `--append quiet`.
    #[arg(long, value_name = "STR", allow_hyphen_values = true)]
    append: Option<String>,
    /// Back guest RAM with transparent huge pages (where the host's THP is `always` or
    /// `madvise`): fewer faults while the guest first touches memory.
    #[arg(long, value_enum, default_value = "off", value_name = "on|off")]
    hugepages: Toggle,
    /// Guest memory, e.g. 256M, 1G (suffixes K, M, G; plain numbers are MiB).
    #[arg(long, default_value = "256M", value_parser = parse_size)]
    mem: u64,
    /// Number of vCPUs.
    #[arg(long, default_value_t = 1)]
    cpus: u64,
    /// Where guest serial output goes: stdio, file:PATH, or none.
    #[arg(long, default_value = "stdio", value_parser = parse_serial)]
    serial: SerialMode,
    /// Stop after this long, e.g. 10s, 500ms, 2m.
    #[arg(long, value_parser = parse_duration)]
    timeout: Option<Duration>,
    /// Stop with success as soon as this string appears on the serial port.
    #[arg(long)]
    expect: Option<String>,
    /// Stop with failure (status 7) as soon as a line of guest serial output contains
    /// PATTERN (a plain substring; repeatable; wherever the output goes). With --expect,
    /// whichever appears first decides.
    #[arg(long, value_name = "PATTERN", value_parser = parse_pattern)]
    fail_on: Vec<String>,
    /// Add the kernel-error patterns to --fail-on: "Kernel panic", "BUG:", "WARNING:",
    /// "Call Trace", "XSAVE consistency problem", "Unhandled".
    #[arg(long)]
    fail_on_kernel_errors: bool,
    /// Also write guest serial output to this file.
    #[arg(long)]
    log: Option<PathBuf>,
    /// At most this much guest output goes to --log and to --serial file:PATH, e.g. 64M,
    /// 512K (suffixes K, M, G; plain numbers are MiB; "none" for no limit). At the limit the
    /// VMM warns once, ends the file with a line saying so and writes no more to it; the
    /// --expect and --fail-on scans go on. Output to standard output is never limited, but a
    /// reader that does not keep up loses output (counted in --result-json's console.dropped_bytes
    /// and in the control socket's query-console) instead of stopping the guest.
    #[arg(long, value_name = "SIZE", default_value = "64M", value_parser = parse_limit)]
    log_limit: Limit,
    /// Write one JSON object describing the run to PATH ("-": standard output, in which case
    /// serial output goes only to --log).
    #[arg(long, value_name = "PATH")]
    result_json: Option<PathBuf>,
    /// How the lookup device (the memory-lookup benchmark) translates guest addresses:
    /// rcu, mutex, rwlock or vm-memory.
    #[arg(long, default_value = "rcu")]
    ram_lookup: vmm::bench::lookup::LookupDesign,
    /// Serve the JSON control socket (QMP-like: query-status, pause, ram-add, ...) at PATH.
    #[arg(long, value_name = "PATH")]
    control: Option<PathBuf>,
    /// The most guest RAM, boot RAM and control-socket `ram-add` blocks together (which go
    /// only in the hot-plug window 0xe0000000-0xfebfffff). Default: --mem plus 256M.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    max_memory: Option<u64>,
    /// A raw disk image the guest sees as a virtio-blk disk (`/dev/vda`, then `/dev/vdb`,
    /// ... in order; repeatable). `PATH,ro` makes it read-only. The image is opened once and
    /// locked, so two VMMs cannot write one image.
    #[arg(long = "disk", value_name = "PATH[,ro]")]
    disks: Vec<vmm::kvm::virtio::DiskConfig>,
    /// Also announce the --disk devices on the kernel command line
    /// (`virtio_mmio.device=4K@0xc0000000:16`), for kernels built with
    /// CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES and no ACPI. The DSDT announces them to every ACPI
    /// kernel (Debian's cloud kernel has no command-line form).
    #[arg(long)]
    virtio_cmdline: bool,
    /// Run without the per-thread seccomp filters. For debugging only (for example under
    /// `strace -f`, to find a system call a filter lacks): without them a VMM thread that a
    /// guest took over could make any system call. Says so on stderr.
    #[arg(long)]
    no_seccomp: bool,
}

fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mul) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        None => (s, 1u64 << 20),
        Some((0, _)) => return Err(format!("'{s}' is not a size: use e.g. 256M or 1G")),
        Some((i, _)) => {
            let mul = match s[i..].to_ascii_uppercase().as_str() {
                "K" | "KB" | "KIB" => 1u64 << 10,
                "M" | "MB" | "MIB" => 1 << 20,
                "G" | "GB" | "GIB" => 1 << 30,
                other => return Err(format!("unknown size suffix '{other}': use K, M or G")),
            };
            (&s[..i], mul)
        }
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a size: use e.g. 256M or 1G"))?;
    n.checked_mul(mul)
        .ok_or_else(|| format!("'{s}' is too large"))
}

/// `--log-limit`: a size, or no limit.
#[derive(Clone, Copy, Debug)]
struct Limit(Option<u64>);

fn parse_limit(s: &str) -> Result<Limit, String> {
    if s.trim().eq_ignore_ascii_case("none") {
        return Ok(Limit(None));
    }
    match parse_size(s)? {
        0 => Err("a --log-limit of 0 would write nothing: give a size, or \"none\"".into()),
        n => Ok(Limit(Some(n))),
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_digit() || *c == '.'))
        .map_or(s.len(), |(i, _)| i);
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a duration: use e.g. 10s, 500ms or 2m"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        other => {
            return Err(format!(
                "unknown duration unit '{other}': use ms, s, m or h"
            ))
        }
    };
    if !secs.is_finite() || secs <= 0.0 || secs > 1e9 {
        return Err(format!("'{s}' is not a usable duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// An on/off option.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Toggle {
    On,
    Off,
}

fn parse_pattern(s: &str) -> Result<String, String> {
    if s.is_empty() {
        Err("a --fail-on pattern must not be empty (it would match every line)".into())
    } else if s.contains(['\n', '\r']) {
        Err("a --fail-on pattern is matched within one line: it cannot contain a line break".into())
    } else {
        Ok(s.to_string())
    }
}

/// The --fail-on patterns in effect: the ones given, then the kernel-error set if asked for
/// (each pattern once).
fn fail_patterns(cli: &Cli) -> Vec<String> {
    let mut all = cli.fail_on.clone();
    if cli.fail_on_kernel_errors {
        all.extend(vmm::outcome::KERNEL_ERROR_PATTERNS.map(String::from));
    }
    let mut seen = std::collections::HashSet::new();
    all.retain(|p| seen.insert(p.clone()));
    all
}

fn parse_serial(s: &str) -> Result<SerialMode, String> {
    match s {
        "stdio" => Ok(SerialMode::Stdio),
        "none" => Ok(SerialMode::None),
        _ => match s.strip_prefix("file:") {
            Some(p) if !p.is_empty() => Ok(SerialMode::File(PathBuf::from(p))),
            _ => Err(format!("'{s}': use stdio, file:PATH or none")),
        },
    }
}

fn main() {
    let process_start = std::time::Instant::now();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    let code = match run(cli, process_start) {
        Ok(code) => code,
        Err(e) => {
            // Print the chain, skipping causes that the message above already quotes.
            let mut msg = String::new();
            for cause in e.chain() {
                let c = cause.to_string();
                if !msg.contains(&c) {
                    if !msg.is_empty() {
                        msg.push_str(": ");
                    }
                    msg.push_str(&c);
                }
            }
            eprintln!("vmm: error: {msg}");
            status::ERROR
        }
    };
    std::process::exit(code);
}

fn run(cli: Cli, process_start: std::time::Instant) -> anyhow::Result<i32> {
    let json_to_stdout = cli.result_json.as_deref() == Some(std::path::Path::new("-"));
    let cfg = vm_config(&cli, process_start, json_to_stdout);
    let max_memory = check_limits(&cli)?;
    let cfg_summary = config_summary(&cfg);
    let external = vmm::kvm::vm::is_external(&cfg.boot.kernel);
    let filters = seccomp_filters(&cli)?;
    // SIGINT/SIGTERM are blocked in every thread (the vCPU threads inherit the mask) and
    // arrive through a signalfd on the main loop.
    iohandler::block_termination_signals().context("blocking SIGINT/SIGTERM")?;
    let bql = iohandler::Bql::new();
    let rcu = match &filters {
        Some(f) => confined_rcu_domain(&bql, f.clone())?,
        None => iohandler::rcu_domain(&bql),
    };
    let mut main_loop =
        iohandler::MainLoop::with_domain(bql, rcu.clone()).context("creating the main loop")?;
    let h = main_loop.handle();

    let timeout = cfg.timeout;
    let serial_in = cfg.serial == SerialMode::Stdio || json_to_stdout;
    let vm = Vm::new_in(cfg, rcu).context("setting up the VM")?;
    if external {
        if let Some(w) = vmm::kvm::pvm::linux_warning() {
            eprintln!("vmm: warning: {w}");
        }
    }
    let serial = vm.serial().clone();
    let tty = vmm::frontend::term::stdin_is_tty();
    let _raw = if serial_in && tty {
        vmm::frontend::term::RawTerminal::enter()
    } else {
        None
    };
    // Guest output goes out on the main loop: a reader that does not keep up never holds a
    // vCPU (or the VMM).
    vm.shared
        .attach_loop(&h)
        .context("draining the console on the main loop")?;
    // Each vCPU thread installs its filter before its first KVM_RUN; that filter lets it
    // write(2) to the descriptors known only now.
    if let Some(f) = &filters {
        f.set_vcpu_writes(&vm.shared.vcpu_write_fds())?;
    }
    let running = vm.start_confined(filters.clone());
    let shared = running.shared().clone();
    let front = Frontends::attach(&cli, &h, &shared, max_memory, timeout)?;
    let _stdin = if serial_in {
        vmm::frontend::console::attach_stdin(&h, serial, shared.clone(), tty)
    } else {
        None
    };
    // Set-up is over: the main thread takes its filter before the loop's first round.
    if let Some(f) = &filters {
        f.install(ThreadKind::MainLoop)
            .context("confining the main thread")?;
    }
    main_loop.run().context("running the main loop")?;
    // The run's end event goes out from here, not from the vCPU thread that ended the run
    // (its filter has no sendto).
    if let Some(c) = &front.control {
        c.send_end_event();
    }
    let report = running.wait();
    drop(_stdin);
    drop(_raw);
    if let Some(d) = &report.diagnostic {
        eprintln!("vmm: {d}");
    }
    log::info!("{report:?}");
    let status = report.outcome.exit_status(cli.expect.is_some());
    if let Some(path) = &cli.result_json {
        let json = vmm::report::to_json(&report, status, &cfg_summary, cli.log.as_deref());
        write_result_json(path, &json, json_to_stdout)?;
    }
    Ok(status)
}

/// The VM's configuration from the command line.
fn vm_config(cli: &Cli, process_start: std::time::Instant, json_to_stdout: bool) -> VmConfig {
    let kernel = match &cli.kernel {
        Some(p) => KernelSource::File(p.clone()),
        None => KernelSource::Builtin,
    };
    let cmdline = cli.cmdline.clone().unwrap_or_else(|| match kernel {
        KernelSource::Builtin => "workload=smoke".to_string(),
        KernelSource::File(_) => LINUX_CMDLINE.to_string(),
    });
    let cmdline = match cli.append.as_deref().map(str::trim) {
        Some(extra) if !extra.is_empty() => format!("{cmdline} {extra}"),
        _ => cmdline,
    };
    // Too many disks is reported by the VM's set-up; here they just get no words.
    let cmdline = match vmm::kvm::virtio::slots(cli.disks.len()) {
        Ok(slots) if cli.virtio_cmdline && !slots.is_empty() => {
            format!("{cmdline} {}", vmm::kvm::virtio::cmdline(&slots))
        }
        _ => cmdline,
    };
    VmConfig {
        boot: BootConfig {
            kernel,
            initrd: cli.initrd.clone(),
            cmdline,
            mem: cli.mem,
            cpus: cli.cpus.min(u8::MAX as u64) as u8,
            hugepages: cli.hugepages == Toggle::On,
        },
        serial: if json_to_stdout {
            SerialMode::None
        } else {
            cli.serial.clone()
        },
        timeout: cli.timeout,
        expect: cli.expect.clone(),
        log: cli.log.clone(),
        log_limit: cli.log_limit.0,
        process_start: Some(process_start),
        ram_lookup: cli.ram_lookup,
        disks: cli.disks.clone(),
        fail_on: fail_patterns(cli),
    }
}

/// Checks the limits that need no KVM; returns `--max-memory` (default: `--mem` plus the
/// default hot-plug allowance).
fn check_limits(cli: &Cli) -> anyhow::Result<u64> {
    let max_memory = cli
        .max_memory
        .unwrap_or(cli.mem.saturating_add(DEFAULT_HOTPLUG_MEMORY));
    if max_memory < cli.mem {
        anyhow::bail!(vmm::Error::MaxMemory {
            max_mib: max_memory >> 20,
            mem_mib: cli.mem >> 20,
        });
    }
    if cli.cpus > u8::MAX as u64 {
        anyhow::bail!(vmm::Error::Cpus {
            asked: cli.cpus,
            why: format!(
                "this VMM supports at most {} vCPUs (and this host's KVM may allow fewer)",
                u8::MAX - 1
            )
        });
    }
    Ok(max_memory)
}

/// What `--result-json` says about the configuration.
fn config_summary(cfg: &VmConfig) -> vmm::report::ConfigSummary {
    vmm::report::ConfigSummary {
        vcpus: cfg.boot.cpus,
        mem_mib: cfg.boot.mem >> 20,
        kernel: match &cfg.boot.kernel {
            KernelSource::Builtin => "builtin".into(),
            KernelSource::File(p) => p.display().to_string(),
        },
        expect: cfg.expect.clone(),
        fail_on: cfg.fail_on.clone(),
    }
}

/// The seccomp filters, compiled now; `None` with `--no-seccomp` (which warns).
fn seccomp_filters(cli: &Cli) -> anyhow::Result<Option<Arc<seccomp::Filters>>> {
    if cli.no_seccomp {
        eprintln!(
            "vmm: warning: --no-seccomp: system-call filtering is OFF. Use it only to debug: \
             a VMM thread that a guest took over could make any system call"
        );
        return Ok(None);
    }
    Ok(Some(Arc::new(seccomp::Filters::new()?)))
}

/// What the main loop serves besides the console: the end of the loop when the run ends,
/// SIGINT/SIGTERM, the control socket and the `--timeout` timer.
struct Frontends {
    control: Option<Arc<vmm::frontend::control::Control>>,
    _timer: Option<iohandler::Timer>,
}

impl Frontends {
    fn attach(
        cli: &Cli,
        h: &iohandler::LoopHandle,
        shared: &Arc<vmm::kvm::vm::VmShared>,
        max_memory: u64,
        timeout: Option<std::time::Duration>,
    ) -> anyhow::Result<Frontends> {
        {
            let h = h.clone();
            shared.on_finish(move || h.quit());
        }
        {
            let shared = shared.clone();
            h.on_signals(&[libc::SIGINT, libc::SIGTERM], move |sig| {
                log::info!("signal {sig}: stopping the VM");
                shared.finish(vmm::outcome::Outcome::Stopped, None);
            })
            .context("installing the signal handler")?;
        }
        let control = match &cli.control {
            Some(path) => Some(
                vmm::frontend::control::Control::start(path, h, shared.clone(), max_memory)
                    .with_context(|| format!("opening the control socket {}", path.display()))?,
            ),
            None => None,
        };
        let _timer = timeout.map(|t| {
            let shared2 = shared.clone();
            let timer = h.timer(move || shared2.finish(vmm::outcome::Outcome::Timeout, None));
            timer.arm_at(shared.started() + t);
            timer
        });
        Ok(Frontends { control, _timer })
    }
}

/// Writes the `--result-json` line to its file, or to stdout within a bound (a full pipe
/// that nobody reads does not hold the VMM).
fn write_result_json(path: &std::path::Path, json: &str, to_stdout: bool) -> anyhow::Result<()> {
    let line = format!("{json}\n");
    if to_stdout {
        let n = vmm::frontend::console_out::write_stdout_bounded(
            line.as_bytes(),
            vmm::frontend::console_out::FINAL_FLUSH,
        );
        if n < line.len() {
            eprintln!(
                "vmm: --result-json -: standard output took {n} of {} bytes",
                line.len()
            );
        }
        return Ok(());
    }
    std::fs::write(path, line).with_context(|| format!("writing --result-json {}", path.display()))
}

/// The VMM's RCU domain, whose reclamation thread installs its seccomp filter first thing;
/// returns once it has, so that the filter is in place before the guest starts.
fn confined_rcu_domain(
    bql: &Arc<iohandler::Bql>,
    filters: Arc<seccomp::Filters>,
) -> anyhow::Result<rcu::Rcu> {
    let (tx, rx) = std::sync::mpsc::channel();
    let rcu = iohandler::rcu_domain_builder(bql)
        .on_reclaimer_start(move || match filters.install(ThreadKind::Reclaim) {
            Ok(()) => {
                let _ = tx.send(());
            }
            Err(e) => {
                eprintln!("vmm: error: the RCU reclamation thread: {e}");
                std::process::exit(status::ERROR);
            }
        })
        .build();
    rcu.start_reclaimer();
    rx.recv_timeout(Duration::from_secs(60))
        .map_err(|_| anyhow::anyhow!("the RCU reclamation thread did not start within 60 s"))?;
    Ok(rcu)
}

#[cfg(test)]
mod tests {
    #[test]
    fn help_shows_the_default_linux_command_line() {
        assert!(super::AFTER_HELP.contains(super::LINUX_CMDLINE));
        assert!(!super::LINUX_CMDLINE.contains("panic="));
    }
}
