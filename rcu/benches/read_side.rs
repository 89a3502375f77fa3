//! Read-side cost: one read-side section plus one load of a shared pointer per iteration, for
//! our reader kinds and their peers, with 1 thread and with 2 threads (the second thread does
//! the same reads concurrently; the time is measured on the first one only). Groups
//! `read_side_1t`, `read_side_2t`; `atomicptr_floor` (a bare `AtomicPtr` acquire load) is
//! the reference.
//!
//! Timing (not criterion: the same method as liburcu/bench.c, so that both languages are
//! measured alike): each row's iteration count is calibrated to about 20 ms, then every row is
//! timed 15 times round-robin and the row reports the median ns per iteration (a JSON row,
//! appended to `$RCU_BENCH_OUT` when set). `cargo bench -p rcu --bench read_side [-- FILTER]`.
//!
//! Every loop has the shape of liburcu's in `liburcu/bench.c`: one section and one load per
//! iteration, the loaded value passed through `black_box` (there: an empty asm statement with
//! a memory clobber on the value's address, which is what `black_box` compiles to), so that
//! no loop is unrolled or has its loads hoisted or merged. Each loop is a function of its own
//! in [`loops`] (`#[inline(never)]`), so that `objdump -d` shows it alone and the instruction
//! counter measures the same code that is timed.
//!
//! QSBR readers call `quiescent_state` every N reads: N = 16 models a vCPU thread (a few
//! lookups per exit; it then goes offline for `KVM_RUN`), N = 1000 is liburcu's `rperf`
//! (`RCU_READ_RUN`), and N = 1 (1 thread only) is the worst case. `qsbr_qs_every_N` loads
//! with `RcuCell::load(&qsbr)` (which checks the handle on every load);
//! `qsbr_check_once_qs_every_N` checks once, with `cell.qsbr_reader(&mut qsbr)`, and then
//! loads and reports its quiescent states through that reader (a vCPU's loop).
//!
//! Instruction counts: `<this bench executable> --callgrind ROW ITERS` runs one row's loop
//! once, without criterion; `rcu/benches/callgrind.sh` runs it under
//! `valgrind --tool=callgrind` with two iteration counts and reports the difference per
//! iteration.

use crossbeam_epoch as epoch;
use rcu::{QsbrThread, Rcu, RcuCell};
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};
use std::time::Instant;

mod common;

pub struct Payload {
    value: u64,
}

fn payload() -> Payload {
    Payload { value: 42 }
}

/// The measured loops (see the module docs).
mod loops {
    use super::Payload;
    use crossbeam_epoch as epoch;
    use rcu::{QsbrThread, Rcu, RcuCell};
    use std::hint::black_box;
    use std::sync::atomic::{AtomicPtr, Ordering};

    #[inline(never)]
    pub fn floor(p: &AtomicPtr<Payload>, iters: u64) {
        for _ in 0..iters {
            black_box(p.load(Ordering::Acquire));
        }
    }

    /// The floor in the QSBR rows' loop shape: `chunks` x (`every` x a bare acquire load),
    /// with no quiescent state. What the chunked loop itself costs beside the flat floor.
    #[inline(never)]
    pub fn floor_chunks(p: &AtomicPtr<Payload>, every: u64, chunks: u64) {
        let mut i = chunks;
        while i != 0 {
            for _ in 0..every {
                black_box(p.load(Ordering::Acquire));
            }
            i -= 1;
        }
    }

    /// `chunks` x (`every` x `cell.load(me)`, then `quiescent_state`).
    #[inline(never)]
    pub fn qsbr_load(cell: &RcuCell<Payload>, me: &mut QsbrThread, every: u64, chunks: u64) {
        for _ in 0..chunks {
            for _ in 0..every {
                black_box(cell.load(me));
            }
            me.quiescent_state();
        }
    }

    /// `cell.qsbr_reader(me)` once, then `chunks` x (`every` x `reader.load()`, then
    /// `reader.quiescent_state()`).
    #[inline(never)]
    pub fn qsbr_check_once(cell: &RcuCell<Payload>, me: &mut QsbrThread, every: u64, chunks: u64) {
        let mut r = cell.qsbr_reader(me);
        // Counted down, as liburcu/bench.c's `loop_read` is.
        let mut i = chunks;
        while i != 0 {
            for _ in 0..every {
                black_box(r.load());
            }
            r.quiescent_state();
            i -= 1;
        }
    }

