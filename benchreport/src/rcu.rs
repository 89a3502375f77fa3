//! The rcu benchmarks' tables and the targets (met/MISSED), from one run of
//! `rcu/benches/run.sh`: the JSON rows under `<target>/rcu-bench/*.jsonl` and criterion's
//! results for the update mix under `<target>/rcu-bench/criterion/`.
//!
//! Every number is a median over the run's rounds of each round's median (read side: of 15
//! repetitions; call_rcu: of its batches); the read side's "min" is the fastest repetition of
//! all rounds (the least disturbed one); synchronize: the median over rounds of each
//! percentile and the pooled count of calls over 1 ms. Ratios are taken within the run.

use crate::error::{self, Error, Result};
use crate::fmt::{median, rate, ratio, share, thousands, time};
use crate::table::Table;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

/// One JSON row as the rcu benchmarks print them (one object per line). The writers:
/// `rcu/benches/read_side.rs` and `liburcu/bench.c` (groups `read_side_1t`/`read_side_2t`:
/// `median_ns`, `min_ns`, `max_ns`, `reps`, `iters`), `synchronize.rs` and `bench.c`
/// (`synchronize`: `median_ns`, `p50_ns`, `p90_ns`, `p99_ns`, `max_ns`, `count`,
/// `over_1ms`), `call_rcu.rs` and `bench.c` (`call_rcu`: `batch`, `median_ns`, `min_ns`,
/// `max_ns`, `reps`, `elements`), `bench.c`'s update mix (`update_mix`: as the read side
/// plus `elements`) and `callgrind.sh` (`callgrind`: `source`, `instr_per_iter`, `iters`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct Row {
    /// The table the row belongs to.
    pub group: String,
    /// The benchmark (ids starting with `liburcu` are liburcu's C code).
    pub id: String,
    /// call_rcu: callbacks per batch.
    #[serde(default)]
    pub batch: Option<u64>,
    /// The median over the repetitions, ns per iteration (per call, per batch).
    #[serde(default)]
    pub median_ns: Option<f64>,
    /// The fastest repetition.
    #[serde(default)]
    pub min_ns: Option<f64>,
    /// The slowest repetition (synchronize: the slowest call).
    #[serde(default)]
    pub max_ns: Option<f64>,
    /// Repetitions.
    #[serde(default)]
    pub reps: Option<u64>,
    /// Iterations per repetition (callgrind: iterations counted).
    #[serde(default)]
    pub iters: Option<u64>,
    /// Elements per iteration (a rate's numerator).
    #[serde(default)]
    pub elements: Option<u64>,
    /// synchronize: the 50th percentile of the calls' latency.
    #[serde(default)]
    pub p50_ns: Option<f64>,
    /// synchronize: the 90th percentile.
    #[serde(default)]
    pub p90_ns: Option<f64>,
    /// synchronize: the 99th percentile.
    #[serde(default)]
    pub p99_ns: Option<f64>,
    /// synchronize: calls measured.
    #[serde(default)]
    pub count: Option<u64>,
    /// synchronize: calls over 1 ms.
    #[serde(default)]
    pub over_1ms: Option<u64>,
    /// callgrind: `rust` or `c`.
    #[serde(default)]
    pub source: Option<String>,
    /// callgrind: instructions per loop iteration.
    #[serde(default)]
    pub instr_per_iter: Option<f64>,
}

/// `<criterion home>/update_mix/<id>/updater.json`: the update mix's updater rate.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq)]
pub struct Updater {
    /// Updates per second achieved while the reads were timed.
    pub updates_per_s: f64,
}

/// Read-side rows in display order (unknown ids follow, sorted).
pub const READ_ORDER: [&str; 19] = [
    "atomicptr_floor",
    "liburcu_floor",
    "atomicptr_floor_chunks_16",
    "qsbr_check_once_qs_every_1000",
    "qsbr_qs_every_1000",
    "liburcu_qsbr_qs_every_1000",
    "qsbr_check_once_qs_every_16",
    "qsbr_qs_every_16",
    "liburcu_qsbr_qs_every_16",
    "qsbr_check_once_qs_every_1",
    "qsbr_qs_every_1",
    "liburcu_qsbr_qs_every_1",
    "read_lock_membarrier",
    "liburcu_memb_read_lock",
    "read_lock_fence",
    "crossbeam_pin_load",
    "arc_swap_load",
    "parking_lot_rwlock_read",
    "std_mutex_lock",
];

