//! The memory crate's `lookup` benchmark (`cargo bench -p memory --bench lookup`): a
//! markdown table of criterion's medians with ratios and the issue's targets, the paired
//! RCU-against-floor comparison (`LOOKUP_FLOOR=1`), the background threads' CPU shares, and
//! an SVG bar chart (log scale).
//!
//! Reads `<CRITERION_DIR>/lookup-*/<variant>/new/estimates.json` (each benchmark's median),
//! `<CRITERION_DIR>/lookup-*/<variant>/lookup-extra.txt` (key=value lines the bench writes)
//! and `<CRITERION_DIR>/lookup_floor.txt` (the paired comparison).

use crate::error::{self, Error, Result};
use crate::fmt::ratio;
use crate::svg::Svg;
use crate::table::{Align, Table};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::Path;

const VARIANTS: [&str; 10] = [
    "floor-bsearch",
    "floor-mru",
    "floor-snapshot",
    "rcu-qsbr",
    "rcu-qsbr-checked",
    "rcu-guard",
    "rcu-shared-hint",
    "mutex-walk",
    "rwlock-bsearch",
    "vm-memory-atomic",
];

const COLORS: [&str; 10] = [
    "#9e9e9e", "#616161", "#263238", "#1b5e20", "#2e7d32", "#66bb6a", "#f9a825", "#c62828",
    "#6a1b9a", "#1565c0",
];

/// scenario -> variant -> median ns
type Results = BTreeMap<String, BTreeMap<String, f64>>;

/// scenario -> variant -> the bench's `lookup-extra.txt` (key=value lines)
type Extras = BTreeMap<String, BTreeMap<String, BTreeMap<String, f64>>>;

/// The medians and extras of every `<dir>/lookup-<scenario>/<variant>/`.
pub fn read(dir: &Path) -> Result<(Results, Extras)> {
    let mut out = Results::new();
    let mut extras = Extras::new();
    let Ok(groups) = fs::read_dir(dir) else {
        return Ok((out, extras));
    };
    for g in groups.flatten() {
        let name = g.file_name().to_string_lossy().into_owned();
        let Some(scenario) = name.strip_prefix("lookup-") else {
            continue;
        };
        for v in VARIANTS {
            let f = g.path().join(v).join("new").join("estimates.json");
            if f.exists() {
                let e: crate::criterion::Estimates = error::parse(&f, 0, &error::read(&f)?)?;
                out.entry(scenario.to_string())
                    .or_default()
                    .insert(v.to_string(), e.median.point_estimate);
            }
            let f = g.path().join(v).join("lookup-extra.txt");
            if let Ok(text) = fs::read_to_string(&f) {
                let kv = text
                    .lines()
                    .filter_map(|l| l.split_once('='))
                    .filter_map(|(k, v)| Some((k.to_string(), v.trim().parse().ok()?)))
                    .collect();
                extras
                    .entry(scenario.to_string())
                    .or_default()
                    .insert(v.to_string(), kv);
            }
        }
    }
    Ok((out, extras))
}

/// One line of `lookup_floor.txt` (the paired comparison): key -> value.
type FloorRow = BTreeMap<String, String>;

fn read_floor(dir: &Path) -> Vec<FloorRow> {
    fs::read_to_string(dir.join("lookup_floor.txt"))
        .unwrap_or_default()
        .lines()
        .map(|l| {
            l.split_whitespace()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<FloorRow>()
        })
        .filter(|r| r.contains_key("scenario"))
        .collect()
}

