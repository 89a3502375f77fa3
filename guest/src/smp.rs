//! Starting the application processors: the local APIC, INIT / SIPI, and each AP reporting in.
//!
//! The BSP copies the real-mode trampoline (entry.s) to [`TRAMPOLINE`], publishes its CR3 and
//! EFER for it, then for each enabled AP of the MP table (or of the ACPI MADT) sends INIT
//! (assert, de-assert) and a start-up IPI, a second SIPI only if the AP has not arrived after
//! a short wait (KVM starts an AP on the first one; real CPUs may need the second), and waits
//! for the AP to print its line.
//! Waiting uses the TSC as a monotonic counter only (about 2.6 GHz on the PVM hosts; rdtsc
//! traps there, so each poll costs microseconds, which is fine).
//!
//! An AP halts after reporting, unless the workload called [`hold_aps`] before starting the
//! CPUs: then it spins until [`release_aps`] names a job, runs it, and halts.

use crate::arch::{halt, pause, rdmsr, rdtsc, read_cr3};
use crate::mp::Processor;
use crate::println;
use core::ptr::{addr_of, read_volatile, write_volatile};
use core::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, AtomicU8, Ordering};

/// Where the trampoline runs: SIPI vector 0x08. Below 1 MiB, in the VMM's usable e820 RAM,
/// clear of the zero page (0x7000) and the boot page tables (0x9000).
pub const TRAMPOLINE: u64 = 0x8000;

const MSR_APIC_BASE: u32 = 0x1b;
const MSR_EFER: u32 = 0xc000_0080;
const EFER_LME: u32 = 1 << 8;
const EFER_LMA: u32 = 1 << 10;

const APIC_ID: u64 = 0x20;
const APIC_SVR: u64 = 0xf0;
const APIC_ICR_LO: u64 = 0x300;
const APIC_ICR_HI: u64 = 0x310;
const ICR_DELIVERY_PENDING: u32 = 1 << 12;
const ICR_INIT_ASSERT: u32 = 0x0000_4500; // INIT, level assert
const ICR_INIT_DEASSERT: u32 = 0x0000_8500; // INIT, level-triggered de-assert
const ICR_STARTUP: u32 = 0x0000_4600; // start-up, vector in bits 7:0

/// TSC cycles to wait for an AP before the second SIPI (about 13 ms at 2.6 GHz).
const SIPI_RETRY_CYCLES: u64 = 1 << 25;
/// TSC cycles to wait for an AP to report in (about 6.6 s at 2.6 GHz: a busy host may not
/// run the AP's vCPU thread for a long time).
const AP_TIMEOUT_CYCLES: u64 = 1 << 34;

/// The next free AP stack slot: entry.s's `ap_entry64` takes slots with `lock xadd`.
#[no_mangle]
pub static AP_NEXT_SLOT: AtomicU32 = AtomicU32::new(0);
/// The BSP's CR3, for the trampoline (which runs in 32-bit mode: below 4 GiB).
#[no_mangle]
pub static AP_BOOT_CR3: AtomicU32 = AtomicU32::new(0);
/// The BSP's EFER low half without LMA, with LME, for the trampoline's `wrmsr`.
#[no_mangle]
pub static AP_BOOT_EFER: AtomicU32 = AtomicU32::new(0);

const STATE_NONE: u8 = 0;
const STATE_ALIVE: u8 = 1;
const STATE_REPORTED: u8 = 2;
const NO_CPU: u16 = u16::MAX;

/// Per APIC ID: how far the AP has come.
static STATE: [AtomicU8; 256] = [const { AtomicU8::new(STATE_NONE) }; 256];
/// Per APIC ID: the CPU number the BSP gave it (`NO_CPU` if none).
static CPU_NUMBER: [AtomicU16; 256] = [const { AtomicU16::new(NO_CPU) }; 256];

/// Whether an AP waits for a job after reporting (set by [`hold_aps`]) instead of halting.
static HOLD_APS: AtomicBool = AtomicBool::new(false);
/// The job held APs run: [`JOB_NONE`] until [`release_aps`].
static AP_JOB: AtomicU8 = AtomicU8::new(JOB_NONE);

