//! The controller's control socket: a Unix stream socket (mode 0600 in a
//! 0700 directory, so only root reaches it) through which `regionwall
//! events`, `stats` and `detach` talk to a running `regionwall run`.
//!
//! Protocol: the client sends one JSON [`Request`] line; the controller
//! answers with JSON lines: a stream of [`crate::events::Record`]s (and
//! [`Lagged`] notes) for `events`, one [`Stats`] for `stats`, one
//! [`Ack`] for `detach`, `stage`, `promote` and `discard`, one
//! [`crate::candidate::Status`] for `diff`.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use regionwall_common::Counter;
use serde::{Deserialize, Serialize};

use crate::{
    compile::Compiled,
    events::Record,
    readings::{ReadError, Readings},
    verdict::Verdict,
};

/// Directory of the default sockets.
pub const SOCKET_DIR: &str = "/run/regionwall";

/// The default socket of the controller of `iface`.
#[must_use]
pub fn default_socket(iface: &str) -> PathBuf {
    Path::new(SOCKET_DIR).join(format!("{iface}.sock"))
}

/// What a client asks for.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "cmd", rename_all = "lowercase")]
pub enum Request {
    /// Stream events matching the filter.
    Events(Filter),
    /// One statistics snapshot.
    #[default]
    Stats,
    /// Detach, remove the pins and exit.
    Detach,
    /// The names devices looked up for an address (for `explain`).
    Hosts { addr: std::net::IpAddr },
    /// Re-read the policy and its data now (`regionwall update`); the
    /// answer says whether the reload was applied or rejected.
    Reload,
    /// Stage a candidate policy beside the live one (root only).
    Stage { path: PathBuf },
    /// The staged candidate and its disagreements ([`crate::candidate::Status`]).
    Diff,
    /// Make the candidate live (root only); `force` even when the live
    /// policy changed since staging.
    Promote {
        #[serde(default)]
        force: bool,
    },
    /// Drop the candidate and its counts (root only).
    Discard,
}

/// The answer to [`Request::Hosts`].
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct HostsAnswer {
    /// Whether the controller watches DNS answers at all.
    pub watching: bool,
    /// Every device (by MAC) with a live name for the address.
    pub lookups: Vec<HostLookup>,
}

/// A device's name for an address.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct HostLookup {
    pub mac: String,
    pub name: String,
    pub canonical: String,
}

/// Event filter: every given field must match (names as printed).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Filter {
    pub device: Option<String>,
    pub region: Option<String>,
    pub verdict: Option<Verdict>,
    /// Stream the staged candidate's events ("would drop", "would pass")
    /// instead of the live ones.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub candidate: bool,
}

impl Filter {
    #[must_use]
    pub fn matches(&self, r: &Record) -> bool {
        let eq = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        eq(&self.device, &r.device)
            && eq(&self.region, &r.region)
            && self.verdict.is_none_or(|v| v == r.verdict)
    }
}

/// Sent in the event stream when a slow client missed events.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Lagged {
    pub lagged: u64,
}

/// Answer to `detach`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Ack {
    pub ok: bool,
    pub message: String,
}

/// Packets and bytes of one (device, region, verdict).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct StatRow {
    pub device: String,
    pub region: String,
    pub verdict: Verdict,
    pub packets: u64,
    pub bytes: u64,
}

/// Packets and bytes of one (device, country, verdict).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct CountryRow {
    pub device: String,
    /// ISO code, or "-" for destinations in no country.
    pub country: String,
    pub verdict: Verdict,
    pub packets: u64,
    pub bytes: u64,
}

/// Traffic of one device to one host: the name it looked up, or the
/// address when it never resolved one (hard-coded, DNS over HTTPS/TLS).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct HostRow {
    pub device: String,
    /// The name the device looked up, or the address.
    pub host: String,
    /// Whether the device resolved `host` through DNS the gateway saw.
    pub resolved: bool,
    /// End of the CNAME chain, when it differs from `host`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canonical: Option<String>,
    /// The destination's country ("-" for none).
    pub country: String,
    /// Destination addresses counted under this row.
    pub addresses: usize,
    /// Passed and audited.
    pub passed_packets: u64,
    pub passed_bytes: u64,
    /// Dropped and rejected.
    pub blocked_packets: u64,
    pub blocked_bytes: u64,
}

