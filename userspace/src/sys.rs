//! What aya does not wrap or does not expose, each for a reason:
//! BPF_MAP_UPDATE_BATCH (aya updates one element per syscall: 30x slower
//! for the world table), BPF_MAP_LOOKUP_BATCH (aya 0.16 reads one element
//! per syscall: 256k syscalls for the country counters), writes through mmap of BPF_F_MMAPABLE arrays (no
//! aya API), BPF_OBJ_GET_INFO_BY_FD on links for the XDP ifindex (aya's
//! `LinkInfo` has id and program only), BPF_LINK_DETACH (aya detaches only
//! links it owns; `detach` must detach a pinned link someone else holds),
//! BPF_OBJ_GET for those two (aya's `PinnedLink`/`FdLink` keep their fd
//! private), and the bpffs check and mount (through rustix).

use std::{
    io,
    os::fd::{AsRawFd, BorrowedFd},
};

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;

/// `union bpf_attr`'s `batch` member (include/uapi/linux/bpf.h).
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Inserts `count` packed keys and values in one syscall. On failure returns
/// how many elements the kernel processed before the error, so the caller
/// can resume after them.
pub fn update_batch(
    fd: BorrowedFd<'_>,
    keys: &[u8],
    values: &[u8],
    count: usize,
) -> Result<(), (usize, io::Error)> {
    if count == 0 {
        return Ok(());
    }
    let count32 =
        u32::try_from(count).map_err(|_| (0, io::Error::from(io::ErrorKind::InvalidInput)))?;
    let map_fd = fd_u32(fd).map_err(|e| (0, e))?;
    let mut attr = BatchAttr {
        keys: keys.as_ptr() as u64,
        values: values.as_ptr() as u64,
        count: count32,
        map_fd,
        ..BatchAttr::default()
    };
    // SAFETY: attr is a valid bpf_attr prefix for BPF_MAP_UPDATE_BATCH; the
    // key and value buffers outlive the call and hold `count` elements each.
    let ret = unsafe {
        bpf(
            BPF_MAP_UPDATE_BATCH,
            (&raw mut attr).cast(),
            std::mem::size_of::<BatchAttr>(),
        )
    };
    // On failure the kernel wrote back how many elements it processed.
    ret.map(drop).map_err(|err| (attr.count as usize, err))
}

