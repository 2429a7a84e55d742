//! Loaders for the region data people actually use. Each returns, per ISO
//! country code (upper case), the prefixes it lists with the file and line
//! that supplied them, or every problem found with the data file's own line
//! and column.
//!
//! - [`country_dir`]: one directory per country, `<cc>/ipv4-aggregated.txt`
//!   and `<cc>/ipv6-aggregated.txt` (ipverse/country-ip-blocks layout).
//! - [`rir`]: RIR delegated statistics, plain and extended, all registries.
//! - [`geolite2`]: MaxMind GeoLite2-Country CSV (blocks + locations).
//! - [`mmdb`]: MaxMind DB files (GeoLite2-Country.mmdb).
//! - [`range_csv`]: `start,end,cc` range CSVs (DB-IP lite style).
//! - [`read_cidr_list`]: a plain list of CIDRs, one per line.

pub mod country_dir;
pub mod geolite2;
pub mod mmdb;
pub mod range_csv;
pub mod rir;

use std::{collections::HashMap, io, path::Path, sync::Arc};

use crate::{
    diag::Diagnostic,
    input::{InputError, Inputs},
    net::Prefix,
};

/// Where a prefix came from, for `explain`. The path is shared by every
/// prefix of one file; line 0 means the file has no lines (MMDB).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub file: Arc<Path>,
    pub line: usize,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
        }
        Ok(())
    }
}

/// Prefixes with the place each came from.
pub type Sourced = Vec<(Prefix, Origin)>;

/// A data set keyed by country.
#[derive(Debug, Default)]
pub struct ByCountry {
    pub countries: HashMap<String, Sourced>,
}

impl ByCountry {
    /// Total prefixes over all countries.
    #[must_use]
    pub fn prefix_count(&self) -> usize {
        self.countries.values().map(Vec::len).sum()
    }
}

/// Why a data file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: io::Error,
    },
    /// Not a regular file, or over the size limit.
    #[error(transparent)]
    Input(InputError),
    /// Problems at lines of the data file itself.
    #[error("{} problem(s) in data files", .0.len())]
    Invalid(Vec<Diagnostic>),
}

impl From<InputError> for LoadError {
    fn from(e: InputError) -> Self {
        match e {
            InputError::Io { path, source } => Self::Io { path, source },
            other => Self::Input(other),
        }
    }
}

/// Reads a text data file through `inputs`. Bytes that are not UTF-8 are
/// reported at their line and column, like any other content error.
pub fn read(path: &Path, inputs: &mut Inputs) -> Result<String, LoadError> {
    let bytes = inputs.read(path)?;
    String::from_utf8(bytes).map_err(|e| {
        let valid = e.utf8_error().valid_up_to();
        LoadError::Invalid(vec![crate::diag::not_utf8(
            path,
            e.as_bytes(),
            valid,
            "a CIDR list",
        )])
    })
}

/// A two-letter country code, upper-cased; `None` if it is not one.
#[must_use]
pub fn country_code(text: &str) -> Option<String> {
    let t = text.trim();
    (t.len() == 2 && t.bytes().all(|b| b.is_ascii_alphabetic())).then(|| t.to_ascii_uppercase())
}

/// Reads a list of CIDRs, one per line; `#` starts a comment. Errors carry
/// the data file's own line and column.
#[must_use]
pub fn read_cidr_list(path: &Path, text: &str) -> (Sourced, Vec<Diagnostic>) {
    let file: Arc<Path> = Arc::from(path);
    let mut found = Vec::new();
    let mut errors = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let content = line.split('#').next().unwrap_or_default();
        let trimmed = content.trim();
        if trimmed.is_empty() {
            continue;
        }
        let column = content.find(trimmed).unwrap_or(0) + 1;
        match Prefix::parse(trimmed) {
            Ok(p) => found.push((
                p,
                Origin {
                    file: file.clone(),
                    line: i + 1,
                },
            )),
            Err(msg) => errors.push(Diagnostic::at_line(path, i + 1, column, line, trimmed, msg)),
        }
    }
    (found, errors)
}

/// A CSV file read into memory.
pub(crate) type CsvReader = csv::Reader<io::Cursor<Vec<u8>>>;

/// Reads a CSV file through `inputs` (fields may be quoted, rows may differ
/// in length).
pub(crate) fn open_csv(
    path: &Path,
    has_headers: bool,
    inputs: &mut Inputs,
) -> Result<CsvReader, LoadError> {
    let bytes = inputs.read(path)?;
    Ok(csv::ReaderBuilder::new()
        .has_headers(has_headers)
        .flexible(true)
        .from_reader(io::Cursor::new(bytes)))
}

/// A CSV record that could not be read, at its line.
pub(crate) fn csv_diagnostic(path: &Path, e: &csv::Error, expected: &str) -> Diagnostic {
    let line = e
        .position()
        .map_or(1, |p| usize::try_from(p.line()).unwrap_or(0));
    Diagnostic::at_line(path, line, 1, "", "", format!("expected {expected}: {e}"))
}

/// The line a CSV record starts on.
pub(crate) fn record_line(rec: &csv::StringRecord) -> usize {
    rec.position()
        .map_or(0, |p| usize::try_from(p.line()).unwrap_or(0))
}

/// Column (1-based, characters) of field `index` in a line split by `sep`.
pub(crate) fn field_column(line: &str, sep: char, index: usize) -> usize {
    let mut col = 1;
    for (i, f) in line.split(sep).enumerate() {
        if i == index {
            return col;
        }
        col += f.chars().count() + 1;
    }
    col
}