/// The paired comparison of `rcu-qsbr` with `floor-snapshot`, and its target.
fn floor_section(rows: &[FloorRow]) -> String {
    let mut md = String::new();
    if rows.is_empty() {
        return md;
    }
    let f = |r: &FloorRow, k: &str| r.get(k).and_then(|v| v.parse::<f64>().ok());
    let rounds = rows[0].get("rounds").map_or("?", |r| r.as_str());
    let _ = writeln!(
        md,
        "\n### RCU against its floor (paired, no writer)\n\n\
         `LOOKUP_FLOOR=1 cargo bench -p memory --bench lookup`: {rounds} rounds of 2^20 \
         lookups of each variant, the order rotating every round; medians of ns per lookup, \
         and of the per-round ratio floor time / RCU time, which is RCU's lookup rate over the \
         floor's ([q1, q3] of the rounds). `floor-snapshot` is the same lookup code through a \
         plain `&RamSnapshot` taken once and never updated (no RCU, no lock); `rcu-qsbr` is a \
         vCPU's path, one `RamReader` per quiescent-state interval of 256 lookups; \
         `rcu-qsbr-checked` checks the proof and loads the snapshot on every lookup \
         (`RamList::host_addr(&me, ..)`). The floor and `rcu-qsbr` run the same out-of-line \
         loop of 256 lookups, i.e. the same machine code per lookup (instructions per \
         lookup: `scripts/lookup-instructions.sh`). `t2`: a second reader thread on the \
         other CPU does the same; \"CPU share\" is how much of the wall time each thread \
         got.\n"
    );
    let _ = writeln!(
        md,
        "| scenario | floor-snapshot | rcu-qsbr | **RCU / floor** [q1, q3] | rcu-qsbr-checked \
         | checked / floor | CPU share |\n|---|---:|---:|---:|---:|---:|---:|"
    );
    for r in rows {
        let share = match (f(r, "main_share"), f(r, "bg_share")) {
            (Some(m), Some(b)) => format!("{:.0}%/{:.0}%", m * 100.0, b * 100.0),
            (Some(m), None) => format!("{:.0}%", m * 100.0),
            _ => "–".into(),
        };
        let num = |k: &str, d: usize| f(r, k).map_or("–".into(), |x| format!("{x:.d$}"));
        let _ = writeln!(
            md,
            "| {} | {} | {} | **{}** [{}, {}] | {} | {} | {share} |",
            r["scenario"],
            num("floor_ns", 2),
            num("rcu_ns", 2),
            num("ratio", 3),
            num("ratio_q1", 3),
            num("ratio_q3", 3),
            num("checked_ns", 2),
            num("checked_ratio", 3),
        );
    }
    let _ = writeln!(
        md,
        "\n| target | worst scenario | RCU / floor | verdict |\n|---|---|---:|---|"
    );
    for t in ["t1", "t2"] {
        let worst = rows
            .iter()
            .filter(|r| r["scenario"].starts_with(&format!("{t}-")))
            .filter_map(|r| Some((r["scenario"].clone(), f(r, "ratio")?)))
            .min_by(|a, b| a.1.total_cmp(&b.1));
        let readers = if t == "t1" { "1 reader" } else { "2 readers" };
        match worst {
            Some((sc, x)) => {
                let verdict = if x >= 0.95 { "met" } else { "NOT met" };
                let _ = writeln!(
                    md,
                    "| RCU >= 0.95x the floor's rate, {readers}, every scenario | {sc} | \
                     {x:.3} | {verdict} |"
                );
            }
            None => {
                let _ = writeln!(
                    md,
                    "| RCU >= 0.95x the floor's rate, {readers} | – | – | not measured |"
                );
            }
        }
    }
    md
}

/// For the 2-thread and writer scenarios: how much of the time the threads really ran.
fn concurrency(r: &Results, x: &Extras) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "\n### Background threads\n\nThe machine is shared: per variant, the share of wall \
         time the measuring thread / the second reader spent on a CPU, and the writer's rate \
         (replacements per second).\n"
    );
    let mut t = variant_table();
    for s in order(r) {
        if !s.starts_with("t2") && !s.ends_with("-writer") {
            continue;
        }
        let mut row = vec![s.clone()];
        for v in VARIANTS {
            let Some(e) = x.get(&s).and_then(|m| m.get(v)) else {
                row.push("–".into());
                continue;
            };
            let mut cell = Vec::new();
            if let Some(m) = e.get("main_share") {
                let b = e
                    .get("bg_share")
                    .map_or(String::new(), |b| format!("/{:.0}%", b * 100.0));
                cell.push(format!("{:.0}%{b}", m * 100.0));
            }
            if let Some(w) = e.get("writer_rate") {
                cell.push(format!("{w:.0}/s"));
            }
            row.push(cell.join(", "));
        }
        t.row(row);
    }
    md + &t.render()
}

