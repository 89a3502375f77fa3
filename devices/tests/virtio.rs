//! virtio-mmio + virtio-blk, driven as a guest driver would: registers through
//! `BusDevice::read`/`write`, a split virtqueue laid out in guest RAM, requests served by
//! `process_queue` as the main loop would, against a temporary image file.

use devices::virtio::{Block, VirtioMmio, NOTIFY_OFFSET};
use devices::{Access, BusDevice, Error};
use memory::{BlockFlags, RamBlock, RamList};
use rcu::{QsbrThread, Rcu};
use std::sync::Arc;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
use vmm_sys_util::tempfile::TempFile;

const RAM: u64 = 0x10_0000;
const ROM: u64 = 0x10_0000; // a read-only block right after RAM
const QSIZE: u16 = 16;
const DESC: u64 = 0x1000;
const AVAIL: u64 = 0x2000;
const USED: u64 = 0x3000;
const HDR: u64 = 0x8000;
const DATA: u64 = 0x1_0000;
const STATUS: u64 = 0x9000;

const NEXT: u16 = 1;
const WRITE: u16 = 2;

const F_VERSION_1: u64 = 1 << 32;
const F_EVENT_IDX: u64 = 1 << 29;
const F_RO: u64 = 1 << 5;
const F_FLUSH: u64 = 1 << 9;

const S_ACK: u32 = 1;
const S_DRIVER: u32 = 2;
const S_DRIVER_OK: u32 = 4;
const S_FEATURES_OK: u32 = 8;
const S_NEEDS_RESET: u32 = 64;

const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const T_FLUSH: u32 = 4;
const T_GET_ID: u32 = 8;

const OK: u8 = 0;
const IOERR: u8 = 1;
const UNSUPP: u8 = 2;

/// Image size: 64 sectors plus a partial one (invisible to the guest).
const IMAGE_LEN: u64 = 64 * 512 + 100;

struct Harness {
    _rcu: Rcu,
    ram: Arc<RamList>,
    dev: VirtioMmio,
    me: QsbrThread,
    img: TempFile,
    next_desc: u16,
    avail_idx: u16,
    features: u64,
}

fn image() -> TempFile {
    let img = TempFile::new().expect("temp file");
    let pattern: Vec<u8> = (0..IMAGE_LEN).map(|i| (i % 251) as u8).collect();
    std::fs::write(img.as_path(), pattern).expect("write image");
    img
}

impl Harness {
    fn new(read_only: bool) -> Harness {
        Self::with_image(image(), read_only)
    }

    fn with_image(img: TempFile, read_only: bool) -> Harness {
        let rcu = Rcu::new();
        let ram = Arc::new(RamList::new(&rcu));
        ram.add(RamBlock::new("ram", 0, RAM, BlockFlags::empty()).unwrap())
            .unwrap();
        ram.add(RamBlock::new("rom", ROM, 0x1000, BlockFlags::READ_ONLY).unwrap())
            .unwrap();
        let blk = Block::open(img.as_path(), read_only)
            .unwrap()
            .with_serial("test-serial-0123456789");
        let irq = EventFd::new(EFD_NONBLOCK).unwrap();
        let dev = VirtioMmio::new(Arc::new(blk), ram.clone(), irq).unwrap();
        let me = rcu.register_qsbr();
        Harness {
            _rcu: rcu,
            ram,
            dev,
            me,
            img,
            next_desc: 0,
            avail_idx: 0,
            features: 0,
        }
    }

    fn rd(&self, off: u64) -> u32 {
        let mut b = [0u8; 4];
        self.dev.read(&Access::new(0, &self.me), off, &mut b);
        u32::from_le_bytes(b)
    }

    fn wr(&self, off: u64, v: u32) {
        assert!(self
            .dev
            .write(&Access::new(0, &self.me), off, &v.to_le_bytes())
            .is_none());
    }

    fn mem_write(&self, gpa: u64, b: &[u8]) {
        self.ram.snapshot(&self.me).write_bytes(gpa, b).unwrap();
    }

    fn mem_read(&self, gpa: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        self.ram.snapshot(&self.me).read_bytes(gpa, &mut v).unwrap();
        v
    }

