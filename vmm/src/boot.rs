//! The Linux x86_64 boot protocol: kernel and initrd loading, the zero page, the e820 map,
//! the command line, the GDT and the identity page tables.
//!
//! The built-in guest goes through exactly this path (it is a bzImage too).

use crate::error::{Error, Result};
use crate::layout::*;
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use linux_loader::loader::KernelLoader;
use memory::{BlockFlags, RamBlock, RamList};
use std::io::{Cursor, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

/// The e820 types the VMM uses.
pub const E820_RAM: u32 = 1;
/// Reserved.
pub const E820_RESERVED: u32 = 2;

/// Where the kernel comes from.
#[derive(Clone, Debug)]
pub enum KernelSource {
    /// The built-in test guest.
    Builtin,
    /// A bzImage file.
    File(PathBuf),
}

/// What the boot path needs to know.
#[derive(Clone, Debug)]
pub struct BootConfig {
    /// The kernel.
    pub kernel: KernelSource,
    /// An optional initrd.
    pub initrd: Option<PathBuf>,
    /// The kernel command line.
    pub cmdline: String,
    /// Guest memory in bytes.
    pub mem: u64,
    /// vCPUs.
    pub cpus: u8,
    /// Back guest RAM with transparent huge pages (`MADV_HUGEPAGE`, 2 MiB-aligned).
    pub hugepages: bool,
}

/// What loading produced: everything the vCPUs and the checks need.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// The 64-bit entry point (load address + 0x200).
    pub entry: u64,
    /// Where the kernel was loaded and where it ends.
    pub kernel: (u64, u64),
    /// The initrd's address and size.
    pub initrd: Option<(u64, u64)>,
    /// The e820 map given to the guest.
    pub e820: Vec<boot_e820_entry>,
    /// The setup header as written into the zero page.
    pub header: setup_header,
}

enum Image {
    Builtin(Cursor<&'static [u8]>),
    File(std::fs::File),
}

impl Image {
    fn name(src: &KernelSource) -> String {
        match src {
            KernelSource::Builtin => "(built-in guest)".to_string(),
            KernelSource::File(p) => p.display().to_string(),
        }
    }

