//! The versioned data directory: `versions/<n>/` written in a staging
//! directory, fsynced, renamed into place, and made live by one rename of
//! the `current` symlink; the last N good versions kept; one update at a
//! time (flock).

use std::{
    fs,
    io::{self, Write as _},
    path::{Path, PathBuf},
};

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("another `regionwall update` holds {}", path.display())]
    Busy { path: PathBuf },
    #[error("no earlier version to roll back to in {}", dir.display())]
    NoEarlier { dir: PathBuf },
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// The data directory, locked for one update.
pub struct Store {
    dir: PathBuf,
    _lock: fs::File,
}

/// A version being written; removed if dropped unfinished.
pub struct Staging {
    path: PathBuf,
    done: bool,
}

impl Staging {
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

impl Store {
    /// Opens (creating) `dir` and takes its lock; staging left by a run
    /// that died is removed.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        fs::create_dir_all(dir.join("versions")).map_err(io("creating", dir))?;
        let lock_path = dir.join(".lock");
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io("opening", &lock_path))?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive)
            .map_err(|_| StoreError::Busy { path: lock_path })?;
        for entry in fs::read_dir(dir).map_err(io("reading", dir))?.flatten() {
            if entry.file_name().to_string_lossy().starts_with(".staging") {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            _lock: lock,
        })
    }

    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The live version's number, if any.
    #[must_use]
    pub fn current(&self) -> Option<u64> {
        let target = fs::read_link(self.dir.join("current")).ok()?;
        target.file_name()?.to_str()?.parse().ok()
    }

    /// The live version's directory.
    #[must_use]
    pub fn current_dir(&self) -> Option<PathBuf> {
        self.current().map(|n| self.version_dir(n))
    }

    #[must_use]
    pub fn version_dir(&self, n: u64) -> PathBuf {
        self.dir.join("versions").join(n.to_string())
    }

    /// Every version number present, ascending.
    #[must_use]
    pub fn versions(&self) -> Vec<u64> {
        let mut v: Vec<u64> = fs::read_dir(self.dir.join("versions"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect();
        v.sort_unstable();
        v
    }

    /// A fresh staging directory.
    pub fn stage(&self) -> Result<Staging, StoreError> {
        let path = self.dir.join(format!(".staging-{}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir(&path).map_err(io("creating", &path))?;
        Ok(Staging { path, done: false })
    }

    /// Syncs everything under `staging`, renames it to the next version
    /// and returns its number (not yet live).
    pub fn commit(&self, mut staging: Staging) -> Result<u64, StoreError> {
        sync_tree(&staging.path)?;
        let n = self.versions().last().map_or(1, |l| l + 1);
        let dest = self.version_dir(n);
        fs::rename(&staging.path, &dest).map_err(io("renaming into", &dest))?;
        staging.done = true;
        sync_dir(&self.dir.join("versions"))?;
        Ok(n)
    }

    /// Makes version `n` live: a new symlink renamed over `current`.
    pub fn switch(&self, n: u64) -> Result<(), StoreError> {
        let tmp = self.dir.join(".current.tmp");
        let _ = fs::remove_file(&tmp);
        std::os::unix::fs::symlink(Path::new("versions").join(n.to_string()), &tmp)
            .map_err(io("linking", &tmp))?;
        let current = self.dir.join("current");
        fs::rename(&tmp, &current).map_err(io("renaming over", &current))?;
        sync_dir(&self.dir)
    }

    /// Removes version `n` (never the live one).
    pub fn remove(&self, n: u64) -> Result<(), StoreError> {
        if self.current() == Some(n) {
            return Ok(());
        }
        let d = self.version_dir(n);
        fs::remove_dir_all(&d).map_err(io("removing", &d))
    }

    /// Keeps the live version and the `keep` newest others at most, so
    /// that `keep` versions remain in all (the live one among them).
    pub fn prune(&self, keep: u32) -> Result<(), StoreError> {
        let live = self.current();
        let mut others: Vec<u64> = self
            .versions()
            .into_iter()
            .filter(|v| Some(*v) != live)
            .collect();
        let keep_others =
            usize::try_from(keep.saturating_sub(u32::from(live.is_some()))).unwrap_or(usize::MAX);
        while others.len() > keep_others {
            let old = others.remove(0);
            self.remove(old)?;
        }
        Ok(())
    }

    /// Goes back one: the newest version older than the live one becomes
    /// live, and the one left is removed. Returns (left, now live).
    pub fn rollback(&self) -> Result<(u64, u64), StoreError> {
        let live = self.current().ok_or_else(|| StoreError::NoEarlier {
            dir: self.dir.clone(),
        })?;
        let earlier = self
            .versions()
            .into_iter()
            .rfind(|v| *v < live)
            .ok_or_else(|| StoreError::NoEarlier {
                dir: self.dir.clone(),
            })?;
        self.switch(earlier)?;
        self.remove(live)?;
        Ok((live, earlier))
    }
}

/// Hard-links (or, across devices, copies) the tree `src` to `dst`:
/// unchanged sources carried into a new version.
pub fn link_tree(src: &Path, dst: &Path) -> Result<(), StoreError> {
    if src.is_dir() {
        fs::create_dir_all(dst).map_err(io("creating", dst))?;
        for e in fs::read_dir(src).map_err(io("reading", src))? {
            let e = e.map_err(io("reading", src))?;
            link_tree(&e.path(), &dst.join(e.file_name()))?;
        }
        Ok(())
    } else {
        if let Some(p) = dst.parent() {
            fs::create_dir_all(p).map_err(io("creating", p))?;
        }
        if fs::hard_link(src, dst).is_err() {
            let tmp = fresh(dst);
            fs::copy(src, &tmp).map_err(io("copying to", &tmp))?;
            fs::rename(&tmp, dst).map_err(io("renaming into", dst))?;
        }
        Ok(())
    }
}

/// A new name beside `path` for writing what will replace it.
fn fresh(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map_or_else(Default::default, |n| n.to_string_lossy());
    path.with_file_name(format!(".{name}.rwnew"))
}

/// Writes `bytes` to a fresh file renamed onto `path` (parents created):
/// `path` may be a hard link into a live version, whose inode must never
/// change, so it is replaced, never written through.
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    if let Some(p) = path.parent() {
        fs::create_dir_all(p).map_err(io("creating", p))?;
    }
    let tmp = fresh(path);
    let _ = fs::remove_file(&tmp);
    let written = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .and_then(|mut f| f.write_all(bytes));
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(io("writing", &tmp)(e));
    }
    fs::rename(&tmp, path).map_err(io("renaming into", path))
}

/// fsyncs every file and directory under `root`, then `root`.
fn sync_tree(root: &Path) -> Result<(), StoreError> {
    for e in fs::read_dir(root).map_err(io("reading", root))? {
        let p = e.map_err(io("reading", root))?.path();
        if p.is_dir() {
            sync_tree(&p)?;
        } else {
            fs::File::open(&p)
                .and_then(|f| f.sync_all())
                .map_err(io("syncing", &p))?;
        }
    }
    sync_dir(root)
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(io("syncing", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_switch_prune_and_roll_back() {
        let root = std::env::temp_dir().join(format!("rwupd-store-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let store = Store::open(&root).expect("open");
        assert!(matches!(Store::open(&root), Err(StoreError::Busy { .. })));
        for i in 1..=4u8 {
            let s = store.stage().expect("stage");
            write_file(&s.path().join("a.txt"), &[i]).expect("write");
            let n = store.commit(s).expect("commit");
            assert_eq!(n, u64::from(i));
            store.switch(n).expect("switch");
            store.prune(2).expect("prune");
        }
        assert_eq!(store.versions(), [3, 4]);
        assert_eq!(fs::read(root.join("current/a.txt")).expect("read"), [4]);
        assert_eq!(store.rollback().expect("rollback"), (4, 3));
        assert_eq!(fs::read(root.join("current/a.txt")).expect("read"), [3]);
        assert_eq!(store.versions(), [3]);
        assert!(matches!(
            store.rollback(),
            Err(StoreError::NoEarlier { .. })
        ));
        // A file carried over by hard link and then replaced leaves the
        // live version's copy untouched.
        let s = store.stage().expect("stage");
        link_tree(&root.join("current/a.txt"), &s.path().join("a.txt")).expect("link");
        write_file(&s.path().join("a.txt"), b"new").expect("write");
        assert_eq!(fs::read(root.join("current/a.txt")).expect("read"), [3]);
        assert_eq!(fs::read(s.path().join("a.txt")).expect("read"), b"new");
        drop(s);
        // An unfinished staging directory is removed when dropped.
        let s = store.stage().expect("stage");
        let p = s.path().to_path_buf();
        drop(s);
        assert!(!p.exists());
        drop(store);
        fs::remove_dir_all(&root).expect("cleanup");
    }
}
