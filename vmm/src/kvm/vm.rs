//! The VM: KVM set-up in the order KVM requires, devices on the RCU buses, vCPU threads, and
//! the wait for an outcome.

use crate::bench::lookup::{AltTables, LookupDesign, LookupDevice};
use crate::bench::HotplugTiming;
use crate::error::{io, kvm as kvm_err, Error, Result};
use crate::frontend::console_out::{Console, ConsoleStats, Kind, Output};
use crate::kvm::serial_sink::{fail_diagnostic, serial_sink, FailGrace, FAIL_LINE_GRACE};
use crate::kvm::state::{Lifecycle, StateKind};
use crate::kvm::vcpu::ExitCounters;
use crate::kvm::virtio::{self, Disk};
use crate::outcome::{FailScanner, Outcome};
use crate::x86_64::boot::{self, BootConfig, KernelSource, Loaded};
use crate::x86_64::layout::{EBDA, KVM_TSS};
use devices::{AcpiSleep, Bus, PvPanic, Serial, TestCounter, I8042};
use kvm_ioctls::{Kvm, VmFd};
use memory::{ListenerError, MemoryListener, RamBlock, RamList};
use parking_lot::Mutex;
use rcu::Rcu;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

/// Where guest serial output goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SerialMode {
    /// The VMM's standard output.
    Stdio,
    /// A file (created or truncated).
    File(PathBuf),
    /// Nowhere (still scanned for `--expect`).
    None,
}

/// Everything a run needs.
#[derive(Clone, Debug)]
pub struct VmConfig {
    /// Kernel, initrd, command line, memory, vCPUs.
    pub boot: BootConfig,
    /// Serial output.
    pub serial: SerialMode,
    /// Stop after this long.
    pub timeout: Option<Duration>,
    /// Stop with success when this string appears on the serial port.
    pub expect: Option<String>,
    /// Also write guest serial output to this file.
    pub log: Option<PathBuf>,
    /// `--log-limit`: at most this many bytes of guest output go to `log` and to a
    /// `SerialMode::File` (then a last line says so); `None`: no limit.
    pub log_limit: Option<u64>,
    /// When the process started (times in the report count from here); `None`: from
    /// `Vm::new`.
    pub process_start: Option<Instant>,
    /// How the lookup device translates guest addresses.
    pub ram_lookup: crate::bench::lookup::LookupDesign,
    /// `--disk`: the virtio-blk disks, `/dev/vda` first.
    pub disks: Vec<crate::kvm::virtio::DiskConfig>,
    /// `--fail-on`: the run fails ([`Outcome::FailPattern`]) as soon as a line of the
    /// guest's console output contains one of these (plain substrings; the serial output
    /// is scanned wherever it goes, `--serial none` included).
    pub fail_on: Vec<String>,
}

/// What a run produced.
#[derive(Debug)]
pub struct RunReport {
    /// Why it stopped.
    pub outcome: Outcome,
    /// A diagnostic (exit reason and registers) for abnormal ends.
    pub diagnostic: Option<String>,
    /// From VM creation to the first `KVM_RUN` of vCPU 0.
    pub to_first_run: Option<Duration>,
    /// From VM creation to the `--expect` string.
    pub to_expect: Option<Duration>,
    /// Total run time.
    pub total: Duration,
    /// Writes counted by the test counter device (port 0x510).
    pub test_counter: u64,
    /// Per-vCPU exit counts (pio, mmio, interrupted, other).
    pub exits: Vec<[u64; 4]>,
    /// Unassigned port accesses (reads, writes).
    pub unassigned_pio: (u64, u64),
    /// Unassigned MMIO accesses (reads, writes).
    pub unassigned_mmio: (u64, u64),
    /// The VMM process's resident memory at the end of the run, in KiB.
    pub rss_kib: u64,
    /// How much of that is guest memory the guest touched, in KiB.
    pub guest_resident_kib: u64,
    /// The anonymous part of the RSS in KiB (see [`crate::memstat::anon_kib`]).
    pub anon_kib: u64,
    /// Guest console output: bytes, drops, per-output counters.
    pub console: ConsoleStats,
    /// vCPU threads that had not stopped when the VMM gave up waiting for them.
    pub stuck_vcpus: Vec<usize>,
}

