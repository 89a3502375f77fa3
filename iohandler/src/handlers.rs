//! fd handlers: the records, the RCU-published token index, and registration.
//!
//! A handler record ([`Handler`]) is immutable once published except for its [`Gate`]. It is
//! reachable from two RCU-protected places:
//!
//! * the [`RcuList`](rcu::RcuList) of all handlers (the registry; any thread can walk it with
//!   a read-side guard, e.g. [`LoopHandle::handler_fds`](crate::LoopHandle::handler_fds));
//! * the **token index**, a two-level table of [`RcuCell`]s indexed by the slot part of the
//!   mio token. epoll reports readiness per token, so dispatch finds a handler with one
//!   lock-free load instead of walking the list (a walk is O(handlers) per event; with 1,000
//!   fds and one ready that is a thousand pointer chases per wake-up).
//!
//! A token is `generation << SLOT_BITS | slot`; the generation is never reused, so an event
//! that epoll queued for a handler that has since been replaced or removed (and whose slot was
//! reused) does not match the new record and is dropped.
//!
//! Writers (registration, removal) serialize on [`FdState`]'s mutex; they never take the BQL.
//! Removal unpublishes the record from both places, closes its gate (so it is never called
//! again, see [`crate::gate`]) and lets RCU free it: the list node and the index cell are both
//! retired through `call_rcu`, so the record (and the closures it owns) is dropped after a
//! grace period, on the `call_rcu` thread, under the BQL.

use crate::gate::Gate;
use crate::Counters;
use parking_lot::Mutex;
use rcu::{QsbrThread, Rcu, RcuCell};
use std::collections::HashMap;
use std::os::fd::RawFd;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

/// A handler callback: runs on the main-loop thread, holding the BQL.
pub type Callback = Box<dyn FnMut() + Send + 'static>;

pub(crate) const SLOT_BITS: u32 = 20;
pub(crate) const SLOT_MASK: u64 = (1 << SLOT_BITS) - 1;
const CHUNK_BITS: u32 = 10;
const CHUNK: usize = 1 << CHUNK_BITS;
const CHUNKS: usize = 1 << (SLOT_BITS - CHUNK_BITS);
/// How many fd handlers one loop can hold at once.
pub const MAX_HANDLERS: usize = CHUNK * CHUNKS;

/// One registered fd handler.
pub(crate) struct Handler {
    pub(crate) fd: RawFd,
    pub(crate) token: u64,
    pub(crate) gate: Gate,
    pub(crate) read: Option<Mutex<Callback>>,
    pub(crate) write: Option<Mutex<Callback>>,
    counters: Arc<Counters>,
}

impl Handler {
    fn new(
        fd: RawFd,
        token: u64,
        read: Option<Callback>,
        write: Option<Callback>,
        counters: &Arc<Counters>,
    ) -> Self {
        counters.handler_records.fetch_add(1, Ordering::Relaxed);
        Handler {
            fd,
            token,
            gate: Gate::new(),
            read: read.map(Mutex::new),
            write: write.map(Mutex::new),
            counters: counters.clone(),
        }
    }
}

impl Drop for Handler {
    fn drop(&mut self) {
        self.counters
            .handler_records
            .fetch_sub(1, Ordering::Relaxed);
    }
}

type Chunk = Box<[RcuCell<Arc<Handler>>]>;

/// token slot -> live handler, published under RCU. Chunks are allocated on first use and
/// never freed before the loop, so only the cells need RCU.
pub(crate) struct SlotTable {
    rcu: Rcu,
    chunks: Box<[OnceLock<Chunk>]>,
}

impl SlotTable {
    pub(crate) fn new(rcu: &Rcu) -> Self {
        SlotTable {
            rcu: rcu.clone(),
            chunks: (0..CHUNKS).map(|_| OnceLock::new()).collect(),
        }
    }

    /// Reader side: the handler in `slot`, valid until the reader's next quiescent state.
    #[inline]
    pub(crate) fn get<'r>(&'r self, slot: usize, reader: &'r QsbrThread) -> Option<&'r Handler> {
        let chunk = self.chunks.get(slot >> CHUNK_BITS)?.get()?;
        chunk[slot & (CHUNK - 1)].load(reader).map(|h| &**h)
    }

    /// Writer side (under `FdState`'s mutex): the cell of `slot`, allocating its chunk.
    fn cell(&self, slot: usize) -> &RcuCell<Arc<Handler>> {
        let chunk = self.chunks[slot >> CHUNK_BITS].get_or_init(|| {
            (0..CHUNK)
                .map(|_| RcuCell::new_in(&self.rcu, None))
                .collect()
        });
        &chunk[slot & (CHUNK - 1)]
    }

    fn publish(&self, slot: usize, h: Option<Arc<Handler>>) {
        if let Some(old) = self.cell(slot).store(h) {
            // Freed after a grace period, on the call_rcu thread, under the BQL.
            old.defer_drop();
        }
    }
}

