//! Drop, reject and audit events: decoding ring buffer records, naming devices,
//! regions and rules from the policy that was live, and printing them as
//! readable lines or JSON lines.

use std::{
    collections::VecDeque,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::Arc,
    time::{Duration, SystemTime},
};

use regionwall_common::{Event, Reason};
use serde::{Deserialize, Serialize};

use crate::{compile::Compiled, policy::net::format_mac, slots::SlotTable};

/// Decodes one ring buffer record; `None` if it is too short.
#[must_use]
pub fn decode(bytes: &[u8]) -> Option<Event> {
    if bytes.len() < std::mem::size_of::<Event>() {
        return None;
    }
    // SAFETY: length checked; Event is plain data valid for any bytes, and
    // read_unaligned does not require the ring buffer's alignment.
    Some(unsafe { bytes.as_ptr().cast::<Event>().read_unaligned() })
}

/// Names of recent policies by epoch, so events emitted just before a
/// reload are still named by the policy that decided them; devices and
/// regions of other epochs by the slot table, when set.
#[derive(Default)]
pub struct Names {
    recent: VecDeque<(u32, Arc<Compiled>)>,
    slots: Option<SlotTable>,
}

impl Names {
    const KEEP: usize = 4;

    pub fn insert(&mut self, epoch: u32, compiled: Arc<Compiled>) {
        self.recent.push_back((epoch, compiled));
        while self.recent.len() > Self::KEEP {
            self.recent.pop_front();
        }
    }

    /// Names devices and regions of events whose policy is not known (the
    /// pinned `NAMES`: an index changes name only a reload after its name
    /// left the policy, so events of recent epochs are named right).
    pub fn set_slots(&mut self, slots: SlotTable) {
        self.slots = Some(slots);
    }

    #[must_use]
    pub fn get(&self, epoch: u32) -> Option<&Compiled> {
        self.recent
            .iter()
            .rev()
            .find(|(e, _)| *e == epoch)
            .map(|(_, c)| c.as_ref())
    }
}

/// Converts `bpf_ktime_get_boot_ns` stamps to wall-clock time.
#[derive(Clone, Copy, Debug)]
pub struct BootClock {
    boot_epoch: SystemTime,
}

impl BootClock {
    #[must_use]
    pub fn now() -> Self {
        let ts = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
        let since_boot = Duration::new(
            u64::try_from(ts.tv_sec).unwrap_or(0),
            u32::try_from(ts.tv_nsec).unwrap_or(0),
        );
        Self {
            boot_epoch: SystemTime::now() - since_boot,
        }
    }

    #[must_use]
    pub fn at(&self, boot_ns: u64) -> SystemTime {
        self.boot_epoch + Duration::from_nanos(boot_ns)
    }
}

/// One event, with names resolved, as printed.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Record {
    pub timestamp: String,
    pub interface: String,
    pub device: String,
    pub src_mac: String,
    pub src_ip: Option<IpAddr>,
    pub dst_ip: Option<IpAddr>,
    pub protocol: String,
    pub src_port: Option<u16>,
    pub dst_port: Option<u16>,
    pub region: String,
    /// ISO code of the destination's country, "-" when it is in none (or
    /// the policy has no country database).
    #[serde(default = "dash")]
    pub country: String,
    /// The name the device looked up for `dst_ip` (DNS answers seen on the
    /// way to it); `None` when it never resolved the address (hard-coded,
    /// DNS over HTTPS/TLS, another resolver) or names are not watched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// End of the CNAME chain, when it differs from `host`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canonical: Option<String>,
    /// Whether the device resolved `dst_ip` through DNS the gateway saw;
    /// `None` when the controller does not watch DNS answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved: Option<bool>,
    pub rule: String,
    pub verdict: crate::verdict::Verdict,
    pub reason: String,
    pub bytes: u32,
    pub policy_epoch: u32,
}

