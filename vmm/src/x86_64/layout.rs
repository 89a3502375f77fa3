//! Where the VMM puts things in guest-physical memory (x86_64): the one guest-physical layout.
//!
//! ```text
//! 0            boot structures (GDT 0x500, zero page, stack, page tables, command line)
//! 0x9fc00      EBDA: MP table; ACPI tables at 0xe0000; reserved in the e820 map up to 1 MiB
//! 1 MiB        the kernel, then RAM up to --mem (at most up to 3 GiB here) ...... "ram-low"
//! 0xc0000000   32-bit MMIO hole: reserved (no device uses it yet)
//! 0xe0000000   the hot-plug window: the only place `ram-add` may put RAM
//! 0xfec00000   IOAPIC (4 KiB)
//! 0xfee00000   local APIC (1 MiB)
//! 0xfffbd000   KVM's TSS (3 pages)
//! 4 GiB        the rest of --mem ........................................... "ram-high"
//! ```
//!
//! rust-vmm's `vm-allocator` allocates ranges out of a pool for a VMM that picks addresses
//! itself; here every range is fixed and `ram-add`'s caller picks the address, so what is
//! needed is a containment check against one window (overlap with RAM already present is the
//! RAM list's own check). [`regions`] is that small table; its tests check that the window
//! overlaps nothing else for every memory size the VMM accepts.

/// The GDT (null, null, `__BOOT_CS` 0x10, `__BOOT_DS` 0x18, TSS 0x20).
pub const GDT: u64 = 0x500;
/// The zero page (Linux `boot_params`), passed in RSI.
pub const ZERO_PAGE: u64 = 0x7000;
/// The boot stack's top (below the page tables).
pub const BOOT_STACK: u64 = 0x8ff0;
/// The PML4; the PDPT follows, then the page directories.
pub const PML4: u64 = 0x9000;
/// The page-directory-pointer table.
pub const PDPT: u64 = 0xa000;
/// The first page directory (one per GiB mapped).
pub const PD_START: u64 = 0xb000;
/// The command line (after the page directories).
pub const CMDLINE: u64 = 0x20000;
/// The most page directories that fit between `PD_START` and `CMDLINE`: 21 GiB mapped.
pub const MAX_PDS: u64 = (CMDLINE - PD_START) / 0x1000;
/// The EBDA, where the MP table goes; reserved in the e820 map up to 1 MiB.
pub const EBDA: u64 = 0x9fc00;
/// Where the protected-mode kernel is loaded (bzImage `code32_start`).
pub const HIGH_MEM: u64 = 0x10_0000;
/// Start of the 32-bit MMIO hole (IOAPIC, LAPIC); RAM above it moves to 4 GiB.
pub const MMIO_HOLE: u64 = 0xc000_0000;
/// End of the hole.
pub const FOUR_GIB: u64 = 0x1_0000_0000;
/// The IOAPIC's MMIO address.
pub const IOAPIC: u64 = 0xfec0_0000;
/// The local APIC's MMIO address.
pub const LAPIC: u64 = 0xfee0_0000;
/// The TSS address KVM needs (three pages just below the BIOS area at 4 GiB).
pub const KVM_TSS: usize = 0xfffb_d000;
/// The size of KVM's TSS area.
pub const KVM_TSS_SIZE: u64 = 3 * 0x1000;
/// The IOAPIC's MMIO size.
pub const IOAPIC_SIZE: u64 = 0x1000;
/// The local APIC's MMIO range (the architectural 1 MiB at 0xfee00000).
pub const LAPIC_SIZE: u64 = 0x10_0000;
/// The start of the hot-plug window, the only guest-physical range where `ram-add` may place
/// RAM: the top of the 32-bit MMIO hole, below the IOAPIC. Above every boot RAM byte whatever
/// `--mem` is (boot RAM stops at the hole and resumes at 4 GiB).
pub const HOTPLUG_START: u64 = 0xe000_0000;
/// The end (exclusive) of the hot-plug window: the IOAPIC.
pub const HOTPLUG_END: u64 = IOAPIC;
/// The smallest guest memory the VMM accepts.
pub const MIN_MEM: u64 = 16 << 20;
/// The largest guest memory (what the boot page tables map, less the hole).
pub const MAX_MEM: u64 = (MAX_PDS << 30) - (FOUR_GIB - MMIO_HOLE);

