//! One writer for every benchmark report of the workspace: the markdown tables and SVG
//! plots of the rcu benchmarks, the iohandler dispatch benchmark, the memory crate's lookup
//! benchmark and the VMM's end-to-end lookup benchmark (`scripts/bench-lookup.py`).
//!
//! # Design
//!
//! A library with one module per report plus the pieces they share, and a thin binary
//! (`cargo run -p benchreport -- <report> ...`, see [`USAGE`]) that only parses the command
//! line. The crate is a plain workspace member rather than an `xtask`: its tests (fixture
//! inputs under `tests/fixtures/`, rendered and compared with checked-in expected output)
//! then run with `cargo test -p benchreport` like every other crate's. It depends on serde,
//! serde_json, thiserror and `vmm-result` only: no benchmark, KVM or VMM crate, so building
//! it is quick.
//!
//! - [`criterion`]: serde types for criterion's `benchmark.json` and `estimates.json` (the
//!   fields used) and a loader for a criterion directory.
//! - [`fmt`]: the number formats every table uses (`256 ps`, `1.07 ns`, `12.3 µs`, `1.07x`,
//!   `5.12 M/s`, percent shares) and the median.
//! - [`table`]: markdown tables. [`svg`]: the SVG document writer both plots use (fixed
//!   number formats, no timestamps or randomness: the same input gives the same bytes).
//! - [`vmm_run`]: the VMM's `--result-json` record, through the `vmm-result` crate that the
//!   VMM itself serializes it with (plain serde types, so no KVM crate is built here).
//! - [`rcu`], [`iohandler`], [`lookup`], [`vm_lookup`]: the four reports. Each was ported
//!   from its former writer (`rcu/benches/report.py`, `iohandler/benches/table.py`,
//!   `memory/examples/lookup_report.rs`, the chart and tables of `scripts/bench-lookup.py`)
//!   and prints the same bytes on the same input; the tests pin that output.
//!
//! The benchmarks themselves (what they measure, how they write their rows) are unchanged;
//! the row formats this crate reads are documented on its serde types.
#![warn(missing_docs)]

pub mod criterion;
pub mod error;
pub mod fmt;
pub mod iohandler;
pub mod lookup;
pub mod rcu;
pub mod svg;
pub mod table;
pub mod vm_lookup;
pub mod vmm_run;

pub use error::{Error, Result};

/// The binary's command line.
pub const USAGE: &str = "\
usage: benchreport <report> [options]

  rcu [--target DIR]           the rcu tables and targets from DIR/rcu-bench/ (default DIR:
                               $CARGO_TARGET_DIR or the workspace's target/)
  iohandler [CRITERION_DIR]    `cargo bench -p iohandler --bench dispatch` as a table
                               (default: <target>/criterion)
  lookup [CRITERION_DIR] [--out DIR]
                               the memory lookup bench: writes DIR/lookup.md and
                               DIR/lookup.svg (default DIR: memory/benches) and prints the
                               markdown
  vm-lookup RESULTS_JSON [--svg PATH]
                               scripts/bench-lookup.py's tables (printed) and chart (PATH,
                               default docs/lookup-bench.svg) from its results file";

/// The workspace's root (this crate's parent directory, as built).
pub fn workspace() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the crate lives in the workspace")
        .to_owned()
}

/// The cargo target directory: `$CARGO_TARGET_DIR` or the workspace's `target/`.
pub fn target_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(Into::into)
        .unwrap_or_else(|| workspace().join("target"))
}
