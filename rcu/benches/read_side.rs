//! Read-side cost: one read-side section plus one load of a shared pointer, per iteration,
//! for our two reader kinds and their peers, with 1 thread and with 2 threads (the second
//! thread does the same reads concurrently; the time is measured on the first one only).
//!
//! Every variant loads the pointer and folds its address into a local sink that is passed
//! to `black_box` once at the end, so no variant pays for a per-iteration stack store.
//! Groups: `read_side_1t`, `read_side_2t`; `atomicptr_floor` is the reference.
//!
//! QSBR readers call `quiescent_state` every N loads: N = 16 models a vCPU thread (a few
//! lookups per exit; it then goes offline for `KVM_RUN`), N = 1000 is liburcu's `rperf`
//! (`RCU_READ_RUN`), and N = 1 (1 thread only) is the worst case: one quiescent state per read.

use criterion::{criterion_group, criterion_main, Criterion};
use crossbeam_epoch as epoch;
use rcu::{Rcu, RcuCell};
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};
use std::time::{Duration, Instant};

mod common;

struct Payload {
    value: u64,
}

fn payload() -> Payload {
    Payload { value: 42 }
}

#[derive(Clone, Copy)]
enum Variant {
    Floor,
    /// QSBR load; `quiescent_state` after every `n` loads.
    Qsbr(u64),
    ReadLockMembarrier,
    ReadLockFence,
    Crossbeam,
    ArcSwap,
    RwLock,
    Mutex,
}

impl Variant {
    fn id(self) -> String {
        match self {
            Variant::Floor => "atomicptr_floor".into(),
            Variant::Qsbr(n) => format!("qsbr_qs_every_{n}"),
            Variant::ReadLockMembarrier => "read_lock_membarrier".into(),
            Variant::ReadLockFence => "read_lock_fence".into(),
            Variant::Crossbeam => "crossbeam_pin_load".into(),
            Variant::ArcSwap => "arc_swap_load".into(),
            Variant::RwLock => "parking_lot_rwlock_read".into(),
            Variant::Mutex => "std_mutex_lock".into(),
        }
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

#[inline(always)]
fn addr<T>(r: Option<&T>) -> usize {
    r.map_or(0, |r| r as *const T as usize)
}

/// Runs `f` `iters` times (or, with `stop`, until it is set) and returns the elapsed time.
#[inline(always)]
fn timed(iters: u64, stop: Option<&AtomicBool>, mut f: impl FnMut() -> usize) -> Duration {
    let mut sink = 0usize;
    let start = Instant::now();
    match stop {
        None => {
            for _ in 0..iters {
                sink ^= f();
            }
        }
        Some(stop) => {
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..1024 {
                    sink ^= f();
                }
            }
        }
    }
    let t = start.elapsed();
    black_box(sink);
    t
}

/// `iters` reads of variant `v` on the calling thread (or reads until `stop`).
fn read_loop(v: Variant, s: &Shared, iters: u64, stop: Option<&AtomicBool>) -> Duration {
    match v {
        Variant::Floor => timed(iters, stop, || s.floor.load(Ordering::Acquire) as usize),
        Variant::Qsbr(every) => {
            let mut me = s.qsbr_cell.domain().register_qsbr();
            let cell = &s.qsbr_cell;
            let mut sink = 0usize;
            let mut done = 0u64;
            let start = Instant::now();
            loop {
                let n = if stop.is_some() {
                    every
                } else {
                    every.min(iters - done)
                };
                for _ in 0..n {
                    sink ^= addr(cell.load(&me));
                }
                me.quiescent_state();
                done += n;
                let finished = match stop {
                    Some(stop) => stop.load(Ordering::Relaxed),
                    None => done >= iters,
                };
                if finished {
                    break;
                }
            }
            let t = start.elapsed();
            black_box(sink);
            t
        }
        Variant::ReadLockMembarrier => timed(iters, stop, || {
            let g = s.mb_rcu.read_lock();
            addr(s.mb_cell.load(&g))
        }),
        Variant::ReadLockFence => timed(iters, stop, || {
            let g = s.fence_rcu.read_lock();
            addr(s.fence_cell.load(&g))
        }),
        Variant::Crossbeam => timed(iters, stop, || {
            let g = epoch::pin();
            s.cb.load(Ordering::Acquire, &g).as_raw() as usize
        }),
        Variant::ArcSwap => timed(iters, stop, || {
            let g = s.arc.load();
            addr(Some(&**g))
        }),
        Variant::RwLock => timed(iters, stop, || {
            let g = s.rw.read();
            addr(Some(&**g))
        }),
        Variant::Mutex => timed(iters, stop, || {
            let g = s.mutex.lock().unwrap();
            addr(Some(&**g))
        }),
    }
}

fn bench_read_side(c: &mut Criterion) {
    let s = Shared::new();
    // Make sure every value is what we think it is before timing anything.
    assert_eq!(s.mb_cell.load(&s.mb_rcu.read_lock()).unwrap().value, 42);
    let variants_1t = [
        Variant::Floor,
        Variant::Qsbr(1),
        Variant::Qsbr(16),
        Variant::Qsbr(1000),
        Variant::ReadLockMembarrier,
        Variant::ReadLockFence,
        Variant::Crossbeam,
        Variant::ArcSwap,
        Variant::RwLock,
        Variant::Mutex,
    ];
    let mut group = c.benchmark_group("read_side_1t");
    for v in variants_1t {
        group.bench_function(v.id(), |b| {
            b.iter_custom(|iters| read_loop(v, &s, iters, None))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("read_side_2t");
    for v in variants_1t {
        if matches!(v, Variant::Qsbr(1)) {
            continue;
        }
        common::with_background(
            1,
            |stop, ready| {
                ready();
                read_loop(v, &s, 0, Some(stop));
            },
            || {
                group.bench_function(v.id(), |b| {
                    b.iter_custom(|iters| read_loop(v, &s, iters, None))
                });
            },
        );
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::criterion();
    targets = bench_read_side
}
criterion_main!(benches);
