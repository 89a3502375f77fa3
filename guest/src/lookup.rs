//! `workload=lookup-bench`: the end-to-end memory-lookup benchmark (see README.md).
//!
//! It runs on every online CPU at once. The BSP starts the APs (held: they wait for a job
//! instead of halting), plans where each CPU's descriptor and table go and which RAM the
//! addresses are drawn from, and releases the APs. Each CPU then builds its own table of N
//! guest-physical addresses from its own pseudo-random sequence, uniformly over the usable
//! RAM above the first descriptor less every CPU's descriptor and table pages (qword-aligned),
//! storing `addr ^ LOOKUP_XOR` at each address and adding that to its expected sum. When all
//! tables are built the BSP prints them and starts every CPU at once: R times, each CPU
//! resets its descriptor's out fields to sentinels, rings the lookup device (the descriptor's
//! gpa to ports 0x520 and 0x524; the VMM does the lookups on that CPU's vCPU thread before
//! the second `out` returns) and checks what the VMM wrote back. A round whose sum is not the
//! expected one, that reports failed lookups, or whose time field the VMM did not write, is
//! an error. The BSP waits for every CPU and prints one line per CPU and the summary.
//!
//! The lookup device latches the low dword (port 0x520) once for all vCPUs, so two CPUs
//! ringing at once could mix their halves. Every CPU's descriptor therefore has the same low
//! dword: CPU slot k's is at `k * 4 GiB + X`, X the first page above the image, which needs
//! RAM there (e.g. `--mem 4G` for two CPUs). Without it the descriptors go one after another
//! above X and the two `out`s of a doorbell are made one critical section across CPUs (the
//! lookups are then serialized, and a line says so).
//!
//! On PVM every guest instruction is emulated (about 3 us): building a table costs a few
//! dozen instructions per entry (4096 entries: about 0.3 s, on all CPUs at once), a round
//! two exits plus the VMM's work.

use crate::arch::{outl, outl_doorbell, pause};
use crate::boot::{self, Options, Workload, E820_RAM};
use crate::smp::{self, ApJob};
use crate::{fail, finish, in_usable_ram, number_option, println, start_cpus};
use crate::{LOOKUP_PORT_HI, LOOKUP_PORT_LO, PAGE};
use core::fmt;
use core::ptr::{addr_of, read_volatile, write_volatile};
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

/// What the guest stores at each table address: `addr ^ LOOKUP_XOR`.
pub const LOOKUP_XOR: u64 = 0x5a5a_5a5a_5a5a_5a5a;
/// The pseudo-random sequence's seed (splitmix64) for the BSP; CPU slot k uses
/// `SEED ^ k * SEED_STEP`.
const SEED: u64 = 0x0123_4567_89ab_cdef;
/// Spreads the slots' seeds apart (odd, and not a small multiple of splitmix64's increment,
/// so that the slots' sequences do not overlap).
const SEED_STEP: u64 = 0xd1b5_4a32_d192_ed03;
/// The most CPUs the benchmark runs on: the BSP and the 63 APs the guest has stacks for.
const MAX_CPUS: usize = 64;
/// The most usable-RAM ranges the addresses are spread over (e820 ranges, cut around the
/// other CPUs' descriptors and tables).
const MAX_RANGES: usize = 16 + MAX_CPUS;
const FOUR_GIB: u64 = 1 << 32;

// Descriptor fields (byte offsets).
const D_TABLE: u64 = 0;
const D_COUNT: u64 = 8;
const D_FLAGS: u64 = 12;
const D_SUM: u64 = 16;
const D_FAILED: u64 = 24;
const D_RESERVED: u64 = 28;
const D_NS: u64 = 32;

/// The time field's sentinel: a VMM that answers never writes all-ones there.
const NS_UNSET: u64 = u64::MAX;
/// The failed-lookups field's sentinel.
const FAILED_UNSET: u32 = u32::MAX;
/// `first_round` while a CPU has had no wrong round.
const NO_ROUND: u64 = u64::MAX;

