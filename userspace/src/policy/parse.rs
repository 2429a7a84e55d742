//! TOML policy parser. Structural errors (syntax, unknown keys, wrong
//! types) are all collected by the `schema` pass first; everything else is
//! checked here, also collecting every error rather than stopping at the
//! first.
//!
//! ```toml
//! mode = "enforce"                      # default for rules: enforce | audit
//! allow_empty = false                   # true: reloading to fewer rules is intended
//! regions_dir = "/var/lib/regionwall/country-ip-blocks"  # for `countries`
//!
//! [sources.apnic]                       # other country data (optional)
//! format = "rir"                        # rir | geolite2-csv | mmdb | range-csv | country-dir
//! path = "data/delegated-apnic-extended-latest"
//!
//! [regions.cn]
//! countries = ["CN", "HK"]              # from regions_dir, or `from = [...]`
//! cidrs = ["198.51.100.0/24"]
//! file = "lists/extra.txt"              # one CIDR per line, '#' comments
//! except = ["198.51.100.128/25"]        # CIDRs or other regions carved out
//!
//! [devices.phone]
//! mac = ["02:00:5e:00:53:01"]
//! ip = ["192.0.2.10", "2001:db8:1::/64"]
//!
//! [groups]
//! phones = ["phone"]
//!
//! [[rules]]
//! name = "phones-no-cn"
//! devices = ["phones"]                  # devices, groups, or "default"
//! block = ["cn"]
//! allow = ["198.51.100.77", "other-region"]
//! ports = ["tcp/443"]                   # optional protocol/port qualifiers
//! mode = "audit"
//! ```

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    sync::Arc,
};

use serde::Deserialize;
use toml::Spanned;

use super::{
    ANY_REGION_NAME, DEFAULT_DEVICE_NAME, Device, Diagnostic, Diagnostics, Group, Lines, Mode,
    Origin, Policy, PortMatch, Prefix, Region, Rule, V4, V6, net,
};
use crate::{
    input::{InputError, Inputs, Limits},
    sources::{self, ByCountry, LoadError, Sourced, country_dir, geolite2},
};

/// A policy could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read policy {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Not a regular file, or over the size limit.
    #[error("policy {0}")]
    Input(InputError),
    #[error("{0}")]
    Invalid(Diagnostics),
}

impl From<InputError> for PolicyError {
    fn from(e: InputError) -> Self {
        match e {
            InputError::Io { path, source } => Self::Io { path, source },
            other => Self::Input(other),
        }
    }
}

/// Settings that do not come from the policy file.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Overrides the policy's `regions_dir` (`--regions-dir`).
    pub regions_dir: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default)]
    mode: Option<Spanned<String>>,
    #[serde(default)]
    allow_empty: Option<bool>,
    #[serde(default)]
    regions_dir: Option<Spanned<String>>,
    #[serde(default)]
    sources: BTreeMap<Spanned<String>, Spanned<RawSource>>,
    #[serde(default)]
    regions: BTreeMap<Spanned<String>, Spanned<RawRegion>>,
    #[serde(default)]
    devices: BTreeMap<Spanned<String>, Spanned<RawDevice>>,
    #[serde(default)]
    groups: BTreeMap<Spanned<String>, Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    rules: Vec<Spanned<RawRule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    format: Spanned<String>,
    path: Spanned<String>,
    /// GeoLite2 only: "located" (default) or "registered".
    #[serde(default)]
    country: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegion {
    #[serde(default)]
    cidrs: Vec<Spanned<String>>,
    #[serde(default)]
    file: Option<Spanned<String>>,
    #[serde(default)]
    countries: Vec<Spanned<String>>,
    #[serde(default)]
    from: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    except: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDevice {
    #[serde(default)]
    mac: Vec<Spanned<String>>,
    #[serde(default)]
    ip: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    #[serde(default)]
    name: Option<Spanned<String>>,
    devices: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    block: Vec<Spanned<String>>,
    #[serde(default)]
    allow: Vec<Spanned<String>>,
    #[serde(default)]
    ports: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    mode: Option<Spanned<String>>,
}

/// Reads and validates a policy file. Data files named by regions and
/// sources are read relative to the policy's directory.
pub fn parse_file(path: &Path) -> Result<Policy, PolicyError> {
    parse_file_with(path, &Options::default())
}

/// [`parse_file`] with settings from the command line.
pub fn parse_file_with(path: &Path, options: &Options) -> Result<Policy, PolicyError> {
    parse_file_limited(path, options, Limits::default())
}

/// [`parse_file_with`], reading the policy and every file it names within
/// `limits` (`--max-file-size`).
pub fn parse_file_limited(
    path: &Path,
    options: &Options,
    limits: Limits,
) -> Result<Policy, PolicyError> {
    let mut inputs = Inputs::new(limits);
    let source = String::from_utf8(inputs.read(path)?).map_err(|e| PolicyError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e.utf8_error()),
    })?;
    parse_text(&source, path, options, inputs)
}

