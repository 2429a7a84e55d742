//! Keeps the program on the interface: netlink link notifications say at
//! once when the interface is removed or re-created (re-attach within
//! milliseconds), and a short poll catches what netlink does not announce
//! (an outside `BPF_LINK_DETACH`). Gaps are logged as measured.

use std::time::{Duration, Instant};

use aya::programs::XdpMode;
use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::{RouteNetlinkMessage, link::LinkAttribute};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use tokio::sync::mpsc;

use crate::{datapath::Datapath, iface, pin::PinDir};

use super::ControllerError;

/// How often the link is checked when netlink says nothing: an outside
/// `BPF_LINK_DETACH` sends no notification, so this bounds how long it
/// goes unseen. One check is two bpf(2) calls and an ioctl.
pub const POLL: Duration = Duration::from_millis(20);

/// How often `wait_for_interface` looks for the interface besides
/// netlink (which wakes it at once): the fallback when notifications are
/// unavailable or overrun.
pub const WAIT_POLL: Duration = Duration::from_millis(500);

/// RTMGRP_LINK: the multicast group of link notifications.
const RTMGRP_LINK: u32 = 1;

/// A link notification for any interface.
#[derive(Clone, Debug)]
pub struct LinkNote {
    pub index: u32,
    pub name: Option<String>,
    pub removed: bool,
    pub at: Instant,
}

/// Starts a thread reading link notifications; they arrive on the
/// returned channel (bounded: when it is full, the next poll catches up).
pub fn netlink_notes() -> std::io::Result<mpsc::Receiver<LinkNote>> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind(&SocketAddr::new(0, RTMGRP_LINK))?;
    let (tx, rx) = mpsc::channel(256);
    std::thread::Builder::new()
        .name("regionwall-netlink".into())
        .spawn(move || {
            loop {
                let buf = match socket.recv_from_full() {
                    Ok((buf, _)) => buf,
                    Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                        // Overrun: notes were lost; ask for a check.
                        let note = LinkNote {
                            index: 0,
                            name: None,
                            removed: false,
                            at: Instant::now(),
                        };
                        if tx.blocking_send(note).is_err() {
                            return;
                        }
                        continue;
                    }
                    Err(e) => {
                        log::warn!("netlink link notifications stopped: {e}; polling only");
                        return;
                    }
                };
                for note in decode(&buf) {
                    if tx.try_send(note).is_err() && tx.is_closed() {
                        return;
                    }
                }
            }
        })?;
    Ok(rx)
}

/// Waits until an interface named `iface` exists and returns its index. A
/// LAN interface that appears late (PPPoE, a VLAN, a USB adapter) is
/// waited for rather than an error: logged once when the wait begins and
/// once when it appears. Netlink link notifications wake the wait at once;
/// a poll every `WAIT_POLL` covers their absence. Fails at once for a name
/// that can be no interface's, or when the index cannot be read for a
/// reason other than its absence. The caller races it against its signals.
pub async fn wait_for_interface(iface: &str) -> Result<u32, ControllerError> {
    if let Some(why) = crate::pin::invalid_iface_name(iface) {
        return Err(ControllerError::BadInterfaceName {
            iface: iface.to_string(),
            why,
        });
    }
    let lookup = || match iface::ifindex(iface) {
        Ok(index) => Ok(Some(index)),
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
        Err(source) => Err(ControllerError::NoInterface {
            iface: iface.to_string(),
            source,
        }),
    };
    if let Some(index) = lookup()? {
        return Ok(index);
    }
    // Subscribed before the next look, so an appearance in between is
    // either seen by that look or announced.
    let mut notes = netlink_notes()
        .map_err(|e| log::warn!("no netlink link notifications ({e}); polling only"))
        .ok();
    let since = Instant::now();
    log::warn!(
        "interface {iface} does not exist yet; waiting for it (nothing is enforced on it until it appears)"
    );
    let mut poll = tokio::time::interval(WAIT_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if let Some(index) = lookup()? {
            log::info!(
                "interface {iface} appeared (ifindex {index}) after {:.1} s of waiting; attaching",
                since.elapsed().as_secs_f64()
            );
            return Ok(index);
        }
        tokio::select! {
            Some(_) = async { match notes.as_mut() { Some(r) => r.recv().await, None => std::future::pending().await } } => {}
            _ = poll.tick() => {}
        }
    }
}

