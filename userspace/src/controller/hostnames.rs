//! Hostnames for the controller: drains the DNS ring the TC egress program
//! fills into the bounded name cache, and names (device, address) pairs for
//! events, `stats --by host` and `explain`.

use std::{
    net::IpAddr,
    os::fd::{AsFd as _, AsRawFd, OwnedFd, RawFd},
    sync::{Arc, Mutex, MutexGuard},
    time::Instant,
};

use aya::maps::{MapData, RingBuf};
use regionwall_common::dns::DnsCopy;
use tokio::{io::unix::AsyncFd, task::JoinHandle};

use crate::{
    control::{HostLookup, HostName},
    dns::{DnsStats, NameCache, Names},
    policy::net::format_mac,
};

/// Records drained in one go before the lock is let go (the event path
/// may be waiting to name an event).
const DRAIN_BATCH: usize = 256;

struct Inner {
    ring: RingBuf<MapData>,
    names: Names,
}

/// The DNS ring and the name cache, shared by the draining task and every
/// reader; cheap to clone.
#[derive(Clone)]
pub struct HostNames {
    inner: Arc<Mutex<Inner>>,
    /// A duplicate of the ring's fd for the task's epoll registration.
    wake: Arc<OwnedFd>,
}

struct Wake(Arc<OwnedFd>);

impl AsRawFd for Wake {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
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

    /// Reads every answer waiting in the ring into the cache; returns how
    /// many.
    #[expect(
        clippy::must_use_candidate,
        reason = "draining is the point; the count is for tests"
    )]
    pub fn drain(&self) -> usize {
        let mut total = 0;
        loop {
            let mut inner = self.lock();
            let Inner { ring, names } = &mut *inner;
            let now = Instant::now();
            let mut n = 0;
            while n < DRAIN_BATCH {
                let Some(item) = ring.next() else { break };
                if let Some(copy) = decode(&item) {
                    names.ingest_copy(&copy, now);
                }
                n += 1;
            }
            total += n;
            if n < DRAIN_BATCH {
                return total;
            }
        }
    }

    /// What the device at `mac` looked up for `addr`. Answers still in the
    /// ring are read first: the answer leaves before the connection it
    /// names, but the two rings are read by different tasks.
    #[must_use]
    pub fn name(&self, mac: &[u8; 6], addr: IpAddr) -> HostName {
        let found = self.lock().names.lookup(mac, addr, Instant::now());
        let found = found.or_else(|| {
            (self.drain() > 0)
                .then(|| self.lock().names.lookup(mac, addr, Instant::now()))
                .flatten()
        });
        match found {
            Some(n) => HostName::Resolved {
                name: n.name.to_string(),
                canonical: n.canonical.to_string(),
            },
            None => HostName::Unresolved,
        }
    }

    /// Every device that looked up a name for `addr`, with the name.
    #[must_use]
    pub fn who_resolved(&self, addr: IpAddr) -> Vec<HostLookup> {
        self.drain();
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

    /// Drains the ring whenever it has data, until aborted.
    pub fn spawn(&self) -> std::io::Result<JoinHandle<()>> {
        // SAFETY: `Wake` holds its own duplicate of the ring's fd for as
        // long as the AsyncFd holds the `Wake`, and as_raw_fd always returns
        // that same fd.
        let fd = unsafe {
            AsyncFd::register_with_interest(
                Wake(Arc::clone(&self.wake)),
                tokio::io::Interest::READABLE,
            )
        }
        .map_err(std::io::Error::from)?;
        let this = self.clone();
        Ok(tokio::spawn(async move {
            loop {
                let Ok(mut guard) = fd.readable().await else {
                    return;
                };
                // Parsing is CPU work of a few microseconds per answer: off
                // the runtime's async threads would cost more than it saves.
                this.drain();
                guard.clear_ready();
            }
        }))
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
