//! Block validation, list writers, boundary lookups, listeners, read-only blocks.

mod common;

use common::PAGE;
use memory::{BlockFlags, Error, ListenerError, MemoryListener, MruHint, RamBlock, RamList};
use parking_lot::Mutex;
use rcu::Rcu;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn block(name: &str, gpa: u64, size: u64) -> RamBlock {
    RamBlock::new(name, gpa, size, BlockFlags::empty()).unwrap()
}

#[test]
fn page_size_is_what_the_tests_assume() {
    assert_eq!(memory::page_size(), PAGE);
}

#[test]
fn invalid_blocks_are_rejected_with_what_and_which() {
    let e = RamBlock::new("", 0, PAGE, BlockFlags::empty()).unwrap_err();
    assert!(matches!(e, Error::EmptyName { gpa: 0 }), "{e}");

    let e = RamBlock::new("zero", 0x1000, 0, BlockFlags::empty()).unwrap_err();
    assert!(matches!(e, Error::ZeroSize { ref name, gpa: 0x1000 } if name == "zero"));
    assert!(e.to_string().contains("'zero'") && e.to_string().contains("size is zero"));

    let e = RamBlock::new("odd", 0, PAGE + 1, BlockFlags::empty()).unwrap_err();
    assert!(
        matches!(e, Error::UnalignedSize { ref name, size, .. } if name == "odd" && size == PAGE + 1)
    );
    assert!(e.to_string().contains("'odd'"), "{e}");

    let e = RamBlock::new("mis", 0x800, PAGE, BlockFlags::empty()).unwrap_err();
    assert!(matches!(e, Error::UnalignedAddress { ref name, gpa: 0x800, .. } if name == "mis"));
    assert!(e.to_string().contains("0x800"), "{e}");

    // One page below the top, two pages long: the second page would wrap to 0.
    let top = u64::MAX - (PAGE - 1);
    let e = RamBlock::new("wrap", top, 2 * PAGE, BlockFlags::empty()).unwrap_err();
    assert!(matches!(e, Error::AddressWrap { ref name, gpa, .. } if name == "wrap" && gpa == top));
    assert!(e.to_string().contains("wraps around"), "{e}");
    let e = RamBlock::new(
        "wrap2",
        u64::MAX - (PAGE - 1),
        u64::MAX - (PAGE - 1),
        BlockFlags::empty(),
    )
    .unwrap_err();
    assert!(matches!(e, Error::AddressWrap { .. }), "{e}");
    // Ending exactly at 2^64 is fine.
    let b = RamBlock::new("top", top, PAGE, BlockFlags::empty()).unwrap();
    assert_eq!(b.last_gpa(), u64::MAX);

    let e = RamBlock::new("huge", 0, 1 << 63, BlockFlags::empty()).unwrap_err();
    assert!(
        matches!(e, Error::TooLarge { ref name, .. } if name == "huge"),
        "{e}"
    );

    // 2^62 bytes: more than any x86-64 address space, so mmap itself fails.
    let e = RamBlock::new("enormous", 0, 1 << 62, BlockFlags::empty()).unwrap_err();
    assert!(
        matches!(e, Error::Mmap { ref name, .. } if name == "enormous"),
        "{e}"
    );
    assert!(e.to_string().contains("mmap"), "{e}");
}

#[test]
fn overlapping_and_duplicate_blocks_are_rejected_naming_both() {
    let rcu = Rcu::new();
    let ram = RamList::new(&rcu);
    ram.add(block("a", 0x10_000, 0x10_000)).unwrap(); // [0x10000, 0x1ffff]
    let cases = [
        ("tail", 0x1f_000, 0x2_000),  // overlaps a's last page
        ("head", 0xf_000, 0x2_000),   // overlaps a's first page
        ("same", 0x10_000, 0x10_000), // identical range
        ("inner", 0x14_000, 0x1_000), // inside a
        ("outer", 0x0, 0x40_000),     // contains a
    ];
    for (name, gpa, size) in cases {
        let e = ram.add(block(name, gpa, size)).unwrap_err();
        match &e {
            Error::Overlap {
                name: n,
                other,
                other_gpa,
                other_last,
                ..
            } => {
                assert_eq!(n, name);
                assert_eq!(other, "a");
                assert_eq!((*other_gpa, *other_last), (0x10_000, 0x1f_fff));
            }
            _ => panic!("{name}: {e}"),
        }
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("'{name}'")) && msg.contains("'a'"),
            "{msg}"
        );
    }
    // Adjacent on both sides is fine.
    ram.add(block("below", 0xf_000, 0x1_000)).unwrap();
    ram.add(block("above", 0x20_000, 0x1_000)).unwrap();
    // A name is unique within a list.
    let e = ram.add(block("a", 0x100_000, 0x1_000)).unwrap_err();
    assert!(matches!(e, Error::DuplicateName { ref name, other_gpa: 0x10_000, .. } if name == "a"));
    assert_eq!(ram.stats().blocks, 3);
    // Replacing a block by one that overlaps a third block is refused too.
    let id = ram.find_by_name("below").unwrap();
    let e = ram
        .replace(id, block("below", 0xe_000, 0x3_000))
        .unwrap_err();
    assert!(
        matches!(e, Error::Overlap { ref other, .. } if other == "a"),
        "{e}"
    );
    // ...but a replacement may overlap the block it replaces.
    ram.replace(id, block("below2", 0xe_000, 0x2_000)).unwrap();
    let e = ram.remove(id).unwrap_err();
    assert!(matches!(e, Error::NoSuchBlock(i) if i == id));
}

