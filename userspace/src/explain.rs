//! "Why was this blocked?": which regions contain an address (and which
//! file and line supplied the matching prefix), which rule decides for a
//! device, and the verdict.
//!
//! The answer is computed from the policy's source prefixes through an
//! independent index (ip_network_table), not from the compiled kernel
//! table, so comparing the two is a real check of the compiler.

use std::net::IpAddr;

use ip_network::{IpNetwork, Ipv4Network, Ipv6Network};
use ip_network_table::IpNetworkTable;
use regionwall_common::Verdict;
use serde::Serialize;

use crate::{
    compile::{self, Level},
    policy::{Mode, PacketKey, Policy, Prefix, canonical},
};

/// One source prefix of a region, by index into the region's lists.
#[derive(Clone, Copy, Debug)]
struct Entry {
    region: u16,
    index: u32,
    except: bool,
}

/// One prefix of the country database: source, country (both by index
/// into [`crate::policy::CountryDb`]) and prefix index.
#[derive(Clone, Copy, Debug)]
struct CountryEntry {
    source: u16,
    country: u16,
    index: u32,
}

/// Every source and exception prefix of a policy, and every prefix of its
/// country database, for lookups by address.
pub struct Index {
    table: IpNetworkTable<Vec<Entry>>,
    countries: IpNetworkTable<Vec<CountryEntry>>,
}

fn network(p: &Prefix) -> Option<IpNetwork> {
    match p {
        Prefix::V4(p) => Ipv4Network::new(p.addr.into(), p.len)
            .ok()
            .map(IpNetwork::V4),
        Prefix::V6(p) => Ipv6Network::new(p.addr.into(), p.len)
            .ok()
            .map(IpNetwork::V6),
    }
}

impl Index {
    #[must_use]
    pub fn new(policy: &Policy) -> Self {
        let mut table: IpNetworkTable<Vec<Entry>> = IpNetworkTable::new();
        for (r, region) in policy.regions.iter().enumerate() {
            let region_id = u16::try_from(r).unwrap_or(u16::MAX);
            for (except, list) in [(false, &region.prefixes), (true, &region.except)] {
                for (i, (p, _)) in list.iter().enumerate() {
                    let Some(net) = network(p) else { continue };
                    let entry = Entry {
                        region: region_id,
                        index: u32::try_from(i).unwrap_or(u32::MAX),
                        except,
                    };
                    if let Some(v) = table.exact_match_mut(net) {
                        v.push(entry);
                    } else {
                        table.insert(net, vec![entry]);
                    }
                }
            }
        }
        let mut countries: IpNetworkTable<Vec<CountryEntry>> = IpNetworkTable::new();
        for (s, source) in policy.countries.sources.iter().enumerate() {
            for (c, (_, list)) in source.countries.iter().enumerate() {
                for (i, (p, _)) in list.iter().enumerate() {
                    let Some(net) = network(p) else { continue };
                    let entry = CountryEntry {
                        source: u16::try_from(s).unwrap_or(u16::MAX),
                        country: u16::try_from(c).unwrap_or(u16::MAX),
                        index: u32::try_from(i).unwrap_or(u32::MAX),
                    };
                    if let Some(v) = countries.exact_match_mut(net) {
                        v.push(entry);
                    } else {
                        countries.insert(net, vec![entry]);
                    }
                }
            }
        }
        Self { table, countries }
    }