/// Our read-side row -> liburcu's row of the same kind.
fn liburcu_peer(id: &str) -> Option<&'static str> {
    Some(match id {
        "qsbr_check_once_qs_every_1000" | "qsbr_qs_every_1000" => "liburcu_qsbr_qs_every_1000",
        "qsbr_check_once_qs_every_16" | "qsbr_qs_every_16" => "liburcu_qsbr_qs_every_16",
        "qsbr_check_once_qs_every_1" | "qsbr_qs_every_1" => "liburcu_qsbr_qs_every_1",
        "read_lock_membarrier" | "read_lock_fence" => "liburcu_memb_read_lock",
        "atomicptr_floor" => "liburcu_floor",
        _ => return None,
    })
}

/// A displayed time row (read side, update mix): merged over rounds or from criterion.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TimeRow {
    /// The benchmark id.
    pub id: String,
    /// Median ns per iteration.
    pub median_ns: Option<f64>,
    /// Lowest (read side: the fastest repetition; criterion: the CI's lower bound).
    pub lo_ns: Option<f64>,
    /// Highest.
    pub hi_ns: Option<f64>,
    /// Elements per iteration.
    pub elements: Option<u64>,
    /// liburcu's C code (shown as `id (C)`).
    pub c: bool,
    /// Update mix: the updater's rate (criterion rows).
    pub updater_per_s: Option<f64>,
}

impl TimeRow {
    fn name(&self) -> String {
        if self.c {
            format!("{} (C)", self.id)
        } else {
            self.id.clone()
        }
    }

    /// Elements per second.
    fn rate(&self) -> Option<f64> {
        let e = self.elements.filter(|&e| e != 0).unwrap_or(1) as f64;
        self.median_ns.map(|m| e / (m * 1e-9))
    }
}

/// `{group: {key: [rows]}}`, key = id, or `id@batch` for call_rcu.
pub type Groups = BTreeMap<String, BTreeMap<String, Vec<Row>>>;

/// Every row of every `<dir>/*.jsonl` (lines not starting with `{` are skipped).
pub fn load_rows(dir: &Path) -> Result<Groups> {
    let mut files: Vec<_> = match std::fs::read_dir(dir) {
        Ok(e) => e
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(source) => {
            return Err(Error::Io {
                path: dir.to_owned(),
                source,
            })
        }
    };
    files.sort();
    let mut groups = Groups::new();
    for path in files {
        for (n, line) in error::read(&path)?.lines().enumerate() {
            let line = line.trim();
            if !line.starts_with('{') {
                continue;
            }
            let r: Row = error::parse(&path, n + 1, line)?;
            let key = match r.batch {
                Some(b) => format!("{}@{b}", r.id),
                None => r.id.clone(),
            };
            groups
                .entry(r.group.clone())
                .or_default()
                .entry(key)
                .or_default()
                .push(r);
        }
    }
    Ok(groups)
}

/// `{group: {function id: row}}` from criterion's results under `dir`.
pub fn load_criterion(dir: &Path) -> Result<BTreeMap<String, BTreeMap<String, TimeRow>>> {
    let mut out: BTreeMap<String, BTreeMap<String, TimeRow>> = BTreeMap::new();
    for r in crate::criterion::load(dir)? {
        let m = r.estimates.median;
        let id = r.benchmark.function_id.clone().unwrap_or_default();
        let elements = match r.benchmark.throughput {
            Some(crate::criterion::Throughput::Elements(n)) => Some(n),
            _ => None,
        };
        let upd = r.dir.join("updater.json");
        let updater_per_s = if upd.exists() {
            Some(error::parse::<Updater>(&upd, 0, &error::read(&upd)?)?.updates_per_s)
        } else {
            None
        };
        out.entry(r.benchmark.group_id.clone()).or_default().insert(
            id.clone(),
            TimeRow {
                id,
                median_ns: Some(m.point_estimate),
                lo_ns: Some(m.confidence_interval.lower_bound),
                hi_ns: Some(m.confidence_interval.upper_bound),
                elements,
                c: false,
                updater_per_s,
            },
        );
    }
    Ok(out)
}