    fn u16_at(&self, gpa: u64) -> u16 {
        let b = self.mem_read(gpa, 2);
        u16::from_le_bytes([b[0], b[1]])
    }

    fn device_features(&self) -> u64 {
        self.wr(0x14, 0);
        let lo = self.rd(0x10) as u64;
        self.wr(0x14, 1);
        let hi = self.rd(0x10) as u64;
        (hi << 32) | lo
    }

    /// Negotiates `want & offered`, returns whether FEATURES_OK stuck.
    fn negotiate(&mut self, want: u64) -> bool {
        self.wr(0x70, 0);
        self.wr(0x70, S_ACK);
        self.wr(0x70, S_ACK | S_DRIVER);
        let f = want & self.device_features();
        self.features = f;
        self.wr(0x24, 0);
        self.wr(0x20, f as u32);
        self.wr(0x24, 1);
        self.wr(0x20, (f >> 32) as u32);
        self.wr(0x70, S_ACK | S_DRIVER | S_FEATURES_OK);
        self.rd(0x70) & S_FEATURES_OK != 0
    }

    fn setup_queue(&self, size: u32) {
        self.wr(0x30, 0);
        assert_eq!(self.rd(0x34), 256, "QueueNumMax");
        self.wr(0x38, size);
        self.wr(0x80, DESC as u32);
        self.wr(0x84, 0);
        self.wr(0x90, AVAIL as u32);
        self.wr(0x94, 0);
        self.wr(0xa0, USED as u32);
        self.wr(0xa4, 0);
        self.wr(0x44, 1);
    }

    /// The whole driver bring-up with `want` features; returns the harness ready for requests.
    fn up(&mut self, want: u64) {
        // Clean rings (a reset must leave the device usable from scratch).
        self.mem_write(AVAIL, &[0; 64]);
        self.mem_write(USED, &[0; 160]);
        self.next_desc = 0;
        self.avail_idx = 0;
        assert!(self.negotiate(want));
        self.setup_queue(QSIZE as u32);
        self.wr(0x70, S_ACK | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK);
        assert_eq!(
            self.rd(0x70),
            S_ACK | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK
        );
    }

    fn write_desc(&self, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let mut d = [0u8; 16];
        d[0..8].copy_from_slice(&addr.to_le_bytes());
        d[8..12].copy_from_slice(&len.to_le_bytes());
        d[12..14].copy_from_slice(&flags.to_le_bytes());
        d[14..16].copy_from_slice(&next.to_le_bytes());
        self.mem_write(DESC + 16 * u64::from(i % QSIZE), &d);
    }

    /// Puts `head` in the avail ring and publishes it.
    fn publish(&mut self, head: u16) {
        let slot = AVAIL + 4 + 2 * u64::from(self.avail_idx % QSIZE);
        self.mem_write(slot, &head.to_le_bytes());
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.mem_write(AVAIL + 2, &self.avail_idx.to_le_bytes());
    }

    /// Lays out a chain of (addr, len, flags) descriptors (NEXT added between them) and
    /// publishes it; returns the head.
    fn submit(&mut self, descs: &[(u64, u32, u16)]) -> u16 {
        let head = self.next_desc % QSIZE;
        for (k, &(addr, len, flags)) in descs.iter().enumerate() {
            let i = (self.next_desc + k as u16) % QSIZE;
            let more = k + 1 < descs.len();
            let flags = flags | if more { NEXT } else { 0 };
            self.write_desc(i, addr, len, flags, (i + 1) % QSIZE);
        }
        self.next_desc = self.next_desc.wrapping_add(descs.len() as u16);
        self.publish(head);
        head
    }

    /// Notifies through the bus (no ioeventfd) and runs the main loop's handler.
    fn kick(&self) -> Result<(), Error> {
        self.wr(NOTIFY_OFFSET, 0);
        self.dev.process_queue(0, &self.me)
    }

    fn used_idx(&self) -> u16 {
        self.u16_at(USED + 2)
    }

    /// The used element of request number `n` (0-based): (id, len).
    fn used(&self, n: u16) -> (u32, u32) {
        let b = self.mem_read(USED + 4 + 8 * u64::from(n % QSIZE), 8);
        (
            u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        )
    }

