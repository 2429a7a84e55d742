//! The traffic benchmark's cases: what the gateway runs in each.

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Case {
    Nothing,
    Regionwall,
    NftIngress,
    NftForward,
    RegionwallLpm,
    RegionwallNoHosts,
    RegionwallAllow,
    NftIngressCount,
    NftForwardCount,
}

/// A `regionwall run` on the gateway's veth.
pub struct Controlled {
    pub lookup: &'static str,
    pub host_counters: bool,
    /// The blocking policy, or the one that allows every region (each
    /// lookup and decision made, nothing dropped).
    pub block: bool,
}

/// An nftables chain on the gateway.
pub struct Chain {
    /// The inet forward hook, or the netdev ingress hook of the veth.
    pub forward: bool,
    /// Whether the set's matches are dropped or only counted.
    pub drop: bool,
}

impl Case {
    pub const ALL: [Self; 9] = [
        Self::Nothing,
        Self::Regionwall,
        Self::NftIngress,
        Self::NftForward,
        Self::RegionwallLpm,
        Self::RegionwallNoHosts,
        Self::RegionwallAllow,
        Self::NftIngressCount,
        Self::NftForwardCount,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Self::Nothing => "(a) nothing (XDP_PASS)",
            Self::Regionwall => "(b) regionwall (XDP, compiled)",
            Self::NftIngress => "(c) nft netdev ingress",
            Self::NftForward => "(d) nft inet forward",
            Self::RegionwallLpm => "(e) regionwall (XDP, --lookup lpm)",
            Self::RegionwallNoHosts => "(f) regionwall (XDP, --no-host-counters)",
            Self::RegionwallAllow => "(g) = (f), nothing blocked",
            Self::NftIngressCount => "(h) = (c), matches counted, not dropped",
            Self::NftForwardCount => "(i) = (d), matches counted, not dropped",
        }
    }

    pub const fn regionwall(self) -> Option<Controlled> {
        let (lookup, host_counters, block) = match self {
            Self::Regionwall => ("compiled", true, true),
            Self::RegionwallLpm => ("lpm", true, true),
            Self::RegionwallNoHosts => ("compiled", false, true),
            Self::RegionwallAllow => ("compiled", false, false),
            _ => return None,
        };
        Some(Controlled {
            lookup,
            host_counters,
            block,
        })
    }

    pub const fn nft(self) -> Option<Chain> {
        let (forward, drop) = match self {
            Self::NftIngress => (false, true),
            Self::NftForward => (true, true),
            Self::NftIngressCount => (false, false),
            Self::NftForwardCount => (true, false),
            _ => return None,
        };
        Some(Chain { forward, drop })
    }
}
