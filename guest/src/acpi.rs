//! Finding the CPUs in the ACPI tables: RSDP, XSDT (or RSDT), MADT.
//!
//! The RSDP is taken from `boot_params.acpi_rsdp_addr` when the loader gives it, else searched
//! where the ACPI specification says (5.2.5.1): on 16-byte boundaries in the first KiB of the
//! EBDA (segment at 0x40e), then in 0xe0000-0xfffff. Its checksums (the first 20 bytes, and
//! for revision 2 the extended one over 36 bytes) are checked, then those of the XSDT (the
//! RSDT for revision 0), of every table it lists, and of the DSDT the FADT names. The MADT's
//! type-0 entries (processor local APIC) give the APIC IDs. Parsing is pure over a
//! [`PhysMem`], like the MP table's, so it can be tested on the host.
//!
//! Uses `PhysMem` and `Processor` from the sibling module `mp` (`super::mp`): a host test that
//! includes this file with `#[path]` makes the MP module reachable there under that name
//! (e.g. `use guest_mp as mp;` next to it).

use super::mp::{PhysMem, Processor, MAX_PROCESSORS};

/// The 36-byte header of every system description table.
const SDT_HEADER: usize = 36;
/// The largest table the guest reads (a sanity bound: the VMM's are a few hundred bytes).
const MAX_TABLE: u32 = 64 * 1024;
/// The most tables followed from the XSDT.
const MAX_TABLES: usize = 64;

/// What the tables say.
#[derive(Clone, Copy, Debug)]
pub struct AcpiConfig {
    /// Address of the RSDP.
    pub rsdp: u64,
    /// Address of the XSDT (or of the RSDT, if `xsdt` is false).
    pub sdt: u64,
    /// Whether the root table is an XSDT (64-bit pointers) rather than an RSDT.
    pub xsdt: bool,
    /// Address of the MADT.
    pub madt: u64,
    /// The local APIC address the MADT gives.
    pub lapic: u32,
    processors: [Processor; MAX_PROCESSORS],
    count: usize,
}

impl AcpiConfig {
    /// The MADT's processor local APIC entries, in table order. ACPI has no BSP flag:
    /// `bsp` is false in all of them.
    pub fn processors(&self) -> &[Processor] {
        &self.processors[..self.count]
    }
}

/// Why no configuration was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcpiError {
    /// No RSDP: none in boot_params and no valid one in the search areas.
    NotFound,
    /// The table at this address (an RSDP, XSDT, RSDT, MADT or another) is unusable.
    BadTable(u64, &'static str),
}

fn sum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |a, &b| a.wrapping_add(b))
}

fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from(u32_at(b, off)) | (u64::from(u32_at(b, off + 4)) << 32)
}

/// Checks the RSDP at `addr`: signature, the ACPI 1.0 checksum over 20 bytes, and for
/// revision 2 and later the length and the extended checksum over 36 bytes.
fn check_rsdp(mem: &impl PhysMem, addr: u64) -> Result<&[u8], &'static str> {
    let r = mem.bytes(addr, 20).ok_or("RSDP unreadable")?;
    if &r[0..8] != b"RSD PTR " {
        return Err("no RSDP signature");
    }
    if sum(r) != 0 {
        return Err("RSDP checksum is wrong");
    }
    if r[15] < 2 {
        return Ok(r);
    }
    let r = mem.bytes(addr, 36).ok_or("RSDP unreadable")?;
    if u32_at(r, 20) < 36 {
        return Err("RSDP length is below 36");
    }
    if sum(r) != 0 {
        return Err("RSDP extended checksum is wrong");
    }
    Ok(r)
}