/// One row from a row's repeated runs: the median of the medians, the lowest minimum, the
/// highest maximum.
pub fn merged(runs: &[Row]) -> TimeRow {
    let med = |r: &Row| r.median_ns.unwrap_or(f64::NAN);
    let id = runs[0].id.clone();
    TimeRow {
        median_ns: median(runs.iter().map(med)),
        lo_ns: runs
            .iter()
            .map(|r| r.min_ns.unwrap_or(med(r)))
            .min_by(f64::total_cmp),
        hi_ns: runs
            .iter()
            .map(|r| r.max_ns.unwrap_or(med(r)))
            .max_by(f64::total_cmp),
        elements: runs[0].elements,
        c: id.starts_with("liburcu"),
        updater_per_s: None,
        id,
    }
}

/// Rows in `order` first, then the others sorted.
fn ordered<'a, T>(rows: &'a BTreeMap<String, T>, order: &[&str]) -> Vec<&'a T> {
    let mut out: Vec<&T> = order.iter().filter_map(|i| rows.get(*i)).collect();
    out.extend(
        rows.iter()
            .filter(|(k, _)| !order.contains(&k.as_str()))
            .map(|(_, v)| v),
    );
    out
}

/// Median and best (min) time per iteration, each against the same language's floor, the
/// median against liburcu's row of the same kind, and the instruction counts (when given).
fn read_table(
    title: &str,
    rows: &BTreeMap<String, TimeRow>,
    instr: &BTreeMap<String, f64>,
) -> String {
    let mut head = vec![
        "benchmark",
        "median",
        "min",
        "median x floor",
        "min x floor",
        "median x liburcu (same kind)",
    ];
    if !instr.is_empty() {
        head.extend(["instr/iter", "instr x floor"]);
    }
    let mut t = Table::new(head);
    for row in ordered(rows, &READ_ORDER) {
        let floor_id = if row.c {
            "liburcu_floor"
        } else {
            "atomicptr_floor"
        };
        let floor = rows.get(floor_id);
        let peer = liburcu_peer(&row.id)
            .and_then(|p| rows.get(p))
            .and_then(|p| p.median_ns);
        let mut cells = vec![
            row.name(),
            time(row.median_ns),
            time(row.lo_ns),
            ratio(row.median_ns, floor.and_then(|f| f.median_ns)),
            ratio(row.lo_ns, floor.and_then(|f| f.lo_ns)),
            ratio(row.median_ns, peer),
        ];
        if !instr.is_empty() {
            let n = instr.get(&row.id).copied();
            cells.push(n.map_or("-".into(), |n| format!("{n:.2}")));
            cells.push(ratio(n, instr.get(floor_id).copied()));
        }
        t.row(cells);
    }
    format!("#### {title}\n\n{}", t.render().trim_end())
}

/// One synchronize row over the rounds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SyncSummary {
    /// Median over rounds of the p50.
    pub p50: f64,
    /// Median over rounds of the p90.
    pub p90: f64,
    /// Median over rounds of the p99.
    pub p99: f64,
    /// The slowest call of all rounds.
    pub max: f64,
    /// Calls, all rounds.
    pub count: u64,
    /// Calls over 1 ms, all rounds.
    pub over: u64,
    /// over / count.
    pub share: f64,
    /// Rounds.
    pub rounds: usize,
}

fn sync_summary(runs: &[Row]) -> SyncSummary {
    let med = |f: fn(&Row) -> Option<f64>| {
        median(runs.iter().map(|r| f(r).unwrap_or(f64::NAN))).unwrap_or(f64::NAN)
    };
    let count = runs.iter().filter_map(|r| r.count).sum::<u64>();
    let over = runs.iter().filter_map(|r| r.over_1ms).sum::<u64>();
    SyncSummary {
        p50: med(|r| r.p50_ns),
        p90: med(|r| r.p90_ns),
        p99: med(|r| r.p99_ns),
        max: runs
            .iter()
            .filter_map(|r| r.max_ns)
            .max_by(f64::total_cmp)
            .unwrap_or(f64::NAN),
        count,
        over,
        share: if count == 0 {
            0.0
        } else {
            over as f64 / count as f64
        },
        rounds: runs.len(),
    }
}

