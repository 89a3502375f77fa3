//! The built-in test guest: a freestanding x86_64 kernel (see guest/README.md).
//!
//! vmm/build.rs compiles this crate with the host's rustc as a `staticlib` for
//! x86_64-unknown-linux-gnu (`-C panic=abort -C relocation-model=static -C code-model=small
//! -C no-redzone`), links it with entry.s by guest.ld at 0x100000, and packs it as a bzImage.
//! entry.s sets up the GDT, IDT, stack and SSE, then calls [`rust_main`] with the zero page.

#![no_std]
#![no_main]

pub mod acpi;
pub mod arch;
pub mod boot;
pub mod crc32;
pub mod exceptions;
pub mod hotplug;
pub mod lookup;
pub mod mp;
pub mod serial;
pub mod smp;

use crate::arch::{inl, outb, outl, outw, pause};
use crate::boot::{CpuSource, E820Entry, Options, Workload, E820_RAM};
use core::fmt;
use core::fmt::Write as _;
use core::panic::PanicInfo;
use core::ptr::{addr_of, read_volatile, write_volatile};

/// pvpanic (QEMU's ISA device): writing 1 says "guest panicked".
const PVPANIC_PORT: u16 = 0x505;
/// The i8042's command port: 0xfe pulses the reset line.
const I8042_COMMAND: u16 = 0x64;
/// The test counter: each dword `out` counts one write; `in` returns the count.
const COUNTER_PORT: u16 = 0x510;
const COUNTER_READ_PORT: u16 = 0x511;
/// The lookup device: the descriptor's gpa, low dword then high dword (the doorbell).
const LOOKUP_PORT_LO: u16 = 0x520;
const LOOKUP_PORT_HI: u16 = 0x524;
/// The hot-pluggable test device: a dword, all-ones while absent.
const HOTPLUG_DEVICE_PORT: u16 = 0x530;
/// The hot-plugged RAM window (in the 32-bit MMIO hole, identity-mapped by the loader).
const HOTPLUG_RAM: u64 = 0xe000_0000;
const HOTPLUG_RAM_SIZE: u64 = 2 * MIB;

const MIB: u64 = 1 << 20;
const PAGE: u64 = 4096;

extern "C" {
    /// The end of the guest image in memory, .bss and stacks included (guest.ld).
    static _end: u8;
}

/// Bytes shown as text: printable ASCII as is, anything else as `?`.
struct Printable<'a>(&'a [u8]);

impl fmt::Display for Printable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for &b in self.0 {
            f.write_char(if (0x20..0x7f).contains(&b) {
                b as char
            } else {
                '?'
            })?;
        }
        Ok(())
    }
}

/// Physical memory through the identity map, below 4 GiB: firmware areas and tables (MP, ACPI)
/// and the command line.
struct IdentityMap;

impl mp::PhysMem for IdentityMap {
    fn bytes(&self, addr: u64, len: usize) -> Option<&[u8]> {
        let end = addr.checked_add(len as u64)?;
        if addr == 0 || end > 1 << 32 {
            return None;
        }
        // SAFETY: the loader identity-maps the first 4 GiB; `addr` is not null and the range
        // does not wrap. Only the command line, firmware areas and the tables the loader
        // provides (MP below 1 MiB, ACPI in reserved or ACPI e820 areas) are read this way,
        // which no Rust object overlaps, and they are only read.
        Some(unsafe { core::slice::from_raw_parts(addr as *const u8, len) })
    }
}

/// Writes 1 to pvpanic, then halts with interrupts off.
pub fn pvpanic_halt() -> ! {
    outb(PVPANIC_PORT, 1);
    arch::halt()
}

/// Asks the i8042 for a reset; halts if the VMM does not act on it.
fn reset() -> ! {
    outb(I8042_COMMAND, 0xfe);
    for _ in 0..100_000 {
        pause();
    }
    println!("rvmm-guest: the i8042 reset did not happen; halting");
    arch::halt()
}

/// Reports a failed workload and crashes through pvpanic.
fn fail(workload: &Workload<'_>, why: fmt::Arguments<'_>) -> ! {
    println!("workload {}: FAILED ({})", Printable(workload.name()), why);
    pvpanic_halt()
}

/// Reports success and resets.
fn finish(workload: &Workload<'_>) -> ! {
    println!("workload {}: ok", Printable(workload.name()));
    println!("rvmm-guest: done");
    reset()
}

/// Reports success with a detail (`workload <name>: ok (<detail>)`) and resets.
fn finish_with(workload: &Workload<'_>, detail: fmt::Arguments<'_>) -> ! {
    println!("workload {}: ok ({})", Printable(workload.name()), detail);
    println!("rvmm-guest: done");
    reset()
}