    fn header(&self, ty: u32, sector: u64) {
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&ty.to_le_bytes());
        h[8..16].copy_from_slice(&sector.to_le_bytes());
        self.mem_write(HDR, &h);
        self.mem_write(STATUS, &[0xee]);
    }

    fn status(&self) -> u8 {
        self.mem_read(STATUS, 1)[0]
    }

    /// A read of `len` bytes at `sector` into DATA; returns (status, used len).
    fn read(&mut self, sector: u64, len: u32) -> (u8, u32) {
        self.header(T_IN, sector);
        let n = self.used_idx();
        self.submit(&[(HDR, 16, 0), (DATA, len, WRITE), (STATUS, 1, WRITE)]);
        self.kick().unwrap();
        assert_eq!(self.used_idx(), n.wrapping_add(1));
        (self.status(), self.used(n).1)
    }

    fn write(&mut self, sector: u64, data: &[u8]) -> (u8, u32) {
        self.header(T_OUT, sector);
        self.mem_write(DATA, data);
        let n = self.used_idx();
        self.submit(&[
            (HDR, 16, 0),
            (DATA, data.len() as u32, 0),
            (STATUS, 1, WRITE),
        ]);
        self.kick().unwrap();
        assert_eq!(self.used_idx(), n.wrapping_add(1));
        (self.status(), self.used(n).1)
    }

    fn image(&self) -> Vec<u8> {
        std::fs::read(self.img.as_path()).unwrap()
    }

    fn irq_fired(&self) -> bool {
        self.dev.irq_eventfd().read().is_ok()
    }
}

fn pattern(off: u64, len: usize) -> Vec<u8> {
    (off..off + len as u64).map(|i| (i % 251) as u8).collect()
}

#[test]
fn identification_registers_and_config() {
    let h = Harness::new(false);
    assert_eq!(h.rd(0x00), 0x7472_6976);
    assert_eq!(h.rd(0x04), 2);
    assert_eq!(h.rd(0x08), 2, "block device");
    let f = h.device_features();
    assert_ne!(f & F_VERSION_1, 0);
    assert_ne!(f & F_EVENT_IDX, 0);
    assert_ne!(f & F_FLUSH, 0);
    assert_eq!(f & F_RO, 0);
    // capacity: 64 sectors, the partial one rounded away.
    let mut cap = [0u8; 8];
    h.dev.read(&Access::new(0, &h.me), 0x100, &mut cap);
    assert_eq!(u64::from_le_bytes(cap), 64);
    assert_eq!(h.rd(0x100 + 20), 512, "blk_size");
    // A config read past the end reads zeros.
    assert_eq!(h.rd(0x1fc), 0);
}

#[test]
fn any_access_width_and_offset_is_harmless() {
    let h = Harness::new(false);
    let a = Access::new(0, &h.me);
    for off in (0..0x200u64).chain([u64::MAX - 3, u64::MAX]) {
        for len in [0usize, 1, 2, 3, 4, 8, 16] {
            let mut b = vec![0xa5; len];
            h.dev.read(&a, off, &mut b);
            // Writes of anything but 4 bytes to registers are ignored; 4-byte writes of
            // garbage must not panic either (they may change state).
            assert!(h.dev.write(&a, off, &b).is_none());
        }
    }
    assert!(h.dev.process_queue(0, &h.me).is_ok() || h.dev.status() & S_NEEDS_RESET != 0);
    assert!(h.dev.process_queue(7, &h.me).is_ok(), "no such queue");
}

#[test]
fn features_ok_requires_version_1_and_offered_bits() {
    let mut h = Harness::new(false);
    assert!(!h.negotiate(F_FLUSH), "legacy (no VERSION_1) refused");
    h.wr(0x70, 0);
    assert_eq!(h.rd(0x70), 0, "reset");
    // A feature the device does not offer (bit 33, ACCESS_PLATFORM is 33).
    h.wr(0x70, S_ACK | S_DRIVER);
    h.wr(0x24, 1);
    h.wr(0x20, 1 | 2);
    h.wr(0x70, S_ACK | S_DRIVER | S_FEATURES_OK);
    assert_eq!(h.rd(0x70) & S_FEATURES_OK, 0);
    assert!(h.negotiate(F_VERSION_1 | F_FLUSH));
    // DRIVER_OK without FEATURES_OK is not taken.
    h.wr(0x70, 0);
    h.wr(0x70, S_ACK | S_DRIVER | S_DRIVER_OK);
    assert_eq!(h.rd(0x70) & S_DRIVER_OK, 0);
}