/// liburcu's synchronize row for one of ours: QSBR readers -> liburcu QSBR, read_lock ->
/// memb.
fn sync_peer(id: &str) -> Option<String> {
    let n = id.rsplit('_').next().unwrap_or(id);
    if id.starts_with("qsbr_readers_") {
        Some(format!("liburcu_qsbr_readers_{n}"))
    } else if id.starts_with("read_lock_") {
        Some(format!("liburcu_memb_readers_{n}"))
    } else {
        None
    }
}

fn sync_table(groups: &Groups) -> (Option<String>, BTreeMap<String, SyncSummary>) {
    let s: BTreeMap<String, SyncSummary> = groups
        .get("synchronize")
        .map(|g| {
            g.iter()
                .map(|(k, r)| (k.clone(), sync_summary(r)))
                .collect()
        })
        .unwrap_or_default();
    if s.is_empty() {
        return (None, s);
    }
    let mut order = Vec::new();
    for n in 0..3 {
        order.extend([
            format!("qsbr_readers_{n}"),
            format!("liburcu_qsbr_readers_{n}"),
            format!("read_lock_membarrier_readers_{n}"),
            format!("liburcu_memb_readers_{n}"),
        ]);
    }
    order.push("read_lock_fence_readers_1".into());
    let order: Vec<&str> = order.iter().map(String::as_str).collect();
    let rounds = s.values().map(|v| v.rounds).max().unwrap_or(0);
    let mut t = Table::new([
        "benchmark",
        "calls",
        "p50",
        "p90",
        "p99",
        "max",
        "over 1 ms",
        "p50 x liburcu",
    ]);
    let ids: Vec<&String> = order
        .iter()
        .filter_map(|i| s.get_key_value(*i).map(|(k, _)| k))
        .chain(s.keys().filter(|k| !order.contains(&k.as_str())))
        .collect();
    for id in ids {
        let v = &s[id];
        let peer = sync_peer(id).and_then(|p| s.get(&p));
        let c = if id.starts_with("liburcu") {
            " (C)"
        } else {
            ""
        };
        t.row([
            format!("{id}{c}"),
            v.count.to_string(),
            time(Some(v.p50)),
            time(Some(v.p90)),
            time(Some(v.p99)),
            time(Some(v.max)),
            format!("{} ({})", v.over, share(v.share)),
            peer.map_or("-".into(), |p| ratio(Some(v.p50), Some(p.p50))),
        ]);
    }
    let text = format!(
        "#### synchronize latency per call, busy readers on 2 cores ({rounds} rounds)\n\n{}",
        t.render().trim_end()
    );
    (Some(text), s)
}

/// call_rcu rates: (id, batch) -> callbacks per second.
type CallRates = BTreeMap<(String, u64), f64>;

fn call_rcu_table(groups: &Groups) -> (Option<String>, CallRates) {
    let mut rates = CallRates::new();
    for runs in groups.get("call_rcu").into_iter().flat_map(|g| g.values()) {
        let Some(batch) = runs[0].batch else { continue };
        let med = median(runs.iter().map(|r| r.median_ns.unwrap_or(f64::NAN)));
        if let Some(med) = med {
            rates.insert((runs[0].id.clone(), batch), batch as f64 / (med * 1e-9));
        }
    }
    if rates.is_empty() {
        return (None, rates);
    }
    let batches: std::collections::BTreeSet<u64> = rates.keys().map(|k| k.1).collect();
    let mut ids: Vec<String> = [
        "rcu_call_rcu_qsbr_reader",
        "rcu_call_rcu_read_lock_reader",
        "crossbeam_defer_flush",
        "liburcu_qsbr_call_rcu",
        "liburcu_memb_call_rcu",
    ]
    .map(String::from)
    .to_vec();
    let rest: std::collections::BTreeSet<String> = rates
        .keys()
        .map(|k| k.0.clone())
        .filter(|i| !ids.contains(i))
        .collect();
    ids.extend(rest);
    let mut head = vec!["benchmark".to_string()];
    for b in &batches {
        head.extend([
            format!("{}: rate", thousands(*b)),
            "x liburcu qsbr".into(),
            "x liburcu memb".into(),
        ]);
    }
    let mut t = Table::new(head);
    let get = |id: &str, b: u64| rates.get(&(id.to_string(), b)).copied();
    for id in &ids {
        if !batches.iter().any(|b| get(id, *b).is_some()) {
            continue;
        }
        let mut cells = vec![if id.starts_with("liburcu") {
            format!("{id} (C)")
        } else {
            id.clone()
        }];
        for &b in &batches {
            let r = get(id, b);
            cells.extend([
                r.map_or("-".into(), rate),
                ratio(r, get("liburcu_qsbr_call_rcu", b)),
                ratio(r, get("liburcu_memb_call_rcu", b)),
            ]);
        }
        t.row(cells);
    }
    let text = format!(
        "#### call_rcu: a batch of callbacks enqueued, then waited for (rcu_barrier / flush), \
         one busy reader\n\n{}",
        t.render().trim_end()
    );
    (Some(text), rates)
}

