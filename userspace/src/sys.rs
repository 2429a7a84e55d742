//! The one bpf(2) command aya does not wrap: BPF_MAP_UPDATE_BATCH.

use std::{
    io,
    os::fd::{AsRawFd, BorrowedFd},
};

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
    let map_fd = u32::try_from(fd.as_raw_fd())
        .map_err(|_| (0, io::Error::from(io::ErrorKind::InvalidInput)))?;
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
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_UPDATE_BATCH,
            &raw mut attr,
            libc::c_uint::try_from(std::mem::size_of::<BatchAttr>()).unwrap_or(libc::c_uint::MAX),
        )
    };
    if ret == 0 {
        Ok(())
    } else {
        let err = io::Error::last_os_error();
        Err((attr.count as usize, err))
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
