//! The sandbox: namespaces `phone -> gateway -> internet` wired with veth
//! pairs, and a `regionwall run` child process on the gateway.
//!
//! Addresses (documentation ranges only):
//! - phone: 192.0.2.10/24, 2001:db8:1::10/64 (gateway .1 / ::1)
//! - internet, blocked: 198.51.100.10/24, 2001:db8:bad::10/64
//! - internet, allowed: 203.0.113.10/24, 2001:db8:600d::10/64

use std::{
    io::{self, BufRead as _, BufReader},
    path::Path,
    process::{Child, Stdio},
    sync::{Arc, mpsc},
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

    /// Makes the gateway's LAN veth again (`lan0`, its peer `eth0` in the
    /// phone), as tests that delete it re-create it; no addresses, down.
    pub fn add_lan_veth(&self) -> io::Result<()> {
        self.gateway.ip(&[
            "link",
            "add",
            GATEWAY_LAN,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            self.phone.name(),
        ])
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
    /// The history's state directory (`--state-dir`).
    pub state_dir: std::path::PathBuf,
    /// Whether `start` made the state directory up (removed on drop).
    own_state: bool,
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
        // Named after the topology, so whoever made the namespaces (a
        // test, the demo's `--tag`) recognises the pins and socket too.
        let unique = crate::netns::unique_name(&format!("ctl-{}", topology.gateway.name()));
        let own_pins = given("--pin-root").is_none();
        let pin_root = given("--pin-root")
            .unwrap_or_else(|| std::path::Path::new("/sys/fs/bpf").join(&unique));
        let socket = given("--socket")
            .unwrap_or_else(|| std::env::temp_dir().join(format!("{unique}.sock")));
        // The default state directory is per interface name, and every
        // sandbox's is lan0: each controller records its own history.
        let own_state = given("--state-dir").is_none() && !extra.contains(&"--no-history");
        let state_dir = given("--state-dir")
            .unwrap_or_else(|| std::env::temp_dir().join(format!("{unique}.state")));
        let mut cmd = topology.gateway.command(exe);
        cmd.args(["run", "--iface", GATEWAY_LAN, "--policy", policy]);
        if own_pins {
            cmd.arg("--pin-root").arg(&pin_root);
        }
        if given("--socket").is_none() {
            cmd.arg("--socket").arg(&socket);
        }
        if own_state {
            cmd.arg("--state-dir").arg(&state_dir);
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
            state_dir,
            own_state,
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
            crate::pins::remove(&self.pin_root);
        }
        if self.own_state {
            let _ = std::fs::remove_dir_all(&self.state_dir);
        }
    }
}