impl Record {
    /// Names an event. `interface` is the name of the interface it came in
    /// on. `None` for a verdict the kernel never writes (not an event of
    /// this program's).
    #[must_use]
    pub fn new(ev: &Event, names: &Names, clock: &BootClock, interface: &str) -> Option<Self> {
        let verdict = crate::verdict::Verdict::from_kernel(u32::from(ev.verdict))?;
        let (src_ip, dst_ip) = match ev.family {
            4 => (
                Some(IpAddr::V4(Ipv4Addr::new(
                    ev.src_addr[0],
                    ev.src_addr[1],
                    ev.src_addr[2],
                    ev.src_addr[3],
                ))),
                Some(IpAddr::V4(Ipv4Addr::new(
                    ev.dst_addr[0],
                    ev.dst_addr[1],
                    ev.dst_addr[2],
                    ev.dst_addr[3],
                ))),
            ),
            6 => (
                Some(IpAddr::V6(Ipv6Addr::from(ev.src_addr))),
                Some(IpAddr::V6(Ipv6Addr::from(ev.dst_addr))),
            ),
            _ => (None, None),
        };
        let compiled = names.get(ev.epoch);
        let name = |f: &dyn Fn(&Compiled) -> String, unknown: String| compiled.map_or(unknown, f);
        // Port 0 is not a valid TCP/UDP/SCTP port: the kernel leaves ports 0
        // when it could not read them (later fragments, truncated headers).
        let has_ports =
            matches!(ev.proto, 6 | 17 | 132 | 136) && (ev.src_port != 0 || ev.dst_port != 0);
        let reason = Reason::from_u8(ev.reason);
        Some(Self {
            timestamp: humantime::format_rfc3339_micros(clock.at(ev.ts_ns)).to_string(),
            interface: interface.to_string(),
            device: name(
                &|c| c.device_name(ev.device).to_string(),
                names
                    .slots
                    .as_ref()
                    .and_then(|s| s.device(u32::from(ev.device)))
                    .map_or_else(|| format!("#{}", ev.device), str::to_string),
            ),
            src_mac: format_mac(&ev.src_mac),
            src_ip,
            dst_ip,
            protocol: crate::policy::ports::proto_name(ev.proto).into_owned(),
            src_port: has_ports.then_some(ev.src_port),
            dst_port: has_ports.then_some(ev.dst_port),
            region: name(
                &|c| c.region_name(ev.region).to_string(),
                match names.slots.as_ref() {
                    Some(_) if ev.region == 0 => "-".into(),
                    Some(s) => s
                        .region(u32::from(ev.region))
                        .map_or_else(|| format!("#{}", ev.region), str::to_string),
                    None => format!("#{}", ev.region),
                },
            ),
            country: name(
                &|c| c.country_name(ev.country).to_string(),
                match names.slots.as_ref() {
                    _ if ev.country == 0 => "-".into(),
                    Some(s) => s
                        .country(u32::from(ev.country))
                        .map_or_else(|| format!("#{}", ev.country), str::to_string),
                    None => format!("#{}", ev.country),
                },
            ),
            rule: if reason == Some(Reason::Unparsed) {
                "--unparsed drop".into()
            } else {
                name(
                    &|c| c.rule_name(ev.rule).to_string(),
                    format!("#{}", ev.rule),
                )
            },
            verdict,
            reason: match reason {
                Some(Reason::Policy) => "policy".into(),
                Some(Reason::Unparsed) => "unparsed".into(),
                None => format!("#{}", ev.reason),
            },
            bytes: ev.len,
            policy_epoch: ev.epoch,
            host: None,
            canonical: None,
            resolved: None,
        })
    }

    /// Adds what the device looked up for the destination.
    pub fn set_host(&mut self, name: crate::dns::HostName) {
        match name {
            crate::dns::HostName::Resolved { name, canonical } => {
                self.canonical = (canonical != name).then_some(canonical);
                self.host = Some(name);
                self.resolved = Some(true);
            }
            crate::dns::HostName::Unresolved => {
                self.host = None;
                self.canonical = None;
                self.resolved = Some(false);
            }
        }
    }

    /// `host=NAME`, `host=NAME(cname CANONICAL)` or `host=unresolved`; empty
    /// when names are not watched.
    fn host_field(&self) -> String {
        match (&self.host, &self.canonical, self.resolved) {
            (Some(h), Some(c), _) => format!(" host={h} cname={c}"),
            (Some(h), None, _) => format!(" host={h}"),
            (None, _, Some(false)) => " host=unresolved".into(),
            _ => String::new(),
        }
    }

    /// One readable line.
    #[must_use]
    pub fn line(&self) -> String {
        let endpoint = |ip: Option<IpAddr>, port: Option<u16>| match (ip, port) {
            (Some(IpAddr::V6(a)), Some(p)) => format!("[{a}]:{p}"),
            (Some(a), Some(p)) => format!("{a}:{p}"),
            (Some(a), None) => a.to_string(),
            (None, _) => "?".into(),
        };
        format!(
            "{} {} {:<5} device={} mac={} {} -> {} {}{} country={} region={} rule={} ({} bytes)",
            self.timestamp,
            self.interface,
            self.verdict.as_str().to_uppercase(),
            self.device,
            self.src_mac,
            endpoint(self.src_ip, self.src_port),
            endpoint(self.dst_ip, self.dst_port),
            self.protocol,
            self.host_field(),
            self.country,
            self.region,
            self.rule,
            self.bytes,
        )
    }

    /// One JSON object on one line.
    #[must_use]
    pub fn json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

fn dash() -> String {
    "-".into()
}

/// Reads the kernel's ring buffer and forwards decoded events into a
/// bounded queue. When the queue is full the event is counted in
/// `queue_dropped` instead of blocking the reader (so the kernel's ring
/// keeps draining). Returns when the receiver is gone.
pub async fn pump(
    ring: aya::maps::RingBuf<aya::maps::MapData>,
    tx: tokio::sync::mpsc::Sender<Event>,
    queue_dropped: Arc<std::sync::atomic::AtomicU64>,
) -> std::io::Result<()> {
    use tokio::{io::unix::AsyncFd, sync::mpsc::error::TrySendError};
    // SAFETY: the RingBuf owns its map fd for as long as the AsyncFd owns
    // the RingBuf, and as_raw_fd always returns that same fd.
    let mut fd = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(std::io::Error::from)?;
    loop {
        let mut guard = fd.readable_mut().await?;
        let ring = guard.get_inner_mut();
        while let Some(item) = ring.next() {
            let Some(ev) = decode(&item) else { continue };
            match tx.try_send(ev) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    queue_dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                Err(TrySendError::Closed(_)) => return Ok(()),
            }
        }
        guard.clear_ready();
    }
}
