//! The memory crate's guest access helpers on a real RAM list: `translate`, `ranges`,
//! `read_bytes`/`write_bytes`, `read_val`/`write_val`, `lookup`/`host_addr`, vm-memory's
//! `Bytes` on a snapshot, with hot-plug (add/remove) between accesses. Every address and
//! length comes from the input; nothing may panic, and the answers must agree with each other.
#![no_main]

#[path = "common/input.rs"]
mod input;

use input::Input;
use libfuzzer_sys::fuzz_target;
use memory::{BlockFlags, MruHint, RamBlock, RamList};
use std::sync::OnceLock;
use vm_memory::{Bytes, GuestAddress};

const PAGE: u64 = 4096;

struct Env {
    ram: RamList,
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let rcu = Box::leak(Box::new(rcu::Rcu::new()));
        let ram = RamList::new(rcu);
        // Two adjacent blocks (accesses may span them), a read-only one after a hole, and one
        // ending at the top of the address space (overflow at the edge).
        for (name, gpa, size, flags) in [
            ("low", 0, 16 * PAGE, BlockFlags::empty()),
            ("next", 16 * PAGE, 4 * PAGE, BlockFlags::empty()),
            ("rom", 64 * PAGE, 2 * PAGE, BlockFlags::READ_ONLY),
            (
                "top",
                u64::MAX - 2 * PAGE + 1,
                2 * PAGE,
                BlockFlags::empty(),
            ),
        ] {
            ram.add(RamBlock::new(name, gpa, size, flags).unwrap())
                .unwrap();
        }
        Env { ram }
    })
}

impl Input<'_> {
    /// An address: mostly near the interesting places, sometimes anything.
    fn gpa(&mut self) -> u64 {
        let base = [
            0,
            16 * PAGE,
            20 * PAGE,
            64 * PAGE,
            66 * PAGE,
            u64::MAX - 2 * PAGE + 1,
            0,
        ];
        let sel = self.u8() as usize % (base.len() + 1);
        let off = u64::from(self.u8()) | (u64::from(self.u8()) << 8);
        match base.get(sel) {
            Some(b) => b.wrapping_add(off).wrapping_sub(0x100),
            None => self.u64(),
        }
    }
    fn len(&mut self) -> usize {
        (u16::from_le_bytes([self.u8(), self.u8()]) % 9000) as usize
    }
    fn done(&self) -> bool {
        self.0.is_empty()
    }
}

fuzz_target!(|data: &[u8]| {
    let env = env();
    let mut input = Input(data);
    let mut hint = MruHint::default();
    let mut plugged = None;
    let mut steps = 0;
    while !input.done() && steps < 64 {
        steps += 1;
        let snap = env.ram.snapshot_owned();
        match input.u8() % 10 {
            0 => {
                let (gpa, len) = (input.gpa(), input.len());
                if let Ok(r) = snap.translate(&mut hint, gpa, len) {
                    assert_eq!((r.gpa(), r.len()), (gpa, len));
                    let b = r.block();
                    assert!(b.contains(gpa));
                    assert!(r.offset_in_block() + len as u64 <= b.size());
                }
            }
            1 => {
                let (gpa, len) = (input.gpa(), input.len());
                let mut total = 0u64;
                let mut failed = false;
                for r in snap.ranges(gpa, len) {
                    match r {
                        Ok(r) => {
                            assert_eq!(r.gpa(), gpa.wrapping_add(total));
                            total += r.len() as u64;
                        }
                        Err(_) => failed = true,
                    }
                }
                assert!(total <= len as u64);
                if !failed {
                    assert_eq!(total, len as u64);
                }
            }
            2 => {
                let (gpa, len, fill) = (input.gpa(), input.len(), input.u8());
                let buf = vec![fill; len];
                if snap.write_bytes(gpa, &buf).is_ok() {
                    let mut back = vec![!fill; len];
                    snap.read_bytes(gpa, &mut back).unwrap();
                    assert_eq!(back, buf);
                }
            }
            3 => {
                let (gpa, len) = (input.gpa(), input.len());
                let mut buf = vec![0u8; len];
                let _ = snap.read_bytes(gpa, &mut buf);
            }
            4 => {
                let (gpa, v) = (input.gpa(), input.u64());
                match input.u8() % 4 {
                    0 => {
                        if snap.write_val(gpa, v as u8).is_ok() {
                            assert_eq!(snap.read_val::<u8>(gpa).unwrap(), v as u8);
                        }
                    }
                    1 => {
                        if snap.write_val(gpa, v as u16).is_ok() {
                            assert_eq!(snap.read_val::<u16>(gpa).unwrap(), v as u16);
                        }
                    }
                    2 => {
                        if snap.write_val(gpa, v as u32).is_ok() {
                            assert_eq!(snap.read_val::<u32>(gpa).unwrap(), v as u32);
                        }
                    }
                    _ => {
                        if snap.write_val(gpa, v).is_ok() {
                            assert_eq!(snap.read_val::<u64>(gpa).unwrap(), v);
                        }
                    }
                }
            }
            5 => {
                let gpa = input.gpa();
                let found = snap.find(gpa).map(|b| b.id());
                assert_eq!(snap.lookup(&mut hint, gpa).map(|b| b.id()), found);
                assert_eq!(snap.host_addr(&mut hint, gpa).is_some(), found.is_some());
            }
            6 => {
                // vm-memory's view of the same snapshot (what linux-loader uses).
                let (gpa, len) = (input.gpa(), input.len());
                let mut buf = vec![0u8; len];
                let _ = (*snap).read_slice(&mut buf, GuestAddress(gpa));
                let _ = (*snap).write_slice(&buf, GuestAddress(gpa));
                let _ = (*snap).read_obj::<u64>(GuestAddress(gpa));
            }
            7 => {
                // Hot-plug a block at an input-chosen place (refused on overlap).
                if plugged.is_none() {
                    let gpa = input.gpa() & !(PAGE - 1);
                    let size = (u64::from(input.u8()) + 1) * PAGE;
                    if let Ok(b) = RamBlock::new("plug", gpa, size, BlockFlags::empty()) {
                        plugged = env.ram.add(b).ok();
                    }
                }
            }
            8 => {
                if let Some(id) = plugged.take() {
                    env.ram.remove(id).unwrap();
                }
            }
            _ => {
                let gpa = input.gpa();
                let _ = snap.read_val::<u16>(gpa | 1);
            }
        }
    }
    if let Some(id) = plugged {
        env.ram.remove(id).unwrap();
    }
});
