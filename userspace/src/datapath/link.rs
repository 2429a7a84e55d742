//! The program on the interface: attaching with a pinned XDP link,
//! swapping onto a pinned link (`BPF_LINK_UPDATE`), pinning the program
//! and its maps.

use aya::programs::{
    XdpMode,
    links::{FdLink, LinkError, PinnedLink},
    xdp::{XdpLink, XdpLinkId},
};

use super::{Datapath, DatapathError};
use crate::{
    layout::PINNED_MAPS,
    pin::{LinkFacts, PinDir},
};

impl Datapath {
    /// Pins every map and the program into `pins` (replacing what is
    /// there), so they outlive this process; the DNS copier's program too
    /// when it is loaded. Call before [`Self::take_events`] and
    /// [`Self::take_dns`].
    pub fn pin(&mut self, pins: &PinDir) -> Result<(), DatapathError> {
        for name in PINNED_MAPS {
            let path = pins.map(name);
            pins.unpin(&path)?;
            self.map(name)?
                .pin(&path)
                .map_err(|source| DatapathError::Pin { what: name, source })?;
        }
        if self.dns_error.is_none() && self.ebpf.program(super::DNS_PROGRAM_NAME).is_some() {
            let path = pins.dns_prog();
            pins.unpin(&path)?;
            self.dns_program_mut()?
                .pin(&path)
                .map_err(|source| DatapathError::Pin {
                    what: "DNS program",
                    source,
                })?;
        }
        let path = pins.prog();
        pins.unpin(&path)?;
        self.program_mut()?
            .pin(&path)
            .map_err(|source| DatapathError::Pin {
                what: "program",
                source,
            })
    }

    /// Attaches with a new link pinned at `pins.link()` (replacing a stale
    /// link pin), so the program stays attached after this process.
    pub fn attach_pinned(
        &mut self,
        ifindex: u32,
        mode: XdpMode,
        pins: &PinDir,
    ) -> Result<LinkFacts, DatapathError> {
        let id = self.program_mut()?.attach(ifindex, mode)?;
        let fd = self.take_link(id)?;
        let path = pins.link();
        pins.unpin(&path)?;
        let pinned = fd.pin(&path).map_err(|source| DatapathError::Pin {
            what: "link",
            source,
        })?;
        self.link = Some(pinned.into());
        Self::pinned_facts(pins)
    }

    /// Swaps this program onto the link pinned at `pins.link()` with one
    /// `BPF_LINK_UPDATE`: the interface never runs without a program.
    pub fn take_over(&mut self, pins: &PinDir) -> Result<LinkFacts, DatapathError> {
        let pinned = PinnedLink::from_pin(pins.link())?;
        let link = XdpLink::try_from(FdLink::from(pinned))?;
        let id = self.program_mut()?.attach_to_link(link)?;
        self.link = Some(self.take_link(id)?);
        Self::pinned_facts(pins)
    }

    /// Takes a link out of the program's keeping as a bpf_link fd.
    pub(super) fn take_link(&mut self, id: XdpLinkId) -> Result<FdLink, DatapathError> {
        let link = self.program_mut()?.take_link(id)?;
        FdLink::try_from(link).map_err(|_| DatapathError::NoBpfLink)
    }

    /// What the kernel says of the link just pinned.
    pub(super) fn pinned_facts(pins: &PinDir) -> Result<LinkFacts, DatapathError> {
        Ok(pins
            .link_facts()?
            .ok_or_else(|| crate::pin::PinError::Missing { path: pins.link() })?)
    }

    /// Closes this process's link fds (XDP and DNS copier): with the pins
    /// removed first the programs detach, otherwise they stay attached
    /// through the pins.
    pub fn release_link(&mut self) {
        self.link = None;
        self.dns_link = None;
    }

    /// Attaches to an interface by index (in the calling thread's network
    /// namespace). Dropping the datapath detaches.
    pub fn attach(&mut self, ifindex: u32, mode: XdpMode) -> Result<XdpLinkId, DatapathError> {
        Ok(self.program_mut()?.attach(ifindex, mode)?)
    }

    /// Detaches one attachment.
    pub fn detach(&mut self, link: XdpLinkId) -> Result<(), DatapathError> {
        self.program_mut()?.detach(link)?;
        Ok(())
    }
}

/// Detaching by dropping keeps `LinkError` out of callers' signatures.
#[doc(hidden)]
pub type DetachError = LinkError;
