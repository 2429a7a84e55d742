//! MaxMind DB files (`GeoLite2-Country.mmdb`, `GeoIP2-Country.mmdb`, or any
//! MMDB whose records carry `country.iso_code` /
//! `registered_country.iso_code`), read with the `maxminddb` crate: every
//! network of the search tree with the country it maps to.
//!
//! MMDB has no lines: origins carry line 0 and errors the byte offset the
//! reader reports.

use std::{path::Path, sync::Arc};

use maxminddb::{MaxMindDbError, Reader, geoip2};

use super::{ByCountry, LoadError, Origin, geolite2::CountryField};
use crate::{diag::Diagnostic, input::Inputs, net::Prefix};

fn invalid(path: &Path, e: &MaxMindDbError) -> LoadError {
    match e {
        MaxMindDbError::Io(io) => LoadError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(io.kind(), io.to_string()),
        },
        other => LoadError::Invalid(vec![Diagnostic::at_line(
            path,
            1,
            1,
            "",
            "",
            format!("expected a MaxMind DB file with country records: {other}"),
        )]),
    }
}

/// Loads every network of an MMDB file by country.
pub fn load(path: &Path, field: CountryField, inputs: &mut Inputs) -> Result<ByCountry, LoadError> {
    let reader = Reader::from_source(inputs.read(path)?).map_err(|e| invalid(path, &e))?;
    let file: Arc<Path> = Arc::from(path);
    let mut out = ByCountry::default();
    let networks = reader
        .networks(maxminddb::WithinOptions::default())
        .map_err(|e| invalid(path, &e))?;
    for item in networks {
        let item = item.map_err(|e| invalid(path, &e))?;
        let net = item.network().map_err(|e| invalid(path, &e))?;
        let Some(record) = item
            .decode::<geoip2::Country>()
            .map_err(|e| invalid(path, &e))?
        else {
            continue;
        };
        let code = match field {
            CountryField::Located => record
                .country
                .iso_code
                .or(record.registered_country.iso_code),
            CountryField::Registered => record.registered_country.iso_code,
        };
        let Some(cc) = code.and_then(super::country_code) else {
            continue;
        };
        let prefix = Prefix::parse(&net.to_string()).map_err(|msg| {
            LoadError::Invalid(vec![Diagnostic::at_line(
                path,
                1,
                1,
                "",
                "",
                format!("network {net} in the search tree: {msg}"),
            )])
        })?;
        out.countries.entry(cc).or_default().push((
            prefix,
            Origin {
                file: file.clone(),
                line: 0,
            },
        ));
    }
    Ok(out)
}
