//! virtio-blk on a raw image file.
//!
//! # Backend
//!
//! The image is a regular file opened once ([`Block::open`]) and locked with
//! `flock(LOCK_EX | LOCK_NB)` (`LOCK_SH` for a read-only disk), so two VMMs cannot write one
//! image. Its capacity is the file size in 512-byte sectors, rounded down: a trailing partial
//! sector is invisible to the guest.
//!
//! Requests are served on the caller's thread (the VMM's main loop), synchronously:
//! `pread`/`pwrite` go straight between the file and guest RAM (the kernel copies into the
//! guest's pages through the host mapping; no bounce buffer), `FLUSH` is `fdatasync`, `DISCARD`
//! punches a hole (`fallocate(PUNCH_HOLE | KEEP_SIZE)`), `GET_ID` returns a 20-byte serial.
//!
//! # Request layout
//!
//! A request is one descriptor chain: the device-readable descriptors come first, then the
//! device-writable ones. The readable bytes start with the 16-byte header (`type`, `ioprio`,
//! `sector`), followed by the data of `OUT` and `DISCARD`; the writable bytes are the data of
//! `IN` and `GET_ID`, and the **last byte of the last descriptor** is the status byte. The
//! parser ([`parse_request`]) makes no other framing assumption (the header may span
//! descriptors, the status may share its descriptor with data).
//!
//! # Guest errors
//!
//! A request whose chain has a usable status byte (the last descriptor is device-writable,
//! non-empty and in writable RAM; see [`status_byte`]) but is otherwise wrong (buffers outside
//! RAM, lengths that overflow or are not whole sectors, sectors past the end, data in the
//! wrong direction, writes to a read-only disk) completes with `VIRTIO_BLK_S_IOERR`; an
//! unknown type with `VIRTIO_BLK_S_UNSUPP`. Without a usable status byte the chain is returned
//! with a used length of 0 and logged. A chain that is cut short (loop, index outside the
//! table) is the transport's business: it marks the device DEVICE_NEEDS_RESET.

use super::{sys, Descriptor, VirtioDevice};
use crate::Error;
use memory::RamSnapshot;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;
use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO,
    VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_ID_BYTES, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK,
    VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID,
    VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
};
use virtio_bindings::virtio_ids::VIRTIO_ID_BLOCK;

/// The virtio-blk sector size (fixed by the spec, whatever `blk_size` says).
pub const SECTOR_SIZE: u64 = 512;
/// The length of the config space the device exposes (up to the discard fields, plus the
/// write-zeroes fields read as zero).
pub const BLK_CONFIG_LEN: usize = 60;
/// The one queue's maximum size.
const QUEUE_SIZE: u16 = 256;
/// The header of every request.
const HEADER_LEN: u64 = 16;
/// One discard segment: sector (u64), num_sectors (u32), flags (u32).
const DISCARD_SEG_LEN: u64 = 16;
/// `max_discard_sectors` (2 GiB) and `max_discard_seg`.
const MAX_DISCARD_SECTORS: u32 = 1 << 22;
const MAX_DISCARD_SEG: u32 = 16;

/// A contiguous guest-physical buffer of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Its guest-physical address.
    pub gpa: u64,
    /// Its length in bytes (never 0).
    pub len: u32,
}

/// The request types the device knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestKind {
    /// `VIRTIO_BLK_T_IN`: read sectors into the data buffers.
    In,
    /// `VIRTIO_BLK_T_OUT`: write the data buffers to sectors.
    Out,
    /// `VIRTIO_BLK_T_FLUSH`.
    Flush,
    /// `VIRTIO_BLK_T_GET_ID`: the 20-byte serial.
    GetId,
    /// `VIRTIO_BLK_T_DISCARD`.
    Discard,
    /// Any other type (answered with `VIRTIO_BLK_S_UNSUPP`).
    Unsupported(u32),
}

/// A parsed request: what [`parse_request`] makes of a descriptor chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The type.
    pub kind: RequestKind,
    /// The first sector (IN/OUT).
    pub sector: u64,
    /// The data buffers, in order: device-readable for OUT and DISCARD, device-writable for
    /// IN and GET_ID. All of them are in RAM (writable RAM if the device writes them).
    pub data: Vec<Segment>,
    /// The total length of `data`.
    pub data_len: u64,
    /// The status byte's guest-physical address.
    pub status: u64,
}

