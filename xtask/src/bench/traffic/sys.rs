//! Kernel interfaces the traffic benchmark needs and aya does not wrap:
//! BPF_PROG_TEST_RUN in live-frames mode, an XDP link by program fd, GRO
//! through the ethtool ioctl, per-CPU times and the calling thread's CPU.

use std::{
    io,
    os::fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
};

const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_LINK_CREATE: libc::c_long = 28;
/// `enum bpf_attach_type`: BPF_XDP.
const BPF_XDP: u32 = 37;
/// `XDP_FLAGS_DRV_MODE` of linux/if_link.h: native XDP only.
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
/// Frames are built as xdp_frames and really sent (XDP_TX, XDP_REDIRECT).
const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;

/// The `test` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    pad: u32,
}

fn bpf<T>(cmd: libc::c_long, attr: &T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a zero-padded bpf_attr member of its full size.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_ref(attr),
            std::mem::size_of::<T>(),
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Runs XDP program `prog` `repeat` times on `frame` in live-frames mode,
/// `batch` frames per batch (the kernel's limit is 256): every frame the
/// program redirects is really sent. Uses the calling thread's network
/// namespace (the frames arrive on its loopback).
pub fn live_frames(prog: BorrowedFd<'_>, frame: &[u8], repeat: u32, batch: u32) -> io::Result<()> {
    let attr = TestRunAttr {
        prog_fd: u32::try_from(prog.as_raw_fd()).unwrap_or(u32::MAX),
        data_size_in: u32::try_from(frame.len()).unwrap_or(u32::MAX),
        data_in: frame.as_ptr() as u64,
        repeat,
        flags: BPF_F_TEST_XDP_LIVE_FRAMES,
        batch_size: batch,
        ..TestRunAttr::default()
    };
    bpf(BPF_PROG_TEST_RUN, &attr).map(|_| ())
}

/// Attaches XDP program `prog` in native mode to `ifindex` (of the calling
/// thread's namespace) through a BPF link; closing the fd detaches it.
pub fn attach_xdp(prog: BorrowedFd<'_>, ifindex: u32) -> io::Result<OwnedFd> {
    // prog_fd, target_ifindex, attach_type, flags, then zeroed unions.
    let mut attr = [0u32; 16];
    attr[0] = u32::try_from(prog.as_raw_fd()).unwrap_or(u32::MAX);
    attr[1] = ifindex;
    attr[2] = BPF_XDP;
    attr[3] = XDP_FLAGS_DRV_MODE;
    let fd = bpf(BPF_LINK_CREATE, &attr)?;
    // SAFETY: the kernel returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(i32::try_from(fd).unwrap_or(-1)) })
}

const SIOCETHTOOL: libc::c_ulong = 0x8946;
const ETHTOOL_GGRO: u32 = 0x2b;
const ETHTOOL_SGRO: u32 = 0x2c;

#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

#[repr(C)]
struct IfReq {
    name: [u8; 16],
    data: *mut EthtoolValue,
    pad: [u8; 16],
}

fn ethtool(iface: &str, cmd: u32, data: u32) -> io::Result<u32> {
    let mut value = EthtoolValue { cmd, data };
    let mut req = IfReq {
        name: [0; 16],
        data: &raw mut value,
        pad: [0; 16],
    };
    let n = iface.len().min(15);
    req.name[..n].copy_from_slice(&iface.as_bytes()[..n]);
    // SAFETY: a plain socket for the ioctl, closed by OwnedFd.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if sock < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd we own.
    let sock = unsafe { OwnedFd::from_raw_fd(sock) };
    // SAFETY: `req` points at `value`; both outlive the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), SIOCETHTOOL, &raw mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value.data)
}

/// Turns GRO off on `iface` (of the calling thread's namespace); returns
/// whether it was on.
pub fn gro_off(iface: &str) -> io::Result<bool> {
    let was = ethtool(iface, ETHTOOL_GGRO, 0)? != 0;
    ethtool(iface, ETHTOOL_SGRO, 0)?;
    if ethtool(iface, ETHTOOL_GGRO, 0)? != 0 {
        return Err(io::Error::other(format!("GRO stays on on {iface}")));
    }
    Ok(was)
}

/// Time CPU `cpu` spent in the kernel outside interrupts (`system`) and in
/// softirqs, in ns (from /proc/stat's USER_HZ ticks).
#[derive(Clone, Copy, Default, Debug)]
pub struct CpuTimes {
    pub system_ns: f64,
    pub softirq_ns: f64,
}

pub fn cpu_times(cpu: usize) -> io::Result<CpuTimes> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let label = format!("cpu{cpu}");
    let fields: Vec<u64> = stat
        .lines()
        .find_map(|l| {
            let mut it = l.split_whitespace();
            (it.next() == Some(label.as_str())).then(|| it.filter_map(|v| v.parse().ok()).collect())
        })
        .ok_or_else(|| io::Error::other(format!("{label} not in /proc/stat")))?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let ns = |i: usize| fields.get(i).copied().unwrap_or(0) as f64 * 1e9 / hz;
    // user nice system idle iowait irq softirq ...
    Ok(CpuTimes {
        system_ns: ns(2),
        softirq_ns: ns(6),
    })
}

/// Pins the calling thread to `cpu`.
pub fn pin_to(cpu: usize) -> io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` is below CPU_SETSIZE on any machine this runs on.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: pid 0 is the calling thread.
    if unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &raw const set) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
