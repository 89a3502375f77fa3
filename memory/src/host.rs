//! Host memory: anonymous mappings and raw views of them. This is the crate's only `unsafe`
//! code; everything else builds on the safe functions here.
//!
//! Guest RAM is shared with the guest (through KVM) and with every vCPU thread at once, so it
//! is never turned into a Rust `&[u8]`/`&mut [u8]`: it is accessed through vm-memory's
//! [`VolatileSlice`], whose accessors use volatile copies, and handed out as raw pointers for
//! callers that do their own `unsafe` (KVM, device DMA).

use std::io;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use vm_memory::VolatileSlice;

/// Every successful `munmap` of a RAM block in this process.
static UNMAPS: AtomicU64 = AtomicU64::new(0);

/// How many RAM block mappings this process has unmapped so far. Only with the `testing`
/// feature.
#[cfg(feature = "testing")]
pub fn total_unmaps() -> u64 {
    UNMAPS.load(Ordering::Relaxed)
}

/// The host page size (block bases and sizes must be multiples of it).
pub fn page_size() -> u64 {
    static PAGE: OnceLock<u64> = OnceLock::new();
    *PAGE.get_or_init(|| {
        // SAFETY: sysconf reads a configuration value; it has no memory-safety preconditions.
        let v = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if v > 0 {
            v as u64
        } else {
            4096
        }
    })
}

/// An address inside a host mapping. Only an address: dereferencing it is up to whoever turns
/// it back into a pointer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HostPtr(NonNull<u8>);

// SAFETY: a HostPtr is a plain address that this crate never dereferences except through a
// HostMapping (below), which is Sync; sharing or sending the number is harmless.
unsafe impl Send for HostPtr {}
// SAFETY: as above.
unsafe impl Sync for HostPtr {}

impl HostPtr {
    /// A placeholder that is never dereferenced nor offset (an empty [`MruHint`]'s).
    ///
    /// [`MruHint`]: crate::MruHint
    pub(crate) const DANGLING: HostPtr = HostPtr(NonNull::dangling());

    /// The address `offset` bytes further on, as a raw pointer (not dereferenced here).
    #[inline(always)]
    pub(crate) fn add(self, offset: u64) -> *mut u8 {
        self.0.as_ptr().wrapping_add(offset as usize)
    }
}

/// `madvise` advice this crate uses.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Advice {
    /// `MADV_HUGEPAGE`: back the range with transparent huge pages where possible.
    HugePage,
    /// `MADV_DONTDUMP`: leave the range out of core dumps.
    DontDump,
}

impl Advice {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Advice::HugePage => "MADV_HUGEPAGE",
            Advice::DontDump => "MADV_DONTDUMP",
        }
    }
}

/// A private anonymous read-write mapping, unmapped exactly once (on drop, or earlier by
/// [`unmap_shared`](Self::unmap_shared)).
pub(crate) struct HostMapping {
    ptr: HostPtr,
    len: usize,
    unmapped: AtomicBool,
}

impl std::fmt::Debug for HostMapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostMapping")
            .field("ptr", &self.ptr.0)
            .field("len", &self.len)
            .finish()
    }
}

/// The x86-64 huge page size that [`HostMapping::new`] aligns large mappings to.
const HUGE_PAGE: usize = 2 << 20;