/// State shared by the vCPU threads and the controlling thread.
pub struct VmShared {
    /// The VM's RCU domain: vCPU threads are QSBR readers of it.
    pub rcu: Rcu,
    /// Port I/O bus.
    pub pio: Bus,
    /// MMIO bus.
    pub mmio: Bus,
    /// Guest RAM.
    pub ram: Arc<RamList>,
    /// RAM hot-plug timing: the KVM slot ioctls ([`KvmSlots`]) and the VMM's share.
    pub hotplug: Arc<HotplugTiming>,
    /// Exit counters, one per vCPU.
    pub exits: Arc<[ExitCounters]>,
    /// Guest console output (the UART's writer feeds it; the main loop drains it).
    pub console: Arc<Console>,
    /// Running, Paused or Stopping(outcome); vCPUs read its atomic mirror on every exit.
    life: Lifecycle,
    threads: Mutex<Vec<libc::pthread_t>>,
    on_finish: Mutex<Vec<Box<dyn Fn() + Send + Sync>>>,
    /// `--fail-on`: the scanner the serial sink feeds (`None` without patterns). Locked
    /// after `result` when both are.
    pub(crate) fail_scan: Option<Arc<Mutex<FailScanner>>>,
    /// `--fail-on`'s grace for an unfinished line ([`FAIL_LINE_GRACE`]).
    fail_grace: Mutex<FailGrace>,
    /// The descriptors a vCPU thread writes (besides stderr): the console's eventfd and the
    /// serial irqfd; the main loop's waker is added by [`VmShared::attach_loop`]. The vCPU
    /// seccomp filter allows `write(2)` to these only.
    vcpu_write_fds: Mutex<Vec<std::os::fd::RawFd>>,
    /// The `--disk` devices (their queues are served on the main loop).
    disks: Mutex<Vec<Disk>>,
    started: Instant,
    first_run: Mutex<Option<Duration>>,
    pub(crate) expect_seen: Mutex<Option<Duration>>,
    /// The first "Kernel panic - not syncing" line a Linux guest printed, if any.
    guest_panic: Mutex<Option<String>>,
}

impl VmShared {
    /// Whether the VM is stopping.
    #[inline]
    pub fn stopping(&self) -> bool {
        self.life.stopping()
    }

    /// The run state's kind (Running, Paused, Stopping), from the atomic mirror.
    #[inline]
    pub fn state(&self) -> StateKind {
        self.life.kind()
    }

    /// Running -> Paused: every vCPU leaves `KVM_RUN` (kicked) and waits, offline, for
    /// `resume`. False if the VM was not running (already paused, or stopping).
    pub fn pause(&self) -> bool {
        let paused = self.life.pause();
        if paused {
            self.kick_all();
        }
        paused
    }

    /// Paused -> Running. False if the VM was not paused.
    pub fn resume(&self) -> bool {
        self.life.resume()
    }

    /// Whether the VM is paused.
    #[inline]
    pub fn is_paused(&self) -> bool {
        self.life.kind() == StateKind::Paused
    }

    /// Called by a vCPU thread: blocks while the VM is paused.
    pub(crate) fn wait_while_paused(&self) {
        self.life.wait_while_paused()
    }

    fn kick_all(&self) {
        for t in self.threads.lock().iter() {
            crate::kvm::kick::kick(*t);
        }
    }

    pub(crate) fn mark_first_run(&self) {
        let mut f = self.first_run.lock();
        if f.is_none() {
            *f = Some(self.started.elapsed());
        }
    }

    /// Ends the run with `outcome` (the first outcome wins) and kicks every vCPU. A reset,
    /// power-off or triple fault that follows a Linux guest's panic line is the panic's end
    /// (a kernel booted with `panic=N` reboots after it) and is reported as [`Outcome::Panic`].
    pub fn finish(&self, outcome: Outcome, diagnostic: Option<String>) {
        self.life.stop_with(|| {
            let (outcome, diagnostic) = self.unless_failed(outcome, diagnostic);
            match (outcome, self.guest_panic.lock().as_ref()) {
                (o @ (Outcome::Reset | Outcome::PowerOff | Outcome::TripleFault), Some(line)) => (
                    Outcome::Panic,
                    Some(format!(
                        "the Linux guest panicked ({line}), then the VM ended with {}",
                        o.name()
                    )),
                ),
                (o, _) => (o, diagnostic),
            }
        });
        self.kick_all();
        for hook in self.on_finish.lock().iter() {
            hook();
        }
    }

    /// Runs `hook` (on whichever thread ends the run) when the run ends; at once if it has.
    pub fn on_finish(&self, hook: impl Fn() + Send + Sync + 'static) {
        if self.stopping() {
            hook();
        }
        self.on_finish.lock().push(Box::new(hook));
    }

    /// Records a Linux guest's panic line (the first one counts); `end` says the kernel has
    /// finished its panic report ("---[ end Kernel panic"), which ends the run.
    pub(crate) fn guest_panicked(&self, line: &str, end: bool) {
        let first = self
            .guest_panic
            .lock()
            .get_or_insert_with(|| line.to_string())
            .clone();
        if end {
            self.finish(
                Outcome::Panic,
                Some(format!("the Linux guest panicked: {first}")),
            );
        }
    }

