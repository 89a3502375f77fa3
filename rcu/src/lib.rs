//! Userspace RCU with two kinds of reader in one domain.
//!
//! TODO: crate docs.

#![warn(missing_docs)]

mod cell;
mod domain;
mod event;
#[cfg(not(loom))]
mod local;
mod membarrier;
mod reclaim;
mod stats;
mod sync;

pub use cell::{RcuCell, Retired};
#[cfg(loom)]
pub use domain::{LoomGuard, LoomReader};
pub use domain::{QsbrThread, ReadGuard, ReadSide, ReaderKind, Rcu, RcuBuilder};
pub use event::Event;
pub use reclaim::{CallbackLock, GpToken};
pub use stats::RcuStats;
