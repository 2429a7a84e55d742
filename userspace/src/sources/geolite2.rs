//! MaxMind GeoLite2-Country CSV: a directory (as unpacked from
//! `GeoLite2-Country-CSV_<date>.zip`) holding
//!
//! - `GeoLite2-Country-Blocks-IPv4.csv`, `GeoLite2-Country-Blocks-IPv6.csv`:
//!   `network,geoname_id,registered_country_geoname_id,...`
//! - `GeoLite2-Country-Locations-en.csv`:
//!   `geoname_id,locale_code,continent_code,continent_name,country_iso_code,...`
//!
//! Columns are found by their header names, fields may be quoted. A block
//! is assigned to its located country (`geoname_id`), falling back to the
//! registered country when that is empty, or to the registered country only.
//! Blocks with no country (or a continent-level location) are not in any
//! country.

use std::{collections::HashMap, path::Path, sync::Arc};

use super::Origin;
use super::{ByCountry, CsvReader, LoadError};
use crate::input::Inputs;
use crate::{diag::Diagnostic, net::Prefix};

pub const BLOCKS_V4: &str = "GeoLite2-Country-Blocks-IPv4.csv";
pub const BLOCKS_V6: &str = "GeoLite2-Country-Blocks-IPv6.csv";
pub const LOCATIONS: &str = "GeoLite2-Country-Locations-en.csv";

/// Which country a block belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CountryField {
    /// Where the network is located (`geoname_id`), else where it is registered.
    Located,
    /// Where the network is registered (`registered_country_geoname_id`).
    Registered,
}

fn csv_error(path: &Path, e: &csv::Error) -> LoadError {
    LoadError::Invalid(vec![super::csv_diagnostic(path, e, "a CSV record")])
}

/// Opens a CSV file and finds the named columns in its header.
fn open(
    path: &Path,
    columns: &[&str],
    inputs: &mut Inputs,
) -> Result<(CsvReader, Vec<usize>), LoadError> {
    let mut reader = super::open_csv(path, true, inputs)?;
    let header = reader.headers().map_err(|e| csv_error(path, &e))?.clone();
    let mut idx = Vec::new();
    let mut missing = Vec::new();
    for c in columns {
        match header.iter().position(|h| h.trim() == *c) {
            Some(i) => idx.push(i),
            None => missing.push(*c),
        }
    }
    if !missing.is_empty() {
        let line: Vec<&str> = header.iter().collect();
        return Err(LoadError::Invalid(vec![Diagnostic::at_line(
            path,
            1,
            1,
            &line.join(","),
            "",
            format!("expected header columns {}", missing.join(", ")),
        )]));
    }
    Ok((reader, idx))
}

/// geoname_id -> country ISO code (empty for continent-level locations).
fn locations(path: &Path, inputs: &mut Inputs) -> Result<HashMap<String, String>, LoadError> {
    let (mut reader, idx) = open(path, &["geoname_id", "country_iso_code"], inputs)?;
    let mut map = HashMap::new();
    let mut errors = Vec::new();
    for rec in reader.records() {
        let rec = rec.map_err(|e| csv_error(path, &e))?;
        let line = super::record_line(&rec);
        let id = rec.get(idx[0]).unwrap_or_default().trim();
        let iso = rec.get(idx[1]).unwrap_or_default().trim();
        if iso.is_empty() {
            map.insert(id.to_string(), String::new());
            continue;
        }
        match super::country_code(iso) {
            Some(cc) => {
                map.insert(id.to_string(), cc);
            }
            None => errors.push(Diagnostic::at_line(
                path,
                line,
                1,
                &rec.iter().collect::<Vec<_>>().join(","),
                iso,
                format!("expected a two-letter country_iso_code, found `{iso}`"),
            )),
        }
    }
    if errors.is_empty() {
        Ok(map)
    } else {
        Err(LoadError::Invalid(errors))
    }
}

/// Loads a GeoLite2-Country CSV directory.
pub fn load(dir: &Path, field: CountryField, inputs: &mut Inputs) -> Result<ByCountry, LoadError> {
    inputs.note(dir);
    let names = locations(&dir.join(LOCATIONS), inputs)?;
    let mut out = ByCountry::default();
    let mut errors = Vec::new();
    for blocks in [BLOCKS_V4, BLOCKS_V6] {
        let path = dir.join(blocks);
        let file: Arc<Path> = Arc::from(path.as_path());
        let (mut reader, idx) = open(
            &path,
            &["network", "geoname_id", "registered_country_geoname_id"],
            inputs,
        )?;
        for rec in reader.records() {
            let rec = rec.map_err(|e| csv_error(&path, &e))?;
            let line = super::record_line(&rec);
            let text = || rec.iter().collect::<Vec<_>>().join(",");
            let network = rec.get(idx[0]).unwrap_or_default().trim();
            let located = rec.get(idx[1]).unwrap_or_default().trim();
            let registered = rec.get(idx[2]).unwrap_or_default().trim();
            let prefix = match Prefix::parse(network) {
                Ok(p) => p,
                Err(msg) => {
                    errors.push(Diagnostic::at_line(&path, line, 1, &text(), network, msg));
                    continue;
                }
            };
            let id = match field {
                CountryField::Located if !located.is_empty() => located,
                _ => registered,
            };
            if id.is_empty() {
                continue;
            }
            match names.get(id) {
                Some(cc) if cc.is_empty() => {}
                Some(cc) => out.countries.entry(cc.clone()).or_default().push((
                    prefix,
                    Origin {
                        file: file.clone(),
                        line,
                    },
                )),
                None => {
                    let column = text().find(id).map_or(1, |c| c + 1);
                    errors.push(Diagnostic::at_line(
                        &path,
                        line,
                        column,
                        &text(),
                        id,
                        format!("geoname_id {id} is not in {LOCATIONS}"),
                    ));
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(LoadError::Invalid(errors))
    }
}
