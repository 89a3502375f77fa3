//! A minimal ACPI for SMP Linux guests: RSDP (revision 2), XSDT, a hardware-reduced FADT, a
//! DSDT describing the legacy devices, and the MADT (local APICs, the IOAPIC, interrupt
//! overrides, LINT1 as NMI).
//!
//! Debian's cloud kernel has no MP-table parser, so without a MADT it sees one CPU and no
//! IOAPIC. The tables go in the BIOS area at [`ACPI_START`] (reserved in the e820 map), where
//! Linux's legacy scan of 0xE0000..0xFFFFF finds the RSDP on its 16-byte boundary; the boot
//! path also passes [`RSDP_ADDR`] in `boot_params.acpi_rsdp_addr` (protocol 2.14).
//!
//! The platform is hardware-reduced (no PM timer, SCI, GPE or PM1 blocks to emulate), as
//! QEMU's microvm and cloud-hypervisor are. Two consequences shape the tables:
//!
//! - x86 Linux then installs a null legacy PIC and maps no ISA IRQ by itself: a device's
//!   interrupt reaches it only if the DSDT names it. So the DSDT describes COM1 (`PNP0501`,
//!   ports 0x3F8-0x3FF, IRQ 4, which the IOAPIC's identity-mapped pin 4 delivers) and the
//!   pvpanic port (`QEMU0001`, 0x505). The i8042 is not described and the FADT does not
//!   claim an 8042 (`IAPC_BOOT_ARCH`), so Linux does not probe the reset-only controller
//!   (half a second of timeouts); its reset still works (`reboot=k`, or RESET_REG).
//! - Power-off goes through the FADT's sleep registers (ACPI 6.5, 4.8.3.7), which ACPICA
//!   requires on a hardware-reduced platform before it offers S5 (`acpi_sleep_state_supported`
//!   in Linux's drivers/acpi/sleep.c): `\_S5` gives SLP_TYP 5 and Linux's
//!   `acpi_hw_extended_sleep` writes `SLP_TYP << 2 | SLP_EN` to [`SLEEP_CONTROL_PORT`]; the
//!   `devices::AcpiSleep` device there asks the VMM to power off.

pub mod aml;

use crate::x86_64::layout::{VirtioMmioSlot, EBDA, HIGH_MEM, IOAPIC, LAPIC};

/// Where the tables start: the BIOS read-only area, above the MP table in the EBDA.
pub const ACPI_START: u64 = 0xe_0000;
/// The RSDP's address (the first table).
pub const RSDP_ADDR: u64 = ACPI_START;
/// The end of the area the tables may use (the legacy RSDP scan covers up to 1 MiB).
pub const ACPI_END: u64 = HIGH_MEM;

/// The GSI the i8254 PIT's IRQ 0 arrives on. KVM's default IRQ routing (this VMM does not
/// call `KVM_SET_GSI_ROUTING`) connects GSI n to IOAPIC pin n and the PIT raises GSI 0, so
/// IRQ 0 is identity-mapped and needs no override. (QEMU installs its own routing that moves
/// it to pin 2, which is why its tables carry a 0 -> 2 override.) Change this together with
/// the routing; a value other than 0 adds the override entry.
pub const PIT_GSI: u32 = 0;
/// The SCI's IRQ (unused on a hardware-reduced platform, but named as on PCs).
pub const SCI_IRQ: u8 = 9;

/// COM1's base port (8 ports) as the DSDT describes it; the VMM's 16550A sits there.
pub const COM1_PORT: u16 = 0x3f8;
/// COM1's ISA IRQ, identity-mapped to IOAPIC pin / GSI 4 (the serial device's irqfd).
pub const COM1_IRQ: u8 = 4;
/// The pvpanic port (QEMU's ISA pvpanic), described as `QEMU0001`.
pub const PVPANIC_PORT: u16 = 0x505;
/// The FADT's SLEEP_CONTROL_REG: a byte at this port (the `devices::AcpiSleep` device).
pub const SLEEP_CONTROL_PORT: u16 = 0x600;
/// The FADT's SLEEP_STATUS_REG: the byte after the control register.
pub const SLEEP_STATUS_PORT: u16 = SLEEP_CONTROL_PORT + 1;
/// The SLP_TYP value `\_S5` gives (what the sleep device recognizes as power-off).
pub const S5_SLP_TYP: u8 = devices::AcpiSleep::S5_SLP_TYP;

/// The `_HID` Linux's `virtio_mmio` driver matches (its ACPI ID table).
pub const VIRTIO_MMIO_HID: &str = "LNRO0005";
const OEM_ID: &[u8; 6] = b"RVMM  ";
const OEM_TABLE_ID: &[u8; 8] = b"RVMMACPI";
const CREATOR_ID: &[u8; 4] = b"RVMM";

