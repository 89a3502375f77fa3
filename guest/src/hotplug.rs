//! `workload=hotplug`: watches the hot-plugged RAM window and the hot-pluggable test device and
//! prints a line on every change (see README.md).
//!
//! Each poll reads the first qword of the RAM window at [`HOTPLUG_RAM`] and the dword at port
//! [`HOTPLUG_DEVICE_PORT`]; nothing there reads all-ones. While the window is absent the read
//! is an MMIO exit, and the port read is always an exit (about 9-10 us each on PVM), so a poll
//! costs about 20 us and a handful of emulated instructions; lines are printed only on changes.

use crate::boot::{self, Options, Workload};
use crate::{fail, finish_with, number_option, println};
use crate::{HOTPLUG_DEVICE_PORT, HOTPLUG_RAM, HOTPLUG_RAM_SIZE};
use core::fmt;
use core::ptr::read_volatile;

/// What the RAM window holds.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ram {
    Absent,
    /// Present, with this pattern in its first qword.
    Present(u64),
}

impl fmt::Display for Ram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ram::Absent => write!(f, "absent"),
            Ram::Present(p) => write!(f, "present pattern {p:#018x}"),
        }
    }
}

/// What port 0x530 reads.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Device {
    Absent,
    /// Present, reading this value.
    Present(u32),
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Absent => write!(f, "absent"),
            Device::Present(v) => write!(f, "present value {v:#010x}"),
        }
    }
}

/// A qword of the RAM window.
fn read_window(offset: u64) -> u64 {
    // SAFETY: HOTPLUG_RAM..+2 MiB is in the 32-bit MMIO hole, which the loader identity-maps
    // and no Rust object occupies: the read is either an MMIO exit (nothing there: all-ones)
    // or a read of RAM the VMM hot-added. It is only read.
    unsafe { read_volatile((HOTPLUG_RAM + offset) as *const u64) }
}

fn read_ram() -> Ram {
    match read_window(0) {
        u64::MAX => Ram::Absent,
        p => Ram::Present(p),
    }
}

fn read_device() -> Device {
    match crate::arch::inl(HOTPLUG_DEVICE_PORT) {
        u32::MAX => Device::Absent,
        v => Device::Present(v),
    }
}

/// Checks a RAM window that just became present with `pattern`: the VMM fills the whole
/// 2 MiB block with it, so the last qword must hold it too. A last qword that differs while
/// the first still holds the pattern fails the workload (a block mapped short, or not
/// filled); if the first changed meanwhile, the block was removed or replaced in between,
/// which the next poll reports.
fn check_block(workload: &Workload<'_>, pattern: u64) {
    let last = read_window(HOTPLUG_RAM_SIZE - 8);
    if last != pattern && read_window(0) == pattern {
        fail(
            workload,
            format_args!(
                "ram at {HOTPLUG_RAM:#x} reads pattern {pattern:#018x} in its first qword but \
                 {last:#018x} in its last"
            ),
        );
    }
}

pub fn run(workload: &Workload<'_>, opts: &Options<'_>) -> ! {
    let cycles = number_option(
        workload,
        "cycles",
        opts.cycles,
        boot::DEFAULT_HOTPLUG_CYCLES,
    );
    let mut ram = read_ram();
    let mut device = read_device();
    if let Ram::Present(p) = ram {
        check_block(workload, p);
    }
    println!("hotplug: ready (ram {ram}, device {device})");
    let mut ram_cycles = 0u64;
    let mut device_cycles = 0u64;
    while ram_cycles < cycles {
        let now = read_ram();
        if now != ram {
            if let Ram::Present(p) = now {
                check_block(workload, p);
            } else {
                ram_cycles += 1;
            }
            ram = now;
            println!("hotplug: ram {ram}");
        }
        let now = read_device();
        if now != device {
            if now == Device::Absent {
                device_cycles += 1;
            }
            device = now;
            println!("hotplug: device {device}");
        }
    }
    finish_with(
        workload,
        format_args!("{ram_cycles} cycles, {device_cycles} device cycles"),
    )
}
