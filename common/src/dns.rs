//! DNS answers the TC egress program copies to the controller: the record
//! in ring `DNS_RING` and the slots of per-CPU array `DNS_COUNTERS`.

use core::mem::size_of;

/// The DNS port: frames with this UDP or TCP *source* port going out of the
/// LAN interface are answers on their way to a device.
pub const DNS_PORT: u16 = 53;

/// Bytes of each frame copied, from the Ethernet header on. A standard
/// 1,500-byte MTU frame with two VLAN tags fits; longer frames (a TCP
/// segment offloaded as one large skb, a jumbo frame) are clipped and
/// counted in [`DnsCounter::Clipped`].
pub const DNS_COPY_BYTES: usize = 2048;

/// Size of ring `DNS_RING`: room for about 500 answers between two reads
/// of the controller.
pub const DNS_RING_BYTES: u32 = 1 << 20;

/// One DNS answer frame as the kernel saw it leave for a device.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct DnsCopy {
    /// Length of the whole frame (`skb->len`).
    pub wire_len: u32,
    /// Bytes of `frame` that hold the frame (`min(wire_len, DNS_COPY_BYTES)`).
    pub captured: u32,
    /// Interface the frame left by.
    pub ifindex: u32,
    pub _pad: u32,
    /// The frame from its Ethernet header; bytes past `captured` are junk.
    pub frame: [u8; DNS_COPY_BYTES],
}
const _: () = assert!(size_of::<DnsCopy>() == 16 + DNS_COPY_BYTES);

/// Slots of per-CPU array `DNS_COUNTERS`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DnsCounter {
    /// Answers copied into the ring.
    Copied = 0,
    /// Answers not copied because the ring was full.
    Lost = 1,
    /// Answers copied only in part (longer than [`DNS_COPY_BYTES`]).
    Clipped = 2,
}

/// Number of [`DnsCounter`] slots.
pub const DNS_COUNTERS: u32 = 3;

impl DnsCounter {
    /// Every counter, in slot order.
    pub const ALL: [Self; DNS_COUNTERS as usize] = [Self::Copied, Self::Lost, Self::Clipped];

    /// The name shown in statistics.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Copied => "dns_copied",
            Self::Lost => "dns_lost",
            Self::Clipped => "dns_clipped",
        }
    }
}