/// MADT entry types.
pub mod madt {
    /// Processor local APIC.
    pub const LOCAL_APIC: u8 = 0;
    /// I/O APIC.
    pub const IO_APIC: u8 = 1;
    /// Interrupt source override.
    pub const INT_SRC_OVERRIDE: u8 = 2;
    /// Local APIC NMI.
    pub const LOCAL_APIC_NMI: u8 = 4;
}

/// FADT flag: the platform is hardware-reduced (no PM timer, no fixed registers, no SCI).
pub const FADT_HW_REDUCED_ACPI: u32 = 1 << 20;
/// FADT flag: RESET_REG is supported.
pub const FADT_RESET_REG_SUP: u32 = 1 << 10;
/// IAPC_BOOT_ARCH: an 8042 keyboard controller is present. Not set: the VMM's i8042 only
/// resets, and with this flag (and no PS/2 device in the DSDT) Linux probes the ports
/// directly and waits out its command timeouts.
pub const BOOT_ARCH_8042: u16 = 1 << 1;
/// IAPC_BOOT_ARCH: do not probe for VGA.
pub const BOOT_ARCH_NO_VGA: u16 = 1 << 2;
/// IAPC_BOOT_ARCH: there is no CMOS RTC.
pub const BOOT_ARCH_NO_CMOS_RTC: u16 = 1 << 5;

/// The tables, ready to be written into guest memory.
#[derive(Clone, Debug)]
pub struct AcpiTables {
    /// (guest-physical address, bytes) of each table, in address order: RSDP, XSDT, FADT,
    /// DSDT, MADT.
    pub regions: Vec<(u64, Vec<u8>)>,
    /// Where the RSDP is (for `boot_params.acpi_rsdp_addr`).
    pub rsdp_addr: u64,
}

/// The byte that makes `bytes` sum to zero (mod 256).
pub fn checksum(bytes: &[u8]) -> u8 {
    sum(bytes).wrapping_neg()
}

/// The sum of `bytes` mod 256 (0 for a valid table).
pub fn sum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b))
}

/// A system description table: the 36-byte header, `body`, length and checksum filled in.
fn sdt(signature: &[u8; 4], revision: u8, body: &[u8]) -> Vec<u8> {
    let mut t = Vec::with_capacity(36 + body.len());
    t.extend_from_slice(signature);
    t.extend_from_slice(&((36 + body.len()) as u32).to_le_bytes());
    t.push(revision);
    t.push(0); // checksum, below
    t.extend_from_slice(OEM_ID);
    t.extend_from_slice(OEM_TABLE_ID);
    t.extend_from_slice(&1u32.to_le_bytes()); // OEM revision
    t.extend_from_slice(CREATOR_ID);
    t.extend_from_slice(&1u32.to_le_bytes()); // creator revision
    t.extend_from_slice(body);
    t[9] = checksum(&t);
    t
}

/// The MADT for `cpus` CPUs: a local APIC per CPU (APIC ID = CPU number), the IOAPIC (ID
/// `cpus`, as in the MP table) with GSI base 0, the overrides, and LINT1 = NMI on all CPUs.
fn madt(cpus: u8) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&(LAPIC as u32).to_le_bytes());
    b.extend_from_slice(&1u32.to_le_bytes()); // PCAT_COMPAT: 8259s are present (KVM's)
    for id in 0..cpus {
        // type, length, ACPI processor UID, APIC ID, flags (enabled)
        b.extend_from_slice(&[madt::LOCAL_APIC, 8, id, id]);
        b.extend_from_slice(&1u32.to_le_bytes());
    }
    b.extend_from_slice(&[madt::IO_APIC, 12, cpus, 0]);
    b.extend_from_slice(&(IOAPIC as u32).to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes()); // GSI base
    let mut iso = |irq: u8, gsi: u32, flags: u16| {
        b.extend_from_slice(&[madt::INT_SRC_OVERRIDE, 10, 0 /* ISA */, irq]);
        b.extend_from_slice(&gsi.to_le_bytes());
        b.extend_from_slice(&flags.to_le_bytes());
    };
    if PIT_GSI != 0 {
        // Conforming polarity and trigger (ISA: edge, active high).
        iso(0, PIT_GSI, 0);
    }
    // The SCI: level-triggered, active high, as on PCs.
    iso(SCI_IRQ, SCI_IRQ as u32, 0x000d);
    // NMI on LINT1 of every processor (UID 0xff), edge, active high.
    b.extend_from_slice(&[madt::LOCAL_APIC_NMI, 6, 0xff]);
    b.extend_from_slice(&0x0005u16.to_le_bytes());
    b.push(1);
    sdt(b"APIC", 5, &b)
}

