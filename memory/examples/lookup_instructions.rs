//! The lookup loops of the `lookup` benchmark's `floor-snapshot`, `rcu-qsbr` and
//! `rcu-qsbr-checked` variants, each in a function of its own, for counting instructions
//! per lookup with callgrind (noise-free, unlike the timings of the 2-core shared machine):
//!
//! ```text
//! scripts/lookup-instructions.sh
//! ```
//!
//! runs `lookup_instructions VARIANT PATTERN N` under `valgrind --tool=callgrind` for two
//! values of N and prints the difference per lookup (so that set-up does not count).
//! VARIANT: `floor` (a plain `&RamSnapshot`, never updated: no RCU, no lock), `rcu` (one
//! `RamReader` per quiescent-state interval of 256 lookups, as a vCPU does), `checked`
//! (`RamList::host_addr(&me, ..)`: proof checked, snapshot loaded on every lookup). PATTERN:
//! `mru` (every lookup in one block) or `uniform` (uniformly random block), over 32 blocks of
//! 64 KiB, one every 1 MiB, as in the benchmark.

#[path = "../benches/intervals/mod.rs"]
mod intervals;

use intervals::{interval, interval_checked, ADDRS, QS_EVERY};
use memory::{BlockFlags, MruHint, RamBlock, RamList, RamSnapshot};
use rcu::QsbrThread;
use std::hint::black_box;

const BLOCKS: u64 = 32;
const BLOCK: u64 = 64 * 1024;

fn floor(snap: &RamSnapshot, addrs: &[u64; ADDRS], iters: usize) -> usize {
    let mut hint = MruHint::new();
    let mut sink = 0usize;
    let mut i = 0;
    while i < iters {
        let end = (i + QS_EVERY).min(iters);
        sink = sink.wrapping_add(interval(snap, &mut hint, addrs, i..end));
        i = end;
    }
    black_box(hint);
    sink
}

fn rcu(ram: &RamList, me: &mut QsbrThread, addrs: &[u64; ADDRS], iters: usize) -> usize {
    let mut hint = MruHint::new();
    let mut sink = 0usize;
    let mut i = 0;
    while i < iters {
        let end = (i + QS_EVERY).min(iters);
        let r = ram.reader(&*me);
        sink = sink.wrapping_add(interval(r.snapshot(), &mut hint, addrs, i..end));
        me.quiescent_state();
        i = end;
    }
    black_box(hint);
    sink
}

fn checked(ram: &RamList, me: &mut QsbrThread, addrs: &[u64; ADDRS], iters: usize) -> usize {
    let mut hint = MruHint::new();
    let mut sink = 0usize;
    let mut i = 0;
    while i < iters {
        let end = (i + QS_EVERY).min(iters);
        sink = sink.wrapping_add(interval_checked(ram, me, &mut hint, addrs, i..end));
        me.quiescent_state();
        i = end;
    }
    black_box(hint);
    sink
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(variant), Some(pattern), Some(n)) = (
        args.get(1),
        args.get(2),
        args.get(3).and_then(|n| n.parse::<usize>().ok()),
    ) else {
        eprintln!("usage: lookup_instructions floor|rcu|checked mru|uniform LOOKUPS");
        std::process::exit(2);
    };
    let domain = rcu::Rcu::new();
    let ram = RamList::new(&domain);
    for i in 0..BLOCKS {
        let b = RamBlock::new(format!("b{i}"), (i + 1) << 20, BLOCK, BlockFlags::empty());
        ram.add(b.expect("block")).expect("add");
    }
    // A fixed LCG: the same stream on every run.
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut addrs = [0u64; ADDRS];
    for a in addrs.iter_mut() {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let b = match pattern.as_str() {
            "uniform" => (x >> 33) % BLOCKS,
            _ => BLOCKS / 2,
        };
        *a = ((b + 1) << 20) + (x >> 7) % BLOCK;
    }
    let snap = ram.snapshot_owned();
    let mut me = domain.register_qsbr();
    let sink = match variant.as_str() {
        "floor" => floor(black_box(&snap), &addrs, n),
        "rcu" => rcu(&ram, &mut me, &addrs, n),
        "checked" => checked(&ram, &mut me, &addrs, n),
        v => {
            eprintln!("unknown variant {v}");
            std::process::exit(2);
        }
    };
    println!("{variant} {pattern} {n}: {sink:#x}");
}
