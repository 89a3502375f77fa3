//! Benchmark instruments, kept apart from the VMM's working parts:
//!
//! - [`lookup`]: the lookup device (ports 0x520–0x527) and the `--ram-lookup` designs it
//!   compares, the end-to-end benchmark of vCPU memory lookups (`scripts/bench-lookup.py`);
//! - [`hotplug`]: the timing of RAM hot-plug, the KVM slot ioctls' share and the VMM's own
//!   share of each `ram-add`/`ram-remove` (`query-memory`'s `hotplug`, `vmmctl ram-churn`).
//!
//! Nothing else in the VMM depends on them for its work: the VM only carries them.

pub mod hotplug;
pub mod lookup;

pub use hotplug::{percentile, HotplugTiming};
