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
//!   Hot loops can check their proof once per section with [`RcuCell::reader`], after which
//!   every load is a bare acquire load.
//!
//! Both kinds register a slot in the same registry, so one `synchronize` waits for both, and
//! data structures ([`RcuCell`], [`RcuList`]) accept either as proof of reading
//! ([`ReadSide`]).
//!
//! # The grace-period algorithm
//!
//! The domain has a 64-bit counter `gp`, starting at `STEP` (256) and incremented by `STEP`
//! at the start of every grace period. Every reader slot has an atomic `ctr`:
//!
//! * `ctr == 0`: the reader holds no reference (offline, or outside any section);
//! * otherwise `ctr` is the value of `gp` the reader read when it last went online, reported
//!   a quiescent state, or took its outermost read lock, plus (read-lock readers only) the
//!   nesting depth, 1 to 127, in the low bits, and bit 7 set in a domain without membarrier.
//!   Because `gp` is a multiple of `STEP`, `ctr` compares with any `gp` exactly as the
//!   snapshot does, and lock and unlock touch one word. The outermost unlock of a membarrier
//!   domain is the only one whose low bits are exactly 1, so its inline path needs no load
//!   of the domain's mode.
//!
//! Readers load `gp` with **acquire** ordering. QSBR online / quiescent state: `ctr = gp`
//! (release), full fence. QSBR offline and outermost read unlock: `ctr = 0` (release), then
//! the reader's fence (full for QSBR; for read-lock readers the *slave* fence below).
//! Outermost read lock: `ctr = gp + 1` (`gp + 0x81` without membarrier), slave fence.
//! Nested lock and unlock only add or subtract 1. After leaving, a reader checks its
//! `waiting` flag and sets the domain's [`Event`] if a writer sleeps on it.
//!
//! The slave fence is a full fence, or, when the domain uses `membarrier(2)` (the default
//! where the kernel has it), only a compiler barrier: the writer's *master* fence is then
//! `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)`, which makes every running thread of the
//! process execute a full barrier somewhere between the call's start and its return (a
//! sleeping thread gets one from the context switch).
//!
//! `synchronize`: a full fence, then read `gp` with a **read-modify-write** (`fetch_add(0)`,
//! acquire-release) to learn the target grace period; under the grace-period mutex,
//! `gp += STEP` (again a read-modify-write), snapshot the registry, master fence, then wait until
//! every slot of the snapshot has `ctr == 0 || ctr >= gp`. It polls for a short time budget,
//! then sleeps: reset the event, set the `waiting` flag of each reader still pending, master
//! fence, re-check, wait. A reader that leaves after the re-check finds its flag set and sets
//! the event (reset earlier), so the writer cannot miss the wake-up; readers make the system
//! call only when a writer really sleeps. A reader registering after the snapshot does so
//! under the registry lock, so it happens after the `gp` increment and reads the new `gp`.
//!
//! ## Why it is correct
//!
//! With a 64-bit counter that never wraps (2^56 grace periods at ten million per second, far
//! more than `synchronize` can run, last 228 years), one pass suffices where classic urcu flips a one-bit phase twice: a stale `ctr` is
//! just an *older* number, which only makes a grace period wait longer. The question is only
//! whether a reader the writer does *not* wait for can still hold the old pointer. Writer:
//! `store ptr; F; rmw gp (g -> g'); M_w; load ctr`. Reader: `load.acquire gp; store ctr;
//! S_r; load ptr`. The writer skips a reader only if it loads `ctr == 0` or `ctr >= g'`.
//!
//! * **`ctr >= g'`**: the reader's acquire load of `gp` read the increment (or a later one).
//!   The increment is a release read-modify-write after the writer's pointer store, so that
//!   store happens before the reader's pointer load: it sees the new pointer. A caller that
//!   *shares* this grace period (it read `g` with its own read-modify-write after storing its
//!   pointer, and returns when the grace period numbered `g'` completes) is covered too: its
//!   read-modify-write precedes the increment in `gp`'s modification order, so the increment
//!   acquires it, and the chain carries the sharer's store to the reader. This is why `gp`
//!   is read and incremented by read-modify-writes and loaded with acquire: with a relaxed
//!   load, a weakly ordered CPU (Arm, POWER, RISC-V) may satisfy the reader's pointer load
//!   before its `gp` load, store the new `gp` into `ctr` and keep the old pointer, and with
//!   the membarrier path nothing on the reader's side would forbid it (on x86, TSO forbids
//!   it; there the acquire load is the same instruction).
//! * **`ctr == 0`** (or an older value the writer did not see replaced): the reader's store
//!   of `ctr` was not visible to the writer's load. With fences on both sides, `S_r` and
//!   `M_w` are a store-buffering pair: `S_r` follows `M_w` in the fences' total order, so
//!   the reader's pointer load sees the new pointer. With membarrier, the reader's barrier
//!   `B` (forced by `M_w`) falls somewhere in its program between `M_w`'s start and end. If
//!   `B` came after the reader's `ctr` store, the writer (after `M_w`) would see that store;
//!   so `B` came before it, hence before the pointer load, and `B` follows the writer's
//!   pointer store: the pointer load sees the new pointer.
//!
//! Every other reader is waited for until it stores 0 or a newer `gp` with release semantics;
//! the writer's acquire fence after the wait makes every read of its section happen before the
//! caller frees anything. A nested lock or unlock changes only the depth bits, which never
//! move `ctr` across a multiple of `STEP`, so the writer's comparison is unaffected.
//!
//! ## Sharing grace periods
//!
//! A caller reads `gp = g` (read-modify-write, above) and needs the grace period numbered
//! `g + STEP` (any grace period numbered `g` may have begun before the caller's stores). Under
//! the mutex, if `completed >= g + STEP` another caller already ran one: return. Otherwise run it.
//! Concurrent callers thus share one grace period instead of queueing one each.
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
//! `tests/loom.rs` model-checks the grace-period core with both reader kinds, in both fence
//! modes (membarrier is emulated: a full fence on the writer, each read-lock reader forced
//! through a full fence at a point of its program the interleaving chooses, a full fence),
//! the wake-up protocol, the call_rcu hand-off (including a callback queued while a grace
//! period is in progress), the throttle's wake-up, the `pending` count and the thread-exit
//! revocation of a QSBR handle. Each protection has a deliberately broken variant
//! (`--cfg rcu_broken`, `rcu_broken_wakeup`, `rcu_broken_reclaim`, `rcu_broken_memb`,
//! `rcu_broken_batch`, `rcu_broken_exit`, `rcu_broken_throttle`, `rcu_broken_pending`) that
//! `tests/loom-broken.sh` shows the models catch; `rcu_broken_reclaim` is also caught by the
//! list stress test. The `rcutorture` binary runs QEMU's and liburcu's pipeline torture test.
//!
//! # Fork
//!
//! The child of `fork()` keeps only the forking thread's registrations, abandons a grace
//! period another thread was in, and restarts reclamation lazily (see the `fork` module).
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

pub use cell::{CellReader, QsbrCellReader, RcuCell, Retired};
#[cfg(loom)]
pub use domain::{LoomGuard, LoomReader};
pub use domain::{QsbrThread, Rcu, RcuBuilder, ReadGuard, ReadSide, ReaderKind};
pub use event::Event;
pub use list::{Iter, ListWriter, RcuList};
pub use reclaim::{CallbackLock, GpToken};
pub use stats::RcuStats;
