//! Start/end range CSVs in the DB-IP lite style: `start,end,country`, no
//! header (a first line whose first field is not an address is taken as
//! one), IPv4 and IPv6 rows mixed, fields optionally quoted. Each range is
//! split into the exact minimal set of CIDRs.

use std::{net::IpAddr, path::Path, sync::Arc};

use super::Origin;
use super::{ByCountry, LoadError};
use crate::input::Inputs;
use crate::{
    diag::Diagnostic,
    net::{Prefix, V4, V6},
    set::range_to_prefixes,
};

/// Loads a range CSV.
pub fn load(path: &Path, inputs: &mut Inputs) -> Result<ByCountry, LoadError> {
    let file: Arc<Path> = Arc::from(path);
    let mut reader = super::open_csv(path, false, inputs)?;
    let mut out = ByCountry::default();
    let mut errors = Vec::new();
    for (i, rec) in reader.records().enumerate() {
        let rec = match rec {
            Ok(r) => r,
            Err(e) => {
                errors.push(super::csv_diagnostic(
                    path,
                    &e,
                    "a CSV record `start,end,country`",
                ));
                break;
            }
        };
        let line = super::record_line(&rec);
        let text = rec.iter().collect::<Vec<_>>().join(",");
        let field = |k: usize| rec.get(k).unwrap_or_default().trim();
        let column = |k: usize| super::field_column(&text, ',', k);
        let start = field(0).parse::<IpAddr>();
        if i == 0 && start.is_err() {
            continue; // a header line
        }
        if rec.len() < 3 {
            errors.push(Diagnostic::at_line(
                path,
                line,
                1,
                &text,
                &text,
                format!("expected 3 fields `start,end,country`, found {}", rec.len()),
            ));
            continue;
        }
        let (Ok(start), Ok(end)) = (start, field(1).parse::<IpAddr>()) else {
            let bad = usize::from(field(0).parse::<IpAddr>().is_ok());
            errors.push(Diagnostic::at_line(
                path,
                line,
                column(bad),
                &text,
                field(bad),
                "expected an IPv4 or IPv6 address",
            ));
            continue;
        };
        let Some(cc) = super::country_code(field(2)) else {
            errors.push(Diagnostic::at_line(
                path,
                line,
                column(2),
                &text,
                field(2),
                format!("expected a two-letter country code, found `{}`", field(2)),
            ));
            continue;
        };
        let origin = Origin {
            file: file.clone(),
            line,
        };
        let entry = out.countries.entry(cc).or_default();
        match (start, end) {
            (IpAddr::V4(s), IpAddr::V4(e)) if s <= e => {
                let mut p: Vec<V4> = Vec::new();
                range_to_prefixes(u128::from(u32::from(s)), u128::from(u32::from(e)), &mut p);
                entry.extend(p.into_iter().map(|p| (Prefix::V4(p), origin.clone())));
            }
            (IpAddr::V6(s), IpAddr::V6(e)) if s <= e => {
                let mut p: Vec<V6> = Vec::new();
                range_to_prefixes(u128::from(s), u128::from(e), &mut p);
                entry.extend(p.into_iter().map(|p| (Prefix::V6(p), origin.clone())));
            }
            _ => errors.push(Diagnostic::at_line(
                path,
                line,
                column(1),
                &text,
                field(1),
                "expected an end address of the same family, not below the start",
            )),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(LoadError::Invalid(errors))
    }
}
