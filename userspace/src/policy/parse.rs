//! TOML policy parser. Structural errors (syntax, unknown keys, wrong
//! types) come from the TOML deserializer with its span; everything else is
//! checked here, collecting every error rather than stopping at the first.
//!
//! ```toml
//! mode = "enforce"                      # default for rules: enforce | audit
//!
//! [regions.blocked]
//! cidrs = ["198.51.100.0/24", "2001:db8:bad::/48"]
//! file = "lists/blocked.txt"            # one CIDR per line, '#' comments
//!
//! [devices.phone]
//! mac = ["02:00:5e:00:53:01"]
//! ip = ["192.0.2.10", "2001:db8:1::/64"]
//!
//! [[rules]]
//! name = "phone-no-blocked"
//! devices = ["phone"]                   # or "default" for everyone else
//! block = ["blocked"]
//! allow = ["198.51.100.77", "other-region"]
//! mode = "audit"
//! ```

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
};

use serde::Deserialize;
use toml::Spanned;

use super::{
    ANY_REGION_NAME, DEFAULT_DEVICE_NAME, Device, Diagnostic, Diagnostics, Mode, Origin, Policy,
    Prefix, Region, Rule, V4, V6, net,
};
use crate::error::PolicyError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default)]
    mode: Option<Spanned<String>>,
    #[serde(default)]
    regions: BTreeMap<Spanned<String>, Spanned<RawRegion>>,
    #[serde(default)]
    devices: BTreeMap<Spanned<String>, Spanned<RawDevice>>,
    #[serde(default)]
    rules: Vec<Spanned<RawRule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegion {
    #[serde(default)]
    cidrs: Vec<Spanned<String>>,
    #[serde(default)]
    file: Option<Spanned<String>>,
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
    mode: Option<Spanned<String>>,
}

/// Reads and validates a policy file. Data files named by regions are read
/// relative to the policy's directory.
pub fn parse_file(path: &Path) -> Result<Policy, PolicyError> {
    let source = std::fs::read_to_string(path).map_err(|source| PolicyError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_str(&source, path)
}

/// Validates policy text that was read from `path`.
pub fn parse_str(source: &str, path: &Path) -> Result<Policy, PolicyError> {
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
    Checker {
        path,
        source,
        errors: Vec::new(),
        warnings: Vec::new(),
    }
    .check(raw)
}

struct Checker<'a> {
    path: &'a Path,
    source: &'a str,
    errors: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
}

impl Checker<'_> {
    fn error<T>(&mut self, at: &Spanned<T>, message: impl Into<String>) {
        self.errors
            .push(Diagnostic::at(self.path, self.source, at.span(), message));
    }

    fn warn<T>(&mut self, at: &Spanned<T>, message: impl Into<String>) {
        self.warnings
            .push(Diagnostic::at(self.path, self.source, at.span(), message));
    }

    fn line_of<T>(&self, at: &Spanned<T>) -> usize {
        super::locate(self.source, at.span().start).0
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
        let base_dir = self
            .path
            .parent()
            .map_or_else(PathBuf::new, Path::to_path_buf);

        // Regions, sorted by name (BTreeMap order) so ids are stable.
        let mut regions: Vec<Region> = Vec::new();
        let mut region_ids: HashMap<String, usize> = HashMap::new();
        for (name, body) in &raw.regions {
            if !self.name_ok("region", name) {
                continue;
            }
            let mut prefixes = Vec::new();
            for c in &body.get_ref().cidrs {
                match Prefix::parse(c.get_ref()) {
                    Ok(p) => prefixes.push((
                        p,
                        Origin {
                            file: self.path.to_path_buf(),
                            line: self.line_of(c),
                        },
                    )),
                    Err(msg) => self.error(c, msg),
                }
            }
            if let Some(file) = &body.get_ref().file {
                let data_path = base_dir.join(file.get_ref());
                match std::fs::read_to_string(&data_path) {
                    Ok(text) => {
                        let (found, errs) = read_cidr_list(&data_path, &text);
                        prefixes.extend(found);
                        self.errors.extend(errs);
                    }
                    Err(e) => self.error(
                        file,
                        format!("cannot read region file {}: {e}", data_path.display()),
                    ),
                }
            }
            if prefixes.is_empty()
                && body.get_ref().file.is_none()
                && body.get_ref().cidrs.is_empty()
            {
                self.error(
                    body,
                    format!(
                        "region \"{}\" has no `cidrs` and no `file`: expected at least one",
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
            });
        }

        // Devices: index 0 is the default.
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
                self.error(name, "\"default\" is reserved for every device no entry names; expected another name");
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
            for d in body.devices.get_ref() {
                match device_ids.get(d.get_ref()) {
                    Some(&id) => rule_devices.push(id),
                    None => self.error(
                        d,
                        format!(
                            "unknown device \"{}\": expected one of {}",
                            d.get_ref(),
                            known(&device_ids)
                        ),
                    ),
                }
            }
            if body.devices.get_ref().is_empty() {
                self.error(
                    &body.devices,
                    "`devices` is empty: expected at least one device name (or \"default\")",
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
                        Ok(p) => inline.push((
                            p,
                            Origin {
                                file: self.path.to_path_buf(),
                                line: self.line_of(a),
                            },
                        )),
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
            let mode = body.mode.as_ref().map_or(default_mode, |m| self.mode(m));
            rules.push(Rule {
                name,
                devices: rule_devices,
                block,
                allow,
                mode,
                line: self.line_of(r),
            });
        }
        if rules.is_empty() && self.errors.is_empty() {
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
            rules,
            warnings: self.warnings,
        })
    }

    /// Resolves a region name; "any" is built in unless the policy defines it.
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
            let origin = Origin {
                file: self.path.to_path_buf(),
                line: self.line_of(name),
            };
            let id = regions.len();
            regions.push(Region {
                name: ANY_REGION_NAME.into(),
                prefixes: vec![
                    (Prefix::V4(V4 { addr: 0, len: 0 }), origin.clone()),
                    (Prefix::V6(V6 { addr: 0, len: 0 }), origin),
                ],
            });
            ids.insert(ANY_REGION_NAME.into(), id);
            return Some(id);
        }
        None
    }
}

fn known(ids: &HashMap<String, usize>) -> String {
    let mut names: Vec<&str> = ids.keys().map(String::as_str).collect();
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

/// Reads a list of CIDRs, one per line; `#` starts a comment. Errors carry
/// the data file's own line and column.
#[must_use]
pub fn read_cidr_list(path: &Path, text: &str) -> (Vec<(Prefix, Origin)>, Vec<Diagnostic>) {
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
                    file: path.to_path_buf(),
                    line: i + 1,
                },
            )),
            Err(msg) => errors.push(Diagnostic::at_line(path, i + 1, column, line, trimmed, msg)),
        }
    }
    (found, errors)
}
