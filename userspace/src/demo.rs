//! The sandbox demo's narrative: build the sandbox, run regionwall on the
//! gateway, send bounded traffic to a blocked and an allowed documentation
//! range, print the events and a summary, and remove everything.

use std::{io, path::Path, time::Duration};

use regionwall_testkit::{
    sandbox::{Controller, GATEWAY_LAN, TARGETS, Topology},
    traffic::{Delivery, UPLOAD_BYTES, send_traffic},
};

/// Runs the whole demo, printing to `out`. `exe` is the regionwall binary;
/// `shown` is how the policy is named to the reader (the built-in one is
/// read from a temporary copy); `tag` goes into the namespace names.
pub fn run(
    exe: &Path,
    policy: &Path,
    shown: &Path,
    tag: &str,
    out: &mut dyn io::Write,
) -> io::Result<Vec<Delivery>> {
    writeln!(
        out,
        "regionwall demo: building namespaces phone -> gateway -> internet (documentation addresses only)"
    )?;
    let topology = Topology::create(tag)?;
    writeln!(
        out,
        "  phone    {}: 192.0.2.10, 2001:db8:1::10\n  gateway  {}: regionwall on {GATEWAY_LAN} (phone side)\n  internet {}: blocked 198.51.100.10, 2001:db8:bad::10; allowed 203.0.113.10, 2001:db8:600d::10",
        topology.phone.name(),
        topology.gateway.name(),
        topology.internet.name()
    )?;
    writeln!(
        out,
        "starting: regionwall run --iface {GATEWAY_LAN} --policy {}",
        shown.display()
    )?;
    let controller = Controller::start(exe, &topology, policy, &[])?;
    writeln!(
        out,
        "enforcing. sending 10 UDP datagrams and a {} KiB TCP upload to each host:\n",
        UPLOAD_BYTES / 1024
    )?;
    let mut results = Vec::new();
    for (label, addr) in TARGETS {
        let d = send_traffic(&topology, label, addr, 10)?;
        for line in controller.drain_lines(0, Duration::from_millis(100)) {
            writeln!(out, "  event: {line}")?;
        }
        results.push(d);
    }
    for line in controller.drain_lines(0, Duration::from_millis(300)) {
        writeln!(out, "  event: {line}")?;
    }
    let status = controller.stop()?;
    writeln!(out, "\nsummary (controller exited: {status}):")?;
    writeln!(
        out,
        "  {:<11} {:<18} {:>5} {:>9} {:>7}  tcp upload",
        "target", "address", "sent", "delivered", "dropped"
    )?;
    for d in &results {
        writeln!(
            out,
            "  {:<11} {:<18} {:>5} {:>9} {:>7}  {}",
            d.label,
            d.addr,
            d.udp_sent,
            d.udp_delivered,
            d.dropped(),
            if d.tcp_upload { "delivered" } else { "blocked" }
        )?;
    }
    explain_one_drop(policy, shown, out)?;
    writeln!(out, "removing namespaces")?;
    drop(topology);
    Ok(results)
}

/// Answers "why was this blocked?" for the first blocked target, as
/// `regionwall explain` would.
fn explain_one_drop(policy: &Path, shown: &Path, out: &mut dyn io::Write) -> io::Result<()> {
    let Some((_, addr)) = TARGETS.first() else {
        return Ok(());
    };
    let Ok(dst) = addr.parse() else {
        return Ok(());
    };
    let parsed = regionwall::policy::parse_file(policy).map_err(io::Error::other)?;
    let src = std::net::IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 10));
    let device = regionwall::compile::device_for(&parsed, None, Some(src));
    let index = regionwall::explain::Index::new(&parsed);
    let e = regionwall::explain::explain(
        &parsed,
        &index,
        dst,
        device,
        regionwall::explain::DeviceBy::Address,
        "udp/9".parse().ok(),
    );
    writeln!(
        out,
        "\nwhy was {addr} blocked?  regionwall explain {addr} --src {src} --packet udp/9 --policy {}",
        shown.display()
    )?;
    for line in e.to_string().lines() {
        writeln!(out, "  {line}")?;
    }
    Ok(())
}
