//! Reading Linux's `boot_params` (the zero page) and the command line.
//!
//! Pure functions over byte slices, so that vmm/tests/guest_image.rs can test them on the
//! host with zero pages it builds.

/// Size of the zero page.
pub const ZERO_PAGE_SIZE: usize = 4096;
/// The most e820 entries the zero page holds.
pub const E820_MAX: usize = 128;

const ACPI_RSDP_ADDR: usize = 0x070;
const EXT_RAMDISK_IMAGE: usize = 0x0c0;
const EXT_RAMDISK_SIZE: usize = 0x0c4;
const EXT_CMD_LINE_PTR: usize = 0x0c8;
const E820_ENTRIES: usize = 0x1e8;
const RAMDISK_IMAGE: usize = 0x218;
const RAMDISK_SIZE: usize = 0x21c;
const CMD_LINE_PTR: usize = 0x228;
const CMDLINE_SIZE: usize = 0x238;
const E820_TABLE: usize = 0x2d0;
const E820_ENTRY_SIZE: usize = 20;

/// The longest command line the guest reads (its setup header's `cmdline_size`).
pub const CMDLINE_MAX: usize = 2047;

fn u32_at(zp: &[u8], off: usize) -> u32 {
    match zp.get(off..off + 4) {
        Some(b) => u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        None => 0,
    }
}

fn u64_at(zp: &[u8], off: usize) -> u64 {
    u64::from(u32_at(zp, off)) | (u64::from(u32_at(zp, off + 4)) << 32)
}

/// One e820 entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct E820Entry {
    pub addr: u64,
    pub size: u64,
    pub kind: u32,
}

/// e820 type 1: usable RAM.
pub const E820_RAM: u32 = 1;

impl E820Entry {
    /// One past the last byte (saturating).
    pub fn end(&self) -> u64 {
        self.addr.saturating_add(self.size)
    }

    /// The type's name, one word, as the guest prints it.
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            1 => "usable",
            2 => "reserved",
            3 => "acpi",
            4 => "nvs",
            5 => "unusable",
            7 => "pmem",
            _ => "other",
        }
    }
}

/// The e820 entries of a zero page (at most [`E820_MAX`], whatever `e820_entries` says).
pub fn e820(zp: &[u8]) -> impl Iterator<Item = E820Entry> + '_ {
    let n = usize::from(zp.get(E820_ENTRIES).copied().unwrap_or(0)).min(E820_MAX);
    (0..n).map_while(move |i| {
        let off = E820_TABLE + i * E820_ENTRY_SIZE;
        zp.get(off..off + E820_ENTRY_SIZE)?;
        Some(E820Entry {
            addr: u64_at(zp, off),
            size: u64_at(zp, off + 8),
            kind: u32_at(zp, off + 16),
        })
    })
}

/// The initrd's (address, size), if the loader placed one.
pub fn initrd(zp: &[u8]) -> Option<(u64, u64)> {
    let addr =
        u64::from(u32_at(zp, RAMDISK_IMAGE)) | (u64::from(u32_at(zp, EXT_RAMDISK_IMAGE)) << 32);
    let size =
        u64::from(u32_at(zp, RAMDISK_SIZE)) | (u64::from(u32_at(zp, EXT_RAMDISK_SIZE)) << 32);
    if size == 0 {
        None
    } else {
        Some((addr, size))
    }
}

/// `acpi_rsdp_addr` (boot protocol 2.14): where the loader says the ACPI RSDP is; 0 if it
/// does not say.
pub fn acpi_rsdp_addr(zp: &[u8]) -> u64 {
    u64_at(zp, ACPI_RSDP_ADDR)
}

/// The command line's address (0: none) and the most bytes to read there: the header's
/// `cmdline_size` as the loader left it, capped at [`CMDLINE_MAX`].
pub fn cmdline_location(zp: &[u8]) -> (u64, usize) {
    let addr =
        u64::from(u32_at(zp, CMD_LINE_PTR)) | (u64::from(u32_at(zp, EXT_CMD_LINE_PTR)) << 32);
    let size = u32_at(zp, CMDLINE_SIZE) as usize;
    let max = if size == 0 {
        CMDLINE_MAX
    } else {
        size.min(CMDLINE_MAX)
    };
    (addr, max)
}

/// The command line proper: `raw` up to its first NUL.
pub fn cmdline_text(raw: &[u8]) -> &[u8] {
    match raw.iter().position(|&b| b == 0) {
        Some(n) => &raw[..n],
        None => raw,
    }
}

/// What the command line asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload<'a> {
    Smoke,
    IoStorm,
    MemTouch,
    Panic,
    TripleFault,
    Reset,
    Echo,
    Probe,
    Fault,
    Hotplug,
    LookupBench,
    Flood,
    Unknown(&'a [u8]),
}