/// A generic address structure: system I/O `port`, byte access.
fn gas_io_byte(port: u64) -> [u8; 12] {
    let mut g = [0u8; 12];
    g[0] = 1; // system I/O space
    g[1] = 8; // register bit width
    g[2] = 0; // bit offset
    g[3] = 1; // access size: byte
    g[4..12].copy_from_slice(&port.to_le_bytes());
    g
}

/// FADT offsets (from the table's start) of the fields the VMM fills.
pub mod fadt_off {
    /// FLAGS (4 bytes).
    pub const FLAGS: usize = 112;
    /// IAPC_BOOT_ARCH (2 bytes).
    pub const BOOT_ARCH: usize = 109;
    /// RESET_REG (a generic address structure, 12 bytes).
    pub const RESET_REG: usize = 116;
    /// RESET_VALUE (1 byte).
    pub const RESET_VALUE: usize = 128;
    /// X_DSDT (8 bytes).
    pub const X_DSDT: usize = 140;
    /// SLEEP_CONTROL_REG (generic address structure).
    pub const SLEEP_CONTROL_REG: usize = 244;
    /// SLEEP_STATUS_REG (generic address structure).
    pub const SLEEP_STATUS_REG: usize = 256;
    /// Hypervisor vendor identity (8 bytes).
    pub const HYPERVISOR_ID: usize = 268;
}

/// A hardware-reduced FADT (ACPI 6.5, 276 bytes) pointing at the DSDT through X_DSDT, with the
/// reset register on the i8042's port 0x64 (value 0xFE, as the VMM's i8042 implements) and
/// the sleep control and status registers on [`SLEEP_CONTROL_PORT`] and
/// [`SLEEP_STATUS_PORT`].
fn fadt(dsdt: u64) -> Vec<u8> {
    let mut b = vec![0u8; 276 - 36];
    let at = |off: usize| off - 36; // offsets below are from the table's start
    b[at(45)] = 0; // preferred PM profile: unspecified
    b[at(46)..at(48)].copy_from_slice(&(SCI_IRQ as u16).to_le_bytes());
    let boot_arch = BOOT_ARCH_NO_VGA | BOOT_ARCH_NO_CMOS_RTC;
    use fadt_off as o;
    b[at(o::BOOT_ARCH)..at(o::BOOT_ARCH + 2)].copy_from_slice(&boot_arch.to_le_bytes());
    let flags = FADT_HW_REDUCED_ACPI | FADT_RESET_REG_SUP;
    b[at(o::FLAGS)..at(o::FLAGS + 4)].copy_from_slice(&flags.to_le_bytes());
    b[at(o::RESET_REG)..at(o::RESET_REG + 12)].copy_from_slice(&gas_io_byte(0x64));
    b[at(o::RESET_VALUE)] = 0xfe;
    b[at(131)] = 5; // FADT minor version: 6.5
                    // X_DSDT (the 32-bit DSDT field stays 0).
    b[at(o::X_DSDT)..at(o::X_DSDT + 8)].copy_from_slice(&dsdt.to_le_bytes());
    let ctl = gas_io_byte(SLEEP_CONTROL_PORT.into());
    b[at(o::SLEEP_CONTROL_REG)..at(o::SLEEP_CONTROL_REG + 12)].copy_from_slice(&ctl);
    let sts = gas_io_byte(SLEEP_STATUS_PORT.into());
    b[at(o::SLEEP_STATUS_REG)..at(o::SLEEP_STATUS_REG + 12)].copy_from_slice(&sts);
    b[at(o::HYPERVISOR_ID)..at(o::HYPERVISOR_ID + 8)].copy_from_slice(b"RVMMKVM\0");
    sdt(b"FACP", 6, &b)
}

