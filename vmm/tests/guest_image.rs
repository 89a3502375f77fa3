//! The built-in guest's image (`vmm::images::guest_image::GUEST_BZIMAGE`): its bzImage structure, its
//! 64-bit entry, that linux-loader's bzImage loader takes it, and, on the host, the guest's
//! own parsers (CRC-32, boot_params, command line, MP table), compiled here from guest/src.

use linux_loader::loader::{BzImage, KernelLoader};
use std::io::Cursor;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm::images::guest_image::GUEST_BZIMAGE;

#[allow(dead_code)]
#[path = "../../guest/src/boot.rs"]
mod guest_boot;
#[allow(dead_code)]
#[path = "../../guest/src/crc32.rs"]
mod guest_crc32;
#[allow(dead_code)]
#[path = "../../guest/src/mp.rs"]
mod guest_mp;

const LOAD: u64 = 0x10_0000;

fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

/// The setup part's length, from `setup_sects` (0 means 4, as the boot protocol says).
fn setup_len(img: &[u8]) -> usize {
    let sects = match img[0x1f1] {
        0 => 4,
        n => usize::from(n),
    };
    (sects + 1) * 512
}

fn payload(img: &[u8]) -> &[u8] {
    &img[setup_len(img)..]
}

#[test]
fn setup_header_is_a_64_bit_bzimage() {
    let img = GUEST_BZIMAGE;
    assert!(img.len() > 0x400, "image of {} bytes", img.len());
    assert_eq!(u16_at(img, 0x1fe), 0xaa55, "boot_flag");
    assert_eq!(&img[0x202..0x206], b"HdrS", "header magic");
    let version = u16_at(img, 0x206);
    assert!(version >= 0x020f, "boot protocol {version:#x}");
    assert_eq!(img[0x211] & 0x01, 0x01, "loadflags LOADED_HIGH");
    assert_eq!(
        u16_at(img, 0x236) & 0x0001,
        0x0001,
        "xloadflags XLF_KERNEL_64"
    );
    assert_eq!(u32_at(img, 0x214), LOAD as u32, "code32_start");
    assert_eq!(
        img[0x234], 0,
        "relocatable_kernel: the guest is position-dependent"
    );
    assert_eq!(u64_at(img, 0x258), LOAD, "pref_address");
    assert_eq!(u32_at(img, 0x238), 2047, "cmdline_size");

    // setup_sects and syssize describe the file exactly.
    let setup = setup_len(img);
    assert!(setup >= 0x400 && setup & 511 == 0);
    let syssize = u32_at(img, 0x1f4) as usize;
    assert_eq!(
        syssize * 16,
        img.len() - setup,
        "syssize (16-byte units) against the file size"
    );

    // init_size covers the payload and its .bss and stacks, in whole pages.
    let init_size = u32_at(img, 0x260) as usize;
    assert_eq!(init_size % 4096, 0);
    assert!(
        init_size >= syssize * 16,
        "init_size {init_size:#x} below the payload"
    );

    // The jump at 0x200 is a short jump past the header, into the setup sectors.
    assert_eq!(img[0x200], 0xeb);
    let target = 0x202 + usize::from(img[0x201]);
    assert!(
        (0x26c..setup).contains(&target),
        "setup jump to {target:#x}"
    );

    // kernel_version points at a NUL-terminated string inside the setup sectors.
    let kv = usize::from(u16_at(img, 0x20e)) + 0x200;
    let nul = img[kv..setup]
        .iter()
        .position(|&b| b == 0)
        .expect("kernel_version ends in a NUL");
    assert!(std::str::from_utf8(&img[kv..kv + nul])
        .unwrap()
        .contains("rvmm-guest"));

    // kernel_info (2.15) is where kernel_info_offset says, and sized consistently.
    let ki = u32_at(img, 0x268) as usize;
    let p = payload(img);
    assert_eq!(&p[ki..ki + 4], b"LToP");
    assert!(u32_at(p, ki + 4) >= 16 && u32_at(p, ki + 8) >= u32_at(p, ki + 4));
}

#[test]
fn payload_info_block_matches_the_header() {
    let img = GUEST_BZIMAGE;
    let p = payload(img);
    assert_eq!(&p[0x10..0x18], b"RVMGUEST");
    let file_size = u32_at(p, 0x18) as usize;
    let mem_size = u32_at(p, 0x1c) as usize;
    assert_eq!(
        file_size,
        p.len(),
        "the payload is what the linker script says"
    );
    assert!(
        mem_size > file_size,
        "the .bss and stacks follow the file part"
    );
    assert_eq!(u32_at(p, 0x20), 0x200, "64-bit entry offset");
    assert_eq!(u32_at(p, 0x24), u32_at(img, 0x268), "kernel_info offset");
    assert_eq!(
        mem_size.next_multiple_of(4096),
        u32_at(img, 0x260) as usize,
        "init_size"
    );
}

