//! [`RcuList`]: a singly linked list that readers walk with no lock.
//!
//! Writers serialize on the list's own mutex ([`RcuList::write`]) and publish every change
//! with one release store of a `next` (or `head`) pointer, so a reader walking the list sees
//! either the old or the new link, never a half-built node. A removed node is unlinked from
//! its predecessor but keeps its own `next`, so a reader standing on it walks on into the live
//! list; the node is freed through `call_rcu`, after every reader that might stand on it has
//! left its read-side section.

use crate::domain::ReadSide;
use crate::sync::{AtomicPtr, AtomicUsize, Ordering};
use crate::Rcu;
use std::marker::PhantomData;
use std::ptr;

struct Node<T> {
    next: AtomicPtr<Node<T>>,
    value: T,
}

/// An RCU-protected list of `T`. See the module docs.
pub struct RcuList<T: Send + Sync + 'static> {
    head: AtomicPtr<Node<T>>,
    len: AtomicUsize,
    writer: parking_lot::Mutex<()>,
    rcu: Rcu,
    /// The domain's key ([`Rcu::key`]), for the readers' check.
    key: u64,
    _owns: PhantomData<Box<Node<T>>>,
}

// SAFETY: nodes are shared with readers on other threads (T: Sync) and freed on the
// reclamation thread (T: Send); all links are atomics.
unsafe impl<T: Send + Sync + 'static> Send for RcuList<T> {}
// SAFETY: as above.
unsafe impl<T: Send + Sync + 'static> Sync for RcuList<T> {}

impl<T: Send + Sync + 'static> std::fmt::Debug for RcuList<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RcuList").field("len", &self.len()).finish()
    }
}

struct SendNode<T>(*mut Node<T>);
// SAFETY: an unlinked node is owned by whoever holds this; T: Send.
unsafe impl<T: Send> Send for SendNode<T> {}

impl<T: Send + Sync + 'static> RcuList<T> {
    /// An empty list protected by `rcu`'s domain.
    pub fn new_in(rcu: &Rcu) -> Self {
        RcuList {
            head: AtomicPtr::new(ptr::null_mut()),
            len: AtomicUsize::new(0),
            writer: parking_lot::Mutex::new(()),
            rcu: rcu.clone(),
            key: rcu.key(),
            _owns: PhantomData,
        }
    }

    /// An empty list in the process-wide domain.
    #[cfg(not(loom))]
    pub fn new() -> Self {
        Self::new_in(Rcu::global())
    }

    /// The number of elements (a snapshot; writers may change it at any time).
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Whether the list is empty (a snapshot).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Walks the list with no lock. Elements inserted or removed during the walk may or may
    /// not be seen; every element seen stays valid for the reader's borrow.
    ///
    /// # Panics
    ///
    /// If `reader` is a QSBR thread of another domain or an offline one. A
    /// [`ReadGuard`](crate::ReadGuard) of another domain aborts (see [`RcuCell::load`](crate::RcuCell::load)).
    #[track_caller]
    pub fn iter<'r, R: ReadSide + ?Sized>(&'r self, reader: &'r R) -> Iter<'r, T> {
        reader.check(self.key);
        Iter {
            next: self.head.load(Ordering::Acquire),
            _life: PhantomData,
        }
    }

    /// Takes the writer lock: every change goes through the returned [`ListWriter`].
    pub fn write(&self) -> ListWriter<'_, T> {
        ListWriter {
            list: self,
            _guard: self.writer.lock(),
        }
    }
}

#[cfg(not(loom))]
impl<T: Send + Sync + 'static> Default for RcuList<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Send + Sync + 'static> Drop for RcuList<T> {
    fn drop(&mut self) {
        let mut cur = self.head.load(Ordering::Relaxed);
        while !cur.is_null() {
            // SAFETY: dropping the list requires ownership, so no reader borrows it and every
            // linked node is ours (unlinked ones were handed to call_rcu).
            let node = unsafe { Box::from_raw(cur) };
            cur = node.next.load(Ordering::Relaxed);
        }
    }
}

/// A reader's walk over an [`RcuList`].
pub struct Iter<'r, T> {
    next: *mut Node<T>,
    _life: PhantomData<&'r T>,
}

