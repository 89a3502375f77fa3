//! Userspace RCU with two kinds of reader in one domain.
//!
//! Read-copy-update lets readers walk shared data with no lock and no atomic
//! read-modify-write, while writers publish a new version with one pointer store and free the
//! old one only after a *grace period*: a span of time after which no reader can still hold a
//! reference obtained before it began. This crate is the heart of the VMM: vCPU threads look
//! up guest memory and device buses through it, and the main loop dispatches fd handlers from
//! an RCU list.
//!
//! # Two kinds of reader, one domain
//!
//! * **QSBR threads** ([`Rcu::register_qsbr`] → [`QsbrThread`]) pay *nothing* per read: they
//!   promise to report a quiescent state regularly ([`QsbrThread::quiescent_state`], e.g. on
//!   every vCPU exit) and to go offline before they block ([`QsbrThread::offline_while`]
//!   around `KVM_RUN` or `poll`). References read through the handle borrow it, and every
//!   call that ends the read side takes `&mut self`, so the borrow checker enforces the
//!   promise.
//! * **Read-lock readers** ([`Rcu::read_lock`] → [`ReadGuard`]) are any other thread: the
//!   outermost lock stores one word into the thread's slot and issues a compiler barrier (the
//!   writer pays with `membarrier(2)`), or a full fence where membarrier is unavailable.
//!
//! Both kinds register a slot in the same registry, so one `synchronize` waits for both, and
//! data structures ([`RcuCell`], [`RcuList`]) accept either as proof of reading
//! ([`ReadSide`]).
//!
//! # The grace-period algorithm
//!
//! The domain has a 64-bit counter `gp`, odd, starting at 1 and incremented by 2 at the start
//! of every grace period. Every reader slot has an atomic `ctr`:
//!
//! * `ctr == 0`: the reader holds no reference (offline, or outside any section);
//! * otherwise `ctr` is the value of `gp` the reader read when it last went online, reported
//!   a quiescent state, or took its outermost read lock.
//!
//! Readers: QSBR online / quiescent state: `ctr = gp` (release), full fence. QSBR offline and
//! read unlock: `ctr = 0` (release), fence (full for QSBR, the slave fence for read-lock). Read
//! lock: `ctr = gp`, slave fence. After each of those the reader checks its `waiting` flag and
//! sets the domain's [`Event`] if a writer sleeps on it.
//!
//! `synchronize`: under the grace-period mutex, `gp += 2`, snapshot the registry (a reader
//! registering later happens after both, through the registry lock, so it reads the new `gp`
//! and sees the update — also those of callers sharing this grace period, which is why `gp`
//! must be stored *before* the snapshot), master fence (a full fence, or `membarrier` when the snapshot holds a read-lock reader
//! that relies on it), then wait until every slot of the snapshot has `ctr == 0 || ctr >= gp`. It polls a bounded number of passes, then sleeps: reset the event,
//! set the `waiting` flag of each reader still pending, master fence, re-check, wait. A reader
//! that leaves after the re-check finds its flag set and sets the event (reset earlier), so the
//! writer cannot miss the wake-up; readers make the system call only when a writer really
//! sleeps.
//!
//! ## Why one pass of a 64-bit counter suffices
//!
//! Classic urcu flips a one-bit phase and must wait twice: a reader may have read the old phase
//! just before the flip and store it just after the writer checked it, and with one bit that
//! stale value is indistinguishable from a current one. With a 64-bit counter that never wraps
//! (2^63 grace periods at one per nanosecond is 292 years), a stale value is just an *older*
//! number, and the only question is whether a reader that the writer does *not* wait for can
//! still see the old pointer. Take the writer's sequence `store ptr; gp += 2; F_w; load ctr`
//! and the reader's `store ctr; F_r; load ptr`, with `F_w`/`F_r` the master/slave fences (a
//! store-buffering pair). The writer skips a reader only if it loads `ctr == 0` or
//! `ctr >= gp_new`:
//!
//! * `ctr == 0`: the reader's store of `ctr` is not visible to the writer's load, so `F_r`
//!   follows `F_w` in the fences' total order, so the reader's later load of `ptr` sees the new
//!   pointer. If the reader had read an older `gp` before this, its stale `ctr` only makes a
//!   *later* grace period wait for it longer — never shorter.
//! * `ctr >= gp_new`: the reader read `gp` after the increment, which is ordered after the
//!   pointer store, so (again through the fences) its section began after the new pointer was
//!   published.
//!
//! Every other reader is waited for until it stores 0 or a newer `gp` with release semantics;
//! the writer's acquire fence after the wait makes every read of its section happen before the
//! caller frees anything. Nesting lives in the slot (only its owner touches it), so only the
//! outermost lock and unlock touch `ctr`.
//!
//! ## Sharing grace periods
//!
//! A caller fences, reads `gp = g` and needs the grace period numbered `g + 2` (any grace
//! period numbered `g` may have begun before the caller's stores). Under the mutex, if
//! `completed >= g + 2` another caller already ran one: return. Otherwise run it. Concurrent
//! callers thus share one grace period instead of queueing one each.
//!
//! # Reclamation
//!
//! [`Rcu::call_rcu`] and [`Rcu::defer_drop`] queue work for the domain's reclamation thread,
//! which batches callbacks, waits for one grace period per batch and runs the batch holding
//! the application's [`CallbackLock`]; [`Rcu::rcu_barrier`] waits for all earlier callbacks.
//! A high-water mark bounds the garbage: writers that outrun reclamation wait for it. Polling
//! ([`Rcu::start_poll`] / [`Rcu::poll`]) checks a grace period without blocking. Grace periods
//! that wait longer than the stall timeout log which reader holds them, once. See the
//! `reclaim` module for the details.
//!
//! # Proof
//!
//! `tests/loom.rs` model-checks the grace-period core with both reader kinds, the wake-up
//! protocol and the call_rcu hand-off under loom; building with `--cfg rcu_broken` (no reader
//! fence) or `--cfg rcu_broken_wakeup` (no writer fence before the re-check) makes loom fail,
//! and `--cfg rcu_broken_reclaim` makes the list stress test fail. The `rcutorture` binary
//! runs QEMU's and liburcu's pipeline torture test.
//!
//! # Example
//!
//! ```
//! use rcu::{Rcu, RcuCell};
//!
//! let rcu = Rcu::new();
//! let config = RcuCell::new_in(&rcu, Some(String::from("v1")));
//!
//! // Any thread: a read-side section.
//! {
//!     let guard = rcu.read_lock();
//!     assert_eq!(config.load(&guard).map(|s| s.as_str()), Some("v1"));
//! }
//!
//! // A vCPU-like thread: QSBR, free reads, a quiescent state now and then.
//! let mut me = rcu.register_qsbr();
//! assert_eq!(config.load(&me).map(|s| s.len()), Some(2));
//! me.quiescent_state();
//!
//! // A writer: publish, then free the old value after a grace period.
//! let old = config.store(Some(String::from("v2"))).unwrap();
//! assert_eq!(*old.synchronize_qsbr(&mut me), "v1");
//! ```

#![warn(missing_docs)]

mod cell;
mod domain;
mod event;
#[cfg(not(loom))]
mod fork;
mod list;
#[cfg(not(loom))]
mod local;
mod membarrier;
mod reclaim;
mod stats;
mod sync;

pub use cell::{CellReader, RcuCell, Retired};
#[cfg(loom)]
pub use domain::{LoomGuard, LoomReader};
pub use domain::{QsbrThread, Rcu, RcuBuilder, ReadGuard, ReadSide, ReaderKind};
pub use event::Event;
pub use list::{Iter, ListWriter, RcuList};
pub use reclaim::{CallbackLock, GpToken};
pub use stats::RcuStats;