    /// A `--fail-on` pattern seen in a line that has not ended yet came first: it decides the
    /// run whatever ends it now (the line as printed so far is reported).
    fn unless_failed(
        &self,
        outcome: Outcome,
        diagnostic: Option<String>,
    ) -> (Outcome, Option<String>) {
        if matches!(outcome, Outcome::FailPattern { .. }) {
            return (outcome, diagnostic);
        }
        match self.fail_scan.as_ref().and_then(|f| f.lock().pending()) {
            Some(failed) => {
                let d = format!(
                    "{} (the line was unfinished when the run ended: {})",
                    fail_diagnostic(&failed),
                    outcome.name()
                );
                (failed, Some(d))
            }
            None => (outcome, diagnostic),
        }
    }

    /// Moves the VM's main-thread work onto `h`'s loop: the console's drain
    /// ([`Console::attach`]) and `--fail-on`'s grace timer; the loop's waker joins the
    /// descriptors vCPU threads write ([`vcpu_write_fds`](Self::vcpu_write_fds)). Call it
    /// before the vCPUs start.
    pub fn attach_loop(self: &Arc<Self>, h: &iohandler::LoopHandle) -> iohandler::Result<()> {
        self.console.attach(h)?;
        let weak = Arc::downgrade(self);
        let timer = h.timer(move || {
            if let Some(s) = weak.upgrade() {
                s.finish_unfinished_fail_line();
            }
        });
        self.fail_grace.lock().timer = Some(timer);
        self.vcpu_write_fds.lock().push(h.waker_fd());
        virtio::attach_loop(&self.disks.lock(), self, h)?;
        Ok(())
    }

    /// Adds descriptors a vCPU thread may `write(2)` to (see
    /// [`vcpu_write_fds`](Self::vcpu_write_fds)).
    pub(crate) fn add_vcpu_write_fds(&self, fds: &[std::os::fd::RawFd]) {
        self.vcpu_write_fds.lock().extend_from_slice(fds);
    }

    /// The descriptors a vCPU thread may `write(2)` to, besides stderr (for the vCPU
    /// seccomp filter): the console's eventfd, the serial irqfd and, once
    /// [`attach_loop`](Self::attach_loop) ran, the main loop's waker.
    pub fn vcpu_write_fds(&self) -> Vec<std::os::fd::RawFd> {
        self.vcpu_write_fds.lock().clone()
    }

    /// A `--fail-on` pattern matched in an unfinished line: the run ends with it
    /// [`FAIL_LINE_GRACE`] from now unless the line ends first. On the main loop's timer
    /// ([`attach_loop`](Self::attach_loop)), else [`Running::wait`] watches the deadline: a
    /// vCPU thread starts no thread and sleeps on nothing.
    pub(crate) fn arm_fail_grace(&self) {
        let at = Instant::now() + FAIL_LINE_GRACE;
        let mut g = self.fail_grace.lock();
        if g.deadline.is_some() {
            return;
        }
        g.deadline = Some(at);
        if let Some(t) = &g.timer {
            t.arm_at(at);
        }
        drop(g);
        self.life.wake();
    }

    /// Ends the run with the `--fail-on` match of a line that is still unfinished, if any.
    fn finish_unfinished_fail_line(&self) {
        self.fail_grace.lock().deadline = None;
        let pending = self.fail_scan.as_ref().and_then(|f| f.lock().pending());
        if let Some(o) = pending {
            let d = format!("{} (the line was not finished)", fail_diagnostic(&o));
            self.finish(o, Some(d));
        }
    }

    /// Blocks until the run ends, ending it with [`Outcome::Timeout`] at `deadline`.
    /// Without a main loop ([`Vm::run`]) this thread also drains the console and keeps
    /// `--fail-on`'s grace.
    fn wait_for_outcome(&self, deadline: Option<Instant>) {
        loop {
            let drain = !self.console.attached();
            let poll = drain.then(|| Instant::now() + CONSOLE_POLL);
            let grace = drain.then(|| self.fail_grace.lock().deadline).flatten();
            let until = deadline.into_iter().chain(poll).chain(grace).min();
            if self.life.wait_stopping(until) {
                return;
            }
            let now = Instant::now();
            if grace.is_some_and(|g| now >= g) {
                self.finish_unfinished_fail_line();
            }
            if deadline.is_some_and(|d| now >= d) {
                self.finish(Outcome::Timeout, None);
            }
            if drain && !self.stopping() {
                self.console.pump();
            }
        }
    }

