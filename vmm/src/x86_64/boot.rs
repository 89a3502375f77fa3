//! The Linux x86_64 boot protocol: kernel and initrd loading, the zero page, the e820 map,
//! the command line, the GDT and the identity page tables.
//!
//! The built-in guest goes through exactly this path (it is a bzImage too).

use crate::error::{Error, Result};
use crate::x86_64::layout::*;
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use linux_loader::loader::KernelLoader;
use memory::{BlockFlags, RamBlock, RamList};
use std::borrow::Cow;
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

/// The most bytes of command line (without its NUL) that fit between [`CMDLINE`] and the EBDA,
/// whatever the image's `cmdline_size` says.
pub const CMDLINE_ROOM: usize = (EBDA - CMDLINE) as usize - 1;

fn image_name(src: &KernelSource) -> String {
    match src {
        KernelSource::Builtin => "(built-in guest)".to_string(),
        KernelSource::File(p) => p.display().to_string(),
    }
}

/// Opens `path` (a `--kernel` or `--initrd`, named by `what`) for loading: it must be a regular
/// file, so that its size is known before anything is read (`/dev/zero` or a pipe would make the
/// VMM read without end). Opened with `O_NONBLOCK` so that a FIFO with no writer cannot block the
/// `open` itself. Returns the file and the size `fstat` reports.
fn open_regular(
    what: &'static str,
    path: &Path,
    err: impl Fn(std::io::Error) -> Error,
) -> Result<(std::fs::File, u64)> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(&err)?;
    let meta = f.metadata().map_err(&err)?;
    let ft = meta.file_type();
    if !ft.is_file() {
        let kind = if ft.is_dir() {
            "is a directory"
        } else if ft.is_char_device() {
            "is a character device"
        } else if ft.is_block_device() {
            "is a block device"
        } else if ft.is_fifo() {
            "is a pipe (FIFO)"
        } else if ft.is_socket() {
            "is a socket"
        } else {
            "is of an unknown type"
        };
        return Err(Error::NotRegularFile {
            what,
            path: path.to_path_buf(),
            kind,
        });
    }
    Ok((f, meta.len()))
}

/// Reads exactly `size` bytes (what `fstat` said when the file was opened) and no more: a file
/// that grows meanwhile does not make the VMM read past it, and one that shrinks is an error.
fn read_sized(
    f: std::fs::File,
    size: u64,
    err: impl Fn(std::io::Error) -> Error,
) -> Result<Vec<u8>> {
    let len = usize::try_from(size).map_err(|_| err(std::io::Error::other("too large")))?;
    let mut data = Vec::new();
    data.try_reserve_exact(len)
        .map_err(|e| err(std::io::Error::other(e.to_string())))?;
    f.take(size).read_to_end(&mut data).map_err(&err)?;
    if data.len() != len {
        return Err(err(std::io::Error::other(format!(
            "the file shrank from {size} to {} bytes while it was being read; do not change it \
             while the VMM starts",
            data.len()
        ))));
    }
    Ok(data)
}

/// Reads the kernel image: the built-in guest, or a regular file of at most `mem` bytes.
fn read_kernel(src: &KernelSource, mem: u64) -> Result<Cow<'static, [u8]>> {
    match src {
        KernelSource::Builtin => Ok(Cow::Borrowed(crate::images::guest_image::GUEST_BZIMAGE)),
        KernelSource::File(p) => {
            let err = |source| Error::KernelFile {
                path: p.clone(),
                source,
            };
            let (f, size) = open_regular("kernel", p, err)?;
            if size > mem {
                return Err(Error::KernelTooLarge {
                    name: p.display().to_string(),
                    size,
                    mem,
                });
            }
            Ok(Cow::Owned(read_sized(f, size, err)?))
        }
    }
}