/// Searches `[start, start + len)` on 16-byte boundaries for an RSDP whose checksums hold.
/// Returns the first valid one, or else the first candidate's error, if any.
fn scan(mem: &impl PhysMem, start: u64, len: u64) -> Result<u64, Option<(u64, &'static str)>> {
    let mut first_bad = None;
    let mut addr = start.next_multiple_of(16);
    while addr + 20 <= start + len {
        if let Some(sig) = mem.bytes(addr, 8) {
            if sig == b"RSD PTR " {
                match check_rsdp(mem, addr) {
                    Ok(_) => return Ok(addr),
                    Err(why) => {
                        first_bad.get_or_insert((addr, why));
                    }
                }
            }
        }
        addr += 16;
    }
    Err(first_bad)
}

/// The RSDP's address: `hint` (boot_params.acpi_rsdp_addr) if not 0, which must then hold a
/// valid RSDP; else the first valid one in the EBDA's first KiB or in 0xe0000-0xfffff. A
/// candidate with the signature but a bad checksum is skipped, as Linux does, and reported
/// only if no valid one is found.
pub fn find_rsdp(mem: &impl PhysMem, hint: u64) -> Result<u64, AcpiError> {
    if hint != 0 {
        return match check_rsdp(mem, hint) {
            Ok(_) => Ok(hint),
            Err(why) => Err(AcpiError::BadTable(hint, why)),
        };
    }
    let ebda = mem
        .bytes(0x40e, 2)
        .map(|b| u64::from(u16_at(b, 0)) << 4)
        .unwrap_or(0);
    let mut first_bad = None;
    if ebda != 0 {
        match scan(mem, ebda, 1024) {
            Ok(found) => return Ok(found),
            Err(bad) => first_bad = bad,
        }
    }
    match scan(mem, 0xe_0000, 0x2_0000) {
        Ok(found) => Ok(found),
        Err(bad) => match first_bad.or(bad) {
            Some((at, why)) => Err(AcpiError::BadTable(at, why)),
            None => Err(AcpiError::NotFound),
        },
    }
}

/// The table at `addr` with its header checked: readable, `length` plausible, checksum 0.
/// `sig` names the expected signature (`None`: any).
fn table<'m>(
    mem: &'m impl PhysMem,
    addr: u64,
    sig: Option<&[u8; 4]>,
) -> Result<&'m [u8], AcpiError> {
    let bad = |why| AcpiError::BadTable(addr, why);
    let head = mem
        .bytes(addr, SDT_HEADER)
        .ok_or(bad("table unreadable (not below 4 GiB?)"))?;
    if let Some(sig) = sig {
        if &head[0..4] != sig {
            return Err(bad(match sig {
                b"XSDT" => "XSDT signature is wrong",
                b"RSDT" => "RSDT signature is wrong",
                _ => "DSDT signature is wrong",
            }));
        }
    }
    let len = u32_at(head, 4);
    if (len as usize) < SDT_HEADER || len > MAX_TABLE {
        return Err(bad("table length is implausible"));
    }
    let t = mem
        .bytes(addr, len as usize)
        .ok_or(bad("table unreadable"))?;
    if sum(t) != 0 {
        return Err(bad(match &t[0..4] {
            b"XSDT" => "XSDT checksum is wrong",
            b"RSDT" => "RSDT checksum is wrong",
            b"APIC" => "MADT checksum is wrong",
            b"FACP" => "FADT checksum is wrong",
            b"DSDT" => "DSDT checksum is wrong",
            _ => "table checksum is wrong",
        }));
    }
    Ok(t)
}

/// Finds and parses the tables: the RSDP (see [`find_rsdp`]), the root table and every
/// table it lists (checksums), and the MADT's processors.
pub fn find(mem: &impl PhysMem, hint: u64) -> Result<AcpiConfig, AcpiError> {
    let rsdp = find_rsdp(mem, hint)?;
    parse(mem, rsdp)
}