    /// Joins the vCPU threads of a run that has ended, within [`VCPU_STOP_BOUND`] (kicking
    /// them meanwhile): the indices of those that did not stop, and the report's note on them.
    fn join_vcpus(
        &self,
        handles: Vec<std::thread::JoinHandle<()>>,
    ) -> (Vec<usize>, Option<String>) {
        let stuck = join_bounded(handles, VCPU_STOP_BOUND, |h| {
            use std::os::unix::thread::JoinHandleExt;
            crate::kvm::kick::kick(h.as_pthread_t());
        });
        {
            // Joined threads must not be kicked again (a late `finish`); stuck ones may.
            let mut threads = self.threads.lock();
            let kept: Vec<libc::pthread_t> = stuck
                .iter()
                .filter_map(|&i| threads.get(i).copied())
                .collect();
            *threads = kept;
        }
        let note = (!stuck.is_empty()).then(|| {
            let msg = format!(
                "vCPU thread(s) {stuck:?} did not stop within {VCPU_STOP_BOUND:?} of the end of \
                 the run (kicked every {KICK_EVERY:?}); the VMM exits without them"
            );
            log::error!("{msg}");
            msg
        });
        (stuck, note)
    }

    /// The outcome's short name, once the run has ended.
    pub fn outcome_name(&self) -> Option<&'static str> {
        self.life.outcome_name()
    }

    /// When the run started (process start for the binary).
    pub fn started(&self) -> Instant {
        self.started
    }
}

/// Opens /dev/kvm with errors that say how to fix access problems.
pub fn open_kvm() -> Result<Kvm> {
    match std::fs::metadata("/dev/kvm") {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Error::KvmMissing),
        _ => {}
    }
    let kvm = Kvm::new().map_err(|e| {
        let io = std::io::Error::from_raw_os_error(e.errno());
        if matches!(e.errno(), libc::EACCES | libc::EPERM) {
            Error::KvmAccess(io)
        } else {
            Error::Io {
                what: "opening /dev/kvm",
                source: io,
            }
        }
    })?;
    let v = kvm.get_api_version();
    if v != 12 {
        return Err(Error::KvmApiVersion(v));
    }
    Ok(kvm)
}

/// Checks the vCPU count against what KVM allows.
pub fn check_cpus(kvm: &Kvm, cpus: u64) -> Result<u8> {
    let max = kvm.get_max_vcpus().min(254) as u64;
    if cpus == 0 {
        return Err(Error::Cpus {
            asked: cpus,
            why: "a VM needs at least one vCPU".into(),
        });
    }
    if cpus > max {
        return Err(Error::Cpus {
            asked: cpus,
            why: format!("this host's KVM allows at most {max} vCPUs per VM"),
        });
    }
    Ok(cpus as u8)
}

/// Mirrors the RAM list into KVM memory slots: the RamList's listener.
pub struct KvmSlots {
    vm: Arc<VmFd>,
    /// Times every ioctl (the VMM's own share of a ram-add/remove is the rest).
    timing: Arc<HotplugTiming>,
}

impl KvmSlots {
    fn set(&self, block: &RamBlock, size: u64) -> std::result::Result<(), kvm_ioctls::Error> {
        self.timing.slot_ioctl(|| self.set_inner(block, size))
    }

    fn set_inner(&self, block: &RamBlock, size: u64) -> std::result::Result<(), kvm_ioctls::Error> {
        let r = kvm_bindings::kvm_userspace_memory_region {
            slot: block.slot().unwrap_or(0),
            flags: if block.is_read_only() {
                kvm_bindings::KVM_MEM_READONLY
            } else {
                0
            },
            guest_phys_addr: block.gpa(),
            memory_size: size,
            userspace_addr: block.host_ptr() as u64,
        };
        // SAFETY: the block's mapping is live for `size` bytes while it is in the list; the
        // list calls region_del (size 0: the slot is deleted) before the block can be
        // unmapped, which happens only after a grace period.
        unsafe { self.vm.set_user_memory_region(r) }
    }
}

impl MemoryListener for KvmSlots {
    fn region_add(&self, block: &RamBlock) -> std::result::Result<(), ListenerError> {
        self.set(block, block.size())
            .map_err(|e| ListenerError::from(format!("KVM_SET_USER_MEMORY_REGION: {e}")))
    }

    fn region_del(&self, block: &RamBlock) {
        if let Err(e) = self.set(block, 0) {
            log::error!("deleting KVM memory slot of '{}': {e}", block.name());
        }
    }
}

/// Creates the KVM VM with what must exist before memory and vCPUs: the TSS, the in-kernel
/// irqchip and the PIT.
fn create_vm(kvm: &Kvm) -> Result<Arc<VmFd>> {
    let vm = Arc::new(kvm.create_vm().map_err(kvm_err("KVM_CREATE_VM"))?);
    vm.set_tss_address(KVM_TSS)
        .map_err(kvm_err("KVM_SET_TSS_ADDR"))?;
    vm.create_irq_chip()
        .map_err(kvm_err("KVM_CREATE_IRQCHIP"))?;
    let pit = kvm_bindings::kvm_pit_config {
        flags: kvm_bindings::KVM_PIT_SPEAKER_DUMMY,
        ..Default::default()
    };
    vm.create_pit2(pit).map_err(kvm_err("KVM_CREATE_PIT2"))?;
    Ok(vm)
}