    fn open(src: &KernelSource) -> Result<Image> {
        match src {
            KernelSource::Builtin => Ok(Image::Builtin(Cursor::new(
                crate::guest_image::GUEST_BZIMAGE,
            ))),
            KernelSource::File(p) => {
                let f = std::fs::File::open(p).map_err(|source| Error::KernelFile {
                    path: p.clone(),
                    source,
                })?;
                if f.metadata().map(|m| m.is_dir()).unwrap_or(false) {
                    return Err(Error::KernelFile {
                        path: p.clone(),
                        source: std::io::Error::other("is a directory"),
                    });
                }
                Ok(Image::File(f))
            }
        }
    }
}

/// Reads and validates the setup header of a bzImage: magic, protocol version >= 2.12, and
/// the 64-bit entry point.
pub fn read_header(name: &str, image: &mut (impl Read + Seek)) -> Result<setup_header> {
    let mut buf = [0u8; std::mem::size_of::<setup_header>()];
    let ok = image
        .seek(SeekFrom::Start(0x1f1))
        .and_then(|_| image.read_exact(&mut buf))
        .is_ok();
    if !ok {
        return Err(Error::NotBzImage(name.to_string()));
    }
    // setup_header is plain old data (integers only); any bit pattern is valid.
    let hdr: setup_header = vm_memory::ByteValued::from_slice(&buf)
        .copied()
        .unwrap_or_default();
    let magic = hdr.header;
    if magic != 0x5372_6448 {
        return Err(Error::NotBzImage(name.to_string()));
    }
    let version = hdr.version;
    if version < 0x020c {
        return Err(Error::ProtocolTooOld {
            name: name.to_string(),
            major: version >> 8,
            minor: version & 0xff,
        });
    }
    if hdr.xloadflags & linux_loader::loader::bootparam::XLF_KERNEL_64 == 0 {
        return Err(Error::No64BitEntry(name.to_string()));
    }
    if hdr.loadflags & linux_loader::loader::bootparam::LOADED_HIGH == 0 {
        return Err(Error::NotBzImage(name.to_string()));
    }
    Ok(hdr)
}

fn write<M: GuestMemoryBackend, T: vm_memory::ByteValued>(
    mem: &M,
    what: &'static str,
    addr: u64,
    v: T,
) -> Result<()> {
    mem.write_obj(v, GuestAddress(addr))
        .map_err(|source| Error::GuestWrite { what, source })
}

fn write_slice<M: GuestMemoryBackend>(
    mem: &M,
    what: &'static str,
    addr: u64,
    s: &[u8],
) -> Result<()> {
    mem.write_slice(s, GuestAddress(addr))
        .map_err(|source| Error::GuestWrite { what, source })
}

/// The e820 map for `mem` bytes of RAM.
pub fn e820_map(mem: u64) -> Vec<boot_e820_entry> {
    let mut v = vec![
        boot_e820_entry {
            addr: 0,
            size: EBDA,
            r#type: E820_RAM,
        },
        boot_e820_entry {
            addr: EBDA,
            size: HIGH_MEM - EBDA,
            r#type: E820_RESERVED,
        },
    ];
    for (base, size) in ram_ranges(mem) {
        let start = base.max(HIGH_MEM);
        let end = base + size;
        if end > start {
            v.push(boot_e820_entry {
                addr: start,
                size: end - start,
                r#type: E820_RAM,
            });
        }
    }
    v
}

/// Loads the kernel, initrd and command line and writes the zero page, the GDT and the page
/// tables. Guest memory must already exist (see [`crate::vm`]).
pub fn load<M: GuestMemoryBackend>(mem: &M, cfg: &BootConfig) -> Result<Loaded> {
    let name = Image::name(&cfg.kernel);
    let mut image = Image::open(&cfg.kernel)?;
    let hdr = match &mut image {
        Image::Builtin(c) => read_header(&name, c)?,
        Image::File(f) => read_header(&name, f)?,
    };

    // The command line: the image says how long it may be (protocol >= 2.06).
    let max = if hdr.cmdline_size == 0 {
        255
    } else {
        hdr.cmdline_size as usize
    };
    if cfg.cmdline.len() > max {
        return Err(Error::CmdlineTooLong {
            len: cfg.cmdline.len(),
            max,
        });
    }
    if cfg
        .cmdline
        .bytes()
        .any(|b| b == 0 || !(0x20..0x7f).contains(&b))
    {
        return Err(Error::Cmdline(
            "it may contain only printable ASCII characters".into(),
        ));
    }

    let loaded = match &mut image {
        Image::Builtin(c) => {
            linux_loader::loader::BzImage::load(mem, None, c, Some(GuestAddress(HIGH_MEM)))
        }
        Image::File(f) => {
            linux_loader::loader::BzImage::load(mem, None, f, Some(GuestAddress(HIGH_MEM)))
        }
    }
    .map_err(|source| Error::KernelLoad {
        name: name.clone(),
        source,
    })?;
    let kernel_load = loaded.kernel_load.0;
    let kernel_end = loaded.kernel_end;
    let mut hdr = loaded.setup_header.unwrap_or(hdr);

    // The command line, NUL-terminated.
    let mut bytes = cfg.cmdline.as_bytes().to_vec();
    bytes.push(0);
    write_slice(mem, "the command line", CMDLINE, &bytes)?;

    // The initrd: at the top of low memory, below initrd_addr_max, page aligned, above the
    // kernel (and its init_size footprint).
    let low_end = cfg.mem.min(MMIO_HOLE);
    let initrd = match &cfg.initrd {
        None => None,
        Some(path) => Some(load_initrd(
            mem,
            path,
            &hdr,
            kernel_load,
            kernel_end,
            low_end,
        )?),
    };

    hdr.type_of_loader = 0xff;
    hdr.cmd_line_ptr = CMDLINE as u32;
    hdr.cmdline_size = cfg.cmdline.len() as u32;
    hdr.loadflags |= linux_loader::loader::bootparam::CAN_USE_HEAP;
    hdr.heap_end_ptr = 0xfe00;
    if let Some((addr, size)) = initrd {
        hdr.ramdisk_image = addr as u32;
        hdr.ramdisk_size = size as u32;
    }

    let e820 = e820_map(cfg.mem);
    let mut params = boot_params {
        hdr,
        ..Default::default()
    };
    params.e820_entries = e820.len() as u8;
    // The ACPI tables (issue 7; written by `Vm::new`): boot protocol 2.14's RSDP pointer.
    params.acpi_rsdp_addr = crate::acpi::RSDP_ADDR;
    for (slot, e) in params.e820_table.iter_mut().zip(&e820) {
        *slot = *e;
    }
    if let Some((addr, size)) = initrd {
        params.ext_ramdisk_image = (addr >> 32) as u32;
        params.ext_ramdisk_size = (size >> 32) as u32;
    }
    write(mem, "the zero page", ZERO_PAGE, params)?;

    write_gdt(mem)?;
    write_page_tables(mem, cfg.mem)?;

    Ok(Loaded {
        entry: kernel_load + 0x200,
        kernel: (kernel_load, kernel_end),
        initrd,
        e820,
        header: hdr,
    })
}

fn load_initrd<M: GuestMemoryBackend>(
    mem: &M,
    path: &Path,
    hdr: &setup_header,
    kernel_load: u64,
    kernel_end: u64,
    low_end: u64,
) -> Result<(u64, u64)> {
    let err = |source| Error::InitrdFile {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(err)?;
    let size = f.metadata().map_err(err)?.len();
    if f.metadata().map_err(err)?.is_dir() {
        return Err(err(std::io::Error::other("is a directory")));
    }
    // Room between the kernel's footprint and the top of low memory / initrd_addr_max.
    // A compressed kernel decompresses to max(load address aligned up to kernel_alignment,
    // pref_address) and needs init_size bytes from there.
    let align = (hdr.kernel_alignment as u64).max(1);
    let footprint_end = (kernel_load.next_multiple_of(align).max(hdr.pref_address)
        + hdr.init_size as u64)
        .max(kernel_end);
    let max = if hdr.initrd_addr_max == 0 {
        0x37ff_ffff
    } else {
        hdr.initrd_addr_max as u64
    };
    let top = low_end.min(max + 1);
    let room = top.saturating_sub(footprint_end.next_multiple_of(4096));
    if size > room {
        return Err(Error::InitrdTooLarge {
            name: path.display().to_string(),
            size,
            room,
        });
    }
    let addr = (top - size) & !0xfff;
    let mut data = Vec::with_capacity(size as usize);
    f.read_to_end(&mut data).map_err(err)?;
    if data.len() as u64 != size {
        return Err(err(std::io::Error::other("file changed while being read")));
    }
    write_slice(mem, "the initrd", addr, &data)?;
    Ok((addr, size))
}

/// GDT entries: null, null, 64-bit code (0x10), data (0x18), TSS (0x20).
pub const GDT_ENTRIES: [u64; 5] = [
    0,
    0,
    0x00af_9b00_0000_ffff,
    0x00cf_9300_0000_ffff,
    0x008f_8b00_0000_ffff,
];

fn write_gdt<M: GuestMemoryBackend>(mem: &M) -> Result<()> {
    for (i, e) in GDT_ENTRIES.iter().enumerate() {
        write(mem, "the GDT", GDT + 8 * i as u64, *e)?;
    }
    Ok(())
}

/// How many GiB the boot page tables identity-map for `mem` bytes of RAM: all RAM and at
/// least the first 4 GiB (so the LAPIC and IOAPIC are mapped too).
pub fn mapped_gib(mem: u64) -> u64 {
    let end = ram_ranges(mem)
        .iter()
        .map(|(b, s)| b + s)
        .max()
        .unwrap_or(0)
        .max(FOUR_GIB);
    end.div_ceil(1 << 30)
}

fn write_page_tables<M: GuestMemoryBackend>(mem: &M, ram: u64) -> Result<()> {
    let gib = mapped_gib(ram);
    debug_assert!(gib <= MAX_PDS);
    write(mem, "the page tables", PML4, PDPT | 0x3)?;
    for g in 0..gib {
        let pd = PD_START + g * 0x1000;
        write(mem, "the page tables", PDPT + 8 * g, pd | 0x3)?;
        for i in 0..512u64 {
            // Present, writable, 2 MiB page.
            let entry = ((g << 30) + (i << 21)) | 0x83;
            write(mem, "the page tables", pd + 8 * i, entry)?;
        }
    }
    Ok(())
}

/// Checks a memory size against what the boot layout supports.
pub fn check_mem(mem: u64) -> Result<()> {
    let mib = mem >> 20;
    if mem < MIN_MEM {
        return Err(Error::MemSize {
            mib,
            why: format!("too small; the VMM needs at least {} MiB", MIN_MEM >> 20),
        });
    }
    if mem > MAX_MEM {
        return Err(Error::MemSize {
            mib,
            why: format!(
                "too large; the boot page tables map at most {} MiB of RAM",
                MAX_MEM >> 20
            ),
        });
    }
    if !mem.is_multiple_of(2 << 20) {
        return Err(Error::MemSize {
            mib,
            why: "must be a multiple of 2 MiB".into(),
        });
    }
    Ok(())
}

/// Creates guest RAM for `mem` bytes as blocks of a [`RamList`] in `rcu`'s domain: one below
/// the 32-bit MMIO hole, one above 4 GiB if needed (anonymous, not reserved up front).
///
/// With `hugepages`, the blocks ask for transparent huge pages: far fewer faults while the
/// guest first touches its memory, and 2 MiB mappings in KVM's page tables.
pub fn create_memory(mem: u64, rcu: &rcu::Rcu, hugepages: bool) -> Result<RamList> {
    check_mem(mem)?;
    let ram = RamList::new(rcu);
    for (i, (base, size)) in ram_ranges(mem).into_iter().enumerate() {
        let name = if i == 0 { "ram-low" } else { "ram-high" };
        let flags = if hugepages {
            BlockFlags::HUGEPAGES
        } else {
            BlockFlags::empty()
        };
        let block = RamBlock::new(name, base, size, flags).map_err(|e| Error::GuestMemory {
            mib: mem >> 20,
            source: std::io::Error::other(e.to_string()),
        })?;
        ram.add(block).map_err(|e| Error::GuestMemory {
            mib: mem >> 20,
            source: std::io::Error::other(e.to_string()),
        })?;
    }
    Ok(ram)
}
