//! The system calls of the virtio-blk backend that need `unsafe`: `pread`/`pwrite` straight
//! between the image file and guest memory (no bounce buffer), `flock` and `fallocate`. All of
//! the crate's `unsafe` is here.

use memory::GuestRange;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// The file offset as `off_t`, or `InvalidInput` past `i64::MAX`.
fn off(offset: u64) -> io::Result<libc::off_t> {
    libc::off_t::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// Reads `range.len()` bytes of `file` at `offset` straight into the guest range. Reading past
/// the end of the file is an `UnexpectedEof` error (the caller checks the capacity first, so
/// this only happens if someone else shrank the file).
pub(crate) fn read_into_guest(file: &File, range: &GuestRange<'_>, offset: u64) -> io::Result<()> {
    transfer(
        range,
        offset,
        io::ErrorKind::UnexpectedEof,
        |ptr, len, pos| {
            // SAFETY: `ptr..ptr + len` lies inside the range (see `transfer`), which is mapped,
            // writable host memory for its lifetime (it lies in one RamBlock kept alive by the
            // caller's snapshot or read-side section), so the kernel writes only inside it. No
            // Rust reference to that memory is created: the kernel writes through a raw pointer,
            // as the guest itself may at any time.
            unsafe { libc::pread(file.as_raw_fd(), ptr.cast(), len, pos) }
        },
    )
}

/// Writes the guest range to `file` at `offset`.
pub(crate) fn write_from_guest(file: &File, range: &GuestRange<'_>, offset: u64) -> io::Result<()> {
    transfer(range, offset, io::ErrorKind::WriteZero, |ptr, len, pos| {
        // SAFETY: as in `read_into_guest`: `ptr..ptr + len` lies inside the range, mapped for
        // its lifetime, and the kernel only reads it.
        unsafe { libc::pwrite(file.as_raw_fd(), ptr.cast(), len, pos) }
    })
}

/// The loop around `pread`/`pwrite`: calls `op(ptr, len, pos)` for what is left of the range
/// (`ptr` inside it, `len` bytes to its end, `pos` the file offset) until all of it is done,
/// retrying on EINTR; a call that moves 0 bytes is the error `zero`.
fn transfer(
    range: &GuestRange<'_>,
    offset: u64,
    zero: io::ErrorKind,
    mut op: impl FnMut(*mut u8, usize, libc::off_t) -> isize,
) -> io::Result<()> {
    let mut done = 0usize;
    while done < range.len() {
        let pos = off(offset
            .checked_add(done as u64)
            .ok_or(io::ErrorKind::InvalidInput)?)?;
        // `done < len`: the pointer stays inside the range's mapping.
        let ptr = range.host_ptr().wrapping_add(done);
        match op(ptr, range.len() - done, pos) {
            0 => return Err(zero.into()),
            n if n < 0 => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            n => done += n as usize,
        }
    }
    Ok(())
}

/// `flock(LOCK_EX | LOCK_NB)` (or `LOCK_SH` when not `exclusive`). `WouldBlock` means another
/// open file description holds a conflicting lock.
pub(crate) fn try_lock(file: &File, exclusive: bool) -> io::Result<()> {
    let op = if exclusive {
        libc::LOCK_EX
    } else {
        libc::LOCK_SH
    } | libc::LOCK_NB;
    // SAFETY: flock on a file descriptor we own; no memory is involved.
    if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Deallocates `[offset, offset + len)` of `file` (reads return zeros), keeping its size.
pub(crate) fn punch_hole(file: &File, offset: u64, len: u64) -> io::Result<()> {
    let (offset, len) = (off(offset)?, off(len)?);
    // SAFETY: fallocate on a file descriptor we own; no memory is involved.
    let r = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            offset,
            len,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