/// The DSDT's definition block (the AML after the header):
///
/// ```text
/// Name (_S5, Package (4) { 5, 0, 0, 0 })     // SLP_TYPa = 5: power-off
/// Scope (\_SB) {
///     Device (COM1) {
///         Name (_HID, EisaId ("PNP0501"))     // 16550A UART
///         Name (_UID, 0)
///         Name (_STA, 0x0F)
///         Name (_CRS, ResourceTemplate () {
///             IO (Decode16, 0x03F8, 0x03F8, 0x01, 0x08)
///             IRQNoFlags () { 4 }
///         })
///     }
///     Device (PEVT) {
///         Name (_HID, "QEMU0001")             // pvpanic
///         Name (_STA, 0x0F)
///         Name (_CRS, ResourceTemplate () { IO (Decode16, 0x0505, 0x0505, 0x01, 0x01) })
///     }
///     Device (VIO0) {                         // one per virtio-mmio transport, if any
///         Name (_HID, "LNRO0005")             // virtio-mmio (Linux's virtio_mmio driver)
///         Name (_UID, 0)                      // the slot
///         Name (_CCA, One)                    // DMA is cache-coherent
///         Name (_CRS, ResourceTemplate () {
///             Memory32Fixed (ReadWrite, 0xC0000000, 0x1000)
///             Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive) { 16 }
///         })
///     }
/// }
/// ```
///
/// The virtio-mmio devices are how a kernel without `CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES`
/// (Debian's cloud kernel) finds the transports: its `virtio_mmio` driver binds to
/// `LNRO0005` platform devices and takes the window and the interrupt from `_CRS`. QEMU's
/// `microvm` describes its transports the same way, but declares them level-triggered: its
/// emulated line stays up until the guest acknowledges. Here the interrupt is edge-triggered
/// because it arrives through an irqfd, which pulses the GSI (a level pin would need
/// `KVM_IRQFD_FLAG_RESAMPLE` and a resample eventfd to lower it).
pub fn dsdt_aml(virtio_mmio: &[VirtioMmioSlot]) -> Vec<u8> {
    use aml::{device, eisa_id, integer, io, irq_no_flags, name, package, resource_template};
    let s5 = name(
        "_S5",
        &package(&[
            integer(S5_SLP_TYP.into()),
            integer(0),
            integer(0),
            integer(0),
        ]),
    );
    let com1 = device(
        "COM1",
        &[
            name("_HID", &eisa_id("PNP0501")),
            name("_UID", &integer(0)),
            name("_STA", &integer(0x0f)),
            name(
                "_CRS",
                &resource_template(&[io(COM1_PORT, COM1_PORT, 1, 8), irq_no_flags(COM1_IRQ)]),
            ),
        ],
    );
    let pvpanic = device(
        "PEVT",
        &[
            name("_HID", &aml::string("QEMU0001")),
            name("_STA", &integer(0x0f)),
            name(
                "_CRS",
                &resource_template(&[io(PVPANIC_PORT, PVPANIC_PORT, 1, 1)]),
            ),
        ],
    );
    let mut sb = vec![com1, pvpanic];
    sb.extend(virtio_mmio.iter().map(virtio_mmio_device));
    [s5, aml::scope("\\_SB", &sb)].concat()
}

/// The DSDT name of virtio-mmio slot `index` (`VIO0`... `VIO9`, then `VIOA`...).
pub fn virtio_mmio_device_name(index: u32) -> String {
    format!(
        "VIO{}",
        char::from_digit(index % 36, 36)
            .expect("below 36")
            .to_ascii_uppercase()
    )
}

fn virtio_mmio_device(slot: &VirtioMmioSlot) -> Vec<u8> {
    use aml::resource::{CONSUMER, EDGE};
    use aml::{device, extended_interrupt, integer, memory32_fixed, name, resource_template};
    // The layout keeps every slot below 4 GiB (asserted in its tests).
    let base = u32::try_from(slot.base).expect("virtio-mmio windows are below 4 GiB");
    let size = u32::try_from(slot.size).expect("virtio-mmio windows are small");
    device(
        &virtio_mmio_device_name(slot.index),
        &[
            name("_HID", &aml::string(VIRTIO_MMIO_HID)),
            name("_UID", &integer(slot.index.into())),
            name("_CCA", &integer(1)),
            name(
                "_CRS",
                &resource_template(&[
                    memory32_fixed(true, base, size),
                    extended_interrupt(CONSUMER | EDGE, slot.gsi),
                ]),
            ),
        ],
    )
}

/// RSDP revision 2 (ACPI 2.0+): no RSDT, the XSDT's 64-bit address.
fn rsdp(xsdt: u64) -> Vec<u8> {
    let mut r = vec![0u8; 36];
    r[0..8].copy_from_slice(b"RSD PTR ");
    r[9..15].copy_from_slice(OEM_ID);
    r[15] = 2; // revision
    r[16..20].copy_from_slice(&0u32.to_le_bytes()); // RSDT address: none
    r[20..24].copy_from_slice(&36u32.to_le_bytes()); // length
    r[24..32].copy_from_slice(&xsdt.to_le_bytes());
    r[8] = checksum(&r[..20]);
    r[32] = checksum(&r);
    r
}

/// Builds the tables for `cpus` vCPUs at their fixed addresses from [`ACPI_START`], each on
/// a 16-byte boundary, with no virtio-mmio devices.
pub fn build(cpus: u8) -> AcpiTables {
    build_with(cpus, &[])
}

