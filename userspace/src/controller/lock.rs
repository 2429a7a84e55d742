//! Exactly one controller per pin directory: an exclusive `flock` on the
//! directory itself, held for the controller's lifetime, with an owner
//! record (pid, socket) so a second controller is told who owns it.

use std::{
    io,
    os::fd::OwnedFd,
    path::{Path, PathBuf},
};

use rustix::fs::{FlockOperation, Mode, OFlags};
use serde::{Deserialize, Serialize};

/// Where owner records live (one file per locked pin directory, named by
/// the directory's device and inode, so any path to it finds the record).
pub const OWNER_DIR: &str = "/run/regionwall/owners";

/// Who holds a pin directory.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Owner {
    pub pid: u32,
    pub socket: PathBuf,
    pub iface: String,
}

/// Why the pin directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another controller owns {}: pid {}, control socket {} (stop it, or `regionwall detach --iface {} --socket {}`)",
        dir.display(), owner.pid, owner.socket.display(), owner.iface, owner.socket.display()
    )]
    Owned { dir: PathBuf, owner: Owner },
    #[error("another process holds the lock on {} (no owner record found)", dir.display())]
    Held { dir: PathBuf },
    #[error("locking {}: {source}", dir.display())]
    Io {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// An exclusive lock on a pin directory; released (and its owner record
/// removed) on drop.
#[derive(Debug)]
pub struct PinLock {
    _fd: OwnedFd,
    record: Option<PathBuf>,
}

fn record_path(fd: &OwnedFd) -> io::Result<PathBuf> {
    let st = rustix::fs::fstat(fd)?;
    Ok(Path::new(OWNER_DIR).join(format!("{}-{}.json", st.st_dev, st.st_ino)))
}

impl PinLock {
    /// Locks `dir` (which must exist) without waiting. `owner` is written
    /// to the owner record; `None` takes the lock for a moment only (a
    /// `detach` without a controller) and writes no record.
    pub fn acquire(dir: &Path, owner: Option<&Owner>) -> Result<Self, LockError> {
        let io_err = |source: io::Error| LockError::Io {
            dir: dir.to_path_buf(),
            source,
        };
        // The directory may be removed by its previous owner between our
        // open and our flock: lock, then check the path still names the
        // locked directory, else start over.
        for _ in 0..8 {
            let fd = rustix::fs::open(
                dir,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| io_err(e.into()))?;
            match rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => {}
                Err(rustix::io::Errno::WOULDBLOCK) => {
                    let owner = record_path(&fd)
                        .ok()
                        .and_then(|p| std::fs::read(p).ok())
                        .and_then(|b| serde_json::from_slice::<Owner>(&b).ok());
                    return Err(match owner {
                        Some(owner) => LockError::Owned {
                            dir: dir.to_path_buf(),
                            owner,
                        },
                        None => LockError::Held {
                            dir: dir.to_path_buf(),
                        },
                    });
                }
                Err(e) => return Err(io_err(e.into())),
            }
            let same = match (rustix::fs::fstat(&fd), rustix::fs::stat(dir)) {
                (Ok(a), Ok(b)) => a.st_dev == b.st_dev && a.st_ino == b.st_ino,
                _ => false,
            };
            if !same {
                continue;
            }
            let record = if let Some(owner) = owner {
                Some(write_record(&fd, owner).map_err(io_err)?)
            } else {
                // Ours now: a record left by a killed owner is stale.
                if let Ok(stale) = record_path(&fd) {
                    let _ = std::fs::remove_file(stale);
                }
                None
            };
            return Ok(Self { _fd: fd, record });
        }
        Err(io_err(io::Error::other(
            "the directory kept being replaced while locking it",
        )))
    }
}

fn write_record(fd: &OwnedFd, owner: &Owner) -> io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(OWNER_DIR)?;
    let path = record_path(fd)?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(owner).map_err(io::Error::other)?)?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

impl Drop for PinLock {
    fn drop(&mut self) {
        if let Some(record) = &self.record {
            let _ = std::fs::remove_file(record);
        }
    }
}
