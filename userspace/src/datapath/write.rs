//! Writing maps: arrays by batch update, memory-mapped arrays by one
//! copy, LPM tries by batch with single updates where a batch stops early,
//! and the count check after each.

use std::os::fd::AsFd as _;

use aya::maps::{Array, LpmTrie, Map, MapData, lpm_trie::Key};

use super::{Datapath, DatapathError};
use crate::{readings::map_err, sys};

impl Datapath {
    /// Writes `values` to indices `0..values.len()` of an array map in
    /// batches, with single updates from wherever a batch stops early.
    pub(super) fn fill_array<V: aya::Pod>(
        &mut self,
        name: &'static str,
        values: &[V],
    ) -> Result<(), DatapathError> {
        let keys: Vec<u32> = (0..u32::try_from(values.len()).unwrap_or(u32::MAX)).collect();
        let map = self.map_mut(name)?;
        let Map::Array(data) = &*map else {
            return Err(DatapathError::WrongMapType {
                name,
                expected: "Array",
            });
        };
        let batched = update_batches(name, data.fd().as_fd(), &keys, values);
        if let Err(done) = batched {
            let mut array: Array<&mut MapData, V> =
                Array::try_from(&mut *map).map_err(map_err(name))?;
            for i in done..values.len() {
                array.set(keys[i], &values[i], 0).map_err(map_err(name))?;
            }
        }
        Ok(())
    }

    /// Writes `values` to the start of an mmapable array with one copy;
    /// falls back to batch updates where mapping is refused.
    pub(super) fn write_array<V: aya::Pod>(
        &mut self,
        name: &'static str,
        values: &[V],
    ) -> Result<(), DatapathError> {
        let map = self.map_mut(name)?;
        let Map::Array(data) = &*map else {
            return Err(DatapathError::WrongMapType {
                name,
                expected: "Array",
            });
        };
        // SAFETY: V is aya::Pod: plain data without padding.
        let bytes = unsafe {
            std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), std::mem::size_of_val(values))
        };
        match sys::write_mapped(data.fd().as_fd(), bytes) {
            Ok(()) => Ok(()),
            Err(e) => {
                log::debug!("{name}: mmap write refused ({e}); using batch updates");
                self.fill_array(name, values)
            }
        }
    }

    /// [`Self::fill_trie`] from (prefix, value) pairs.
    pub(super) fn fill_prefixes<P, K: aya::Pod>(
        &mut self,
        name: &'static str,
        entries: &[(P, u32)],
        key: impl Fn(&P) -> Key<K>,
    ) -> Result<usize, DatapathError> {
        let keys: Vec<Key<K>> = entries.iter().map(|(p, _)| key(p)).collect();
        let values: Vec<u32> = entries.iter().map(|(_, v)| *v).collect();
        self.fill_trie(name, &keys, &values)
    }

    /// Inserts into an LPM trie in batches; where a batch stops early
    /// (ENOMEM has been seen on 6.18 kernels), continues one by one, then
    /// verifies the trie holds exactly `keys.len()` entries. Returns the
    /// number of entries inserted one by one.
    pub(super) fn fill_trie<K: aya::Pod>(
        &mut self,
        name: &'static str,
        keys: &[Key<K>],
        values: &[u32],
    ) -> Result<usize, DatapathError> {
        let map = self.map_mut(name)?;
        let Map::LpmTrie(data) = &*map else {
            return Err(DatapathError::WrongMapType {
                name,
                expected: "LpmTrie",
            });
        };
        let batched = update_batches(name, data.fd().as_fd(), keys, values);
        let mut singles = 0;
        if let Err(done) = batched {
            let mut trie: LpmTrie<&mut MapData, K, u32> =
                LpmTrie::try_from(&mut *map).map_err(map_err(name))?;
            for i in done..keys.len() {
                trie.insert(&keys[i], &values[i], 0)
                    .map_err(map_err(name))?;
                singles += 1;
            }
        }
        self.verify_count::<K>(name, keys.len())?;
        Ok(singles)
    }

    pub(super) fn clear_trie<K: aya::Pod>(
        &mut self,
        name: &'static str,
    ) -> Result<(), DatapathError> {
        let mut trie: LpmTrie<&mut MapData, K, u32> =
            LpmTrie::try_from(self.map_mut(name)?).map_err(map_err(name))?;
        // Deleting while iterating restarts the walk; collect first.
        let keys: Vec<Key<K>> = trie
            .keys()
            .collect::<Result<_, _>>()
            .map_err(map_err(name))?;
        for k in keys {
            trie.remove(&k).map_err(map_err(name))?;
        }
        Ok(())
    }
}

/// Writes `keys[i] -> values[i]` with BPF_MAP_UPDATE_BATCH in chunks (which
/// bound the time the kernel spends in one syscall). When a batch stops
/// early, returns how many elements were written, so the caller can go on
/// one by one from there.
fn update_batches<K: aya::Pod, V: aya::Pod>(
    name: &str,
    fd: std::os::fd::BorrowedFd<'_>,
    keys: &[K],
    values: &[V],
) -> Result<(), usize> {
    const CHUNK: usize = 65_536;
    let (ksize, vsize) = (std::mem::size_of::<K>(), std::mem::size_of::<V>());
    // SAFETY: K and V are aya::Pod: plain data without padding.
    let key_bytes = unsafe {
        std::slice::from_raw_parts(keys.as_ptr().cast::<u8>(), std::mem::size_of_val(keys))
    };
    // SAFETY: as above.
    let val_bytes = unsafe {
        std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), std::mem::size_of_val(values))
    };
    let mut done = 0;
    while done < keys.len() {
        let n = CHUNK.min(keys.len() - done);
        match sys::update_batch(
            fd,
            &key_bytes[done * ksize..(done + n) * ksize],
            &val_bytes[done * vsize..(done + n) * vsize],
            n,
        ) {
            Ok(()) => done += n,
            Err((processed, err)) => {
                log::debug!(
                    "{name}: batch update stopped after {processed} of {n}: {err}; continuing one by one"
                );
                return Err(done + processed);
            }
        }
    }
    Ok(())
}
