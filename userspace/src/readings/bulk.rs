//! Per-CPU array entries read in bulk (`BPF_MAP_LOOKUP_BATCH`), or one key
//! per syscall where the kernel has no batch lookups on arrays (< 5.6).

use std::os::fd::AsFd as _;

use aya::{
    Pod,
    maps::{IterableMap as _, Map, MapData, PerCpuArray},
};

use super::{ReadError, map_err};

/// Bytes of one batch's values buffer at most (1 MiB): 32k counters of
/// 16 bytes on 2 CPUs per syscall, fewer on larger machines.
const BATCH_BYTES: usize = 1 << 20;

/// Calls `each(index, values)` for the entries `0..n` of the per-CPU array
/// `map`, in index order, with the values of every possible CPU: a few
/// `BPF_MAP_LOOKUP_BATCH` syscalls instead of one per key. Falls back to
/// [`per_key`] when the kernel refuses batch lookups on arrays.
pub fn per_cpu<V: Pod>(
    map: &Map,
    name: &'static str,
    n: u32,
    each: &mut dyn FnMut(u32, &[V]),
) -> Result<(), ReadError> {
    let arr: PerCpuArray<&MapData, V> = PerCpuArray::try_from(map).map_err(map_err(name))?;
    let n = n.min(arr.len());
    if n == 0 {
        return Ok(());
    }
    let cpus = aya::util::nr_cpus().map_err(|(_, e)| syscall_error(name, "nr_cpus", e))?;
    let cpus = usize::try_from(cpus.get()).unwrap_or(1);
    // The kernel copies each CPU's value at an 8-byte stride
    // (bpf_percpu_array_copy: round_up(value_size, 8)).
    let stride = size_of::<V>().next_multiple_of(8);
    let value_size = stride * cpus;
    let chunk = u32::try_from((BATCH_BYTES / value_size).max(1))
        .unwrap_or(u32::MAX)
        .min(n);
    let chunk_len = usize::try_from(chunk).unwrap_or(1);
    let mut keys = vec![0u32; chunk_len];
    let mut values = vec![0u8; chunk_len * value_size];
    let mut scratch: Vec<V> = Vec::with_capacity(cpus);
    let fd = arr.map().fd().as_fd();
    let mut after = None;
    loop {
        let count = chunk.min(n - after.map_or(0, |k: u32| k + 1));
        let (got, more) = match crate::sys::lookup_batch_u32(
            fd,
            after,
            &mut keys,
            &mut values,
            value_size,
            count,
        ) {
            Ok(r) => r,
            // EINVAL/ENOTSUPP: a kernel without batch ops on arrays,
            // found on the first call.
            Err(e) if after.is_none() && unsupported(&e) => {
                return per_key(map, name, n, each);
            }
            Err(e) => return Err(syscall_error(name, "bpf_map_lookup_batch", e)),
        };
        let got = usize::try_from(got).unwrap_or(0).min(chunk_len);
        for (i, &key) in keys.iter().enumerate().take(got) {
            scratch.clear();
            let element = &values[i * value_size..(i + 1) * value_size];
            scratch.extend(element.chunks_exact(stride).map(|bytes| {
                // SAFETY: V is Pod (any bytes are a valid V) and each chunk
                // holds at least size_of::<V>() bytes; read_unaligned
                // because the byte buffer has no alignment for V.
                unsafe { bytes.as_ptr().cast::<V>().read_unaligned() }
            }));
            each(key, &scratch);
        }
        let last = got
            .checked_sub(1)
            .and_then(|i| keys.get(i).copied())
            .filter(|_| got > 0);
        match last {
            Some(k) if more && k + 1 < n => after = Some(k),
            _ => return Ok(()),
        }
    }
}

fn syscall_error(name: &'static str, call: &'static str, io_error: std::io::Error) -> ReadError {
    ReadError::Map {
        name,
        source: aya::maps::MapError::SyscallError(aya::sys::SyscallError { call, io_error }),
    }
}

/// Whether a batch lookup failed for want of kernel support.
fn unsupported(e: &std::io::Error) -> bool {
    /// ENOTSUPP (include/linux/errno.h): what the kernel returns for a
    /// map type without the op.
    const ENOTSUPP: i32 = 524;
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL | libc::EOPNOTSUPP | ENOTSUPP)
    )
}

/// [`per_cpu`] one key per syscall (`BPF_MAP_LOOKUP_ELEM` through aya):
/// the fallback, and the baseline the benchmark and the tests compare with.
pub fn per_key<V: Pod>(
    map: &Map,
    name: &'static str,
    n: u32,
    each: &mut dyn FnMut(u32, &[V]),
) -> Result<(), ReadError> {
    let arr: PerCpuArray<&MapData, V> = PerCpuArray::try_from(map).map_err(map_err(name))?;
    for i in 0..n.min(arr.len()) {
        let values = arr.get(&i, 0).map_err(map_err(name))?;
        each(i, &values);
    }
    Ok(())
}
