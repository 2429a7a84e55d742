//! The traffic benchmark's two namespaces: a generator with one end of a
//! veth, and a gateway that receives on the other end, forwards to an ifb
//! device and holds the nftables sets; its counters.

use std::{
    io::Write as _,
    os::fd::{BorrowedFd, OwnedFd},
    process::Stdio,
};

use anyhow::{Context as _, bail};
use regionwall_testkit::{frames::DST_MAC, netns::NetNs};

use super::sys;

/// The generator's end of the veth.
pub const GEN_IFACE: &str = "gen0";
/// The gateway's end, where the filters run.
pub const GW_IFACE: &str = "gw0";
/// Where the gateway forwards everything: an ifb device, which frees what
/// it is given to send when no tc action redirected it (a sink, as a dummy
/// device would be; this kernel may lack the dummy driver).
pub const SINK_IFACE: &str = "sink0";

/// The nft tables (created with the sets, the chains added per case).
const INGRESS_TABLE: &str = "netdev rwtb_ingress";
const FORWARD_TABLE: &str = "inet rwtb_forward";

pub struct Topology {
    pub generator: NetNs,
    pub gateway: NetNs,
    /// Whether GRO was on on the gateway's veth before it was turned off.
    pub gro_was_on: bool,
    /// Why the nftables cases cannot run, if they cannot.
    pub nft_missing: Option<String>,
}

/// Runs `f` on a scoped thread inside `ns`.
pub fn inside<T: Send>(
    ns: &NetNs,
    f: impl FnOnce() -> anyhow::Result<T> + Send,
) -> anyhow::Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            let _guard = ns.enter().context("entering a namespace")?;
            f()
        })
        .join()
        .map_err(|_| anyhow::anyhow!("a thread in {} panicked", ns.name()))?
    })
}

pub fn ifindex(ns: &NetNs, iface: &str) -> anyhow::Result<u32> {
    let name = std::ffi::CString::new(iface)?;
    // SAFETY: a valid C string.
    let i = inside(ns, || Ok(unsafe { libc::if_nametoindex(name.as_ptr()) }))?;
    if i == 0 {
        bail!("no {iface} in {}", ns.name());
    }
    Ok(i)
}

impl Topology {
    /// The namespaces `rwtb-gen-<pid>` and `rwtb-gw-<pid>`, the veth between
    /// them (the gateway's end with the frames' destination MAC, GRO off),
    /// forwarding to an ifb device through one next hop (one neighbour
    /// entry, however many destinations), and the nft interval sets of
    /// `v4` (if nft is installed).
    pub fn create(v4: &[String]) -> anyhow::Result<Self> {
        let pid = std::process::id();
        let generator = NetNs::create(&format!("rwtb-gen-{pid}"))?;
        let gateway = NetNs::create(&format!("rwtb-gw-{pid}"))?;
        // No IPv6 on the veth: its autoconfiguration frames would arrive
        // among the counted ones.
        for ns in [&generator, &gateway] {
            ns.sysctl("net.ipv6.conf.all.disable_ipv6=1")?;
            ns.sysctl("net.ipv6.conf.default.disable_ipv6=1")?;
        }
        generator.ip(&[
            "link",
            "add",
            GEN_IFACE,
            "type",
            "veth",
            "peer",
            "name",
            GW_IFACE,
            "netns",
            gateway.name(),
        ])?;
        let mac = DST_MAC.map(|b| format!("{b:02x}")).join(":");
        generator.ip(&["addr", "add", "192.0.2.10/24", "dev", GEN_IFACE])?;
        generator.ip(&["link", "set", GEN_IFACE, "up"])?;
        gateway.ip(&["link", "set", GW_IFACE, "address", &mac])?;
        gateway.ip(&["addr", "add", "192.0.2.1/24", "dev", GW_IFACE])?;
        gateway.ip(&["link", "set", GW_IFACE, "up"])?;
        gateway.ip(&["link", "add", SINK_IFACE, "type", "ifb"])?;
        gateway.ip(&["addr", "add", "198.51.100.1/24", "dev", SINK_IFACE])?;
        gateway.ip(&["link", "set", SINK_IFACE, "up"])?;
        gateway.ip(&[
            "route",
            "add",
            "default",
            "via",
            "198.51.100.2",
            "dev",
            SINK_IFACE,
        ])?;
        for setting in [
            "net.ipv4.ip_forward=1",
            "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.default.rp_filter=0",
            "net.ipv4.conf.gw0.rp_filter=0",
        ] {
            gateway.sysctl(setting)?;
        }
        let gro_was_on = inside(&gateway, || Ok(sys::gro_off(GW_IFACE)?))?;
        let mut topology = Self {
            generator,
            gateway,
            gro_was_on,
            nft_missing: None,
        };
        if std::process::Command::new("nft")
            .arg("--version")
            .output()
            .is_err()
        {
            topology.nft_missing = Some("nft is not installed".into());
        } else {
            let sets = super::super::nft_set("v4", "ipv4_addr", v4);
            let script =
                format!("table {INGRESS_TABLE} {{\n{sets}}}\ntable {FORWARD_TABLE} {{\n{sets}}}\n");
            if let Err(e) = topology.nft(&script) {
                topology.nft_missing = Some(format!("nft could not load the sets: {e:#}"));
            }
        }
        Ok(topology)
    }

