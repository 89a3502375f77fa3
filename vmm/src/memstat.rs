//! Memory accounting for the report: the process's RSS and the guest memory the guest
//! touched (resident pages of the guest mappings, from `mincore(2)`), so that the VMM's own
//! overhead is their difference.

use memory::RamSnapshot;

fn status_kib(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// VmRSS of this process in KiB (0 if /proc is unavailable).
pub fn rss_kib() -> u64 {
    status_kib("VmRSS:")
}

/// The anonymous (private, not file-backed) part of the RSS in KiB: guest RAM the guest
/// touched plus the VMM's own heap and stacks. The rest of the RSS is the binary's and the
/// C library's pages, shared by every VMM process on the host.
pub fn anon_kib() -> u64 {
    status_kib("RssAnon:")
}

/// Resident KiB of all guest RAM blocks.
pub fn resident_kib(mem: &RamSnapshot) -> u64 {
    let page = 4096usize;
    let mut pages = 0u64;
    for block in mem.blocks() {
        let host = block.host_ptr();
        let len = block.size() as usize;
        let mut vec = vec![0u8; len.div_ceil(page)];
        // SAFETY: `host..host+len` is one live mapping owned by `mem` (page aligned, as mmap
        // returns), and `vec` has one byte per page of it, as mincore requires.
        let rc = unsafe { libc::mincore(host as *mut libc::c_void, len, vec.as_mut_ptr()) };
        if rc == 0 {
            pages += vec.iter().filter(|b| **b & 1 != 0).count() as u64;
        }
    }
    pages * (page as u64) / 1024
}
