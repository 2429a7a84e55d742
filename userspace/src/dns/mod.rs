//! Hostnames without a proxy: the DNS answers the TC egress program copied
//! are decoded here and remembered per (device, address), so traffic can be
//! shown by the name the device looked up.

pub mod cache;
pub mod frame;
pub mod message;

#[cfg(test)]
mod tests;

use std::{net::IpAddr, time::Instant};

use regionwall_common::dns::DnsCopy;
use serde::{Deserialize, Serialize};

pub use self::cache::{NameCache, Named};
use self::frame::Transport;

/// What the device looked up for an address, if anything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostName {
    Resolved { name: String, canonical: String },
    Unresolved,
}

/// What the decoder has seen, for `stats` and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsStats {
    /// DNS messages decoded into names.
    pub answers: u64,
    /// Addresses remembered from them.
    pub addresses: u64,
    /// Frames or messages that could not be decoded (malformed, truncated).
    pub malformed: u64,
    /// Well-formed messages with nothing to remember (errors, queries,
    /// NXDOMAIN, not a standard query).
    pub ignored: u64,
    /// TCP segments with a message continued in another segment (TCP
    /// answers are not reassembled).
    pub tcp_partial: u64,
    /// Answers the kernel copied only in part.
    pub clipped: u64,
    /// Pairs held in the name cache, and its capacity.
    pub cached: u64,
    pub cache_cap: u64,
    /// Pairs pushed out of the full cache before their time.
    pub evicted: u64,
}

/// The name cache and the decoder's counts.
pub struct Names {
    cache: NameCache,
    stats: DnsStats,
}

impl Names {
    #[must_use]
    pub fn new(cache: NameCache) -> Self {
        Self {
            cache,
            stats: DnsStats::default(),
        }
    }

    /// Decodes one record of the DNS ring and remembers its names.
    pub fn ingest_copy(&mut self, copy: &DnsCopy, now: Instant) {
        let captured = usize::try_from(copy.captured)
            .unwrap_or(usize::MAX)
            .min(copy.frame.len());
        if copy.wire_len > copy.captured {
            self.stats.clipped += 1;
        }
        self.ingest_frame(&copy.frame[..captured], now);
    }

    /// Decodes one answer frame (from its Ethernet header) and remembers
    /// its names.
    pub fn ingest_frame(&mut self, bytes: &[u8], now: Instant) {
        let Ok(answer) = frame::parse(bytes) else {
            self.stats.malformed += 1;
            return;
        };
        // A group or broadcast MAC is no device: its names would only take
        // room (and show up in `explain` under ff:ff:ff:ff:ff:ff).
        if answer.mac[0] & 1 != 0 {
            self.stats.ignored += 1;
            return;
        }
        match answer.transport {
            Transport::Udp => self.ingest_message(answer.mac, answer.payload, now),
            Transport::Tcp => {
                let (messages, partial) = frame::tcp_messages(answer.payload);
                if partial {
                    self.stats.tcp_partial += 1;
                }
                for m in messages {
                    self.ingest_message(answer.mac, m, now);
                }
            }
        }
    }

    fn ingest_message(&mut self, mac: [u8; 6], payload: &[u8], now: Instant) {
        match message::parse(payload) {
            Ok(answer) => {
                self.stats.answers += 1;
                self.stats.addresses += answer.addresses.len() as u64;
                self.cache.insert(mac, &answer, now);
            }
            Err(message::MessageError::Malformed(_)) => self.stats.malformed += 1,
            Err(_) => self.stats.ignored += 1,
        }
    }

    /// The name the device at `mac` looked up for `addr`.
    pub fn lookup(&mut self, mac: &[u8; 6], addr: IpAddr, now: Instant) -> Option<Named> {
        self.cache.lookup(mac, addr, now)
    }

    #[must_use]
    pub fn stats(&self) -> DnsStats {
        DnsStats {
            cached: self.cache.len() as u64,
            cache_cap: self.cache.cap() as u64,
            evicted: self.cache.evicted,
            ..self.stats
        }
    }

    #[must_use]
    pub fn cache(&self) -> &NameCache {
        &self.cache
    }
}
