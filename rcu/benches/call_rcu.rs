//! `call_rcu` throughput, enqueue to completion (group `call_rcu`).
//!
//! One iteration enqueues `K` callbacks, each of which frees a small box (what `defer_drop`
//! does) and counts itself, then waits until all of them have run:
//!
//! - ours: `call_rcu` x K, then `rcu_barrier()` (which returns when every callback queued
//!   before it has run), with one busy reader in the domain (QSBR, or read-lock);
//! - crossbeam-epoch: `defer` x K under one pin, unpin, then `pin().flush()` repeatedly until
//!   the counter shows that all K ran (crossbeam has no barrier; flushing from the measuring
//!   thread is the fastest way it offers to get deferred functions run), with one busy reader
//!   thread pinning and loading.
//!
//! After each iteration the counter must have grown by exactly K (checked). Throughput is
//! reported in callbacks/s.

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use crossbeam_epoch as epoch;
use rcu::{Rcu, RcuCell};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

mod common;

/// Callbacks per iteration (below the default high-water mark, so no throttling).
const K: u64 = 20_000;

static RAN: AtomicU64 = AtomicU64::new(0);

fn callback(b: Box<u64>) {
    black_box(&b);
    drop(b);
    RAN.fetch_add(1, Ordering::Relaxed);
}

fn rcu_iteration(rcu: &Rcu) {
    let before = RAN.load(Ordering::Relaxed);
    for i in 0..K {
        let b = Box::new(i);
        rcu.call_rcu(move || callback(b));
    }
    rcu.rcu_barrier();
    assert_eq!(
        RAN.load(Ordering::Relaxed) - before,
        K,
        "rcu_barrier returned early"
    );
}

fn crossbeam_iteration() {
    let before = RAN.load(Ordering::Relaxed);
    {
        let guard = epoch::pin();
        for i in 0..K {
            let b = Box::new(i);
            guard.defer(move || callback(b));
        }
    }
    while RAN.load(Ordering::Relaxed) - before < K {
        epoch::pin().flush();
    }
    // The reader thread may run deferred functions too, but only ours exist here.
    assert_eq!(RAN.load(Ordering::Relaxed) - before, K);
}

fn group<'a>(
    c: &'a mut Criterion,
) -> criterion::BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group("call_rcu");
    g.sample_size(20)
        .sampling_mode(SamplingMode::Flat)
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(K));
    g
}

fn bench_call_rcu(c: &mut Criterion) {
    // Ours, with a busy QSBR reader.
    let rcu = Rcu::new();
    let cell = RcuCell::new_in(&rcu, Some(1u64));
    let mut g = group(c);
    common::with_background(
        1,
        |stop, ready| {
            let mut me = rcu.register_qsbr();
            ready();
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..common::QS_EVERY {
                    black_box(cell.load(&me));
                }
                me.quiescent_state();
            }
        },
        || {
            g.bench_function("rcu_call_rcu_qsbr_reader", |b| {
                b.iter_custom(|iters| {
                    let t = Instant::now();
                    for _ in 0..iters {
                        rcu_iteration(&rcu);
                    }
                    t.elapsed()
                })
            });
        },
    );
    // Ours, with a busy read-lock reader (membarrier domain).
    common::with_background(
        1,
        |stop, ready| {
            drop(rcu.read_lock());
            ready();
            while !stop.load(Ordering::Relaxed) {
                let r = rcu.read_lock();
                black_box(cell.load(&r));
            }
        },
        || {
            g.bench_function("rcu_call_rcu_read_lock_reader", |b| {
                b.iter_custom(|iters| {
                    let t = Instant::now();
                    for _ in 0..iters {
                        rcu_iteration(&rcu);
                    }
                    t.elapsed()
                })
            });
        },
    );
    // crossbeam-epoch, with a busy reader.
    let shared = epoch::Atomic::new(1u64);
    common::with_background(
        1,
        |stop, ready| {
            ready();
            while !stop.load(Ordering::Relaxed) {
                let g = epoch::pin();
                black_box(shared.load(Ordering::Acquire, &g));
            }
        },
        || {
            g.bench_function("crossbeam_defer_flush", |b| {
                b.iter_custom(|iters| {
                    let t = Instant::now();
                    for _ in 0..iters {
                        crossbeam_iteration();
                    }
                    t.elapsed()
                })
            });
        },
    );
    g.finish();
    // SAFETY: no reader is left; the pointer came from Atomic::new.
    drop(unsafe { shared.into_owned() });
}

criterion_group! {
    name = benches;
    config = common::criterion();
    targets = bench_call_rcu
}
criterion_main!(benches);
