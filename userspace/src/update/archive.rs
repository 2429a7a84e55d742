//! tar.gz archives unpacked without trusting their paths: a country
//! database (only `<cc>/ipv4-aggregated.txt` and `ipv6-aggregated.txt`
//! files, wherever they sit) or one named file, each size-bounded.

use std::{io::Read as _, path::Path};

/// Country files of a tar.gz written under `dest` as `<cc>/<file>`;
/// returns how many. Entries are matched by their last two components, so
/// no archive path ever names where a file lands.
pub fn country_dir(bytes: &[u8], dest: &Path, max_size: u64) -> Result<usize, String> {
    let mut seen = std::collections::BTreeSet::new();
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
        let at = Path::new(&code.to_ascii_lowercase()).join(file);
        // A second entry for the same file would silently replace the
        // first: which one the publisher meant is unknown.
        if !seen.insert(at.clone()) {
            return Err(format!("{} appears twice in the archive", at.display()));
        }
        super::store::write_file(&dest.join(&at), data).map_err(|e| e.to_string())?;
        Ok(())
    })?;
    let n = seen.len();
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
        // Every entry counts, skipped ones too: skipping still inflates.
        let size = entry.size();
        total = total.saturating_add(size);
        if total > max_size {
            return Err(format!("unpacks to over {max_size} bytes"));
        }
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry
            .path()
            .map_err(|e| format!("corrupt archive: {e}"))?
            .to_string_lossy()
            .into_owned();
        let mut data = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        entry
            .read_to_end(&mut data)
            .map_err(|e| format!("corrupt archive: {e}"))?;
        f(&path, &data)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_gz(files: &[(&str, &[u8])]) -> Vec<u8> {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut tar = tar::Builder::new(gz);
        for (path, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            tar.append_data(&mut h, path, *data).expect("append");
        }
        tar.into_inner().expect("tar").finish().expect("gzip")
    }

    #[test]
    fn only_country_files_land_and_only_where_named() {
        let dest = std::env::temp_dir().join(format!("rwupd-archive-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dest);
        let bytes = tar_gz(&[
            ("repo-main/country/cn/ipv4-aggregated.txt", b"1.0.1.0/24\n"),
            ("repo-main/country/cn/ipv6-aggregated.txt", b""),
            ("repo-main/README.md", b"readme"),
            ("repo-main/country/toolong/ipv4-aggregated.txt", b"x"),
            ("evil/etc/ipv4-aggregated.txt", b"x"),
        ]);
        assert_eq!(country_dir(&bytes, &dest, 1 << 20), Ok(2));
        assert_eq!(
            std::fs::read(dest.join("cn/ipv4-aggregated.txt")).expect("cn"),
            b"1.0.1.0/24\n"
        );
        let mut names: Vec<String> = std::fs::read_dir(&dest)
            .expect("dest")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["cn"], "\"etc\" is no country code of two letters");
        assert!(country_dir(&bytes, &dest, 8).is_err_and(|e| e.contains("unpacks to over 8")));
        assert!(country_dir(b"not gzip", &dest, 1 << 20).is_err());
        let twice = tar_gz(&[
            ("a/cn/ipv4-aggregated.txt", b"1.0.1.0/24\n"),
            ("b/CN/ipv4-aggregated.txt", b"9.9.9.0/24\n"),
        ]);
        assert_eq!(
            country_dir(&twice, &dest, 1 << 20),
            Err("cn/ipv4-aggregated.txt appears twice in the archive".into())
        );
        assert_eq!(
            one_file(&bytes, "README.md", 1 << 20).as_deref(),
            Ok(&b"readme"[..])
        );
        std::fs::remove_dir_all(&dest).expect("cleanup");
    }
}