#[test]
fn entry_64_loads_the_guests_own_gdt() {
    let p = payload(GUEST_BZIMAGE);
    let entry = &p[0x200..];
    // cli; cld; lgdt disp32(%rip)
    assert_eq!(
        &entry[..5],
        &[0xfa, 0xfc, 0x0f, 0x01, 0x15],
        "first instructions: {:02x?}",
        &entry[..16]
    );
    // Follow the RIP-relative operand to the GDT pseudo-descriptor, then to the GDT.
    let disp = i32::from_le_bytes(entry[5..9].try_into().unwrap());
    let gdtr = (0x200 + 9i64 + i64::from(disp)) as usize;
    let limit = usize::from(u16_at(p, gdtr));
    let base = u64_at(p, gdtr + 2);
    assert_eq!(limit, 4 * 8 - 1, "four descriptors");
    let gdt = (base - LOAD) as usize;
    assert_eq!(u64_at(p, gdt), 0, "null descriptor");
    assert_eq!(
        u64_at(p, gdt + 0x08),
        0x00cf_9a00_0000_ffff,
        "0x08: 32-bit code (AP trampoline)"
    );
    assert_eq!(
        u64_at(p, gdt + 0x10),
        0x00af_9a00_0000_ffff,
        "0x10 (__BOOT_CS): 64-bit code"
    );
    assert_eq!(
        u64_at(p, gdt + 0x18),
        0x00cf_9200_0000_ffff,
        "0x18 (__BOOT_DS): data"
    );
    // Then: mov $0x18, %eax (the data selector for ds, es, ss).
    assert_eq!(&entry[9..14], &[0xb8, 0x18, 0x00, 0x00, 0x00]);
}

#[test]
fn linux_loader_loads_it_at_code32_start() {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 16 << 20)]).unwrap();
    let mut image = Cursor::new(GUEST_BZIMAGE);
    let loaded =
        BzImage::load(&mem, None, &mut image, Some(GuestAddress(LOAD))).expect("BzImage::load");
    assert_eq!(loaded.kernel_load, GuestAddress(LOAD));
    let hdr = loaded.setup_header.expect("a setup header");
    let version = hdr.version;
    let xloadflags = hdr.xloadflags;
    assert!(version >= 0x020f);
    assert_eq!(xloadflags & 1, 1);
    let p = payload(GUEST_BZIMAGE);
    assert_eq!(loaded.kernel_end, LOAD + p.len() as u64);
    let mut entry = [0u8; 16];
    mem.read_slice(&mut entry, GuestAddress(LOAD + 0x200))
        .unwrap();
    assert_eq!(
        entry,
        p[0x200..0x210],
        "the 64-bit entry sits at load address + 0x200"
    );
}

// ---- The guest's CRC-32 ----

