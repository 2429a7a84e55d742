//! The real `regionwall run` in a scratch namespace, for the footprint and
//! traffic benchmarks: started until it enforces (its log until then
//! kept), stopped (SIGTERM) when dropped.

use std::{
    path::{Path, PathBuf},
    process::{Child, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use anyhow::{Context as _, bail};
use regionwall_testkit::netns::NetNs;

pub struct Controller {
    child: Child,
    pin_root: PathBuf,
    socket: PathBuf,
    /// Its log up to "enforcing".
    log: Vec<String>,
}

impl Controller {
    /// Starts `binary run` on `iface` inside `ns` with pins and a socket of
    /// its own (never those of a controller on this host) and waits until it
    /// says it enforces `policy`.
    pub fn start(
        ns: &NetNs,
        binary: &Path,
        iface: &str,
        policy: &Path,
        args: &[&str],
    ) -> anyhow::Result<Self> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let tag = format!("{}-{}", ns.name(), NEXT.fetch_add(1, Ordering::Relaxed));
        let pin_root = Path::new("/sys/fs/bpf").join(&tag);
        let socket = std::env::temp_dir().join(format!("{tag}.sock"));
        let mut child = ns
            .command(binary.to_str().context("binary path")?)
            .args(["run", "--iface", iface])
            .args(args)
            .arg("--policy")
            .arg(policy)
            .arg("--pin-root")
            .arg(&pin_root)
            .arg("--socket")
            .arg(&socket)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let stderr = child.stderr.take().context("stderr")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead as _;
            let mut lines = std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok);
            let mut seen = Vec::new();
            let mut enforcing = false;
            for line in lines.by_ref() {
                enforcing = line.contains("regionwall: enforcing");
                seen.push(line);
                if enforcing {
                    break;
                }
            }
            let _ = tx.send((enforcing, seen));
            // Keep draining, so that a full pipe never blocks the controller.
            lines.for_each(drop);
        });
        let mut controller = Self {
            child,
            pin_root,
            socket,
            log: Vec::new(),
        };
        let (enforcing, log) = rx
            .recv_timeout(Duration::from_secs(600))
            .unwrap_or((false, vec!["no answer within 600 s".into()]));
        if !enforcing {
            let why = log
                .iter()
                .rev()
                .find(|l| l.contains("rror") || l.contains("refused"))
                .or(log.last())
                .map_or("it exited without a word", String::as_str);
            bail!(
                "regionwall run did not start enforcing {}: {why}",
                policy.display()
            );
        }
        controller.log = log;
        Ok(controller)
    }

    /// Its log up to "enforcing".
    pub fn log(&self) -> &[String] {
        &self.log
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(i32::try_from(self.child.id()).unwrap_or(0), libc::SIGTERM) };
        let _ = self.child.wait();
        let _ = std::fs::remove_dir(&self.pin_root);
        let _ = std::fs::remove_file(&self.socket);
    }
}
