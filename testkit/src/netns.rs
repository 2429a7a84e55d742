//! Network namespaces with unique names: created with iproute2, entered
//! per thread with setns(2), always removed on drop.

use std::{
    fs::File,
    io,
    os::fd::AsRawFd,
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
};

/// A named network namespace that is deleted when dropped.
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

/// A fresh namespace name: `rw-<tag>-<pid>-<n>`, unique on this machine
/// while this process lives.
#[must_use]
pub fn unique_name(tag: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "rw-{tag}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn check(what: &str, out: &Output) -> io::Result<()> {
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "`{what}` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Runs `ip ARGS...`, failing with its stderr.
pub fn ip(args: &[&str]) -> io::Result<()> {
    let out = Command::new("ip").args(args).output()?;
    check(&format!("ip {}", args.join(" ")), &out)
}

impl NetNs {
    /// Creates the namespace (and brings its loopback up).
    pub fn create(name: &str) -> io::Result<Self> {
        ip(&["netns", "add", name])?;
        let ns = Self {
            name: name.to_string(),
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n NAME ARGS...`.
    pub fn ip(&self, args: &[&str]) -> io::Result<()> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// A command that runs `program` inside the namespace. Only the network
    /// namespace changes (`nsenter --net`): unlike `ip netns exec`, which
    /// also gives the program a mount namespace of its own with /sys
    /// remounted, the program sees the host's /sys/fs/bpf, so what it pins
    /// outlives it.
    #[must_use]
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}", self.name))
            .arg("--")
            .arg(program);
        c
    }

    /// Runs `sysctl -qw SETTING` inside the namespace.
    pub fn sysctl(&self, setting: &str) -> io::Result<()> {
        let out = self.command("sysctl").args(["-qw", setting]).output()?;
        check(&format!("sysctl {setting}"), &out)
    }

    /// Moves the calling thread into the namespace until the guard drops.
    pub fn enter(&self) -> io::Result<NsGuard> {
        let previous = File::open("/proc/thread-self/ns/net")?;
        let target = File::open(format!("/run/netns/{}", self.name))?;
        setns(&target)?;
        Ok(NsGuard { previous })
    }

    /// Runs `f` on a new thread inside the namespace.
    pub fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> io::Result<std::thread::JoinHandle<io::Result<T>>> {
        let target = File::open(format!("/run/netns/{}", self.name))?;
        Ok(std::thread::spawn(move || {
            setns(&target)?;
            Ok(f())
        }))
    }
}

fn setns(target: &File) -> io::Result<()> {
    // SAFETY: a valid namespace fd; CLONE_NEWNET only affects this thread.
    if unsafe { libc::setns(target.as_raw_fd(), libc::CLONE_NEWNET) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            log::warn!("removing network namespace {}: {e}", self.name);
        }
    }
}

/// Restores the thread's previous network namespace on drop.
pub struct NsGuard {
    previous: File,
}

impl Drop for NsGuard {
    fn drop(&mut self) {
        if let Err(e) = setns(&self.previous) {
            log::error!("returning to the previous network namespace: {e}");
        }
    }
}
