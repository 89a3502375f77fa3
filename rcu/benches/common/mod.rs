//! Shared set-up for the rcu benchmarks: criterion settings for a noisy 2-core machine,
//! background threads that run while a benchmark measures, and a side file for latency
//! percentiles that `report.py` picks up.

#![allow(dead_code)] // each bench target uses a different subset

use criterion::Criterion;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

/// Short runs: the whole `cargo bench -p rcu` must stay within a few minutes on 2 cores.
pub fn criterion() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_millis(2500))
        .sample_size(50)
        .nresamples(20_000)
        // Criterion would ask `cargo metadata`, which fails while another crate's manifest
        // is mid-edit; resolve the directory ourselves (same rule, see `criterion_home`).
        .output_directory(&criterion_home())
        .configure_from_args()
}

/// How often a QSBR reader reports a quiescent state in the mixed benchmarks: a vCPU thread
/// does a handful of lookups per exit and then goes offline for `KVM_RUN`.
pub const QS_EVERY: u64 = 16;

/// Runs `measure` while `n` background threads run `body(stop)`; each body must loop until
/// `stop` is set, and call `ready()` once it is set up (registered, about to loop).
pub fn with_background<B, M>(n: usize, body: B, measure: M)
where
    B: Fn(&AtomicBool, &dyn Fn()) + Sync,
    M: FnOnce(),
{
    let stop = AtomicBool::new(false);
    let ready = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for i in 0..n {
            let (stop, ready, body) = (&stop, &ready, &body);
            std::thread::Builder::new()
                .name(format!("bench-bg-{i}"))
                .spawn_scoped(s, move || {
                    body(stop, &|| {
                        ready.fetch_add(1, Ordering::Release);
                    })
                })
                .expect("spawn background thread");
        }
        while ready.load(Ordering::Acquire) < n {
            std::thread::yield_now();
        }
        // Stop the threads even if the measurement panics, or the scope would never end.
        struct StopOnDrop<'a>(&'a AtomicBool);
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let _guard = StopOnDrop(&stop);
        measure();
    });
}

/// Where criterion writes its results (the same rule criterion uses, minus `cargo metadata`).
pub fn criterion_home() -> PathBuf {
    if let Some(v) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(v);
    }
    if let Some(v) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(v).join("criterion");
    }
    // The bench executable lives in <target>/<profile>/deps/.
    let exe = std::env::current_exe().expect("current_exe");
    match exe.ancestors().nth(3) {
        Some(target) => target.join("criterion"),
        None => PathBuf::from("target/criterion"),
    }
}

/// Writes `<criterion home>/<group>/<id>/<name>` (extra results for `report.py`).
pub fn write_side_file(group: &str, id: &str, name: &str, contents: &str) {
    let dir = criterion_home().join(group).join(id);
    if std::fs::create_dir_all(&dir).is_ok() {
        let _ = std::fs::write(dir.join(name), contents);
    }
}

/// Percentiles of individually timed operations (in ns), written next to criterion's own
/// estimates as `<group>/<id>/percentiles.json` and printed.
pub fn write_percentiles(group: &str, id: &str, samples_ns: &mut [u64]) {
    if samples_ns.is_empty() {
        return;
    }
    samples_ns.sort_unstable();
    let pct = |p: f64| samples_ns[((samples_ns.len() - 1) as f64 * p).round() as usize];
    let (p50, p90, p99, max) = (
        pct(0.5),
        pct(0.9),
        pct(0.99),
        samples_ns[samples_ns.len() - 1],
    );
    println!(
        "{group}/{id}: {} timed calls: p50 {:.2} us, p90 {:.2} us, p99 {:.2} us, max {:.2} us",
        samples_ns.len(),
        p50 as f64 / 1e3,
        p90 as f64 / 1e3,
        p99 as f64 / 1e3,
        max as f64 / 1e3
    );
    let json = format!(
        "{{\"count\": {}, \"p50_ns\": {p50}, \"p90_ns\": {p90}, \"p99_ns\": {p99}, \
         \"max_ns\": {max}}}\n",
        samples_ns.len()
    );
    write_side_file(group, id, "percentiles.json", &json);
}
