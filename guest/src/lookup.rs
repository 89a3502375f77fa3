//! `workload=lookup-bench`: the end-to-end memory-lookup benchmark (see README.md).
//!
//! The guest puts a descriptor in the first page above its image and, in the pages after
//! it, a table of N guest-physical addresses drawn from a fixed pseudo-random sequence,
//! uniformly over the usable RAM above the table (qword-aligned). At each address it stores
//! `addr ^ LOOKUP_XOR` and adds that to the expected sum. Then, R times, it resets the
//! descriptor's out fields to sentinels, rings the lookup device (the descriptor's gpa to
//! ports 0x520 and 0x524; the VMM does the lookups before the second `out` returns) and
//! checks what the VMM wrote back. A round whose sum is not the expected one, that reports
//! failed lookups, or whose time field the VMM did not write, is an error.
//!
//! On PVM every guest instruction is emulated (about 3 us): building the table costs a few
//! dozen instructions per entry (4096 entries: about 0.3 s), a round two exits plus the
//! VMM's work.

use crate::arch::{outl, outl_doorbell};
use crate::boot::{self, Options, Workload, E820_RAM};
use crate::{fail, finish, in_usable_ram, number_option, println};
use crate::{LOOKUP_PORT_HI, LOOKUP_PORT_LO, PAGE};
use core::ptr::{addr_of, read_volatile, write_volatile};

/// What the guest stores at each table address: `addr ^ LOOKUP_XOR`.
pub const LOOKUP_XOR: u64 = 0x5a5a_5a5a_5a5a_5a5a;
/// The pseudo-random sequence's seed (splitmix64).
const SEED: u64 = 0x0123_4567_89ab_cdef;
/// The most usable-RAM ranges the addresses are spread over.
const MAX_RANGES: usize = 16;

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

/// splitmix64: the next value of the fixed sequence.
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A qword in the descriptor page.
fn put64(desc: u64, off: u64, v: u64) {
    // SAFETY: `desc` is a page of usable RAM above the guest image (checked by the caller),
    // identity-mapped, that no Rust object occupies.
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

pub fn run(workload: &Workload<'_>, opts: &Options<'_>, zp: &[u8]) -> ! {
    let count = number_option(workload, "count", opts.count, boot::DEFAULT_LOOKUP_COUNT);
    let rounds = number_option(workload, "rounds", opts.rounds, boot::DEFAULT_LOOKUP_ROUNDS);
    let Ok(n) = u32::try_from(count) else {
        fail(
            workload,
            format_args!("count={count} does not fit the descriptor's u32"),
        );
    };

    // The descriptor, then the table, in the pages above the image.
    let image_end = addr_of!(crate::_end) as u64;
    let desc = image_end.max(crate::MIB).next_multiple_of(PAGE);
    let table = desc + PAGE;
    let table_end = count
        .checked_mul(8)
        .and_then(|b| table.checked_add(b))
        .map(|e| e.next_multiple_of(PAGE));
    let Some(table_end) = table_end.filter(|&e| in_usable_ram(zp, desc, e)) else {
        fail(
            workload,
            format_args!(
                "no room at {desc:#x} for the descriptor and a table of {count} addresses"
            ),
        );
    };

    // The usable RAM above the table, in qwords.
    let mut ranges = [(0u64, 0u64); MAX_RANGES];
    let mut n_ranges = 0;
    let mut qwords = 0u64;
    for e in boot::e820(zp).filter(|e| e.kind == E820_RAM) {
        let start = e.addr.max(table_end).next_multiple_of(8);
        let end = e.end() & !7;
        if start < end && n_ranges < MAX_RANGES {
            ranges[n_ranges] = (start, (end - start) / 8);
            qwords += (end - start) / 8;
            n_ranges += 1;
        }
    }
    if qwords == 0 {
        fail(workload, format_args!("no usable RAM above the table"));
    }
    let ranges = &ranges[..n_ranges];

    let mut state = SEED;
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
        // SAFETY: `addr` is a qword of usable RAM above the table (a range above computed
        // from the e820 map), identity-mapped, that no Rust object occupies; `table + 8 * i`
        // is inside the table's pages, checked to be usable RAM above the image.
        unsafe {
            write_volatile(addr as *mut u64, value);
            write_volatile((table + 8 * i) as *mut u64, addr);
        }
        expected = expected.wrapping_add(value);
    }
    println!(
        "lookup-bench: descriptor at {desc:#x}, table of {count} addresses at {table:#x}, \
         expected sum {expected:#018x}"
    );

    let mut total_ns = 0u64;
    let mut errors = 0u64;
    let mut first_error: Option<(u64, Answer)> = None;
    for round in 0..rounds {
        put64(desc, D_TABLE, table);
        put32(desc, D_COUNT, n);
        put32(desc, D_FLAGS, 0);
        put64(desc, D_SUM, !expected);
        put32(desc, D_FAILED, FAILED_UNSET);
        put32(desc, D_RESERVED, 0);
        put64(desc, D_NS, NS_UNSET);
        outl(LOOKUP_PORT_LO, desc as u32);
        outl_doorbell(LOOKUP_PORT_HI, (desc >> 32) as u32);
        let a = Answer {
            sum: get64(desc, D_SUM),
            failed: get32(desc, D_FAILED),
            ns: get64(desc, D_NS),
        };
        if a.ns != NS_UNSET {
            total_ns = total_ns.saturating_add(a.ns);
        }
        if a.sum != expected || a.failed != 0 || a.ns == NS_UNSET {
            errors += 1;
            first_error.get_or_insert((round, a));
        }
    }
    println!("lookup-bench: {rounds} rounds x {count} lookups, vmm ns {total_ns}, errors {errors}");
    let Some((round, a)) = first_error else {
        finish(workload)
    };
    if a.sum == !expected && a.failed == FAILED_UNSET && a.ns == NS_UNSET {
        fail(
            workload,
            format_args!(
                "{errors} of {rounds} rounds wrong; round {round}: no answer, the out fields \
                 are as the guest set them (no lookup device at port {LOOKUP_PORT_LO:#x}?)"
            ),
        );
    }
    fail(
        workload,
        format_args!(
            "{errors} of {rounds} rounds wrong; round {round}: sum {:#018x}, expected \
             {expected:#018x}, {} failed lookups, vmm ns {}",
            a.sum, a.failed, a.ns
        ),
    )
}