/// Blocks: at 0, a gap, two adjacent blocks, and one ending at 2^64.
fn layout() -> Vec<(&'static str, u64, u64)> {
    vec![
        ("low", 0, 0x10_000),
        ("mid", 0x100_000, 0x4_000),
        ("mid2", 0x104_000, 0x1_000),
        ("top", u64::MAX - (0x2_000 - 1), 0x2_000),
    ]
}

#[test]
fn lookups_at_first_and_last_byte_and_one_outside() {
    let rcu = Rcu::new();
    let ram = RamList::new(&rcu);
    for (n, g, s) in layout() {
        ram.add(block(n, g, s)).unwrap();
    }
    let me = rcu.register_qsbr();
    let mut hint = MruHint::new();
    let snap = ram.snapshot(&me);
    assert_eq!(snap.len(), 4);
    let name_at = |gpa: u64, hint: &mut MruHint| ram.lookup(&me, hint, gpa).map(|b| b.name());
    for (name, gpa, size) in layout() {
        let last = gpa + (size - 1);
        for probe in [gpa, last] {
            assert_eq!(name_at(probe, &mut hint), Some(name), "{probe:#x}");
            // Again, twice: the (adaptive) hint answers at least the second time.
            let hits = hint.hits();
            assert_eq!(name_at(probe, &mut hint), Some(name));
            assert_eq!(name_at(probe, &mut hint), Some(name));
            assert!(hint.hits() > hits);
            assert_eq!(snap.find(probe).map(|b| b.name()), Some(name));
            // Host addresses are the block's base plus the offset.
            let b = snap.find(probe).unwrap();
            let hva = ram.host_addr(&me, &mut hint, probe).unwrap();
            assert_eq!(hva as usize - b.host_ptr() as usize, (probe - gpa) as usize);
            // A one-byte range at the probe translates; two bytes at the last byte do not.
            let r = ram.translate(&me, &mut hint, probe, 1).unwrap();
            assert_eq!((r.gpa(), r.len(), r.block().name()), (probe, 1, name));
        }
        let e = ram.translate(&me, &mut hint, last, 2).unwrap_err();
        if last == u64::MAX {
            assert!(matches!(e, Error::RangeOverflow { .. }), "{e}");
        } else {
            assert!(
                matches!(e, Error::CrossesBlock { block_gpa, .. } if block_gpa == gpa),
                "{e}"
            );
        }
        // One byte outside on each side belongs to someone else (or no one).
        if let Some(before) = gpa.checked_sub(1) {
            assert_ne!(name_at(before, &mut hint), Some(name), "{before:#x}");
        }
        if let Some(after) = last.checked_add(1) {
            assert_ne!(name_at(after, &mut hint), Some(name), "{after:#x}");
        }
    }
    // The holes.
    for hole in [0x10_000, 0xff_fff, 0x105_000, u64::MAX - 0x2_000] {
        assert!(name_at(hole, &mut hint).is_none(), "{hole:#x}");
        assert!(ram.host_addr(&me, &mut hint, hole).is_none());
        assert!(matches!(
            ram.translate(&me, &mut hint, hole, 1),
            Err(Error::NotRam { gpa }) if gpa == hole
        ));
    }
    assert!(hint.misses() > 0 && hint.hits() > 0);

    // The same through a read-lock guard.
    drop(me);
    let g = rcu.read_lock();
    let mut hint = MruHint::new();
    assert_eq!(
        ram.lookup(&g, &mut hint, 0x104_fff).map(|b| b.name()),
        Some("mid2")
    );
    assert!(ram.lookup(&g, &mut hint, 0x105_000).is_none());
}