    /// `nft -f -` of `script` in the gateway.
    fn nft(&self, script: &str) -> anyhow::Result<String> {
        let mut child = self
            .gateway
            .command("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting nft")?;
        child
            .stdin
            .take()
            .context("nft stdin")?
            .write_all(script.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "nft failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Adds the filtering chain: `forward` in the inet table, or `ingress`
    /// on the gateway's veth in the netdev table. Destinations in the set
    /// are counted (and dropped if `drops`), then the rest counted.
    pub fn nft_chain(&self, forward: bool, drops: bool) -> anyhow::Result<()> {
        let (table, hook) = if forward {
            (FORWARD_TABLE, "forward".to_string())
        } else {
            (INGRESS_TABLE, format!("ingress device \"{GW_IFACE}\""))
        };
        let verdict = if drops { " drop" } else { "" };
        self.nft(&format!(
            "table {table} {{\n  chain filter {{\n    type filter hook {hook} priority 0; policy accept;\n    ip daddr @v4 counter{verdict}\n    counter\n  }}\n}}\n"
        ))
        .map(drop)
    }

    /// The chain's counters, (the set rule's, the last rule's), and the
    /// chain removed.
    pub fn nft_chain_done(&self, forward: bool) -> anyhow::Result<(u64, u64)> {
        let table = if forward {
            FORWARD_TABLE
        } else {
            INGRESS_TABLE
        };
        let listing = self.nft(&format!("list chain {table} filter\n"))?;
        self.nft(&format!(
            "flush chain {table} filter\ndelete chain {table} filter\n"
        ))?;
        nft_counters(&listing)
    }

    /// Attaches `prog` (natively) to the gateway's veth; closing the fd
    /// detaches it.
    pub fn attach(&self, prog: BorrowedFd<'_>) -> anyhow::Result<OwnedFd> {
        let index = ifindex(&self.gateway, GW_IFACE)?;
        inside(&self.gateway, || {
            sys::attach_xdp(prog, index).context("attaching XDP to the gateway's veth")
        })
    }

    /// The gateway's counters now.
    pub fn counters(&self) -> anyhow::Result<Counters> {
        let link = |iface: &str| -> anyhow::Result<serde_json::Value> {
            let out = self
                .gateway
                .command("ip")
                .args(["-s", "-j", "link", "show", "dev", iface])
                .output()?;
            let v: serde_json::Value = serde_json::from_slice(&out.stdout)
                .with_context(|| format!("ip -j link show {iface}"))?;
            Ok(v[0]["stats64"].clone())
        };
        let gw = link(GW_IFACE)?;
        let n = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
        let snmp = self
            .gateway
            .command("cat")
            .args(["/proc/net/snmp", "/proc/net/netstat"])
            .output()?;
        let ip = ip_mib(&String::from_utf8_lossy(&snmp.stdout));
        Ok(Counters {
            rx_packets: n(&gw["rx"]["packets"]),
            rx_dropped: n(&gw["rx"]["dropped"]),
            // ForwDatagrams counts before the forward hook; OutTransmits
            // what left (the gateway sends nothing of its own).
            forwarded: ip
                .get("OutTransmits")
                .or_else(|| ip.get("ForwDatagrams"))
                .copied()
                .unwrap_or(0),
            ip,
        })
    }
}

/// The counters of a chain's listing: (the set rule's, the last rule's).
fn nft_counters(listing: &str) -> anyhow::Result<(u64, u64)> {
    let counts = listing
        .lines()
        .filter_map(|line| line.split("counter packets ").nth(1))
        .map(|after| {
            after
                .split_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
                .context("nft counter")
        })
        .collect::<anyhow::Result<Vec<u64>>>()?;
    match counts[..] {
        [set, last] => Ok((set, last)),
        _ => bail!("not two counters in nft's listing:\n{listing}"),
    }
}

/// The `Ip:` and `IpExt:` counters of /proc/net/snmp and /proc/net/netstat,
/// by name.
fn ip_mib(text: &str) -> std::collections::BTreeMap<String, u64> {
    let mut out = std::collections::BTreeMap::new();
    for prefix in ["Ip:", "IpExt:"] {
        let mut lines = text.lines().filter(|l| l.starts_with(prefix));
        let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
            continue;
        };
        out.extend(
            names
                .split_whitespace()
                .zip(values.split_whitespace())
                .skip(1)
                .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?))),
        );
    }
    out
}

