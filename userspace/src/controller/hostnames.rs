//! Hostnames for the controller: drains the DNS ring the TC egress program
//! fills into the bounded name cache, and names (device, address) pairs for
//! events, `stats --by host` and `explain`.

use std::{
    net::IpAddr,
    os::fd::{AsFd as _, OwnedFd},
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, Ordering},
    },
    time::Instant,
};

use aya::maps::{MapData, RingBuf};
use regionwall_common::dns::DnsCopy;
use rustix::event::{PollFd, PollFlags, poll};

use crate::{
    control::{HostLookup, HostName},
    dns::{DnsStats, NameCache, Names},
    policy::net::format_mac,
};

/// Records the draining thread decodes per hold of the lock (a few
/// hundred microseconds: the event path may be waiting to name an event).
const DRAIN_BATCH: usize = 64;
/// Records read on a lookup that missed (an answer may still be queued).
const MISS_BATCH: usize = 16;
/// How long the draining thread sleeps in poll before it looks at its stop
/// flag again.
const POLL_WAKE: rustix::event::Timespec = rustix::event::Timespec {
    tv_sec: 0,
    tv_nsec: 200_000_000,
};

struct Inner {
    ring: RingBuf<MapData>,
    names: Names,
}

/// The DNS ring and the name cache, shared by the draining task and every
/// reader; cheap to clone.
#[derive(Clone)]
pub struct HostNames {
    inner: Arc<Mutex<Inner>>,
    /// A duplicate of the ring's fd for the draining thread's poll.
    wake: Arc<OwnedFd>,
}

impl HostNames {
    /// Takes the DNS ring and a cache of `entries` (device, address) pairs.
    pub fn new(ring: RingBuf<MapData>, entries: usize) -> std::io::Result<Self> {
        let wake = ring.as_fd().try_clone_to_owned()?;
        Ok(Self {
            inner: Arc::new(Mutex::new(Inner {
                ring,
                names: Names::new(NameCache::new(entries)),
            })),
            wake: Arc::new(wake),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves a cache that is still
        // consistent (every operation on it is a whole insert or lookup).
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Reads at most `max` answers waiting in the ring into the cache,
    /// holding the lock for that batch only; returns how many.
    fn drain_batch(&self, max: usize) -> usize {
        let mut inner = self.lock();
        let Inner { ring, names } = &mut *inner;
        let now = Instant::now();
        let mut n = 0;
        while n < max {
            let Some(item) = ring.next() else { break };
            if let Some(copy) = decode(&item) {
                names.ingest_copy(&copy, now);
            }
            n += 1;
        }
        n
    }

    /// What the device at `mac` looked up for `addr`. On a miss one
    /// bounded batch of the ring is read first: the answer leaves before
    /// the connection it names, but the two rings are read apart. Under a
    /// flood of answers the batch bound keeps the caller's time small.
    #[must_use]
    pub fn name(&self, mac: &[u8; 6], addr: IpAddr) -> HostName {
        let found = self.lock().names.lookup(mac, addr, Instant::now());
        let found = found.or_else(|| {
            (self.drain_batch(MISS_BATCH) > 0)
                .then(|| self.lock().names.lookup(mac, addr, Instant::now()))
                .flatten()
        });
        named(found)
    }

    /// What the device at `mac` looked up for `addr`, from the cache alone
    /// (for snapshots: many rows, none worth waiting for).
    #[must_use]
    pub fn cached_name(&self, mac: &[u8; 6], addr: IpAddr) -> HostName {
        named(self.lock().names.lookup(mac, addr, Instant::now()))
    }

    /// Every device that looked up a name for `addr`, with the name.
    #[must_use]
    pub fn who_resolved(&self, addr: IpAddr) -> Vec<HostLookup> {
        self.drain_batch(MISS_BATCH);
        let mut out: Vec<HostLookup> = self
            .lock()
            .names
            .cache()
            .holders(addr)
            .map(|(mac, n)| HostLookup {
                mac: format_mac(&mac),
                name: n.name.to_string(),
                canonical: n.canonical.to_string(),
            })
            .collect();
        out.sort_by(|a, b| a.mac.cmp(&b.mac));
        out
    }

    /// The decoder's and the cache's counts.
    #[must_use]
    pub fn stats(&self) -> DnsStats {
        self.lock().names.stats()
    }

    /// Drains the ring on a thread of its own whenever it has data, in
    /// bounded batches with the lock let go between them, until the
    /// returned handle is dropped. Decoding is CPU work: on its own thread
    /// a flood of answers can only fill the ring (counted as lost by the
    /// kernel), never hold up the runtime that serves events and the
    /// control socket.
    pub fn spawn(&self) -> std::io::Result<Drainer> {
        let stop = Arc::new(AtomicBool::new(false));
        let this = self.clone();
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("dns-names".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    if this.drain_batch(DRAIN_BATCH) == DRAIN_BATCH {
                        continue;
                    }
                    // Nothing (more) waiting: sleep until the ring has data,
                    // waking now and then to see the stop flag.
                    let mut fds = [PollFd::new(&*this.wake, PollFlags::IN)];
                    let _ = poll(&mut fds, Some(&POLL_WAKE));
                }
            })?;
        Ok(Drainer {
            stop,
            thread: Some(thread),
        })
    }
}

/// The draining thread; dropping it stops the thread.
pub struct Drainer {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Drainer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn named(found: Option<crate::dns::Named>) -> HostName {
    match found {
        Some(n) => HostName::Resolved {
            name: n.name.to_string(),
            canonical: n.canonical.to_string(),
        },
        None => HostName::Unresolved,
    }
}

/// One ring record as a [`DnsCopy`]; `None` if it is too short.
fn decode(bytes: &[u8]) -> Option<DnsCopy> {
    if bytes.len() < size_of::<DnsCopy>() {
        return None;
    }
    // SAFETY: length checked; DnsCopy is plain data valid for any bytes,
    // and read_unaligned does not need the ring's alignment.
    Some(unsafe { bytes.as_ptr().cast::<DnsCopy>().read_unaligned() })
}