/// Registers the RAM list's listeners: the KVM slots (timed by `hotplug`) and, when a
/// benchmark asks for another lookup design, its tables (returned for the lookup device).
fn attach_memory(
    vm: &Arc<VmFd>,
    ram: &RamList,
    hotplug: &Arc<HotplugTiming>,
    design: LookupDesign,
) -> Result<Arc<AltTables>> {
    let listener_error = |what| {
        move |e: memory::Error| Error::Io {
            what,
            source: std::io::Error::other(e.to_string()),
        }
    };
    ram.add_listener(Arc::new(KvmSlots {
        vm: vm.clone(),
        timing: hotplug.clone(),
    }))
    .map_err(listener_error("registering guest memory with KVM"))?;
    // With the RCU design, mirroring every RAM change into the other tables would be wasted
    // work: they are kept only when a benchmark asks for one of them.
    let alt = AltTables::new(design);
    if design != LookupDesign::Rcu {
        ram.add_listener(alt.clone()).map_err(listener_error(
            "mirroring guest memory for the lookup designs",
        ))?;
    }
    Ok(alt)
}

/// Writes the MP table and the ACPI tables (SMP Linux guests find their CPUs in the MADT; the
/// DSDT names the virtio-mmio transports).
fn write_tables(
    mem: &memory::RamSnapshot,
    cpus: u8,
    virtio_mmio: &[crate::x86_64::layout::VirtioMmioSlot],
) -> Result<()> {
    mem.write_slice(&crate::x86_64::mptable::build(cpus), GuestAddress(EBDA))
        .map_err(|source| Error::GuestWrite {
            what: "the MP table",
            source,
        })?;
    for (gpa, bytes) in crate::x86_64::acpi::build_with(cpus, virtio_mmio).regions {
        mem.write_slice(&bytes, GuestAddress(gpa))
            .map_err(|source| Error::GuestWrite {
                what: "the ACPI tables",
                source,
            })?;
    }
    Ok(())
}

/// Puts the devices on the buses. Those that end the VM (i8042, ACPI sleep, pvpanic) return
/// an `ExitRequest` from the write, which the vCPU loop turns into the outcome.
fn add_devices(
    vm: &VmFd,
    shared: &Arc<VmShared>,
    cfg: &VmConfig,
    alt: Arc<AltTables>,
) -> Result<(Arc<Serial>, Arc<TestCounter>)> {
    // The DSDT describes COM1 and pvpanic at these ports (a hardware-reduced Linux maps only
    // the interrupts the DSDT names), and the FADT's sleep registers at AcpiSleep's.
    use crate::x86_64::acpi::{COM1_IRQ, COM1_PORT, PVPANIC_PORT, SLEEP_CONTROL_PORT};
    let irq = EventFd::new(libc::EFD_NONBLOCK).map_err(io("creating the serial eventfd"))?;
    vm.register_irqfd(&irq, COM1_IRQ.into())
        .map_err(kvm_err("KVM_IRQFD (serial, GSI 4)"))?;
    shared
        .vcpu_write_fds
        .lock()
        .push(std::os::fd::AsRawFd::as_raw_fd(&irq));
    let serial = Arc::new(Serial::new(irq, serial_sink(shared, cfg)));
    let pio = &shared.pio;
    pio.insert(COM1_PORT.into(), 8, serial.clone())?;
    pio.insert(0x60, 5, Arc::new(I8042::new()))?;
    pio.insert(SLEEP_CONTROL_PORT.into(), 2, Arc::new(AcpiSleep::new()))?;
    pio.insert(PVPANIC_PORT.into(), 1, Arc::new(PvPanic))?;
    let counter = Arc::new(TestCounter::default());
    pio.insert(0x510, 2, counter.clone())?;
    let lookup = LookupDevice::new(
        shared.ram.clone(),
        alt,
        cfg.ram_lookup,
        shared.exits.clone(),
    );
    pio.insert(0x520, 8, Arc::new(lookup))?;
    Ok((serial, counter))
}