impl<'r, T: 'r> Iterator for Iter<'r, T> {
    type Item = &'r T;

    #[inline]
    fn next(&mut self) -> Option<&'r T> {
        // SAFETY: a node reachable from the list when the reader loaded its link is freed only
        // after a grace period that waits for this reader, whose borrow bounds 'r.
        let node = unsafe { self.next.as_ref()? };
        self.next = node.next.load(Ordering::Acquire);
        Some(&node.value)
    }
}

/// Exclusive write access to an [`RcuList`] (holds its writer lock).
pub struct ListWriter<'a, T: Send + Sync + 'static> {
    list: &'a RcuList<T>,
    _guard: parking_lot::MutexGuard<'a, ()>,
}

impl<T: Send + Sync + 'static> ListWriter<'_, T> {
    fn new_node(value: T, next: *mut Node<T>) -> *mut Node<T> {
        Box::into_raw(Box::new(Node {
            next: AtomicPtr::new(next),
            value,
        }))
    }

    /// The link (head or some node's `next`) after which the predicate matches, or the last
    /// link when `pred` is None.
    fn find_link(&self, mut pred: impl FnMut(&T) -> bool) -> Option<&AtomicPtr<Node<T>>> {
        let mut link = &self.list.head;
        loop {
            let cur = link.load(Ordering::Relaxed);
            // SAFETY: we hold the writer lock; linked nodes are only freed after they are
            // unlinked, which needs the lock.
            let node = unsafe { cur.as_ref()? };
            if pred(&node.value) {
                return Some(link);
            }
            link = &node.next;
        }
    }

    fn last_link(&self) -> &AtomicPtr<Node<T>> {
        let mut link = &self.list.head;
        loop {
            let cur = link.load(Ordering::Relaxed);
            // SAFETY: as in `find_link`.
            match unsafe { cur.as_ref() } {
                None => return link,
                Some(node) => link = &node.next,
            }
        }
    }

    fn publish(&self, link: &AtomicPtr<Node<T>>, value: T) {
        let node = Self::new_node(value, link.load(Ordering::Relaxed));
        // Release: the node is fully built before a reader can reach it.
        link.store(node, Ordering::Release);
        self.list.len.fetch_add(1, Ordering::Relaxed);
    }

    /// Inserts at the head.
    pub fn push_front(&mut self, value: T) {
        self.publish(&self.list.head, value);
    }

    /// Inserts at the tail (walks the list).
    pub fn push_back(&mut self, value: T) {
        let link = self.last_link();
        self.publish(link, value);
    }

    /// Inserts after the first element matching `pred`; gives `value` back if none matches.
    pub fn insert_after(&mut self, pred: impl FnMut(&T) -> bool, value: T) -> Result<(), T> {
        match self.find_link(pred) {
            Some(link) => {
                // SAFETY: `find_link` returned the link that points at the matching node.
                let node = unsafe { &*link.load(Ordering::Relaxed) };
                self.publish(&node.next, value);
                Ok(())
            }
            None => Err(value),
        }
    }

    /// Removes the first element matching `pred`; it is dropped after a grace period.
    /// Returns whether one was found.
    pub fn remove_first(&mut self, pred: impl FnMut(&T) -> bool) -> bool {
        match self.find_link(pred) {
            Some(link) => {
                self.unlink(link);
                true
            }
            None => false,
        }
    }

    /// Removes every element for which `keep` returns false; returns how many.
    pub fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) -> usize {
        let mut removed = 0;
        while self.remove_first(|v| !keep(v)) {
            removed += 1;
        }
        removed
    }

    fn unlink(&self, link: &AtomicPtr<Node<T>>) {
        let cur = link.load(Ordering::Relaxed);
        // SAFETY: `link` points at a linked node (found under the writer lock).
        let next = unsafe { (*cur).next.load(Ordering::Relaxed) };
        // Readers already on `cur` keep following its (unchanged) `next`.
        link.store(next, Ordering::Release);
        self.list.len.fetch_sub(1, Ordering::Relaxed);
        let node = SendNode(cur);
        self.list.rcu.call_rcu(move || {
            let node = node;
            // SAFETY: unlinked before call_rcu, so after the grace period no reader can reach
            // it; it came from Box::into_raw in `new_node`.
            drop(unsafe { Box::from_raw(node.0) });
        });
    }

    /// Iterates under the writer lock (no read-side section needed).
    pub fn iter(&self) -> Iter<'_, T> {
        Iter {
            next: self.list.head.load(Ordering::Relaxed),
            _life: PhantomData,
        }
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}