/// The link notifications in one netlink datagram.
fn decode(mut buf: &[u8]) -> Vec<LinkNote> {
    let at = Instant::now();
    let mut notes = Vec::new();
    while buf.len() >= 16 {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len < 16 || len > buf.len() {
            break;
        }
        if let Ok(msg) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[..len]) {
            let (link, removed) = match msg.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(l)) => (Some(l), false),
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(l)) => (Some(l), true),
                _ => (None, false),
            };
            if let Some(link) = link {
                let name = link.attributes.iter().find_map(|a| match a {
                    LinkAttribute::IfName(n) => Some(n.clone()),
                    _ => None,
                });
                notes.push(LinkNote {
                    index: link.header.index,
                    name,
                    removed,
                    at,
                });
            }
        }
        let step = (len + 3) & !3;
        buf = buf.get(step..).unwrap_or(&[]);
    }
    notes
}

/// How XDP runs on `ifindex` as the kernel reports it (RTM_GETLINK's
/// IFLA_XDP_ATTACHED): "native", "generic", "offloaded", or `None` when it
/// cannot tell. Tells what `--xdp-mode auto` picked.
#[must_use]
pub fn attached_mode(ifindex: u32) -> Option<&'static str> {
    use netlink_packet_core::{NLM_F_REQUEST, NetlinkHeader};
    use netlink_packet_route::link::{LinkMessage, LinkXdp, XdpAttached};
    let mut socket = Socket::new(NETLINK_ROUTE).ok()?;
    socket.bind_auto().ok()?;
    socket.connect(&SocketAddr::new(0, 0)).ok()?;
    let mut link = LinkMessage::default();
    link.header.index = ifindex;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST;
    let mut request = NetlinkMessage::new(
        header,
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::GetLink(link)),
    );
    request.finalize();
    let mut buf = vec![0; request.buffer_len()];
    request.serialize(&mut buf);
    socket.send(&buf, 0).ok()?;
    let (reply, _) = socket.recv_from_full().ok()?;
    let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&reply).ok()?;
    let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) = msg.payload else {
        return None;
    };
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Xdp(xdp) => xdp.iter().find_map(|x| match x {
            LinkXdp::Attached(XdpAttached::Driver) => Some("native"),
            LinkXdp::Attached(XdpAttached::SocketBuffer) => Some("generic"),
            LinkXdp::Attached(XdpAttached::Hardware) => Some("offloaded"),
            _ => None,
        }),
        _ => None,
    })
}

/// What the supervisor tells the controller.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Enforcing (or waiting for the interface to come back).
    Continue,
    /// The link pin was removed (`regionwall detach`): the controller exits.
    Detached,
}

enum LinkState {
    Fine,
    /// The interface does not exist.
    Gone,
    /// The interface exists under another index, without our program.
    Back(u32),
    /// The interface has the index we attached to, but the link has none:
    /// someone detached it (a deletion unlists the name before it
    /// uninstalls XDP, and the name is read after the link).
    Unlinked(u32),
    /// The link pin was removed.
    Detached,
}

/// Watches one interface and re-attaches the program when it is lost.
pub struct Supervisor {
    iface: String,
    ifindex: u32,
    mode: XdpMode,
    /// When the interface was last seen without our program: since it
    /// appeared (netlink), or since the detach was first seen (poll).
    lost_since: Option<(Instant, &'static str)>,
    /// When the program was last seen on the interface: an outside detach
    /// happened after it, so "now - last_fine" bounds the gap.
    last_fine: Instant,
    gone_announced: bool,
}

impl Supervisor {
    #[must_use]
    pub fn new(iface: &str, ifindex: u32, mode: XdpMode) -> Self {
        Self {
            iface: iface.to_string(),
            ifindex,
            mode,
            lost_since: None,
            last_fine: Instant::now(),
            gone_announced: false,
        }
    }

    #[must_use]
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Whether a notification concerns our interface (then check at once).
    #[must_use]
    pub fn concerns(&mut self, note: &LinkNote) -> bool {
        let ours = note.name.as_deref() == Some(self.iface.as_str())
            || note.index == self.ifindex
            || note.index == 0;
        if ours && !note.removed && note.index != self.ifindex && note.index != 0 {
            // The interface (re)appeared: unenforced from now until attached.
            self.lost_since.get_or_insert((note.at, "appeared"));
        }
        ours
    }