/// What the BSP publishes for every CPU before releasing the APs. It is written before
/// [`smp::release_aps`] (a release store) and read after the APs see their job (an acquire
/// load), so relaxed accesses suffice.
struct Plan {
    count: AtomicU64,
    rounds: AtomicU64,
    cpus: AtomicUsize,
    /// Whether the two `out`s of a doorbell are taken under [`DOORBELL`].
    serialized: AtomicBool,
    /// Each slot's descriptor (its table starts on the next page).
    desc: [AtomicU64; MAX_CPUS],
    n_ranges: AtomicUsize,
    range_start: [AtomicU64; MAX_RANGES],
    range_qwords: [AtomicU64; MAX_RANGES],
    qwords: AtomicU64,
}

static PLAN: Plan = Plan {
    count: AtomicU64::new(0),
    rounds: AtomicU64::new(0),
    cpus: AtomicUsize::new(0),
    serialized: AtomicBool::new(false),
    desc: [const { AtomicU64::new(0) }; MAX_CPUS],
    n_ranges: AtomicUsize::new(0),
    range_start: [const { AtomicU64::new(0) }; MAX_RANGES],
    range_qwords: [const { AtomicU64::new(0) }; MAX_RANGES],
    qwords: AtomicU64::new(0),
};

/// One CPU's outcome, written by that CPU only and read by the BSP after [`DONE`] counts it
/// (or, for `expected`, after [`BUILT`] does).
struct CpuResult {
    /// The CPU number (`cpu N` lines).
    cpu: AtomicUsize,
    expected: AtomicU64,
    total_ns: AtomicU64,
    errors: AtomicU64,
    /// The first wrong round ([`NO_ROUND`] if none) and its answer.
    first_round: AtomicU64,
    err_sum: AtomicU64,
    err_failed: AtomicU64,
    err_ns: AtomicU64,
}

static RESULTS: [CpuResult; MAX_CPUS] = [const {
    CpuResult {
        cpu: AtomicUsize::new(0),
        expected: AtomicU64::new(0),
        total_ns: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        first_round: AtomicU64::new(NO_ROUND),
        err_sum: AtomicU64::new(0),
        err_failed: AtomicU64::new(0),
        err_ns: AtomicU64::new(0),
    }
}; MAX_CPUS];

/// The next slot an AP takes (the BSP is slot 0).
static NEXT_SLOT: AtomicUsize = AtomicUsize::new(1);
/// CPUs whose table is built.
static BUILT: AtomicUsize = AtomicUsize::new(0);
/// Set by the BSP when every table is built: all CPUs start their rounds.
static START: AtomicBool = AtomicBool::new(false);
/// CPUs done with their rounds.
static DONE: AtomicUsize = AtomicUsize::new(0);
/// Held across a doorbell's two `out`s when the plan says `serialized`.
static DOORBELL: AtomicBool = AtomicBool::new(false);

/// splitmix64: the next value of the sequence.
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A qword in a descriptor page.
fn put64(desc: u64, off: u64, v: u64) {
    // SAFETY: `desc` is a descriptor page the plan gave this CPU: usable RAM above the guest
    // image (checked by the BSP), identity-mapped, that no Rust object occupies and no other
    // CPU writes.
    unsafe { write_volatile((desc + off) as *mut u64, v) }
}

fn put32(desc: u64, off: u64, v: u32) {
    // SAFETY: as for `put64`.
    unsafe { write_volatile((desc + off) as *mut u32, v) }
}

fn get64(desc: u64, off: u64) -> u64 {
    // SAFETY: as for `put64`.
    unsafe { read_volatile((desc + off) as *const u64) }
}

fn get32(desc: u64, off: u64) -> u32 {
    // SAFETY: as for `put64`.
    unsafe { read_volatile((desc + off) as *const u32) }
}

/// One round's answer.
#[derive(Clone, Copy)]
struct Answer {
    sum: u64,
    failed: u32,
    ns: u64,
}

/// " on cpu N" when several CPUs run, nothing with one (the single-CPU messages as before).
struct OnCpu(usize, usize);

impl fmt::Display for OnCpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 > 1 {
            write!(f, " on cpu {}", self.1)?;
        }
        Ok(())
    }
}