    /// What every source says about `addr`; the first, by precedence
    /// (source order, then country code), decides.
    fn country_hits(&self, policy: &Policy, addr: IpAddr) -> Vec<CountryHit> {
        let mut hits: Vec<(u16, u8, CountryHit)> = Vec::new();
        for (_, list) in self.countries.matches(canonical(addr)) {
            for e in list {
                let Some(source) = policy.countries.sources.get(usize::from(e.source)) else {
                    continue;
                };
                let Some((code, prefixes)) = source.countries.get(usize::from(e.country)) else {
                    continue;
                };
                let Some((p, o)) = usize::try_from(e.index).ok().and_then(|i| prefixes.get(i))
                else {
                    continue;
                };
                let hit = CountryHit {
                    source: source.name.clone(),
                    country: code.clone(),
                    at: source_hit(p, o),
                    decides: false,
                };
                hits.push((e.source, p.len(), hit));
            }
        }
        // Source order, then code, then the most specific prefix first.
        hits.sort_by(|(a, la, x), (b, lb, y)| {
            (a, &x.country, std::cmp::Reverse(la)).cmp(&(b, &y.country, std::cmp::Reverse(lb)))
        });
        let mut out: Vec<CountryHit> = hits.into_iter().map(|(_, _, h)| h).collect();
        if let Some(first) = out.first_mut() {
            first.decides = true;
        }
        out
    }

    fn hits(&self, addr: IpAddr) -> Vec<Entry> {
        self.table
            .matches(canonical(addr))
            .flat_map(|(_, v)| v.iter().copied())
            .collect()
    }
}

/// What one source of the country database says about an address.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct CountryHit {
    pub source: String,
    pub country: String,
    /// The source's prefix that holds the address.
    pub at: SourceHit,
    /// Whether this answer decides (see the precedence in
    /// [`crate::policy::countries`]).
    pub decides: bool,
}

/// A prefix that contains the address, and where it came from.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct SourceHit {
    pub prefix: String,
    pub file: String,
    pub line: usize,
}

impl std::fmt::Display for SourceHit {
    /// `prefix from file:line` (no line for files without lines, such as MMDB).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} from {}", self.prefix, self.file)?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
        }
        Ok(())
    }
}

/// A region and the prefixes that put the address in it (or carved it out).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct RegionHit {
    pub name: String,
    /// Matching source prefixes, most specific first.
    pub sources: Vec<SourceHit>,
    /// Matching `except` prefixes; non-empty means the address is *not* in
    /// the region (only listed under [`Explanation::excepted`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub except: Vec<SourceHit>,
}

/// The rule that decided.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct RuleHit {
    pub name: String,
    pub line: usize,
    /// "device", "group" or "default": the precedence level it decided at.
    pub level: &'static str,
    pub mode: &'static str,
    /// "allow" or "block".
    pub action: &'static str,
    /// Protocol/port qualifiers of the rule, if any.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<String>,
}

/// Everything `regionwall explain` reports.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Explanation {
    pub addr: String,
    pub device: String,
    /// How the device was chosen: "mac", "address", "name" or "default".
    pub device_by: &'static str,
    /// The packet kind evaluated (e.g. "tcp/443"), if given.
    pub packet: Option<String>,
    /// Regions containing the address.
    pub regions: Vec<RegionHit>,
    /// Regions whose sources contain the address but whose `except` removes it.
    pub excepted: Vec<RegionHit>,
    /// The deciding rule's name, or `None` when no rule matched (pass).
    pub rule: Option<String>,
    pub decided_by: Option<RuleHit>,
    /// "pass", "drop", "audit" or "reject".
    pub verdict: &'static str,
    /// Region the verdict is attributed to in counters and events.
    pub attributed_region: Option<String>,
    /// The destination's country, as counted (`None`: in no country, or
    /// no country database).
    pub country: Option<String>,
    /// Every source's answer, the deciding one first; more than one
    /// country means the sources disagree.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub country_sources: Vec<CountryHit>,
    /// The names devices looked up for the address, from the running
    /// controller's DNS watch (`None`: not asked, or not watched; empty:
    /// no device resolved it — a hard-coded address, DNS over HTTPS/TLS).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub looked_up: Option<Vec<crate::control::HostLookup>>,
    /// Caveats, e.g. rules with port qualifiers left out for lack of `--packet`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl Explanation {
    /// Adds what the running controller knows of the names devices looked
    /// up for the address.
    pub fn set_hosts(&mut self, answer: crate::control::HostsAnswer) {
        if answer.watching {
            self.looked_up = Some(answer.lookups);
        } else {
            self.notes.push(
                "the controller does not watch DNS answers (--no-dns): names are not known".into(),
            );
        }
    }
}