    fn state(&self, pins: &PinDir) -> LinkState {
        // The link first, the name second: see `LinkState::Unlinked`.
        let facts = pins.link_facts();
        let Ok(now) = iface::ifindex(&self.iface) else {
            return LinkState::Gone;
        };
        match facts {
            Ok(Some(f)) if f.ifindex == now => LinkState::Fine,
            Ok(Some(f)) if f.ifindex == 0 && now == self.ifindex => LinkState::Unlinked(now),
            Ok(None) => LinkState::Detached,
            Ok(Some(_)) => LinkState::Back(now),
            Err(e) => {
                log::debug!("reading the pinned link: {e}");
                LinkState::Fine
            }
        }
    }

    /// With XDP in place, puts the DNS copier back when its own link was
    /// detached from outside (or lost its pin) while the interface stayed.
    fn check_dns(&self, dp: &mut Datapath, pins: &PinDir) {
        if !dp.dns_attached() {
            return;
        }
        let on_iface = match pins.dns_link_facts() {
            Ok(Some(f)) => f.ifindex == self.ifindex,
            Ok(None) => false,
            Err(e) => {
                log::debug!("reading the DNS copier's pinned link: {e}");
                true
            }
        };
        if on_iface {
            return;
        }
        match dp.reattach_dns(self.ifindex, pins) {
            Some(Ok(dns)) => log::warn!(
                "re-attached the DNS copier to egress of {} (TCX link {}) after an outside detach; answers in between were not seen",
                self.iface,
                dns.id
            ),
            Some(Err(e)) => log::warn!(
                "re-attaching the DNS copier to egress of {}: {e}; retrying",
                self.iface
            ),
            None => {}
        }
    }

    /// Checks the link and re-attaches when the program is not on the
    /// interface.
    pub fn check(&mut self, dp: &mut Datapath, pins: &PinDir) -> Step {
        let index = match self.state(pins) {
            LinkState::Fine => {
                self.lost_since = None;
                self.last_fine = Instant::now();
                self.check_dns(dp, pins);
                return Step::Continue;
            }
            LinkState::Detached => return Step::Detached,
            LinkState::Gone => {
                if !self.gone_announced {
                    log::warn!(
                        "interface {} is gone; enforcement resumes the moment it is back",
                        self.iface
                    );
                    self.gone_announced = true;
                }
                // Nothing can pass through an interface that does not exist.
                self.lost_since = None;
                return Step::Continue;
            }
            LinkState::Back(index) => {
                self.lost_since.get_or_insert((Instant::now(), "was seen"));
                index
            }
            LinkState::Unlinked(index) => {
                self.lost_since
                    .get_or_insert((Instant::now(), "was seen detached"));
                index
            }
        };
        match dp.attach_pinned(index, self.mode, pins) {
            Ok(facts) => {
                self.ifindex = index;
                self.gone_announced = false;
                let (since, what) = self
                    .lost_since
                    .take()
                    .unwrap_or((Instant::now(), "was seen"));
                let gap = since.elapsed().as_secs_f64() * 1e3;
                if what == "was seen detached" {
                    // Detached some time after it was last seen attached:
                    // the gap is at most that long (measured, not assumed
                    // from the poll interval, which load can stretch).
                    let bound = self.last_fine.elapsed().as_secs_f64() * 1e3;
                    log::warn!(
                        "re-attached to {} (ifindex {index}, link {}) after an outside detach; unenforced gap: at most {bound:.1} ms (last seen attached then; the detach was seen {gap:.1} ms ago)",
                        self.iface,
                        facts.id,
                    );
                } else {
                    log::warn!(
                        "re-attached to {} (ifindex {index}, link {}); unenforced gap: {gap:.1} ms since the interface {what}",
                        self.iface,
                        facts.id,
                    );
                }
                self.last_fine = Instant::now();
                // The DNS copier's link went with the interface (or was
                // detached with it); its failure never holds up XDP.
                match dp.reattach_dns(index, pins) {
                    Some(Ok(dns)) => log::info!(
                        "re-attached the DNS copier to egress of {} (TCX link {})",
                        self.iface,
                        dns.id
                    ),
                    Some(Err(e)) => log::warn!(
                        "re-attaching the DNS copier to egress of {}: {e}; enforcing without destination names",
                        self.iface
                    ),
                    None => {}
                }
            }
            Err(e) => log::warn!(
                "re-attaching to {} (ifindex {index}): {e}; retrying",
                self.iface
            ),
        }
        Step::Continue
    }
}