/// Creates and configures the vCPUs (CPUID made coherent, registers for the kernel's
/// `entry`), logging KVM's CPUID and vCPU 0's changes to it at debug level.
fn create_vcpus(kvm: &Kvm, vm: &VmFd, cpus: u8, entry: u64) -> Result<Vec<kvm_ioctls::VcpuFd>> {
    let base_cpuid = crate::x86_64::cpuid::supported(kvm)?;
    if log::log_enabled!(target: "vmm::cpuid", log::Level::Debug) {
        let mut c = base_cpuid.clone();
        crate::x86_64::cpuid::normalize(&mut c, 0, cpus);
        for e in base_cpuid.as_slice() {
            log::debug!(
                target: "vmm::cpuid",
                "KVM: {:#010x}.{}: {:08x} {:08x} {:08x} {:08x}",
                e.function, e.index, e.eax, e.ebx, e.ecx, e.edx
            );
        }
        for line in crate::x86_64::cpuid::changes(&base_cpuid, &c) {
            log::debug!(target: "vmm::cpuid", "vCPU 0: {line}");
        }
    }
    let mut vcpus = Vec::new();
    for id in 0..cpus {
        let vcpu = vm
            .create_vcpu(id as u64)
            .map_err(kvm_err("KVM_CREATE_VCPU"))?;
        crate::x86_64::cpu::setup(&vcpu, &base_cpuid, id, cpus, entry)?;
        vcpus.push(vcpu);
    }
    Ok(vcpus)
}

/// A VM set up and ready to run (memory loaded, devices on the buses, vCPUs configured).
pub struct Vm {
    /// Shared with the vCPU threads.
    pub shared: Arc<VmShared>,
    /// What the boot path wrote.
    pub loaded: Loaded,
    /// Guest RAM (the RCU-published RAM list).
    pub ram: Arc<RamList>,
    vm: Arc<VmFd>,
    vcpus: Vec<kvm_ioctls::VcpuFd>,
    serial: Arc<Serial>,
    counter: Arc<TestCounter>,
    cfg: VmConfig,
}

impl Vm {
    /// Creates and configures the VM: KVM objects in the order KVM requires (TSS, irqchip,
    /// PIT, memory, vCPUs), the kernel loaded, the devices on the buses.
    pub fn new(cfg: VmConfig) -> Result<Vm> {
        Self::new_in(cfg, Rcu::new())
    }

    /// As [`Vm::new`], with the vCPUs and buses in the RCU domain `rcu` (the VMM passes the
    /// main loop's domain, whose `call_rcu` callbacks run under the BQL).
    pub fn new_in(cfg: VmConfig, rcu: Rcu) -> Result<Vm> {
        let started = cfg.process_start.unwrap_or_else(Instant::now);
        let since = || started.elapsed();
        // The disk images first: a missing, unreadable or locked one is an error with
        // nothing to undo.
        let disks = virtio::open(&cfg.disks)?;
        let kvm = open_kvm()?;
        log::debug!("kvm opened: {:?} since start", since());
        let cpus = check_cpus(&kvm, cfg.boot.cpus as u64)?;
        let ram = Arc::new(boot::create_memory(cfg.boot.mem, &rcu, cfg.boot.hugepages)?);
        log::debug!("guest memory mapped: {:?} since start", since());
        let vm = create_vm(&kvm)?;
        log::debug!("irqchip and PIT created: {:?} since start", since());
        let hotplug = Arc::new(HotplugTiming::default());
        let alt = attach_memory(&vm, &ram, &hotplug, cfg.ram_lookup)?;
        log::debug!("memory slots registered: {:?} since start", since());

        let mem = ram.snapshot_owned();
        let loaded = boot::load(&*mem, &cfg.boot)?;
        log::debug!("kernel loaded: {:?} since start", since());
        let slots: Vec<_> = disks.iter().map(|(slot, _)| *slot).collect();
        write_tables(&mem, cpus, &slots)?;
        drop(mem);

        let shared = Arc::new(VmShared {
            console: console_outputs(&cfg)?,
            ram: ram.clone(),
            hotplug,
            pio: Bus::new("pio", &rcu),
            mmio: Bus::new("mmio", &rcu),
            rcu,
            exits: (0..cpus).map(|_| ExitCounters::default()).collect(),
            life: Lifecycle::new(),
            threads: Mutex::new(Vec::new()),
            on_finish: Mutex::new(Vec::new()),
            started,
            first_run: Mutex::new(None),
            expect_seen: Mutex::new(None),
            fail_scan: (!cfg.fail_on.is_empty())
                .then(|| Arc::new(Mutex::new(FailScanner::new(&cfg.fail_on)))),
            fail_grace: Mutex::new(FailGrace::default()),
            vcpu_write_fds: Mutex::new(Vec::new()),
            disks: Mutex::new(Vec::new()),
            guest_panic: Mutex::new(None),
        });
        shared.vcpu_write_fds.lock().push(shared.console.wake_fd());
        let (serial, counter) = add_devices(&vm, &shared, &cfg, alt)?;
        *shared.disks.lock() = virtio::attach(&vm, &shared, disks)?;
        let vcpus = create_vcpus(&kvm, &vm, cpus, loaded.entry)?;
        log::debug!("vCPUs configured: {:?} since start", since());
        Ok(Vm {
            shared,
            loaded,
            ram,
            vm,
            vcpus,
            serial,
            counter,
            cfg,
        })
    }