/// A table with a scenario column and one right-aligned column per variant.
fn variant_table() -> Table {
    let head = std::iter::once("scenario").chain(VARIANTS);
    let mut align = vec![Align::Default];
    align.extend([Align::Right; VARIANTS.len()]);
    Table::new(head).align(&align)
}

/// Scenarios in a readable order: threads, writer, blocks, pattern.
fn order(r: &Results) -> Vec<String> {
    let mut v: Vec<String> = r.keys().cloned().collect();
    let key = |s: &String| {
        let parts: Vec<&str> = s.split('-').collect();
        let t: u32 = parts[0].trim_start_matches('t').parse().unwrap_or(0);
        let b: u32 = parts
            .get(1)
            .and_then(|b| b.trim_start_matches('b').parse().ok())
            .unwrap_or(0);
        let p = match parts.get(2).copied() {
            Some("mru") => 0,
            Some("hot90") => 1,
            _ => 2,
        };
        (s.ends_with("-writer"), t, b, p)
    };
    v.sort_by_key(key);
    v
}

fn get(r: &Results, scenario: &str, variant: &str) -> Option<f64> {
    r.get(scenario)?.get(variant).copied()
}

fn markdown(r: &Results) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Median ns per lookup on the measuring thread; in parentheses the ratio to \
         `floor-bsearch` of the same scenario (without the writer for `-writer` scenarios). \
         Criterion measures one variant after the other, so on a loaded machine the ratios \
         between columns are only as good as the machine was steady; the paired section \
         further down compares RCU with its floor round by round.\n"
    );
    let mut t = variant_table();
    for s in order(r) {
        let base = get(r, s.trim_end_matches("-writer"), "floor-bsearch");
        let mut row = vec![s.clone()];
        for v in VARIANTS {
            row.push(match (get(r, &s, v), base) {
                (Some(ns), Some(b)) => format!("{ns:.2} ({})", ratio(Some(ns), Some(b))),
                (Some(ns), None) => format!("{ns:.2}"),
                (None, _) => "–".into(),
            });
        }
        t.row(row);
    }
    md += &t.render();

    let _ = writeln!(md, "\n### The issue's targets\n");
    let mut t = Table::new(["target", "measured", "verdict"]).align(&[
        Align::Default,
        Align::Right,
        Align::Default,
    ]);
    let mut check = |what: String, value: Option<f64>, ok: &dyn Fn(f64) -> bool| {
        let (v, verdict) = match value {
            Some(x) => (format!("{x:.2}"), if ok(x) { "met" } else { "NOT met" }),
            None => ("–".into(), "not measured"),
        };
        t.row([what, v, verdict.to_string()]);
    };
    let div = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| a / b);
    for b in ["b4", "b32"] {
        let sc = format!("t1-{b}-mru");
        let rcu = get(r, &sc, "rcu-qsbr");
        check(
            format!("MRU hit ({sc}): rcu-qsbr / floor-mru <= 1.2"),
            div(rcu, get(r, &sc, "floor-mru")),
            &|x| x <= 1.2,
        );
        check(
            format!("MRU hit ({sc}): vm-memory-atomic / rcu-qsbr >= 8"),
            div(get(r, &sc, "vm-memory-atomic"), rcu),
            &|x| x >= 8.0,
        );
        check(
            format!("MRU hit ({sc}): mutex-walk / rcu-qsbr >= 8"),
            div(get(r, &sc, "mutex-walk"), rcu),
            &|x| x >= 8.0,
        );
    }
    check(
        "uniform over 32 (t1-b32-uniform): rcu-qsbr / floor-bsearch <= 1.3".into(),
        div(
            get(r, "t1-b32-uniform", "rcu-qsbr"),
            get(r, "t1-b32-uniform", "floor-bsearch"),
        ),
        &|x| x <= 1.3,
    );
    check(
        "2 threads + writer (t2-b32-uniform-writer) / 1 thread (t1-b32-uniform), rcu-qsbr <= 1.3"
            .into(),
        div(
            get(r, "t2-b32-uniform-writer", "rcu-qsbr"),
            get(r, "t1-b32-uniform", "rcu-qsbr"),
        ),
        &|x| x <= 1.3,
    );
    md + &t.render()
}

