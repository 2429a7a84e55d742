//! Resolve: load the data a policy names (sources, country databases).
//!
//! `[sources.*]`, `regions_dir` and the countries read from them, all
//! through [`crate::input`].

use std::path::PathBuf;

use toml::Spanned;

use super::countries::{CountryDb, CountrySource};
use super::{
    Diagnostic,
    load::{Checker, SourceKind},
    parse::{RawPolicy, RawSource},
};
use crate::sources::{self, LoadError, Sourced, country_dir, geolite2};

/// Name under which the `regions_dir` database is kept in `Checker::loaded`.
pub(super) const REGIONS_DIR_SOURCE: &str = "regions_dir";
impl Checker<'_> {
    /// Reports a data-file load failure at `at` (I/O) or at the data file's
    /// own lines (content).
    pub(super) fn load_failed<T>(&mut self, at: &Spanned<T>, what: &str, e: LoadError) {
        match e {
            LoadError::Io { path, source } => self.error(
                at,
                format!("cannot read {what} {}: {source}", path.display()),
            ),
            // "region file /x.fifo is a FIFO, not a regular file"
            LoadError::Input(e) => self.error(at, format!("{what} {e}")),
            LoadError::Invalid(diags) => self.errors.extend(diags),
        }
    }

    pub(super) fn resolve(&self, text: &str) -> PathBuf {
        let path = self.base_dir.join(text);
        match &self.options.staged {
            Some((live, staged)) => match path.strip_prefix(live) {
                Ok(rest) => staged.join(rest),
                Err(_) => path,
            },
            None => path,
        }
    }

    /// The CIDRs of a region's `file =` list; its errors are reported.
    pub(super) fn region_file(&mut self, file: &Spanned<String>) -> Sourced {
        let data_path = self.resolve(file.get_ref());
        match sources::read(&data_path, &mut self.inputs) {
            Ok(text) => {
                let (found, errs) = sources::read_cidr_list(&data_path, &text);
                self.errors.extend(errs);
                found
            }
            Err(e) => {
                self.load_failed(file, "region file", e);
                Vec::new()
            }
        }
    }

    /// Registers `[sources.*]` and the `regions_dir` database.
    pub(super) fn declare_sources(&mut self, raw: &RawPolicy) {
        let dir = match (&self.options.regions_dir, &raw.regions_dir) {
            (Some(cli), _) => Some(cli.clone()),
            (None, Some(d)) => Some(self.resolve(d.get_ref())),
            (None, None) => None,
        };
        if let Some(dir) = dir {
            self.inputs.note(&dir);
            if country_dir::is_database(&dir) {
                self.loaded
                    .insert(REGIONS_DIR_SOURCE.into(), SourceKind::Dir(dir));
            } else {
                let msg = format!(
                    "no country database at {}: expected <cc>/ipv4-aggregated.txt and <cc>/ipv6-aggregated.txt files under it (the country-ip-blocks layout)",
                    crate::shown::Shown(&dir)
                );
                match &raw.regions_dir {
                    Some(at) if self.options.regions_dir.is_none() => self.error(at, msg),
                    // From the command line: no position to show.
                    _ => self
                        .errors
                        .push(Diagnostic::at_line("--regions-dir", 0, 0, "", "", msg)),
                }
                self.loaded
                    .insert(REGIONS_DIR_SOURCE.into(), SourceKind::Failed);
            }
        }
        for (name, body) in &raw.sources {
            if !self.name_ok("source", name) {
                continue;
            }
            let b = body.get_ref();
            let path = self.resolve(b.path.get_ref());
            let field = match b.country.as_ref().map(|c| c.get_ref().as_str()) {
                None | Some("located") => geolite2::CountryField::Located,
                Some("registered") => geolite2::CountryField::Registered,
                Some(other) => {
                    let at = b.country.as_ref().unwrap_or(&b.format);
                    self.error(
                        at,
                        format!(
                            "expected country \"located\" or \"registered\", found \"{other}\""
                        ),
                    );
                    continue;
                }
            };
            if b.country.is_some()
                && !matches!(b.format.get_ref().as_str(), "geolite2-csv" | "mmdb")
            {
                self.error(
                    b.country.as_ref().unwrap_or(&b.format),
                    "`country` applies to formats \"geolite2-csv\" and \"mmdb\" only",
                );
            }
            let kind = self.load_source(b, path, field);
            self.loaded.insert(name.get_ref().clone(), kind);
        }
    }

    /// The country database: the sources named by `countries_from` (by
    /// default `regions_dir`, then every `[sources.*]` by name), every
    /// country of each. Takes the loaded sources' data: call it last.
    pub(super) fn country_db(&mut self, raw: &RawPolicy) -> CountryDb {
        let names: Vec<Spanned<String>> = if let Some(from) = &raw.countries_from {
            from.get_ref().clone()
        } else {
            let mut names: Vec<&String> = self
                .loaded
                .keys()
                .filter(|k| k.as_str() != REGIONS_DIR_SOURCE)
                .collect();
            names.sort_unstable();
            let dir = self
                .loaded
                .contains_key(REGIONS_DIR_SOURCE)
                .then(|| REGIONS_DIR_SOURCE.to_string());
            dir.into_iter()
                .chain(names.into_iter().cloned())
                .map(|n| Spanned::new(0..0, n))
                .collect()
        };
        let mut db = CountryDb::default();
        for name in &names {
            if db.sources.iter().any(|s| &s.name == name.get_ref()) {
                self.error(
                    name,
                    format!("source \"{}\" is listed twice", name.get_ref()),
                );
                continue;
            }
            let countries = match self.loaded.remove(name.get_ref()) {
                Some(SourceKind::Dir(dir)) => {
                    let mut out = Vec::new();
                    for code in country_dir::codes(&dir) {
                        match country_dir::load(&dir, &code, &mut self.inputs) {
                            Ok(list) => out.push((code, list)),
                            Err(e) => self.load_failed(name, "country data", e),
                        }
                    }
                    self.loaded
                        .insert(name.get_ref().clone(), SourceKind::Dir(dir));
                    out
                }
                Some(SourceKind::Data(data)) => {
                    let mut out: Vec<(String, Sourced)> = data.countries.into_iter().collect();
                    out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
                    self.loaded
                        .insert(name.get_ref().clone(), SourceKind::Failed);
                    out
                }
                Some(SourceKind::Failed) => {
                    self.loaded
                        .insert(name.get_ref().clone(), SourceKind::Failed);
                    continue;
                }
                None => {
                    self.error(
                        name,
                        format!(
                            "unknown source \"{}\" in `countries_from`: expected \"regions_dir\" or a [sources.*] table",
                            name.get_ref()
                        ),
                    );
                    continue;
                }
            };
            db.sources.push(CountrySource {
                name: name.get_ref().clone(),
                countries,
            });
        }
        let codes = db.codes().len();
        if codes > regionwall_common::MAX_COUNTRIES as usize {
            let msg = format!(
                "{codes} country codes in the country database; at most {} can be counted: name fewer sources in `countries_from`",
                regionwall_common::MAX_COUNTRIES
            );
            match &raw.countries_from {
                Some(at) => self.error(at, msg),
                None => self
                    .errors
                    .push(super::Diagnostic::at_line(self.path, 1, 1, "", "", msg)),
            }
        }
        db
    }

    /// Loads one `[sources.*]` table (a country directory is read per country later).
    pub(super) fn load_source(
        &mut self,
        b: &RawSource,
        path: PathBuf,
        field: geolite2::CountryField,
    ) -> SourceKind {
        let (what, result) = match b.format.get_ref().as_str() {
            "country-dir" => {
                self.inputs.note(&path);
                if path.is_dir() {
                    return SourceKind::Dir(path);
                }
                self.error(
                    &b.path,
                    format!("country database {} is not a directory", path.display()),
                );
                return SourceKind::Failed;
            }
            "rir" => (
                "RIR statistics",
                sources::rir::load(&path, &mut self.inputs).map(|(data, _)| data),
            ),
            "geolite2-csv" => (
                "GeoLite2 CSV",
                geolite2::load(&path, field, &mut self.inputs),
            ),
            "mmdb" => (
                "MaxMind DB",
                sources::mmdb::load(&path, field, &mut self.inputs),
            ),
            "range-csv" => (
                "range CSV",
                sources::range_csv::load(&path, &mut self.inputs),
            ),
            other => {
                self.error(
                    &b.format,
                    format!(
                        "expected format \"country-dir\", \"rir\", \"geolite2-csv\", \"mmdb\" or \"range-csv\", found \"{other}\""
                    ),
                );
                return SourceKind::Failed;
            }
        };
        match result {
            Ok(data) => SourceKind::Data(data),
            Err(e) => {
                self.load_failed(&b.path, what, e);
                SourceKind::Failed
            }
        }
    }

    /// Prefixes of the countries in `countries` from the sources in `from`.
    #[expect(clippy::too_many_lines, reason = "resolution and its error messages")]
    pub(super) fn countries(
        &mut self,
        region: &Spanned<String>,
        countries: &[Spanned<String>],
        from: Option<&Spanned<Vec<Spanned<String>>>>,
    ) -> Sourced {
        let mut out = Vec::new();
        if countries.is_empty() {
            if let Some(f) = from {
                self.error(f, "`from` without `countries`: expected a `countries` list");
            }
            return out;
        }
        let names: Vec<Spanned<String>> = if let Some(f) = from {
            f.get_ref().clone()
        } else {
            {
                if !self.loaded.contains_key(REGIONS_DIR_SOURCE) {
                    self.error(
                        &countries[0],
                        format!(
                            "region \"{}\" names countries but no country database is set: expected `regions_dir = \"...\"` at the top of the policy, `--regions-dir`, or `from = [\"<source>\"]`",
                            region.get_ref()
                        ),
                    );
                    return out;
                }
                vec![Spanned::new(0..0, REGIONS_DIR_SOURCE.to_string())]
            }
        };
        let mut usable = Vec::new();
        for n in &names {
            match self.loaded.get(n.get_ref()) {
                Some(SourceKind::Failed) => {}
                Some(_) => usable.push(n.get_ref().clone()),
                None => {
                    let mut known: Vec<&str> = self
                        .loaded
                        .keys()
                        .map(String::as_str)
                        .filter(|k| *k != REGIONS_DIR_SOURCE)
                        .collect();
                    known.sort_unstable();
                    self.error(
                        n,
                        format!(
                            "unknown source \"{}\": expected one of the [sources.*] tables ({})",
                            n.get_ref(),
                            if known.is_empty() {
                                "none defined".to_string()
                            } else {
                                known.join(", ")
                            }
                        ),
                    );
                }
            }
        }
        if usable.len() < names.len() {
            return out; // errors already reported
        }
        for c in countries {
            let Some(cc) = sources::country_code(c.get_ref()) else {
                self.error(
                    c,
                    format!(
                        "expected a two-letter ISO 3166 country code such as \"CN\", found \"{}\"",
                        c.get_ref()
                    ),
                );
                continue;
            };
            let mut found_in = 0;
            for name in &usable {
                match self.loaded.get(name) {
                    Some(SourceKind::Dir(dir)) => {
                        if country_dir::country_path(dir, &cc).is_none() {
                            continue;
                        }
                        let dir = dir.clone();
                        match country_dir::load(&dir, &cc, &mut self.inputs) {
                            Ok(list) => {
                                found_in += 1;
                                out.extend(list);
                            }
                            Err(e) => {
                                found_in += 1;
                                self.load_failed(c, "country data", e);
                            }
                        }
                    }
                    Some(SourceKind::Data(data)) => {
                        if let Some(list) = data.countries.get(&cc) {
                            found_in += 1;
                            out.extend(list.iter().cloned());
                        }
                    }
                    Some(SourceKind::Failed) | None => {}
                }
            }
            if found_in == 0 {
                let place = match self.loaded.get(REGIONS_DIR_SOURCE) {
                    Some(SourceKind::Dir(dir)) if from.is_none() => {
                        format!(
                            "no directory `{}` in {}",
                            cc.to_ascii_lowercase(),
                            dir.display()
                        )
                    }
                    _ => format!("not listed by source(s) {}", usable.join(", ")),
                };
                self.error(c, format!("unknown country code \"{cc}\": {place}"));
            }
        }
        out
    }
}
