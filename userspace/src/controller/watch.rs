//! Watches every file and directory a policy read (the policy itself, its
//! `file =` lists, country databases), following symlinks, and reports
//! changes; the controller reloads once they have stopped for a while.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    time::Duration,
};

use notify::{EventKind, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;

/// Quiet time after the last change before reloading: editors and copies
/// write in several steps, and each new change restarts the wait.
pub const DEBOUNCE: Duration = Duration::from_millis(250);

/// What one watch covers.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Target {
    /// One file, by name, in a directory watched non-recursively.
    File {
        dir: PathBuf,
        name: std::ffi::OsString,
    },
    /// Everything below a directory.
    Tree(PathBuf),
}

impl Target {
    fn matches(&self, path: &Path) -> bool {
        match self {
            Self::File { dir, name } => {
                path.parent() == Some(dir.as_path()) && path.file_name() == Some(name.as_os_str())
            }
            Self::Tree(dir) => path.starts_with(dir),
        }
    }
}

/// The targets for `inputs`: each path as given and, when it is (or
/// passes through) a symlink, its resolved target too, and every symlink
/// on the way itself (a watch follows a symlink, so replacing the link
/// — `regionwall update` renaming a new `current` over the old — is only
/// seen in the directory that holds it).
fn targets(inputs: &[PathBuf]) -> BTreeSet<Target> {
    let mut out = BTreeSet::new();
    for input in inputs {
        let Ok(abs) = std::path::absolute(input) else {
            continue;
        };
        for link in abs
            .ancestors()
            .filter(|a| std::fs::symlink_metadata(a).is_ok_and(|m| m.file_type().is_symlink()))
        {
            if let (Some(dir), Some(name)) = (link.parent(), link.file_name()) {
                out.insert(Target::File {
                    dir: dir.to_path_buf(),
                    name: name.to_os_string(),
                });
            }
        }
        let mut paths = vec![abs.clone()];
        if let Ok(real) = std::fs::canonicalize(&abs)
            && real != abs
        {
            paths.push(real);
        }
        for p in paths {
            if p.is_dir() {
                out.insert(Target::Tree(p));
            } else if let (Some(dir), Some(name)) = (p.parent(), p.file_name()) {
                out.insert(Target::File {
                    dir: dir.to_path_buf(),
                    name: name.to_os_string(),
                });
            }
        }
    }
    out
}

/// A running watch; dropping it stops watching.
pub struct Watch {
    _watcher: notify::RecommendedWatcher,
    watched: BTreeSet<Target>,
}

impl Watch {
    /// Watches `inputs`; every change to one of them sends on `tx`.
    pub fn start(inputs: &[PathBuf], tx: mpsc::Sender<PathBuf>) -> notify::Result<Self> {
        let watched = targets(inputs);
        let matchers: Vec<Target> = watched.iter().cloned().collect();
        let mut notifier =
            notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
                let Ok(event) = res else { return };
                if !matches!(
                    event.kind,
                    EventKind::Modify(_) | EventKind::Create(_) | EventKind::Remove(_)
                ) {
                    return;
                }
                if let Some(p) = event
                    .paths
                    .iter()
                    .find(|p| matchers.iter().any(|t| t.matches(p)))
                {
                    let _ = tx.try_send(p.clone());
                }
            })?;
        // One watch per directory, recursive if any target needs it.
        let mut dirs = std::collections::BTreeMap::new();
        for t in &watched {
            match t {
                Target::File { dir, .. } => {
                    dirs.entry(dir.clone()).or_insert(false);
                }
                Target::Tree(dir) => {
                    dirs.insert(dir.clone(), true);
                }
            }
        }
        for (dir, recursive) in dirs {
            let mode = if recursive {
                RecursiveMode::Recursive
            } else {
                RecursiveMode::NonRecursive
            };
            if let Err(e) = notifier.watch(&dir, mode) {
                log::warn!("not watching {}: {e}", dir.display());
            }
        }
        Ok(Self {
            _watcher: notifier,
            watched,
        })
    }

    /// Whether this watch covers exactly `inputs`.
    #[must_use]
    pub fn watches(&self, inputs: &[PathBuf]) -> bool {
        targets(inputs) == self.watched
    }

    /// How many files and directories are watched.
    #[must_use]
    pub fn len(&self) -> usize {
        self.watched.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.watched.is_empty()
    }
}
