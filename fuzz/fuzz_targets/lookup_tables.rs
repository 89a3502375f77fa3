//! The lookup device's guest tables (`vmm::bench::lookup`): the guest writes a descriptor and a table
//! of addresses anywhere in RAM and rings the doorbell. All four translation designs (rcu,
//! mutex, rwlock, vm-memory) run the same descriptor over the same RAM and must agree on the
//! sum and the failure count; RAM blocks are hot-plugged through the RAM list (whose listeners update
//! every design's table, as for the control socket's `ram-add`) between rings. Nothing may panic or read outside RAM.
#![no_main]

#[path = "common/input.rs"]
mod input;

use devices::{Access, BusDevice};
use input::Input;
use libfuzzer_sys::fuzz_target;
use memory::{BlockFlags, BlockId, RamBlock, RamList};
use std::sync::{Arc, OnceLock};
use vmm::bench::lookup::{AltTables, LookupDesign, LookupDevice};

const PAGE: u64 = 4096;
const DESIGNS: [LookupDesign; 4] = [
    LookupDesign::Rcu,
    LookupDesign::Mutex,
    LookupDesign::RwLock,
    LookupDesign::VmMemory,
];

struct Env {
    ram: Arc<RamList>,
    devs: Vec<LookupDevice>,
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let rcu: &'static rcu::Rcu = Box::leak(Box::new(rcu::Rcu::new()));
        let ram = Arc::new(RamList::new(rcu));
        let devs = DESIGNS
            .iter()
            .map(|&d| {
                let alt = AltTables::new(d);
                if d != LookupDesign::Rcu {
                    ram.add_listener(alt.clone()).unwrap();
                }
                let counters: Arc<[vmm::kvm::vcpu::ExitCounters]> =
                    vec![vmm::kvm::vcpu::ExitCounters::default()].into();
                LookupDevice::new(ram.clone(), alt, d, counters)
            })
            .collect();
        // Two adjacent blocks and one after a hole.
        for (name, gpa, size) in [
            ("a", 0, 8 * PAGE),
            ("b", 8 * PAGE, 8 * PAGE),
            ("c", 32 * PAGE, 4 * PAGE),
        ] {
            ram.add(RamBlock::new(name, gpa, size, BlockFlags::empty()).unwrap())
                .unwrap();
        }
        Env { ram, devs }
    })
}

impl Input<'_> {
    /// A guest address: mostly inside or at the edges of RAM, sometimes anything.
    fn gpa(&mut self) -> u64 {
        match self.u8() % 4 {
            0 => self.u64(),
            1 => (36 * PAGE).wrapping_sub(u64::from(self.u8())),
            _ => u64::from(self.u16()) * 4 % (40 * PAGE),
        }
    }
}

/// Rings every design's doorbell for `desc` with the result fields cleared first, so that
/// each sees the same memory; returns (sum, failed) per design.
fn ring_all(env: &Env, desc: u64) -> Vec<Option<(u64, u32)>> {
    let snap = env.ram.snapshot_owned();
    env.devs
        .iter()
        .map(|dev| {
            // The device writes sum (+16), failed (+24) and ns (+32); the table may overlap
            // them, so each design starts from the same bytes there. The count (+8) is capped
            // so that an execution stays fast (the device's own cap is MAX_LOOKUPS).
            if let Ok(n) = snap.read_val::<u32>(desc.wrapping_add(8)) {
                let _ = snap.write_val(desc.wrapping_add(8), n % 4096);
            }
            let _ = snap.write_val(desc.wrapping_add(16), 0u64);
            let _ = snap.write_val(desc.wrapping_add(24), 0u64);
            let _ = snap.write_val(desc.wrapping_add(32), 0u64);
            // As vCPU 0, on the read side of the RAM list's domain.
            let guard = env.ram.domain().read_lock();
            let a = Access::new(0, &guard);
            assert_eq!(dev.write(&a, 0, &(desc as u32).to_le_bytes()), None);
            assert_eq!(dev.write(&a, 4, &((desc >> 32) as u32).to_le_bytes()), None);
            drop(guard);
            let sum = snap.read_val::<u64>(desc.wrapping_add(16)).ok()?;
            let failed = snap.read_val::<u32>(desc.wrapping_add(24)).ok()?;
            Some((sum, failed))
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let env = env();
    // Every input starts from zeroed RAM, so that a crashing input reproduces on its own.
    for b in env.ram.snapshot_owned().blocks() {
        b.write_at(0, &vec![0u8; b.size() as usize]).unwrap();
    }
    let mut input = Input(data);
    let mut plugged: Vec<BlockId> = Vec::new();
    let mut steps = 0;
    while !input.0.is_empty() && steps < 64 {
        steps += 1;
        match input.u8() % 6 {
            0 | 1 => {
                let (gpa, v) = (input.gpa(), input.u64());
                let _ = env.ram.snapshot_owned().write_val(gpa, v);
            }
            2 => {
                // A descriptor: table address and count (kept small so that a run stays fast;
                // the device caps it at MAX_LOOKUPS anyway).
                let (desc, table, count) = (input.gpa(), input.gpa(), input.u16() % 1024);
                let snap = env.ram.snapshot_owned();
                let _ = snap.write_val(desc, table);
                let _ = snap.write_val(desc.wrapping_add(8), u32::from(count));
            }
            3 => {
                let desc = input.gpa();
                let r = ring_all(env, desc);
                assert!(
                    r.windows(2).all(|w| w[0] == w[1]),
                    "designs disagree for {desc:#x}: {r:?}"
                );
            }
            4 => {
                if plugged.len() < 4 {
                    let gpa = input.gpa() & !(PAGE - 1);
                    let size = (u64::from(input.u8() % 16) + 1) * PAGE;
                    if let Ok(b) = RamBlock::new("plug", gpa, size, BlockFlags::empty()) {
                        // Through the list: its listeners (one per design here; the VMM has
                        // one) update every table in one transaction.
                        if let Ok(id) = env.ram.add(b) {
                            plugged.push(id);
                        }
                    }
                }
            }
            _ => {
                if let Some(id) = plugged.pop() {
                    env.ram.remove(id).unwrap();
                }
            }
        }
    }
    for id in plugged {
        env.ram.remove(id).unwrap();
    }
});