/// No job yet: held APs keep waiting.
const JOB_NONE: u8 = 0;
/// A job for held APs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ApJob {
    /// Halt.
    Halt = 1,
    /// `lookup-bench`'s per-CPU part ([`crate::lookup::ap_main`]).
    LookupBench = 2,
}

extern "C" {
    static ap_trampoline_start: u8;
    static ap_trampoline_end: u8;
    static ap_stack_count: u32;
}

/// The local APIC (xAPIC, memory-mapped; the VMM's identity map covers it).
pub struct Lapic {
    base: u64,
}

impl Lapic {
    /// This CPU's local APIC, at the address in IA32_APIC_BASE.
    pub fn current() -> Lapic {
        Lapic {
            base: rdmsr(MSR_APIC_BASE) & 0x000f_ffff_ffff_f000,
        }
    }

    fn read(&self, reg: u64) -> u32 {
        // SAFETY: `base` is the xAPIC page from IA32_APIC_BASE, identity-mapped; `reg` is
        // one of its 16-byte-aligned registers. A volatile read is an MMIO access.
        unsafe { read_volatile((self.base + reg) as *const u32) }
    }

    fn write(&self, reg: u64, value: u32) {
        // SAFETY: as for `read`.
        unsafe { write_volatile((self.base + reg) as *mut u32, value) }
    }

    /// This CPU's local APIC ID.
    pub fn id(&self) -> u8 {
        (self.read(APIC_ID) >> 24) as u8
    }

    /// Software-enables the APIC, spurious vector 0xff.
    fn enable(&self) {
        let svr = self.read(APIC_SVR);
        self.write(APIC_SVR, svr | 0x1ff);
    }

    /// Sends an IPI and waits (boundedly) for the ICR's delivery status to clear.
    fn send_ipi(&self, apic_id: u8, icr: u32) {
        self.write(APIC_ICR_HI, u32::from(apic_id) << 24);
        self.write(APIC_ICR_LO, icr);
        for _ in 0..100_000 {
            if self.read(APIC_ICR_LO) & ICR_DELIVERY_PENDING == 0 {
                break;
            }
            pause();
        }
    }
}

/// Waits until the AP with `apic_id` reaches at least `state`, for at most `cycles`.
fn wait_state(apic_id: u8, state: u8, cycles: u64) -> bool {
    let start = rdtsc();
    loop {
        if STATE[usize::from(apic_id)].load(Ordering::Acquire) >= state {
            return true;
        }
        if rdtsc().wrapping_sub(start) > cycles {
            return false;
        }
        pause();
    }
}

/// Starts one AP: INIT, SIPI, (SIPI), and waits for it to report.
fn start_ap(lapic: &Lapic, apic_id: u8) -> bool {
    let vector = (TRAMPOLINE >> 12) as u32;
    lapic.send_ipi(apic_id, ICR_INIT_ASSERT);
    lapic.send_ipi(apic_id, ICR_INIT_DEASSERT);
    lapic.send_ipi(apic_id, ICR_STARTUP | vector);
    if !wait_state(apic_id, STATE_ALIVE, SIPI_RETRY_CYCLES) {
        lapic.send_ipi(apic_id, ICR_STARTUP | vector);
    }
    wait_state(apic_id, STATE_REPORTED, AP_TIMEOUT_CYCLES)
}

/// Copies the trampoline into place and publishes CR3 and EFER for it.
fn prepare_trampoline() -> Result<(), &'static str> {
    let cr3 = read_cr3() & !0xfff;
    if cr3 >= 1 << 32 {
        return Err("the page tables are above 4 GiB, out of the trampoline's reach");
    }
    AP_BOOT_CR3.store(cr3 as u32, Ordering::Relaxed);
    let efer = (rdmsr(MSR_EFER) as u32 & !EFER_LMA) | EFER_LME;
    AP_BOOT_EFER.store(efer, Ordering::Relaxed);
    let start = addr_of!(ap_trampoline_start);
    let len = addr_of!(ap_trampoline_end) as usize - start as usize;
    if len > 0x1000 {
        return Err("the trampoline is larger than a page");
    }
    // SAFETY: the source is the trampoline in the image; the destination, one page at
    // TRAMPOLINE, is usable RAM below 1 MiB that nothing else of the guest's uses (the
    // loader's boot stack there is no longer in use), identity-mapped.
    unsafe { core::ptr::copy_nonoverlapping(start, TRAMPOLINE as *mut u8, len) };
    Ok(())
}