/// [`build`] with a DSDT device for each virtio-mmio transport in `virtio_mmio` (slots from
/// [`crate::x86_64::layout::virtio_mmio_slot`]).
pub fn build_with(cpus: u8, virtio_mmio: &[VirtioMmioSlot]) -> AcpiTables {
    let align = |a: u64| a.next_multiple_of(16);
    let rsdp_addr = RSDP_ADDR;
    let xsdt_addr = align(rsdp_addr + 36);
    // The XSDT holds two pointers: the FADT and the MADT.
    let fadt_addr = align(xsdt_addr + 36 + 2 * 8);
    let dsdt_addr = align(fadt_addr + 276);
    let dsdt = sdt(b"DSDT", 2, &dsdt_aml(virtio_mmio));
    let madt_addr = align(dsdt_addr + dsdt.len() as u64);

    let mut xsdt_body = Vec::new();
    xsdt_body.extend_from_slice(&fadt_addr.to_le_bytes());
    xsdt_body.extend_from_slice(&madt_addr.to_le_bytes());
    let xsdt = sdt(b"XSDT", 1, &xsdt_body);
    let madt = madt(cpus);
    debug_assert!(madt_addr + madt.len() as u64 <= ACPI_END);
    AcpiTables {
        regions: vec![
            (rsdp_addr, rsdp(xsdt_addr)),
            (xsdt_addr, xsdt),
            (fadt_addr, fadt(dsdt_addr)),
            (dsdt_addr, dsdt),
            (madt_addr, madt),
        ],
        rsdp_addr,
    }
}

