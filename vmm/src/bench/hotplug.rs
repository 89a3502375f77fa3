//! RAM hot-plug timing: how long the KVM slot ioctls took, and the VMM's own share (the
//! rest) of each `ram-add` and `ram-remove`.
//!
//! [`KvmSlots`](crate::kvm::vm::KvmSlots), the RAM list's listener, runs every
//! `KVM_SET_USER_MEMORY_REGION` through [`HotplugTiming::slot_ioctl`]; the control server
//! brackets each hot-plug operation with [`HotplugTiming::start`] and
//! [`HotplugTiming::record`]. `query-memory` reports [`HotplugTiming::stats`].

use parking_lot::Mutex;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// How many recent operations the statistics keep.
const KEEP: usize = 4096;

/// The hot-plug timing of one VM.
#[derive(Default)]
pub struct HotplugTiming {
    /// Nanoseconds spent inside `KVM_SET_USER_MEMORY_REGION` so far.
    slot_ioctl_ns: AtomicU64,
    /// The VMM's own share of each of the last [`KEEP`] operations, in ns.
    shares: Mutex<VecDeque<u64>>,
}

/// An operation being timed (from [`HotplugTiming::start`]).
#[derive(Clone, Copy, Debug)]
pub struct Started {
    at: Instant,
    slot_ioctl_ns: u64,
}

impl HotplugTiming {
    /// Runs one slot ioctl, adding its time to the total.
    pub fn slot_ioctl<R>(&self, ioctl: impl FnOnce() -> R) -> R {
        let t = Instant::now();
        let r = ioctl();
        self.slot_ioctl_ns
            .fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
        r
    }

    /// The slot ioctls' total so far, in ns.
    pub fn slot_ioctl_ns(&self) -> u64 {
        self.slot_ioctl_ns.load(Ordering::Relaxed)
    }

    /// Starts timing an operation now.
    pub fn start(&self) -> Started {
        self.start_at(Instant::now())
    }

    /// Starts timing an operation that began at `at` (its mmap, say, came first).
    pub fn start_at(&self, at: Instant) -> Started {
        Started {
            at,
            slot_ioctl_ns: self.slot_ioctl_ns(),
        }
    }

    /// Records a finished operation's VMM share: its time minus the slot ioctls' time.
    pub fn record(&self, op: Started) {
        let total = op.at.elapsed().as_nanos() as u64;
        let kvm = self.slot_ioctl_ns().saturating_sub(op.slot_ioctl_ns);
        let mut shares = self.shares.lock();
        if shares.len() == KEEP {
            shares.pop_front();
        }
        shares.push_back(total.saturating_sub(kvm));
    }

    /// `query-memory`'s `hotplug` object: operations counted, the VMM share's p50 and p99
    /// in µs, and the slot ioctls' total in ms.
    pub fn stats(&self) -> Value {
        let mut v: Vec<u64> = self.shares.lock().iter().copied().collect();
        v.sort_unstable();
        let pct = |p| percentile(&v, p).map(|n| n as f64 / 1e3);
        json!({"ops": v.len(), "vmm-share-p50-us": pct(50), "vmm-share-p99-us": pct(99),
               "kvm-slot-ioctl-total-ms": self.slot_ioctl_ns() as f64 / 1e6})
    }
}

/// The `p`th percentile (0-100) of `sorted` (ascending): the element at `len * p / 100`,
/// clamped to the last; `None` when empty. Shared with `vmmctl`'s statistics.
pub fn percentile(sorted: &[u64], p: usize) -> Option<u64> {
    let i = (sorted.len() * p / 100).min(sorted.len().checked_sub(1)?);
    sorted.get(i).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_picks_len_times_p_over_100_clamped() {
        assert_eq!(percentile(&[], 50), None);
        assert_eq!(percentile(&[7], 99), Some(7));
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50), Some(51));
        assert_eq!(percentile(&v, 99), Some(100));
        assert_eq!(percentile(&v, 100), Some(100));
    }

    #[test]
    fn the_vmm_share_excludes_the_slot_ioctls_and_only_the_last_ones_are_kept() {
        let h = HotplugTiming::default();
        let op = h.start();
        h.slot_ioctl(|| std::thread::sleep(std::time::Duration::from_millis(20)));
        h.record(op);
        let s = h.stats();
        assert_eq!(s["ops"], 1);
        assert!(s["kvm-slot-ioctl-total-ms"].as_f64().unwrap() >= 20.0);
        // The 20 ms sleep was the ioctl's: the VMM's share is far below it.
        assert!(s["vmm-share-p50-us"].as_f64().unwrap() < 10_000.0, "{s}");
        for _ in 0..KEEP + 10 {
            h.record(h.start());
        }
        assert_eq!(h.stats()["ops"], KEEP);
    }
}
