//! Continuous UDP traffic from the sandbox phone to internet-side hosts,
//! one datagram per destination every `interval`, bounded in count, with
//! what arrived counted per destination.

use std::{
    net::{IpAddr, SocketAddr, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use crate::sandbox::Topology;

/// Sent and delivered datagrams of one destination.
#[derive(Clone, Copy, Debug, Default)]
pub struct Count {
    pub sent: u64,
    pub delivered: u64,
}

pub struct Flow {
    addrs: Vec<IpAddr>,
    stop: Arc<AtomicBool>,
    sent: Vec<Arc<AtomicU64>>,
    received: Vec<Arc<AtomicU64>>,
    threads: Vec<JoinHandle<std::io::Result<std::io::Result<()>>>>,
}

const PORT: u16 = 9;

impl Flow {
    /// Starts receivers on every address (internet namespace) and one
    /// sender (phone namespace) cycling through them, at most `max` rounds.
    pub fn start(t: &Topology, addrs: &[&str], interval: Duration, max: u64) -> Self {
        let addrs: Vec<IpAddr> = addrs.iter().map(|a| a.parse().expect("address")).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let mut received = Vec::new();
        let mut sent = Vec::new();
        let mut threads = Vec::new();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        for addr in &addrs {
            let r = Arc::new(AtomicU64::new(0));
            received.push(Arc::clone(&r));
            sent.push(Arc::new(AtomicU64::new(0)));
            let (s, to, ready) = (
                Arc::clone(&stop),
                SocketAddr::new(*addr, PORT),
                ready_tx.clone(),
            );
            threads.push(
                t.internet
                    .run(move || -> std::io::Result<()> {
                        let udp = UdpSocket::bind(to)?;
                        udp.set_read_timeout(Some(Duration::from_millis(20)))?;
                        let _ = ready.send(());
                        let mut buf = [0u8; 256];
                        while !s.load(Ordering::Relaxed) {
                            if udp.recv_from(&mut buf).is_ok() {
                                r.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        // Drain what is still queued.
                        while udp.recv_from(&mut buf).is_ok() {
                            r.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(())
                    })
                    .expect("receiver thread"),
            );
        }
        for _ in &addrs {
            ready_rx
                .recv_timeout(Duration::from_secs(5))
                .expect("receiver ready");
        }
        let (s, to, counts) = (
            Arc::clone(&stop),
            addrs.clone(),
            sent.iter().map(Arc::clone).collect::<Vec<_>>(),
        );
        threads.push(
            t.phone
                .run(move || -> std::io::Result<()> {
                    let v4 = UdpSocket::bind("0.0.0.0:0")?;
                    let v6 = UdpSocket::bind("[::]:0")?;
                    for round in 0..max {
                        if s.load(Ordering::Relaxed) {
                            break;
                        }
                        for (i, a) in to.iter().enumerate() {
                            let sock = if a.is_ipv4() { &v4 } else { &v6 };
                            let msg = format!("flow {round}");
                            if sock
                                .send_to(msg.as_bytes(), SocketAddr::new(*a, PORT))
                                .is_ok()
                            {
                                counts[i].fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        std::thread::sleep(interval);
                    }
                    Ok(())
                })
                .expect("sender thread"),
        );
        Self {
            addrs,
            stop,
            sent,
            received,
            threads,
        }
    }

    /// Stops sending, lets the last datagrams arrive, and returns the
    /// counts per address, in the order given.
    #[must_use]
    pub fn stop(mut self) -> Vec<(IpAddr, Count)> {
        // The sender first (last thread), then the receivers after a pause.
        let sender = self.threads.pop().expect("sender");
        self.stop.store(true, Ordering::Relaxed);
        sender
            .join()
            .expect("sender")
            .expect("sender io")
            .expect("sender ok");
        std::thread::sleep(Duration::from_millis(200));
        for t in self.threads.drain(..) {
            t.join()
                .expect("receiver")
                .expect("receiver io")
                .expect("receiver ok");
        }
        self.addrs
            .iter()
            .enumerate()
            .map(|(i, a)| {
                (
                    *a,
                    Count {
                        sent: self.sent[i].load(Ordering::Relaxed),
                        delivered: self.received[i].load(Ordering::Relaxed),
                    },
                )
            })
            .collect()
    }
}
