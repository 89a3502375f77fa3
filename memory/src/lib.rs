//! Guest RAM for the VMM: [`RamBlock`]s of anonymous host memory, the RCU-published
//! [`RamList`] that vCPU threads look up with no lock, guest access helpers that never panic on
//! guest input, [`MemoryListener`]s that mirror blocks into KVM slots, and vm-memory's
//! `GuestMemory` on [`RamSnapshot`].
//!
//! # Reading (vCPU threads)
//!
//! ```
//! use memory::{BlockFlags, MruHint, RamBlock, RamList};
//!
//! let rcu = rcu::Rcu::new();
//! let ram = RamList::new(&rcu);
//! ram.add(RamBlock::new("low", 0, 0x10_0000, BlockFlags::empty())?)?;
//!
//! // A vCPU thread: a QSBR reader with its own MRU hint.
//! let mut me = rcu.register_qsbr();
//! let mut hint = MruHint::new();
//! let hva = ram.host_addr(&me, &mut hint, 0x1234).expect("RAM");
//! assert!(!hva.is_null());
//! // Many lookups between two quiescent states: check the proof once, then read.
//! let r = ram.reader(&me);
//! for gpa in (0..0x10_0000).step_by(0x1000) {
//!     assert!(r.host_addr(&mut hint, gpa).is_some());
//! }
//! let snap = ram.snapshot(&me);
//! snap.write_val(0x2000, 0xfeed_u32)?;
//! assert_eq!(snap.read_val::<u32>(0x2000)?, 0xfeed);
//! assert!(snap.read_val::<u32>(0x10_0000).is_err()); // one byte past the end
//! me.quiescent_state(); // every reference above must be dead by now (the compiler checks)
//! # Ok::<(), memory::Error>(())
//! ```
//!
//! # Writing
//!
//! Writers (`add`, `remove`, `replace`, `resize`) serialize on the list's writer mutex,
//! notify listeners, publish a new [`RamSnapshot`] and retire the old one with `call_rcu`; a
//! removed block's memory is unmapped by its `Drop` when the last snapshot holding it is
//! freed, i.e. after a grace period.
//!
//! # Unsafe code
//!
//! All of it is in the `host` module (mmap, madvise, munmap, volatile views), each block with
//! a `SAFETY` comment; plus the unmap in `block.rs` and, with the `testing` feature only,
//! `RamList::remove_unmap_early`.

#![warn(missing_docs)]

mod block;
mod error;
mod host;
mod list;
mod vm;

pub use block::{BlockFlags, BlockId, GuestRange, RamBlock, RamBlockBuilder, UnmapHook};
pub use error::{Error, ListenerError, Result};
pub use host::page_size;
#[cfg(feature = "testing")]
pub use host::total_unmaps;
pub use list::{
    ListenerId, MemoryListener, MruHint, RamList, RamListStats, RamReader, RamSnapshot, Ranges,
};
pub use vm_memory;
