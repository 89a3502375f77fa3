//! Where the VMM puts things in guest-physical memory (x86_64).

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