/// Validates policy text that was read from `path`.
pub fn parse_str(source: &str, path: &Path) -> Result<Policy, PolicyError> {
    parse_str_with(source, path, &Options::default())
}

/// [`parse_str`] with settings from the command line.
pub fn parse_str_with(source: &str, path: &Path, options: &Options) -> Result<Policy, PolicyError> {
    let mut inputs = Inputs::new(Limits::default());
    inputs.note(path);
    parse_text(source, path, options, inputs)
}

/// Validates policy text read from `path`; data files are read through `inputs`.
fn parse_text(
    source: &str,
    path: &Path,
    options: &Options,
    inputs: Inputs,
) -> Result<Policy, PolicyError> {
    let problems = super::schema::check(source);
    if !problems.is_empty() {
        return Err(PolicyError::Invalid(Diagnostics(
            problems
                .into_iter()
                .map(|p| Diagnostic::at(path, source, p.span, p.message))
                .collect(),
        )));
    }
    let raw: RawPolicy = match toml::from_str(source) {
        Ok(r) => r,
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            let message = e.message().trim().to_string();
            return Err(PolicyError::Invalid(Diagnostics(vec![Diagnostic::at(
                path, source, span, message,
            )])));
        }
    };
    let base_dir = path.parent().map_or_else(PathBuf::new, Path::to_path_buf);
    Checker {
        path,
        file: Arc::from(path),
        source,
        lines: Lines::new(source),
        base_dir,
        options,
        inputs,
        errors: Vec::new(),
        warnings: Vec::new(),
        loaded: HashMap::new(),
    }
    .check(raw)
}

/// A declared source of country data.
enum SourceKind {
    Dir(PathBuf),
    Data(ByCountry),
    /// Could not be loaded; its errors are already reported.
    Failed,
}

struct Checker<'a> {
    path: &'a Path,
    file: Arc<Path>,
    source: &'a str,
    /// Line index of `source`: positions of many values are looked up.
    lines: Lines,
    base_dir: PathBuf,
    options: &'a Options,
    /// Every file and directory read, and the limits on reading.
    inputs: Inputs,
    errors: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
    /// Sources by name, loaded on first use.
    loaded: HashMap<String, SourceKind>,
}

/// Name under which the `regions_dir` database is kept in `Checker::loaded`.
const REGIONS_DIR_SOURCE: &str = "regions_dir";