/// The largest MP table [`crate::x86_64::mptable::build`] writes at the EBDA (254 CPUs): the ACPI
/// tables must start above it.
pub fn mptable_end_max() -> u64 {
    EBDA + crate::x86_64::mptable::build(254).len() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u32_at(b: &[u8], off: usize) -> u32 {
        u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
    }
    fn u64_at(b: &[u8], off: usize) -> u64 {
        u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
    }

    /// The tables placed into a flat image of 0..1 MiB, as the guest would see them.
    fn image(t: &AcpiTables) -> Vec<u8> {
        let mut mem = vec![0u8; HIGH_MEM as usize];
        for (gpa, bytes) in &t.regions {
            let g = *gpa as usize;
            assert!(
                mem[g..g + bytes.len()].iter().all(|&b| b == 0),
                "overlap at {g:#x}"
            );
            mem[g..g + bytes.len()].copy_from_slice(bytes);
        }
        mem
    }

    /// Finds a table through the header at `addr`, checks its length and checksum.
    fn table<'a>(mem: &'a [u8], addr: u64, sig: &[u8; 4]) -> &'a [u8] {
        let a = addr as usize;
        assert_eq!(&mem[a..a + 4], sig, "signature at {addr:#x}");
        let len = u32_at(mem, a + 4) as usize;
        let t = &mem[a..a + len];
        assert_eq!(sum(t), 0, "{} checksum", String::from_utf8_lossy(sig));
        t
    }

    /// Walks the tables the way a guest does: scan for the RSDP, follow the pointers.
    fn walk(cpus: u8) {
        let t = build(cpus);
        let mem = image(&t);
        let found: Vec<u64> = (0xe_0000..0x10_0000u64)
            .step_by(16)
            .filter(|&a| &mem[a as usize..a as usize + 8] == b"RSD PTR ")
            .collect();
        assert_eq!(found, vec![t.rsdp_addr]);
        let r = &mem[t.rsdp_addr as usize..t.rsdp_addr as usize + 36];
        assert_eq!(sum(&r[..20]), 0, "RSDP v1 checksum");
        assert_eq!(sum(r), 0, "RSDP extended checksum");
        assert_eq!(r[15], 2);
        assert_eq!(u32_at(r, 20), 36);

        let xsdt = table(&mem, u64_at(r, 24), b"XSDT");
        let ptrs: Vec<u64> = xsdt[36..].chunks(8).map(|c| u64_at(c, 0)).collect();
        assert_eq!(ptrs.len(), 2);
        let fadt = table(&mem, ptrs[0], b"FACP");
        assert_eq!(fadt.len(), 276);
        assert_eq!(fadt[8], 6, "FADT revision");
        assert_ne!(u32_at(fadt, 112) & FADT_HW_REDUCED_ACPI, 0);
        assert_eq!(u32_at(fadt, 40), 0, "32-bit DSDT pointer unused");
        let dsdt = table(&mem, u64_at(fadt, fadt_off::X_DSDT), b"DSDT");
        check_dsdt(dsdt);

        let madt = table(&mem, ptrs[1], b"APIC");
        assert_eq!(u32_at(madt, 36) as u64, LAPIC);
        let mut counts = [0usize; 16];
        let mut apic_ids = Vec::new();
        let mut off = 44;
        while off < madt.len() {
            let (ty, len) = (madt[off], madt[off + 1] as usize);
            assert!(len >= 2 && off + len <= madt.len(), "entry at {off}");
            counts[ty as usize] += 1;
            match ty {
                madt::LOCAL_APIC => {
                    assert_eq!(len, 8);
                    assert_eq!(u32_at(madt, off + 4) & 1, 1, "enabled");
                    apic_ids.push(madt[off + 3]);
                }
                madt::IO_APIC => {
                    assert_eq!(len, 12);
                    assert_eq!(madt[off + 2], cpus, "IOAPIC id");
                    assert_eq!(u32_at(madt, off + 4) as u64, IOAPIC);
                    assert_eq!(u32_at(madt, off + 8), 0, "GSI base");
                }
                madt::INT_SRC_OVERRIDE => assert_eq!(len, 10),
                madt::LOCAL_APIC_NMI => {
                    assert_eq!(len, 6);
                    assert_eq!((madt[off + 2], madt[off + 5]), (0xff, 1), "all CPUs, LINT1");
                }
                other => panic!("unexpected MADT entry type {other}"),
            }
            off += len;
        }
        assert_eq!(off, madt.len());
        assert_eq!(counts[madt::LOCAL_APIC as usize], cpus as usize);
        assert_eq!(apic_ids, (0..cpus).collect::<Vec<_>>());
        assert_eq!(counts[madt::IO_APIC as usize], 1);
        assert_eq!(
            counts[madt::INT_SRC_OVERRIDE as usize],
            1 + usize::from(PIT_GSI != 0)
        );
        assert_eq!(counts[madt::LOCAL_APIC_NMI as usize], 1);
    }

    use aml::decode::{self, Obj, Term};

    /// The `Name` objects directly inside `terms`.
    fn names(terms: &[Term]) -> std::collections::HashMap<&str, &Obj> {
        terms
            .iter()
            .filter_map(|t| match t {
                Term::Name(n, o) => Some((n.as_str(), o)),
                _ => None,
            })
            .collect()
    }

    /// The devices directly inside `terms`, by name.
    fn devices(terms: &[Term]) -> std::collections::HashMap<&str, &[Term]> {
        terms
            .iter()
            .filter_map(|t| match t {
                Term::Device(n, body) => Some((n.as_str(), body.as_slice())),
                _ => None,
            })
            .collect()
    }

    /// The (type, body) small resource descriptors of a `_CRS` buffer, end tag checked.
    fn crs(obj: &Obj) -> Vec<(u8, Vec<u8>)> {
        let Obj::Buf(b) = obj else {
            panic!("_CRS is not a buffer: {obj:?}")
        };
        let r = decode::resources(b).unwrap();
        let (ty, end) = r.last().unwrap();
        assert_eq!(*ty, 0x0f, "end tag");
        assert!(end[0] == 0 || sum(b) == 0, "end tag checksum");
        r
    }

    /// An I/O descriptor's (decode, min, max, align, len).
    fn io_desc(body: &[u8]) -> (u8, u16, u16, u8, u8) {
        assert_eq!(body.len(), 7);
        let w = |i: usize| u16::from_le_bytes([body[i], body[i + 1]]);
        (body[0], w(1), w(3), body[5], body[6])
    }

    /// Parses the DSDT's AML: `\_S5` at the root, COM1 and pvpanic under `\_SB`, nothing
    /// else (no i8042).
    fn check_dsdt(dsdt: &[u8]) {
        assert_eq!(&dsdt[..4], b"DSDT");
        assert_eq!(dsdt[8], 2, "revision 2: 64-bit integers");
        assert_eq!(sum(dsdt), 0);
        let terms = decode::terms(&dsdt[36..]).unwrap();
        assert_eq!(terms.len(), 2, "{terms:#?}");

        let root = names(&terms);
        let Some(Obj::Pkg(s5)) = root.get("_S5_") else {
            panic!("no \\_S5 package: {terms:#?}")
        };
        assert_eq!(s5[0], Obj::Int(5), "SLP_TYPa");
        assert_eq!(s5[0], Obj::Int(devices::AcpiSleep::S5_SLP_TYP.into()));
        assert!(s5.iter().all(|o| matches!(o, Obj::Int(_))), "{s5:?}");
        assert!(s5.len() >= 2);

        let Some(Term::Scope(sb, sb_terms)) = terms.iter().find(|t| matches!(t, Term::Scope(..)))
        else {
            panic!("no \\_SB scope")
        };
        assert_eq!(sb, "\\_SB_");
        let devs = devices(sb_terms);
        assert_eq!(devs.len(), 2, "COM1 and pvpanic only: {devs:?}");

        let com1 = names(devs["COM1"]);
        let Obj::Int(hid) = com1["_HID"] else {
            panic!("COM1 _HID is not an EISA ID")
        };
        assert_eq!(decode::eisa_id_string(*hid as u32), "PNP0501");
        assert!(matches!(com1["_UID"], Obj::Int(_)));
        assert_eq!(com1["_STA"], &Obj::Int(0x0f));
        let r = crs(com1["_CRS"]);
        assert_eq!(r.len(), 3, "{r:?}");
        assert_eq!(r[0].0, 0x08, "I/O descriptor");
        assert_eq!(io_desc(&r[0].1), (1, 0x3f8, 0x3f8, 1, 8));
        assert_eq!(r[1].0, 0x04, "IRQ descriptor");
        assert_eq!(
            r[1].1,
            [1 << 4, 0],
            "IRQ 4 only, no flags byte (edge, high)"
        );

        let pv = names(devs["PEVT"]);
        assert_eq!(pv["_HID"], &Obj::Str("QEMU0001".into()));
        let r = crs(pv["_CRS"]);
        assert_eq!(r.len(), 2);
        assert_eq!(io_desc(&r[0].1), (1, 0x505, 0x505, 1, 1));
    }

    #[test]
    fn dsdt_describes_com1_pvpanic_and_s5() {
        let t = build(1);
        let (_, dsdt) = t
            .regions
            .iter()
            .find(|(_, b)| b.starts_with(b"DSDT"))
            .unwrap();
        check_dsdt(dsdt);
        // The device ports are the ones the VMM registers.
        assert_eq!((COM1_PORT, COM1_IRQ, PVPANIC_PORT), (0x3f8, 4, 0x505));
    }

    fn dsdt_of(t: &AcpiTables) -> &[u8] {
        &t.regions
            .iter()
            .find(|(_, b)| b.starts_with(b"DSDT"))
            .unwrap()
            .1
    }

    /// The `\_SB` devices of a DSDT.
    fn sb_devices(dsdt: &[u8]) -> Vec<Term> {
        let terms = decode::terms(&dsdt[36..]).unwrap();
        let Some(Term::Scope(_, sb)) = terms.into_iter().find(|t| matches!(t, Term::Scope(..)))
        else {
            panic!("no \\_SB scope")
        };
        sb
    }

    #[test]
    fn dsdt_describes_each_virtio_mmio_transport_with_its_window_and_gsi() {
        use crate::x86_64::layout::{virtio_mmio_slot, VIRTIO_MMIO_SLOTS};
        // None by default: the DSDT is exactly the one without virtio (today's guests).
        assert_eq!(dsdt_of(&build(2)), dsdt_of(&build_with(2, &[])));
        // Slots 0, 1 and the last (a transport need not be in slot 0).
        let slots: Vec<_> = [0, 1, VIRTIO_MMIO_SLOTS - 1]
            .iter()
            .map(|&i| virtio_mmio_slot(i).unwrap())
            .collect();
        let t = build_with(2, &slots);
        let dsdt = dsdt_of(&t);
        assert_eq!(sum(dsdt), 0);
        let sb = sb_devices(dsdt);
        let devs = devices(&sb);
        assert_eq!(devs.len(), 2 + slots.len(), "{:?}", devs.keys());
        for slot in &slots {
            let name = virtio_mmio_device_name(slot.index);
            let d = names(devs[name.as_str()]);
            assert_eq!(d["_HID"], &Obj::Str("LNRO0005".into()), "{name}");
            assert_eq!(d["_UID"], &Obj::Int(slot.index.into()));
            assert_eq!(d["_CCA"], &Obj::Int(1));
            let r = crs(d["_CRS"]);
            assert_eq!(r.len(), 3, "{r:?}");
            // Memory32Fixed: read-write, base, length.
            assert_eq!(r[0].0, 0x86);
            let u32le = |b: &[u8]| u32::from_le_bytes(b.try_into().unwrap());
            assert_eq!(r[0].1[0], 1, "ReadWrite");
            assert_eq!(u64::from(u32le(&r[0].1[1..5])), slot.base);
            assert_eq!(u64::from(u32le(&r[0].1[5..9])), slot.size);
            // Extended interrupt: consumer, edge, active high, exclusive; one GSI.
            assert_eq!(r[1].0, 0x89);
            assert_eq!(r[1].1[0], 0b0011, "consumer | edge, active high, exclusive");
            assert_eq!(r[1].1[1], 1, "one interrupt");
            assert_eq!(u32le(&r[1].1[2..6]), slot.gsi);
        }
        // Names are distinct for every slot the layout has.
        let all: std::collections::HashSet<_> = (0..VIRTIO_MMIO_SLOTS)
            .map(virtio_mmio_device_name)
            .collect();
        assert_eq!(all.len(), VIRTIO_MMIO_SLOTS as usize);
        assert!(all.iter().all(|n| n.len() == 4));
    }

    #[test]
    fn fadt_sleep_registers_point_at_the_sleep_device_and_no_8042_is_claimed() {
        let t = build(2);
        let (_, fadt) = t
            .regions
            .iter()
            .find(|(_, b)| b.starts_with(b"FACP"))
            .unwrap();
        let gas = |off: usize| {
            let g = &fadt[off..off + 12];
            (g[0], g[1], g[2], g[3], u64_at(g, 4))
        };
        // System I/O, 8 bits at bit 0, byte access: ACPICA accepts it (8/16/32/64-bit
        // registers only) and makes one byte access.
        let ctl = gas(fadt_off::SLEEP_CONTROL_REG);
        let sts = gas(fadt_off::SLEEP_STATUS_REG);
        assert_eq!(ctl, (1, 8, 0, 1, SLEEP_CONTROL_PORT.into()));
        assert_eq!(sts, (1, 8, 0, 1, SLEEP_STATUS_PORT.into()));
        assert_ne!(
            ctl.4, 0,
            "a zero address means no register: S5 would not be offered"
        );
        assert_ne!(sts.4, 0);
        // The device decodes control at offset 0 and status at offset 1.
        assert_eq!(
            u64::from(SLEEP_STATUS_PORT - SLEEP_CONTROL_PORT),
            devices::AcpiSleep::STATUS
        );
        // Reset is unchanged: port 0x64, value 0xFE.
        assert_eq!(gas(fadt_off::RESET_REG), (1, 8, 0, 1, 0x64));
        assert_eq!(fadt[fadt_off::RESET_VALUE], 0xfe);
        let flags = u32_at(fadt, fadt_off::FLAGS);
        assert_eq!(
            flags & (FADT_HW_REDUCED_ACPI | FADT_RESET_REG_SUP),
            FADT_HW_REDUCED_ACPI | FADT_RESET_REG_SUP
        );
        let boot_arch =
            u16::from_le_bytes([fadt[fadt_off::BOOT_ARCH], fadt[fadt_off::BOOT_ARCH + 1]]);
        assert_eq!(
            boot_arch & BOOT_ARCH_8042,
            0,
            "Linux must not probe the i8042"
        );
        assert_eq!(
            &fadt[fadt_off::HYPERVISOR_ID..fadt_off::HYPERVISOR_ID + 8],
            b"RVMMKVM\0"
        );
    }

    #[test]
    fn tables_have_valid_checksums_and_madt_counts() {
        for cpus in [1u8, 2, 8, 254] {
            walk(cpus);
        }
    }

    #[test]
    fn every_table_checksum_is_valid_and_catches_a_flipped_byte() {
        let t = build(2);
        for (gpa, bytes) in &t.regions {
            assert_eq!(gpa % 16, 0);
            let good = if bytes.starts_with(b"RSD PTR ") {
                sum(&bytes[..20]) == 0 && sum(bytes) == 0
            } else {
                sum(bytes) == 0
            };
            assert!(good, "table at {gpa:#x}");
            let mut bad = bytes.clone();
            bad[bytes.len() - 1] ^= 0x40;
            assert_ne!(sum(&bad), 0);
        }
    }

    #[test]
    fn tables_fit_between_the_mp_table_and_1_mib() {
        assert!(mptable_end_max() <= ACPI_START);
        // The most CPUs and every virtio-mmio slot.
        let slots: Vec<_> = (0..crate::x86_64::layout::VIRTIO_MMIO_SLOTS)
            .map(|i| crate::x86_64::layout::virtio_mmio_slot(i).unwrap())
            .collect();
        let t = build_with(254, &slots);
        let (last, bytes) = t.regions.last().unwrap();
        assert!(last + bytes.len() as u64 <= ACPI_END);
        // Inside the area the e820 map reserves (EBDA..1 MiB).
        let e820 = crate::x86_64::boot::e820_map(256 << 20);
        let reserved = e820
            .iter()
            .find(|e| e.r#type == crate::x86_64::boot::E820_RESERVED)
            .unwrap();
        let (a, s) = (reserved.addr, reserved.size);
        assert!(a <= ACPI_START && last + bytes.len() as u64 <= a + s);
    }
}
