//! Bounded UDP and TCP traffic from the sandbox phone to one internet-side
//! host, with what arrived counted.

use std::{
    io::{self, Read as _, Write as _},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc,
    },
    time::Duration,
};

use crate::sandbox::Topology;

/// Outcome of the traffic sent to one destination.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Delivery {
    pub label: String,
    pub addr: String,
    pub udp_sent: u64,
    pub udp_delivered: u64,
    pub tcp_upload: bool,
}

impl Delivery {
    #[must_use]
    pub const fn dropped(&self) -> u64 {
        self.udp_sent - self.udp_delivered
    }
}

/// Sends `count` UDP datagrams and one small TCP upload from `phone` to
/// `addr` (port 9 / 8080 on the internet side) and counts what arrived.
pub fn send_traffic(t: &Topology, label: &str, addr: &str, count: u64) -> io::Result<Delivery> {
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| io::Error::other(format!("bad address {addr}")))?;
    let udp_to = SocketAddr::new(ip, 9);
    let tcp_to = SocketAddr::new(ip, 8080);
    let received = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));

    // Receivers in the internet namespace.
    let (ready_tx, ready_rx) = mpsc::channel::<io::Result<()>>();
    let (r, s) = (Arc::clone(&received), Arc::clone(&stop));
    let server = t.internet.run(move || -> io::Result<bool> {
        let udp = UdpSocket::bind(udp_to)?;
        udp.set_read_timeout(Some(Duration::from_millis(50)))?;
        let tcp = TcpListener::bind(tcp_to)?;
        tcp.set_nonblocking(true)?;
        let _ = ready_tx.send(Ok(()));
        let mut upload_ok = false;
        let mut buf = [0u8; 2048];
        while !s.load(Ordering::Relaxed) {
            if udp.recv_from(&mut buf).is_ok() {
                r.fetch_add(1, Ordering::Relaxed);
            }
            if let Ok((mut conn, _)) = tcp.accept() {
                conn.set_nonblocking(false)?;
                conn.set_read_timeout(Some(Duration::from_secs(2)))?;
                let mut total = 0;
                let mut chunk = [0u8; 8192];
                while let Ok(n) = conn.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    total += n;
                }
                upload_ok = total == UPLOAD_BYTES;
            }
        }
        Ok(upload_ok)
    })?;
    match ready_rx.recv_timeout(Duration::from_secs(5)) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(_) => {
            stop.store(true, Ordering::Relaxed);
            let _ = server.join();
            return Err(io::Error::other(
                "the receiver in the internet namespace did not start within 5 s",
            ));
        }
    }

    let sender = t.phone.run(move || -> io::Result<bool> {
        let bind: SocketAddr = if udp_to.is_ipv4() {
            "0.0.0.0:0".parse()
        } else {
            "[::]:0".parse()
        }
        .map_err(io::Error::other)?;
        let udp = UdpSocket::bind(bind)?;
        for i in 0..count {
            let _ = udp.send_to(format!("regionwall demo datagram {i}").as_bytes(), udp_to);
            std::thread::sleep(Duration::from_millis(5));
        }
        let upload =
            TcpStream::connect_timeout(&tcp_to, Duration::from_millis(1500)).and_then(|mut c| {
                c.set_write_timeout(Some(Duration::from_secs(2)))?;
                c.write_all(&[0x5a; UPLOAD_BYTES])?;
                c.shutdown(std::net::Shutdown::Write)
            });
        Ok(upload.is_ok())
    })?;
    let sent_ok = sender
        .join()
        .map_err(|_| io::Error::other("sender panicked"))???;
    // Let the last datagrams and the upload arrive.
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let upload_ok = server
        .join()
        .map_err(|_| io::Error::other("receiver panicked"))???;
    Ok(Delivery {
        label: label.to_string(),
        addr: addr.to_string(),
        udp_sent: count,
        udp_delivered: received.load(Ordering::Relaxed),
        tcp_upload: sent_ok && upload_ok,
    })
}

/// Bytes of the small TCP upload.
pub const UPLOAD_BYTES: usize = 16 * 1024;

/// Sends `count` UDP datagrams of `size` bytes from the phone to `to`
/// (`addr:port`, v4 or v6), `gap` apart; nothing listens for them.
pub fn udp_burst(t: &Topology, to: &str, count: u64, size: usize, gap: Duration) -> io::Result<()> {
    let to: SocketAddr = to
        .parse()
        .map_err(|_| io::Error::other(format!("bad socket address {to}")))?;
    t.phone
        .run(move || -> io::Result<()> {
            let bind: SocketAddr = if to.is_ipv4() {
                "0.0.0.0:0".parse()
            } else {
                "[::]:0".parse()
            }
            .map_err(io::Error::other)?;
            let sock = UdpSocket::bind(bind)?;
            let payload = vec![0x5a; size];
            for _ in 0..count {
                sock.send_to(&payload, to)?;
                std::thread::sleep(gap);
            }
            Ok(())
        })?
        .join()
        .map_err(|_| io::Error::other("sender panicked"))??
}