#[test]
fn mru_hint_adapts_to_locality_and_versions() {
    let rcu = Rcu::new();
    let ram = RamList::new(&rcu);
    let base = |i: u64| 0x100_000 * (i + 1);
    for i in 0..4 {
        ram.add(block(&format!("b{i}"), base(i), 0x1000)).unwrap();
    }
    let me = rcu.register_qsbr();
    let mut hint = MruHint::new();
    let look = |i: u64, hint: &mut MruHint| ram.lookup(&me, hint, base(i) + 8).unwrap().gpa();
    let steps: [(u64, u64, u64); 8] = [
        // (block, hits, misses) after the lookup
        (0, 0, 1), // empty hint: search
        (0, 1, 1), // hit
        (1, 1, 2), // checked, missed (trust 2)
        (2, 1, 3), // checked, missed (trust 1)
        (3, 1, 4), // checked, missed (trust 0): the hint is no longer checked
        (0, 1, 5), // not checked, search
        (0, 1, 6), // not checked, search; same block twice: trusted again
        (0, 2, 6), // checked, hit
    ];
    for (n, (i, hits, misses)) in steps.into_iter().enumerate() {
        assert_eq!(look(i, &mut hint), base(i));
        assert_eq!((hint.hits(), hint.misses()), (hits, misses), "step {n}");
    }
    // A writer's new version invalidates the hint: a miss, then hits again.
    ram.add(block("new", 0x10_000_000, 0x1000)).unwrap();
    assert!(ram.lookup(&me, &mut hint, base(0)).is_some());
    assert_eq!((hint.hits(), hint.misses()), (2, 7));
    assert!(ram.lookup(&me, &mut hint, base(0) + 0xfff).is_some());
    assert_eq!((hint.hits(), hint.misses()), (3, 7));
}

#[test]
fn ranges_split_at_block_boundaries_and_stop_at_holes() {
    let rcu = Rcu::new();
    let ram = RamList::new(&rcu);
    for (n, g, s) in layout() {
        ram.add(block(n, g, s)).unwrap();
    }
    let g = rcu.read_lock();
    let snap = ram.snapshot(&g);
    // Across mid -> mid2 (adjacent).
    let parts: Vec<_> = snap
        .ranges(0x103_ff0, 0x20)
        .map(|r| r.map(|r| (r.gpa(), r.len(), r.block().name())))
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        parts,
        vec![(0x103_ff0, 0x10, "mid"), (0x104_000, 0x10, "mid2")]
    );
    // Writes and reads across the boundary.
    let data: Vec<u8> = (0..0x20u8).collect();
    snap.write_bytes(0x103_ff0, &data).unwrap();
    let mut back = vec![0u8; 0x20];
    snap.read_bytes(0x103_ff0, &mut back).unwrap();
    assert_eq!(back, data);
    snap.write_val(0x103_ffc, 0x1122_3344_5566_7788u64).unwrap();
    assert_eq!(
        snap.read_val::<u64>(0x103_ffc).unwrap(),
        0x1122_3344_5566_7788
    );
    // Past mid2 there is a hole: an error item, then the end.
    let mut it = snap.ranges(0x104_ff0, 0x20);
    assert!(it.next().unwrap().is_ok());
    assert!(matches!(
        it.next(),
        Some(Err(Error::NotRam { gpa: 0x105_000 }))
    ));
    assert!(it.next().is_none());
    // Nothing is written if any part is missing.
    let before: u64 = snap.read_val(0x104_ff8).unwrap();
    assert!(snap.write_bytes(0x104_ff8, &[0xff; 16]).is_err());
    assert_eq!(snap.read_val::<u64>(0x104_ff8).unwrap(), before);
    // The top block: reads up to the last byte, overflow past it.
    snap.write_val(u64::MAX - 7, 0xabcdu64).unwrap();
    assert_eq!(snap.read_val::<u64>(u64::MAX - 7).unwrap(), 0xabcd);
    assert!(matches!(
        snap.read_val::<u64>(u64::MAX - 6),
        Err(Error::RangeOverflow { .. })
    ));
    assert_eq!(snap.ranges(5, 0).count(), 0);
}