/// The number `key=` gives (decimal or 0x hex), `default` without one; fails the workload
/// if it is not a number.
fn number_option(workload: &Workload<'_>, key: &str, value: Option<&[u8]>, default: u64) -> u64 {
    match value {
        None => default,
        Some(text) => match boot::parse_u64(text) {
            Some(n) => n,
            None => fail(
                workload,
                format_args!("{key}={} is not a number", Printable(text)),
            ),
        },
    }
}

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    {
        let mut c = serial::lock_for_crash();
        let _ = write!(c, "rvmm-guest: panic: {}", info.message());
        if let Some(loc) = info.location() {
            let _ = write!(c, " ({}:{})", loc.file(), loc.line());
        }
        let _ = writeln!(c);
    }
    pvpanic_halt()
}

/// The BSP's Rust entry, from entry.s `startup_64`, with RSI (the zero page's address).
#[no_mangle]
pub extern "C" fn rust_main(zero_page: u64) -> ! {
    serial::init();
    if zero_page == 0 || zero_page >= 1 << 32 {
        println!("rvmm-guest: booted without boot_params (RSI {zero_page:#x})");
        pvpanic_halt();
    }
    // SAFETY: RSI points at the 4 KiB zero page (64-bit boot protocol), identity-mapped; it
    // is only read, and nothing writes it while the guest runs.
    let zp = unsafe { core::slice::from_raw_parts(zero_page as *const u8, boot::ZERO_PAGE_SIZE) };
    let (cmd_addr, cmd_max) = boot::cmdline_location(zp);
    let raw = mp::PhysMem::bytes(&IdentityMap, cmd_addr, cmd_max).unwrap_or(&[]);
    let cmdline = boot::cmdline_text(raw);
    println!("rvmm-guest: booted (cmdline \"{}\")", Printable(cmdline));

    let opts = boot::parse_cmdline(cmdline);
    let workload = opts.workload;
    if workload == Workload::Reset {
        finish(&workload);
    }

    let mut usable: u64 = 0;
    for e in boot::e820(zp) {
        print_e820(&e);
        if e.kind == E820_RAM {
            usable += e.size;
        }
    }
    println!("mem: usable {} MiB", usable / MIB);
    let initrd_ok = report_initrd(zp);

    match workload {
        Workload::Smoke => smoke(&workload, &opts, zp, initrd_ok),
        Workload::IoStorm => io_storm(&workload, &opts),
        Workload::MemTouch => mem_touch(&workload, zp),
        Workload::Panic => panic!("workload=panic asked for a panic"),
        Workload::TripleFault => {
            println!("workload triple-fault: loading an empty IDT and executing ud2");
            arch::raise_triple_fault()
        }
        Workload::Echo => echo(&workload),
        Workload::Probe => probe(&workload),
        Workload::Fault => {
            println!("workload fault: executing ud2");
            arch::raise_invalid_opcode()
        }
        Workload::Hotplug => hotplug::run(&workload, &opts),
        Workload::LookupBench => lookup::run(&workload, &opts, zp),
        Workload::Flood => flood(&workload, &opts),
        Workload::Reset => finish(&workload),
        Workload::Unknown(_) => fail(&workload, format_args!("unknown workload")),
    }
}

fn print_e820(e: &E820Entry) {
    let last = e.end().saturating_sub(1);
    if e.kind_name() == "other" {
        println!("e820: {:#018x}-{:#018x} type-{}", e.addr, last, e.kind);
    } else {
        println!("e820: {:#018x}-{:#018x} {}", e.addr, last, e.kind_name());
    }
}

/// Whether [start, end) lies inside one usable e820 region.
fn in_usable_ram(zp: &[u8], start: u64, end: u64) -> bool {
    boot::e820(zp).any(|e| e.kind == E820_RAM && e.addr <= start && end <= e.end())
}

/// Prints the initrd line; false if the initrd is not in usable RAM.
fn report_initrd(zp: &[u8]) -> bool {
    let Some((addr, size)) = boot::initrd(zp) else {
        println!("initrd: none");
        return true;
    };
    let inside = addr
        .checked_add(size)
        .is_some_and(|end| in_usable_ram(zp, addr, end));
    if !inside {
        println!("initrd: {size} bytes at {addr:#x}, outside usable RAM");
        return false;
    }
    let mut crc = 0;
    let mut at = addr;
    let mut left = size;
    while left > 0 {
        let chunk = left.min(MIB);
        // SAFETY: [addr, addr + size) is inside a usable e820 region, which the loader
        // identity-maps; it holds no Rust object (the image ends below it or the loader
        // broke the protocol), and it is only read.
        let bytes = unsafe { core::slice::from_raw_parts(at as *const u8, chunk as usize) };
        crc = crc32::update(crc, bytes);
        at += chunk;
        left -= chunk;
    }
    println!("initrd: {size} bytes crc32 {crc:#010x}");
    true
}