impl Checker<'_> {
    fn diagnostic<T>(&self, at: &Spanned<T>, message: impl Into<String>) -> Diagnostic {
        Diagnostic::at_indexed(self.path, self.source, &self.lines, at.span(), message)
    }

    fn error<T>(&mut self, at: &Spanned<T>, message: impl Into<String>) {
        let d = self.diagnostic(at, message);
        self.errors.push(d);
    }

    fn warn<T>(&mut self, at: &Spanned<T>, message: impl Into<String>) {
        let d = self.diagnostic(at, message);
        self.warnings.push(d);
    }

    fn line_of<T>(&self, at: &Spanned<T>) -> usize {
        self.lines.line(at.span().start)
    }

    fn origin<T>(&self, at: &Spanned<T>) -> Origin {
        Origin {
            file: self.file.clone(),
            line: self.line_of(at),
        }
    }

    fn mode(&mut self, m: &Spanned<String>) -> Mode {
        match m.get_ref().as_str() {
            "enforce" => Mode::Enforce,
            "audit" => Mode::Audit,
            other => {
                self.error(
                    m,
                    format!("expected mode \"enforce\" or \"audit\", found \"{other}\""),
                );
                Mode::Enforce
            }
        }
    }

    fn name_ok(&mut self, kind: &str, name: &Spanned<String>) -> bool {
        let n = name.get_ref();
        let valid = !n.is_empty()
            && n.len() <= 64
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid {
            self.error(
                name,
                format!(
                    "expected a {kind} name of 1-64 letters, digits, '-', '_' or '.', found \"{n}\""
                ),
            );
        }
        valid
    }

    /// Reports a data-file load failure at `at` (I/O) or at the data file's
    /// own lines (content).
    fn load_failed<T>(&mut self, at: &Spanned<T>, what: &str, e: LoadError) {
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

    fn resolve(&self, text: &str) -> PathBuf {
        self.base_dir.join(text)
    }

    /// Registers `[sources.*]` and the `regions_dir` database.
    fn declare_sources(&mut self, raw: &RawPolicy) {
        let dir = match (&self.options.regions_dir, &raw.regions_dir) {
            (Some(cli), _) => Some(cli.clone()),
            (None, Some(d)) => Some(self.resolve(d.get_ref())),
            (None, None) => None,
        };
        if let Some(dir) = dir {
            self.inputs.note(&dir);
            if dir.is_dir() {
                self.loaded
                    .insert(REGIONS_DIR_SOURCE.into(), SourceKind::Dir(dir));
            } else {
                let msg = format!(
                    "country database {} is not a directory: expected <cc>/ipv4-aggregated.txt files under it",
                    dir.display()
                );
                match &raw.regions_dir {
                    Some(at) if self.options.regions_dir.is_none() => self.error(at, msg),
                    _ => self.errors.push(Diagnostic::at_line(
                        "--regions-dir",
                        1,
                        1,
                        &dir.display().to_string(),
                        &dir.display().to_string(),
                        msg,
                    )),
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

    /// Loads one `[sources.*]` table (a country directory is read per country later).
    fn load_source(
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
    fn countries(
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

    #[expect(
        clippy::too_many_lines,
        reason = "one linear pass over the regions of a policy"
    )]
    fn regions(&mut self, raw: &RawPolicy) -> (Vec<Region>, HashMap<String, usize>) {
        let mut regions: Vec<Region> = Vec::new();
        let mut region_ids: HashMap<String, usize> = HashMap::new();
        // Regions, sorted by name (BTreeMap order) so ids are stable.
        for (name, body) in &raw.regions {
            if !self.name_ok("region", name) {
                continue;
            }
            if name.get_ref() == ANY_REGION_NAME {
                self.error(
                    name,
                    "\"any\" is built in (every address); expected another region name",
                );
                continue;
            }
            let b = body.get_ref();
            let mut prefixes = Vec::new();
            for c in &b.cidrs {
                match Prefix::parse(c.get_ref()) {
                    Ok(p) => prefixes.push((p, self.origin(c))),
                    Err(msg) => self.error(c, msg),
                }
            }
            if let Some(file) = &b.file {
                let data_path = self.resolve(file.get_ref());
                match sources::read(&data_path, &mut self.inputs) {
                    Ok(text) => {
                        let (found, errs) = sources::read_cidr_list(&data_path, &text);
                        prefixes.extend(found);
                        self.errors.extend(errs);
                    }
                    Err(e) => self.load_failed(file, "region file", e),
                }
            }
            prefixes.extend(self.countries(name, &b.countries, b.from.as_ref()));
            if b.file.is_none() && b.cidrs.is_empty() && b.countries.is_empty() {
                self.error(
                    body,
                    format!(
                        "region \"{}\" has no `cidrs`, `file` or `countries`: expected at least one",
                        name.get_ref()
                    ),
                );
            } else if prefixes.is_empty() {
                self.warn(
                    name,
                    format!(
                        "region \"{}\" is empty: rules naming it match nothing",
                        name.get_ref()
                    ),
                );
            }
            region_ids.insert(name.get_ref().clone(), regions.len());
            regions.push(Region {
                name: name.get_ref().clone(),
                prefixes,
                except: Vec::new(),
            });
        }
        // Exceptions: CIDRs, or other regions (which must not have
        // exceptions of their own, so the result never depends on order).
        for (name, body) in &raw.regions {
            let Some(&id) = region_ids.get(name.get_ref()) else {
                continue;
            };
            let mut except = Vec::new();
            for x in &body.get_ref().except {
                if let Some(&other) = region_ids.get(x.get_ref()) {
                    if other == id {
                        self.error(x, "a region cannot except itself");
                    } else if raw
                        .regions
                        .iter()
                        .any(|(n, b)| n.get_ref() == x.get_ref() && !b.get_ref().except.is_empty())
                    {
                        self.error(
                            x,
                            format!(
                                "region \"{}\" has its own `except`; expected a region without exceptions or CIDRs",
                                x.get_ref()
                            ),
                        );
                    } else {
                        except.extend(regions[other].prefixes.iter().cloned());
                    }
                    continue;
                }
                if let Ok(p) = Prefix::parse(x.get_ref()) {
                    except.push((p, self.origin(x)));
                } else {
                    {
                        let mut known: Vec<&str> = region_ids.keys().map(String::as_str).collect();
                        known.sort_unstable();
                        self.error(
                            x,
                            format!(
                                "expected a CIDR or a region name ({}) in `except`, found \"{}\"",
                                known.join(", "),
                                x.get_ref()
                            ),
                        );
                    }
                }
            }
            if !except.is_empty() {
                let region = &mut regions[id];
                region.except = except;
                let (v4, v6) = region.merged();
                if v4.is_empty() && v6.is_empty() && !region.prefixes.is_empty() {
                    self.warn(
                        name,
                        format!(
                            "region \"{}\" is empty after `except`: rules naming it match nothing",
                            name.get_ref()
                        ),
                    );
                }
            }
        }
        (regions, region_ids)
    }

    fn devices(&mut self, raw: &RawPolicy) -> (Vec<Device>, HashMap<String, usize>) {
        // Index 0 is the default.
        let mut devices = vec![Device {
            name: DEFAULT_DEVICE_NAME.into(),
            macs: vec![],
            prefixes: vec![],
        }];
        let mut device_ids: HashMap<String, usize> =
            HashMap::from([(DEFAULT_DEVICE_NAME.to_string(), 0)]);
        let mut mac_owner: HashMap<[u8; 6], String> = HashMap::new();
        let mut prefix_owner: HashMap<Prefix, String> = HashMap::new();
        for (name, body) in &raw.devices {
            if !self.name_ok("device", name) {
                continue;
            }
            if name.get_ref() == DEFAULT_DEVICE_NAME {
                self.error(
                    name,
                    "\"default\" is reserved for every device no entry names; expected another name",
                );
                continue;
            }
            let mut dev = Device {
                name: name.get_ref().clone(),
                macs: vec![],
                prefixes: vec![],
            };
            for m in &body.get_ref().mac {
                match net::parse_mac(m.get_ref()) {
                    Ok(mac) => {
                        if let Some(other) = mac_owner.insert(mac, dev.name.clone()) {
                            self.error(
                                m,
                                format!("MAC address already belongs to device \"{other}\""),
                            );
                        }
                        dev.macs.push(mac);
                    }
                    Err(msg) => self.error(m, msg),
                }
            }
            for a in &body.get_ref().ip {
                match Prefix::parse(a.get_ref()) {
                    Ok(p) => {
                        if let Some(other) = prefix_owner.insert(p, dev.name.clone()) {
                            self.error(a, format!("address already belongs to device \"{other}\""));
                        }
                        dev.prefixes.push(p);
                    }
                    Err(msg) => self.error(a, msg),
                }
            }
            if body.get_ref().mac.is_empty() && body.get_ref().ip.is_empty() {
                self.error(
                    body,
                    format!(
                        "device \"{}\" has no `mac` and no `ip`: expected at least one",
                        dev.name
                    ),
                );
            }
            device_ids.insert(dev.name.clone(), devices.len());
            devices.push(dev);
        }
        if devices.len() > regionwall_common::MAX_DEVICES as usize {
            self.errors.push(Diagnostic::at(
                self.path,
                self.source,
                0..0,
                format!(
                    "{} devices defined; at most {} are supported",
                    devices.len() - 1,
                    regionwall_common::MAX_DEVICES - 1
                ),
            ));
        }
        (devices, device_ids)
    }

    fn groups(
        &mut self,
        raw: &RawPolicy,
        device_ids: &HashMap<String, usize>,
    ) -> (Vec<Group>, HashMap<String, usize>) {
        let mut groups = Vec::new();
        let mut ids = HashMap::new();
        for (name, members) in &raw.groups {
            if !self.name_ok("group", name) {
                continue;
            }
            if device_ids.contains_key(name.get_ref()) {
                self.error(
                    name,
                    format!(
                        "\"{}\" is already a device name; expected a group name no device uses",
                        name.get_ref()
                    ),
                );
                continue;
            }
            if members.get_ref().is_empty() {
                self.error(
                    members,
                    format!(
                        "group \"{}\" is empty: expected at least one device",
                        name.get_ref()
                    ),
                );
            }
            let mut group = Group {
                name: name.get_ref().clone(),
                members: Vec::new(),
            };
            for m in members.get_ref() {
                match device_ids.get(m.get_ref()) {
                    Some(0) => self.error(
                        m,
                        "\"default\" cannot be a group member: rules for \"default\" already apply to every device",
                    ),
                    Some(&d) => {
                        if !group.members.contains(&d) {
                            group.members.push(d);
                        }
                    }
                    None => self.error(
                        m,
                        format!(
                            "unknown device \"{}\" in group \"{}\": expected one of {}",
                            m.get_ref(),
                            name.get_ref(),
                            known(device_ids.keys().filter(|k| *k != DEFAULT_DEVICE_NAME))
                        ),
                    ),
                }
            }
            ids.insert(group.name.clone(), groups.len());
            groups.push(group);
        }
        (groups, ids)
    }

    #[expect(
        clippy::too_many_lines,
        reason = "one linear pass over the sections of a policy"
    )]
    #[expect(
        clippy::needless_pass_by_value,
        reason = "the raw policy is consumed by this pass"
    )]
    fn check(mut self, raw: RawPolicy) -> Result<Policy, PolicyError> {
        let default_mode = raw.mode.as_ref().map_or(Mode::Enforce, |m| self.mode(m));
        self.declare_sources(&raw);
        let (mut regions, mut region_ids) = self.regions(&raw);
        let (devices, device_ids) = self.devices(&raw);
        let (groups, group_ids) = self.groups(&raw, &device_ids);

        let named_regions = regions.len();
        let mut rules = Vec::new();
        let mut rule_names: HashMap<String, usize> = HashMap::new();
        for (i, r) in raw.rules.iter().enumerate() {
            let body = r.get_ref();
            let name = match &body.name {
                Some(n) => {
                    if !self.name_ok("rule", n) {
                        continue;
                    }
                    if let Some(line) = rule_names.get(n.get_ref()) {
                        self.error(
                            n,
                            format!(
                                "duplicate rule name \"{}\" (first at line {line})",
                                n.get_ref()
                            ),
                        );
                    }
                    n.get_ref().clone()
                }
                None => format!("rule-{}", i + 1),
            };
            rule_names.insert(name.clone(), self.line_of(r));
            let mut rule_devices = Vec::new();
            let mut rule_groups = Vec::new();
            for d in body.devices.get_ref() {
                if let Some(&id) = device_ids.get(d.get_ref()) {
                    rule_devices.push(id);
                } else if let Some(&id) = group_ids.get(d.get_ref()) {
                    rule_groups.push(id);
                } else {
                    self.error(
                        d,
                        format!(
                            "unknown device or group \"{}\": expected one of {}",
                            d.get_ref(),
                            known(device_ids.keys().chain(group_ids.keys()))
                        ),
                    );
                }
            }
            if body.devices.get_ref().is_empty() {
                self.error(
                    &body.devices,
                    "`devices` is empty: expected at least one device or group name (or \"default\")",
                );
            }
            let mut block = Vec::new();
            for b in &body.block {
                match self.region_ref(b, &mut regions, &mut region_ids) {
                    Some(id) => block.push(id),
                    None => self.error(
                        b,
                        format!(
                            "unknown region \"{}\": expected one of {}",
                            b.get_ref(),
                            known_regions(&region_ids)
                        ),
                    ),
                }
            }
            let mut allow = Vec::new();
            let mut inline = Vec::new();
            for a in &body.allow {
                if let Some(id) = self.region_ref(a, &mut regions, &mut region_ids) {
                    allow.push(id);
                } else {
                    match Prefix::parse(a.get_ref()) {
                        Ok(p) => inline.push((p, self.origin(a))),
                        Err(_) => self.error(
                            a,
                            format!(
                                "expected a region name ({}) or a CIDR in `allow`, found \"{}\"",
                                known_regions(&region_ids),
                                a.get_ref()
                            ),
                        ),
                    }
                }
            }
            if !inline.is_empty() {
                allow.push(regions.len());
                regions.push(Region {
                    name: format!("{name}/allow"),
                    prefixes: inline,
                    except: Vec::new(),
                });
            }
            if body.block.is_empty() && body.allow.is_empty() {
                self.error(
                    r,
                    format!(
                        "rule \"{name}\" has neither `block` nor `allow`: expected at least one"
                    ),
                );
            }
            let ports = body.ports.as_ref().map(|list| {
                if list.get_ref().is_empty() {
                    self.error(
                        list,
                        "`ports` is empty, so the rule would match nothing: expected qualifiers such as \"tcp/443\", or no `ports` key",
                    );
                }
                let mut out = Vec::new();
                for q in list.get_ref() {
                    match PortMatch::parse(q.get_ref()) {
                        Ok(m) => out.extend(m),
                        Err(msg) => self.error(q, msg),
                    }
                }
                out.sort_unstable();
                out.dedup();
                out
            });
            let mode = body.mode.as_ref().map_or(default_mode, |m| self.mode(m));
            rules.push(Rule {
                name,
                devices: rule_devices,
                groups: rule_groups,
                block,
                allow,
                ports,
                mode,
                line: self.line_of(r),
            });
        }
        let allow_empty = raw.allow_empty.unwrap_or(false);
        if rules.is_empty() && self.errors.is_empty() && !allow_empty {
            self.warnings.push(Diagnostic::at(
                self.path,
                self.source,
                0..0,
                "the policy has no rules: every packet passes",
            ));
        }
        if regions.len() > regionwall_common::MAX_REGIONS as usize {
            self.errors.push(Diagnostic::at(
                self.path,
                self.source,
                0..0,
                format!(
                    "{} regions (named regions plus inline allow lists); at most {} are supported",
                    regions.len(),
                    regionwall_common::MAX_REGIONS
                ),
            ));
        }
        if !self.errors.is_empty() {
            self.errors
                .sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
            return Err(PolicyError::Invalid(Diagnostics(self.errors)));
        }
        Ok(Policy {
            source: self.path.to_path_buf(),
            regions,
            named_regions,
            devices,
            groups,
            rules,
            allow_empty,
            inputs: self.inputs.into_paths(),
            warnings: self.warnings,
        })
    }

    /// Resolves a region name; "any" is built in.
    fn region_ref(
        &self,
        name: &Spanned<String>,
        regions: &mut Vec<Region>,
        ids: &mut HashMap<String, usize>,
    ) -> Option<usize> {
        if let Some(&id) = ids.get(name.get_ref()) {
            return Some(id);
        }
        if name.get_ref() == ANY_REGION_NAME {
            let origin = self.origin(name);
            let id = regions.len();
            regions.push(Region {
                name: ANY_REGION_NAME.into(),
                prefixes: vec![
                    (Prefix::V4(V4 { addr: 0, len: 0 }), origin.clone()),
                    (Prefix::V6(V6 { addr: 0, len: 0 }), origin),
                ],
                except: Vec::new(),
            });
            ids.insert(ANY_REGION_NAME.into(), id);
            return Some(id);
        }
        None
    }
}

fn known<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let mut names: Vec<&str> = names.map(String::as_str).collect();
    names.sort_unstable();
    names.join(", ")
}

fn known_regions(ids: &HashMap<String, usize>) -> String {
    let mut names: Vec<&str> = ids
        .keys()
        .map(String::as_str)
        .filter(|n| !n.contains('/'))
        .collect();
    if !names.contains(&ANY_REGION_NAME) {
        names.push(ANY_REGION_NAME);
    }
    names.sort_unstable();
    names.join(", ")
}