#[test]
fn read_only_blocks_refuse_guest_writes_but_not_host_loading() {
    let rcu = Rcu::new();
    let ram = RamList::new(&rcu);
    let rom = RamBlock::builder("rom", 0xf_0000, 0x1_0000)
        .read_only()
        .no_dump()
        .hugepages()
        .build()
        .unwrap();
    assert_eq!(
        rom.flags(),
        BlockFlags::READ_ONLY | BlockFlags::NO_DUMP | BlockFlags::HUGEPAGES
    );
    rom.write_at(0x10, b"firmware").unwrap(); // host-side loading
    ram.add(rom).unwrap();
    ram.add(block("ram", 0x10_0000, 0x1_0000)).unwrap();
    let g = rcu.read_lock();
    let snap = ram.snapshot(&g);
    let mut buf = [0u8; 8];
    snap.read_bytes(0xf_0010, &mut buf).unwrap();
    assert_eq!(&buf, b"firmware");
    assert!(matches!(
        snap.write_val(0xf_0010, 0u32),
        Err(Error::ReadOnly { gpa: 0xf_0010 })
    ));
    // A write spanning ram <- rom refuses all of it.
    assert!(matches!(
        snap.write_bytes(0xf_fffc, &[1; 8]),
        Err(Error::ReadOnly { gpa: 0xf_fffc })
    ));
    assert_eq!(snap.read_val::<u32>(0x10_0000).unwrap(), 0);
    snap.read_bytes(0xf_0010, &mut buf).unwrap();
    assert_eq!(&buf, b"firmware");
}

#[derive(Default)]
struct Recorder {
    log: Mutex<Vec<String>>,
    refuse: AtomicBool,
}

impl MemoryListener for Recorder {
    fn region_add(&self, b: &RamBlock) -> Result<(), ListenerError> {
        if self.refuse.load(Ordering::Relaxed) {
            return Err("no free KVM slot".into());
        }
        assert!(!b.host_ptr().is_null());
        self.log.lock().push(format!(
            "add {} slot={:?} gpa={:#x} size={:#x} ro={}",
            b.name(),
            b.slot(),
            b.gpa(),
            b.size(),
            b.is_read_only()
        ));
        Ok(())
    }

    fn region_del(&self, b: &RamBlock) {
        self.log
            .lock()
            .push(format!("del {} slot={:?}", b.name(), b.slot()));
    }
}

impl Recorder {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.log.lock())
    }
}

#[test]
fn listeners_see_adds_removes_replaces_with_slots() {
    let rcu = Rcu::new();
    let ram = RamList::new(&rcu);
    let a = ram.add(block("a", 0, 0x1000)).unwrap();
    let l1 = Arc::new(Recorder::default());
    let id1 = ram.add_listener(l1.clone()).unwrap();
    assert_eq!(
        l1.take(),
        ["add a slot=Some(0) gpa=0x0 size=0x1000 ro=false"]
    );

    let l2 = Arc::new(Recorder::default());
    ram.add_listener(l2.clone()).unwrap();
    l2.take();
    let b = ram
        .add(RamBlock::new("b", 0x1000, 0x2000, BlockFlags::READ_ONLY).unwrap())
        .unwrap();
    assert_eq!(
        l1.take(),
        ["add b slot=Some(1) gpa=0x1000 size=0x2000 ro=true"]
    );
    assert_eq!(l2.take().len(), 1);

    // A refusing listener leaves the list unchanged and un-adds from those before it.
    l2.refuse.store(true, Ordering::Relaxed);
    let e = ram.add(block("c", 0x10_000, 0x1000)).unwrap_err();
    assert!(
        matches!(e, Error::Listener { ref name, .. } if name == "c"),
        "{e}"
    );
    assert!(e.to_string().contains("no free KVM slot"));
    assert_eq!(
        l1.take(),
        [
            "add c slot=Some(2) gpa=0x10000 size=0x1000 ro=false",
            "del c slot=Some(2)"
        ]
    );
    assert_eq!(ram.stats().blocks, 2);
    l2.refuse.store(false, Ordering::Relaxed);

    // Remove frees slot 0; the next add reuses it.
    ram.remove(a).unwrap();
    assert_eq!(l1.take(), ["del a slot=Some(0)"]);
    ram.add(block("d", 0x20_000, 0x1000)).unwrap();
    assert_eq!(
        l1.take(),
        ["add d slot=Some(0) gpa=0x20000 size=0x1000 ro=false"]
    );

    // Replace: del old, add new in the same slot.
    let b2 = ram.replace(b, block("b2", 0x1000, 0x4000)).unwrap();
    assert_eq!(
        l1.take(),
        [
            "del b slot=Some(1)",
            "add b2 slot=Some(1) gpa=0x1000 size=0x4000 ro=false"
        ]
    );
    // Resize keeps the name, base and contents.
    let g = rcu.read_lock();
    ram.snapshot(&g).write_val(0x1ff8, 77u64).unwrap();
    drop(g);
    let b3 = ram.resize(b2, 0x8000).unwrap();
    assert_eq!(
        l1.take(),
        [
            "del b2 slot=Some(1)",
            "add b2 slot=Some(1) gpa=0x1000 size=0x8000 ro=false"
        ]
    );
    let g = rcu.read_lock();
    let snap = ram.snapshot(&g);
    assert_eq!(snap.read_val::<u64>(0x1ff8).unwrap(), 77);
    assert_eq!(snap.read_val::<u64>(0x8ff8).unwrap(), 0);
    assert_eq!(snap.find(0x1000).unwrap().id(), b3);
    drop(g);

    // Unregistering tells the listener everything is gone; then it hears nothing.
    ram.remove_listener(id1).unwrap();
    assert_eq!(l1.take(), ["del d slot=Some(0)", "del b2 slot=Some(1)"]);
    assert!(matches!(
        ram.remove_listener(id1),
        Err(Error::NoSuchListener(_))
    ));
    ram.remove(b3).unwrap();
    assert!(l1.take().is_empty());
    // Dropping the list un-adds what is left from the remaining listener.
    l2.take();
    drop(ram);
    assert_eq!(l2.take(), ["del d slot=Some(0)"]);
}