/// The guest RAM ranges for `mem` bytes: below the hole, then from 4 GiB.
pub fn ram_ranges(mem: u64) -> Vec<(u64, u64)> {
    if mem <= MMIO_HOLE {
        vec![(0, mem)]
    } else {
        vec![(0, MMIO_HOLE), (FOUR_GIB, mem - MMIO_HOLE)]
    }
}

/// What a range of the guest-physical layout is used for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Use {
    /// Boot RAM (the low one also holds the boot structures, the MP and ACPI tables).
    Ram,
    /// Reserved: nothing may be mapped there.
    Reserved,
    /// A device's MMIO registers (emulated by KVM's in-kernel irqchip).
    Mmio,
    /// KVM's TSS pages.
    Tss,
    /// Where `ram-add` may place RAM.
    Hotplug,
}

/// One range of the layout, `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    /// What the range is called in messages.
    pub name: &'static str,
    /// The first address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// What it is for.
    pub kind: Use,
}

/// The guest-physical layout for `mem` bytes of boot RAM, in address order, non-overlapping.
pub fn regions(mem: u64) -> Vec<Region> {
    let r = |name, start, end, kind| Region {
        name,
        start,
        end,
        kind,
    };
    let mut v = vec![r("ram-low", 0, mem.min(MMIO_HOLE), Use::Ram)];
    v.push(r(
        "32-bit MMIO hole",
        MMIO_HOLE,
        HOTPLUG_START,
        Use::Reserved,
    ));
    v.push(r(
        "hot-plug window",
        HOTPLUG_START,
        HOTPLUG_END,
        Use::Hotplug,
    ));
    v.push(r("IOAPIC", IOAPIC, IOAPIC + IOAPIC_SIZE, Use::Mmio));
    v.push(r("local APIC", LAPIC, LAPIC + LAPIC_SIZE, Use::Mmio));
    let tss = KVM_TSS as u64;
    v.push(r("KVM TSS", tss, tss + KVM_TSS_SIZE, Use::Tss));
    if mem > MMIO_HOLE {
        v.push(r(
            "ram-high",
            FOUR_GIB,
            FOUR_GIB + (mem - MMIO_HOLE),
            Use::Ram,
        ));
    }
    v
}

/// Whether `[gpa, gpa + size)` lies inside the hot-plug window (false on overflow).
pub fn in_hotplug_window(gpa: u64, size: u64) -> bool {
    gpa >= HOTPLUG_START && gpa.checked_add(size).is_some_and(|end| end <= HOTPLUG_END)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_are_ordered_disjoint_and_match_the_boot_ram() {
        for mem in [
            MIN_MEM,
            256 << 20,
            MMIO_HOLE,
            MMIO_HOLE + (2 << 20),
            8 << 30,
            MAX_MEM,
        ] {
            let v = regions(mem);
            for w in v.windows(2) {
                assert!(w[0].start < w[0].end, "{mem:#x}: {:?}", w[0]);
                assert!(
                    w[0].end <= w[1].start,
                    "{mem:#x}: {:?} overlaps {:?}",
                    w[0],
                    w[1]
                );
            }
            let ram: Vec<(u64, u64)> = v
                .iter()
                .filter(|r| r.kind == Use::Ram)
                .map(|r| (r.start, r.end - r.start))
                .collect();
            assert_eq!(ram, ram_ranges(mem), "{mem:#x}");
        }
    }

    #[test]
    fn the_hotplug_window_holds_no_ram_device_or_tss_and_takes_the_default_block() {
        let window = regions(MAX_MEM)
            .into_iter()
            .find(|r| r.kind == Use::Hotplug)
            .unwrap();
        assert_eq!((window.start, window.end), (HOTPLUG_START, HOTPLUG_END));
        for addr in [IOAPIC, LAPIC, KVM_TSS as u64, MMIO_HOLE, FOUR_GIB, 0] {
            assert!(!in_hotplug_window(addr, 0x1000), "{addr:#x}");
        }
        // vmmctl churn's default block, the guest's hotplug workload and the README's example.
        assert!(in_hotplug_window(0xe000_0000, 2 << 20));
        assert!(in_hotplug_window(HOTPLUG_END - 0x1000, 0x1000));
        assert!(!in_hotplug_window(HOTPLUG_END - 0x1000, 0x2000));
        assert!(!in_hotplug_window(HOTPLUG_START - 0x1000, 0x2000));
        assert!(!in_hotplug_window(HOTPLUG_START, u64::MAX));
        assert!(!in_hotplug_window(u64::MAX - 0xfff, 0x1000));
    }
}
