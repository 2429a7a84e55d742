//! How a controller comes to enforce: adopts the pinned state of its own
//! layout (same maps, program swapped onto the pinned link), replaces
//! pinned state it cannot adopt (fresh maps fully published, then the swap),
//! or starts fresh. Every path pins the result; none leaves a gap.

use aya::programs::XdpMode;
use regionwall_common::LAYOUT_VERSION;

use super::{Config, ControllerError, Prepared};
use crate::{
    compile::Compiled,
    datapath::{Datapath, LoadOptions, Readings as _},
    fib::Fib,
    pin::{LinkFacts, PinDir},
};

/// How the controller came to enforce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Start {
    /// Nothing was pinned.
    Fresh,
    /// Pinned state of this layout: same maps, program swapped on the link.
    Adopted { epoch: u32, digest: u32 },
    /// Pinned state it could not adopt, replaced without a gap.
    Replaced { reason: String },
}

fn dp_err(context: &'static str) -> impl FnOnce(crate::DatapathError) -> ControllerError {
    move |source| ControllerError::Datapath {
        context,
        source: Box::new(source),
    }
}

/// The lookup chosen, with the compiled lookup's room and the counters'
/// region room raised to 1.5 times what the policy needs, so reloads can
/// grow.
fn load_options(config: &Config, compiled: &Compiled, fib: Option<&Fib>) -> LoadOptions {
    let regions = u32::try_from(compiled.region_names.len()).unwrap_or(u32::MAX);
    let mut options = LoadOptions {
        lookup: config.lookup,
        region_room: config
            .region_room
            .max(regions.saturating_add(regions / 2))
            .clamp(1, regionwall_common::MAX_REGIONS),
        ..LoadOptions::default()
    };
    options.fib = config.fib_room;
    if let Some(fib) = fib {
        let room = |n: usize| n + n / 2;
        options.fib.slots = options.fib.slots.max(room(fib.slots.len()));
        options.fib.ranges = options.fib.ranges.max(room(fib.ranges.len()));
        options.fib.long = options.fib.long.max(room(fib.long.len()));
    }
    options
}

fn set_controls(config: &Config, dp: &mut Datapath) -> Result<(), ControllerError> {
    dp.set_unparsed(config.unparsed)
        .map_err(dp_err("setting the unparsed-frame action"))?;
    dp.set_event_limit(config.event_rate, config.event_burst)
        .map_err(dp_err("setting the event rate limit"))?;
    dp.set_reject_limit(config.reject_rate, config.reject_burst)
        .map_err(dp_err("setting the reject rate limit"))?;
    dp.set_host_counters(config.host_counters)
        .map_err(dp_err("setting the host counters"))
}

/// What [`establish`] put in place.
pub struct Established {
    pub dp: Datapath,
    pub start: Start,
    pub facts: LinkFacts,
    /// The live policy as renumbered (names this epoch's counters).
    pub stable: Compiled,
    /// The pinned candidate, read again and carried into the publish
    /// (armed if it applied to the live policy).
    pub candidate: Option<super::shadow::Staged>,
}