/// How the device was identified.
#[derive(Clone, Copy, Debug)]
pub enum DeviceBy {
    Name,
    Mac,
    Address,
    Default,
}

impl DeviceBy {
    fn as_str(self) -> &'static str {
        match self {
            Self::Name => "name",
            Self::Mac => "mac",
            Self::Address => "address",
            Self::Default => "default",
        }
    }
}

/// The verdict name used in events and explanations.
#[must_use]
pub fn verdict_name(v: u8) -> &'static str {
    match Verdict::from_u8(v) {
        Some(Verdict::Drop) => "drop",
        Some(Verdict::Audit) => "audit",
        Some(Verdict::Reject) => "reject",
        _ => "pass",
    }
}

fn source_hit(p: &Prefix, o: &crate::policy::Origin) -> SourceHit {
    SourceHit {
        prefix: p.to_string(),
        file: o.file.display().to_string(),
        line: o.line,
    }
}

/// A note when rules with protocol/port qualifiers that name `device`
/// (directly, through a group, or as `default`) were left out because no
/// packet was given: only those could change the answer.
fn qualifier_notes(policy: &Policy, device: usize, packet: Option<PacketKey>) -> Vec<String> {
    let names_device = |r: &crate::policy::Rule| {
        r.devices.contains(&device)
            || r.devices.contains(&0)
            || r.groups
                .iter()
                .filter_map(|g| policy.groups.get(*g))
                .any(|g| g.members.contains(&device))
    };
    let qualified: Vec<&str> = policy
        .rules
        .iter()
        .filter(|r| r.ports.is_some() && names_device(r))
        .map(|r| r.name.as_str())
        .collect();
    if packet.is_some() || qualified.is_empty() {
        return Vec::new();
    }
    vec![format!(
        "rules with protocol/port qualifiers were not applied ({}); give --packet, e.g. tcp/443, to include them",
        qualified.join(", ")
    )]
}

/// Explains the policy's decision for `addr` sent by `device`.
#[must_use]
pub fn explain(
    policy: &Policy,
    index: &Index,
    addr: IpAddr,
    device: usize,
    device_by: DeviceBy,
    packet: Option<PacketKey>,
) -> Explanation {
    let hits = index.hits(addr);
    let mut touched: Vec<u16> = hits.iter().map(|e| e.region).collect();
    touched.sort_unstable();
    touched.dedup();
    // Regions containing the address: a source prefix matches and no
    // exception does (sorted, as `touched` is).
    let mut in_regions = Vec::new();
    let mut regions = Vec::new();
    let mut excepted = Vec::new();
    for r in touched {
        let region = &policy.regions[usize::from(r)];
        let mut found: Vec<&(Prefix, crate::policy::Origin)> = Vec::new();
        let mut except = Vec::new();
        for e in hits.iter().filter(|e| e.region == r) {
            let list = if e.except {
                &region.except
            } else {
                &region.prefixes
            };
            if let Some(entry) = usize::try_from(e.index).ok().and_then(|i| list.get(i)) {
                if e.except {
                    except.push(entry);
                } else {
                    found.push(entry);
                }
            }
        }
        found.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        except.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        let hit = RegionHit {
            name: region.name.clone(),
            sources: found.iter().map(|(p, o)| source_hit(p, o)).collect(),
            except: except.iter().map(|(p, o)| source_hit(p, o)).collect(),
        };
        if hit.sources.is_empty() {
            // Only an exception matches: the region never had the address.
        } else if hit.except.is_empty() {
            in_regions.push(r);
            regions.push(hit);
        } else {
            excepted.push(hit);
        }
    }
    let key = packet.unwrap_or(PacketKey {
        proto: 0,
        port: None,
    });
    let (decision, level) = compile::decide_explained(policy, device, &in_regions, key);
    let rule = usize::from(decision.rule)
        .checked_sub(1)
        .and_then(|i| policy.rules.get(i));
    let decided_by = rule.zip(level).map(|(r, level): (_, Level)| RuleHit {
        name: r.name.clone(),
        line: r.line,
        level: level.as_str(),
        mode: match r.mode {
            Mode::Enforce => "enforce",
            Mode::Audit => "audit",
            Mode::Reject => "reject",
        },
        action: if decision.verdict == Verdict::Pass as u8 {
            "allow"
        } else {
            "block"
        },
        ports: r.ports.iter().flatten().map(ToString::to_string).collect(),
    });
    let attributed_region = usize::from(decision.region)
        .checked_sub(1)
        .and_then(|i| policy.regions.get(i))
        .map(|r| r.name.clone());
    let notes = qualifier_notes(policy, device, packet);
    let country_sources = index.country_hits(policy, addr);
    Explanation {
        country: country_sources.first().map(|h| h.country.clone()),
        country_sources,
        looked_up: None,
        notes,
        addr: addr.to_string(),
        device: policy.devices[device].name.clone(),
        device_by: device_by.as_str(),
        packet: packet.map(|k| k.to_string()),
        regions,
        excepted,
        rule: rule.map(|r| r.name.clone()),
        decided_by,
        verdict: verdict_name(decision.verdict),
        attributed_region,
    }
}