    /// The serial device (for input).
    pub fn serial(&self) -> &Arc<Serial> {
        &self.serial
    }

    /// vCPU `i`'s general registers as set up (issue 7's structural boot checks).
    pub fn vcpu_regs(&self, i: usize) -> Result<kvm_bindings::kvm_regs> {
        let v = self.vcpus.get(i).ok_or(Error::Kvm {
            what: "KVM_GET_REGS: no such vCPU",
            source: kvm_ioctls::Error::new(libc::EINVAL),
        })?;
        v.get_regs().map_err(kvm_err("KVM_GET_REGS"))
    }

    /// vCPU `i`'s special registers (segments, control registers, GDT) as set up.
    pub fn vcpu_sregs(&self, i: usize) -> Result<kvm_bindings::kvm_sregs> {
        let v = self.vcpus.get(i).ok_or(Error::Kvm {
            what: "KVM_GET_SREGS: no such vCPU",
            source: kvm_ioctls::Error::new(libc::EINVAL),
        })?;
        v.get_sregs().map_err(kvm_err("KVM_GET_SREGS"))
    }

    /// Runs the vCPUs until an outcome or the timeout, on this thread (no main loop: no
    /// serial input). The binary uses [`Vm::start`] and runs the main loop instead.
    pub fn run(self) -> RunReport {
        self.start().wait()
    }

    /// Starts the vCPU threads, with no seccomp filter of their own.
    pub fn start(self) -> Running {
        self.start_confined(None)
    }

    /// Starts the vCPU threads; with `filters`, each installs the vCPU filter before its
    /// first `KVM_RUN` (a thread that cannot ends the run with an error instead).
    pub fn start_confined(mut self, filters: Option<Arc<crate::seccomp::Filters>>) -> Running {
        crate::kvm::kick::install();
        let mut handles = Vec::new();
        for (id, vcpu) in std::mem::take(&mut self.vcpus).into_iter().enumerate() {
            let s = self.shared.clone();
            let filters = filters.clone();
            let h = std::thread::Builder::new()
                .name(format!("vcpu{id}"))
                .spawn(move || {
                    if let Some(f) = filters {
                        if let Err(e) = f.install(crate::seccomp::ThreadKind::Vcpu) {
                            s.finish(Outcome::Error(format!("vCPU {id}: {e}")), None);
                            return;
                        }
                    }
                    let s2 = s.clone();
                    let run = std::panic::AssertUnwindSafe(|| crate::kvm::vcpu::run(id, vcpu, s));
                    if let Err(p) = std::panic::catch_unwind(run) {
                        // The vCPU fd (and its kvm_run) is gone: no kick may touch it.
                        crate::kvm::kick::unregister();
                        s2.finish(
                            Outcome::Error(format!(
                                "the vCPU {id} thread panicked: {}",
                                panic_message(&*p)
                            )),
                            None,
                        );
                    }
                });
            match h {
                Ok(h) => {
                    use std::os::unix::thread::JoinHandleExt;
                    self.shared.threads.lock().push(h.as_pthread_t());
                    handles.push(h);
                }
                Err(e) => {
                    self.shared.finish(
                        Outcome::Error(format!("cannot start a vCPU thread: {e}")),
                        None,
                    );
                    break;
                }
            }
        }
        Running { vm: self, handles }
    }
}

/// A VM whose vCPUs run (the [`Vm`], its vCPU fds moved into their threads).
pub struct Running {
    vm: Vm,
    handles: Vec<std::thread::JoinHandle<()>>,
}

impl Running {
    /// The state shared with the vCPUs (pause, resume, finish, hooks).
    pub fn shared(&self) -> &Arc<VmShared> {
        &self.vm.shared
    }

