//! Criterion's result files, read with serde: `<dir>/<group>/<function>[/<value>]/new/`
//! `benchmark.json` (what was measured) and `estimates.json` (the statistics). Only the
//! fields the reports use are declared; serde ignores the rest, so newer criterion versions
//! that add fields still parse.

use crate::error::{self, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// `benchmark.json`: the benchmark's identity.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Benchmark {
    /// The group (`BenchmarkGroup`'s name).
    pub group_id: String,
    /// The function id within the group, if any.
    #[serde(default)]
    pub function_id: Option<String>,
    /// The parameter (`BenchmarkId::new(_, value)`), if any.
    #[serde(default)]
    pub value_str: Option<String>,
    /// The throughput the group declared, if any.
    #[serde(default)]
    pub throughput: Option<Throughput>,
}

/// A group's declared throughput per iteration.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub enum Throughput {
    /// Elements per iteration.
    Elements(u64),
    /// Bytes per iteration.
    Bytes(u64),
    /// Bytes per iteration, shown in decimal units.
    BytesDecimal(u64),
}

/// `estimates.json`: criterion's statistics over the samples (each in ns per iteration).
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Estimates {
    /// The mean of the per-sample means.
    pub mean: Estimate,
    /// The median of the per-sample means.
    pub median: Estimate,
}

/// One statistic with its bootstrap confidence interval.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq)]
pub struct Estimate {
    /// The estimate (ns per iteration).
    pub point_estimate: f64,
    /// Its confidence interval.
    pub confidence_interval: ConfidenceInterval,
}

/// A confidence interval (ns per iteration).
#[derive(Clone, Copy, Debug, Deserialize, PartialEq)]
pub struct ConfidenceInterval {
    /// Lower bound.
    pub lower_bound: f64,
    /// Upper bound.
    pub upper_bound: f64,
}

/// One benchmark's latest results.
#[derive(Clone, Debug)]
pub struct Result1 {
    /// The benchmark's directory (the parent of `new/`), for its extra files.
    pub dir: PathBuf,
    /// `new/benchmark.json`.
    pub benchmark: Benchmark,
    /// `new/estimates.json`.
    pub estimates: Estimates,
}

/// Every `new/estimates.json` under `root` that has a `benchmark.json` beside it, in path
/// order. A missing `root` gives no results (not an error): the caller says what to run.
pub fn load(root: &Path) -> Result<Vec<Result1>> {
    let mut found = Vec::new();
    walk(root, &mut found)?;
    found.sort();
    let mut out = Vec::new();
    for new in found {
        let bench = new.join("benchmark.json");
        if !bench.exists() {
            continue;
        }
        let est = new.join("estimates.json");
        out.push(Result1 {
            dir: new.parent().unwrap_or(&new).to_owned(),
            benchmark: error::parse(&bench, 0, &error::read(&bench)?)?,
            estimates: error::parse(&est, 0, &error::read(&est)?)?,
        });
    }
    Ok(out)
}

/// Collects every directory named `new` that holds an `estimates.json`.
fn walk(dir: &Path, found: &mut Vec<PathBuf>) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(crate::Error::Io {
                path: dir.to_owned(),
                source,
            })
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        // Symlinks are not followed: criterion does not make any, and a loop would hang.
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            if entry.file_name() == "new" && path.join("estimates.json").is_file() {
                found.push(path.clone());
            }
            walk(&path, found)?;
        }
    }
    Ok(())
}
