//! vm-memory's traits on a reader's snapshot, and linux-loader on top of them.

use linux_loader::cmdline::Cmdline;
use memory::{BlockFlags, RamBlock, RamList};
use rcu::Rcu;
use vm_memory::{
    Bytes, GuestAddress, GuestAddressSpace, GuestMemory, GuestMemoryBackend, GuestMemoryRegion,
    MemoryRegionAddress, Permissions,
};

fn ram(rcu: &Rcu) -> RamList {
    let ram = RamList::new(rcu);
    // Two adjacent blocks and one after a hole.
    ram.add(RamBlock::new("lo", 0, 0x10_000, BlockFlags::empty()).unwrap())
        .unwrap();
    ram.add(RamBlock::new("lo2", 0x10_000, 0x10_000, BlockFlags::empty()).unwrap())
        .unwrap();
    ram.add(RamBlock::new("hi", 0x100_000, 0x1_000, BlockFlags::empty()).unwrap())
        .unwrap();
    ram
}

/// Generic over vm-memory's trait, as a rust-vmm crate would be.
fn roundtrip<M: GuestMemory + ?Sized>(m: &M, addr: GuestAddress) -> u64 {
    m.write_obj(0xdead_beef_cafe_f00d_u64, addr).unwrap();
    m.read_obj::<u64>(addr).unwrap()
}

#[test]
fn guest_memory_provided_methods_work_on_a_reader_snapshot() {
    let rcu = Rcu::new();
    let ram = ram(&rcu);
    let me = rcu.register_qsbr();
    let snap = ram.snapshot(&me);

    // GuestMemoryBackend.
    assert_eq!(snap.num_regions(), 3);
    assert_eq!(snap.last_addr(), GuestAddress(0x100_fff));
    assert_eq!(
        snap.find_region(GuestAddress(0x1_0000)).unwrap().name(),
        "lo2"
    );
    assert!(snap.find_region(GuestAddress(0x2_0000)).is_none());
    assert_eq!(
        snap.checked_offset(GuestAddress(0xfff0), 0x20),
        Some(GuestAddress(0x1_0010))
    );
    assert_eq!(snap.checked_offset(GuestAddress(0x1_fff0), 0x20), None); // hole
    assert_eq!(snap.checked_offset(GuestAddress(u64::MAX), 1), None); // overflow
    assert!(GuestMemoryBackend::check_range(
        snap,
        GuestAddress(0xff00),
        0x200
    ));
    assert!(!GuestMemoryBackend::check_range(
        snap,
        GuestAddress(0x1_ff00),
        0x200
    ));
    let (r, off) = snap.to_region_addr(GuestAddress(0x1_0008)).unwrap();
    assert_eq!((r.name(), off), ("lo2", MemoryRegionAddress(8)));
    let hva = snap.get_host_address(GuestAddress(0x1_0008)).unwrap();
    assert_eq!(hva as usize - r.host_ptr() as usize, 8);
    assert_eq!(snap.iter().map(|r| r.len()).sum::<u64>(), 0x21_000);

    // GuestMemory (the blanket impl) and Bytes<GuestAddress>.
    assert!(GuestMemory::check_range(
        snap,
        GuestAddress(0),
        0x20_000,
        Permissions::ReadWrite
    ));
    assert_eq!(roundtrip(snap, GuestAddress(0xfffc)), 0xdead_beef_cafe_f00d); // spans lo|lo2
    assert_eq!(snap.read_val::<u64>(0xfffc).unwrap(), 0xdead_beef_cafe_f00d);
    let msg = b"written by vm-memory";
    snap.write_slice(msg, GuestAddress(0x100_010)).unwrap();
    let mut back = [0u8; 20];
    snap.read_slice(&mut back, GuestAddress(0x100_010)).unwrap();
    assert_eq!(&back, msg);
    // Past the end of "hi", and into the hole after "lo2": errors, not panics.
    assert!(snap.write_slice(&[0; 8], GuestAddress(0x100_ffc)).is_err());
    assert!(snap.read_obj::<u32>(GuestAddress(0x1_fffe)).is_err());
    assert!(snap.read_obj::<u8>(GuestAddress(u64::MAX)).is_err());

    // GuestMemoryRegion on a block.
    let hi = snap.find_region(GuestAddress(0x100_000)).unwrap();
    assert_eq!(hi.start_addr(), GuestAddress(0x100_000));
    assert_eq!(hi.last_addr(), GuestAddress(0x100_fff));
    assert_eq!(hi.checked_offset(MemoryRegionAddress(0xff0), 0x10), None);
    assert_eq!(
        hi.checked_offset(MemoryRegionAddress(0xff0), 0xf),
        Some(MemoryRegionAddress(0xfff))
    );
    assert!(hi.get_slice(MemoryRegionAddress(0xff0), 0x11).is_err());
    let s = hi.get_slice(MemoryRegionAddress(0x10), 20).unwrap();
    let mut b2 = [0u8; 20];
    s.copy_to(&mut b2[..]);
    assert_eq!(&b2, msg);
    assert_eq!(
        hi.read_obj::<u8>(MemoryRegionAddress(0x10)).unwrap(),
        msg[0]
    );
    assert!(hi.get_host_address(MemoryRegionAddress(0x1000)).is_err());
    assert_eq!(hi.to_region_addr(GuestAddress(0xfff)), None);
}

#[test]
fn owned_snapshot_is_a_guest_address_space() {
    let rcu = Rcu::new();
    let ram = ram(&rcu);
    let space = ram.snapshot_owned(); // Arc<RamSnapshot>
    let m = space.memory();
    assert_eq!(
        roundtrip(&*m, GuestAddress(0x100_100)),
        0xdead_beef_cafe_f00d
    );
    // The same memory is visible through the list.
    let g = rcu.read_lock();
    assert_eq!(
        ram.snapshot(&g).read_val::<u64>(0x100_100).unwrap(),
        0xdead_beef_cafe_f00d
    );
}

#[test]
fn linux_loader_writes_a_command_line_into_a_snapshot() {
    let rcu = Rcu::new();
    let ram = ram(&rcu);
    let me = rcu.register_qsbr();
    let snap = ram.snapshot(&me);
    let mut cmdline = Cmdline::new(256).unwrap();
    cmdline
        .insert_str("console=ttyS0 reboot=t panic=-1")
        .unwrap();
    let at = GuestAddress(0xfff0); // straddles the lo | lo2 boundary
    linux_loader::loader::load_cmdline(snap, at, &cmdline).unwrap();
    let mut buf = vec![0u8; 33];
    snap.read_bytes(at.0, &mut buf).unwrap();
    assert_eq!(&buf[..32], b"console=ttyS0 reboot=t panic=-1\0");
    // A command line that does not fit in RAM is refused by the loader, not a crash.
    assert!(linux_loader::loader::load_cmdline(snap, GuestAddress(0x100_ff8), &cmdline).is_err());
}
