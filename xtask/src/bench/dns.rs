//! The controller's DNS side: answers decoded into the name cache per
//! second (one thread, as the controller runs it), and the cache's heap at
//! its cap, measured against its computed bound.

use std::{
    net::{IpAddr, Ipv4Addr},
    time::{Duration, Instant},
};

use regionwall::dns::{NameCache, Names, cache::CACHE_ENTRIES_DEFAULT};
use regionwall_testkit::{
    dns::{self, Rr, TYPE_A},
    frames,
    rng::Rng,
};
use serde::Serialize;

#[derive(Serialize, Default)]
pub struct DnsResult {
    /// Answer frames decoded per second (each 1-3 CNAMEs, 1-8 addresses).
    pub answers_per_s: f64,
    /// Addresses remembered per second.
    pub addresses_per_s: f64,
    /// The cache's capacity, and the heap it took when full (RSS growth
    /// of this process), against its computed upper bound.
    pub cache_entries: usize,
    pub cache_rss_kib: u64,
    pub cache_bound_kib: u64,
}

const FRAMES: usize = 4096;

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// Answer frames with realistic shapes: names of 20-40 characters, CNAME
/// chains to a CDN, several addresses.
fn frames(rng: &mut Rng) -> Vec<Vec<u8>> {
    (0..FRAMES)
        .map(|i| {
            let query = leak(format!("api{i}.telemetry.vendor{}.example", i % 97));
            let mut owner = query;
            let mut rrs = Vec::new();
            for hop in 0..=rng.below(3) {
                let next = leak(format!("edge{hop}-{i}.cdn.example.net"));
                rrs.push(Rr::Cname(owner, next, 300));
                owner = next;
            }
            for a in 0..=rng.below(8) {
                let [_, _, c, d] = u32::try_from(i * 8 + usize::try_from(a).unwrap_or(0))
                    .unwrap_or(0)
                    .to_be_bytes();
                rrs.push(Rr::A(owner, Ipv4Addr::new(198, 51, c, d), 60));
            }
            let msg = dns::response(
                u16::try_from(i & 0xffff).unwrap_or(0),
                query,
                TYPE_A,
                0,
                &rrs,
            );
            frames::ethernet(
                [2, 0, 0, 0, 0, 1],
                &[],
                frames::ETH_P_IP,
                &frames::ipv4(
                    [192, 0, 2, 1].into(),
                    [192, 0, 2, 10].into(),
                    17,
                    0,
                    0,
                    &frames::udp(53, 40_000, &msg),
                ),
            )
        })
        .collect()
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

pub fn run() -> DnsResult {
    let mut rng = Rng(0xd115_2026);
    let frames = frames(&mut rng);
    let mut names = Names::new(NameCache::new(CACHE_ENTRIES_DEFAULT));
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < Duration::from_secs(2) {
        let now = Instant::now();
        for f in &frames {
            names.ingest_frame(f, now);
        }
        n += FRAMES as u64;
    }
    let secs = started.elapsed().as_secs_f64();
    let stats = names.stats();
    drop(names);

    // The cache at its cap: distinct (device, address) pairs, one name each.
    regionwall::controller::release_freed_memory();
    let before = rss_kib();
    let mut cache = NameCache::new(CACHE_ENTRIES_DEFAULT);
    let now = Instant::now();
    for i in 0..CACHE_ENTRIES_DEFAULT {
        let [_, b, c, d] = u32::try_from(i).unwrap_or(0).to_be_bytes();
        let name = format!("host{i}.telemetry.vendor.example");
        let answer = regionwall::dns::message::Resolution {
            query: name.clone(),
            addresses: vec![regionwall::dns::message::Resolved {
                addr: IpAddr::V4(Ipv4Addr::new(198, b, c, d)),
                canonical: format!("edge{i}.cdn.example.net"),
                ttl: 300,
            }],
            dropped: 0,
        };
        cache.insert(
            [2, 0, 0, 0, 0, u8::try_from(i % 7).unwrap_or(0)],
            &answer,
            now,
        );
    }
    let grown = rss_kib().saturating_sub(before);
    let result = DnsResult {
        answers_per_s: stats.answers as f64 / secs,
        addresses_per_s: stats.addresses as f64 / secs,
        cache_entries: cache.len(),
        cache_rss_kib: grown,
        cache_bound_kib: (cache.max_bytes() / 1024) as u64,
    };
    let _ = n;
    drop(cache);
    eprintln!(
        "bench: DNS answers decoded {:.0}/s ({:.0} addresses/s); name cache of {} entries: {} KiB RSS (bound {} KiB)",
        result.answers_per_s,
        result.addresses_per_s,
        result.cache_entries,
        result.cache_rss_kib,
        result.cache_bound_kib
    );
    result
}
