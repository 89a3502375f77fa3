//! The Intel MultiProcessor Specification 1.4 table: how the built-in guest (and Linux kernels
//! built with an MP parser) find the CPUs, the IOAPIC and the ISA interrupt routing.

use crate::x86_64::layout::{EBDA, IOAPIC, LAPIC};

const APIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;

fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |a, b| a.wrapping_add(*b))
        .wrapping_neg()
}

/// Builds the MP floating pointer and configuration table for `cpus` CPUs, to be written at
/// [`EBDA`]. Returns the bytes (floating pointer first, table right after).
pub fn build(cpus: u8) -> Vec<u8> {
    let table_addr = EBDA + 16;
    let ioapic_id = cpus;

    let mut entries = Vec::new();
    let mut count = 0u16;
    // Processor entries.
    for id in 0..cpus {
        let mut e = [0u8; 20];
        e[0] = 0; // type: processor
        e[1] = id; // local APIC id
        e[2] = APIC_VERSION;
        e[3] = 0x01 | if id == 0 { 0x02 } else { 0 }; // enabled | BSP
        e[4..8].copy_from_slice(&0x0000_0600u32.to_le_bytes()); // signature: family 6
        e[8..12].copy_from_slice(&0x0000_0201u32.to_le_bytes()); // features: FPU, APIC
        entries.extend_from_slice(&e);
        count += 1;
    }
    // Bus entry: ISA bus 0.
    entries.extend_from_slice(&[1, 0, b'I', b'S', b'A', b' ', b' ', b' ']);
    count += 1;
    // IOAPIC entry.
    let mut e = [0u8; 8];
    e[0] = 2;
    e[1] = ioapic_id;
    e[2] = IOAPIC_VERSION;
    e[3] = 1; // enabled
    e[4..8].copy_from_slice(&(IOAPIC as u32).to_le_bytes());
    entries.extend_from_slice(&e);
    count += 1;
    // I/O interrupt entries: ISA IRQ n -> IOAPIC pin n. KVM's default routing sends GSI n to
    // pin n (the PIT included: GSI 0), and the VMM does not change it, so there is no
    // IRQ0 -> pin 2 override here (nor in the ACPI MADT).
    for irq in 0..16u8 {
        let pin = irq;
        entries.extend_from_slice(&[3, 0, 0, 0, 0, irq, ioapic_id, pin]);
        count += 1;
    }
    // Local interrupt entries: LINT0 ExtINT, LINT1 NMI, to all local APICs.
    entries.extend_from_slice(&[4, 3, 0, 0, 0, 0, 0xff, 0]);
    entries.extend_from_slice(&[4, 1, 0, 0, 0, 0, 0xff, 1]);
    count += 2;

    let mut table = vec![0u8; 44];
    table[0..4].copy_from_slice(b"PCMP");
    let len = (44 + entries.len()) as u16;
    table[4..6].copy_from_slice(&len.to_le_bytes());
    table[6] = 4; // spec revision 1.4
    table[8..16].copy_from_slice(b"RVMM    ");
    table[16..28].copy_from_slice(b"RCU-VMM     ");
    table[34..36].copy_from_slice(&count.to_le_bytes());
    table[36..40].copy_from_slice(&(LAPIC as u32).to_le_bytes());
    table.extend_from_slice(&entries);
    table[7] = checksum(&table);

    let mut fp = [0u8; 16];
    fp[0..4].copy_from_slice(b"_MP_");
    fp[4..8].copy_from_slice(&(table_addr as u32).to_le_bytes());
    fp[8] = 1; // length in 16-byte units
    fp[9] = 4; // spec revision
    fp[10] = checksum(&fp);

    let mut out = fp.to_vec();
    out.extend_from_slice(&table);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_and_counts_are_valid() {
        for cpus in [1u8, 2, 8] {
            let t = build(cpus);
            assert_eq!(&t[0..4], b"_MP_");
            assert_eq!(t[0..16].iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
            let table = &t[16..];
            assert_eq!(&table[0..4], b"PCMP");
            let len = u16::from_le_bytes([table[4], table[5]]) as usize;
            assert_eq!(len, table.len());
            assert_eq!(table.iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
            let procs = table[44..].chunks(20).take(cpus as usize);
            assert_eq!(procs.filter(|e| e[0] == 0).count(), cpus as usize);
            assert!(t.len() as u64 <= crate::x86_64::layout::HIGH_MEM - EBDA);
        }
    }
}