#[test]
fn read_write_round_trip_against_the_file() {
    let mut h = Harness::new(false);
    h.up(F_VERSION_1 | F_FLUSH);
    let (st, len) = h.read(3, 1024);
    assert_eq!((st, len), (OK, 1025), "data + status byte");
    assert_eq!(h.mem_read(DATA, 1024), pattern(3 * 512, 1024));

    let data: Vec<u8> = (0..2048u32).map(|i| (i * 7 + 1) as u8).collect();
    assert_eq!(h.write(10, &data), (OK, 1));
    let img = h.image();
    assert_eq!(&img[10 * 512..14 * 512], &data[..]);
    assert_eq!(
        &img[9 * 512..10 * 512],
        &pattern(9 * 512, 512)[..],
        "neighbour intact"
    );
    assert_eq!(img.len() as u64, IMAGE_LEN);

    h.mem_write(DATA, &[0; 2048]);
    assert_eq!(h.read(10, 2048), (OK, 2049));
    assert_eq!(h.mem_read(DATA, 2048), data);
    // The last sector is readable, one more is not.
    assert_eq!(h.read(63, 512).0, OK);
}

#[test]
fn data_split_over_descriptors_and_header_over_two() {
    let mut h = Harness::new(false);
    h.up(F_VERSION_1);
    h.header(T_IN, 1);
    h.submit(&[
        (HDR, 10, 0),
        (HDR + 10, 6, 0),
        (DATA, 512, WRITE),
        (DATA + 0x1000, 512, WRITE),
        (STATUS, 1, WRITE),
    ]);
    h.kick().unwrap();
    assert_eq!(h.status(), OK);
    assert_eq!(h.used(0).1, 1025);
    assert_eq!(h.mem_read(DATA, 512), pattern(512, 512));
    assert_eq!(h.mem_read(DATA + 0x1000, 512), pattern(1024, 512));
}

#[test]
fn flush_get_id_and_unsupported() {
    let mut h = Harness::new(false);
    h.up(F_VERSION_1 | F_FLUSH);
    h.header(T_FLUSH, 0);
    h.submit(&[(HDR, 16, 0), (STATUS, 1, WRITE)]);
    h.kick().unwrap();
    assert_eq!((h.status(), h.used(0).1), (OK, 1));

    h.header(T_GET_ID, 0);
    h.mem_write(DATA, &[0xff; 20]);
    h.submit(&[(HDR, 16, 0), (DATA, 20, WRITE), (STATUS, 1, WRITE)]);
    h.kick().unwrap();
    assert_eq!((h.status(), h.used(1).1), (OK, 21));
    assert_eq!(h.mem_read(DATA, 20), b"test-serial-01234567");

    h.header(99, 0);
    h.submit(&[(HDR, 16, 0), (STATUS, 1, WRITE)]);
    h.kick().unwrap();
    assert_eq!(h.status(), UNSUPP);
}

#[test]
fn read_only_disk_refuses_writes() {
    let mut h = Harness::new(true);
    assert_ne!(h.device_features() & F_RO, 0);
    h.up(F_VERSION_1 | F_RO | F_FLUSH);
    let before = h.image();
    assert_eq!(h.write(0, &[0x55; 512]), (IOERR, 1));
    assert_eq!(h.image(), before);
    assert_eq!(h.read(0, 512).0, OK, "reads still work");
}

