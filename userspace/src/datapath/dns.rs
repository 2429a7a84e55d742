//! The DNS copier on the interface: a pinned TCX egress link, adopted or re-made.
//!
//! The copier only observes (it returns `TCX_NEXT` for every frame), so
//! it is attached first in the egress chain: it sees answers as the stack
//! sends them, before another program could redirect or end the chain.
//! Nothing here touches the XDP program or its link: a failure is the
//! caller's to log, and enforcement goes on without names.

use aya::programs::{
    LinkOrder, TcAttach, TcAttachType,
    links::{FdLink, PinnedLink},
    tc::SchedClassifierLink,
};

use super::{Datapath, DatapathError};
use crate::pin::{LinkFacts, PinDir};

impl Datapath {
    /// Puts the DNS copier on egress of `ifindex`, pinned at
    /// `pins.dns_link()`: swapped onto the pinned link when that link is
    /// attached to `ifindex` (adoption, a restart), else on a new TCX link
    /// (replacing a stale pin). Pin the program with [`Self::pin`].
    pub fn attach_dns(&mut self, ifindex: u32, pins: &PinDir) -> Result<LinkFacts, DatapathError> {
        let live = pins.dns_link_facts()?.is_some_and(|f| f.ifindex == ifindex);
        let program = self.dns_program_mut()?;
        let id = if live {
            let pinned = PinnedLink::from_pin(pins.dns_link())?;
            let link = SchedClassifierLink::try_from(FdLink::from(pinned))?;
            program.attach_to_link(link)?
        } else {
            program.attach(
                ifindex,
                TcAttach::Tcx {
                    attach_type: TcAttachType::Egress,
                    order: LinkOrder::first(),
                },
            )?
        };
        let link = program.take_link(id)?;
        let fd = FdLink::try_from(link).map_err(|_| DatapathError::NoBpfLink)?;
        if live {
            self.dns_link = Some(fd);
        } else {
            let path = pins.dns_link();
            pins.unpin(&path)?;
            let pinned = fd.pin(&path).map_err(|source| DatapathError::Pin {
                what: "DNS link",
                source,
            })?;
            self.dns_link = Some(pinned.into());
        }
        Ok(pins
            .dns_link_facts()?
            .ok_or_else(|| crate::pin::PinError::Missing {
                path: pins.dns_link(),
            })?)
    }

    /// Re-attaches the DNS copier to `ifindex` if this datapath had it
    /// attached (called where the XDP program is re-attached: the
    /// interface came back, or its links were detached). `None` when
    /// there was nothing to re-attach.
    pub fn reattach_dns(
        &mut self,
        ifindex: u32,
        pins: &PinDir,
    ) -> Option<Result<LinkFacts, DatapathError>> {
        self.dns_link.as_ref()?;
        Some(self.attach_dns(ifindex, pins))
    }

    /// Whether this datapath holds an attached DNS copier link.
    #[must_use]
    pub const fn dns_attached(&self) -> bool {
        self.dns_link.is_some()
    }

    /// Detaches and unpins the DNS copier (its link and program pins), for
    /// a controller run without it. The maps stay pinned with the others.
    pub fn remove_dns(&mut self, pins: &PinDir) -> Result<(), DatapathError> {
        self.dns_link = None;
        pins.detach_dns_link()?;
        pins.unpin(&pins.dns_link())?;
        pins.unpin(&pins.dns_prog())?;
        Ok(())
    }
}