/// Puts this controller's program in charge of the interface.
pub fn establish(
    config: &Config,
    prepared: &Prepared,
    pins: &PinDir,
    ifindex: u32,
) -> Result<Established, ControllerError> {
    let options = load_options(config, &prepared.compiled, prepared.fib.as_ref());
    let found = pins.inspect().map_err(ControllerError::Pin)?;
    let mut reason = None;
    if let Some(found) = &found {
        match found.refusal(LAYOUT_VERSION, options.lookup as u32) {
            None => {
                let mut dp =
                    Datapath::adopt(options, pins).map_err(dp_err("loading on the pinned maps"))?;
                // A pinned candidate is read again first, so the first
                // publish carries it (over its refinement, if the live
                // table was refined for it and that still fits).
                let candidate = super::shadow::read_pinned(&dp, config);
                let fits = |p: &Prepared| {
                    p.fib
                        .as_ref()
                        .is_none_or(|f| f.fits(dp.options().fib).is_ok())
                };
                let refined = candidate
                    .as_ref()
                    .and_then(|c| c.live_for(prepared, config))
                    .filter(|p| fits(p));
                let live = refined.as_ref().unwrap_or(prepared);
                if fits(live) {
                    let meta = dp
                        .live_meta()
                        .map_err(|e| dp_err("reading the pinned policy")(e.into()))?;
                    set_controls(config, &mut dp)?;
                    let facts = go_live(&mut dp, pins, ifindex, config)?;
                    match super::publish(
                        &mut dp,
                        live.compiled.clone(),
                        live.fib.as_ref(),
                        meta.epoch + 1,
                        &config.policy,
                        |stable| {
                            candidate
                                .as_ref()
                                .and_then(|c| c.table_for(stable, &prepared.policy))
                        },
                    ) {
                        Ok(stable) => {
                            let start = Start::Adopted {
                                epoch: meta.epoch,
                                digest: meta.names_digest,
                            };
                            return Ok(Established {
                                dp,
                                start,
                                facts,
                                stable,
                                candidate,
                            });
                        }
                        // The pinned slot table cannot take the new names
                        // in one step: fresh maps (counts restart, names
                        // stay right); the pinned policy enforces meanwhile.
                        Err(ControllerError::Datapath { source, .. })
                            if matches!(*source, crate::DatapathError::Slots(_)) =>
                        {
                            reason = Some(format!("the pinned counter slots: {source}"));
                        }
                        Err(e) => return Err(e),
                    }
                } else {
                    reason = Some("the policy needs more room than the pinned tables have".into());
                }
            }
            Some(why) => reason = Some(why),
        }
    }
    // Fresh maps: the policy is fully published before the program goes live.
    let mut dp = Datapath::load_with(options).map_err(dp_err(
        "loading the XDP program (are you root? is the kernel >= 5.9?)",
    ))?;
    set_controls(config, &mut dp)?;
    let stable = super::publish(
        &mut dp,
        prepared.compiled.clone(),
        prepared.fib.as_ref(),
        1,
        &config.policy,
        |_| None,
    )?;
    let facts = go_live(&mut dp, pins, ifindex, config)?;
    let start = reason.map_or(Start::Fresh, |reason| Start::Replaced { reason });
    Ok(Established {
        dp,
        start,
        facts,
        stable,
        candidate: None,
    })
}

/// Puts `dp`'s program on the interface: swapped onto the pinned link when
/// that link is attached here (no gap), else on a new pinned link; then
/// the DNS copier likewise on egress (see [`dns_live`]); then pins the maps
/// and programs.
fn go_live(
    dp: &mut Datapath,
    pins: &PinDir,
    ifindex: u32,
    config: &Config,
) -> Result<LinkFacts, ControllerError> {
    let (mode, iface) = (config.xdp_mode, config.iface.as_str());
    let live = pins
        .link_facts()
        .map_err(ControllerError::Pin)?
        .is_some_and(|f| f.ifindex == ifindex);
    let facts = if live {
        dp.take_over(pins)
            .map_err(dp_err("swapping the program on the pinned link"))?
    } else {
        dp.attach_pinned(ifindex, mode, pins)
            .map_err(|source| ControllerError::Attach {
                iface: iface.to_string(),
                hint: attach_hint(&source, mode),
                source: Box::new(source),
            })?
    };
    if config.dns {
        dns_live(dp, pins, ifindex, iface);
    }
    dp.pin(pins).map_err(dp_err("pinning"))?;
    if !dp.dns_attached() {
        // `--no-dns`, or the copier could not attach: no stale copier
        // link or program pin is left for the next controller to trip on.
        if let Err(e) = dp.remove_dns(pins) {
            log::warn!(
                "removing the DNS copier's pins from {}: {e}",
                pins.path().display()
            );
        }
    }
    Ok(facts)
}

/// Puts the DNS copier on the interface's egress (swapped onto its pinned
/// TCX link, or on a new one). A failure is a warning: XDP enforcement
/// never depends on the TC side.
fn dns_live(dp: &mut Datapath, pins: &PinDir, ifindex: u32, iface: &str) {
    match dp.attach_dns(ifindex, pins) {
        Ok(facts) => log::info!(
            "copying DNS answers on egress of {iface} (TCX link {})",
            facts.id
        ),
        Err(e) => log::warn!(
            "attaching the DNS copier to egress of {iface}: {e}; enforcing without destination names (TCX needs Linux 6.6 or later)"
        ),
    }
}

/// What to try when attaching failed.
fn attach_hint(e: &crate::DatapathError, mode: XdpMode) -> &'static str {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut busy = false;
    while let Some(c) = cause {
        busy |= c
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.raw_os_error() == Some(libc::EBUSY));
        cause = c.source();
    }
    if busy {
        // Another XDP program (another pin root's controller, or
        // another tool) already owns the interface.
        " (another XDP program is attached: `ip link show` names it; detach it, or use the pin root of the controller that attached it)"
    } else if matches!(mode, XdpMode::Driver) {
        " (the driver may lack native XDP: try --xdp-mode generic)"
    } else {
        ""
    }
}