#[test]
fn removed_memory_stays_mapped_until_the_reader_is_done() {
    let rcu = Rcu::builder().batch(1, Duration::from_millis(1)).build();
    let ram = Arc::new(RamList::new(&rcu));
    let id = ram.add(block("victim", 0x10_000, 0x1000)).unwrap();
    ram.add(block("other", 0x20_000, 0x1000)).unwrap();
    let mut me = rcu.register_qsbr();
    let mut hint = MruHint::new();
    ram.snapshot(&me).write_val(0x10_000, 0x5eed_u64).unwrap();
    me.quiescent_state();
    let b = ram.lookup(&me, &mut hint, 0x10_010).unwrap();
    assert_eq!(b.id(), id);
    let writer = {
        let (ram, rcu) = (ram.clone(), rcu.clone());
        std::thread::spawn(move || {
            ram.remove(id).unwrap();
            rcu.rcu_barrier(); // waits for `me` to pass a quiescent state
            ram.stats().unmapped
        })
    };
    // The writer unpublishes the block, but we still hold it: it must stay mapped.
    let deadline = std::time::Instant::now() + Duration::from_millis(300);
    while std::time::Instant::now() < deadline {
        assert_eq!(ram.stats().unmapped, 0);
        let mut v = [0u8; 8];
        b.read_at(0, &mut v).unwrap();
        assert_eq!(u64::from_le_bytes(v), 0x5eed);
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(ram.stats().removed, 1);
    // `b` is dead from here on (the compiler checks). Offline: the grace period may begin
    // after this point, and must not wait for this thread.
    let unmapped = me.offline_while(|| writer.join().unwrap());
    assert_eq!(unmapped, 1);
    // New lookups do not find it (the new version invalidated the hint).
    assert!(ram.lookup(&me, &mut hint, 0x10_010).is_none());
    assert_eq!(ram.stats().unmapped, 1);
}

#[test]
fn owned_snapshot_keeps_memory_alive_after_removal() {
    let rcu = Rcu::new();
    let ram = RamList::new(&rcu);
    let id = ram.add(block("x", 0, 0x1000)).unwrap();
    let owned = ram.snapshot_owned();
    ram.remove(id).unwrap();
    rcu.rcu_barrier();
    assert_eq!(ram.stats().unmapped, 0);
    owned.write_val(8, 3u16).unwrap();
    assert_eq!(owned.read_val::<u16>(8).unwrap(), 3);
    drop(owned);
    assert_eq!(ram.stats().unmapped, 1);
}

/// Blocks of 2 MiB or more start on a 2 MiB host boundary (so that transparent huge pages
/// can back them and KVM can map them huge); smaller ones are page-aligned; every byte of
/// an aligned block is usable and zeroed, and the trimmed head and tail do not leak into it.
#[test]
fn large_blocks_are_2mib_aligned_on_the_host_and_fully_usable() {
    const MIB2: u64 = 2 << 20;
    for (size, flags) in [
        (MIB2, BlockFlags::empty()),
        (3 * MIB2, BlockFlags::HUGEPAGES),
        (64 << 20, BlockFlags::HUGEPAGES),
        (PAGE, BlockFlags::empty()),
    ] {
        // Several in a row, so that at least one lands where the kernel would not align it.
        for i in 0..4 {
            let b = RamBlock::new(format!("b{i}"), 0x1_0000_0000, size, flags).unwrap();
            let addr = b.host_ptr() as u64;
            if size >= MIB2 {
                assert_eq!(addr % MIB2, 0, "{size:#x}: host address {addr:#x}");
            } else {
                assert_eq!(addr % PAGE, 0);
            }
            let mut first = [0xffu8; 8];
            let mut last = [0xffu8; 8];
            b.read_at(0, &mut first).unwrap();
            b.read_at(size - 8, &mut last).unwrap();
            assert_eq!((first, last), ([0; 8], [0; 8]));
            b.write_at(size - 8, b"lastbyte").unwrap();
            b.read_at(size - 8, &mut last).unwrap();
            assert_eq!(&last, b"lastbyte");
        }
    }
}

/// Records a listener's calls in QEMU's transaction shape, with the names of the blocks the
/// published snapshot holds at `begin` and at `commit` (read with a read guard, which the
/// writer lock does not block).
#[derive(Default)]
struct TxRecorder {
    log: Mutex<Vec<String>>,
    ram: std::sync::OnceLock<Arc<RamList>>,
    refuse: AtomicBool,
}

impl TxRecorder {
    fn published(&self) -> String {
        let Some(ram) = self.ram.get() else {
            return "-".into();
        };
        let g = ram.domain().read_lock();
        let names: Vec<String> = ram
            .snapshot(&g)
            .blocks()
            .iter()
            .map(|b| b.name().to_string())
            .collect();
        names.join(",")
    }

    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.log.lock())
    }
}