pub use crate::dns::HostName;

/// Events one (device, region) did not send for its rate limit.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SuppressedRow {
    pub device: String,
    pub region: String,
    pub events: u64,
}

/// Why drops, rejects and audits did not become printed events.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct NotLogged {
    /// Over the per-(device, region) rate limit (counted in the kernel).
    pub suppressed: u64,
    /// The kernel ring buffer was full.
    pub ring_lost: u64,
    /// The controller's queue was full (`--queue`).
    pub queue_dropped: u64,
    /// The controller's output (stdout) failed: a closed pipe, a full disk.
    #[serde(default)]
    pub not_written: u64,
}

/// A statistics snapshot.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Stats {
    pub interface: String,
    /// Epoch of the live policy.
    pub epoch: u32,
    /// Whether names come from the live policy (else `#index`).
    pub named: bool,
    pub counters: BTreeMap<String, u64>,
    pub traffic: Vec<StatRow>,
    /// All traffic by the destination's country (empty without a country
    /// database: then every row would be "-", and is left out).
    #[serde(default)]
    pub countries: Vec<CountryRow>,
    /// All traffic by host, biggest uploads first (empty with
    /// `--no-host-counters`).
    #[serde(default)]
    pub hosts: Vec<HostRow>,
    pub suppressed: Vec<SuppressedRow>,
    pub not_logged: NotLogged,
    /// Events the controller printed (0 when read from pins).
    pub events_logged: u64,
    /// DNS answers seen and names cached (`None` when the controller does
    /// not watch DNS, or when read from pins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<crate::dns::DnsStats>,
    /// The history recorder (`None` with `--no-history`, or when read
    /// from pins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<HistoryStats>,
    /// `regionwall update`'s status file (`None` without `[update]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<crate::update::status::Status>,
}

/// What the history recorder wrote and could not write.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct HistoryStats {
    /// The database file.
    pub path: String,
    /// Whether events and rollups are being recorded (false when the file
    /// was refused).
    pub recording: bool,
    /// The last error, until a write succeeds again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default)]
    pub events_written: u64,
    #[serde(default)]
    pub rollups_written: u64,
    /// Events not written, for any reason (the sum of the next three).
    #[serde(default)]
    pub not_written: u64,
    /// The writer's queue was full.
    #[serde(default)]
    pub queue_full: u64,
    /// The recorder fell behind the event broadcast.
    #[serde(default)]
    pub lagged: u64,
    /// The commit failed (a full disk, an I/O error).
    #[serde(default)]
    pub write_failed: u64,
    /// Bytes the database and its log use.
    #[serde(default)]
    pub db_bytes: u64,
}

/// What a snapshot adds that the maps do not hold: the controller's own
/// counts (0 when read from pins).
#[derive(Clone, Copy, Debug, Default)]
pub struct Userspace {
    pub queue_dropped: u64,
    pub events_logged: u64,
    pub not_written: u64,
}

impl Stats {
    /// Reads a snapshot from the maps. Devices and regions are named by
    /// the slot table the maps hold (`NAMES`, written by
    /// [`crate::datapath::Datapath::publish_stable`]), which keeps every
    /// count under the name it was counted for, removed names included;
    /// indices it does not name are named by `names` (the live policy,
    /// when published without the table), else shown as `#index`.
    pub fn read(
        maps: &impl Readings,
        interface: &str,
        names: Option<&Compiled>,
        user: Userspace,
    ) -> Result<Self, ReadError> {
        Self::read_resolving(maps, interface, names, user, &|_, _| HostName::Unresolved)
    }