/// Reports the BSP, starts every enabled AP of `processors` (the MP table's or the MADT's;
/// empty without a table) and prints the summary line. `source` prefixes the line about a
/// disabled processor ("mp", "acpi"). Returns (online, listed).
pub fn start_all(processors: &[Processor], source: &str) -> (usize, usize) {
    let lapic = Lapic::current();
    let bsp_id = lapic.id();
    CPU_NUMBER[usize::from(bsp_id)].store(0, Ordering::Relaxed);
    STATE[usize::from(bsp_id)].store(STATE_REPORTED, Ordering::Relaxed);
    println!("cpu 0: online (apic id {bsp_id})");

    let mut aps = [0u8; 256];
    let mut n_aps = 0;
    for p in processors {
        if !p.enabled {
            println!("{source}: processor with apic id {} is disabled", p.apic_id);
        } else if p.apic_id != bsp_id && n_aps < aps.len() {
            aps[n_aps] = p.apic_id;
            n_aps += 1;
        }
    }
    let listed = 1 + n_aps;
    let mut online = 1;
    if n_aps > 0 {
        // SAFETY: ap_stack_count is a constant in entry.s's .rodata.
        let capacity = unsafe { ap_stack_count } as usize;
        match prepare_trampoline() {
            Err(why) => println!("cpus: cannot start APs: {why}"),
            Ok(()) => {
                lapic.enable();
                for (i, &apic_id) in aps[..n_aps].iter().enumerate() {
                    let cpu = i + 1;
                    if i >= capacity {
                        println!("cpu {cpu}: not started (apic id {apic_id}): the guest has stacks for {capacity} APs");
                        continue;
                    }
                    CPU_NUMBER[usize::from(apic_id)].store(cpu as u16, Ordering::Release);
                    if start_ap(&lapic, apic_id) {
                        online += 1;
                    } else {
                        println!("cpu {cpu}: FAILED to start (apic id {apic_id})");
                    }
                }
            }
        }
    }
    println!("cpus: {online} of {listed} online");
    (online, listed)
}

/// Makes the APs that [`start_all`] starts wait for a job after reporting, instead of
/// halting. Call before `start_all`; every held AP spins (on PVM: in KVM's emulator, a host
/// CPU's worth) until [`release_aps`].
pub fn hold_aps() {
    HOLD_APS.store(true, Ordering::Release);
}

/// Gives the held APs their job (once; anything it needs must be written before this call).
pub fn release_aps(job: ApJob) {
    AP_JOB.store(job as u8, Ordering::Release);
}

/// The job a held AP waits for.
fn wait_for_job() -> u8 {
    loop {
        match AP_JOB.load(Ordering::Acquire) {
            JOB_NONE => pause(),
            job => return job,
        }
    }
}

/// An AP's Rust entry (from entry.s `ap_entry64`, on its own stack): reports in, runs the job
/// it is given if the workload holds the APs, and halts.
#[no_mangle]
pub extern "C" fn ap_main(_slot: u32) -> ! {
    let apic_id = Lapic::current().id();
    let state = &STATE[usize::from(apic_id)];
    state.store(STATE_ALIVE, Ordering::Release);
    let cpu = CPU_NUMBER[usize::from(apic_id)].load(Ordering::Acquire);
    match cpu {
        NO_CPU => println!("cpu ?: online (apic id {apic_id}), not one the BSP started"),
        cpu => println!("cpu {cpu}: online (apic id {apic_id})"),
    }
    state.store(STATE_REPORTED, Ordering::Release);
    if HOLD_APS.load(Ordering::Acquire)
        && cpu != NO_CPU
        && wait_for_job() == ApJob::LookupBench as u8
    {
        crate::lookup::ap_main(usize::from(cpu));
    }
    halt()
}
