//! `regionwall explain`: why an address is (or is not) blocked.

use std::{net::IpAddr, path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use regionwall::{
    compile,
    explain::{self, DeviceBy, Index},
    policy::{self, PacketKey},
};

/// Explain the verdict for a destination address
///
/// Prints the regions containing ADDR with the file and line of each
/// matching prefix, the rule that decides for the device, and the verdict.
/// The device is chosen as the kernel does: by --mac, else by --src
/// address, or named with --device; without any, the default device.
///
/// Examples:
///   regionwall explain 1.0.1.1 --device tv --policy policies/home.toml
///   regionwall explain 2001:db8::1 --mac 02:00:5e:10:00:01 --policy p.toml --json
///   regionwall explain 198.51.100.7 --src 192.0.2.10 --packet udp/53 --policy p.toml
///   regionwall explain 203.0.113.7 --policy p.toml --iface lan0   (+ names looked up)
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Destination address to explain.
    pub addr: IpAddr,
    /// Policy file (TOML).
    #[arg(long)]
    pub policy: PathBuf,
    /// Device by name (as in [devices.NAME], or "default").
    #[arg(long, group = "who")]
    pub device: Option<String>,
    /// Device by source address.
    #[arg(long, group = "who")]
    pub src: Option<IpAddr>,
    /// Device by source MAC address.
    #[arg(long, group = "who")]
    pub mac: Option<String>,
    /// Packet kind for rules with protocol/port qualifiers: tcp/443, udp/53,
    /// tcp (port unknown), icmp, or a protocol number. Without it, rules
    /// with qualifiers do not apply.
    #[arg(long)]
    pub packet: Option<PacketKey>,
    /// Country database directory (overrides the policy's `regions_dir`).
    #[arg(long)]
    pub regions_dir: Option<PathBuf>,
    #[command(flatten)]
    pub input: super::input::InputArgs,
    /// Also ask the controller running on this interface which name each
    /// device looked up for ADDR (from the DNS answers it watches).
    #[arg(long)]
    pub iface: Option<String>,
    /// That controller's control socket [default: /run/regionwall/<iface>.sock].
    #[arg(long, requires = "iface")]
    pub socket: Option<PathBuf>,
    /// Print one JSON object (fields addr, device, regions, rule, verdict, ...).
    #[arg(long)]
    pub json: bool,
    /// Also answer for a candidate policy: FILE, or without it the
    /// candidate staged on --iface (`regionwall stage`). JSON then has
    /// `live` and `candidate` objects.
    #[arg(long, value_name = "FILE", num_args = 0..=1)]
    #[expect(
        clippy::option_option,
        reason = "clap's shape for an option whose value may be left out"
    )]
    pub candidate: Option<Option<PathBuf>>,
}

/// The device the arguments name in `parsed`, and how it was chosen.
fn device_of(args: &Args, parsed: &policy::Policy) -> anyhow::Result<(usize, DeviceBy)> {
    Ok(if let Some(name) = &args.device {
        let i = parsed
            .devices
            .iter()
            .position(|d| &d.name == name)
            .with_context(|| {
                let names: Vec<&str> = parsed.devices.iter().map(|d| d.name.as_str()).collect();
                format!(
                    "unknown device \"{name}\": expected one of {}",
                    names.join(", ")
                )
            })?;
        (i, DeviceBy::Name)
    } else if let Some(mac) = &args.mac {
        let mac = policy::net::parse_mac(mac).map_err(anyhow::Error::msg)?;
        match compile::device_for(parsed, Some(mac), None) {
            0 => (0, DeviceBy::Default),
            i => (i, DeviceBy::Mac),
        }
    } else if let Some(src) = args.src {
        match compile::device_for(parsed, None, Some(src)) {
            0 => (0, DeviceBy::Default),
            i => (i, DeviceBy::Address),
        }
    } else {
        (0, DeviceBy::Default)
    })
}

/// The explanation of ADDR under the policy at `path`.
fn explain_file(
    args: &Args,
    path: &std::path::Path,
    options: &policy::Options,
) -> anyhow::Result<explain::Explanation> {
    let parsed = super::parse_policy(path, options, args.input.limits())?;
    let (device, by) = device_of(args, &parsed)?;
    let index = Index::new(&parsed);
    Ok(explain::explain(
        &parsed,
        &index,
        args.addr,
        device,
        by,
        args.packet,
    ))
}

/// The candidate's file: given, or the one staged on `--iface`.
fn candidate_path(args: &Args, given: Option<&PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(path) = given {
        return Ok(path.clone());
    }
    let iface = args
        .iface
        .as_ref()
        .context("--candidate without a FILE asks the controller: give --iface")?;
    let target = super::client::Target {
        iface: iface.clone(),
        socket: args.socket.clone(),
        pin_root: regionwall::pin::DEFAULT_ROOT.into(),
        policy: None,
    };
    let status = super::candidate::status(&target)?;
    anyhow::ensure!(status.staged, "no candidate is staged on {iface}");
    Ok(PathBuf::from(status.path))
}

pub fn main(args: &Args) -> anyhow::Result<ExitCode> {
    super::default_sigpipe();
    let options = policy::Options {
        regions_dir: args.regions_dir.clone(),
        ..policy::Options::default()
    };
    let mut e = explain_file(args, &args.policy, &options)?;
    if let Some(iface) = &args.iface {
        let target = super::client::Target {
            iface: iface.clone(),
            socket: args.socket.clone(),
            pin_root: regionwall::pin::DEFAULT_ROOT.into(),
            policy: None,
        };
        match target.hosts(args.addr)? {
            Some(answer) => e.set_hosts(answer),
            None => e.notes.push(format!(
                "no controller answers on {iface}: names devices looked up are not known"
            )),
        }
    }
    let candidate = match &args.candidate {
        Some(given) => {
            let path = candidate_path(args, given.as_ref())?;
            Some((explain_file(args, &path, &options)?, path))
        }
        None => None,
    };
    match (args.json, candidate) {
        (true, None) => println!(
            "{}",
            serde_json::to_string(&e).context("encoding the explanation")?
        ),
        (true, Some((c, _))) => println!(
            "{}",
            serde_json::to_string(&serde_json::json!({ "live": e, "candidate": c }))
                .context("encoding the explanation")?
        ),
        (false, None) => println!("{e}"),
        (false, Some((c, path))) => {
            println!("live policy {}:\n{e}", args.policy.display());
            println!("\ncandidate {}:\n{c}", path.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
