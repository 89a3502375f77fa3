//! `synchronize` latency with 0, 1 and 2 busy readers (group `synchronize`).
//!
//! A busy QSBR reader loops `load` + `quiescent_state` (every iteration); a busy read-lock
//! reader loops `read_lock` + `load`. The measuring thread is not a reader. Besides
//! criterion's estimate (the median of per-sample means), every call is timed on its own and
//! the per-call percentiles are written to `synchronize/<id>/percentiles.json`.

use criterion::{criterion_group, criterion_main, Criterion};
use rcu::{Rcu, RcuCell};
use std::hint::black_box;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

mod common;

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Qsbr,
    ReadLock,
}

fn bench_one(c: &mut Criterion, rcu: Rcu, kind: Kind, readers: usize, id: &str) {
    let cell = RcuCell::new_in(&rcu, Some(7u64));
    let mut group = c.benchmark_group("synchronize");
    let mut lat: Vec<u64> = Vec::new();
    common::with_background(
        readers,
        |stop, ready| match kind {
            Kind::Qsbr => {
                let mut me = rcu.register_qsbr();
                ready();
                while !stop.load(Ordering::Relaxed) {
                    black_box(cell.load(&me));
                    me.quiescent_state();
                }
            }
            Kind::ReadLock => {
                drop(rcu.read_lock()); // registers the thread
                ready();
                while !stop.load(Ordering::Relaxed) {
                    let g = rcu.read_lock();
                    black_box(cell.load(&g));
                }
            }
        },
        || {
            group.bench_function(id, |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let t = Instant::now();
                        rcu.synchronize();
                        let d = t.elapsed();
                        total += d;
                        lat.push(d.as_nanos() as u64);
                    }
                    total
                })
            });
        },
    );
    group.finish();
    common::write_percentiles("synchronize", id, &mut lat);
}

fn bench_synchronize(c: &mut Criterion) {
    for readers in [0, 1, 2] {
        bench_one(
            c,
            Rcu::new(),
            Kind::Qsbr,
            readers,
            &format!("qsbr_readers_{readers}"),
        );
    }
    bench_one(
        c,
        Rcu::new(),
        Kind::ReadLock,
        1,
        "read_lock_membarrier_readers_1",
    );
    bench_one(
        c,
        Rcu::builder().membarrier(false).build(),
        Kind::ReadLock,
        1,
        "read_lock_fence_readers_1",
    );
}

criterion_group! {
    name = benches;
    config = common::criterion();
    targets = bench_synchronize
}
criterion_main!(benches);
