//! The VMM's end-to-end lookup benchmark (`scripts/bench-lookup.py`): the script runs the
//! `vmm` binary for every `--ram-lookup` design, vCPU count and writer setting, and writes
//! every run's measurements to a results file ([`Results`]); this module takes the medians
//! over the runs and prints the markdown (main table, notes, writer summary, targets, CPU
//! table) and draws the grouped bar chart of the aggregate lookup rate.

use crate::error::{self, Error, Result};
use crate::fmt::{median, ratio, sig};
use crate::svg::{self, Svg};
use crate::table::Table;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// The designs in the chart's order (and their colours).
pub const DESIGNS: [(&str, &str); 4] = [
    ("rcu", "#2b6cb0"),
    ("mutex", "#c53030"),
    ("rwlock", "#d69e2e"),
    ("vm-memory", "#38a169"),
];

/// The results file `scripts/bench-lookup.py` writes: its parameters and every run.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Results {
    /// How the runs were made.
    pub params: Params,
    /// Every run, in the order they ran.
    pub runs: Vec<Run>,
}

/// The benchmark's parameters (the script's options).
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Params {
    /// Addresses per vCPU table.
    pub count: u64,
    /// Rounds per vCPU.
    pub rounds: u64,
    /// Runs per configuration.
    pub repeats: u64,
    /// `--mem` of every run.
    pub mem: String,
    /// The writer's block size, bytes.
    pub churn_size: u64,
    /// Whether the writer filled the block before each add.
    pub churn_fill: bool,
    /// The writer's target add+remove pairs per second.
    pub rate: f64,
    /// The designs run, in order.
    pub designs: Vec<String>,
    /// The vCPU counts run, in order.
    pub cpus: Vec<u32>,
}

/// One VMM run's measurements (the script's `run_one`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Run {
    /// `--ram-lookup` design.
    pub design: String,
    /// vCPUs.
    pub cpus: u32,
    /// Whether the `vmmctl churn` writer ran.
    pub writer: bool,
    /// Wall time of the run, s.
    pub wall_s: f64,
    /// Total lookups / (total VMM ns / vCPUs), per second.
    pub aggregate: f64,
    /// The vCPUs' mean lookup rate, per second.
    pub per_vcpu: f64,
    /// VMM ns per lookup, all vCPUs.
    pub ns_per_lookup: f64,
    /// The VMM process's CPU time (user + sys), s.
    pub cpu_s: f64,
    /// The VMM's involuntary context switches.
    pub nivcsw: f64,
    /// Other processes' CPU during the run, in cores.
    pub foreign: f64,
    /// The writer client's and the script's CPU time, s.
    pub client_cpu_s: f64,
    /// The writer's achieved pairs per second.
    #[serde(default)]
    pub writer_rate: Option<f64>,
    /// The writer's round trip per pair, p50, µs (null when unknown).
    #[serde(default)]
    pub writer_p50_us: Option<f64>,
    /// The writer's round trip per pair, p99, µs.
    #[serde(default)]
    pub writer_p99_us: Option<f64>,
    /// The writer's errors.
    #[serde(default)]
    pub writer_errors: Vec<String>,
}

/// (design, vCPUs, writer).
type Config = (String, u32, bool);

/// A configuration's medians over its runs.
#[derive(Clone, Debug, Default)]
struct Medians {
    aggregate: f64,
    per_vcpu: f64,
    ns_per_lookup: f64,
    wall_s: f64,
    cpu_s: f64,
    nivcsw: f64,
    foreign: f64,
    client_cpu_s: f64,
    writer_rate: f64,
    rtt_p50: f64,
    rtt_p99: f64,
    writer_errors: Vec<String>,
}

fn medians(runs: &[&Run], writer: bool) -> Medians {
    let m = |f: fn(&Run) -> f64| median(runs.iter().map(|r| f(r))).unwrap_or(f64::NAN);
    let mut out = Medians {
        aggregate: m(|r| r.aggregate),
        per_vcpu: m(|r| r.per_vcpu),
        ns_per_lookup: m(|r| r.ns_per_lookup),
        wall_s: m(|r| r.wall_s),
        cpu_s: m(|r| r.cpu_s),
        nivcsw: m(|r| r.nivcsw),
        foreign: m(|r| r.foreign),
        client_cpu_s: m(|r| r.client_cpu_s),
        ..Medians::default()
    };
    if writer {
        out.writer_rate = m(|r| r.writer_rate.unwrap_or(f64::NAN));
        out.rtt_p50 = m(|r| r.writer_p50_us.unwrap_or(f64::NAN)) / 1e6;
        out.rtt_p99 = m(|r| r.writer_p99_us.unwrap_or(f64::NAN)) / 1e6;
        out.writer_errors = runs.iter().flat_map(|r| r.writer_errors.clone()).collect();
    }
    out
}