fn bad(msg: impl Into<String>) -> Error {
    Error::BadRequest(msg.into())
}

/// Whether `[gpa, gpa + len)` is RAM (and writable RAM if `write`).
fn check_ram(mem: &RamSnapshot, gpa: u64, len: u64, write: bool) -> Result<(), Error> {
    let len = usize::try_from(len).map_err(|_| bad("buffer length overflows"))?;
    for r in mem.ranges(gpa, len) {
        let r = r.map_err(|e| bad(format!("buffer {gpa:#x}+{len:#x}: {e}")))?;
        if write && r.block().is_read_only() {
            return Err(bad(format!(
                "buffer {gpa:#x}+{len:#x} is in read-only memory"
            )));
        }
    }
    Ok(())
}

/// The status byte of a chain, if it has a usable one: the last byte of the last descriptor,
/// which must be device-writable, non-empty, not followed by more of the chain, and in
/// writable RAM. Pure (reads nothing but the descriptors and the RAM map).
pub fn status_byte(chain: &[Descriptor], mem: &RamSnapshot) -> Option<u64> {
    let last = chain.last()?;
    if last.has_next() || !last.is_write_only() || last.len() == 0 {
        return None;
    }
    let gpa = last.addr().0.checked_add(u64::from(last.len()) - 1)?;
    check_ram(mem, gpa, 1, true).ok()?;
    Some(gpa)
}

/// Parses one request from its descriptor chain (as the chain walk found it), reading the
/// header from guest memory. Pure apart from reading `mem`: no file I/O, no guest writes.
/// Checks every buffer against the RAM map; does not check sectors against the capacity
/// (that is the device's, see [`Block`]).
pub fn parse_request(chain: &[Descriptor], mem: &RamSnapshot) -> Result<Request, Error> {
    let Some(last) = chain.last() else {
        return Err(bad("empty descriptor chain"));
    };
    if last.has_next() {
        return Err(bad("the descriptor chain is cut short (loop or bad index)"));
    }
    let status = status_byte(chain, mem).ok_or_else(|| {
        bad("the last descriptor is not a device-writable, non-empty status byte in RAM")
    })?;
    // Split into readable and writable segments; writable ones must come last.
    let mut readable: Vec<Segment> = Vec::new();
    let mut writable: Vec<Segment> = Vec::new();
    let (mut rlen, mut wlen) = (0u64, 0u64);
    for (i, d) in chain.iter().enumerate() {
        let mut len = d.len();
        if i + 1 == chain.len() {
            len -= 1; // the status byte (len >= 1: checked by status_byte)
        }
        let write = d.is_write_only();
        if !write && !writable.is_empty() {
            return Err(bad(
                "a device-readable descriptor follows a device-writable one",
            ));
        }
        if len == 0 {
            continue;
        }
        let gpa = d.addr().0;
        if gpa.checked_add(u64::from(len) - 1).is_none() {
            return Err(bad(format!("buffer {gpa:#x}+{len:#x} wraps around")));
        }
        check_ram(mem, gpa, u64::from(len), write)?;
        let seg = Segment { gpa, len };
        if write {
            wlen += u64::from(len);
            writable.push(seg);
        } else {
            rlen += u64::from(len);
            readable.push(seg);
        }
    }
    if rlen < HEADER_LEN {
        return Err(bad(format!(
            "{rlen} readable bytes, less than the 16-byte header"
        )));
    }
    // The header: the first 16 readable bytes, possibly spread over descriptors.
    let mut header = [0u8; HEADER_LEN as usize];
    let mut got = 0usize;
    let mut rest: Vec<Segment> = Vec::new();
    for s in &readable {
        let take = (header.len() - got).min(s.len as usize);
        if take > 0 {
            mem.read_bytes(s.gpa, &mut header[got..got + take])
                .map_err(|e| bad(format!("reading the header: {e}")))?;
            got += take;
        }
        if (take as u32) < s.len {
            rest.push(Segment {
                gpa: s.gpa + take as u64,
                len: s.len - take as u32,
            });
        }
    }
    let ty = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let mut sector_bytes = [0u8; 8];
    sector_bytes.copy_from_slice(&header[8..16]);
    let sector = u64::from_le_bytes(sector_bytes);
    let rest_len = rlen - HEADER_LEN;
    let (kind, data, data_len) = match ty {
        VIRTIO_BLK_T_IN => {
            if rest_len != 0 {
                return Err(bad("IN request with device-readable data"));
            }
            (RequestKind::In, writable, wlen)
        }
        VIRTIO_BLK_T_OUT => {
            if wlen != 0 {
                return Err(bad("OUT request with device-writable data"));
            }
            (RequestKind::Out, rest, rest_len)
        }
        VIRTIO_BLK_T_FLUSH => (RequestKind::Flush, Vec::new(), 0),
        VIRTIO_BLK_T_GET_ID => (RequestKind::GetId, writable, wlen),
        VIRTIO_BLK_T_DISCARD => {
            if wlen != 0 {
                return Err(bad("DISCARD request with device-writable data"));
            }
            (RequestKind::Discard, rest, rest_len)
        }
        t => (RequestKind::Unsupported(t), Vec::new(), 0),
    };
    if matches!(kind, RequestKind::In | RequestKind::Out) && data_len % SECTOR_SIZE != 0 {
        return Err(bad(format!(
            "data length {data_len} is not a multiple of 512"
        )));
    }
    Ok(Request {
        kind,
        sector,
        data,
        data_len,
        status,
    })
}

