//! Pin roots of a test's own on the host's bpffs, detached and removed on drop.

use std::{
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::{Path, PathBuf},
};

/// A fresh pin root `/sys/fs/bpf/rw-test-pins-<pid>-<n>`; on drop, every
/// link pinned under it is detached and every pin removed.
pub struct PinRoot(pub PathBuf);

impl Default for PinRoot {
    fn default() -> Self {
        Self::new()
    }
}

impl PinRoot {
    #[must_use]
    pub fn new() -> Self {
        Self(Path::new("/sys/fs/bpf").join(crate::netns::unique_name("test-pins")))
    }

    #[must_use]
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// The root as a command-line argument.
    #[must_use]
    pub fn arg(&self) -> &str {
        self.0.to_str().expect("UTF-8 path")
    }
}

impl Drop for PinRoot {
    fn drop(&mut self) {
        remove(&self.0);
    }
}

/// Detaches the links pinned in each interface directory of `root`
/// (`<root>/<iface>/link` and `dns_link`, whoever holds them), removes every pin and the
/// directories. Best effort: what cannot be removed stays.
pub fn remove(root: &Path) {
    let Ok(ifaces) = std::fs::read_dir(root) else {
        return;
    };
    for dir in ifaces.filter_map(Result::ok).map(|e| e.path()) {
        let _ = detach_link(&dir.join("link"));
        let _ = detach_link(&dir.join("dns_link"));
        if let Ok(pins) = std::fs::read_dir(&dir) {
            for pin in pins.filter_map(Result::ok) {
                let _ = std::fs::remove_file(pin.path());
            }
        }
        let _ = std::fs::remove_dir(&dir);
    }
    let _ = std::fs::remove_dir(root);
}

const BPF_OBJ_GET: libc::c_long = 7;
const BPF_LINK_DETACH: libc::c_long = 34;

/// `BPF_OBJ_GET` of the pinned link at `path`, then `BPF_LINK_DETACH`.
fn detach_link(path: &Path) -> io::Result<()> {
    #[repr(C)]
    #[derive(Default)]
    struct ObjAttr {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
        path_fd: i32,
        _pad: u32,
    }
    #[repr(C)]
    struct DetachAttr {
        link_fd: u32,
    }
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut get = ObjAttr {
        pathname: c.as_ptr() as u64,
        ..ObjAttr::default()
    };
    // SAFETY: a BPF_OBJ_GET attr whose path string outlives the call.
    let fd = unsafe { bpf(BPF_OBJ_GET, (&raw mut get).cast(), size_of::<ObjAttr>()) }?;
    let fd = i32::try_from(fd).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
    // SAFETY: the kernel returned a new fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut detach = DetachAttr {
        link_fd: u32::try_from(fd.as_raw_fd()).map_err(|_| io::ErrorKind::InvalidData)?,
    };
    // SAFETY: a BPF_LINK_DETACH attr (a link fd, no pointers).
    unsafe {
        bpf(
            BPF_LINK_DETACH,
            (&raw mut detach).cast(),
            size_of::<DetachAttr>(),
        )
    }
    .map(drop)
}

/// # Safety
/// `attr` points to a `bpf_attr` prefix of `size` bytes valid for `cmd`.
unsafe fn bpf(cmd: libc::c_long, attr: *mut u8, size: usize) -> io::Result<libc::c_long> {
    // SAFETY: as the caller promised.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr,
            libc::c_uint::try_from(size).unwrap_or(libc::c_uint::MAX),
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}