#[test]
fn bad_sectors_and_lengths_get_ioerr() {
    let mut h = Harness::new(false);
    h.up(F_VERSION_1);
    assert_eq!(h.read(64, 512), (IOERR, 1), "first sector past the end");
    assert_eq!(h.read(63, 1024), (IOERR, 1), "runs past the end");
    assert_eq!(h.read(u64::MAX, 512), (IOERR, 1), "sector overflow");
    assert_eq!(h.read(0, 100), (IOERR, 1), "not whole sectors");
    let before = h.image();
    assert_eq!(h.write(64, &[1; 512]), (IOERR, 1));
    assert_eq!(h.image(), before);
    // The device carries on.
    assert_eq!(h.read(0, 512).0, OK);
    assert_eq!(h.dev.status() & S_NEEDS_RESET, 0);
}

#[test]
fn buffers_outside_ram_or_overflowing_get_ioerr() {
    let mut h = Harness::new(false);
    h.up(F_VERSION_1);
    let cases: [(u64, u32); 4] = [
        (RAM + 0x2000, 512),   // past the end of RAM (and of the ROM)
        (RAM - 256, 512),      // runs from RAM into the read-only block
        (ROM, 512),            // the device would write read-only memory
        (u64::MAX - 255, 512), // addr + len wraps around
    ];
    for (n, (addr, len)) in cases.into_iter().enumerate() {
        h.header(T_IN, 0);
        h.submit(&[(HDR, 16, 0), (addr, len, WRITE), (STATUS, 1, WRITE)]);
        h.kick().unwrap();
        assert_eq!((h.status(), h.used(n as u16).1), (IOERR, 1), "case {n}");
    }
    // The header outside RAM.
    h.mem_write(STATUS, &[0xee]);
    h.submit(&[(RAM + 0x8000, 16, 0), (STATUS, 1, WRITE)]);
    h.kick().unwrap();
    assert_eq!(h.status(), IOERR);
    assert_eq!(h.dev.status() & S_NEEDS_RESET, 0);
    assert_eq!(h.read(0, 512).0, OK);
}

#[test]
fn unusable_status_descriptor_returns_the_chain_with_len_0() {
    let mut h = Harness::new(false);
    h.up(F_VERSION_1);
    // Status descriptor device-readable.
    h.header(T_IN, 0);
    h.submit(&[(HDR, 16, 0), (DATA, 512, WRITE), (STATUS, 1, 0)]);
    h.kick().unwrap();
    assert_eq!(h.used_idx(), 1);
    assert_eq!(h.used(0).1, 0);
    assert_eq!(h.status(), 0xee, "not written");
    // Zero length.
    h.header(T_IN, 0);
    h.submit(&[(HDR, 16, 0), (DATA, 512, WRITE), (STATUS, 0, WRITE)]);
    h.kick().unwrap();
    assert_eq!(h.used(1).1, 0);
    // In read-only memory.
    h.header(T_IN, 0);
    h.submit(&[(HDR, 16, 0), (DATA, 512, WRITE), (ROM, 1, WRITE)]);
    h.kick().unwrap();
    assert_eq!(h.used(2).1, 0);
    // A readable descriptor after a writable one (status usable: IOERR).
    h.header(T_IN, 0);
    h.submit(&[
        (HDR, 16, 0),
        (DATA, 512, WRITE),
        (DATA, 512, 0),
        (STATUS, 1, WRITE),
    ]);
    h.kick().unwrap();
    assert_eq!((h.status(), h.used(3).1), (IOERR, 1));
    assert_eq!(h.dev.status() & S_NEEDS_RESET, 0);
}

fn assert_needs_reset(h: &mut Harness) {
    assert_ne!(h.dev.status() & S_NEEDS_RESET, 0, "DEVICE_NEEDS_RESET");
    assert_ne!(h.rd(0x60) & 2, 0, "config change interrupt");
    assert!(h.irq_fired());
    // Ignored until reset; then the device works again.
    assert!(h.dev.process_queue(0, &h.me).is_ok());
    h.up(F_VERSION_1);
    assert_eq!(h.rd(0x60), 0, "reset clears InterruptStatus");
    assert_eq!(h.read(0, 512).0, OK);
}

#[test]
fn looping_chain_needs_reset() {
    let mut h = Harness::new(false);
    h.up(F_VERSION_1);
    h.header(T_IN, 0);
    h.write_desc(0, HDR, 16, NEXT, 1);
    h.write_desc(1, DATA, 512, NEXT | WRITE, 0); // back to 0
    h.publish(0);
    assert!(matches!(h.kick(), Err(Error::QueueBroken { .. })));
    assert_needs_reset(&mut h);
}