fn smoke(workload: &Workload<'_>, opts: &Options<'_>, zp: &[u8], initrd_ok: bool) -> ! {
    let (online, listed) = start_cpus(workload, opts, zp);
    if !initrd_ok {
        fail(workload, format_args!("initrd outside usable RAM"));
    }
    if online != listed {
        fail(workload, format_args!("{online} of {listed} cpus online"));
    }
    finish(workload)
}

/// Starts the CPUs that `cpus=` names (the MP table's or the MADT's), printing the `mp:` or
/// `acpi:` line and the `cpu` lines; fails the workload on a bad `cpus=` value or a bad ACPI
/// table. Returns (online, listed).
fn start_cpus(workload: &Workload<'_>, opts: &Options<'_>, zp: &[u8]) -> (usize, usize) {
    match opts.cpus {
        CpuSource::Mp => start_cpus_mp(),
        CpuSource::Acpi => start_cpus_acpi(workload, zp),
        CpuSource::Unknown(v) => fail(
            workload,
            format_args!("cpus={} is neither mp nor acpi", Printable(v)),
        ),
    }
}

/// `cpus=mp`: the `mp:` line, then the CPUs of the MP table started. Returns (online, listed).
fn start_cpus_mp() -> (usize, usize) {
    let mp = match mp::find(&IdentityMap) {
        Ok(cfg) => {
            println!(
                "mp: table at {:#x} (floating pointer {:#x}), {} processors, lapic {:#x}",
                cfg.table,
                cfg.floating_pointer,
                cfg.processors().len(),
                cfg.lapic
            );
            Some(cfg)
        }
        Err(mp::MpError::NotFound) => {
            println!("mp: no MP table");
            None
        }
        Err(mp::MpError::BadTable(at, why)) => {
            println!("mp: floating pointer at {at:#x}: {why}");
            None
        }
    };
    smp::start_all(mp.as_ref().map_or(&[], |m| m.processors()), "mp")
}

/// `cpus=acpi`: the `acpi:` line, then the CPUs of the MADT started. A table that fails its
/// checks fails the workload. Returns (online, listed).
fn start_cpus_acpi(workload: &Workload<'_>, zp: &[u8]) -> (usize, usize) {
    match acpi::find(&IdentityMap, boot::acpi_rsdp_addr(zp)) {
        Ok(cfg) => {
            println!(
                "acpi: rsdp at {:#x}, madt at {:#x}, {} processors",
                cfg.rsdp,
                cfg.madt,
                cfg.processors().len()
            );
            smp::start_all(cfg.processors(), "acpi")
        }
        Err(acpi::AcpiError::NotFound) => {
            println!("acpi: no RSDP");
            smp::start_all(&[], "acpi")
        }
        Err(acpi::AcpiError::BadTable(at, why)) => {
            println!("acpi: table at {at:#x}: {why}");
            fail(workload, format_args!("ACPI: {why}"))
        }
    }
}

fn io_storm(workload: &Workload<'_>, opts: &Options<'_>) -> ! {
    let count = number_option(workload, "count", opts.count, boot::DEFAULT_IO_STORM_COUNT);
    let before = inl(COUNTER_READ_PORT);
    for i in 0..count {
        outl(COUNTER_PORT, i as u32);
    }
    let after = inl(COUNTER_READ_PORT);
    let counted = after.wrapping_sub(before);
    println!("io-storm: {count} writes to port {COUNTER_PORT:#x}, counter advanced by {counted}");
    if u64::from(counted) != count & 0xffff_ffff {
        fail(
            workload,
            format_args!("counter advanced by {counted}, expected {count}"),
        );
    }
    finish(workload)
}

/// Console output as fast as the guest can print: `count=N` numbered lines (0: for ever),
/// then the ok line and a reset. Each line carries its number and a fixed tail, so a reader
/// can tell which lines arrived whole.
fn flood(workload: &Workload<'_>, opts: &Options<'_>) -> ! {
    let count = number_option(workload, "count", opts.count, 0);
    let mut i: u64 = 0;
    while count == 0 || i < count {
        println!("flood: {i:08} abcdefghijklmnopqrstuvwxyz0123456789");
        i += 1;
    }
    finish_with(workload, format_args!("{count} lines"))
}

/// The value mem-touch writes at `addr`: differs for every qword, so that two pages that
/// alias one another are caught. mem-touch writes the first and the last qword of each page
/// (every page is touched, so the VMM has to back all of RAM) rather than every byte: on PVM
/// each first touch of a page is an exit, after which KVM emulates the next instructions,
/// so instructions per page are what costs time there.
fn pattern(addr: u64) -> u64 {
    addr.rotate_left(23) ^ 0x5a5a_c3c3_a5a5_3c3c
}