/// `4096` bytes as `4 KiB`, `2097152` as `2 MiB`.
fn size_name(n: u64) -> String {
    for (unit, div) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if n >= div && n.is_multiple_of(div) {
            return format!("{} {unit}", n / div);
        }
    }
    format!("{n} bytes")
}

/// Millions, two decimals: `12.34 M`.
fn mega(x: f64) -> String {
    format!("{:.2} M", x / 1e6)
}

/// A string list as the script printed it (Python's list repr).
fn py_list(items: &[String]) -> String {
    let quoted: Vec<String> = items
        .iter()
        .map(|s| {
            let q = if s.contains('\'') && !s.contains('"') {
                '"'
            } else {
                '\''
            };
            let mut out = String::from(q);
            for c in s.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    '\t' => out.push_str("\\t"),
                    c if c == q => {
                        out.push('\\');
                        out.push(c);
                    }
                    c => out.push(c),
                }
            }
            out.push(q);
            out
        })
        .collect();
    format!("[{}]", quoted.join(", "))
}

/// The markdown and the SVG chart for a results file.
pub fn report_file(path: &Path) -> Result<(String, String)> {
    let results: Results = error::parse(path, 0, &error::read(path)?)?;
    report(&results).ok_or_else(|| Error::NoResults {
        dir: path.to_owned(),
        hint: "run scripts/bench-lookup.py (it writes this file)",
    })
}

