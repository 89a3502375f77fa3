//! The crate's one error type.

use std::path::PathBuf;

/// Why a report could not be written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or directory could not be read or written.
    #[error("{path}: {source} (check that the path exists and is readable/writable)")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A result file is not the JSON this tool expects.
    #[error(
        "{}: not a benchmark result this tool understands: {source} (rerun the benchmark \
         that writes it)",
        at(.path, *.line)
    )]
    Json {
        /// The file.
        path: PathBuf,
        /// The line (1-based) for JSON-lines files, 0 for whole-file JSON.
        line: usize,
        /// What serde_json said.
        source: serde_json::Error,
    },
    /// No results where the report looks for them.
    #[error("no results under {dir}; {hint}")]
    NoResults {
        /// Where the report looked.
        dir: PathBuf,
        /// Which benchmark to run first.
        hint: &'static str,
    },
    /// The command line is wrong.
    #[error("{0}\n\n{usage}", usage = crate::USAGE)]
    Usage(String),
}

/// `path` or `path:line`.
fn at(path: &std::path::Path, line: usize) -> String {
    if line == 0 {
        path.display().to_string()
    } else {
        format!("{}:{line}", path.display())
    }
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;

/// `fs::read_to_string` with the path in the error.
pub fn read(path: &std::path::Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })
}

/// `fs::write` with the path in the error.
pub fn write(path: &std::path::Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })
}

/// Parses one JSON document (or one line of a JSON-lines file, `line` > 0).
pub fn parse<T: serde::de::DeserializeOwned>(
    path: &std::path::Path,
    line: usize,
    text: &str,
) -> Result<T> {
    serde_json::from_str(text).map_err(|source| Error::Json {
        path: path.to_owned(),
        line,
        source,
    })
}