/// An update-mix row's reference row and what is compared (time or rate).
fn mix_ref(id: &str) -> Option<(&'static str, bool)> {
    Some(match id {
        "reads_sync_updater" | "reads_sync_updater_1mps" | "reads_call_rcu_updater" => {
            ("reads_no_updater", false)
        }
        "crossbeam_reads_defer_updater" => ("crossbeam_reads_no_updater", false),
        "liburcu_qsbr_reads_sync_updater" => ("liburcu_qsbr_reads_no_updater", false),
        "liburcu_memb_reads_sync_updater" => ("liburcu_memb_reads_no_updater", false),
        "updates_sync" => ("liburcu_qsbr_updates_sync", true),
        "updates_call_rcu" => ("crossbeam_updates_defer", true),
        _ => return None,
    })
}

fn mix_table(rows: &BTreeMap<String, TimeRow>) -> String {
    let mut t = Table::new(["benchmark", "median", "min .. max", "rate", "ratio"]);
    for (id, row) in rows {
        let r =
            mix_ref(id).and_then(|(ref_id, is_rate)| Some((ref_id, is_rate, rows.get(ref_id)?)));
        let ratio = match r {
            None => "-".to_string(),
            Some((ref_id, true, reference)) => format!(
                "{:.2}x rate of {ref_id}",
                row.rate().unwrap_or(f64::NAN) / reference.rate().unwrap_or(f64::NAN)
            ),
            Some((ref_id, false, reference)) => {
                let mut s = format!(
                    "{:.2}x time of {ref_id}",
                    row.median_ns.unwrap_or(f64::NAN) / reference.median_ns.unwrap_or(f64::NAN)
                );
                if let Some(u) = row.updater_per_s.filter(|&u| u != 0.0) {
                    s += &format!(" (updater at {})", rate(u));
                }
                s
            }
        };
        t.row([
            row.name(),
            time(row.median_ns),
            format!("{} .. {}", time(row.lo_ns), time(row.hi_ns)),
            rate(row.rate().unwrap_or(f64::NAN)),
            ratio,
        ]);
    }
    format!(
        "#### Update-heavy mix: one updater (swap + retire) and one reader checking a magic \
         value\n\n{}",
        t.render().trim_end()
    )
}

