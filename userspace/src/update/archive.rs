//! tar.gz archives unpacked without trusting their paths: a country
//! database (only `<cc>/ipv4-aggregated.txt` and `ipv6-aggregated.txt`
//! files, wherever they sit) or one named file, each size-bounded.

use std::{io::Read as _, path::Path};

/// Country files of a tar.gz written under `dest` as `<cc>/<file>`;
/// returns how many. Entries are matched by their last two components, so
/// no archive path ever names where a file lands.
pub fn country_dir(bytes: &[u8], dest: &Path, max_size: u64) -> Result<usize, String> {
    let mut n = 0;
    each(bytes, max_size, |path, data| {
        let mut parts = path.rsplit('/');
        let (Some(file), Some(cc)) = (parts.next(), parts.next()) else {
            return Ok(());
        };
        if !matches!(file, "ipv4-aggregated.txt" | "ipv6-aggregated.txt") {
            return Ok(());
        }
        let Some(code) = crate::sources::country_code(cc) else {
            return Ok(());
        };
        super::store::write_file(&dest.join(code.to_ascii_lowercase()).join(file), data)
            .map_err(|e| e.to_string())?;
        n += 1;
        Ok(())
    })?;
    if n == 0 {
        return Err(
            "no <cc>/ipv4-aggregated.txt or ipv6-aggregated.txt in the archive (the country-ip-blocks layout)"
                .into(),
        );
    }
    Ok(n)
}

/// The bytes of the file called `name` (its last component) in a tar.gz.
pub fn one_file(bytes: &[u8], name: &str, max_size: u64) -> Result<Vec<u8>, String> {
    let mut found = None;
    each(bytes, max_size, |path, data| {
        if found.is_none() && path.rsplit('/').next() == Some(name) {
            found = Some(data.to_vec());
        }
        Ok(())
    })?;
    found.ok_or_else(|| format!("no {name} in the archive"))
}

/// Calls `f` with every regular file's path and bytes; the unpacked total
/// may not exceed `max_size`.
fn each(
    bytes: &[u8],
    max_size: u64,
    mut f: impl FnMut(&str, &[u8]) -> Result<(), String>,
) -> Result<(), String> {
    let gz = flate2::read::GzDecoder::new(bytes);
    let mut archive = tar::Archive::new(gz);
    let mut total: u64 = 0;
    let entries = archive
        .entries()
        .map_err(|e| format!("not a tar.gz archive: {e}"))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| format!("corrupt archive: {e}"))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry
            .path()
            .map_err(|e| format!("corrupt archive: {e}"))?
            .to_string_lossy()
            .into_owned();
        let size = entry.size();
        total = total.saturating_add(size);
        if total > max_size {
            return Err(format!("unpacks to over {max_size} bytes"));
        }
        let mut data = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        entry
            .read_to_end(&mut data)
            .map_err(|e| format!("corrupt archive: {e}"))?;
        f(&path, &data)?;
    }
    Ok(())
}
