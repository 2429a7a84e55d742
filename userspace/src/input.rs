//! Reading the files a policy names so that none can hang or exhaust memory.
//!
//! Every input (the policy, CIDR lists, country databases, RIR, CSV and
//! MMDB files) goes through [`read`]: opened without blocking (a FIFO with
//! no writer would otherwise hang the open), checked with fstat on the open
//! descriptor to be a regular file (not a FIFO, device, socket or
//! directory), refused when over the size limit before a byte is read, and
//! read through a cap so a file growing under us cannot exceed it either.

use std::{
    fmt,
    fs::{File, OpenOptions},
    io::{self, Read as _},
    os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
};

/// Default for [`Limits::max_file_size`]: 256 MiB, over three times the
/// largest data people load (GeoLite2-City.mmdb is about 70 MB, a
/// GeoLite2-Country CSV block file about 30 MB, RIR files about 10 MB).
pub const DEFAULT_MAX_FILE_SIZE: u64 = 256 << 20;

/// Bounds on what reading input files may cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest file read, in bytes (`--max-file-size`).
    pub max_file_size: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_file_size: DEFAULT_MAX_FILE_SIZE,
        }
    }
}

/// The files and directories read so far, and the limits reading them is
/// held to: every loader reads through [`Inputs::read`], so the list is
/// complete (for watching them) and every read is bounded.
#[derive(Clone, Debug, Default)]
pub struct Inputs {
    pub limits: Limits,
    paths: Vec<PathBuf>,
    seen: std::collections::HashSet<PathBuf>,
}

impl Inputs {
    #[must_use]
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    /// Records `path` (a directory looked into, or a file about to be read).
    pub fn note(&mut self, path: &Path) {
        let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        if self.seen.insert(path.clone()) {
            self.paths.push(path);
        }
    }

    /// Records and [`read`]s a file.
    pub fn read(&mut self, path: &Path) -> Result<Vec<u8>, InputError> {
        self.note(path);
        read(path, self.limits)
    }

    /// Everything recorded, absolute (symlinks not resolved), each once,
    /// in the order first recorded.
    #[must_use]
    pub fn into_paths(self) -> Vec<PathBuf> {
        self.paths
    }
}

/// An input file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is {kind}, not a regular file", path.display())]
    NotRegular { path: PathBuf, kind: &'static str },
    #[error(
        "{} is {}, over the {} limit (--max-file-size)",
        path.display(),
        Size(*size),
        Size(*limit)
    )]
    TooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
    },
}

impl InputError {
    #[must_use]
    pub fn path(&self) -> &Path {
        match self {
            Self::Io { path, .. } | Self::NotRegular { path, .. } | Self::TooLarge { path, .. } => {
                path
            }
        }
    }
}

/// What a file that is not regular is, for messages.
fn kind(t: std::fs::FileType) -> Option<&'static str> {
    if t.is_file() {
        None
    } else if t.is_dir() {
        Some("a directory")
    } else if t.is_fifo() {
        Some("a FIFO")
    } else if t.is_char_device() {
        Some("a character device")
    } else if t.is_block_device() {
        Some("a block device")
    } else if t.is_socket() {
        Some("a socket")
    } else {
        Some("not a file")
    }
}

/// Opens `path` for reading without blocking and checks, on the open
/// descriptor, that it is a regular file of at most `limits.max_file_size`
/// bytes. Returns the file and its size.
pub fn open(path: &Path, limits: Limits) -> Result<(File, u64), InputError> {
    let io = |source| InputError::Io {
        path: path.to_path_buf(),
        source,
    };
    // Refused before it is opened when it is already not a regular file:
    // opening a device can act (a watchdog, a tape). The check on the open
    // descriptor below still decides (the path may change in between).
    if let Some(kind) = std::fs::metadata(path)
        .ok()
        .and_then(|m| kind(m.file_type()))
    {
        return Err(InputError::NotRegular {
            path: path.to_path_buf(),
            kind,
        });
    }
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| {
            // A socket cannot be opened at all (ENXIO): say what it is.
            match std::fs::metadata(path)
                .ok()
                .and_then(|m| kind(m.file_type()))
            {
                Some(kind) if e.raw_os_error() == Some(libc::ENXIO) => InputError::NotRegular {
                    path: path.to_path_buf(),
                    kind,
                },
                _ => io(e),
            }
        })?;
    let meta = file.metadata().map_err(io)?;
    if let Some(kind) = kind(meta.file_type()) {
        return Err(InputError::NotRegular {
            path: path.to_path_buf(),
            kind,
        });
    }
    if meta.len() > limits.max_file_size {
        return Err(InputError::TooLarge {
            path: path.to_path_buf(),
            size: meta.len(),
            limit: limits.max_file_size,
        });
    }
    Ok((file, meta.len()))
}

