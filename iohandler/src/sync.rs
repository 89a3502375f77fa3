//! Atomics for the call gate, switched to loom's models under `--cfg loom` so that
//! `tests/loom.rs` explores every interleaving of the real protocol (the rest of the crate is
//! not built under loom).

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicBool, AtomicU64};
#[cfg(loom)]
pub(crate) use loom::thread::yield_now;

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{fence, AtomicBool, AtomicU64};

pub(crate) use std::sync::atomic::Ordering;
