//! Debian's cloud kernel and the project's busybox initramfs (`scripts/fetch-linux-guest.sh`)
//! through the VMM's set-up path, checked against the x86 Linux boot protocol
//! (Documentation/arch/x86/boot.rst) without running the guest; and one informative run.
//!
//! Every check parses the bzImage and guest memory itself (offsets from the boot protocol),
//! rather than trusting the structures the loader used.
//!
//! The kernel is fetched into the cache (`$LINUX_GUEST_CACHE`, default `.cache/linux-guest/`
//! in the repository) when missing; a test that cannot get it fails and says how to.
//! The same guest really boots, on real KVM, in `nested.rs`.

use std::path::{Path, PathBuf};
use tests::{require_kvm, run_vmm};
use vm_memory::{Bytes, GuestAddress};
use vmm::kvm::vm::{SerialMode, Vm, VmConfig};
use vmm::x86_64::boot::{BootConfig, KernelSource};

const MEM: u64 = 512 << 20;
const CPUS: u8 = 2;
const CMDLINE: &str = "console=ttyS0 reboot=t panic=-1";
const PAGE_2M: u64 = 2 << 20;
/// The informative run's command line: the default plus the early console, so that the log
/// shows how far a failing boot got.
const LOUD_CMDLINE: &str = "console=ttyS0 earlyprintk=serial,ttyS0,115200 reboot=t panic=-1";

struct Guest {
    kernel: PathBuf,
    initrd: PathBuf,
}