    /// `read_lock` + load + unlock (the guard's drop), for a membarrier or a fence domain.
    #[inline(never)]
    pub fn read_lock(rcu: &Rcu, cell: &RcuCell<Payload>, iters: u64) {
        for _ in 0..iters {
            let g = rcu.read_lock();
            black_box(cell.load(&g));
        }
    }

    #[inline(never)]
    pub fn crossbeam(a: &epoch::Atomic<Payload>, iters: u64) {
        for _ in 0..iters {
            let g = epoch::pin();
            black_box(a.load(Ordering::Acquire, &g).as_raw());
        }
    }

    #[inline(never)]
    pub fn arc_swap(a: &arc_swap::ArcSwap<Payload>, iters: u64) {
        for _ in 0..iters {
            let g = a.load();
            black_box(&**g as *const Payload);
        }
    }

    #[inline(never)]
    pub fn rwlock(rw: &parking_lot::RwLock<Box<Payload>>, iters: u64) {
        for _ in 0..iters {
            let g = rw.read();
            black_box(&**g as *const Payload);
        }
    }

    #[inline(never)]
    pub fn mutex(m: &std::sync::Mutex<Box<Payload>>, iters: u64) {
        for _ in 0..iters {
            let g = m.lock().unwrap();
            black_box(&**g as *const Payload);
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Variant {
    Floor,
    /// The floor's load in the QSBR loops' chunked shape, `n` loads per chunk.
    FloorChunks(u64),
    /// `RcuCell::load(&qsbr)`; `quiescent_state` after every `n` loads.
    Qsbr(u64),
    /// `cell.reader(&qsbr)` once per `n` loads, then `quiescent_state`.
    QsbrCheckOnce(u64),
    ReadLockMembarrier,
    ReadLockFence,
    Crossbeam,
    ArcSwap,
    RwLock,
    Mutex,
}

const VARIANTS: [Variant; 14] = [
    Variant::Floor,
    Variant::FloorChunks(16),
    Variant::Qsbr(1),
    Variant::Qsbr(16),
    Variant::Qsbr(1000),
    Variant::QsbrCheckOnce(1),
    Variant::QsbrCheckOnce(16),
    Variant::QsbrCheckOnce(1000),
    Variant::ReadLockMembarrier,
    Variant::ReadLockFence,
    Variant::Crossbeam,
    Variant::ArcSwap,
    Variant::RwLock,
    Variant::Mutex,
];

impl Variant {
    fn id(self) -> String {
        match self {
            Variant::Floor => "atomicptr_floor".into(),
            Variant::FloorChunks(n) => format!("atomicptr_floor_chunks_{n}"),
            Variant::Qsbr(n) => format!("qsbr_qs_every_{n}"),
            Variant::QsbrCheckOnce(n) => format!("qsbr_check_once_qs_every_{n}"),
            Variant::ReadLockMembarrier => "read_lock_membarrier".into(),
            Variant::ReadLockFence => "read_lock_fence".into(),
            Variant::Crossbeam => "crossbeam_pin_load".into(),
            Variant::ArcSwap => "arc_swap_load".into(),
            Variant::RwLock => "parking_lot_rwlock_read".into(),
            Variant::Mutex => "std_mutex_lock".into(),
        }
    }

    fn all() -> impl Iterator<Item = Variant> {
        VARIANTS.iter().copied()
    }
}

struct Shared {
    floor: AtomicPtr<Payload>,
    qsbr_cell: RcuCell<Payload>,
    mb_rcu: Rcu,
    mb_cell: RcuCell<Payload>,
    fence_rcu: Rcu,
    fence_cell: RcuCell<Payload>,
    cb: epoch::Atomic<Payload>,
    arc: arc_swap::ArcSwap<Payload>,
    rw: parking_lot::RwLock<Box<Payload>>,
    mutex: std::sync::Mutex<Box<Payload>>,
}

impl Shared {
    fn new() -> Shared {
        let qsbr_rcu = Rcu::new();
        let mb_rcu = Rcu::new();
        let fence_rcu = Rcu::builder().membarrier(false).build();
        if !mb_rcu.uses_membarrier() {
            eprintln!("warning: membarrier unavailable; read_lock_membarrier uses a fence");
        }
        Shared {
            floor: AtomicPtr::new(Box::into_raw(Box::new(payload()))),
            qsbr_cell: RcuCell::new_in(&qsbr_rcu, Some(payload())),
            mb_cell: RcuCell::new_in(&mb_rcu, Some(payload())),
            mb_rcu,
            fence_cell: RcuCell::new_in(&fence_rcu, Some(payload())),
            fence_rcu,
            cb: epoch::Atomic::new(payload()),
            arc: arc_swap::ArcSwap::from_pointee(payload()),
            rw: parking_lot::RwLock::new(Box::new(payload())),
            mutex: std::sync::Mutex::new(Box::new(payload())),
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // SAFETY: no thread reads any more; both pointers came from Box::into_raw / Owned.
        unsafe {
            drop(Box::from_raw(*self.floor.get_mut()));
            drop(std::mem::take(&mut self.cb).into_owned());
        }
    }
}

/// Runs `iters` iterations of `v`'s loop (a QSBR loop: rounded up to whole chunks of `n`
/// reads; the count actually run is returned). `me` must be a QSBR thread of `qsbr_cell`'s
/// domain for the QSBR variants.
fn run(v: Variant, s: &Shared, me: &mut Option<QsbrThread>, iters: u64) -> u64 {
    match v {
        Variant::Floor => loops::floor(&s.floor, iters),
        Variant::FloorChunks(every) => {
            let chunks = iters.div_ceil(every);
            loops::floor_chunks(&s.floor, every, chunks);
            return chunks * every;
        }
        Variant::Qsbr(every) | Variant::QsbrCheckOnce(every) => {
            let me = me.get_or_insert_with(|| s.qsbr_cell.domain().register_qsbr());
            let chunks = iters.div_ceil(every);
            if matches!(v, Variant::Qsbr(_)) {
                loops::qsbr_load(&s.qsbr_cell, me, every, chunks);
            } else {
                loops::qsbr_check_once(&s.qsbr_cell, me, every, chunks);
            }
            return chunks * every;
        }
        Variant::ReadLockMembarrier => loops::read_lock(&s.mb_rcu, &s.mb_cell, iters),
        Variant::ReadLockFence => loops::read_lock(&s.fence_rcu, &s.fence_cell, iters),
        Variant::Crossbeam => loops::crossbeam(&s.cb, iters),
        Variant::ArcSwap => loops::arc_swap(&s.arc, iters),
        Variant::RwLock => loops::rwlock(&s.rw, iters),
        Variant::Mutex => loops::mutex(&s.mutex, iters),
    }
    iters
}

/// Nanoseconds per iteration of one timed run of `iters` iterations.
fn timed(v: Variant, s: &Shared, me: &mut Option<QsbrThread>, iters: u64) -> f64 {
    let t = Instant::now();
    let done = run(v, s, me, iters);
    t.elapsed().as_nanos() as f64 / done as f64
}

/// The second thread of the 2-thread group: the same reads until `stop`. It registers (its
/// first reads) before it reports ready, as liburcu/bench.c's does, so that the registration
/// is not timed.
fn background(v: Variant, s: &Shared, stop: &AtomicBool, ready: &dyn Fn()) {
    let mut me = None;
    run(v, s, &mut me, 1000);
    ready();
    while !stop.load(Ordering::Relaxed) {
        run(v, s, &mut me, 16_000);
    }
}

/// Repetitions per row, and the time one repetition should take (liburcu/bench.c: the same).
const REPS: usize = 15;
const REP_NS: f64 = 20e6;

/// Iterations per repetition of `v`: about `REP_NS`, a multiple of 1000 (whole QSBR chunks).
fn calibrate(v: Variant, s: &Shared, me: &mut Option<QsbrThread>) -> u64 {
    run(v, s, me, 100_000); // warm-up
    let per = timed(v, s, me, 1_000_000).max(0.05);
    ((REP_NS / per) as u64 / 1000).clamp(10, 200_000) * 1000
}

/// Measures every row of a group round-robin, `REPS` times (rep 1 of every row, then rep 2 of
/// every row, ...), so that a noisy second hits every row alike rather than one; emits one
/// row per variant with the median ns per iteration. `threads == 2`: a background thread
/// runs the same reads while each repetition is timed.
fn measure_group(group: &str, variants: &[Variant], s: &Shared, threads: usize) {
    let mut me = None;
    let iters: Vec<u64> = variants.iter().map(|&v| calibrate(v, s, &mut me)).collect();
    let mut samples = vec![Vec::with_capacity(REPS); variants.len()];
    for _ in 0..REPS {
        for (i, &v) in variants.iter().enumerate() {
            let mut one = || samples[i].push(timed(v, s, &mut me, iters[i]));
            if threads == 2 {
                common::with_background(1, |stop, ready| background(v, s, stop, ready), one);
            } else {
                one();
            }
        }
    }
    for (i, v) in variants.iter().enumerate() {
        let med = common::median(&mut samples[i]);
        common::emit_row(&format!(
            "{{\"group\": \"{group}\", \"id\": \"{}\", \"median_ns\": {med:.4}, \
             \"min_ns\": {:.4}, \"max_ns\": {:.4}, \"reps\": {REPS}, \"iters\": {}}}",
            v.id(),
            samples[i][0],
            samples[i][REPS - 1],
            iters[i]
        ));
    }
}

fn bench_read_side(filter: Option<&str>) {
    let s = Shared::new();
    // Make sure every value is what we think it is before timing anything.
    assert_eq!(s.mb_cell.load(&s.mb_rcu.read_lock()).unwrap().value, 42);
    assert_eq!(
        s.fence_cell.load(&s.fence_rcu.read_lock()).unwrap().value,
        42
    );
    {
        let me = s.qsbr_cell.domain().register_qsbr();
        assert_eq!(s.qsbr_cell.reader(&me).load().unwrap().value, 42);
    }
    let wanted = |v: &Variant| match filter {
        Some(f) => v.id().contains(f),
        None => true,
    };
    let one: Vec<Variant> = Variant::all().filter(wanted).collect();
    measure_group("read_side_1t", &one, &s, 1);
    let two: Vec<Variant> = one
        .iter()
        .copied()
        .filter(|v| !matches!(v, Variant::Qsbr(1) | Variant::QsbrCheckOnce(1)))
        .collect();
    measure_group("read_side_2t", &two, &s, 2);
}

/// `--callgrind ROW ITERS`: runs ROW's loop once for ITERS iterations (no timing), for
/// `callgrind.sh`; prints the rows with `--callgrind list`.
fn callgrind_mode(args: &[String]) {
    let row = args.first().map(String::as_str).unwrap_or("list");
    if row == "list" {
        for v in Variant::all() {
            println!("{}", v.id());
        }
        return;
    }
    let iters: u64 = args
        .get(1)
        .and_then(|n| n.parse().ok())
        .expect("usage: --callgrind ROW ITERS");
    let v = Variant::all()
        .find(|v| v.id() == row)
        .unwrap_or_else(|| panic!("unknown row {row}; --callgrind list shows them"));
    let s = Shared::new();
    let mut me = None;
    // Register and warm up (thread-local caches, first-touch) outside the difference that
    // callgrind.sh takes: it subtracts a run of N from a run of 2N.
    run(v, &s, &mut me, 1000);
    run(v, &s, &mut me, iters);
    eprintln!(
        "row {row}: {iters} iterations; membarrier domain uses membarrier: {}",
        s.mb_rcu.uses_membarrier()
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == "--callgrind") {
        callgrind_mode(&args[i + 1..]);
        return;
    }
    // `cargo bench` passes `--bench`; anything else that is not a flag filters the rows.
    bench_read_side(
        args.iter()
            .find(|a| !a.starts_with('-'))
            .map(String::as_str),
    );
}