impl HostMapping {
    /// Maps `len` bytes (a non-zero multiple of the page size) of zeroed anonymous memory.
    /// A mapping of 2 MiB or more starts on a 2 MiB boundary, so that transparent huge
    /// pages can back it and KVM can map them as huge pages (it needs the host address and
    /// the guest-physical address equally aligned).
    pub(crate) fn new(len: usize) -> io::Result<HostMapping> {
        if len == 0 || len > isize::MAX as usize - HUGE_PAGE {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let align = if len >= HUGE_PAGE { HUGE_PAGE } else { 0 };
        let total = len + align;
        // SAFETY: a new private anonymous mapping at an address the kernel chooses: it aliases
        // no existing memory. MAP_NORESERVE: guest RAM is touched lazily, like QEMU's.
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                total,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let start = p as usize;
        let head = if align == 0 {
            0
        } else {
            start.next_multiple_of(align) - start
        };
        let tail = total - head - len;
        // SAFETY: both ranges lie inside the mapping just made (head + len + tail == total)
        // and outside the [start + head, start + head + len) that is kept; nothing refers to
        // them yet.
        unsafe {
            if head > 0 {
                libc::munmap(p, head);
            }
            if tail > 0 {
                libc::munmap((start + head + len) as *mut libc::c_void, tail);
            }
        }
        let p = (start + head) as *mut libc::c_void;
        match NonNull::new(p as *mut u8) {
            Some(nn) => Ok(HostMapping {
                ptr: HostPtr(nn),
                len,
                unmapped: AtomicBool::new(false),
            }),
            None => {
                // A mapping at address 0 (possible only with vm.mmap_min_addr = 0): refuse it.
                // SAFETY: `p` is the mapping just created, of `len` bytes, used by nobody.
                unsafe { libc::munmap(p, len) };
                Err(io::Error::from_raw_os_error(libc::ENOMEM))
            }
        }
    }

    /// Applies `advice` to the whole mapping.
    pub(crate) fn advise(&self, advice: Advice) -> io::Result<()> {
        let a = match advice {
            Advice::HugePage => libc::MADV_HUGEPAGE,
            Advice::DontDump => libc::MADV_DONTDUMP,
        };
        // SAFETY: these two advices change only the kernel's bookkeeping for our own mapping
        // (THP eligibility, core-dump inclusion), never its contents or validity.
        let r = unsafe { libc::madvise(self.ptr.0.as_ptr().cast(), self.len, a) };
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    #[inline(always)]
    pub(crate) fn ptr(&self) -> HostPtr {
        self.ptr
    }

    /// A volatile view of `[offset, offset + len)`, or `None` if that is not inside the mapping.
    #[inline]
    pub(crate) fn volatile(&self, offset: usize, len: usize) -> Option<VolatileSlice<'_>> {
        let end = offset.checked_add(len)?;
        if end > self.len {
            return None;
        }
        // SAFETY: [offset, end) lies inside the mapping (checked above), and the mapping stays
        // mapped for as long as `&self` is borrowed: it is unmapped in `drop` (which needs
        // ownership) or by `unmap_shared`, whose caller promises that no view is used
        // afterwards. Every other user of guest RAM (the guest, other threads) is accessing
        // it concurrently, which is why the view is volatile.
        Some(unsafe { VolatileSlice::new(self.ptr.0.as_ptr().add(offset), len) })
    }

    /// A volatile view of the whole mapping.
    #[inline]
    pub(crate) fn full(&self) -> VolatileSlice<'_> {
        // SAFETY: exactly the mapped range; valid while `&self` is borrowed, as in `volatile`.
        unsafe { VolatileSlice::new(self.ptr.0.as_ptr(), self.len) }
    }

    /// Poisons (optionally) and unmaps the mapping; `false` if it was already unmapped.
    pub(crate) fn unmap(&mut self, poison: Option<u8>) -> bool {
        // SAFETY: `&mut self` proves that no view borrowed from this mapping is alive.
        unsafe { self.unmap_shared(poison) }
    }

    /// As [`unmap`](Self::unmap), through a shared reference.
    ///
    /// # Safety
    ///
    /// Nothing may access the mapping during or after this call: no [`VolatileSlice`] from
    /// [`volatile`](Self::volatile) and no raw pointer derived from [`ptr`](Self::ptr) may be
    /// used again, and `volatile` must not be called again.
    pub(crate) unsafe fn unmap_shared(&self, poison: Option<u8>) -> bool {
        if self.unmapped.swap(true, Ordering::AcqRel) {
            return false;
        }
        if let Some(byte) = poison {
            // SAFETY: the mapping is still mapped (we won the swap) and, by this function's
            // contract, nobody else accesses it any more.
            unsafe { ptr::write_bytes(self.ptr.0.as_ptr(), byte, self.len) };
        }
        // SAFETY: unmaps exactly the region `new` mapped, once (the swap above); by this
        // function's contract nothing uses it afterwards.
        let r = unsafe { libc::munmap(self.ptr.0.as_ptr().cast(), self.len) };
        if r != 0 {
            // Only possible with an invalid argument, which would be a bug here; the address
            // range is leaked rather than reused.
            log::error!(
                "munmap({:p}, {:#x}) failed: {}",
                self.ptr.0,
                self.len,
                io::Error::last_os_error()
            );
            return false;
        }
        UNMAPS.fetch_add(1, Ordering::Relaxed);
        true
    }
}

impl Drop for HostMapping {
    fn drop(&mut self) {
        self.unmap(None);
    }
}