impl Workload<'_> {
    /// The name as the command line spells it.
    pub fn name(&self) -> &[u8] {
        match self {
            Workload::Smoke => b"smoke",
            Workload::IoStorm => b"io-storm",
            Workload::MemTouch => b"mem-touch",
            Workload::Panic => b"panic",
            Workload::TripleFault => b"triple-fault",
            Workload::Reset => b"reset",
            Workload::Echo => b"echo",
            Workload::Probe => b"probe",
            Workload::Fault => b"fault",
            Workload::Hotplug => b"hotplug",
            Workload::LookupBench => b"lookup-bench",
            Workload::Flood => b"flood",
            Workload::Unknown(name) => name,
        }
    }
}

/// Where `cpus=` says the CPUs are listed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuSource<'a> {
    /// `cpus=mp` (the default): the MultiProcessor Specification tables.
    Mp,
    /// `cpus=acpi`: the ACPI MADT.
    Acpi,
    /// Anything else, as written.
    Unknown(&'a [u8]),
}

/// The parsed command line: `key=value` words separated by spaces; unknown words are ignored,
/// and a later word wins over an earlier one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options<'a> {
    pub workload: Workload<'a>,
    /// The value of `count=` as written (io-storm's writes, lookup-bench's table size; see
    /// [`parse_u64`]).
    pub count: Option<&'a [u8]>,
    /// The value of `rounds=` as written (lookup-bench's rounds).
    pub rounds: Option<&'a [u8]>,
    /// The value of `cycles=` as written (hotplug's RAM cycles).
    pub cycles: Option<&'a [u8]>,
    /// `cpus=`: where smoke and lookup-bench find the CPUs.
    pub cpus: CpuSource<'a>,
}

/// io-storm's writes when the command line gives no `count=`.
pub const DEFAULT_IO_STORM_COUNT: u64 = 10_000;
/// hotplug's present-to-absent RAM cycles when the command line gives no `cycles=`.
pub const DEFAULT_HOTPLUG_CYCLES: u64 = 10;
/// lookup-bench's table size when the command line gives no `count=`.
pub const DEFAULT_LOOKUP_COUNT: u64 = 4096;
/// lookup-bench's rounds when the command line gives no `rounds=`.
pub const DEFAULT_LOOKUP_ROUNDS: u64 = 100;

/// Parses a command line.
pub fn parse_cmdline(text: &[u8]) -> Options<'_> {
    let mut opts = Options {
        workload: Workload::Smoke,
        count: None,
        rounds: None,
        cycles: None,
        cpus: CpuSource::Mp,
    };
    for word in text
        .split(|&b| b == b' ' || b == b'\t' || b == b'\n')
        .filter(|w| !w.is_empty())
    {
        let Some(eq) = word.iter().position(|&b| b == b'=') else {
            continue;
        };
        let (key, value) = (&word[..eq], &word[eq + 1..]);
        match key {
            b"workload" => {
                opts.workload = match value {
                    b"smoke" => Workload::Smoke,
                    b"io-storm" => Workload::IoStorm,
                    b"mem-touch" => Workload::MemTouch,
                    b"panic" => Workload::Panic,
                    b"triple-fault" => Workload::TripleFault,
                    b"reset" => Workload::Reset,
                    b"echo" => Workload::Echo,
                    b"probe" => Workload::Probe,
                    b"fault" => Workload::Fault,
                    b"hotplug" => Workload::Hotplug,
                    b"lookup-bench" => Workload::LookupBench,
                    b"flood" => Workload::Flood,
                    other => Workload::Unknown(other),
                }
            }
            b"count" => opts.count = Some(value),
            b"rounds" => opts.rounds = Some(value),
            b"cycles" => opts.cycles = Some(value),
            b"cpus" => {
                opts.cpus = match value {
                    b"mp" => CpuSource::Mp,
                    b"acpi" => CpuSource::Acpi,
                    other => CpuSource::Unknown(other),
                }
            }
            _ => {}
        }
    }
    opts
}

/// A decimal or `0x` hexadecimal number; `None` if empty, malformed or too large.
pub fn parse_u64(s: &[u8]) -> Option<u64> {
    let (digits, radix) = match s {
        [b'0', b'x' | b'X', rest @ ..] => (rest, 16),
        _ => (s, 10),
    };
    if digits.is_empty() {
        return None;
    }
    let mut value: u64 = 0;
    for &c in digits {
        let d = (c as char).to_digit(radix)?;
        value = value
            .checked_mul(u64::from(radix))?
            .checked_add(u64::from(d))?;
    }
    Some(value)
}