/// Where the initrd comes from.
#[derive(Clone, Copy, Debug)]
pub enum InitrdImage<'a> {
    /// A file, opened and read only once it is known to fit.
    File(&'a Path),
    /// Bytes already in memory (the fuzz target's way in).
    Bytes(&'a [u8]),
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
/// tables. Guest memory must already exist (see [`crate::kvm::vm`]).
pub fn load<M: GuestMemoryBackend>(mem: &M, cfg: &BootConfig) -> Result<Loaded> {
    let name = image_name(&cfg.kernel);
    let kernel = read_kernel(&cfg.kernel, cfg.mem)?;
    load_image(
        mem,
        cfg,
        &name,
        &kernel,
        cfg.initrd.as_deref().map(InitrdImage::File),
    )
}

/// [`load`] with the kernel image already in memory (`cfg.kernel` and `cfg.initrd` are not
/// looked at). Every header field is treated as hostile: bad values are errors, never panics.
pub fn load_image<M: GuestMemoryBackend>(
    mem: &M,
    cfg: &BootConfig,
    name: &str,
    kernel: &[u8],
    initrd: Option<InitrdImage<'_>>,
) -> Result<Loaded> {
    let hdr = read_header(name, &mut Cursor::new(kernel))?;
    check_cmdline(&cfg.cmdline, &hdr)?;
    let loaded = linux_loader::loader::BzImage::load(
        mem,
        None,
        &mut Cursor::new(kernel),
        Some(GuestAddress(HIGH_MEM)),
    )
    .map_err(|source| Error::KernelLoad {
        name: name.to_string(),
        source,
    })?;
    let kernel_load = loaded.kernel_load.0;
    let kernel_end = loaded.kernel_end;
    // The 64-bit entry point is 0x200 bytes into the protected-mode kernel, which must hold
    // it (else the vCPU would start outside what was loaded, or outside RAM: an image whose
    // setup sectors cover the whole file "loads" 0 bytes at any code32_start).
    let kernel_len = kernel_end.saturating_sub(kernel_load);
    if kernel_len <= 0x200 {
        return Err(Error::KernelHeader {
            name: name.to_string(),
            why: format!(
                "after its setup sectors (setup_sects {}) only {kernel_len} bytes of kernel are \
                 left, so the 64-bit entry point at +0x200 is not in the image",
                hdr.setup_sects
            ),
        });
    }
    let mut hdr = loaded.setup_header.unwrap_or(hdr);

    // The command line, NUL-terminated.
    let mut bytes = cfg.cmdline.as_bytes().to_vec();
    bytes.push(0);
    write_slice(mem, "the command line", CMDLINE, &bytes)?;

    // The initrd: at the top of low memory, below initrd_addr_max, page aligned, above the
    // kernel (and its init_size footprint).
    let low_end = cfg.mem.min(MMIO_HOLE);
    let initrd = match initrd {
        None => None,
        Some(image) => load_initrd(mem, name, image, &hdr, kernel_load, kernel_end, low_end)?,
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
    write(
        mem,
        "the zero page",
        ZERO_PAGE,
        zero_page(hdr, &e820, initrd),
    )?;

    write_gdt(mem)?;
    write_page_tables(mem, cfg.mem)?;

    // code32_start is a u32 and at least HIGH_MEM (the loader checked), so this cannot wrap.
    Ok(Loaded {
        entry: kernel_load + 0x200,
        kernel: (kernel_load, kernel_end),
        initrd,
        e820,
        header: hdr,
    })
}

/// Checks the command line against what the image allows: its length (the image says how
/// long it may be, protocol >= 2.06, and it must fit below the EBDA whatever the image says)
/// and its bytes (printable ASCII).
fn check_cmdline(cmdline: &str, hdr: &setup_header) -> Result<()> {
    let max = if hdr.cmdline_size == 0 {
        255
    } else {
        (hdr.cmdline_size as usize).min(CMDLINE_ROOM)
    };
    if cmdline.len() > max {
        return Err(Error::CmdlineTooLong {
            len: cmdline.len(),
            max,
        });
    }
    if cmdline
        .bytes()
        .any(|b| b == 0 || !(0x20..0x7f).contains(&b))
    {
        return Err(Error::Cmdline(
            "it may contain only printable ASCII characters".into(),
        ));
    }
    Ok(())
}

/// The zero page: the setup header (filled in), the e820 map, the high half of the initrd's
/// place and size (`(address, size)`; the header has the low half), and the RSDP's address.
fn zero_page(
    hdr: setup_header,
    e820: &[boot_e820_entry],
    initrd: Option<(u64, u64)>,
) -> boot_params {
    let mut params = boot_params {
        hdr,
        ..Default::default()
    };
    params.e820_entries = e820.len() as u8;
    // The ACPI tables (issue 7; written by `Vm::new`): boot protocol 2.14's RSDP pointer.
    params.acpi_rsdp_addr = crate::x86_64::acpi::RSDP_ADDR;
    for (slot, e) in params.e820_table.iter_mut().zip(e820) {
        *slot = *e;
    }
    if let Some((addr, size)) = initrd {
        params.ext_ramdisk_image = (addr >> 32) as u32;
        params.ext_ramdisk_size = (size >> 32) as u32;
    }
    params
}

/// The end of the memory the kernel needs once it runs, page aligned: a compressed kernel
/// decompresses to max(load address aligned up to `kernel_alignment`, `pref_address`) and
/// needs `init_size` bytes from there; and never less than the loaded image's end. All three
/// fields come from the image, so every step is checked.
pub fn kernel_footprint_end(
    name: &str,
    hdr: &setup_header,
    kernel_load: u64,
    kernel_end: u64,
) -> Result<u64> {
    let bad = |why: String| Error::KernelHeader {
        name: name.to_string(),
        why,
    };
    let (align, pref, init) = (hdr.kernel_alignment, hdr.pref_address, hdr.init_size);
    let start = kernel_load
        .checked_next_multiple_of(u64::from(align).max(1))
        .ok_or_else(|| {
            bad(format!(
                "the load address {kernel_load:#x} aligned to kernel_alignment {align:#x} \
                 overflows"
            ))
        })?
        .max(pref);
    start
        .checked_add(u64::from(init))
        .ok_or_else(|| {
            bad(format!(
                "the kernel's start {start:#x} (pref_address {pref:#x}) plus init_size \
                 {init:#x} overflows"
            ))
        })?
        .max(kernel_end)
        .checked_next_multiple_of(4096)
        .ok_or_else(|| {
            bad(format!(
                "the kernel's end (pref_address {pref:#x} + init_size {init:#x}) rounded up to \
                 a page overflows"
            ))
        })
}

fn load_initrd<M: GuestMemoryBackend>(
    mem: &M,
    kernel_name: &str,
    image: InitrdImage<'_>,
    hdr: &setup_header,
    kernel_load: u64,
    kernel_end: u64,
    low_end: u64,
) -> Result<Option<(u64, u64)>> {
    // Open a file first (so that a missing one is reported as such) and know its size before
    // reading a byte of it.
    enum Opened<'a> {
        File(std::fs::File, &'a Path),
        Bytes(&'a [u8]),
    }
    let (name, size, opened) = match image {
        InitrdImage::File(path) => {
            let err = |source| Error::InitrdFile {
                path: path.to_path_buf(),
                source,
            };
            let (f, size) = open_regular("initrd", path, err)?;
            (path.display().to_string(), size, Opened::File(f, path))
        }
        InitrdImage::Bytes(b) => ("(in memory)".to_string(), b.len() as u64, Opened::Bytes(b)),
    };
    if size == 0 {
        // Nothing to place: the zero page says "no initrd" (found by the loader fuzz target:
        // an empty initrd was "placed" at initrd_addr_max, below the kernel).
        return Ok(None);
    }
    // Room between the kernel's footprint and the top of low memory / initrd_addr_max.
    let footprint_end = kernel_footprint_end(kernel_name, hdr, kernel_load, kernel_end)?;
    let max = if hdr.initrd_addr_max == 0 {
        0x37ff_ffff
    } else {
        u64::from(hdr.initrd_addr_max)
    };
    let top = low_end.min(max + 1);
    let room = top.saturating_sub(footprint_end);
    if size > room {
        return Err(Error::InitrdTooLarge { name, size, room });
    }
    // size <= room <= top - footprint_end, so neither subtraction can wrap.
    let addr = (top - size) & !0xfff;
    match opened {
        Opened::File(f, path) => {
            let data = read_sized(f, size, |source| Error::InitrdFile {
                path: path.to_path_buf(),
                source,
            })?;
            write_slice(mem, "the initrd", addr, &data)?;
        }
        Opened::Bytes(b) => write_slice(mem, "the initrd", addr, b)?,
    }
    Ok(Some((addr, size)))
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

#[cfg(test)]
mod tests {
    //! Crafted bzImages: the built-in guest's image with header fields changed. Each must be
    //! refused with an error (before the fix, debug builds panicked on the overflows).
    use super::*;
    use vm_memory::GuestMemoryMmap;

    const MEM: u64 = 32 << 20;

    fn memory() -> GuestMemoryMmap<()> {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM as usize)]).unwrap()
    }

    fn cfg(cmdline: &str) -> BootConfig {
        BootConfig {
            kernel: KernelSource::Builtin,
            initrd: None,
            cmdline: cmdline.to_string(),
            mem: MEM,
            cpus: 1,
            hugepages: false,
        }
    }

    /// The built-in guest with `patch` applied to its bytes.
    fn crafted(patch: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut img = crate::images::guest_image::GUEST_BZIMAGE.to_vec();
        patch(&mut img);
        img
    }

    fn put(img: &mut [u8], off: usize, bytes: &[u8]) {
        img[off..off + bytes.len()].copy_from_slice(bytes);
    }

    // Setup header offsets (Documentation/arch/x86/boot.rst).
    const SETUP_SECTS: usize = 0x1f1;
    const INITRD_ADDR_MAX: usize = 0x22c;
    const KERNEL_ALIGNMENT: usize = 0x230;
    const CMDLINE_SIZE: usize = 0x238;
    const PREF_ADDRESS: usize = 0x258;
    const INIT_SIZE: usize = 0x260;

    fn load_with_initrd(img: &[u8], cmdline: &str) -> Result<Loaded> {
        load_image(
            &memory(),
            &cfg(cmdline),
            "crafted",
            img,
            Some(InitrdImage::Bytes(&[0x5a; 4096])),
        )
    }

    #[test]
    fn the_real_image_loads() {
        let img = crafted(|_| {});
        let l = load_with_initrd(&img, "x").unwrap();
        let (addr, size) = l.initrd.unwrap();
        assert_eq!(size, 4096);
        assert!(addr >= l.kernel.1 && addr + size <= MEM);
    }

    #[test]
    fn pref_address_plus_init_size_overflow_is_an_error() {
        let img = crafted(|i| {
            put(i, PREF_ADDRESS, &0xffff_ffff_ffff_f000u64.to_le_bytes());
            put(i, INIT_SIZE, &0x2000u32.to_le_bytes());
        });
        let e = load_with_initrd(&img, "x").unwrap_err();
        assert!(
            matches!(e, Error::KernelHeader { .. }) && e.to_string().contains("init_size"),
            "{e}"
        );
    }

    #[test]
    fn kernel_end_rounded_to_a_page_overflow_is_an_error() {
        let img = crafted(|i| {
            put(i, PREF_ADDRESS, &0xffff_ffff_ffff_ff00u64.to_le_bytes());
            put(i, INIT_SIZE, &0u32.to_le_bytes());
        });
        let e = load_with_initrd(&img, "x").unwrap_err();
        assert!(
            matches!(e, Error::KernelHeader { .. }) && e.to_string().contains("page"),
            "{e}"
        );
    }

    #[test]
    fn huge_alignment_and_initrd_addr_max_are_bounded() {
        // kernel_alignment 2^32-1 and initrd_addr_max 2^32-1: no wrap, the initrd either fits
        // below the top of RAM or is refused as too large.
        let img = crafted(|i| {
            put(i, KERNEL_ALIGNMENT, &u32::MAX.to_le_bytes());
            put(i, INITRD_ADDR_MAX, &u32::MAX.to_le_bytes());
        });
        let e = load_with_initrd(&img, "x").unwrap_err();
        assert!(matches!(e, Error::InitrdTooLarge { room: 0, .. }), "{e}");
    }

    #[test]
    fn setup_sects_past_the_end_is_an_error() {
        // linux-loader checks (setup_sects + 1) * 512 against the file size.
        let img = crafted(|i| i[SETUP_SECTS] = 0xff);
        let img = &img[..0x8000];
        let e = load_with_initrd(img, "x").unwrap_err();
        assert!(matches!(e, Error::KernelLoad { .. }), "{e}");
    }

    #[test]
    fn cmdline_size_cannot_place_the_command_line_past_its_room() {
        let img = crafted(|i| put(i, CMDLINE_SIZE, &u32::MAX.to_le_bytes()));
        let long = "x".repeat(CMDLINE_ROOM + 1);
        let e = load_with_initrd(&img, &long).unwrap_err();
        assert!(
            matches!(
                e,
                Error::CmdlineTooLong {
                    max: CMDLINE_ROOM,
                    ..
                }
            ),
            "{e}"
        );
        let fits = "x".repeat(CMDLINE_ROOM);
        load_with_initrd(&img, &fits).unwrap();
    }

    /// Found by the loader fuzz target: setup sectors covering the whole file and
    /// code32_start 0xffffffff "loaded" 0 bytes there, and the entry point was outside RAM.
    #[test]
    fn an_image_with_no_kernel_after_its_setup_is_an_error() {
        let img = crafted(|i| {
            i[SETUP_SECTS] = 1;
            put(i, 0x214, &u32::MAX.to_le_bytes()); // code32_start
            i.truncate(1024);
        });
        let e = load_with_initrd(&img, "x").unwrap_err();
        assert!(
            matches!(e, Error::KernelHeader { .. }) && e.to_string().contains("+0x200"),
            "{e}"
        );
        // The same with code32_start where it belongs: still no entry point in the image.
        let img = crafted(|i| {
            i[SETUP_SECTS] = 1;
            i.truncate(1024 + 0x200);
        });
        assert!(matches!(
            load_with_initrd(&img, "x"),
            Err(Error::KernelHeader { .. })
        ));
    }

    /// Found by the loader fuzz target: an empty initrd with initrd_addr_max below the kernel
    /// was "placed" at 0x10000, below the kernel, among the boot structures.
    #[test]
    fn an_empty_initrd_is_no_initrd() {
        let img = crafted(|i| put(i, INITRD_ADDR_MAX, &0xffffu32.to_le_bytes()));
        let l = load_image(
            &memory(),
            &cfg("x"),
            "crafted",
            &img,
            Some(InitrdImage::Bytes(&[])),
        )
        .unwrap();
        assert_eq!(l.initrd, None);
        assert_eq!((l.header.ramdisk_image, l.header.ramdisk_size), (0, 0));
    }

    #[test]
    fn truncated_and_empty_images_are_errors() {
        let whole = crate::images::guest_image::GUEST_BZIMAGE;
        for len in [0, 1, 0x1f1, 0x202, 0x268] {
            assert!(load_with_initrd(&whole[..len], "x").is_err(), "{len}");
        }
    }
}