/// One fd's entry in the writers' table.
pub(crate) struct Entry {
    pub(crate) slot: usize,
    pub(crate) handler: Arc<Handler>,
}

/// The writers' view (under a mutex the loop never takes).
#[derive(Default)]
pub(crate) struct FdState {
    pub(crate) by_fd: HashMap<RawFd, Entry>,
    free_slots: Vec<usize>,
    next_slot: usize,
    next_generation: u64,
}

impl FdState {
    fn alloc(&mut self) -> Option<(usize, u64)> {
        let slot = match self.free_slots.pop() {
            Some(s) => s,
            None if self.next_slot < MAX_HANDLERS => {
                // Slot 0 is never used: token 0 belongs to the loop's waker.
                self.next_slot += 1;
                if self.next_slot == MAX_HANDLERS {
                    return None;
                }
                self.next_slot
            }
            None => return None,
        };
        self.next_generation += 1;
        Some((slot, (self.next_generation << SLOT_BITS) | slot as u64))
    }
}

/// What registration needs from the loop.
pub(crate) struct Registrar<'a> {
    pub(crate) registry: &'a mio::Registry,
    pub(crate) list: &'a rcu::RcuList<Arc<Handler>>,
    pub(crate) slots: &'a SlotTable,
    pub(crate) counters: &'a Arc<Counters>,
}

fn interest(read: bool, write: bool) -> mio::Interest {
    match (read, write) {
        (true, true) => mio::Interest::READABLE | mio::Interest::WRITABLE,
        (false, true) => mio::Interest::WRITABLE,
        _ => mio::Interest::READABLE,
    }
}

fn is_gone(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::EBADF))
}

impl Registrar<'_> {
    /// Installs, replaces or (with no callbacks) removes the handler of `fd`. Returns the
    /// record that was replaced or removed, already unpublished and gated closed; the caller
    /// waits for a call of it still in flight *after* releasing `st` (see `gate`).
    pub(crate) fn set(
        &self,
        st: &mut FdState,
        fd: RawFd,
        read: Option<Callback>,
        write: Option<Callback>,
    ) -> crate::Result<Option<Arc<Handler>>> {
        if fd < 0 {
            return Err(crate::Error::BadFd(fd));
        }
        if read.is_none() && write.is_none() {
            let Some(old) = st.by_fd.remove(&fd) else {
                return Ok(None);
            };
            if let Err(e) = self.registry.deregister(&mut mio::unix::SourceFd(&fd)) {
                if is_gone(&e) {
                    log::debug!("fd {fd} was closed before its handler was removed: {e}");
                } else {
                    log::warn!("deregistering fd {fd} from the main loop failed: {e}");
                }
            }
            return Ok(Some(self.retire(st, old)));
        }
        let (slot, token) = st.alloc().ok_or(crate::Error::TooManyHandlers {
            max: MAX_HANDLERS - 1,
        })?;
        let interest = interest(read.is_some(), write.is_some());
        let h = Arc::new(Handler::new(fd, token, read, write, self.counters));
        // Publish before epoll can report the token.
        self.slots.publish(slot, Some(h.clone()));
        self.list.write().push_front(h.clone());
        let mut src = mio::unix::SourceFd(&fd);
        let tok = mio::Token(token as usize);
        let replacing = st.by_fd.contains_key(&fd);
        let res = if replacing {
            // MOD re-arms the edge: a ready fd is reported again, to the new token.
            match self.registry.reregister(&mut src, tok, interest) {
                // The fd was closed and its number reused without removing the handler.
                Err(e) if is_gone(&e) => self
                    .registry
                    .register(&mut src, tok, interest)
                    .map_err(|e| ("register", e)),
                r => r.map_err(|e| ("reregister", e)),
            }
        } else {
            self.registry
                .register(&mut src, tok, interest)
                .map_err(|e| ("register", e))
        };
        if let Err((op, source)) = res {
            let _ = self.retire(st, Entry { slot, handler: h });
            return Err(crate::Error::Register { op, fd, source });
        }
        let old = st.by_fd.insert(fd, Entry { slot, handler: h });
        Ok(old.map(|old| self.retire(st, old)))
    }

    /// Closes the record's gate, unpublishes it from the index and the list (both free it
    /// through call_rcu) and frees its slot for reuse (the token's generation keeps stale
    /// events of the old record from matching a new one).
    pub(crate) fn retire(&self, st: &mut FdState, e: Entry) -> Arc<Handler> {
        e.handler.gate.close();
        self.slots.publish(e.slot, None);
        self.list
            .write()
            .remove_first(|h| Arc::ptr_eq(h, &e.handler));
        st.free_slots.push(e.slot);
        e.handler
    }
}