/// The targets, each with this run's value and `met`/`MISSED`.
fn targets(
    read1: &BTreeMap<String, TimeRow>,
    instr: &BTreeMap<String, f64>,
    sync: &BTreeMap<String, SyncSummary>,
    call: &CallRates,
    mix: &BTreeMap<String, TimeRow>,
) -> String {
    let mut t = Table::new(["target", "this run", ""]);
    let mut check = |what: String, value: String, ok: bool| {
        t.row([what, value, if ok { "met" } else { "MISSED" }.to_string()]);
    };
    // Python's truthiness: a missing or zero value does not count.
    let nz = |x: Option<f64>| x.filter(|&v| v != 0.0);
    let med = |id: &str| nz(read1.get(id).and_then(|r| r.median_ns));
    let best = |id: &str| nz(read1.get(id).and_then(|r| r.lo_ns));
    let ins = |id: &str| nz(instr.get(id).copied());
    let floor = med("atomicptr_floor");
    let i_floor = ins("atomicptr_floor");
    for n in [16, 1000] {
        for (id, what) in [
            (
                format!("qsbr_check_once_qs_every_{n}"),
                "check-once `cell.qsbr_reader`",
            ),
            (format!("qsbr_qs_every_{n}"), "`RcuCell::load(&qsbr)`"),
        ] {
            let (Some(floor), Some(q)) = (floor, med(&id)) else {
                continue;
            };
            let mut extra = String::new();
            if let (Some(b), Some(bf)) = (best(&id), best("atomicptr_floor")) {
                extra += &format!("; min {:.2}x", b / bf);
            }
            if let (Some(i), Some(fi)) = (ins(&id), i_floor) {
                extra += &format!("; {i:.2} vs {fi:.2} instructions");
            }
            if let Some(chunked) = med(&format!("atomicptr_floor_chunks_{n}")) {
                extra += &format!(
                    "; the floor's load in the same chunked loop: {:.2}x, so {:.2}x that",
                    chunked / floor,
                    q / chunked
                );
            }
            check(
                format!("QSBR, quiescent_state every {n}, {what}: <= 1.1x the floor"),
                format!(
                    "median {:.2}x ({} vs {}){extra}",
                    q / floor,
                    time(Some(q)),
                    time(Some(floor))
                ),
                q / floor <= 1.1,
            );
        }
    }
    if let (Some(rl), Some(lm)) = (med("read_lock_membarrier"), med("liburcu_memb_read_lock")) {
        let mut extra = String::new();
        if let (Some(a), Some(b)) = (best("read_lock_membarrier"), best("liburcu_memb_read_lock")) {
            extra += &format!("; min {} vs {}", time(Some(a)), time(Some(b)));
        }
        if let (Some(a), Some(b)) = (ins("read_lock_membarrier"), ins("liburcu_memb_read_lock")) {
            extra += &format!("; {a:.0} vs {b:.0} instructions");
        }
        check(
            "read_lock + load + unlock (membarrier) <= liburcu memb".into(),
            format!(
                "median {:.2}x ({} vs {}){extra}",
                rl / lm,
                time(Some(rl)),
                time(Some(lm))
            ),
            rl <= lm,
        );
    }
    for n in 0..3 {
        let (Some(ours), Some(theirs)) = (
            sync.get(&format!("qsbr_readers_{n}")),
            sync.get(&format!("liburcu_qsbr_readers_{n}")),
        ) else {
            continue;
        };
        check(
            format!("synchronize, {n} busy QSBR readers: p50 <= liburcu QSBR's"),
            format!(
                "{} vs {} ({:.2}x)",
                time(Some(ours.p50)),
                time(Some(theirs.p50)),
                ours.p50 / theirs.p50
            ),
            ours.p50 <= theirs.p50,
        );
        check(
            format!(
                "synchronize, {n} busy QSBR readers: share of calls over 1 ms <= liburcu QSBR's"
            ),
            format!(
                "{} ({} of {}) vs {} ({} of {})",
                share(ours.share),
                ours.over,
                ours.count,
                share(theirs.share),
                theirs.over,
                theirs.count
            ),
            ours.share <= theirs.share,
        );
    }
    for n in 0..3 {
        let (Some(ours), Some(theirs)) = (
            sync.get(&format!("read_lock_membarrier_readers_{n}")),
            sync.get(&format!("liburcu_memb_readers_{n}")),
        ) else {
            continue;
        };
        check(
            format!("(also) synchronize, {n} busy read_lock readers: p50 <= liburcu memb's"),
            format!(
                "{} vs {}; over 1 ms {} ({} of {}) vs {} ({} of {})",
                time(Some(ours.p50)),
                time(Some(theirs.p50)),
                share(ours.share),
                ours.over,
                ours.count,
                share(theirs.share),
                theirs.over,
                theirs.count
            ),
            ours.p50 <= theirs.p50 && ours.share <= theirs.share,
        );
    }
    let batches: std::collections::BTreeSet<u64> = call.keys().map(|k| k.1).collect();
    for b in batches {
        let get = |id: &str| nz(call.get(&(id.to_string(), b)).copied());
        let (Some(ours), Some(theirs)) = (
            get("rcu_call_rcu_qsbr_reader"),
            get("liburcu_qsbr_call_rcu"),
        ) else {
            continue;
        };
        check(
            format!(
                "call_rcu, batches of {}, QSBR reader: >= 5 M callbacks/s (issue 3)",
                thousands(b)
            ),
            format!("{}; {:.2}x liburcu QSBR", rate(ours), ours / theirs),
            ours >= 5e6,
        );
    }
    if let Some(up) = mix.get("updates_sync") {
        let r = up.rate().unwrap_or(f64::NAN);
        check(
            ">= 1 M updates/s through synchronize, QSBR reader (issue 3)".into(),
            rate(r),
            r >= 1e6,
        );
    }
    if let (Some(r0), Some(r1)) = (
        mix.get("reads_no_updater"),
        mix.get("reads_sync_updater_1mps"),
    ) {
        let q = r1.median_ns.unwrap_or(f64::NAN) / r0.median_ns.unwrap_or(f64::NAN);
        check(
            "reads with a synchronize updater paced to 1 M/s within 1.2x of a lone reader \
             (issue 3)"
                .into(),
            format!("{q:.2}x"),
            q <= 1.2,
        );
    }
    format!("#### Targets\n\n{}", t.render().trim_end())
}

