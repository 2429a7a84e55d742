//! The versioned data directory: `versions/<n>/` written in a staging
//! directory, fsynced, renamed into place, and made live by one rename of
//! the `current` symlink; the last N good versions kept; one update at a
//! time (flock). `history` lists the versions made current, in order (the
//! rollback targets); `last-version` the highest number ever given, so no
//! number is used twice; a version never made current (a run killed
//! between commit and switch) is an orphan, removed by the next run.

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
    #[error(
        "{} is not a symlink: `update` makes it a link to versions/<n>; move it away first",
        path.display()
    )]
    CurrentNotLink { path: PathBuf },
}

/// The versions made current, oldest first, at most this many.
const HISTORY: usize = 64;

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
        let current = dir.join("current");
        if fs::symlink_metadata(&current).is_ok_and(|m| !m.file_type().is_symlink()) {
            return Err(StoreError::CurrentNotLink { path: current });
        }
        for entry in fs::read_dir(dir).map_err(io("reading", dir))?.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(".staging") || name == ".current.tmp" || name.ends_with(".rwnew") {
                let _ = fs::remove_dir_all(entry.path());
                let _ = fs::remove_file(entry.path());
            }
        }
        let store = Self {
            dir: dir.to_path_buf(),
            _lock: lock,
        };
        store.remove_orphans()?;
        Ok(store)
    }

    /// The versions made current, oldest first. A data directory from
    /// before the history was kept counts every version up to the live one.
    #[must_use]
    pub fn history(&self) -> Vec<u64> {
        if let Ok(text) = fs::read_to_string(self.dir.join("history")) {
            text.split_whitespace()
                .filter_map(|w| w.parse().ok())
                .collect()
        } else {
            let live = self.current();
            self.versions()
                .into_iter()
                .filter(|v| live.is_some_and(|l| *v <= l))
                .collect()
        }
    }

    fn write_history(&self, history: &[u64]) -> Result<(), StoreError> {
        let tail = &history[history.len().saturating_sub(HISTORY)..];
        let text = tail.iter().fold(String::new(), |mut t, v| {
            use std::fmt::Write as _;
            let _ = writeln!(t, "{v}");
            t
        });
        write_file(&self.dir.join("history"), text.as_bytes())
    }

    /// Removes every version never made current (not the live one).
    fn remove_orphans(&self) -> Result<(), StoreError> {
        let history = self.history();
        for v in self.versions() {
            if !history.contains(&v) {
                self.remove(v)?;
            }
        }
        Ok(())
    }

    /// The highest version number ever given.
    fn last_number(&self) -> u64 {
        let recorded = fs::read_to_string(self.dir.join("last-version"))
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0);
        let seen = self.versions().into_iter().chain(self.history()).max();
        recorded.max(seen.unwrap_or(0))
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
        let n = self.last_number() + 1;
        write_file(&self.dir.join("last-version"), format!("{n}\n").as_bytes())?;
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
        let mut history = self.history();
        if history.last() != Some(&n) {
            history.push(n);
        }
        self.write_history(&history)?;
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

    /// Goes back one: the version current before the live one (the
    /// newest in the history still kept) becomes live, and the one left is
    /// removed. Returns (left, now live).
    pub fn rollback(&self) -> Result<(u64, u64), StoreError> {
        let live = self.current().ok_or_else(|| StoreError::NoEarlier {
            dir: self.dir.clone(),
        })?;
        let kept = self.versions();
        let earlier = self
            .history()
            .into_iter()
            .rfind(|v| *v != live && kept.contains(v))
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
        // A version never made current is an orphan: the next run removes
        // it; its number is never given again, nor is a rejected one's;
        // rollback goes to the version current before, not the newest.
        let s = store.stage().expect("stage");
        write_file(&s.path().join("a.txt"), b"orphan").expect("write");
        assert_eq!(store.commit(s).expect("commit"), 5, "4 was given once");
        std::os::unix::fs::symlink("versions/5", root.join(".current.tmp")).expect("tmp");
        drop(store);
        let store = Store::open(&root).expect("reopen");
        assert_eq!(store.versions(), [3]);
        assert!(!root.join(".current.tmp").exists());
        let s = store.stage().expect("stage");
        let n = store.commit(s).expect("commit");
        assert_eq!(n, 6, "5 was given once");
        store.switch(n).expect("switch");
        store.switch(3).expect("switch back: rejected");
        store.remove(n).expect("remove");
        let s = store.stage().expect("stage");
        write_file(&s.path().join("a.txt"), &[7]).expect("write");
        assert_eq!(store.commit(s).expect("commit"), 7, "6 was rejected");
        store.switch(7).expect("switch");
        assert_eq!(store.rollback().expect("rollback"), (7, 3));
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