#[test]
fn descriptor_index_out_of_range_needs_reset() {
    let mut h = Harness::new(false);
    h.up(F_VERSION_1);
    h.header(T_IN, 0);
    h.write_desc(0, HDR, 16, NEXT, 200);
    h.publish(0);
    assert!(h.kick().is_err());
    assert_needs_reset(&mut h);
    // An avail ring entry naming a head outside the table.
    h.publish(QSIZE);
    assert!(h.kick().is_err());
    assert_needs_reset(&mut h);
}

#[test]
fn avail_idx_jump_needs_reset() {
    let mut h = Harness::new(false);
    h.up(F_VERSION_1);
    h.mem_write(AVAIL + 2, &(QSIZE + 1).to_le_bytes());
    assert!(h.kick().is_err());
    assert_needs_reset(&mut h);
}

#[test]
fn bad_queue_sizes_and_rings_need_reset() {
    for size in [0u32, 3, 100, 512, 0x1_0000] {
        let mut h = Harness::new(false);
        assert!(h.negotiate(F_VERSION_1));
        h.setup_queue(size);
        assert_ne!(h.dev.status() & S_NEEDS_RESET, 0, "size {size}");
    }
    // Used ring in read-only memory, descriptor table outside RAM.
    for (reg, addr) in [(0xa0u64, ROM as u32), (0x80, 0xfff0_0000)] {
        let mut h = Harness::new(false);
        assert!(h.negotiate(F_VERSION_1));
        h.wr(0x30, 0);
        h.wr(0x38, QSIZE as u32);
        h.wr(0x80, DESC as u32);
        h.wr(0x90, AVAIL as u32);
        h.wr(0xa0, USED as u32);
        h.wr(reg, addr);
        h.wr(0x44, 1);
        h.wr(0x70, S_ACK | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK);
        assert_ne!(h.dev.status() & S_NEEDS_RESET, 0, "ring at {addr:#x}");
    }
}

#[test]
fn notify_through_the_bus_only_signals_the_eventfd() {
    let mut h = Harness::new(false);
    h.up(F_VERSION_1);
    h.header(T_IN, 0);
    h.submit(&[(HDR, 16, 0), (DATA, 512, WRITE), (STATUS, 1, WRITE)]);
    h.wr(NOTIFY_OFFSET, 0);
    assert_eq!(h.used_idx(), 0, "nothing done on the vCPU");
    assert_eq!(h.dev.notify_eventfd(0).unwrap().read().unwrap(), 1);
    h.dev.process_queue(0, &h.me).unwrap();
    assert_eq!(h.used_idx(), 1);
    assert!(h.dev.notify_eventfd(1).is_none());
}

#[test]
fn interrupt_status_ack_and_no_interrupt_flag() {
    let mut h = Harness::new(false);
    h.up(F_VERSION_1);
    assert!(!h.irq_fired());
    assert_eq!(h.read(0, 512).0, OK);
    assert!(h.irq_fired(), "irq eventfd written");
    assert_eq!(h.rd(0x60), 1, "used-buffer interrupt");
    h.wr(0x64, 1);
    assert_eq!(h.rd(0x60), 0, "acknowledged");
    // VRING_AVAIL_F_NO_INTERRUPT (no EVENT_IDX): no interrupt.
    h.mem_write(AVAIL, &1u16.to_le_bytes());
    assert_eq!(h.read(0, 512).0, OK);
    assert!(!h.irq_fired());
    assert_eq!(h.rd(0x60), 0);
    // Without EVENT_IDX the device asks for no notifications only while it works.
    assert_eq!(
        h.u16_at(USED) & 1,
        0,
        "VRING_USED_F_NO_NOTIFY clear when idle"
    );
}