/// A virtio-blk device on a raw image file. See the module docs.
#[derive(Debug)]
pub struct Block {
    name: String,
    file: File,
    read_only: bool,
    capacity: u64,
    serial: [u8; VIRTIO_BLK_ID_BYTES as usize],
    config: [u8; BLK_CONFIG_LEN],
    queue_sizes: [u16; 1],
    discard: bool,
}

impl Block {
    /// Opens and locks the image at `path` (read-write unless `read_only`). Errors:
    /// [`Error::DiskOpen`] (missing, unreadable, ...), [`Error::DiskNotRegular`],
    /// [`Error::DiskLocked`] (another process holds a conflicting lock).
    pub fn open(path: &Path, read_only: bool) -> Result<Block, Error> {
        let shown = path.display().to_string();
        let open_err = |source: io::Error| Error::DiskOpen {
            path: shown.clone(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(path)
            .map_err(open_err)?;
        let meta = file.metadata().map_err(open_err)?;
        if !meta.is_file() {
            return Err(Error::DiskNotRegular { path: shown });
        }
        sys::try_lock(&file, !read_only).map_err(|e| {
            if e.kind() == io::ErrorKind::WouldBlock {
                Error::DiskLocked {
                    path: shown.clone(),
                }
            } else {
                open_err(e)
            }
        })?;
        let capacity = meta.len() / SECTOR_SIZE;
        if meta.len() % SECTOR_SIZE != 0 {
            log::warn!(
                "disk image {shown}: its size {} is not a multiple of 512; the last {} bytes \
                 are not visible to the guest",
                meta.len(),
                meta.len() % SECTOR_SIZE
            );
        }
        // The default serial: the file name, cut to 20 bytes (zero-padded).
        let mut serial = [0u8; VIRTIO_BLK_ID_BYTES as usize];
        let base = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let n = base.len().min(serial.len());
        serial[..n].copy_from_slice(&base.as_bytes()[..n]);
        let discard = !read_only;
        let mut config = [0u8; BLK_CONFIG_LEN];
        config[0..8].copy_from_slice(&capacity.to_le_bytes());
        // seg_max: a chain holds at most QUEUE_SIZE descriptors, two of them header/status.
        config[12..16].copy_from_slice(&u32::from(QUEUE_SIZE - 2).to_le_bytes());
        config[20..24].copy_from_slice(&(SECTOR_SIZE as u32).to_le_bytes());
        if discard {
            config[36..40].copy_from_slice(&MAX_DISCARD_SECTORS.to_le_bytes());
            config[40..44].copy_from_slice(&MAX_DISCARD_SEG.to_le_bytes());
            config[44..48].copy_from_slice(&1u32.to_le_bytes());
        }
        Ok(Block {
            name: format!("virtio-blk {shown}"),
            file,
            read_only,
            capacity,
            serial,
            config,
            queue_sizes: [QUEUE_SIZE],
            discard,
        })
    }

    /// Replaces the serial returned by GET_ID (cut to 20 bytes).
    pub fn with_serial(mut self, serial: &str) -> Block {
        self.serial = [0; VIRTIO_BLK_ID_BYTES as usize];
        let n = serial.len().min(self.serial.len());
        self.serial[..n].copy_from_slice(&serial.as_bytes()[..n]);
        self
    }

    /// The capacity in 512-byte sectors (the file size rounded down).
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Whether the disk is read-only.
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// The file offset of `sector` for `len` bytes, if the range is inside the disk.
    fn offset(&self, sector: u64, len: u64) -> Result<u64, Error> {
        let end = len
            .div_ceil(SECTOR_SIZE)
            .checked_add(sector)
            .filter(|&end| end <= self.capacity);
        match end {
            Some(_) => Ok(sector * SECTOR_SIZE),
            None => Err(bad(format!(
                "sectors {sector}+{} past the end ({} sectors)",
                len.div_ceil(SECTOR_SIZE),
                self.capacity
            ))),
        }
    }

    /// Runs a parsed request; the status and the number of data bytes written to the guest.
    fn execute(&self, req: &Request, mem: &RamSnapshot) -> Result<u32, Error> {
        let io = |what: &'static str| move |source| Error::Io { what, source };
        match req.kind {
            RequestKind::In | RequestKind::Out => {
                let mut pos = self.offset(req.sector, req.data_len)?;
                for s in &req.data {
                    for r in mem.ranges(s.gpa, s.len as usize) {
                        let r = r.map_err(|e| bad(e.to_string()))?;
                        if req.kind == RequestKind::In {
                            sys::read_into_guest(&self.file, &r, pos)
                                .map_err(io("reading the disk image"))?;
                        } else {
                            if self.read_only {
                                return Err(bad("write to a read-only disk"));
                            }
                            sys::write_from_guest(&self.file, &r, pos)
                                .map_err(io("writing the disk image"))?;
                        }
                        pos += r.len() as u64;
                    }
                }
                Ok(if req.kind == RequestKind::In {
                    req.data_len as u32
                } else {
                    0
                })
            }
            RequestKind::Flush => {
                if !self.read_only {
                    self.file
                        .sync_data()
                        .map_err(io("fdatasync of the disk image"))?;
                }
                Ok(0)
            }
            RequestKind::GetId => {
                let mut done = 0usize;
                for s in &req.data {
                    if done == self.serial.len() {
                        break;
                    }
                    let n = (s.len as usize).min(self.serial.len() - done);
                    mem.write_bytes(s.gpa, &self.serial[done..done + n])
                        .map_err(|e| bad(e.to_string()))?;
                    done += n;
                }
                Ok(done as u32)
            }
            RequestKind::Discard => {
                if !self.discard {
                    return Err(bad("discard on a read-only disk"));
                }
                if !req.data_len.is_multiple_of(DISCARD_SEG_LEN) {
                    return Err(bad("discard data is not whole 16-byte segments"));
                }
                if req.data_len / DISCARD_SEG_LEN > u64::from(MAX_DISCARD_SEG) {
                    return Err(bad("too many discard segments"));
                }
                let mut bytes = vec![0u8; req.data_len as usize];
                let mut done = 0usize;
                for s in &req.data {
                    let end = done + s.len as usize;
                    mem.read_bytes(s.gpa, &mut bytes[done..end])
                        .map_err(|e| bad(e.to_string()))?;
                    done = end;
                }
                for seg in bytes.chunks_exact(DISCARD_SEG_LEN as usize) {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&seg[0..8]);
                    let sector = u64::from_le_bytes(b);
                    let num = u32::from_le_bytes([seg[8], seg[9], seg[10], seg[11]]);
                    let flags = u32::from_le_bytes([seg[12], seg[13], seg[14], seg[15]]);
                    if flags != 0 || num > MAX_DISCARD_SECTORS {
                        return Err(bad("discard segment with flags or too many sectors"));
                    }
                    let len = u64::from(num) * SECTOR_SIZE;
                    let off = self.offset(sector, len)?;
                    sys::punch_hole(&self.file, off, len).map_err(io("discarding"))?;
                }
                Ok(0)
            }
            RequestKind::Unsupported(_) => Ok(0),
        }
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_BLOCK
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn features(&self) -> u64 {
        let mut f = (1u64 << VIRTIO_BLK_F_SEG_MAX)
            | (1 << VIRTIO_BLK_F_BLK_SIZE)
            | (1 << VIRTIO_BLK_F_FLUSH);
        if self.read_only {
            f |= 1 << VIRTIO_BLK_F_RO;
        }
        if self.discard {
            f |= 1 << VIRTIO_BLK_F_DISCARD;
        }
        f
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = offset
                .checked_add(i as u64)
                .and_then(|o| usize::try_from(o).ok())
                .and_then(|o| self.config.get(o))
                .copied()
                .unwrap_or(0);
        }
    }

    fn process_chain(
        &self,
        _queue: usize,
        chain: &[Descriptor],
        mem: &RamSnapshot,
    ) -> Result<u32, Error> {
        let req = match parse_request(chain, mem) {
            Ok(req) => req,
            Err(e) => {
                log::debug!("{}: {e}", self.name);
                return Ok(match status_byte(chain, mem) {
                    Some(gpa) if mem.write_val(gpa, VIRTIO_BLK_S_IOERR as u8).is_ok() => 1,
                    _ => 0,
                });
            }
        };
        let (status, written) = match req.kind {
            RequestKind::Unsupported(_) => (VIRTIO_BLK_S_UNSUPP, 0),
            _ => match self.execute(&req, mem) {
                Ok(n) => (VIRTIO_BLK_S_OK, n),
                Err(e) => {
                    log::debug!("{}: {e}", self.name);
                    (VIRTIO_BLK_S_IOERR, 0)
                }
            },
        };
        if mem.write_val(req.status, status as u8).is_err() {
            return Ok(written);
        }
        Ok(written.saturating_add(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use memory::{BlockFlags, RamBlock, RamList};

    fn d(addr: u64, len: u32, flags: u16) -> Descriptor {
        Descriptor::new(addr, len, flags, 0)
    }
    const N: u16 = 1;
    const W: u16 = 2;

    fn with_mem(f: impl FnOnce(&RamSnapshot)) {
        let rcu = rcu::Rcu::new();
        let ram = RamList::new(&rcu);
        ram.add(RamBlock::new("ram", 0, 0x10000, BlockFlags::empty()).unwrap())
            .unwrap();
        let g = rcu.read_lock();
        f(ram.snapshot(&g));
    }

    fn header(mem: &RamSnapshot, gpa: u64, ty: u32, sector: u64) {
        mem.write_val(gpa, ty).unwrap();
        mem.write_val(gpa + 8, sector).unwrap();
    }

    #[test]
    fn status_shares_the_last_descriptor_with_data() {
        with_mem(|mem| {
            header(mem, 0x100, VIRTIO_BLK_T_IN, 7);
            let r = parse_request(&[d(0x100, 16, N), d(0x1000, 513, W)], mem).unwrap();
            assert_eq!(r.kind, RequestKind::In);
            assert_eq!(r.sector, 7);
            assert_eq!(
                r.data,
                vec![Segment {
                    gpa: 0x1000,
                    len: 512
                }]
            );
            assert_eq!(r.status, 0x1200);
        });
    }

    #[test]
    fn direction_and_framing_errors() {
        with_mem(|mem| {
            header(mem, 0x100, VIRTIO_BLK_T_OUT, 0);
            // OUT with device-writable data.
            let c = [d(0x100, 16, N), d(0x1000, 512, N | W), d(0x2000, 1, W)];
            assert!(parse_request(&c, mem).is_err());
            assert_eq!(status_byte(&c, mem), Some(0x2000));
            // Header too short.
            let c = [d(0x100, 8, N), d(0x2000, 1, W)];
            assert!(parse_request(&c, mem).is_err());
            // Cut chain: no status, no request.
            let c = [d(0x100, 16, N), d(0x2000, 1, W | N)];
            assert!(parse_request(&c, mem).is_err());
            assert_eq!(status_byte(&c, mem), None);
            assert!(parse_request(&[], mem).is_err());
            // OUT data not whole sectors.
            let c = [d(0x100, 16, N), d(0x1000, 100, N), d(0x2000, 1, W)];
            assert!(parse_request(&c, mem).is_err());
            let c = [d(0x100, 16, N), d(0x1000, 1024, N), d(0x2000, 1, W)];
            assert_eq!(parse_request(&c, mem).unwrap().data_len, 1024);
        });
    }
}