/// The bit-at-a-time definition, to check the table-driven code against.
fn crc32_reference(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

#[test]
fn crc32_matches_zlib() {
    // Published check values of CRC-32/ISO-HDLC (zlib's crc32).
    assert_eq!(guest_crc32::crc32(b""), 0);
    assert_eq!(guest_crc32::crc32(b"123456789"), 0xcbf4_3926);
    assert_eq!(
        guest_crc32::crc32(b"The quick brown fox jumps over the lazy dog"),
        0x414f_a339
    );
    // Every length around the 8-byte steps, and split updates, against the bitwise form.
    let mut x = 0x1234_5678_9abc_def0u64;
    let data: Vec<u8> = (0..4099)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    for len in (0..40).chain([1000, 4095, 4096, 4099]) {
        let d = &data[..len];
        assert_eq!(guest_crc32::crc32(d), crc32_reference(d), "length {len}");
        for split in [0, 1, 3, 8, len / 2, len] {
            let split = split.min(len);
            let c = guest_crc32::update(guest_crc32::update(0, &d[..split]), &d[split..]);
            assert_eq!(c, crc32_reference(d), "length {len} split at {split}");
        }
    }
}

// ---- The guest's boot_params and command-line parsing ----

fn zero_page() -> Vec<u8> {
    vec![0u8; guest_boot::ZERO_PAGE_SIZE]
}

fn put_e820(zp: &mut [u8], entries: &[(u64, u64, u32)]) {
    zp[0x1e8] = entries.len() as u8;
    for (i, &(addr, size, kind)) in entries.iter().enumerate() {
        let off = 0x2d0 + 20 * i;
        zp[off..off + 8].copy_from_slice(&addr.to_le_bytes());
        zp[off + 8..off + 16].copy_from_slice(&size.to_le_bytes());
        zp[off + 16..off + 20].copy_from_slice(&kind.to_le_bytes());
    }
}

#[test]
fn boot_params_e820_initrd_and_cmdline() {
    let mut zp = zero_page();
    let map = [
        (0, 0x9fc00, 1),
        (0x9fc00, 0x60400, 2),
        (0x10_0000, 0x3ff0_0000, 1),
        (0x1_0000_0000, 1 << 30, 1),
    ];
    put_e820(&mut zp, &map);
    let got: Vec<_> = guest_boot::e820(&zp)
        .map(|e| (e.addr, e.size, e.kind))
        .collect();
    assert_eq!(got, map);
    assert_eq!(
        guest_boot::e820(&zp).nth(1).unwrap().kind_name(),
        "reserved"
    );
    assert_eq!(guest_boot::e820(&zp).nth(3).unwrap().end(), 0x1_4000_0000);

    // A count beyond the table's capacity is capped, not trusted.
    zp[0x1e8] = 255;
    assert_eq!(guest_boot::e820(&zp).count(), guest_boot::E820_MAX);

    assert_eq!(guest_boot::initrd(&zp), None);
    zp[0x218..0x21c].copy_from_slice(&0x3f00_0000u32.to_le_bytes());
    zp[0x21c..0x220].copy_from_slice(&1234u32.to_le_bytes());
    assert_eq!(guest_boot::initrd(&zp), Some((0x3f00_0000, 1234)));
    zp[0x0c0..0x0c4].copy_from_slice(&1u32.to_le_bytes()); // ext_ramdisk_image
    zp[0x0c4..0x0c8].copy_from_slice(&2u32.to_le_bytes()); // ext_ramdisk_size
    assert_eq!(
        guest_boot::initrd(&zp),
        Some((0x1_3f00_0000, (2 << 32) + 1234))
    );

    assert_eq!(
        guest_boot::cmdline_location(&zp),
        (0, guest_boot::CMDLINE_MAX)
    );
    zp[0x228..0x22c].copy_from_slice(&0x20000u32.to_le_bytes());
    zp[0x238..0x23c].copy_from_slice(&100u32.to_le_bytes());
    assert_eq!(guest_boot::cmdline_location(&zp), (0x20000, 100));
    zp[0x238..0x23c].copy_from_slice(&100_000u32.to_le_bytes());
    assert_eq!(
        guest_boot::cmdline_location(&zp),
        (0x20000, guest_boot::CMDLINE_MAX)
    );
    assert_eq!(
        guest_boot::cmdline_text(b"workload=echo\0garbage"),
        b"workload=echo"
    );
}

#[test]
fn cmdline_picks_the_workload() {
    use guest_boot::{parse_cmdline, parse_u64, Workload};
    assert_eq!(parse_cmdline(b"").workload, Workload::Smoke);
    assert_eq!(
        parse_cmdline(b"console=ttyS0 quiet").workload,
        Workload::Smoke
    );
    let o = parse_cmdline(b"console=ttyS0 workload=io-storm  count=20000");
    assert_eq!(
        (o.workload, o.count),
        (Workload::IoStorm, Some(&b"20000"[..]))
    );
    assert_eq!(
        parse_cmdline(b"workload=panic workload=mem-touch").workload,
        Workload::MemTouch
    );
    for (name, w) in [
        ("triple-fault", Workload::TripleFault),
        ("reset", Workload::Reset),
        ("echo", Workload::Echo),
        ("probe", Workload::Probe),
        ("fault", Workload::Fault),
        ("panic", Workload::Panic),
    ] {
        let line = format!("workload={name}");
        assert_eq!(parse_cmdline(line.as_bytes()).workload, w);
        assert_eq!(w.name(), name.as_bytes());
    }
    assert_eq!(
        parse_cmdline(b"workload=nope").workload,
        Workload::Unknown(b"nope")
    );
    assert_eq!(parse_u64(b"20000"), Some(20000));
    assert_eq!(parse_u64(b"0x10"), Some(16));
    assert_eq!(parse_u64(b"18446744073709551615"), Some(u64::MAX));
    for bad in [&b""[..], b"0x", b"12x", b"-1", b"18446744073709551616"] {
        assert_eq!(parse_u64(bad), None, "{:?}", String::from_utf8_lossy(bad));
    }
}

// ---- The guest's MP table parser ----

/// The first MiB of guest memory.
struct LowMem(Vec<u8>);

impl guest_mp::PhysMem for LowMem {
    fn bytes(&self, addr: u64, len: usize) -> Option<&[u8]> {
        let start = usize::try_from(addr).ok()?;
        self.0.get(start..start.checked_add(len)?)
    }
}

fn low_mem() -> LowMem {
    LowMem(vec![0u8; 1 << 20])
}

#[test]
fn mp_parser_reads_the_vmms_table() {
    for cpus in [1u8, 2, 8] {
        let mut mem = low_mem();
        let table = vmm::x86_64::mptable::build(cpus);
        let at = vmm::x86_64::layout::EBDA as usize;
        mem.0[at..at + table.len()].copy_from_slice(&table);
        let cfg = guest_mp::find(&mem).expect("the guest finds the VMM's MP table");
        assert_eq!(cfg.floating_pointer, vmm::x86_64::layout::EBDA);
        assert_eq!(cfg.lapic, 0xfee0_0000);
        let procs = cfg.processors();
        assert_eq!(procs.len(), usize::from(cpus));
        assert!(procs.iter().all(|p| p.enabled));
        assert_eq!(procs.iter().filter(|p| p.bsp).count(), 1);
        let ids: Vec<u8> = procs.iter().map(|p| p.apic_id).collect();
        assert_eq!(ids, (0..cpus).collect::<Vec<_>>());
    }
}

fn checksum_fix(bytes: &mut [u8], at: usize) {
    bytes[at] = 0;
    let sum = bytes.iter().fold(0u8, |a, &b| a.wrapping_add(b));
    bytes[at] = sum.wrapping_neg();
}

/// A floating pointer at `fp` and a table at `table` with the given processor entries
/// (apic id, flags), plus a bus entry.
fn write_mp(mem: &mut LowMem, fp: usize, table: usize, procs: &[(u8, u8)]) {
    let mut t = vec![0u8; 44];
    t[0..4].copy_from_slice(b"PCMP");
    t[6] = 4;
    t[36..40].copy_from_slice(&0xfee0_0000u32.to_le_bytes());
    for &(id, flags) in procs {
        let mut e = [0u8; 20];
        e[1] = id;
        e[3] = flags;
        t.extend_from_slice(&e);
    }
    t.extend_from_slice(&[1, 0, b'I', b'S', b'A', b' ', b' ', b' ']);
    let len = t.len() as u16;
    t[4..6].copy_from_slice(&len.to_le_bytes());
    t[34..36].copy_from_slice(&(procs.len() as u16 + 1).to_le_bytes());
    checksum_fix(&mut t, 7);
    mem.0[table..table + t.len()].copy_from_slice(&t);
    let mut f = [0u8; 16];
    f[0..4].copy_from_slice(b"_MP_");
    f[4..8].copy_from_slice(&(table as u32).to_le_bytes());
    f[8] = 1;
    f[9] = 4;
    checksum_fix(&mut f, 10);
    mem.0[fp..fp + 16].copy_from_slice(&f);
}

#[test]
fn mp_parser_searches_where_the_spec_says() {
    // Nothing anywhere.
    assert_eq!(
        guest_mp::find(&low_mem()).unwrap_err(),
        guest_mp::MpError::NotFound
    );

    // In the BIOS ROM area, with a disabled CPU.
    let mut mem = low_mem();
    write_mp(&mut mem, 0xf_5a30, 0xf_6000, &[(0, 3), (2, 1), (4, 0)]);
    let cfg = guest_mp::find(&mem).unwrap();
    assert_eq!(cfg.floating_pointer, 0xf_5a30);
    assert_eq!(cfg.table, 0xf_6000);
    let p = cfg.processors();
    assert_eq!(p.len(), 3);
    assert!(p[0].bsp && p[0].enabled && !p[1].bsp && p[1].enabled && !p[2].enabled);
    assert_eq!(p[1].apic_id, 2);

    // In an EBDA that the BDA names (segment at 0x40e); it wins over the ROM copy.
    mem.0[0x40e..0x410].copy_from_slice(&0x8000u16.to_le_bytes()); // EBDA at 0x80000
    write_mp(&mut mem, 0x8_0020, 0x8_0100, &[(0, 3)]);
    assert_eq!(guest_mp::find(&mem).unwrap().floating_pointer, 0x8_0020);

    // A bad floating-pointer checksum is not a floating pointer: the ROM copy is used.
    mem.0[0x8_0020 + 10] ^= 1;
    assert_eq!(guest_mp::find(&mem).unwrap().floating_pointer, 0xf_5a30);

    // A bad table checksum is reported, not trusted.
    let mut mem = low_mem();
    write_mp(&mut mem, 0x9_fc00, 0x9_fc10, &[(0, 3), (1, 1)]);
    mem.0[0x9_fc10 + 44 + 1] = 7; // an APIC ID changed after the checksum
    assert!(matches!(
        guest_mp::find(&mem),
        Err(guest_mp::MpError::BadTable(0x9_fc00, _))
    ));
}
