//! `cargo bench -p iohandler --bench dispatch` as one markdown table: latency (criterion's
//! median per sample, see `iohandler/benches/dispatch.rs`) and events/s for the RCU loop and
//! the `Mutex<HashMap>` loop, with and without the churn thread, and their ratios.

use crate::error::{Error, Result};
use crate::fmt::ratio;
use crate::table::{Align, Table};
use std::collections::BTreeMap;
use std::path::Path;

/// (group, function, fds) -> criterion's median ns per iteration.
type Results = BTreeMap<(String, String, u64), f64>;

/// The groups `latency` and `throughput` under `dir` (a criterion directory).
pub fn load(dir: &Path) -> Result<Results> {
    let mut out = Results::new();
    for group in ["latency", "throughput"] {
        for r in crate::criterion::load(&dir.join(group))? {
            let (Some(f), Some(n)) = (r.benchmark.function_id, r.benchmark.value_str) else {
                continue;
            };
            let Ok(n) = n.parse() else { continue };
            out.insert((group.to_string(), f, n), r.estimates.median.point_estimate);
        }
    }
    Ok(out)
}

/// The table for the results under `dir`.
pub fn report(dir: &Path) -> Result<String> {
    let results = load(dir)?;
    if results.is_empty() {
        return Err(Error::NoResults {
            dir: dir.to_owned(),
            hint: "run `cargo bench -p iohandler --bench dispatch` first",
        });
    }
    Ok(table(&results))
}

fn table(results: &Results) -> String {
    let sizes: std::collections::BTreeSet<u64> = results.keys().map(|k| k.2).collect();
    let mut t = Table::new([
        "fds",
        "writer",
        "latency RCU",
        "latency Mutex",
        "RCU/Mutex (lower is better)",
        "events/s RCU",
        "events/s Mutex",
        "RCU/Mutex (higher is better)",
    ])
    .align(&[
        Align::Right,
        Align::Center,
        Align::Right,
        Align::Right,
        Align::Right,
        Align::Right,
        Align::Right,
        Align::Right,
    ]);
    let lat = |ns: Option<f64>| ns.map_or("-".into(), |ns| format!("{:.1} µs", ns / 1000.0));
    let per_s = |n: u64, ns: Option<f64>| {
        ns.map_or("-".into(), |ns| format!("{:.0} k/s", n as f64 / ns * 1e6))
    };
    for n in sizes {
        for writer in [false, true] {
            let suffix = if writer { "+writer" } else { "" };
            let get = |g: &str, f: &str| {
                results
                    .get(&(g.to_string(), format!("{f}{suffix}"), n))
                    .copied()
            };
            let (lr, lm) = (get("latency", "rcu"), get("latency", "mutex"));
            let (tr, tm) = (get("throughput", "rcu"), get("throughput", "mutex"));
            let lat_ratio = ratio(lr, lm);
            // Events/s is n / time: the Mutex loop's time over RCU's.
            let thr_ratio = ratio(tm, tr);
            t.row([
                n.to_string(),
                if writer { "yes" } else { "no" }.to_string(),
                lat(lr),
                lat(lm),
                lat_ratio,
                per_s(n, tr),
                per_s(n, tm),
                thr_ratio,
            ]);
        }
    }
    t.render()
}