impl std::fmt::Display for Explanation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} sent by device {} (chosen by {}){}",
            self.addr,
            self.device,
            self.device_by,
            self.packet
                .as_ref()
                .map(|p| format!(", packet {p}"))
                .unwrap_or_default()
        )?;
        match &self.country {
            Some(c) => writeln!(f, "  country {c}")?,
            None => writeln!(f, "  in no country")?,
        }
        match self.looked_up.as_deref() {
            Some([]) => writeln!(
                f,
                "  looked up by no device (a hard-coded address, DNS over HTTPS/TLS, or a name older than the cache)"
            )?,
            Some(lookups) => {
                for l in lookups {
                    let cname = if l.canonical == l.name {
                        String::new()
                    } else {
                        format!(" (canonical name {})", l.canonical)
                    };
                    writeln!(f, "  looked up as {}{cname} by {}", l.name, l.mac)?;
                }
            }
            None => {}
        }
        for h in &self.country_sources {
            writeln!(
                f,
                "    {} says {}: {}{}",
                h.source,
                h.country,
                h.at,
                if h.decides { " (decides)" } else { "" }
            )?;
        }
        if self.regions.is_empty() {
            writeln!(f, "  in no region")?;
        }
        for r in &self.regions {
            writeln!(f, "  in region {}:", r.name)?;
            for s in &r.sources {
                writeln!(f, "    {s}")?;
            }
        }
        for r in &self.excepted {
            writeln!(f, "  not in region {} (carved out by except):", r.name)?;
            for s in &r.sources {
                writeln!(f, "    {s}")?;
            }
            for s in &r.except {
                writeln!(f, "    except {s}")?;
            }
        }
        match &self.decided_by {
            Some(r) => writeln!(
                f,
                "  rule {} (line {}, {} rule, {}{}) {}",
                r.name,
                r.line,
                r.level,
                r.mode,
                if r.ports.is_empty() {
                    String::new()
                } else {
                    format!(", ports {}", r.ports.join(" "))
                },
                match (r.action, r.mode) {
                    ("block", "audit") => "would block it: in audit mode it is reported and passes",
                    ("block", "reject") => {
                        "blocks it and answers: a TCP RST, else an ICMP administratively prohibited"
                    }
                    ("block", _) => "blocks it",
                    _ => "allows it",
                }
            )?,
            None => writeln!(f, "  no rule matches: passes by default")?,
        }
        for n in &self.notes {
            writeln!(f, "  note: {n}")?;
        }
        write!(f, "verdict: {}", self.verdict)
    }
}
