//! Guest-controlled addresses and lengths never panic: random and extreme (gpa, len) pairs
//! through every access path, this crate's and vm-memory's. Also run in debug builds, where
//! an arithmetic overflow would panic.

mod common;

use common::{Rng, PAGE};
use memory::{BlockFlags, MruHint, RamBlock, RamList};
use rcu::Rcu;
use vm_memory::{
    Bytes, GuestAddress, GuestMemory, GuestMemoryBackend, GuestMemoryRegion, MemoryRegionAddress,
    Permissions,
};

#[test]
fn random_and_extreme_guest_addresses_and_lengths_never_panic() {
    let rcu = Rcu::new();
    let ram = RamList::new(&rcu);
    let blocks = [
        ("zero", 0, 4 * PAGE, BlockFlags::empty()),
        ("adj", 4 * PAGE, PAGE, BlockFlags::empty()),
        ("rom", 0x10_0000, 2 * PAGE, BlockFlags::READ_ONLY),
        ("mid", 1 << 40, 16 * PAGE, BlockFlags::empty()),
        (
            "top",
            u64::MAX - (2 * PAGE - 1),
            2 * PAGE,
            BlockFlags::empty(),
        ),
    ];
    let mut edges = vec![0u64, 1, u64::MAX, u64::MAX - 1, 1 << 63, (1 << 63) - 1];
    for &(name, gpa, size, flags) in &blocks {
        ram.add(RamBlock::new(name, gpa, size, flags).unwrap())
            .unwrap();
        let last = gpa + (size - 1);
        for base in [gpa, last] {
            for d in [-9i64, -8, -1, 0, 1, 7, 8, 9] {
                edges.push(base.wrapping_add(d as u64));
            }
        }
    }
    let lens: Vec<usize> = vec![
        0,
        1,
        2,
        7,
        8,
        PAGE as usize - 1,
        PAGE as usize,
        PAGE as usize + 1,
        4 * PAGE as usize + 1,
        usize::MAX,
        usize::MAX - 1,
        usize::MAX / 2,
        isize::MAX as usize + 1,
    ];
    let me = rcu.register_qsbr();
    let mut hint = MruHint::new();
    let mut rng = Rng::new(0xf00d);
    let snap = ram.snapshot(&me);
    let mut ok = 0u64;
    let mut err = 0u64;
    let mut buf = [0u8; 64];
    let iters = if cfg!(debug_assertions) {
        100_000
    } else {
        400_000
    };
    for i in 0..iters {
        let gpa = match rng.below(4) {
            0 => rng.next_u64(),
            1 => rng.pick(&edges),
            2 => rng.pick(&edges).wrapping_add(rng.below(2 * PAGE)),
            _ => rng.pick(&edges).wrapping_sub(rng.below(2 * PAGE)),
        };
        let len = match rng.below(3) {
            0 => rng.pick(&lens),
            1 => rng.below(3 * PAGE) as usize,
            _ => rng.next_u64() as usize,
        };
        let small = (len % (buf.len() + 1)).min(buf.len());

        // This crate's paths.
        let found = ram.lookup(&me, &mut hint, gpa).map(|b| b.id());
        assert_eq!(found, snap.find(gpa).map(|b| b.id()));
        assert_eq!(
            ram.host_addr(&me, &mut hint, gpa).is_some(),
            found.is_some()
        );
        match ram.translate(&me, &mut hint, gpa, len) {
            Ok(r) => {
                // The whole range lies in one block.
                assert_eq!(r.len(), len);
                assert!(r.block().contains(gpa));
                assert!(len == 0 || r.block().contains(gpa + (len as u64 - 1)));
                ok += 1;
            }
            Err(_) => err += 1,
        }
        // Piece by piece (bounded: a huge len over a hole ends at the first error).
        let mut covered = 0u64;
        for piece in snap.ranges(gpa, len).take(8) {
            match piece {
                Ok(p) => covered += p.len() as u64,
                Err(_) => break,
            }
        }
        assert!(covered <= len as u64);
        let _ = snap.read_bytes(gpa, &mut buf[..small]);
        if i % 2 == 0 {
            let _ = snap.write_bytes(gpa, &buf[..small]);
        }
        let _ = snap.read_val::<u64>(gpa);
        let _ = snap.write_val::<u32>(gpa, 0x0102_0304);
        if let Some(b) = snap.find(gpa) {
            let off = gpa - b.gpa();
            let _ = b.range(off, len);
            let _ = b.range(rng.next_u64(), len);
            let _ = b.read_at(off, &mut buf[..small]);
            let _ = b.write_at(rng.pick(&edges), &buf[..small]);
        }

        // vm-memory's paths on the same snapshot.
        let a = GuestAddress(gpa);
        let _ = snap.checked_offset(a, len);
        let _ = snap.get_host_address(a);
        let _ = GuestMemoryBackend::get_slice(snap, a, len);
        let _ = GuestMemoryBackend::check_range(snap, a, len.min(1 << 20));
        let _ = GuestMemory::check_range(snap, a, len.min(1 << 20), Permissions::Read);
        let _ = snap.read_slice(&mut buf[..small], a);
        let _ = snap.write_slice(&buf[..small], a);
        let _ = snap.read_obj::<u16>(a);
        let _ = snap.to_region_addr(a);
        if let Some(r) = snap.find_region(a) {
            let ra = MemoryRegionAddress(rng.pick(&edges));
            let _ = r.checked_offset(ra, len);
            let _ = r.get_slice(ra, len);
            let _ = r.get_host_address(ra);
            let _ = r.to_region_addr(a);
            let _ = r.read_obj::<u64>(ra);
            let _ = r.write_slice(&buf[..small], ra);
        }
    }
    // Both outcomes happened a fair number of times (the generator reaches the edges).
    assert!(ok > iters / 50 && err > iters / 50, "ok {ok} err {err}");
    assert!(hint.hits() > 0 && hint.misses() > 0);
}