    /// Waits for an outcome (or the timeout), stops and joins the vCPUs, and reports.
    pub fn wait(self) -> RunReport {
        let Running {
            vm:
                Vm {
                    shared,
                    vm,
                    ram,
                    counter,
                    cfg,
                    ..
                },
            handles,
        } = self;
        shared.wait_for_outcome(cfg.timeout.map(|t| shared.started + t));
        shared.finish(Outcome::Timeout, None); // no-op for the outcome; stops and kicks
        let (stuck, stuck_note) = shared.join_vcpus(handles);
        shared
            .console
            .finish(crate::frontend::console_out::FINAL_FLUSH);
        let rss_kib = crate::memstat::rss_kib();
        let anon_kib = crate::memstat::anon_kib();
        let guest_resident_kib = crate::memstat::resident_kib(&ram.snapshot_owned());
        if stuck.is_empty() {
            // vCPU fds are closed (their threads ended); now the VM, then the memory.
            drop(vm);
            drop(ram);
        } else {
            // A stuck vCPU thread still owns its fd and may touch guest memory: both stay
            // until the process exits.
            std::mem::forget(vm);
            std::mem::forget(ram);
        }
        let (outcome, diagnostic) = shared.life.outcome().unwrap_or((
            Outcome::Error("the VM stopped without an outcome".into()),
            None,
        ));
        let diagnostic = match (diagnostic, stuck_note) {
            (Some(d), Some(n)) => Some(format!("{d}\n{n}")),
            (d, n) => d.or(n),
        };
        let pio = shared.pio.stats();
        let mmio = shared.mmio.stats();
        let to_first_run = *shared.first_run.lock();
        let to_expect = *shared.expect_seen.lock();
        RunReport {
            outcome,
            diagnostic,
            to_first_run,
            to_expect,
            total: shared.started.elapsed(),
            test_counter: counter.count(),
            exits: shared.exits.iter().map(ExitCounters::counts).collect(),
            unassigned_pio: (pio.unassigned_reads, pio.unassigned_writes),
            unassigned_mmio: (mmio.unassigned_reads, mmio.unassigned_writes),
            rss_kib,
            guest_resident_kib,
            anon_kib,
            console: shared.console.stats(),
            stuck_vcpus: stuck,
        }
    }
}

/// How often [`Running::wait`] drains the console when no main loop does.
const CONSOLE_POLL: Duration = Duration::from_millis(20);
/// How long the end of a run waits for the vCPU threads to stop.
const VCPU_STOP_BOUND: Duration = Duration::from_secs(5);
/// How often a vCPU that has not stopped yet is kicked again meanwhile.
const KICK_EVERY: Duration = Duration::from_millis(50);

/// Joins the threads that stop within `bound`, calling `kick` on each one still running
/// every [`KICK_EVERY`]; returns the indices of those that did not stop (their handles are
/// dropped: detached).
fn join_bounded(
    handles: Vec<std::thread::JoinHandle<()>>,
    bound: Duration,
    mut kick: impl FnMut(&std::thread::JoinHandle<()>),
) -> Vec<usize> {
    let start = Instant::now();
    let mut last_kick = start;
    while !handles.iter().all(|h| h.is_finished()) && start.elapsed() < bound {
        if last_kick.elapsed() >= KICK_EVERY {
            handles
                .iter()
                .filter(|h| !h.is_finished())
                .for_each(&mut kick);
            last_kick = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let mut stuck = Vec::new();
    for (i, h) in handles.into_iter().enumerate() {
        if h.is_finished() {
            let _ = h.join();
        } else {
            stuck.push(i);
        }
    }
    stuck
}

/// The message of a caught panic.
fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "a non-string panic payload".into()
    }
}

/// The console and its outputs: standard output or `--serial file:`, and `--log` (the files
/// within `--log-limit`).
fn console_outputs(cfg: &VmConfig) -> Result<Arc<Console>> {
    let mut outputs = Vec::new();
    match &cfg.serial {
        SerialMode::Stdio => outputs.push(Output::stdout()),
        SerialMode::None => {}
        SerialMode::File(p) => outputs.push(
            Output::file(Kind::SerialFile, p, cfg.log_limit).map_err(|source| Error::Io {
                what: "creating the serial output file",
                source,
            })?,
        ),
    }
    if let Some(p) = &cfg.log {
        outputs.push(
            Output::file(Kind::Log, p, cfg.log_limit).map_err(|source| Error::Io {
                what: "creating the serial log file",
                source,
            })?,
        );
    }
    Console::new(outputs).map_err(io("creating the console's eventfd"))
}

/// Whether `src` is a Linux kernel file (as opposed to the built-in guest).
pub fn is_external(src: &KernelSource) -> bool {
    matches!(src, KernelSource::File(_))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_bounded_gives_up_on_a_stuck_thread_and_joins_the_others() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let stuck = std::thread::spawn(move || {
            // Blocks until the test ends: a thread no kick can move.
            let _ = rx.recv();
        });
        let quick = std::thread::spawn(|| std::thread::sleep(Duration::from_millis(20)));
        let mut kicks = 0;
        let t = Instant::now();
        let left = join_bounded(vec![quick, stuck], Duration::from_millis(300), |_| {
            kicks += 1
        });
        assert_eq!(left, vec![1]);
        assert!(kicks >= 1, "the stuck thread was kicked");
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "bounded: {:?}",
            t.elapsed()
        );
        drop(tx);
    }
}
