//! Where the VMM puts things in guest-physical memory (x86_64): the one guest-physical layout.
//!
//! ```text
//! 0            boot structures (GDT 0x500, zero page, stack, page tables, command line)
//! 0x9fc00      EBDA: MP table; ACPI tables at 0xe0000; reserved in the e820 map up to 1 MiB
//! 1 MiB        the kernel, then RAM up to --mem (at most up to 3 GiB here) ...... "ram-low"
//! 0xc0000000   virtio-mmio transports: 8 slots of 4 KiB, GSIs 16-23 ([`virtio_mmio_slot`])
//! 0xc0008000   32-bit MMIO hole: reserved (no device uses it yet)
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
/// The first virtio-mmio transport's registers: the bottom of the 32-bit MMIO hole.
pub const VIRTIO_MMIO_START: u64 = MMIO_HOLE;
/// Each transport's window: the virtio-mmio registers (0x100) and the device's configuration
/// space need 0x200; a whole page keeps every transport in its own page.
pub const VIRTIO_MMIO_SLOT_SIZE: u64 = 0x1000;
/// How many transports the layout has room for (and GSIs for).
pub const VIRTIO_MMIO_SLOTS: u32 = 8;
/// Slot 0's interrupt. GSIs 16-23 are the IOAPIC's upper pins (it has 24): no ISA device
/// (the PIT on 0/2, COM1 on 4, the SCI on 9) and not the 8259 (0-15) uses them.
pub const VIRTIO_MMIO_FIRST_GSI: u32 = 16;
/// The end (exclusive) of the virtio-mmio window.
pub const VIRTIO_MMIO_END: u64 =
    VIRTIO_MMIO_START + VIRTIO_MMIO_SLOTS as u64 * VIRTIO_MMIO_SLOT_SIZE;
/// The number of IOAPIC pins (GSIs 0-23) KVM's in-kernel IOAPIC has.
pub const IOAPIC_PINS: u32 = 24;

/// Where one virtio-mmio transport lives: its register window and its interrupt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VirtioMmioSlot {
    /// The slot number (the DSDT's `_UID`, and `vda`, `vdb`... in the guest's probe order).
    pub index: u32,
    /// The first register's guest-physical address.
    pub base: u64,
    /// The window's size.
    pub size: u64,
    /// The IOAPIC pin (GSI) its interrupt is wired to: edge-triggered, active high.
    pub gsi: u32,
}

impl VirtioMmioSlot {
    /// The same transport in the kernel command line's form, `virtio_mmio.device=4K@0xc0000000:16`,
    /// for kernels built with `CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES` (Debian's cloud kernel is
    /// not: it reads the DSDT).
    pub fn cmdline(&self) -> String {
        format!(
            "virtio_mmio.device={}K@{:#x}:{}",
            self.size >> 10,
            self.base,
            self.gsi
        )
    }
}

/// Slot `index`'s window and GSI, or `None` past [`VIRTIO_MMIO_SLOTS`].
pub fn virtio_mmio_slot(index: u32) -> Option<VirtioMmioSlot> {
    (index < VIRTIO_MMIO_SLOTS).then(|| VirtioMmioSlot {
        index,
        base: VIRTIO_MMIO_START + u64::from(index) * VIRTIO_MMIO_SLOT_SIZE,
        size: VIRTIO_MMIO_SLOT_SIZE,
        gsi: VIRTIO_MMIO_FIRST_GSI + index,
    })
}

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
    /// A device's MMIO registers (the APICs, emulated by KVM's in-kernel irqchip, and the
    /// VMM's virtio-mmio transports).
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
        "virtio-mmio",
        VIRTIO_MMIO_START,
        VIRTIO_MMIO_END,
        Use::Mmio,
    ));
    v.push(r(
        "32-bit MMIO hole",
        VIRTIO_MMIO_END,
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
    fn virtio_mmio_slots_fill_their_window_without_overlap_or_shared_gsis() {
        let slots: Vec<_> = (0..VIRTIO_MMIO_SLOTS)
            .map(|i| virtio_mmio_slot(i).unwrap())
            .collect();
        assert_eq!(virtio_mmio_slot(VIRTIO_MMIO_SLOTS), None);
        assert_eq!(virtio_mmio_slot(u32::MAX), None);
        for (i, a) in slots.iter().enumerate() {
            assert_eq!(a.index, i as u32);
            assert!(a.size >= 0x200, "registers + config space");
            assert_eq!(a.base % 0x1000, 0, "page-aligned");
            assert!(a.base >= VIRTIO_MMIO_START && a.base + a.size <= VIRTIO_MMIO_END);
            // GSIs: on the IOAPIC, and none of the ISA lines the VMM wires (PIT, COM1, SCI).
            assert!(a.gsi < IOAPIC_PINS, "{a:?}");
            assert!(a.gsi >= 16, "{a:?} would share an 8259/ISA line");
            for used in [
                0,
                2,
                crate::x86_64::acpi::COM1_IRQ.into(),
                crate::x86_64::acpi::SCI_IRQ.into(),
            ] {
                assert_ne!(a.gsi, used, "{a:?}");
            }
            for b in &slots[i + 1..] {
                assert!(a.base + a.size <= b.base, "{a:?} overlaps {b:?}");
                assert_ne!(a.gsi, b.gsi);
            }
        }
        // The window is its own region of the layout, outside RAM and the hot-plug window,
        // for every memory size.
        for mem in [MIN_MEM, MMIO_HOLE, MAX_MEM] {
            let v = regions(mem);
            let w = v.iter().find(|r| r.name == "virtio-mmio").unwrap();
            assert_eq!(
                (w.start, w.end, w.kind),
                (VIRTIO_MMIO_START, VIRTIO_MMIO_END, Use::Mmio)
            );
            for r in v.iter().filter(|r| r.name != "virtio-mmio") {
                assert!(r.end <= w.start || r.start >= w.end, "{mem:#x}: {r:?}");
            }
        }
        assert!(!in_hotplug_window(VIRTIO_MMIO_START, VIRTIO_MMIO_SLOT_SIZE));
        assert_eq!(slots[1].cmdline(), "virtio_mmio.device=4K@0xc0001000:17");
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
