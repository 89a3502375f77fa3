//! Shared set-up for the rcu benchmarks: criterion settings for a noisy 2-core machine,
//! background threads that run while a benchmark measures, side files next to criterion's
//! results, and the JSON rows of the benchmarks that do not use criterion (`synchronize`,
//! `call_rcu`), which the report (`benchreport rcu`) picks up.

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

/// Writes `<criterion home>/<group>/<id>/<name>` (extra results for the report).
pub fn write_side_file(group: &str, id: &str, name: &str, contents: &str) {
    let dir = criterion_home().join(group).join(id);
    if std::fs::create_dir_all(&dir).is_ok() {
        let _ = std::fs::write(dir.join(name), contents);
    }
}

/// Appends one result row (a JSON object, one line) to the file named by `RCU_BENCH_OUT`
/// (set by `run.sh`, which merges the rows of our benchmarks and of liburcu's for
/// the report); without it the row is only printed.
pub fn emit_row(json: &str) {
    println!("{json}");
    if let Some(path) = std::env::var_os("RCU_BENCH_OUT") {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("open {path:?}: {e}"));
        writeln!(f, "{json}").expect("write RCU_BENCH_OUT");
    }
}

/// Summary of individually timed operations (in ns): p50, p90, p99, max and how many took
/// over 1 ms, as the fields of a JSON object (without the braces). Sorts `samples_ns`.
pub fn latency_fields(samples_ns: &mut [u64]) -> String {
    assert!(!samples_ns.is_empty(), "no samples");
    samples_ns.sort_unstable();
    let n = samples_ns.len();
    // The same indices as liburcu/bench.c (n/2, n*9/10, n*99/100).
    let (p50, p90, p99, max) = (
        samples_ns[n / 2],
        samples_ns[n * 9 / 10],
        samples_ns[n * 99 / 100],
        samples_ns[n - 1],
    );
    let over = samples_ns.iter().filter(|&&d| d > 1_000_000).count();
    format!(
        "\"median_ns\": {p50}, \"p50_ns\": {p50}, \"p90_ns\": {p90}, \"p99_ns\": {p99}, \
         \"max_ns\": {max}, \"count\": {n}, \"over_1ms\": {over}"
    )
}

/// The median of `v` (sorts it).
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
