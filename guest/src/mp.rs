//! Finding the CPUs in the Intel MultiProcessor Specification 1.4 tables.
//!
//! The floating pointer structure ("_MP_", 16-byte aligned, checksummed) is searched where the
//! specification says: the first KiB of the EBDA (segment at 0x40e in the BIOS data area), the
//! last KiB of base memory (KiB count at 0x413, and 639-640 KiB whatever the BDA says), and
//! the BIOS ROM at 0xf0000-0xfffff. It points to the configuration table ("PCMP"), whose processor
//! entries give the local APIC IDs. Parsing is pure over a [`PhysMem`], so that
//! vmm/tests/guest_image.rs can test it on the host against tables it builds.

/// Readable guest-physical memory.
pub trait PhysMem {
    /// `len` bytes at physical address `addr`, or `None` if they are not all readable.
    fn bytes(&self, addr: u64, len: usize) -> Option<&[u8]>;
}

/// The most processor entries kept (APIC IDs are 8 bits in the MP table).
pub const MAX_PROCESSORS: usize = 256;

/// A processor entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Processor {
    pub apic_id: u8,
    pub enabled: bool,
    pub bsp: bool,
}

/// What the tables say.
#[derive(Clone, Copy, Debug)]
pub struct MpConfig {
    /// Address of the floating pointer structure.
    pub floating_pointer: u64,
    /// Address of the configuration table; 0 for one of the spec's default configurations.
    pub table: u64,
    /// The local APIC's address from the table (0xfee00000 for default configurations).
    pub lapic: u32,
    processors: [Processor; MAX_PROCESSORS],
    count: usize,
}

impl MpConfig {
    /// The processor entries, in table order.
    pub fn processors(&self) -> &[Processor] {
        &self.processors[..self.count]
    }
}

/// Why no configuration was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MpError {
    /// No valid floating pointer structure in the three search areas.
    NotFound,
    /// A floating pointer was found at this address but its table is unusable.
    BadTable(u64, &'static str),
}

fn checksum_ok(bytes: &[u8]) -> bool {
    bytes.iter().fold(0u8, |a, &b| a.wrapping_add(b)) == 0
}

fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

/// Searches `[start, start + len)` for a valid floating pointer structure.
fn scan(mem: &impl PhysMem, start: u64, len: u64) -> Option<u64> {
    let mut addr = start & !15;
    while addr + 16 <= start + len {
        if let Some(fp) = mem.bytes(addr, 16) {
            if &fp[0..4] == b"_MP_" && fp[8] == 1 && checksum_ok(fp) {
                return Some(addr);
            }
        }
        addr += 16;
    }
    None
}

/// The floating pointer structure's address, searched in the specification's order: the
/// EBDA's first KiB, the last KiB of base memory (as the BDA gives its size, and at 639 KiB
/// as Linux also looks), then the BIOS ROM.
pub fn find_floating_pointer(mem: &impl PhysMem) -> Option<u64> {
    let bda16 = |off: u64| mem.bytes(off, 2).map(|b| u16_at(b, 0)).unwrap_or(0);
    let ebda = u64::from(bda16(0x40e)) << 4;
    if ebda != 0 {
        if let Some(found) = scan(mem, ebda, 1024) {
            return Some(found);
        }
    }
    if let kib @ 2..=640 = bda16(0x413) {
        if let Some(found) = scan(mem, u64::from(kib - 1) * 1024, 1024) {
            return Some(found);
        }
    }
    scan(mem, 639 * 1024, 1024).or_else(|| scan(mem, 0xf_0000, 0x1_0000))
}

/// Finds and parses the MP configuration.
pub fn find(mem: &impl PhysMem) -> Result<MpConfig, MpError> {
    let fp_addr = find_floating_pointer(mem).ok_or(MpError::NotFound)?;
    parse(mem, fp_addr).map_err(|why| MpError::BadTable(fp_addr, why))
}

/// Parses the configuration the floating pointer at `fp_addr` describes.
pub fn parse(mem: &impl PhysMem, fp_addr: u64) -> Result<MpConfig, &'static str> {
    let fp = mem
        .bytes(fp_addr, 16)
        .ok_or("floating pointer unreadable")?;
    let table_addr = u64::from(u32_at(fp, 4));
    let default_config = fp[11];
    let mut cfg = MpConfig {
        floating_pointer: fp_addr,
        table: table_addr,
        lapic: 0xfee0_0000,
        processors: [Processor::default(); MAX_PROCESSORS],
        count: 0,
    };
    if table_addr == 0 {
        // A default configuration (MP spec chapter 5): two processors, APIC IDs 0 and 1.
        if default_config == 0 {
            return Err("no configuration table and no default configuration");
        }
        cfg.processors[0] = Processor {
            apic_id: 0,
            enabled: true,
            bsp: true,
        };
        cfg.processors[1] = Processor {
            apic_id: 1,
            enabled: true,
            bsp: false,
        };
        cfg.count = 2;
        return Ok(cfg);
    }
    let head = mem
        .bytes(table_addr, 44)
        .ok_or("configuration table unreadable")?;
    if &head[0..4] != b"PCMP" {
        return Err("configuration table signature is not PCMP");
    }
    let base_len = usize::from(u16_at(head, 4));
    let entry_count = usize::from(u16_at(head, 34));
    cfg.lapic = u32_at(head, 36);
    if base_len < 44 {
        return Err("configuration table length too small");
    }
    let table = mem
        .bytes(table_addr, base_len)
        .ok_or("configuration table unreadable")?;
    if !checksum_ok(table) {
        return Err("configuration table checksum is wrong");
    }
    let mut off = 44;
    for _ in 0..entry_count {
        let Some(&kind) = table.get(off) else {
            return Err("entries overrun the table");
        };
        let len = match kind {
            0 => 20,
            1..=4 => 8,
            _ => return Err("unknown entry type"),
        };
        let entry = table
            .get(off..off + len)
            .ok_or("entries overrun the table")?;
        if kind == 0 && cfg.count < MAX_PROCESSORS {
            cfg.processors[cfg.count] = Processor {
                apic_id: entry[1],
                enabled: entry[3] & 1 != 0,
                bsp: entry[3] & 2 != 0,
            };
            cfg.count += 1;
        }
        off += len;
    }
    Ok(cfg)
}