    /// [`Self::read`], naming each host row with `resolve` (the running
    /// controller's DNS name cache).
    #[expect(
        clippy::too_many_lines,
        reason = "names every counter family in one place"
    )]
    pub fn read_resolving(
        maps: &impl Readings,
        interface: &str,
        names: Option<&Compiled>,
        user: Userspace,
        resolve: &dyn Fn(&[u8; 6], std::net::IpAddr) -> HostName,
    ) -> Result<Self, ReadError> {
        let meta = maps.live_meta()?;
        let slots = maps.read_slots()?;
        let devices = meta
            .devices
            .max(u32::try_from(slots.devices.len()).unwrap_or(u32::MAX))
            .max(1);
        let counters = maps.counters()?;
        let traffic = maps.traffic(devices)?;
        let by_country = maps.country_traffic(devices)?;
        let suppressed = maps.suppressed(devices)?;
        let hosts = Self::read_hosts(maps, names, resolve)?;
        let device = |d: u32| {
            let d16 = u16::try_from(d).unwrap_or(u16::MAX);
            slots.device(d).map_or_else(
                || names.map_or_else(|| format!("#{d}"), |c| c.device_name(d16).to_string()),
                str::to_string,
            )
        };
        let region = |r: u32| {
            let r16 = u16::try_from(r).unwrap_or(u16::MAX);
            slots.region(r).map_or_else(
                || {
                    names.map_or_else(
                        || if r == 0 { "-".into() } else { format!("#{r}") },
                        |c| c.region_name(r16).to_string(),
                    )
                },
                str::to_string,
            )
        };
        let country = |id: u32| {
            let id16 = u16::try_from(id).unwrap_or(u16::MAX);
            slots.country(id).map_or_else(
                || {
                    names.map_or_else(
                        || {
                            if id == 0 {
                                "-".into()
                            } else {
                                format!("#{id}")
                            }
                        },
                        |c| c.country_name(id16).to_string(),
                    )
                },
                str::to_string,
            )
        };
        let has_countries = !slots.countries.is_empty()
            || names.is_some_and(|c| !c.country_names.is_empty())
            || by_country.iter().any(|t| t.region != 0);
        let c = |k: Counter| counters[k as usize];
        Ok(Self {
            interface: interface.to_string(),
            epoch: meta.epoch,
            named: names.is_some() || !slots.is_empty(),
            counters: Counter::ALL
                .iter()
                .map(|&k| (k.name().to_string(), c(k)))
                // The TC copier's counts (pinned state of an older layout
                // has none).
                .chain(maps.dns_counts().ok().into_iter().flat_map(|d| {
                    [
                        ("dns_copied".to_string(), d.copied),
                        ("dns_lost".to_string(), d.lost),
                        ("dns_clipped".to_string(), d.clipped),
                    ]
                }))
                .collect(),
            traffic: traffic
                .iter()
                .map(|t| StatRow {
                    device: device(t.device),
                    region: region(t.region),
                    verdict: t.verdict,
                    packets: t.counter.packets,
                    bytes: t.counter.bytes,
                })
                .collect(),
            countries: if has_countries {
                by_country
                    .iter()
                    .map(|t| CountryRow {
                        device: device(t.device),
                        country: country(t.region),
                        verdict: t.verdict,
                        packets: t.counter.packets,
                        bytes: t.counter.bytes,
                    })
                    .collect()
            } else {
                Vec::new()
            },
            hosts,
            suppressed: suppressed
                .iter()
                .map(|&(d, r, n)| SuppressedRow {
                    device: device(d),
                    region: region(r),
                    events: n,
                })
                .collect(),
            not_logged: NotLogged {
                suppressed: c(Counter::EventsSuppressed),
                ring_lost: c(Counter::EventsLost),
                queue_dropped: user.queue_dropped,
                not_written: user.not_written,
            },
            events_logged: user.events_logged,
            dns: None,
            history: None,
            update: None,
        })
    }

    /// The per-destination counters as host rows: `resolve` names each
    /// (source MAC, address); rows of one device and name are summed.
    pub fn read_hosts(
        maps: &impl Readings,
        names: Option<&Compiled>,
        resolve: &dyn Fn(&[u8; 6], std::net::IpAddr) -> HostName,
    ) -> Result<Vec<HostRow>, ReadError> {
        let slots = maps.read_slots()?;
        let mut rows: BTreeMap<(String, String, bool), HostRow> = BTreeMap::new();
        for d in maps.destinations()? {
            let d16 = u16::try_from(d.device).unwrap_or(u16::MAX);
            let device = slots.device(d.device).map_or_else(
                || names.map_or_else(|| format!("#{}", d.device), |c| c.device_name(d16).into()),
                str::to_string,
            );
            let (host, canonical, resolved) = match resolve(&d.mac, d.addr) {
                HostName::Resolved { name, canonical } => {
                    let canonical = (canonical != name).then_some(canonical);
                    (name, canonical, true)
                }
                HostName::Unresolved => (d.addr.to_string(), None, false),
            };
            let country = names
                .and_then(|c| c.attribution.country(d.addr))
                .unwrap_or("-")
                .to_string();
            let row = rows
                .entry((device.clone(), host.clone(), resolved))
                .or_insert_with(|| HostRow {
                    device,
                    host,
                    resolved,
                    canonical,
                    country,
                    addresses: 0,
                    passed_packets: 0,
                    passed_bytes: 0,
                    blocked_packets: 0,
                    blocked_bytes: 0,
                });
            row.addresses += 1;
            row.passed_packets += d.counter.passed_packets;
            row.passed_bytes += d.counter.passed_bytes;
            row.blocked_packets += d.counter.blocked_packets;
            row.blocked_bytes += d.counter.blocked_bytes;
        }
        let mut out: Vec<HostRow> = rows.into_values().collect();
        out.sort_by_key(|r| std::cmp::Reverse(r.passed_bytes + r.blocked_bytes));
        Ok(out)
    }

    /// Packets of a verdict over all devices and regions.
    #[must_use]
    pub fn packets(&self, verdict: Verdict) -> u64 {
        self.traffic
            .iter()
            .filter(|r| r.verdict == verdict)
            .map(|r| r.packets)
            .sum()
    }

    /// A table: one line per (device, region), packets/bytes per verdict.
    #[must_use]
    pub fn table(&self) -> String {
        use std::fmt::Write as _;
        let mut cells: BTreeMap<(&str, &str), [(u64, u64); 4]> = BTreeMap::new();
        for r in &self.traffic {
            let i = match r.verdict {
                Verdict::Pass => 0,
                Verdict::Drop => 1,
                Verdict::Audit => 2,
                Verdict::Reject => 3,
            };
            let cell = cells.entry((&r.device, &r.region)).or_default();
            cell[i].0 += r.packets;
            cell[i].1 += r.bytes;
        }
        let mut out = format!(
            "{} (policy epoch {}){}\n{:<16} {:<16} {:>12} {:>14} {:>12} {:>14} {:>12} {:>14} {:>12} {:>14}\n",
            self.interface,
            self.epoch,
            if self.named {
                ""
            } else {
                " - names unknown, indices shown"
            },
            "DEVICE",
            "REGION",
            "PASS PKTS",
            "PASS BYTES",
            "DROP PKTS",
            "DROP BYTES",
            "AUDIT PKTS",
            "AUDIT BYTES",
            "REJECT PKTS",
            "REJECT BYTES"
        );
        for ((d, r), v) in &cells {
            let _ = writeln!(
                out,
                "{d:<16} {r:<16} {:>12} {:>14} {:>12} {:>14} {:>12} {:>14} {:>12} {:>14}",
                v[0].0, v[0].1, v[1].0, v[1].1, v[2].0, v[2].1, v[3].0, v[3].1
            );
        }
        let _ = writeln!(
            out,
            "rejects: {} answered, {} over the reject rate limit (dropped), {} unanswerable (dropped)",
            self.counters.get("rejects_sent").copied().unwrap_or(0),
            self.counters
                .get("rejects_suppressed")
                .copied()
                .unwrap_or(0),
            self.counters
                .get("rejects_unanswerable")
                .copied()
                .unwrap_or(0),
        );
        let n = &self.not_logged;
        let _ = writeln!(
            out,
            "events not logged: {} over the rate limit, {} lost in the kernel ring, {} dropped from the controller's queue, {} not written to its output",
            n.suppressed, n.ring_lost, n.queue_dropped, n.not_written
        );
        for s in &self.suppressed {
            let _ = writeln!(
                out,
                "  rate-limited: device {} region {}: {} events",
                s.device, s.region, s.events
            );
        }
        if let Some(h) = &self.history {
            let _ = writeln!(
                out,
                "history {}: {} ({} events and {} rollup rows written, {} KiB); events not written: {} (queue full {}, fell behind {}, write failed {})",
                h.path,
                if h.recording {
                    "recording"
                } else {
                    "NOT recording"
                },
                h.events_written,
                h.rollups_written,
                h.db_bytes / 1024,
                h.not_written,
                h.queue_full,
                h.lagged,
                h.write_failed,
            );
            if let Some(e) = &h.error {
                let _ = writeln!(out, "  history error: {e}");
            }
        }
        if let Some(u) = &self.update {
            out.push_str(&u.lines());
        }
        out
    }
}
