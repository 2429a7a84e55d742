//! A country database directory: `<cc>/ipv4-aggregated.txt` and
//! `<cc>/ipv6-aggregated.txt` per country, lower-case codes, `#` comments
//! (the layout of ipverse/country-ip-blocks).

use std::path::{Path, PathBuf};

use super::{LoadError, Sourced, read, read_cidr_list};
use crate::input::Inputs;

/// The two list files of one country.
const FILES: [&str; 2] = ["ipv4-aggregated.txt", "ipv6-aggregated.txt"];

/// Whether `dir` looks like a country database: a directory with at least
/// one `<cc>/ipv4-aggregated.txt` or `<cc>/ipv6-aggregated.txt`.
#[must_use]
pub fn is_database(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.filter_map(Result::ok).any(|e| {
        let name = e.file_name();
        let code = name.to_string_lossy();
        code.len() == 2
            && code.bytes().all(|b| b.is_ascii_lowercase())
            && FILES.iter().any(|f| e.path().join(f).is_file())
    })
}

/// Every country the database has, upper-case, sorted.
#[must_use]
pub fn codes(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let ok = name.len() == 2
                && name.bytes().all(|b| b.is_ascii_lowercase())
                && FILES.iter().any(|f| e.path().join(f).is_file());
            ok.then(|| name.to_ascii_uppercase())
        })
        .collect();
    out.sort_unstable();
    out
}

/// Directory holding the lists of `code`, if the database has it.
#[must_use]
pub fn country_path(dir: &Path, code: &str) -> Option<PathBuf> {
    let p = dir.join(code.to_ascii_lowercase());
    p.is_dir().then_some(p)
}

/// Reads both lists of one country. A missing family file is not an error
/// (some countries have no IPv6 space); a country with neither file is.
pub fn load(dir: &Path, code: &str, inputs: &mut Inputs) -> Result<Sourced, LoadError> {
    let Some(country) = country_path(dir, code) else {
        return Err(LoadError::Io {
            path: dir.join(code.to_ascii_lowercase()),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no such country in the database",
            ),
        });
    };
    inputs.note(&country);
    let mut found = Vec::new();
    let mut errors = Vec::new();
    let mut files = 0;
    for name in FILES {
        let path = country.join(name);
        if !path.exists() {
            continue;
        }
        files += 1;
        let text = read(&path, inputs)?;
        let (f, e) = read_cidr_list(&path, &text);
        found.extend(f);
        errors.extend(e);
    }
    if files == 0 {
        return Err(LoadError::Io {
            path: country.join(FILES[0]),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "neither ipv4-aggregated.txt nor ipv6-aggregated.txt exists",
            ),
        });
    }
    if errors.is_empty() {
        Ok(found)
    } else {
        Err(LoadError::Invalid(errors))
    }
}