/// Builds slot `slot`'s table from the plan; returns its expected sum.
fn build(slot: usize) -> u64 {
    let count = PLAN.count.load(Ordering::Relaxed);
    let table = PLAN.desc[slot].load(Ordering::Relaxed) + PAGE;
    let qwords = PLAN.qwords.load(Ordering::Relaxed);
    let n_ranges = PLAN.n_ranges.load(Ordering::Relaxed);
    let mut ranges = [(0u64, 0u64); MAX_RANGES];
    for (i, r) in ranges[..n_ranges].iter_mut().enumerate() {
        *r = (
            PLAN.range_start[i].load(Ordering::Relaxed),
            PLAN.range_qwords[i].load(Ordering::Relaxed),
        );
    }
    let ranges = &ranges[..n_ranges];

    let mut state = SEED ^ (slot as u64).wrapping_mul(SEED_STEP);
    let mut expected = 0u64;
    for i in 0..count {
        let mut k = next(&mut state) % qwords;
        let mut addr = 0;
        for &(start, len) in ranges {
            if k < len {
                addr = start + k * 8;
                break;
            }
            k -= len;
        }
        let value = addr ^ LOOKUP_XOR;
        // SAFETY: `addr` is a qword of one of the plan's ranges: usable RAM above the image
        // (from the e820 map), identity-mapped, outside every CPU's descriptor and table, that
        // no Rust object occupies (another CPU may store to it too, always this same value);
        // `table + 8 * i` is inside this slot's table pages, usable RAM checked by the BSP.
        unsafe {
            write_volatile(addr as *mut u64, value);
            write_volatile((table + 8 * i) as *mut u64, addr);
        }
        expected = expected.wrapping_add(value);
    }
    expected
}

/// Slot `slot`'s rounds; the outcome goes to `RESULTS[slot]`.
fn run_rounds(slot: usize) {
    let count = PLAN.count.load(Ordering::Relaxed);
    let rounds = PLAN.rounds.load(Ordering::Relaxed);
    let serialized = PLAN.serialized.load(Ordering::Relaxed);
    let desc = PLAN.desc[slot].load(Ordering::Relaxed);
    let table = desc + PAGE;
    let res = &RESULTS[slot];
    let expected = res.expected.load(Ordering::Relaxed);
    let mut total_ns = 0u64;
    let mut errors = 0u64;
    for round in 0..rounds {
        put64(desc, D_TABLE, table);
        put32(desc, D_COUNT, count as u32);
        put32(desc, D_FLAGS, 0);
        put64(desc, D_SUM, !expected);
        put32(desc, D_FAILED, FAILED_UNSET);
        put32(desc, D_RESERVED, 0);
        put64(desc, D_NS, NS_UNSET);
        if serialized {
            while DOORBELL
                .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
            {
                pause();
            }
        }
        outl(LOOKUP_PORT_LO, desc as u32);
        outl_doorbell(LOOKUP_PORT_HI, (desc >> 32) as u32);
        if serialized {
            DOORBELL.store(false, Ordering::Release);
        }
        let a = Answer {
            sum: get64(desc, D_SUM),
            failed: get32(desc, D_FAILED),
            ns: get64(desc, D_NS),
        };
        if a.ns != NS_UNSET {
            total_ns = total_ns.saturating_add(a.ns);
        }
        if a.sum != expected || a.failed != 0 || a.ns == NS_UNSET {
            if errors == 0 {
                res.first_round.store(round, Ordering::Relaxed);
                res.err_sum.store(a.sum, Ordering::Relaxed);
                res.err_failed.store(u64::from(a.failed), Ordering::Relaxed);
                res.err_ns.store(a.ns, Ordering::Relaxed);
            }
            errors += 1;
        }
    }
    res.total_ns.store(total_ns, Ordering::Relaxed);
    res.errors.store(errors, Ordering::Relaxed);
}

/// Waits until `counter` reaches `n`.
fn wait_for(counter: &AtomicUsize, n: usize) {
    while counter.load(Ordering::Acquire) < n {
        pause();
    }
}