/// Reads up to `count` elements of an array map whose keys are `u32`
/// (`BPF_MAP_LOOKUP_BATCH`, arrays since Linux 5.6, commit cb4d03ab499d
/// "bpf: Add generic support for lookup batch op"), starting after the key
/// `after` (from the first key when `None`). `keys` must hold `count`
/// keys and `values` `count` values of the map's value size as the kernel
/// copies it (for per-CPU maps: possible CPUs × the value size rounded up
/// to 8 bytes). Returns how many elements were read and whether the map
/// has more after them.
pub fn lookup_batch_u32(
    fd: BorrowedFd<'_>,
    after: Option<u32>,
    keys: &mut [u32],
    values: &mut [u8],
    value_size: usize,
    count: u32,
) -> io::Result<(u32, bool)> {
    let fits = usize::try_from(count).is_ok_and(|n| {
        n <= keys.len() && n.checked_mul(value_size).is_some_and(|b| b <= values.len())
    });
    if !fits || count == 0 {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    // The kernel copies the key it stopped at into `out_batch` (and reads
    // the key to resume after from `in_batch`): a key of the map's size.
    let mut in_key = after.unwrap_or(0);
    let mut out_key = 0u32;
    let mut attr = BatchAttr {
        in_batch: if after.is_some() {
            (&raw mut in_key) as u64
        } else {
            0
        },
        out_batch: (&raw mut out_key) as u64,
        keys: keys.as_mut_ptr() as u64,
        values: values.as_mut_ptr() as u64,
        count,
        map_fd: fd_u32(fd)?,
        ..BatchAttr::default()
    };
    // SAFETY: attr is a valid bpf_attr prefix for BPF_MAP_LOOKUP_BATCH;
    // `keys` holds `count` u32 keys and `values` `count` values of
    // `value_size` bytes (checked above; the caller passes the size the
    // kernel writes); the batch keys are u32 locals that outlive the call.
    let ret = unsafe {
        bpf(
            BPF_MAP_LOOKUP_BATCH,
            (&raw mut attr).cast(),
            std::mem::size_of::<BatchAttr>(),
        )
    };
    // The kernel writes back how many elements it copied; ENOENT means it
    // reached the end of the map (after copying `attr.count` of them).
    match ret {
        Ok(_) => Ok((attr.count, true)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok((attr.count, false)),
        Err(e) => Err(e),
    }
}

/// Copies `bytes` to the start of a `BPF_F_MMAPABLE` array map through a
/// shared mapping: one memcpy instead of one syscall per batch. The caller
/// checked that the map is large enough.
pub fn write_mapped(fd: BorrowedFd<'_>, bytes: &[u8]) -> io::Result<()> {
    if bytes.is_empty() {
        return Ok(());
    }
    // SAFETY: sysconf has no preconditions.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    let len = bytes.len().div_ceil(page) * page;
    // SAFETY: a fresh shared mapping of the map's first `len` bytes; the
    // kernel refuses lengths beyond the map.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the mapping is `len >= bytes.len()` bytes long and writable,
    // and does not overlap `bytes`.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), ptr.cast::<u8>(), bytes.len());
        libc::munmap(ptr, len);
    }
    Ok(())
}

/// A path as the C string syscalls take.
fn c_path(path: &std::path::Path) -> io::Result<std::ffi::CString> {
    use std::os::unix::ffi::OsStrExt as _;
    std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// An fd as the u32 `bpf_attr` fields take.
fn fd_u32(fd: BorrowedFd<'_>) -> io::Result<u32> {
    u32::try_from(fd.as_raw_fd()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_LINK_DETACH: libc::c_long = 34;
/// `BPF_FS_MAGIC` (include/uapi/linux/magic.h).
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// bpf(2).
///
/// # Safety
/// `attr` points to a `bpf_attr` prefix of `size` bytes valid for `cmd`,
/// and every pointer inside it is valid for the call.
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

/// Opens a pinned object (`BPF_OBJ_GET`).
pub fn obj_get(path: &std::path::Path) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd as _;
    #[repr(C)]
    #[derive(Default)]
    struct ObjAttr {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
        path_fd: i32,
        _pad: u32,
    }
    let c = c_path(path)?;
    let mut attr = ObjAttr {
        pathname: c.as_ptr() as u64,
        ..ObjAttr::default()
    };
    // SAFETY: a BPF_OBJ_GET attr; the path string outlives the call.
    let fd = unsafe {
        bpf(
            BPF_OBJ_GET,
            (&raw mut attr).cast(),
            std::mem::size_of::<ObjAttr>(),
        )
    }?;
    let fd = i32::try_from(fd).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
    // SAFETY: the kernel returned a new fd that nothing else owns.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// What the kernel says of a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkFacts {
    pub id: u32,
    pub prog_id: u32,
    /// For XDP and TCX links: the interface, 0 once the interface is gone
    /// or the link was detached.
    pub ifindex: u32,
}

/// `BPF_OBJ_GET_INFO_BY_FD` on a link.
pub fn link_facts(fd: BorrowedFd<'_>) -> io::Result<LinkFacts> {
    /// `struct bpf_link_info` up to the XDP member of its union.
    #[repr(C)]
    #[derive(Default)]
    struct LinkInfo {
        type_: u32,
        id: u32,
        prog_id: u32,
        _pad: u32,
        union_first: u32,
        rest: [u32; 15],
    }
    #[repr(C)]
    #[derive(Default)]
    struct InfoAttr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    const BPF_LINK_TYPE_XDP: u32 = 6;
    /// Its union member starts with the ifindex too (`tcx.ifindex`).
    const BPF_LINK_TYPE_TCX: u32 = 11;
    let mut info = LinkInfo::default();
    let mut attr = InfoAttr {
        bpf_fd: fd_u32(fd)?,
        info_len: u32::try_from(std::mem::size_of::<LinkInfo>()).unwrap_or(0),
        info: (&raw mut info) as u64,
    };
    // SAFETY: an info attr pointing at `info`, `info_len` bytes long.
    unsafe {
        bpf(
            BPF_OBJ_GET_INFO_BY_FD,
            (&raw mut attr).cast(),
            std::mem::size_of::<InfoAttr>(),
        )
    }?;
    Ok(LinkFacts {
        id: info.id,
        prog_id: info.prog_id,
        ifindex: if matches!(info.type_, BPF_LINK_TYPE_XDP | BPF_LINK_TYPE_TCX) {
            info.union_first
        } else {
            0
        },
    })
}

/// `BPF_LINK_DETACH`: detaches a link whoever else holds it.
pub fn link_detach(fd: BorrowedFd<'_>) -> io::Result<()> {
    #[repr(C)]
    #[derive(Default)]
    struct DetachAttr {
        link_fd: u32,
    }
    let mut attr = DetachAttr {
        link_fd: fd_u32(fd)?,
    };
    // SAFETY: a BPF_LINK_DETACH attr (a link fd, no pointers).
    unsafe {
        bpf(
            BPF_LINK_DETACH,
            (&raw mut attr).cast(),
            std::mem::size_of::<DetachAttr>(),
        )
    }
    .map(drop)
}

/// Whether `path` is on a bpf filesystem.
pub fn is_bpffs(path: &std::path::Path) -> io::Result<bool> {
    let st = rustix::fs::statfs(path)?;
    #[allow(clippy::useless_conversion, reason = "f_type is i64 or u32 by target")]
    Ok(i64::from(st.f_type) == BPF_FS_MAGIC)
}

/// Mounts a bpf filesystem on `path` (what systemd and bpftool do when
/// /sys/fs/bpf is not mounted).
pub fn mount_bpffs(path: &std::path::Path) -> io::Result<()> {
    rustix::mount::mount("bpf", path, "bpf", rustix::mount::MountFlags::empty(), None)?;
    Ok(())
}