/// Calls `f(start, end)` for each page-aligned range of usable RAM above the image.
fn for_each_touch_range(zp: &[u8], mut f: impl FnMut(u64, u64)) {
    let image_end = addr_of!(_end) as u64;
    let floor = image_end.max(MIB).next_multiple_of(PAGE);
    for e in boot::e820(zp).filter(|e| e.kind == E820_RAM) {
        let start = e.addr.max(floor).next_multiple_of(PAGE);
        let end = e.end() & !(PAGE - 1);
        if start < end {
            f(start, end);
        }
    }
}

fn mem_touch(workload: &Workload<'_>, zp: &[u8]) -> ! {
    let mut pages = 0u64;
    let mut lowest = u64::MAX;
    for_each_touch_range(zp, |start, end| {
        lowest = lowest.min(start);
        let mut page = start;
        while page < end {
            for a in [page, page + PAGE - 8] {
                // SAFETY: `a` is in usable RAM above the guest image (identity-mapped), which
                // no Rust object and nothing of the loader's that the guest still needs
                // occupies (the zero page, command line and page tables are below 1 MiB).
                unsafe { write_volatile(a as *mut u64, pattern(a)) };
            }
            page += PAGE;
        }
        pages += (end - start) / PAGE;
    });
    let mut bad: Option<(u64, u64)> = None;
    for_each_touch_range(zp, |start, end| {
        let mut page = start;
        while page < end && bad.is_none() {
            for a in [page, page + PAGE - 8] {
                // SAFETY: as for the writes above.
                let v = unsafe { read_volatile(a as *const u64) };
                if v != pattern(a) && bad.is_none() {
                    bad = Some((a, v));
                }
            }
            page += PAGE;
        }
    });
    if let Some((at, v)) = bad {
        fail(
            workload,
            format_args!("at {at:#x} read {v:#x}, wrote {:#x}", pattern(at)),
        );
    }
    if pages == 0 {
        fail(workload, format_args!("no usable RAM above the image"));
    }
    println!(
        "mem-touch: {pages} pages ({} MiB) from {lowest:#x} written and verified",
        pages * PAGE / MIB
    );
    finish(workload)
}

/// Ports and an MMIO address no device claims (the MMIO one is in the 32-bit hole, which the
/// loader identity-maps with the rest of the first 4 GiB).
const PROBE_PORTS: [u16; 3] = [0x80, 0x1234, 0xfff0];
const PROBE_MMIO: u64 = 0xd000_0000;

fn probe(workload: &Workload<'_>) -> ! {
    let mut all_ones = true;
    for port in PROBE_PORTS {
        outb(port, 0x5a);
        outw(port, 0x5aa5);
        outl(port, 0xdead_beef);
        let v = inl(port);
        println!("probe: port {port:#x} read {v:#x}");
        all_ones &= v == u32::MAX;
    }
    let p = PROBE_MMIO as *mut u32;
    // SAFETY: PROBE_MMIO is identity-mapped and backed by no RAM and no Rust object: every
    // access is an MMIO exit that the VMM answers (or ignores).
    let v = unsafe {
        write_volatile(p as *mut u8, 0x5a);
        write_volatile(p, 0xdead_beef);
        write_volatile(p as *mut u64, 0x0123_4567_89ab_cdef);
        read_volatile(p)
    };
    println!("probe: mmio {PROBE_MMIO:#x} read {v:#x}");
    all_ones &= v == u32::MAX;
    if !all_ones {
        fail(
            workload,
            format_args!("a read of nothing did not return all-ones"),
        );
    }
    finish(workload)
}

fn echo(workload: &Workload<'_>) -> ! {
    const MAX_LINE: usize = 256;
    println!("echo: ready (a line \"quit\" ends)");
    let mut line = [0u8; MAX_LINE];
    let mut len = 0;
    let mut last = 0u8;
    loop {
        let Some(b) = serial::try_read() else {
            pause();
            continue;
        };
        let prev = last;
        last = b;
        match b {
            b'\n' if prev == b'\r' => {}
            b'\r' | b'\n' => {
                println!();
                println!("echo: {}", Printable(&line[..len]));
                if &line[..len] == b"quit" {
                    finish(workload);
                }
                len = 0;
            }
            0x08 | 0x7f => {
                if len > 0 {
                    len -= 1;
                    serial::lock().write_bytes(b"\x08 \x08");
                }
            }
            _ => {
                serial::lock().write_bytes(&[b]);
                if len == MAX_LINE {
                    println!();
                    println!("echo: {}", Printable(&line[..len]));
                    len = 0;
                }
                line[len] = b;
                len += 1;
            }
        }
    }
}
