//! Check: names, references, duplicates, groups, ports and modes (no I/O).
//!
//! Each error is reported at its position; checking goes on after one.

use std::collections::HashMap;

use toml::Spanned;

use super::{
    ANY_REGION_NAME, DEFAULT_DEVICE_NAME, Device, Diagnostic, Group, Mode, PortMatch, Prefix,
    Region, Rule, V4, V6, load::Checker, net, parse::RawPolicy,
};

impl Checker<'_> {
    pub(super) fn mode(&mut self, m: &Spanned<String>) -> Mode {
        match m.get_ref().as_str() {
            "enforce" => Mode::Enforce,
            "audit" => Mode::Audit,
            "reject" => Mode::Reject,
            other => {
                self.error(
                    m,
                    format!(
                        "expected mode \"enforce\", \"reject\" or \"audit\", found \"{other}\""
                    ),
                );
                Mode::Enforce
            }
        }
    }

    pub(super) fn name_ok(&mut self, kind: &str, name: &Spanned<String>) -> bool {
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
        reason = "one linear pass over the regions of a policy"
    )]
    pub(super) fn regions(&mut self, raw: &RawPolicy) -> (Vec<Region>, HashMap<String, usize>) {
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
                prefixes.extend(self.region_file(file));
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

    pub(super) fn devices(&mut self, raw: &RawPolicy) -> (Vec<Device>, HashMap<String, usize>) {
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
                        if mac == [0; 6] {
                            self.warn(
                                m,
                                "the all-zero MAC address never appears as a source: this entry matches nothing",
                            );
                        } else if mac[0] & 1 == 1 {
                            self.warn(
                                m,
                                "a broadcast or multicast MAC address (first octet odd) never sends as a device: this entry matches nothing",
                            );
                        }
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

    pub(super) fn groups(
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
                        if group.members.contains(&d) {
                            self.warn(
                                m,
                                format!(
                                    "device \"{}\" is listed twice in group \"{}\"",
                                    m.get_ref(),
                                    name.get_ref()
                                ),
                            );
                        } else {
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

    /// The `[[rules]]`, in file order. Inline CIDRs in `allow` become
    /// anonymous regions appended to `regions`; "any" is added on first use.
    #[expect(
        clippy::too_many_lines,
        reason = "one linear pass over the rules of a policy"
    )]
    pub(super) fn rules(
        &mut self,
        raw: &RawPolicy,
        default_mode: Mode,
        regions: &mut Vec<Region>,
        region_ids: &mut HashMap<String, usize>,
        device_ids: &HashMap<String, usize>,
        group_ids: &HashMap<String, usize>,
    ) -> Vec<Rule> {
        let mut rules = Vec::new();
        let mut rule_names: HashMap<String, usize> = HashMap::new();
        // Rules that allow "any" (without qualifiers), by their sorted
        // device list: a later rule for the same list is shadowed.
        let mut allow_any: HashMap<Vec<String>, (String, usize)> = HashMap::new();
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
                match self.region_ref(b, regions, region_ids) {
                    Some(id) => block.push(id),
                    None => self.error(
                        b,
                        format!(
                            "unknown region \"{}\": expected one of {}",
                            b.get_ref(),
                            known_regions(region_ids)
                        ),
                    ),
                }
            }
            let mut allow = Vec::new();
            let mut inline = Vec::new();
            for a in &body.allow {
                if body.block.iter().any(|b| b.get_ref() == a.get_ref()) {
                    self.warn(
                        a,
                        format!(
                            "region \"{}\" is both blocked and allowed by this rule: allow wins, so the block never fires for it",
                            a.get_ref()
                        ),
                    );
                }
                if let Some(id) = self.region_ref(a, regions, region_ids) {
                    allow.push(id);
                } else {
                    match Prefix::parse(a.get_ref()) {
                        Ok(p) => inline.push((p, self.origin(a))),
                        Err(_) => self.error(
                            a,
                            format!(
                                "expected a region name ({}) or a CIDR in `allow`, found \"{}\"",
                                known_regions(region_ids),
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
            let mut who: Vec<String> = body
                .devices
                .get_ref()
                .iter()
                .map(|d| d.get_ref().clone())
                .collect();
            who.sort_unstable();
            who.dedup();
            if let Some((earlier, line)) = allow_any.get(&who) {
                self.warn(
                    r,
                    format!(
                        "rule \"{name}\" can never fire: rule \"{earlier}\" (line {line}) allows any destination for the same devices at the same level"
                    ),
                );
            } else if ports.is_none() && body.allow.iter().any(|a| a.get_ref() == ANY_REGION_NAME) {
                allow_any.insert(who, (name.clone(), self.line_of(r)));
            }
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
        rules
    }

    /// Checks on the policy as a whole: no rules (a warning unless
    /// `allow_empty`), and more regions than the kernel tables hold.
    pub(super) fn totals(&mut self, rules: &[Rule], regions: &[Region], allow_empty: bool) {
        if self.source.trim().is_empty() {
            self.warnings.push(Diagnostic::at(
                self.path,
                self.source,
                0..0,
                "the policy file is empty: nothing is blocked",
            ));
        } else if rules.is_empty() && self.errors.is_empty() && !allow_empty {
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
    }

    /// Resolves a region name; "any" is built in.
    pub(super) fn region_ref(
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
