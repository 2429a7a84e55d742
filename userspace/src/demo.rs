//! The sandbox demo: three network namespaces `phone -> gateway ->
//! internet`, regionwall on the gateway's phone-facing veth, bounded
//! traffic to a blocked and an allowed documentation range, a summary, and
//! everything removed afterwards.
//!
//! Addresses (documentation ranges only):
//! - phone: 192.0.2.10/24, 2001:db8:1::10/64 (gateway .1 / ::1)
//! - internet, blocked: 198.51.100.10/24, 2001:db8:bad::10/64
//! - internet, allowed: 203.0.113.10/24, 2001:db8:600d::10/64

use std::{
    io::{self, BufRead as _, BufReader, Read as _, Write as _},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    path::Path,
    process::{Child, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use crate::netns::NetNs;

/// Interface names inside the namespaces.
pub const GATEWAY_LAN: &str = "lan0";
pub const GATEWAY_WAN: &str = "wan0";

/// The hosts the demo talks to.
pub const TARGETS: [(&str, &str); 4] = [
    ("blocked v4", "198.51.100.10"),
    ("allowed v4", "203.0.113.10"),
    ("blocked v6", "2001:db8:bad::10"),
    ("allowed v6", "2001:db8:600d::10"),
];

/// The three namespaces, wired and addressed. Dropping removes them.
pub struct Topology {
    // Field order is drop order: the namespaces go after nothing else needs them.
    pub phone: NetNs,
    pub gateway: NetNs,
    pub internet: NetNs,
}

impl Topology {
    /// Creates `rw-<tag>-...-{phone,gw,net}` and wires them up.
    pub fn create(tag: &str) -> io::Result<Self> {
        let base = crate::netns::unique_name(tag);
        let phone = NetNs::create(&format!("{base}-phone"))?;
        let gateway = NetNs::create(&format!("{base}-gw"))?;
        let internet = NetNs::create(&format!("{base}-net"))?;
        let t = Self {
            phone,
            gateway,
            internet,
        };
        t.wire()?;
        Ok(t)
    }

    fn wire(&self) -> io::Result<()> {
        let (p, g, n) = (&self.phone, &self.gateway, &self.internet);
        // Before any link exists: no duplicate address detection (link-local
        // addresses included — a tentative one can stall the first IPv6
        // exchange for a second or more), and the gateway a router from the
        // start rather than switched to one with its links up.
        for ns in [p, g, n] {
            ns.sysctl("net.ipv6.conf.default.accept_dad=0")?;
            ns.sysctl("net.ipv6.conf.all.accept_dad=0")?;
        }
        g.sysctl("net.ipv4.ip_forward=1")?;
        g.sysctl("net.ipv6.conf.all.forwarding=1")?;
        for (gateway_side, peer) in [(GATEWAY_LAN, p), (GATEWAY_WAN, n)] {
            let peer_args = ["type", "veth", "peer", "name", "eth0", "netns", peer.name()];
            let mut args = vec!["link", "add", gateway_side];
            args.extend_from_slice(&peer_args);
            g.ip(&args)?;
        }
        for (ns, dev, addrs) in [
            (p, "eth0", &["192.0.2.10/24", "2001:db8:1::10/64"][..]),
            (g, GATEWAY_LAN, &["192.0.2.1/24", "2001:db8:1::1/64"][..]),
            (
                g,
                GATEWAY_WAN,
                &[
                    "198.51.100.1/24",
                    "203.0.113.1/24",
                    "2001:db8:bad::1/64",
                    "2001:db8:600d::1/64",
                ][..],
            ),
            (
                n,
                "eth0",
                &[
                    "198.51.100.10/24",
                    "203.0.113.10/24",
                    "2001:db8:bad::10/64",
                    "2001:db8:600d::10/64",
                ][..],
            ),
        ] {
            for a in addrs {
                if a.contains(':') {
                    ns.ip(&["-6", "addr", "add", a, "dev", dev, "nodad"])?;
                } else {
                    ns.ip(&["addr", "add", a, "dev", dev])?;
                }
            }
            ns.ip(&["link", "set", dev, "up"])?;
        }
        p.ip(&["route", "add", "default", "via", "192.0.2.1"])?;
        p.ip(&["-6", "route", "add", "default", "via", "2001:db8:1::1"])?;
        n.ip(&["route", "add", "192.0.2.0/24", "via", "198.51.100.1"])?;
        n.ip(&[
            "-6",
            "route",
            "add",
            "2001:db8:1::/64",
            "via",
            "2001:db8:bad::1",
        ])?;
        Ok(())
    }
}

/// A `regionwall run` child process inside the gateway namespace. Killed
/// (SIGTERM, then SIGKILL) on drop.
pub struct Controller {
    child: Child,
    /// Pin root and control socket this controller uses.
    pub pin_root: std::path::PathBuf,
    pub socket: std::path::PathBuf,
    /// Whether `start` made the pin root up (and so removes it on drop).
    own_pins: bool,
    /// Lines the controller printed on stdout (events).
    pub lines: mpsc::Receiver<String>,
    /// Everything it printed on stderr so far.
    pub log: Arc<std::sync::Mutex<String>>,
}

impl Controller {
    /// Starts `exe run --iface lan0 --policy POLICY EXTRA...` in the gateway
    /// and waits until it reports that it is enforcing. Unless `extra`
    /// names them, the pin root and the control socket are fresh ones of
    /// this controller's (removed on drop), so controllers in several
    /// sandboxes never meet.
    pub fn start(
        exe: &Path,
        topology: &Topology,
        policy: &Path,
        extra: &[&str],
    ) -> io::Result<Self> {
        let exe = exe
            .to_str()
            .ok_or_else(|| io::Error::other("non-UTF-8 executable path"))?;
        let policy = policy
            .to_str()
            .ok_or_else(|| io::Error::other("non-UTF-8 policy path"))?;
        let given = |flag: &str| {
            extra
                .iter()
                .position(|a| *a == flag)
                .and_then(|i| extra.get(i + 1))
                .map(std::path::PathBuf::from)
        };
        let unique = crate::netns::unique_name("ctl");
        let own_pins = given("--pin-root").is_none();
        let pin_root = given("--pin-root")
            .unwrap_or_else(|| std::path::Path::new("/sys/fs/bpf").join(&unique));
        let socket = given("--socket")
            .unwrap_or_else(|| std::env::temp_dir().join(format!("{unique}.sock")));
        let mut cmd = topology.gateway.command(exe);
        cmd.args(["run", "--iface", GATEWAY_LAN, "--policy", policy]);
        if own_pins {
            cmd.arg("--pin-root").arg(&pin_root);
        }
        if given("--socket").is_none() {
            cmd.arg("--socket").arg(&socket);
        }
        let mut child = cmd
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| io::Error::other("no stdout"))?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| io::Error::other("no stderr"))?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let log = Arc::new(std::sync::Mutex::new(String::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        let log2 = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("enforcing") {
                    let _ = ready_tx.send(());
                }
                if let Ok(mut l) = log2.lock() {
                    l.push_str(&line);
                    l.push('\n');
                }
            }
        });
        let mut c = Self {
            child,
            pin_root,
            socket,
            own_pins,
            lines,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if ready_rx.recv_timeout(Duration::from_millis(100)).is_ok() {
                return Ok(c);
            }
            if let Some(status) = c.child.try_wait()? {
                let log = c.log.lock().map(|l| l.clone()).unwrap_or_default();
                return Err(io::Error::other(format!(
                    "regionwall run exited with {status}:\n{log}"
                )));
            }
            if Instant::now() > deadline {
                return Err(io::Error::other(
                    "regionwall run did not report `enforcing` within 30 s",
                ));
            }
        }
    }

    /// The controller's process id.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `timeout` for the controller to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> io::Result<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait()? {
                return Ok(s);
            }
            if Instant::now() > deadline {
                return Err(io::Error::other("regionwall run did not exit in time"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything printed on stderr so far.
    #[must_use]
    pub fn log_text(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Waits up to `timeout` for `needle` to appear on stderr.
    #[must_use]
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log_text().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    /// SIGKILL, as a crash: nothing is cleaned up, the pins stay (pass
    /// `--pin-root` to `start`, or drop removes them).
    pub fn kill9(mut self) -> io::Result<std::process::ExitStatus> {
        self.signal(libc::SIGKILL);
        self.child.wait()
    }

    /// Sends SIGTERM and waits (up to 10 s) for a clean exit.
    pub fn stop(mut self) -> io::Result<std::process::ExitStatus> {
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(s) = self.child.try_wait()? {
                return Ok(s);
            }
            if Instant::now() > deadline {
                self.child.kill()?;
                return Err(io::Error::other(
                    "regionwall run did not exit within 10 s of SIGTERM",
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends a signal to the controller (`nsenter` execs it, so the pid is
    /// the controller's).
    pub fn signal(&self, sig: libc::c_int) {
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: sending a signal to our own child.
            unsafe { libc::kill(pid, sig) };
        }
    }

    /// Events printed so far, waiting up to `wait` for at least `min`.
    #[must_use]
    pub fn drain_lines(&self, min: usize, wait: Duration) -> Vec<String> {
        let deadline = Instant::now() + wait;
        let mut out = Vec::new();
        loop {
            while let Ok(l) = self.lines.try_recv() {
                out.push(l);
            }
            if out.len() >= min || Instant::now() > deadline {
                return out;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.signal(libc::SIGTERM);
            std::thread::sleep(Duration::from_millis(300));
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if self.own_pins {
            let pins = crate::pin::PinDir::new(&self.pin_root, GATEWAY_LAN);
            let _ = pins.detach_link();
            let _ = pins.remove_all();
            let _ = std::fs::remove_dir(&self.pin_root);
        }
    }
}

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

/// Runs the whole demo, printing to `out`. `exe` is the regionwall binary.
pub fn run(exe: &Path, policy: &Path, out: &mut dyn io::Write) -> io::Result<Vec<Delivery>> {
    writeln!(
        out,
        "regionwall demo: building namespaces phone -> gateway -> internet (documentation addresses only)"
    )?;
    let topology = Topology::create("demo")?;
    writeln!(
        out,
        "  phone    {}: 192.0.2.10, 2001:db8:1::10\n  gateway  {}: regionwall on {GATEWAY_LAN} (phone side)\n  internet {}: blocked 198.51.100.10, 2001:db8:bad::10; allowed 203.0.113.10, 2001:db8:600d::10",
        topology.phone.name(),
        topology.gateway.name(),
        topology.internet.name()
    )?;
    writeln!(
        out,
        "starting: regionwall run --iface {GATEWAY_LAN} --policy {}",
        policy.display()
    )?;
    let controller = Controller::start(exe, &topology, policy, &[])?;
    writeln!(
        out,
        "enforcing. sending 10 UDP datagrams and a {} KiB TCP upload to each host:\n",
        UPLOAD_BYTES / 1024
    )?;
    let mut results = Vec::new();
    for (label, addr) in TARGETS {
        let d = send_traffic(&topology, label, addr, 10)?;
        for line in controller.drain_lines(0, Duration::from_millis(100)) {
            writeln!(out, "  event: {line}")?;
        }
        results.push(d);
    }
    for line in controller.drain_lines(0, Duration::from_millis(300)) {
        writeln!(out, "  event: {line}")?;
    }
    let status = controller.stop()?;
    writeln!(out, "\nsummary (controller exited: {status}):")?;
    writeln!(
        out,
        "  {:<11} {:<18} {:>5} {:>9} {:>7}  tcp upload",
        "target", "address", "sent", "delivered", "dropped"
    )?;
    for d in &results {
        writeln!(
            out,
            "  {:<11} {:<18} {:>5} {:>9} {:>7}  {}",
            d.label,
            d.addr,
            d.udp_sent,
            d.udp_delivered,
            d.dropped(),
            if d.tcp_upload { "delivered" } else { "blocked" }
        )?;
    }
    explain_one_drop(policy, out)?;
    writeln!(out, "removing namespaces")?;
    drop(topology);
    Ok(results)
}

/// Answers "why was this blocked?" for the first blocked target, as
/// `regionwall explain` would.
fn explain_one_drop(policy: &Path, out: &mut dyn io::Write) -> io::Result<()> {
    let Some((_, addr)) = TARGETS.first() else {
        return Ok(());
    };
    let Ok(dst) = addr.parse() else {
        return Ok(());
    };
    let parsed = crate::policy::parse_file(policy).map_err(io::Error::other)?;
    let src = std::net::IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 10));
    let device = crate::compile::device_for(&parsed, None, Some(src));
    let index = crate::explain::Index::new(&parsed);
    let e = crate::explain::explain(
        &parsed,
        &index,
        dst,
        device,
        crate::explain::DeviceBy::Address,
        "udp/9".parse().ok(),
    );
    writeln!(
        out,
        "\nwhy was {addr} blocked?  regionwall explain {addr} --src {src} --packet udp/9 --policy {}",
        policy.display()
    )?;
    for line in e.to_string().lines() {
        writeln!(out, "  {line}")?;
    }
    Ok(())
}
