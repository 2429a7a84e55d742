//! The global counters: one slot each in the per-CPU array `COUNTERS`,
//! with the names `stats` shows.

/// Global counters, one slot each in a per-CPU array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Every frame the program saw.
    Frames = 0,
    /// ARP, LLDP and other non-IP frames (passed).
    NonIp = 1,
    /// More VLAN tags than [`MAX_VLAN_TAGS`].
    UnparsedVlan = 2,
    /// More IPv6 extension headers than [`MAX_IPV6_EXT_HEADERS`].
    UnparsedExtHeaders = 3,
    /// PPPoE session frames.
    UnparsedPppoe = 4,
    /// IP frames too short or malformed to read (truncated, bad IHL, bad version).
    Malformed = 5,
    /// Unparsed frames passed because of `--unparsed pass`.
    UnparsedPassed = 6,
    /// Unparsed frames dropped because of `--unparsed drop`.
    UnparsedDropped = 7,
    /// IP fragments that are not the first (no L4 header; destination still checked).
    LaterFragments = 8,
    /// Events written to the ring buffer.
    EventsSent = 9,
    /// Events lost because the ring buffer was full (the verdict was not changed).
    EventsLost = 10,
    /// IPv4-mapped IPv6 destinations looked up in the IPv4 table.
    MappedV6 = 11,
    /// A decision index fell outside the published table (should never happen;
    /// the packet passed).
    BadDecision = 12,
    /// A compiled-lookup read fell outside its table (should never happen;
    /// the destination counted as in no region).
    BadLookup = 13,
    /// Events not sent because their (device, region) was over its rate
    /// limit (the verdict was not changed; see [`Bucket`]).
    EventsSuppressed = 14,
    /// Rejected packets answered with a TCP RST or an ICMP error (XDP_TX).
    RejectsSent = 15,
    /// Rejected packets dropped without an answer because their device was
    /// over its reject rate limit (see [`Control::reject_cost_ns`]).
    RejectsSuppressed = 16,
    /// Rejected packets never answered: a RST, an ICMP error, a later
    /// fragment, a broadcast or multicast address, a frame too short to
    /// quote (dropped silently).
    RejectsUnanswerable = 17,
    /// Disagreements with the staged candidate not counted because
    /// `CANDIDATE_TRAFFIC` was full (the verdict was not changed).
    CandidateLost = 18,
    /// Candidate events ("would drop"/"would pass") written to their own
    /// ring, `CANDIDATE_EVENTS`.
    CandidateEventsSent = 19,
    /// Candidate events lost because their ring was full.
    CandidateEventsLost = 20,
    /// Candidate events not sent because their (device, region) was over
    /// the candidate's own rate limit.
    CandidateEventsSuppressed = 21,
}
/// Number of [`Counter`] slots.
pub const COUNTERS: u32 = 22;

impl Counter {
    /// Every counter, in slot order.
    pub const ALL: [Self; COUNTERS as usize] = [
        Self::Frames,
        Self::NonIp,
        Self::UnparsedVlan,
        Self::UnparsedExtHeaders,
        Self::UnparsedPppoe,
        Self::Malformed,
        Self::UnparsedPassed,
        Self::UnparsedDropped,
        Self::LaterFragments,
        Self::EventsSent,
        Self::EventsLost,
        Self::MappedV6,
        Self::BadDecision,
        Self::BadLookup,
        Self::EventsSuppressed,
        Self::RejectsSent,
        Self::RejectsSuppressed,
        Self::RejectsUnanswerable,
        Self::CandidateLost,
        Self::CandidateEventsSent,
        Self::CandidateEventsLost,
        Self::CandidateEventsSuppressed,
    ];

    /// The name shown in statistics.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Frames => "frames",
            Self::NonIp => "non_ip",
            Self::UnparsedVlan => "unparsed_vlan",
            Self::UnparsedExtHeaders => "unparsed_ext_headers",
            Self::UnparsedPppoe => "unparsed_pppoe",
            Self::Malformed => "malformed",
            Self::UnparsedPassed => "unparsed_passed",
            Self::UnparsedDropped => "unparsed_dropped",
            Self::LaterFragments => "later_fragments",
            Self::EventsSent => "events_sent",
            Self::EventsLost => "events_lost",
            Self::MappedV6 => "mapped_v6",
            Self::BadDecision => "bad_decision",
            Self::BadLookup => "bad_lookup",
            Self::EventsSuppressed => "events_suppressed",
            Self::RejectsSent => "rejects_sent",
            Self::RejectsSuppressed => "rejects_suppressed",
            Self::RejectsUnanswerable => "rejects_unanswerable",
            Self::CandidateLost => "candidate_lost",
            Self::CandidateEventsSent => "candidate_events_sent",
            Self::CandidateEventsLost => "candidate_events_lost",
            Self::CandidateEventsSuppressed => "candidate_events_suppressed",
        }
    }
}