#[derive(Clone, Default, Debug)]
pub struct Counters {
    /// Frames the gateway's veth received (XDP's included).
    pub rx_packets: u64,
    /// Frames lost on the way in (a full ring: the sender's redirects that
    /// failed, counted by the receiving veth).
    pub rx_dropped: u64,
    /// Packets the gateway forwarded (sent out of the sink).
    pub forwarded: u64,
    pub ip: std::collections::BTreeMap<String, u64>,
}

impl Counters {
    /// The counters from `before` to `self`.
    pub fn since(&self, before: &Self) -> Self {
        Self {
            rx_packets: self.rx_packets.saturating_sub(before.rx_packets),
            rx_dropped: self.rx_dropped.saturating_sub(before.rx_dropped),
            forwarded: self.forwarded.saturating_sub(before.forwarded),
            ip: self
                .ip
                .iter()
                .map(|(k, v)| (k.clone(), v.saturating_sub(*before.ip.get(k).unwrap_or(&0))))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{ip_mib, nft_counters};

    #[test]
    fn reads_nft_counters() {
        let listing = "table netdev t {\n\tchain filter {\n\t\ttype filter hook ingress device \"gw0\" priority filter; policy accept;\n\t\tip daddr @v4 counter packets 12 bytes 504 drop\n\t\tcounter packets 34 bytes 1428\n\t}\n}\n";
        assert_eq!(nft_counters(listing).unwrap(), (12, 34));
        assert!(nft_counters("table netdev t {\n}\n").is_err());
    }

    #[test]
    fn reads_ip_counters() {
        let text = "Ip: Forwarding DefaultTTL InReceives\nIp: 1 64 7\nIcmp: InMsgs\nIcmp: 3\nIpExt: InNoRoutes InOctets\nIpExt: 2 900\n";
        let mib = ip_mib(text);
        assert_eq!(mib.get("InReceives"), Some(&7));
        assert_eq!(mib.get("InNoRoutes"), Some(&2));
        assert_eq!(mib.get("InMsgs"), None);
    }
}