/// The markdown and the SVG chart; `None` without runs.
pub fn report(res: &Results) -> Option<(String, String)> {
    let p = &res.params;
    let configs: Vec<Config> = p
        .cpus
        .iter()
        .flat_map(|&c| {
            [false, true]
                .into_iter()
                .flat_map(move |w| p.designs.iter().map(move |d| (d.clone(), c, w)))
        })
        .collect();
    let mut med: BTreeMap<Config, Medians> = BTreeMap::new();
    for k in &configs {
        let runs: Vec<&Run> = res
            .runs
            .iter()
            .filter(|r| r.design == k.0 && r.cpus == k.1 && r.writer == k.2)
            .collect();
        if !runs.is_empty() {
            med.insert(k.clone(), medians(&runs, k.2));
        }
    }
    if med.is_empty() {
        return None;
    }
    let configs: Vec<Config> = configs
        .into_iter()
        .filter(|k| med.contains_key(k))
        .collect();
    let yes = |w: bool| if w { "yes" } else { "no" };
    let mut md = format!(
        "\n### lookup-bench: {} addresses per vCPU x {} rounds, --mem {}, medians of {} runs\n\n",
        p.count, p.rounds, p.mem, p.repeats
    );
    let mut t = Table::new([
        "design",
        "vCPUs",
        "writer",
        "lookups/s per vCPU",
        "aggregate lookups/s",
        "vs RCU",
        "ns per lookup",
        "writer pairs/s",
        "add+remove p50 / p99",
    ]);
    for k in &configs {
        let (d, c, w) = k;
        let m = &med[k];
        let base = med.get(&("rcu".to_string(), *c, *w));
        t.row([
            d.clone(),
            c.to_string(),
            yes(*w).into(),
            mega(m.per_vcpu),
            mega(m.aggregate),
            ratio(Some(m.aggregate), base.map(|b| b.aggregate)),
            format!("{:.1}", m.ns_per_lookup),
            if *w {
                format!("{:.0}", m.writer_rate)
            } else {
                "-".into()
            },
            if *w {
                format!("{:.2} / {:.2} ms", m.rtt_p50 * 1e3, m.rtt_p99 * 1e3)
            } else {
                "-".into()
            },
        ]);
    }
    md += &t.render();
    let _ = writeln!(
        md,
        "\n- lookups/s per vCPU: each vCPU's R x N lookups over the VMM nanoseconds it reported, averaged
  over the vCPUs.
- aggregate: total lookups / (total VMM ns / vCPUs). The guest sums every vCPU's VMM time; the
  vCPUs run their rounds at the same time, so that sum divided by the number of vCPUs is the
  (mean) time the lookups took, and the aggregate is what all vCPUs together translate per
  second (the sum of the per-vCPU rates when the vCPUs are balanced).
- vs RCU: the aggregate over the RCU design's, same vCPUs and writer setting.
- writer: `vmmctl churn`, a control client doing ram-add + ram-remove of a {} block at
  0xe0000000 ({}), paced to at most {} pairs/s; \"pairs/s\" is what it achieved, p50/p99 its
  round trip per pair (median over runs).",
        size_name(p.churn_size),
        if p.churn_fill {
            "filled with a pattern before each add"
        } else {
            "left zeroed"
        },
        sig(p.rate, 6)
    );
    let writers: Vec<&Medians> = med.iter().filter(|(k, _)| k.2).map(|(_, m)| m).collect();
    if !writers.is_empty() {
        let mm = |f: fn(&Medians) -> f64| median(writers.iter().map(|m| f(m))).unwrap_or(f64::NAN);
        let (rate, p50, p99) = (mm(|m| m.writer_rate), mm(|m| m.rtt_p50), mm(|m| m.rtt_p99));
        let _ = writeln!(
            md,
            "\nWriter: asked for {} add+remove pairs/s, achieved {rate:.0}/s (median over runs); \
             round trip p50 {:.2} ms, p99 {:.2} ms.",
            sig(p.rate, 6),
            p50 * 1e3,
            p99 * 1e3
        );
        if rate < 0.95 * p.rate {
            let _ = writeln!(
                md,
                "The target rate is not reachable here: the writer ran back to back, as fast as \
                 the VMM answers ({:.0} pairs/s at the median round trip).",
                1.0 / p50
            );
        }
        // In configuration order, as the script listed them.
        let errs: Vec<String> = configs
            .iter()
            .filter(|k| k.2)
            .flat_map(|k| med[k].writer_errors.clone())
            .collect();
        if !errs.is_empty() {
            let _ = writeln!(
                md,
                "Writer errors (first few): {}",
                py_list(&errs[..errs.len().min(3)])
            );
        }
    }
    md += "\nTargets:\n";
    let agg = |d: &str, c: u32, w: bool| med.get(&(d.to_string(), c, w)).map(|m| m.aggregate);
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    if let (Some(r), Some(m)) = (agg("rcu", 2, true), agg("mutex", 2, true)) {
        let x = r / m;
        let _ = writeln!(
            md,
            "- RCU >= 5x Mutex, 2 vCPUs, writer running: {x:.2}x -> {}",
            verdict(x >= 5.0)
        );
    }
    if let (Some(with), Some(without)) = (agg("rcu", 2, true), agg("rcu", 2, false)) {
        let x = without / with;
        let _ = writeln!(
            md,
            "- RCU with the writer within 1.1x of without (2 vCPUs): {x:.2}x slower -> {}",
            verdict(x <= 1.1)
        );
    }
    if let (Some(with), Some(without)) = (agg("rcu", 1, true), agg("rcu", 1, false)) {
        let _ = writeln!(md, "- (same, 1 vCPU: {:.2}x)", without / with);
    }
    md += "\nWhere the host's CPU went (medians): the VMM process (user+sys), the writer client \
           (vmmctl, and this script), everything else (other processes and kernel threads, in \
           cores over the run), and the VMM's involuntary context switches (its threads \
           preempted):\n\n";
    let mut t = Table::new([
        "design",
        "vCPUs",
        "writer",
        "wall s",
        "VMM cpu s",
        "client cpu s",
        "others, cores",
        "invol. ctx switches",
    ]);
    for k in &configs {
        let m = &med[k];
        t.row([
            k.0.clone(),
            k.1.to_string(),
            yes(k.2).into(),
            format!("{:.1}", m.wall_s),
            format!("{:.1}", m.cpu_s),
            format!("{:.2}", m.client_cpu_s),
            format!("{:.2}", m.foreign),
            format!("{:.0}", m.nivcsw),
        ]);
    }
    md += &t.render();
    let chart = chart(&med);
    Some((md, chart))
}