impl MemoryListener for TxRecorder {
    fn begin(&self) {
        let p = self.published();
        self.log.lock().push(format!("begin [{p}]"));
    }

    fn region_add(&self, b: &RamBlock) -> Result<(), ListenerError> {
        if self.refuse.load(Ordering::Relaxed) {
            return Err("refused".into());
        }
        self.log.lock().push(format!("add {}", b.name()));
        Ok(())
    }

    fn region_del(&self, b: &RamBlock) {
        self.log.lock().push(format!("del {}", b.name()));
    }

    fn commit(&self) {
        let p = self.published();
        self.log.lock().push(format!("commit [{p}]"));
    }
}

/// Every change is one transaction: begin before the change, the region calls, the
/// publication, then commit (also when a listener refused the change, and for a listener's
/// registration and removal, which replay the blocks to that listener alone).
#[test]
fn listeners_see_each_change_as_one_transaction_committed_after_publication() {
    let rcu = Rcu::new();
    let ram = Arc::new(RamList::new(&rcu));
    let a = ram.add(block("a", 0, 0x1000)).unwrap();
    let l = Arc::new(TxRecorder::default());
    let id = ram.add_listener(l.clone()).unwrap();
    assert_eq!(l.take(), ["begin [-]", "add a", "commit [-]"]);
    l.ram.set(ram.clone()).ok().unwrap();

    ram.add(block("b", 0x1000, 0x1000)).unwrap();
    assert_eq!(l.take(), ["begin [a]", "add b", "commit [a,b]"]);
    ram.remove(a).unwrap();
    assert_eq!(l.take(), ["begin [a,b]", "del a", "commit [b]"]);
    let b = ram.find_by_name("b").unwrap();
    ram.replace(b, block("b2", 0x1000, 0x2000)).unwrap();
    assert_eq!(l.take(), ["begin [b]", "del b", "add b2", "commit [b2]"]);

    // Refused: rolled back, nothing published, still committed.
    l.refuse.store(true, Ordering::Relaxed);
    assert!(ram.add(block("c", 0x10_000, 0x1000)).is_err());
    assert_eq!(l.take(), ["begin [b2]", "commit [b2]"]);
    l.refuse.store(false, Ordering::Relaxed);
    // Refused by the list itself (overlap): the same.
    assert!(ram.add(block("d", 0x1000, 0x1000)).is_err());
    assert_eq!(l.take(), ["begin [b2]", "commit [b2]"]);

    ram.remove_listener(id).unwrap();
    assert_eq!(l.take(), ["begin [b2]", "del b2", "commit [b2]"]);
}