/// An AP's part (from `smp::ap_main`, once the BSP has released the APs): takes a slot,
/// builds its table, waits for the start, runs its rounds. Returns at once if every slot is
/// taken (an AP that came too late to be counted online).
pub fn ap_main(cpu: usize) {
    let slot = NEXT_SLOT.fetch_add(1, Ordering::Relaxed);
    if slot >= PLAN.cpus.load(Ordering::Relaxed) {
        return;
    }
    let res = &RESULTS[slot];
    res.cpu.store(cpu, Ordering::Relaxed);
    res.expected.store(build(slot), Ordering::Relaxed);
    BUILT.fetch_add(1, Ordering::Release);
    while !START.load(Ordering::Acquire) {
        pause();
    }
    run_rounds(slot);
    DONE.fetch_add(1, Ordering::Release);
}

/// Fails the workload before the APs have a job: they are told to halt first.
fn give_up(workload: &Workload<'_>, why: fmt::Arguments<'_>) -> ! {
    smp::release_aps(ApJob::Halt);
    fail(workload, why)
}

/// Cuts `[start, end)` (qword-aligned) around `holes` (sorted, disjoint) into `ranges`.
fn add_ranges(
    start: u64,
    end: u64,
    holes: &[(u64, u64)],
    ranges: &mut [(u64, u64); MAX_RANGES],
    n: &mut usize,
) {
    let mut push = |s: u64, e: u64| {
        if s < e && *n < MAX_RANGES {
            ranges[*n] = (s, (e - s) / 8);
            *n += 1;
        }
    };
    let mut cur = start;
    for &(hs, he) in holes {
        if he <= cur || hs >= end {
            continue;
        }
        push(cur, hs.max(cur));
        cur = cur.max(he);
    }
    push(cur, end);
}

