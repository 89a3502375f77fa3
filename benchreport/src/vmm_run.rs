//! The VMM's `--result-json` record, read with the very types the VMM writes it with (the
//! `vmm-result` crate, serde only: no KVM or VMM crate comes along). No report here reads it
//! yet (`scripts/bench-lookup.py` takes its numbers from the guest's serial output); this is
//! the entry point for any report that does.

pub use vmm_result::{Exits, RunResult, Unassigned};

use crate::error::{self, Result};
use std::path::Path;

/// Reads one `--result-json` file.
pub fn load(path: &Path) -> Result<RunResult> {
    error::parse(path, 0, &error::read(path)?)
}
