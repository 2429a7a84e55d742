//! One writer per history file: an exclusive lock on `<file>.lock`, held
//! for as long as the writer's store is open.

use std::{os::fd::OwnedFd, path::Path};

use rustix::fs::{FlockOperation, Mode, OFlags, flock, open};

use super::HistoryError;

/// Takes the writer's lock of the history at `db`; refused while another
/// controller (another interface's, or one with another pin root and the
/// same `--state-dir`) records into it: two writers would each take the
/// other's counter bases for their own.
pub fn writer(db: &Path) -> Result<OwnedFd, HistoryError> {
    let mut name = db.as_os_str().to_os_string();
    name.push(".lock");
    let path = std::path::PathBuf::from(name);
    let fd = open(
        &path,
        OFlags::RDWR | OFlags::CREATE | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::from_raw_mode(0o600),
    )
    .map_err(|e| HistoryError::Io {
        path: path.clone(),
        what: "opening the writer's lock",
        source: e.into(),
    })?;
    match flock(&fd, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(fd),
        Err(rustix::io::Errno::WOULDBLOCK) => Err(HistoryError::Busy {
            path: db.to_path_buf(),
        }),
        Err(e) => Err(HistoryError::Io {
            path,
            what: "locking",
            source: e.into(),
        }),
    }
}