/// The whole report for the results under `out_dir` (`<target>/rcu-bench`): the read-side
/// tables (1 and 2 threads; instruction counts), synchronize, call_rcu, the update mix and
/// the targets, separated by blank lines, ending in a newline.
pub fn report(out_dir: &Path) -> Result<String> {
    let crit = load_criterion(&out_dir.join("criterion"))?;
    let groups = load_rows(out_dir)?;
    if crit.is_empty() && groups.is_empty() {
        return Err(Error::NoResults {
            dir: out_dir.to_owned(),
            hint: "run rcu/benches/run.sh first",
        });
    }
    let instr: BTreeMap<String, f64> = groups
        .get("callgrind")
        .map(|g| {
            g.iter()
                .filter_map(|(id, r)| Some((id.clone(), r.last()?.instr_per_iter?)))
                .collect()
        })
        .unwrap_or_default();
    let mut sections = Vec::new();
    let mut read1 = BTreeMap::new();
    for (g, title) in [
        (
            "read_side_1t",
            "Read side, 1 thread: one section + one pointer load per iteration (value through \
             black_box)",
        ),
        (
            "read_side_2t",
            "Read side, 2 threads (a second thread does the same reads; the time is measured \
             on one)",
        ),
    ] {
        let mut rows = crit.get(g).cloned().unwrap_or_default();
        for (id, runs) in groups.get(g).into_iter().flatten() {
            rows.insert(id.clone(), merged(runs));
        }
        if !rows.is_empty() {
            let none = BTreeMap::new();
            sections.push(read_table(
                title,
                &rows,
                if g == "read_side_1t" { &instr } else { &none },
            ));
        }
        if g == "read_side_1t" {
            read1 = rows;
        }
    }
    if !instr.is_empty() && read1.is_empty() {
        let rows = instr
            .keys()
            .map(|id| {
                let row = TimeRow {
                    id: id.clone(),
                    c: id.starts_with("liburcu"),
                    ..TimeRow::default()
                };
                (id.clone(), row)
            })
            .collect();
        sections.push(read_table(
            "Read side: instructions per iteration (callgrind)",
            &rows,
            &instr,
        ));
    }
    let (text, sync) = sync_table(&groups);
    sections.extend(text);
    let (text, call) = call_rcu_table(&groups);
    sections.extend(text);
    let mut mix = crit.get("update_mix").cloned().unwrap_or_default();
    for (id, runs) in groups.get("update_mix").into_iter().flatten() {
        mix.insert(id.clone(), merged(runs));
    }
    if !mix.is_empty() {
        sections.push(mix_table(&mix));
    }
    sections.push(targets(&read1, &instr, &sync, &call, &mix));
    Ok(sections.join("\n\n") + "\n")
}