pub fn run(workload: &Workload<'_>, opts: &Options<'_>, zp: &[u8]) -> ! {
    let count = number_option(workload, "count", opts.count, boot::DEFAULT_LOOKUP_COUNT);
    let rounds = number_option(workload, "rounds", opts.rounds, boot::DEFAULT_LOOKUP_ROUNDS);
    if u32::try_from(count).is_err() {
        fail(
            workload,
            format_args!("count={count} does not fit the descriptor's u32"),
        );
    }

    smp::hold_aps();
    let (online, _listed) = start_cpus(workload, opts, zp);
    let cpus = online.min(MAX_CPUS);

    // Each slot's descriptor, then its table, in the pages above the image: at k * 4 GiB + X
    // (one low dword for all), else one after another from X (doorbells serialized).
    let image_end = addr_of!(crate::_end) as u64;
    let base = image_end.max(crate::MIB).next_multiple_of(PAGE);
    let span = (count * 8).next_multiple_of(PAGE) + PAGE;
    let fits = |d: u64| in_usable_ram(zp, d, d + span);
    let n = cpus as u64;
    let serialized = if (0..n).all(|k| fits(base + k * FOUR_GIB)) {
        false
    } else if (0..n).all(|k| fits(base + k * span)) {
        true
    } else if cpus == 1 {
        give_up(
            workload,
            format_args!(
                "no room at {base:#x} for the descriptor and a table of {count} addresses"
            ),
        );
    } else {
        give_up(
            workload,
            format_args!(
                "no room at {base:#x} for {cpus} descriptors and tables of {count} addresses"
            ),
        );
    };
    let mut holes = [(0u64, 0u64); MAX_CPUS];
    for (k, hole) in holes[..cpus].iter_mut().enumerate() {
        let stride = if serialized { span } else { FOUR_GIB };
        let d = base + k as u64 * stride;
        PLAN.desc[k].store(d, Ordering::Relaxed);
        *hole = (d, d + span);
    }

    // The usable RAM above the first descriptor, less every slot's pages, in qwords.
    let mut ranges = [(0u64, 0u64); MAX_RANGES];
    let mut n_ranges = 0;
    for e in boot::e820(zp).filter(|e| e.kind == E820_RAM) {
        let start = e.addr.max(base).next_multiple_of(8);
        let end = e.end() & !7;
        if start < end {
            add_ranges(start, end, &holes[..cpus], &mut ranges, &mut n_ranges);
        }
    }
    let mut qwords = 0u64;
    for (i, &(start, len)) in ranges[..n_ranges].iter().enumerate() {
        PLAN.range_start[i].store(start, Ordering::Relaxed);
        PLAN.range_qwords[i].store(len, Ordering::Relaxed);
        qwords += len;
    }
    if qwords == 0 {
        give_up(workload, format_args!("no usable RAM above the table"));
    }
    PLAN.n_ranges.store(n_ranges, Ordering::Relaxed);
    PLAN.qwords.store(qwords, Ordering::Relaxed);
    PLAN.count.store(count, Ordering::Relaxed);
    PLAN.rounds.store(rounds, Ordering::Relaxed);
    PLAN.cpus.store(cpus, Ordering::Relaxed);
    PLAN.serialized.store(serialized, Ordering::Relaxed);
    if serialized && cpus > 1 {
        println!(
            "lookup-bench: no RAM at {:#x} for cpu slot 1's descriptor: descriptors one after \
             another, doorbells serialized (the lookup device latches one low dword for all \
             vCPUs)",
            base + FOUR_GIB
        );
    }
    smp::release_aps(ApJob::LookupBench);

    RESULTS[0].cpu.store(0, Ordering::Relaxed);
    RESULTS[0].expected.store(build(0), Ordering::Relaxed);
    BUILT.fetch_add(1, Ordering::Release);
    wait_for(&BUILT, cpus);
    for (slot, res) in RESULTS[..cpus].iter().enumerate() {
        let desc = PLAN.desc[slot].load(Ordering::Relaxed);
        let table = desc + PAGE;
        let expected = res.expected.load(Ordering::Relaxed);
        if cpus == 1 {
            println!(
                "lookup-bench: descriptor at {desc:#x}, table of {count} addresses at \
                 {table:#x}, expected sum {expected:#018x}"
            );
        } else {
            println!(
                "lookup-bench: cpu {}: descriptor at {desc:#x}, table of {count} addresses at \
                 {table:#x}, expected sum {expected:#018x}",
                res.cpu.load(Ordering::Relaxed)
            );
        }
    }
    START.store(true, Ordering::Release);
    run_rounds(0);
    DONE.fetch_add(1, Ordering::Release);
    wait_for(&DONE, cpus);

    let mut total_ns = 0u64;
    let mut errors = 0u64;
    let mut first_bad: Option<&CpuResult> = None;
    for res in &RESULTS[..cpus] {
        let ns = res.total_ns.load(Ordering::Relaxed);
        let e = res.errors.load(Ordering::Relaxed);
        println!(
            "lookup-bench: cpu {}: {rounds} rounds x {count} lookups, vmm ns {ns}, errors {e}",
            res.cpu.load(Ordering::Relaxed)
        );
        total_ns = total_ns.saturating_add(ns);
        errors += e;
        if e != 0 && first_bad.is_none() {
            first_bad = Some(res);
        }
    }
    if cpus == 1 {
        println!(
            "lookup-bench: {rounds} rounds x {count} lookups, vmm ns {total_ns}, errors {errors}"
        );
    } else {
        println!(
            "lookup-bench: {rounds} rounds x {count} lookups x {cpus} cpus, vmm ns {total_ns}, \
             errors {errors}"
        );
    }
    let Some(res) = first_bad else {
        finish(workload)
    };
    let on = OnCpu(cpus, res.cpu.load(Ordering::Relaxed));
    let e = res.errors.load(Ordering::Relaxed);
    let round = res.first_round.load(Ordering::Relaxed);
    let expected = res.expected.load(Ordering::Relaxed);
    let a = Answer {
        sum: res.err_sum.load(Ordering::Relaxed),
        failed: res.err_failed.load(Ordering::Relaxed) as u32,
        ns: res.err_ns.load(Ordering::Relaxed),
    };
    if a.sum == !expected && a.failed == FAILED_UNSET && a.ns == NS_UNSET {
        let or_mixed = if cpus > 1 {
            ", or a doorbell that ran another CPU's descriptor"
        } else {
            ""
        };
        fail(
            workload,
            format_args!(
                "{e} of {rounds} rounds wrong{on}; round {round}: no answer, the out fields \
                 are as the guest set them (no lookup device at port {LOOKUP_PORT_LO:#x}\
                 {or_mixed}?)"
            ),
        );
    }
    fail(
        workload,
        format_args!(
            "{e} of {rounds} rounds wrong{on}; round {round}: sum {:#018x}, expected \
             {expected:#018x}, {} failed lookups, vmm ns {}",
            a.sum, a.failed, a.ns
        ),
    )
}