fn svg(r: &Results) -> String {
    let scenarios = order(r);
    let (left, right, bar, gap, top) = (230.0, 140.0, 11.0, 18.0, 75.0);
    let plot_w = 620.0;
    let (lo, hi) = (0.2f64, 500.0f64);
    let x = |ns: f64| left + plot_w * ((ns.clamp(lo, hi) / lo).ln() / (hi / lo).ln());
    let rows: usize = scenarios.iter().map(|s| r[s].len()).sum();
    let height = top + rows as f64 * bar + scenarios.len() as f64 * gap + 40.0;
    let width = left + plot_w + right;
    let mut s = Svg::new(
        &format!(r#"width="{width}" height="{height}" font-family="sans-serif" font-size="10""#),
        r#"width="100%" height="100%""#,
    );
    s.push(format!(
                r#"<text x="{left}" y="18" font-size="13" font-weight="bold">gpa → hva lookup: ns per lookup, CPU time of the measuring thread (median, log scale)</text>"#
    ));
    for (i, v) in VARIANTS.iter().enumerate() {
        let lx = left + (i % 4) as f64 * 150.0;
        let ly = 30.0 + (i / 4) as f64 * 13.0;
        s.push(format!(
                        r#"<rect x="{lx}" y="{}" width="10" height="9" fill="{}"/><text x="{}" y="{}">{v}</text>"#,
            ly - 8.0,
            COLORS[i],
            lx + 14.0,
            ly
        ));
    }
    for t in [0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0] {
        let gx = x(t);
        s.push(format!(
                        r##"<line x1="{gx:.1}" y1="{}" x2="{gx:.1}" y2="{}" stroke="#ddd"/><text x="{gx:.1}" y="{}" text-anchor="middle" fill="#555">{t}</text>"##,
            top - 6.0,
            height - 30.0,
            height - 18.0
        ));
    }
    let mut y = top;
    for sc in &scenarios {
        s.push(format!(
            r#"<text x="{}" y="{}" text-anchor="end" font-weight="bold">{sc}</text>"#,
            left - 8.0,
            y + 9.0
        ));
        for (i, v) in VARIANTS.iter().enumerate() {
            let Some(ns) = get(r, sc, v) else { continue };
            let w = (x(ns) - left).max(1.0);
            s.push(format!(
                                r#"<rect x="{left}" y="{y:.1}" width="{w:.1}" height="{}" fill="{}"><title>{sc} {v}: {ns:.2} ns</title></rect><text x="{:.1}" y="{:.1}">{ns:.2}</text>"#,
                bar - 1.0,
                COLORS[i],
                left + w + 3.0,
                y + bar - 2.5
            ));
            y += bar;
        }
        y += gap;
    }
    s.finish()
}

/// The markdown (tables) and the SVG chart for the results under `dir`.
pub fn report(dir: &Path) -> Result<(String, String)> {
    let (r, x) = read(dir)?;
    if r.is_empty() {
        return Err(Error::NoResults {
            dir: dir.to_owned(),
            hint: "run `cargo bench -p memory --bench lookup` first",
        });
    }
    let md = markdown(&r) + &floor_section(&read_floor(dir)) + &concurrency(&r, &x);
    Ok((md, svg(&r)))
}
