//! The bzImage and initrd loader (`vmm::x86_64::boot::load_image`) on crafted images: the header
//! checks, linux-loader's setup/kernel split, the command-line and initrd placement arithmetic
//! and the zero page. Input: one flags byte, then the kernel image. Every input must load or
//! be refused with an error, never panic (overflow checks are on in this build).
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use vm_memory::{GuestAddress, GuestMemoryMmap};
use vmm::x86_64::boot::{load_image, BootConfig, InitrdImage, KernelSource};

const MEM: u64 = 32 << 20;

fn memory() -> &'static GuestMemoryMmap<()> {
    static MEMORY: OnceLock<GuestMemoryMmap<()>> = OnceLock::new();
    MEMORY.get_or_init(|| {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM as usize)]).expect("guest memory")
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, kernel)) = data.split_first() else {
        return;
    };
    // Bit 7: an initrd of (bits 0-5) KiB; bit 6: a long command line.
    static INITRD: [u8; 64 << 10] = [0x5a; 64 << 10];
    let initrd =
        (flags & 0x80 != 0).then(|| InitrdImage::Bytes(&INITRD[..(flags as usize & 0x3f) << 10]));
    let cmdline = if flags & 0x40 != 0 {
        "x".repeat(3000)
    } else {
        "console=ttyS0".to_string()
    };
    let cfg = BootConfig {
        kernel: KernelSource::Builtin,
        initrd: None,
        cmdline,
        mem: MEM,
        cpus: 1,
        hugepages: false,
    };
    if let Ok(l) = load_image(memory(), &cfg, "fuzz", kernel, initrd) {
        // What a successful load promises: the kernel at or above 1 MiB and inside memory,
        // the initrd above the kernel's footprint and inside memory.
        assert!(l.kernel.0 >= 0x10_0000 && l.kernel.0 <= l.kernel.1 && l.kernel.1 <= MEM);
        if let Some((addr, size)) = l.initrd {
            assert!(addr >= l.kernel.1 && addr + size <= MEM, "{l:?}");
        }
    }
});