/// The grouped bar chart: aggregate lookups/s per configuration, one bar per design.
fn chart(med: &BTreeMap<Config, Medians>) -> String {
    let groups = [(1u32, false), (1, true), (2, false), (2, true)];
    let (w_, h_) = (760.0, 420.0);
    let (left, right, top, bottom) = (70.0, 20.0, 50.0, 80.0);
    let (pw, ph): (f64, f64) = (w_ - left - right, h_ - top - bottom);
    let vmax = med
        .values()
        .map(|m| m.aggregate)
        .max_by(f64::total_cmp)
        .unwrap_or(0.0)
        / 1e6;
    let mut step = if vmax >= 1.0 {
        10f64.powi((vmax.trunc() as u64).to_string().len() as i32) / 10.0
    } else {
        0.1
    };
    while vmax / step > 8.0 {
        step *= 2.0;
    }
    let ymax = step * ((vmax / step).trunc() + 1.0);
    let mut s = Svg::new(
        r#"width="760" height="420" viewBox="0 0 760 420" font-family="sans-serif" font-size="12""#,
        r#"width="760" height="420""#,
    );
    s.push(svg::text(
        r#"x="380.0" y="22" text-anchor="middle" font-size="15""#,
        "End-to-end vCPU memory lookups (lookup-bench, median of runs)",
    ));
    s.push(svg::text(
        r##"x="380.0" y="38" text-anchor="middle" fill="#555""##,
        "aggregate = total lookups / (total VMM ns / vCPUs); higher is better",
    ));
    let mut y = 0.0;
    while y <= ymax + 1e-9 {
        let py = top + ph - y / ymax * ph;
        s.push(format!(
            r##"<line x1="70" y1="{py:.1}" x2="740" y2="{py:.1}" stroke="#ddd"/>"##
        ));
        s.push(svg::text(
            &format!(r#"x="64" y="{:.1}" text-anchor="end""#, py + 4.0),
            &sig(y, 6),
        ));
        y += step;
    }
    s.push(svg::text(
        r#"transform="translate(18,195.0) rotate(-90)" text-anchor="middle""#,
        "million lookups / s",
    ));
    let gw = pw / groups.len() as f64;
    let bw = gw * 0.8 / DESIGNS.len() as f64;
    for (gi, &(c, w)) in groups.iter().enumerate() {
        let gx = left + gi as f64 * gw + gw * 0.1;
        let setting = if w { "writer" } else { "no writer" };
        for (di, (d, colour)) in DESIGNS.iter().enumerate() {
            let Some(m) = med.get(&(d.to_string(), c, w)) else {
                continue;
            };
            let v = m.aggregate / 1e6;
            let bh = v / ymax * ph;
            let x = gx + di as f64 * bw;
            s.push(format!(
                r#"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{bh:.1}" fill="{colour}"><title>{d}, {c} vCPU, {setting}: {v:.2} M/s</title></rect>"#,
                top + ph - bh,
                bw - 2.0
            ));
            s.push(svg::text(
                &format!(
                    r#"x="{:.1}" y="{:.1}" text-anchor="middle" font-size="10""#,
                    x + (bw - 2.0) / 2.0,
                    top + ph - bh - 3.0
                ),
                &format!("{v:.1}"),
            ));
        }
        let label = format!("{c} vCPU{}, {setting}", if c > 1 { "s" } else { "" });
        s.push(svg::text(
            &format!(
                r#"x="{:.1}" y="358" text-anchor="middle""#,
                left + gi as f64 * gw + gw / 2.0
            ),
            &label,
        ));
    }
    s.push(r#"<line x1="70" y1="340" x2="740" y2="340" stroke="black"/>"#);
    s.push(r#"<line x1="70" y1="50" x2="70" y2="340" stroke="black"/>"#);
    let mut lx = 70;
    for (d, colour) in DESIGNS {
        s.push(format!(
            r#"<rect x="{lx}" y="390" width="12" height="12" fill="{colour}"/>"#
        ));
        s.push(svg::text(&format!(r#"x="{}" y="400""#, lx + 16), d));
        lx += 110;
    }
    s.finish()
}