/// Reads a whole input file (see the module documentation).
pub fn read(path: &Path, limits: Limits) -> Result<Vec<u8>, InputError> {
    let (file, size) = open(path, limits)?;
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    file.take(limits.max_file_size.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|source| InputError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    let read = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
    if read > limits.max_file_size {
        // It grew while being read.
        return Err(InputError::TooLarge {
            path: path.to_path_buf(),
            size: read,
            limit: limits.max_file_size,
        });
    }
    Ok(bytes)
}

/// A byte count for people: `600 MiB`, `1.5 GiB`, `512 bytes`.
#[derive(Clone, Copy, Debug)]
pub struct Size(pub u64);

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u32); 4] = [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)];
        for (unit, shift) in UNITS {
            let one = 1u64 << shift;
            if self.0 >= one {
                return if self.0.is_multiple_of(one) {
                    write!(f, "{} {unit}", self.0 >> shift)
                } else {
                    #[expect(clippy::cast_precision_loss, reason = "a display figure")]
                    let v = self.0 as f64 / one as f64;
                    write!(f, "{v:.1} {unit}")
                };
            }
        }
        write!(f, "{} bytes", self.0)
    }
}

/// Parses a size: bytes (`1048576`) or a number with a binary unit,
/// `K`/`KiB`, `M`/`MiB`, `G`/`GiB`, `T`/`TiB` (case-insensitive; `256M`,
/// `1G`, `1.5G`).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => {
            return Err(format!(
                "expected a size such as 256M, 1G or a number of bytes, found \"{text}\""
            ));
        }
    };
    let bad = || format!("expected a size such as 256M, 1G or a number of bytes, found \"{text}\"");
    if let Ok(n) = number.parse::<u64>() {
        return n.checked_mul(1 << shift).ok_or_else(bad);
    }
    let n: f64 = number.parse().map_err(|_| bad())?;
    #[expect(
        clippy::cast_precision_loss,
        reason = "a power of two up to 2^40 is exact"
    )]
    let bytes = (n * (1u64 << shift) as f64).round();
    if !bytes.is_finite() || bytes < 0.0 || bytes >= 1.8e19 {
        return Err(bad());
    }
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "checked finite, non-negative and below u64::MAX above"
    )]
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("regionwall-input-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        dir.join(name)
    }

    #[test]
    fn sizes_parse_and_print() {
        assert_eq!(parse_size("256M"), Ok(256 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("1gib"), Ok(1 << 30));
        assert_eq!(parse_size("1.5G"), Ok(3 << 29));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64 KiB"), Ok(64 << 10));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("1X").is_err());
        assert!(parse_size("99999999999T").is_err());
        assert_eq!(Size(600 << 20).to_string(), "600 MiB");
        assert_eq!(Size(3 << 29).to_string(), "1.5 GiB");
        assert_eq!(Size(100).to_string(), "100 bytes");
    }

    #[test]
    fn only_regular_files_within_the_limit_are_read() {
        let file = scratch("small.txt");
        std::fs::write(&file, "10.0.0.0/8\n").expect("write");
        assert_eq!(
            read(&file, Limits::default()).expect("reads"),
            b"10.0.0.0/8\n"
        );
        let tight = Limits { max_file_size: 4 };
        let e = read(&file, tight).expect_err("over the limit");
        assert!(matches!(
            e,
            InputError::TooLarge {
                size: 11,
                limit: 4,
                ..
            }
        ));
        assert_eq!(
            e.to_string(),
            format!(
                "{} is 11 bytes, over the 4 bytes limit (--max-file-size)",
                file.display()
            )
        );
        for (path, kind) in [
            (Path::new("/dev/zero"), "a character device"),
            (Path::new("/dev/urandom"), "a character device"),
            (Path::new("/tmp"), "a directory"),
        ] {
            let e = read(path, Limits::default()).expect_err("not regular");
            assert_eq!(
                e.to_string(),
                format!("{} is {kind}, not a regular file", path.display())
            );
        }
    }

    #[test]
    fn a_fifo_without_writer_is_refused_not_waited_on() {
        let fifo = scratch("x.fifo");
        let _ = std::fs::remove_file(&fifo);
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).expect("path");
        // SAFETY: mkfifo reads a NUL-terminated path and nothing else.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
        let e = read(&fifo, Limits::default()).expect_err("a FIFO");
        assert_eq!(
            e.to_string(),
            format!("{} is a FIFO, not a regular file", fifo.display())
        );
        let sock = scratch("x.sock");
        let _ = std::fs::remove_file(&sock);
        let _listener = std::os::unix::net::UnixListener::bind(&sock).expect("bind");
        let e = read(&sock, Limits::default()).expect_err("a socket");
        assert!(
            e.to_string().ends_with("is a socket, not a regular file"),
            "{e}"
        );
    }
}
