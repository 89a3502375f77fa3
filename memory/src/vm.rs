//! vm-memory integration: [`RamBlock`] is a `GuestMemoryRegion`, [`RamSnapshot`] a
//! `GuestMemoryBackend` (and so, through vm-memory's blanket impls, a `GuestMemory` with
//! `Bytes<GuestAddress>`), so rust-vmm crates such as linux-loader can load kernels into it.
//!
//! vm-memory's accessors do not know about [`BlockFlags::READ_ONLY`](crate::BlockFlags): like
//! QEMU's ROM loading they write read-only blocks too (the host mapping is writable; only the
//! guest's view is read-only). Guest-initiated accesses should go through
//! [`RamSnapshot::write_bytes`] and friends, which refuse.

use crate::block::RamBlock;
use crate::list::RamSnapshot;
use vm_memory::bitmap::BS;
use vm_memory::{
    Address, GuestAddress, GuestMemoryBackend, GuestMemoryError, GuestMemoryRegion,
    GuestMemoryRegionBytes, GuestMemoryResult, GuestUsize, MemoryRegionAddress, VolatileSlice,
};

impl GuestMemoryRegion for RamBlock {
    type B = ();

    fn len(&self) -> GuestUsize {
        self.size()
    }

    fn start_addr(&self) -> GuestAddress {
        GuestAddress(self.gpa())
    }

    fn bitmap(&self) -> BS<'_, Self::B> {}

    fn get_host_address(&self, addr: MemoryRegionAddress) -> GuestMemoryResult<*mut u8> {
        self.check_address(addr)
            .map(|a| self.host().add(a.raw_value()))
            .ok_or(GuestMemoryError::InvalidBackendAddress)
    }

    fn get_slice(
        &self,
        offset: MemoryRegionAddress,
        count: usize,
    ) -> GuestMemoryResult<VolatileSlice<'_, BS<'_, Self::B>>> {
        usize::try_from(offset.raw_value())
            .ok()
            .and_then(|off| self.volatile_slice().subslice(off, count).ok())
            .ok_or(GuestMemoryError::InvalidBackendAddress)
    }
}

impl GuestMemoryRegionBytes for RamBlock {}

impl GuestMemoryBackend for RamSnapshot {
    type R = RamBlock;

    fn num_regions(&self) -> usize {
        self.len()
    }

    fn find_region(&self, addr: GuestAddress) -> Option<&RamBlock> {
        self.find(addr.raw_value())
    }

    fn iter(&self) -> impl Iterator<Item = &RamBlock> {
        self.blocks().iter().map(|b| &**b)
    }
}