/// The Debian kernel and initramfs, fetched into the cache when missing (a test never
/// skips for want of them: it fails and says how to get them).
fn guest() -> Option<Guest> {
    let dir = std::env::var_os("LINUX_GUEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join(".cache/linux-guest")
        });
    let g = Guest {
        kernel: dir.join("bzImage"),
        initrd: dir.join("initramfs.cpio.gz"),
    };
    if !(g.kernel.is_file() && g.initrd.is_file()) {
        static FETCH: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one_at_a_time = FETCH.lock().unwrap_or_else(|e| e.into_inner());
        if !(g.kernel.is_file() && g.initrd.is_file()) {
            let script =
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/fetch-linux-guest.sh");
            let out = std::process::Command::new("bash")
                .arg(&script)
                .output()
                .expect("running bash");
            assert!(
                out.status.success() && g.kernel.is_file() && g.initrd.is_file(),
                "no Debian kernel and initramfs in {} and scripts/fetch-linux-guest.sh could \
                 not fetch them (run it by hand; it needs apt-get and the network):\n{}",
                dir.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    Some(g)
}

/// The guest set up (not run) for the structural checks, or None when skipped.
fn setup() -> Option<(Vm, Guest)> {
    let g = guest()?;
    if !require_kvm() {
        return None;
    }
    let cfg = VmConfig {
        boot: BootConfig {
            kernel: KernelSource::File(g.kernel.clone()),
            initrd: Some(g.initrd.clone()),
            cmdline: CMDLINE.to_string(),
            mem: MEM,
            cpus: CPUS,
            hugepages: false,
        },
        serial: SerialMode::None,
        timeout: None,
        expect: None,
        log: None,
        log_limit: None,
        process_start: None,
        ram_lookup: Default::default(),
        disks: Vec::new(),
        fail_on: Vec::new(),
    };
    let vm = Vm::new(cfg).expect("setting up the VM for the Debian kernel");
    Some((vm, g))
}

fn le(b: &[u8], off: usize, n: usize) -> u64 {
    b[off..off + n]
        .iter()
        .rev()
        .fold(0u64, |a, &x| (a << 8) | x as u64)
}

fn read(vm: &Vm, addr: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    vm.ram
        .snapshot_owned()
        .read_slice(&mut buf, GuestAddress(addr))
        .unwrap_or_else(|e| panic!("reading {len} bytes at {addr:#x}: {e}"));
    buf
}

fn read_u64(vm: &Vm, addr: u64) -> u64 {
    le(&read(vm, addr, 8), 0, 8)
}

/// Setup header fields (offsets into the bzImage file and into the zero page alike).
mod hdr {
    pub const SETUP_SECTS: usize = 0x1f1;
    pub const HEADER: usize = 0x202;
    pub const VERSION: usize = 0x206;
    pub const TYPE_OF_LOADER: usize = 0x210;
    pub const LOADFLAGS: usize = 0x211;
    pub const CODE32_START: usize = 0x214;
    pub const RAMDISK_IMAGE: usize = 0x218;
    pub const RAMDISK_SIZE: usize = 0x21c;
    pub const CMD_LINE_PTR: usize = 0x228;
    pub const INITRD_ADDR_MAX: usize = 0x22c;
    pub const KERNEL_ALIGNMENT: usize = 0x230;
    pub const RELOCATABLE: usize = 0x234;
    pub const XLOADFLAGS: usize = 0x236;
    pub const CMDLINE_SIZE: usize = 0x238;
    pub const PREF_ADDRESS: usize = 0x258;
    pub const INIT_SIZE: usize = 0x260;
}
/// Zero-page fields outside the setup header.
mod zp {
    pub const ACPI_RSDP_ADDR: usize = 0x070;
    pub const EXT_RAMDISK_IMAGE: usize = 0x0c0;
    pub const EXT_RAMDISK_SIZE: usize = 0x0c4;
    pub const E820_ENTRIES: usize = 0x1e8;
    pub const E820_TABLE: usize = 0x2d0;
}

const XLF_KERNEL_64: u64 = 1;
const LOADED_HIGH: u64 = 1;
const CAN_USE_HEAP: u64 = 0x80;

/// Where a relocatable kernel really decompresses: its load address aligned up to
/// kernel_alignment, and no lower than pref_address (LOAD_PHYSICAL_ADDR); init_size bytes.
fn kernel_footprint(file: &[u8], load: u64) -> (u64, u64) {
    let align = le(file, hdr::KERNEL_ALIGNMENT, 4);
    let pref = le(file, hdr::PREF_ADDRESS, 8);
    let start = load.next_multiple_of(align).max(pref);
    (start, start + le(file, hdr::INIT_SIZE, 4))
}

#[test]
fn setup_header_and_kernel_payload() {
    let Some((vm, g)) = setup() else { return };
    let file = std::fs::read(&g.kernel).unwrap();
    assert_eq!(&file[hdr::HEADER..hdr::HEADER + 4], b"HdrS");
    let version = le(&file, hdr::VERSION, 2);
    assert!(version >= 0x020c, "protocol {version:#x} < 2.12");
    let xlf = le(&file, hdr::XLOADFLAGS, 2);
    assert_ne!(xlf & XLF_KERNEL_64, 0, "no 64-bit entry point");
    let align = le(&file, hdr::KERNEL_ALIGNMENT, 4);
    assert!(
        align.is_power_of_two() && align >= 0x1000,
        "kernel_alignment {align:#x}"
    );
    assert_eq!(file[hdr::RELOCATABLE], 1, "Debian's kernel is relocatable");
    assert_ne!(le(&file, hdr::LOADFLAGS, 1) & LOADED_HIGH, 0);

    // What the loader recorded agrees with the file.
    let h = vm.loaded.header;
    assert_eq!(h.version as u64, version);
    assert_eq!(h.xloadflags as u64, xlf);
    assert_eq!(h.kernel_alignment as u64, align);
    assert_eq!(h.init_size as u64, le(&file, hdr::INIT_SIZE, 4));

    // The protected-mode payload follows (setup_sects + 1) sectors (0 means 4).
    let sects = match file[hdr::SETUP_SECTS] {
        0 => 4,
        n => n as usize,
    };
    let payload = &file[(sects + 1) * 512..];
    let (load, end) = vm.loaded.kernel;
    assert_eq!(load, 0x10_0000, "loaded at 1 MiB (code32_start)");
    assert_eq!(end - load, payload.len() as u64);
    assert!(
        read(&vm, load, payload.len()) == payload,
        "kernel bytes differ in guest memory"
    );
    // The 64-bit entry point is 0x200 into the payload.
    assert_eq!(vm.loaded.entry, load + 0x200);
    let regs = vm.vcpu_regs(0).unwrap();
    assert_eq!(regs.rip, load + 0x200);
    assert_eq!(
        regs.rsi,
        vmm::x86_64::layout::ZERO_PAGE,
        "RSI = the zero page"
    );
    assert_eq!(regs.rflags & (1 << 9), 0, "interrupts disabled at entry");
}

#[test]
fn zero_page_command_line_and_initrd() {
    let Some((vm, g)) = setup() else { return };
    let file = std::fs::read(&g.kernel).unwrap();
    let initrd = std::fs::read(&g.initrd).unwrap();
    let z = read(&vm, vmm::x86_64::layout::ZERO_PAGE, 4096);

    // The setup header is in the zero page at the same offsets, with the loader's fields.
    assert_eq!(&z[hdr::HEADER..hdr::HEADER + 4], b"HdrS");
    assert_eq!(z[hdr::SETUP_SECTS], file[hdr::SETUP_SECTS]);
    assert_eq!(le(&z, hdr::VERSION, 2), le(&file, hdr::VERSION, 2));
    assert_eq!(
        z[hdr::TYPE_OF_LOADER],
        0xff,
        "type_of_loader: undefined loader"
    );
    let lf = le(&z, hdr::LOADFLAGS, 1);
    assert_ne!(lf & LOADED_HIGH, 0);
    assert_ne!(lf & CAN_USE_HEAP, 0);
    assert_eq!(le(&z, hdr::CODE32_START, 4), vm.loaded.kernel.0);

    // The command line: where cmd_line_ptr points, NUL-terminated, within cmdline_size.
    let ptr = le(&z, hdr::CMD_LINE_PTR, 4);
    assert_ne!(ptr, 0);
    let got = read(&vm, ptr, CMDLINE.len() + 1);
    assert_eq!(&got[..CMDLINE.len()], CMDLINE.as_bytes());
    assert_eq!(got[CMDLINE.len()], 0);
    assert!(CMDLINE.len() as u64 <= le(&file, hdr::CMDLINE_SIZE, 4));

    // The initrd: its fields, its placement, its bytes.
    let image = le(&z, hdr::RAMDISK_IMAGE, 4) | le(&z, zp::EXT_RAMDISK_IMAGE, 4) << 32;
    let size = le(&z, hdr::RAMDISK_SIZE, 4) | le(&z, zp::EXT_RAMDISK_SIZE, 4) << 32;
    assert_eq!(size, initrd.len() as u64);
    assert_eq!(vm.loaded.initrd, Some((image, size)));
    assert_eq!(image % 4096, 0, "initrd page-aligned");
    assert!(
        image + size - 1 <= le(&file, hdr::INITRD_ADDR_MAX, 4),
        "initrd above initrd_addr_max"
    );
    assert!(
        image + size <= MEM.min(vmm::x86_64::layout::MMIO_HOLE),
        "initrd inside low RAM"
    );
    let (k0, k1) = kernel_footprint(&file, vm.loaded.kernel.0);
    assert!(
        image >= k1 || image + size <= k0,
        "initrd {image:#x}+{size:#x} overlaps the kernel's decompression area {k0:#x}..{k1:#x}"
    );
    assert!(
        image >= vm.loaded.kernel.1,
        "initrd overlaps the loaded kernel"
    );
    assert!(
        read(&vm, image, initrd.len()) == initrd,
        "initrd bytes differ in guest memory"
    );

    // The ACPI root pointer (protocol 2.14) points at an RSDP.
    let rsdp = le(&z, zp::ACPI_RSDP_ADDR, 8);
    assert_eq!(&read(&vm, rsdp, 8), b"RSD PTR ");
}

#[test]
fn e820_map_is_ordered_and_covers_mem() {
    let Some((vm, _)) = setup() else { return };
    let z = read(&vm, vmm::x86_64::layout::ZERO_PAGE, 4096);
    let n = z[zp::E820_ENTRIES] as usize;
    assert!((2..=128).contains(&n), "{n} e820 entries");
    let entries: Vec<(u64, u64, u64)> = (0..n)
        .map(|i| {
            let o = zp::E820_TABLE + 20 * i;
            (le(&z, o, 8), le(&z, o + 8, 8), le(&z, o + 16, 4))
        })
        .collect();
    for w in entries.windows(2) {
        let (a, b) = (w[0], w[1]);
        assert!(
            a.0 + a.1 <= b.0,
            "e820 entries out of order or overlapping: {a:x?} {b:x?}"
        );
    }
    for e in &entries {
        assert!(e.1 > 0 && (e.2 == 1 || e.2 == 2), "entry {e:x?}");
    }
    let usable: u64 = entries.iter().filter(|e| e.2 == 1).map(|e| e.1).sum();
    // Everything but the EBDA..1 MiB hole (MP table, ACPI tables, BIOS area) is usable.
    assert_eq!(usable, MEM - (0x10_0000 - vmm::x86_64::layout::EBDA));
    // Usable RAM is backed by guest memory, up to the last byte of --mem.
    for e in entries.iter().filter(|e| e.2 == 1) {
        read(&vm, e.0 + e.1 - 1, 1);
    }
    let last = entries.iter().filter(|e| e.2 == 1).map(|e| e.0 + e.1).max();
    assert_eq!(last, Some(MEM));
    // The boot data the guest must not reuse before reading it lies outside usable RAM or
    // is what the protocol lets it reclaim; the ACPI tables must stay reserved.
    let reserved = |a: u64, len: u64| {
        entries
            .iter()
            .any(|e| e.2 == 2 && e.0 <= a && a + len <= e.0 + e.1)
    };
    let t = vmm::x86_64::acpi::build(CPUS);
    for (gpa, bytes) in &t.regions {
        assert!(
            reserved(*gpa, bytes.len() as u64),
            "ACPI table at {gpa:#x} not reserved"
        );
    }
    assert!(
        reserved(vmm::x86_64::layout::EBDA, 16),
        "MP table not reserved"
    );
}

/// Walks the 4-level page tables at `cr3` for `va`: the physical address and the page size.
fn translate(vm: &Vm, cr3: u64, va: u64) -> Option<(u64, u64)> {
    const ADDR: u64 = 0x000f_ffff_ffff_f000;
    let pml4e = read_u64(vm, (cr3 & ADDR) + 8 * ((va >> 39) & 511));
    if pml4e & 1 == 0 {
        return None;
    }
    let pdpte = read_u64(vm, (pml4e & ADDR) + 8 * ((va >> 30) & 511));
    if pdpte & 1 == 0 {
        return None;
    }
    assert_eq!(
        pdpte & 0x80,
        0,
        "1 GiB pages do not work on PVM; the VMM uses 2 MiB"
    );
    let pde = read_u64(vm, (pdpte & ADDR) + 8 * ((va >> 21) & 511));
    if pde & 1 == 0 {
        return None;
    }
    if pde & 0x80 != 0 {
        assert_ne!(pde & 2, 0, "writable");
        return Some((
            (pde & 0x000f_ffff_ffe0_0000) | (va & (PAGE_2M - 1)),
            PAGE_2M,
        ));
    }
    let pte = read_u64(vm, (pde & ADDR) + 8 * ((va >> 12) & 511));
    (pte & 1 != 0).then_some(((pte & ADDR) | (va & 0xfff), 4096))
}

#[test]
fn page_tables_identity_map_all_ram() {
    let Some((vm, _)) = setup() else { return };
    let sregs = vm.vcpu_sregs(0).unwrap();
    let cr3 = sregs.cr3;
    let (load, _) = vm.loaded.kernel;
    let (initrd, isize) = vm.loaded.initrd.unwrap();
    let mut samples = vec![
        0,
        vmm::x86_64::layout::ZERO_PAGE,
        vmm::x86_64::layout::GDT,
        vmm::x86_64::layout::CMDLINE,
        load,
        vm.loaded.entry,
        initrd,
        initrd + isize - 1,
        MEM - 1, // the last byte of RAM
        vmm::x86_64::layout::LAPIC,
        vmm::x86_64::layout::IOAPIC,
    ];
    // And every 2 MiB page of RAM.
    samples.extend((0..MEM).step_by(PAGE_2M as usize).map(|a| a + 0x1234));
    for va in samples {
        match translate(&vm, cr3, va) {
            Some((pa, _)) => assert_eq!(pa, va, "{va:#x} is not identity-mapped"),
            None => panic!("{va:#x} is not mapped"),
        }
    }
}

/// Decodes a GDT descriptor: (base, limit in bytes, access byte, flags nibble).
fn descriptor(d: u64) -> (u64, u64, u8, u8) {
    let base = ((d >> 16) & 0xff_ffff) | (((d >> 56) & 0xff) << 24);
    let raw = (d & 0xffff) | (((d >> 48) & 0xf) << 16);
    let flags = ((d >> 52) & 0xf) as u8;
    let limit = if flags & 0x8 != 0 {
        (raw << 12) | 0xfff
    } else {
        raw
    };
    (base, limit, ((d >> 40) & 0xff) as u8, flags)
}

#[test]
fn gdt_segments_and_control_registers() {
    let Some((vm, _)) = setup() else { return };
    let s = vm.vcpu_sregs(0).unwrap();
    assert_eq!(s.gdt.base, vmm::x86_64::layout::GDT);
    assert!(s.gdt.limit as u64 >= 0x1f, "GDT too short for 0x18");

    // __BOOT_CS (0x10): flat 64-bit code, present, execute/read. __BOOT_DS (0x18): flat
    // data, present, read/write.
    let (base, limit, access, flags) = descriptor(read_u64(&vm, s.gdt.base + 0x10));
    assert_eq!((base, limit), (0, 0xffff_ffff), "CS flat");
    assert_eq!(access & 0x80, 0x80, "CS present");
    assert_eq!(access & 0x18, 0x18, "CS is a code segment");
    assert_eq!(access & 0x02, 0x02, "CS readable");
    assert_eq!(flags & 0x6, 0x2, "CS: L=1, D=0 (64-bit)");
    let (base, limit, access, _) = descriptor(read_u64(&vm, s.gdt.base + 0x18));
    assert_eq!((base, limit), (0, 0xffff_ffff), "DS flat");
    assert_eq!(access & 0x80, 0x80, "DS present");
    assert_eq!(access & 0x18, 0x10, "DS is a data segment");
    assert_eq!(access & 0x02, 0x02, "DS writable");

    assert_eq!(s.cs.selector, 0x10);
    assert_eq!((s.cs.l, s.cs.present, s.cs.base), (1, 1, 0));
    for (name, seg) in [("ds", s.ds), ("es", s.es), ("ss", s.ss)] {
        assert_eq!(seg.selector, 0x18, "{name}");
        assert_eq!((seg.present, seg.base), (1, 0), "{name}");
    }
    assert_eq!(s.cr0 & 0x8000_0001, 0x8000_0001, "CR0.PE|PG");
    assert_ne!(s.cr4 & 0x20, 0, "CR4.PAE");
    assert_eq!(s.efer & 0x500, 0x500, "EFER.LME|LMA");
    assert_eq!(s.cr3, vmm::x86_64::layout::PML4);
}

fn sum(b: &[u8]) -> u8 {
    b.iter().fold(0u8, |a, &x| a.wrapping_add(x))
}

/// Reads an ACPI table at `addr` and checks its signature and checksum.
fn acpi_table(vm: &Vm, addr: u64, sig: &[u8; 4]) -> Vec<u8> {
    let head = read(vm, addr, 8);
    assert_eq!(&head[..4], sig, "signature at {addr:#x}");
    let t = read(vm, addr, le(&head, 4, 4) as usize);
    assert_eq!(sum(&t), 0, "{} checksum", String::from_utf8_lossy(sig));
    t
}

#[test]
fn acpi_tables_in_guest_memory() {
    let Some((vm, _)) = setup() else { return };
    // Linux's legacy scan: "RSD PTR " on a 16-byte boundary in 0xE0000..0xFFFFF.
    let bios = read(&vm, 0xe_0000, 0x2_0000);
    let found: Vec<u64> = (0..bios.len())
        .step_by(16)
        .filter(|&o| &bios[o..o + 8] == b"RSD PTR ")
        .map(|o| 0xe_0000 + o as u64)
        .collect();
    let z = read(&vm, vmm::x86_64::layout::ZERO_PAGE, 4096);
    assert_eq!(found, vec![le(&z, zp::ACPI_RSDP_ADDR, 8)]);
    let r = read(&vm, found[0], 36);
    assert_eq!(sum(&r[..20]), 0, "RSDP checksum");
    assert_eq!(sum(&r), 0, "RSDP extended checksum");
    assert!(r[15] >= 2, "RSDP revision 2 (XSDT)");

    let xsdt = acpi_table(&vm, le(&r, 24, 8), b"XSDT");
    let mut sigs = Vec::new();
    for p in xsdt[36..].chunks(8) {
        let addr = le(p, 0, 8);
        let sig: [u8; 4] = read(&vm, addr, 4).try_into().unwrap();
        let t = acpi_table(&vm, addr, &sig);
        match &sig {
            b"FACP" => {
                assert!(t[8] >= 5, "FADT revision");
                assert_ne!(le(&t, 112, 4) & (1 << 20), 0, "HW_REDUCED_ACPI");
                acpi_table(&vm, le(&t, 140, 8), b"DSDT");
            }
            b"APIC" => {
                let mut off = 44;
                let mut lapics = 0;
                let mut ioapics = 0;
                while off < t.len() {
                    match t[off] {
                        0 => lapics += usize::from(t[off + 4] & 1 == 1),
                        1 => ioapics += 1,
                        _ => {}
                    }
                    off += t[off + 1] as usize;
                }
                assert_eq!(off, t.len(), "MADT entries fill the table");
                assert_eq!(lapics, CPUS as usize, "one enabled local APIC per vCPU");
                assert_eq!(ioapics, 1);
            }
            other => panic!("unexpected table {}", String::from_utf8_lossy(other)),
        }
        sigs.push(sig);
    }
    sigs.sort();
    assert_eq!(sigs, [*b"APIC", *b"FACP"]);
}

/// Runs the Debian kernel for at most 20 s and reports how far it got. On a host with
/// hardware virtualization the guest must reach its marker with both CPUs; on PVM (where
/// unmodified Linux dies in KVM's emulator) the test only checks that the VMM ended with a
/// documented status and said why.
#[test]
fn debian_kernel_run_informative() {
    let Some(g) = guest() else { return };
    if !require_kvm() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("vmm-linux-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let serial = dir.join("serial.log");
    let serial_arg = format!("file:{}", serial.display());
    let r = run_vmm(
        &[
            "--kernel",
            g.kernel.to_str().unwrap(),
            "--initrd",
            g.initrd.to_str().unwrap(),
            "--mem",
            "512M",
            "--cpus",
            "2",
            "--timeout",
            "20s",
            "--serial",
            &serial_arg,
            "--expect",
            "rvmm-linux: done",
            "--cmdline",
            LOUD_CMDLINE,
        ],
        None,
    );
    let log = std::fs::read_to_string(&serial).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    let lines: Vec<&str> = log.lines().collect();
    eprintln!(
        "Debian kernel on this host: exit status {} after {:.2?}, {} serial lines; the last:",
        r.status,
        r.took,
        lines.len()
    );
    for l in &lines[lines.len().saturating_sub(12)..] {
        eprintln!("  | {l}");
    }
    eprintln!("vmm stderr:\n{}", r.stderr.trim_end());

    // The VMM ended on its own with a documented outcome (not a signal, not a usage error).
    r.check(
        [0, 1, 3, 4, 5].contains(&r.status),
        "the VMM should end with a documented status",
    );
    let host = vmm::kvm::pvm::host();
    if host.runs_linux() {
        r.check(
            r.status == 0,
            "on hardware virtualization Linux reaches its marker",
        );
        r.check(
            log.contains(vmm::images::initramfs::MARKER),
            "marker on the serial port",
        );
        r.check(log.contains("cpus: 2"), "both vCPUs online in Linux");
    } else {
        r.check(
            r.stderr.contains("cannot run unmodified Linux"),
            "a PVM host warns before booting Linux",
        );
        if r.stderr.contains("emulation") {
            r.check(
                r.stderr.contains("PVM"),
                "an emulation failure on PVM says so",
            );
        }
    }
}

/// The same ACPI tables end to end on this host: the built-in guest, told `cpus=acpi`, finds
/// its CPUs through the RSDP, XSDT and MADT (checking every checksum as it goes) and starts
/// the application processors they list.
#[test]
fn builtin_guest_finds_its_cpus_through_the_madt() {
    if !require_kvm() {
        return;
    }
    for cpus in ["1", "2"] {
        let r = run_vmm(
            &[
                "--timeout=60s",
                "--cpus",
                cpus,
                "--cmdline",
                "workload=smoke cpus=acpi",
            ],
            None,
        );
        r.check(r.status == 0, "exit 0");
        let acpi = format!(
            "acpi: rsdp at {:#x}, madt at ",
            vmm::x86_64::acpi::RSDP_ADDR
        );
        r.check(r.lines(&acpi).len() == 1, &format!("expected '{acpi}...'"));
        r.check(
            r.lines(&acpi)[0].ends_with(&format!(", {cpus} processors")),
            "the MADT lists every vCPU",
        );
        let summary = format!("cpus: {cpus} of {cpus} online");
        r.check(
            r.lines(&summary).len() == 1,
            &format!("expected '{summary}'"),
        );
    }
}