/// Parses the tables from the (valid) RSDP at `rsdp`.
pub fn parse(mem: &impl PhysMem, rsdp: u64) -> Result<AcpiConfig, AcpiError> {
    let r = check_rsdp(mem, rsdp).map_err(|why| AcpiError::BadTable(rsdp, why))?;
    let xsdt_addr = if r.len() >= 36 { u64_at(r, 24) } else { 0 };
    let (sdt_addr, xsdt) = if xsdt_addr != 0 {
        (xsdt_addr, true)
    } else {
        (u64::from(u32_at(r, 16)), false)
    };
    if sdt_addr == 0 {
        return Err(AcpiError::BadTable(rsdp, "RSDP names no XSDT and no RSDT"));
    }
    let root = table(mem, sdt_addr, Some(if xsdt { b"XSDT" } else { b"RSDT" }))?;
    let width = if xsdt { 8 } else { 4 };
    let entries = &root[SDT_HEADER..];
    if entries.len() % width != 0 || entries.len() / width > MAX_TABLES {
        return Err(AcpiError::BadTable(
            sdt_addr,
            "root table entries are malformed",
        ));
    }
    let mut madt_addr = None;
    for i in 0..entries.len() / width {
        let addr = if xsdt {
            u64_at(entries, i * 8)
        } else {
            u64::from(u32_at(entries, i * 4))
        };
        let t = table(mem, addr, None)?;
        match &t[0..4] {
            b"APIC" => {
                madt_addr.get_or_insert(addr);
            }
            b"FACP" => check_dsdt(mem, addr, t)?,
            _ => {}
        }
    }
    let madt_addr = madt_addr.ok_or(AcpiError::BadTable(sdt_addr, "no MADT in the root table"))?;
    parse_madt(mem, rsdp, sdt_addr, xsdt, madt_addr)
}

/// Checks the DSDT the FADT at `addr` names (X_DSDT if set, else DSDT), if any.
fn check_dsdt(mem: &impl PhysMem, addr: u64, fadt: &[u8]) -> Result<(), AcpiError> {
    let x_dsdt = if fadt.len() >= 148 {
        u64_at(fadt, 140)
    } else {
        0
    };
    let dsdt = match x_dsdt {
        0 if fadt.len() >= 44 => u64::from(u32_at(fadt, 40)),
        0 => return Err(AcpiError::BadTable(addr, "FADT too short")),
        x => x,
    };
    if dsdt != 0 {
        table(mem, dsdt, Some(b"DSDT"))?;
    }
    Ok(())
}

/// Reads the MADT's local APIC address and its type-0 entries.
fn parse_madt(
    mem: &impl PhysMem,
    rsdp: u64,
    sdt: u64,
    xsdt: bool,
    madt: u64,
) -> Result<AcpiConfig, AcpiError> {
    let t = table(mem, madt, None)?;
    let bad = |why| AcpiError::BadTable(madt, why);
    if t.len() < 44 {
        return Err(bad("MADT shorter than 44 bytes"));
    }
    let mut cfg = AcpiConfig {
        rsdp,
        sdt,
        xsdt,
        madt,
        lapic: u32_at(t, 36),
        processors: [Processor::default(); MAX_PROCESSORS],
        count: 0,
    };
    let mut off = 44;
    while off < t.len() {
        let Some(&[kind, len]) = t.get(off..off + 2) else {
            return Err(bad("MADT entries overrun the table"));
        };
        let len = usize::from(len);
        if len < 2 {
            return Err(bad("MADT entry shorter than 2 bytes"));
        }
        let entry = t
            .get(off..off + len)
            .ok_or(bad("MADT entries overrun the table"))?;
        if kind == 0 {
            if len < 8 {
                return Err(bad("MADT local APIC entry shorter than 8 bytes"));
            }
            if cfg.count < MAX_PROCESSORS {
                cfg.processors[cfg.count] = Processor {
                    apic_id: entry[3],
                    enabled: u32_at(entry, 4) & 1 != 0,
                    bsp: false,
                };
                cfg.count += 1;
            }
        }
        off += len;
    }
    Ok(cfg)
}