#[test]
fn event_idx_suppresses_interrupts_until_used_event() {
    let mut h = Harness::new(false);
    h.up(F_VERSION_1 | F_EVENT_IDX);
    // used_event (after the avail ring) = 2: interrupt when used idx passes 2.
    let used_event = AVAIL + 4 + 2 * u64::from(QSIZE);
    h.mem_write(used_event, &2u16.to_le_bytes());
    assert_eq!(h.read(0, 512).0, OK); // used idx 1
    assert!(!h.irq_fired());
    assert_eq!(h.read(0, 512).0, OK); // used idx 2
    assert!(!h.irq_fired());
    assert_eq!(h.read(0, 512).0, OK); // used idx 3: passed used_event
    assert!(h.irq_fired());
    // avail_event tells the driver to notify for the next request.
    let avail_event = h.u16_at(USED + 4 + 8 * u64::from(QSIZE));
    assert_eq!(avail_event, 3);
}

#[test]
fn second_open_of_a_locked_image_fails_clearly() {
    let img = image();
    let path = img.as_path().to_path_buf();
    let first = Block::open(&path, false).unwrap();
    let e = Block::open(&path, false).unwrap_err();
    assert!(matches!(e, Error::DiskLocked { .. }), "{e}");
    assert!(e.to_string().contains("locked by another process"), "{e}");
    assert!(matches!(
        Block::open(&path, true),
        Err(Error::DiskLocked { .. })
    ));
    drop(first);
    let ro1 = Block::open(&path, true).unwrap();
    let _ro2 = Block::open(&path, true).expect("read-only opens share the lock");
    assert!(matches!(
        Block::open(&path, false),
        Err(Error::DiskLocked { .. })
    ));
    drop(ro1);

    let e = Block::open(std::path::Path::new("/nonexistent/disk.img"), false).unwrap_err();
    assert!(matches!(e, Error::DiskOpen { .. }));
    assert!(e.to_string().contains("check that the file exists"), "{e}");
    assert!(matches!(
        Block::open(std::path::Path::new("/tmp"), true),
        Err(Error::DiskOpen { .. } | Error::DiskNotRegular { .. })
    ));
}

#[test]
fn discard_punches_a_hole_and_read_only_disks_do_not_offer_it() {
    const F_DISCARD: u64 = 1 << 13;
    const T_DISCARD: u32 = 11;
    let mut h = Harness::new(false);
    assert_ne!(h.device_features() & F_DISCARD, 0);
    h.up(F_VERSION_1 | F_DISCARD);
    let mut seg = [0u8; 16];
    seg[0..8].copy_from_slice(&2u64.to_le_bytes());
    seg[8..12].copy_from_slice(&3u32.to_le_bytes());
    h.header(T_DISCARD, 0);
    h.mem_write(DATA, &seg);
    h.submit(&[(HDR, 16, 0), (DATA, 16, 0), (STATUS, 1, WRITE)]);
    h.kick().unwrap();
    assert_eq!(h.status(), OK);
    let img = h.image();
    assert!(img[2 * 512..5 * 512].iter().all(|&b| b == 0), "discarded");
    assert_eq!(&img[512..1024], &pattern(512, 512)[..]);
    assert_eq!(&img[5 * 512..6 * 512], &pattern(5 * 512, 512)[..]);
    assert_eq!(img.len() as u64, IMAGE_LEN, "size kept");
    // Past the end, and flags set: IOERR.
    seg[0..8].copy_from_slice(&63u64.to_le_bytes());
    h.header(T_DISCARD, 0);
    h.mem_write(DATA, &seg);
    h.submit(&[(HDR, 16, 0), (DATA, 16, 0), (STATUS, 1, WRITE)]);
    h.kick().unwrap();
    assert_eq!(h.status(), IOERR);

    let h = Harness::new(true);
    assert_eq!(h.device_features() & F_DISCARD, 0);
}

#[test]
fn nothing_is_served_before_driver_ok() {
    let mut h = Harness::new(false);
    assert!(h.negotiate(F_VERSION_1));
    h.setup_queue(QSIZE as u32);
    h.header(T_IN, 0);
    h.submit(&[(HDR, 16, 0), (DATA, 512, WRITE), (STATUS, 1, WRITE)]);
    h.kick().unwrap();
    assert_eq!(h.used_idx(), 0);
    assert!(!h.irq_fired());
    h.wr(0x70, S_ACK | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK);
    h.kick().unwrap();
    assert_eq!(h.used_idx(), 1);
    assert_eq!(h.status(), OK);
}
