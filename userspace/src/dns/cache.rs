//! The names each device looked up, per (device MAC, address): bounded by
//! entries with least-recently-used eviction, expired by clamped TTLs.

use std::{
    net::IpAddr,
    num::NonZeroUsize,
    sync::Arc,
    time::{Duration, Instant},
};

use lru::LruCache;

use super::message::Resolution;

/// Entries kept when nothing else is asked for: 65,536 (device, address)
/// pairs: ~16 MiB measured with 30-character names (`./x bench`), at most
/// 40 MiB with every name 253 characters (see [`NameCache::max_bytes`]).
pub const CACHE_ENTRIES_DEFAULT: usize = 1 << 16;
/// Shortest life of a name: answers with TTLs of seconds (CDNs, load
/// balancers) still name the connections made right after them, and the
/// long transfers that follow.
pub const TTL_MIN: Duration = Duration::from_secs(300);
/// Longest life of a name: a day, so an address reused for another host
/// is not named after a lookup from last week.
pub const TTL_MAX: Duration = Duration::from_hours(24);
/// Longest name kept (RFC 1035 allows 253 characters in text form).
const NAME_MAX: usize = 253;

/// The name a device looked up for an address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Named {
    /// The name in the device's question.
    pub name: Arc<str>,
    /// The end of the CNAME chain (equal to `name` without CNAMEs).
    pub canonical: Arc<str>,
}

#[derive(Clone, Debug)]
struct Entry {
    named: Named,
    expires: Instant,
}

/// Bounded cache of (device MAC, address) -> name.
pub struct NameCache {
    entries: LruCache<([u8; 6], IpAddr), Entry>,
    ttl_min: Duration,
    ttl_max: Duration,
    /// Entries pushed out by newer ones before they expired.
    pub evicted: u64,
    /// Entries found expired on lookup.
    pub expired: u64,
}

impl NameCache {
    /// A cache of at most `entries` pairs (at least 1), TTLs clamped to
    /// [`TTL_MIN`, `TTL_MAX`].
    #[must_use]
    pub fn new(entries: usize) -> Self {
        Self::with_ttl(entries, TTL_MIN, TTL_MAX)
    }

    /// A cache with its own TTL clamp (tests use short lives).
    #[must_use]
    pub fn with_ttl(entries: usize, ttl_min: Duration, ttl_max: Duration) -> Self {
        Self {
            entries: LruCache::new(NonZeroUsize::new(entries.max(1)).unwrap_or(NonZeroUsize::MIN)),
            ttl_min,
            ttl_max: ttl_max.max(ttl_min),
            evicted: 0,
            expired: 0,
        }
    }

    /// Pairs held now.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The most pairs held.
    #[must_use]
    pub fn cap(&self) -> usize {
        self.entries.cap().get()
    }

    /// Remembers every address of `answer` for the device at `mac`.
    pub fn insert(&mut self, mac: [u8; 6], answer: &Resolution, now: Instant) {
        let name: Arc<str> = clip(&answer.query).into();
        let mut canonical: Option<Arc<str>> = None;
        for r in &answer.addresses {
            let canon = match &canonical {
                Some(c) if **c == *clip(&r.canonical) => c.clone(),
                _ if r.canonical == answer.query => name.clone(),
                _ => {
                    let c: Arc<str> = clip(&r.canonical).into();
                    canonical = Some(c.clone());
                    c
                }
            };
            let life = Duration::from_secs(u64::from(r.ttl)).clamp(self.ttl_min, self.ttl_max);
            let entry = Entry {
                named: Named {
                    name: name.clone(),
                    canonical: canon,
                },
                expires: now + life,
            };
            if let Some((key, _)) = self.entries.push((mac, r.addr), entry)
                && key != (mac, r.addr)
            {
                self.evicted += 1;
            }
        }
    }

    /// What the device at `mac` looked up for `addr`, if it did within the
    /// entry's life. A hit keeps the entry at least [`TTL_MIN`] longer, so
    /// a connection in use keeps its name.
    pub fn lookup(&mut self, mac: &[u8; 6], addr: IpAddr, now: Instant) -> Option<Named> {
        let key = (*mac, addr);
        let entry = self.entries.get_mut(&key)?;
        if entry.expires <= now {
            self.entries.pop(&key);
            self.expired += 1;
            return None;
        }
        entry.expires = entry.expires.max(now + self.ttl_min);
        Some(entry.named.clone())
    }

    /// Every device (by MAC) holding a live name for `addr`.
    pub fn holders(&self, addr: IpAddr) -> impl Iterator<Item = ([u8; 6], Named)> + '_ {
        let now = Instant::now();
        self.entries
            .iter()
            .filter(move |((_, a), e)| *a == addr && e.expires > now)
            .map(|((mac, _), e)| (*mac, e.named.clone()))
    }

    /// An upper bound of the heap the cache uses when full: per entry the
    /// key, the entry, the LRU node's links, the hash slot, and two names
    /// of the longest length (names shared by several addresses of one
    /// answer are counted once per address, so real use is lower).
    #[must_use]
    pub fn max_bytes(&self) -> usize {
        self.cap() * per_entry(NAME_MAX)
    }

    /// Like [`Self::max_bytes`] for the entries held now, with their names'
    /// real lengths.
    #[must_use]
    pub fn bytes(&self) -> usize {
        self.entries
            .iter()
            .map(|(_, e)| per_entry(0) + e.named.name.len() + e.named.canonical.len())
            .sum()
    }
}

/// Fixed bytes of one entry plus two names of `name` bytes (an `Arc<str>`
/// allocation is its two counts and the text).
const fn per_entry(name: usize) -> usize {
    let key = size_of::<([u8; 6], IpAddr)>();
    let value = size_of::<Entry>();
    // LRU node: key, value, prev and next; hash table: a pointer per slot
    // at 7/8 load plus a control byte.
    let node = key + value + 2 * size_of::<usize>();
    let slot = (usize::BITS as usize).div_ceil(7) + 1;
    node + slot + 2 * (2 * size_of::<usize>() + name)
}

fn clip(name: &str) -> &str {
    match name.char_indices().nth(NAME_MAX) {
        Some((i, _)) => &name[..i],
        None => name,
    }
}
