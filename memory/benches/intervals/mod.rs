//! The lookup loops of one quiescent-state interval, shared by the `lookup` benchmark (which
//! times them) and `examples/lookup_instructions.rs` (which counts their instructions with
//! callgrind), so that both measure the very same code.

use memory::{MruHint, RamList, RamSnapshot};
use rcu::QsbrThread;

/// Lookup addresses per pattern (a power of two: the loops index with a mask).
pub const ADDRS: usize = 4096;

/// Lookups per quiescent-state interval (a vCPU reports one per exit).
pub const QS_EVERY: usize = 256;

/// The lookups of one quiescent-state interval of `floor-snapshot` and `rcu-qsbr`: one
/// function, out of line, so that both run the very same machine code per lookup and differ
/// only in what surrounds the call (nothing for the floor; `RamList::reader` and
/// `quiescent_state` for RCU). Inlined, LLVM shapes each loop its own way (register
/// allocation, which loads it hoists), which moved either one by up to 25% from build to build.
/// `interval_checked` spells the same loop out again rather than sharing it through a closure:
/// the shared form compiled the checked loop one instruction longer.
#[inline(never)]
pub fn interval(
    snap: &RamSnapshot,
    hint: &mut MruHint,
    addrs: &[u64; ADDRS],
    range: std::ops::Range<usize>,
) -> usize {
    // A local copy: through `hint` itself LLVM would store the hint's counters on every
    // lookup (it may not sink stores to memory another thread might see).
    let mut local = *hint;
    let mut sink = 0usize;
    for i in range {
        if let Some(h) = snap.host_addr(&mut local, addrs[i & (ADDRS - 1)]) {
            sink = sink.wrapping_add(h as usize);
        }
    }
    *hint = local;
    sink
}

/// `rcu-qsbr-checked`'s interval: the same loop through `RamList::host_addr(&me, ..)`, which
/// checks the proof and loads the current snapshot on every lookup.
#[inline(never)]
pub fn interval_checked(
    ram: &RamList,
    me: &QsbrThread,
    hint: &mut MruHint,
    addrs: &[u64; ADDRS],
    range: std::ops::Range<usize>,
) -> usize {
    let mut local = *hint;
    let mut sink = 0usize;
    for i in range {
        if let Some(h) = ram.host_addr(me, &mut local, addrs[i & (ADDRS - 1)]) {
            sink = sink.wrapping_add(h as usize);
        }
    }
    *hint = local;
    sink
}
