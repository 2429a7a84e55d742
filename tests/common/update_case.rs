//! What the `regionwall update` tests share: synthetic delegated-stats
//! files built from real APNIC records, and a temporary directory with a
//! policy, its data directory and the `update` command run against it.

use std::{
    path::{Path, PathBuf},
    process::Output,
};

use super::{exe, text};

/// The first `n` allocated IPv4 records of the real APNIC file.
pub fn apnic_records(n: usize) -> Vec<String> {
    let text = std::fs::read_to_string(super::data_dir().join("rir/delegated-apnic-20141224"))
        .expect("APNIC delegated stats");
    text.lines()
        .filter(|l| {
            l.starts_with("apnic|")
                && l.contains("|ipv4|")
                && !l.contains("|*|")
                && (l.ends_with("|allocated") || l.ends_with("|assigned"))
        })
        .take(n)
        .map(str::to_string)
        .collect()
}

/// A delegated-stats file of `records` (IPv4 only) with consistent counts.
pub fn rir(records: &[String]) -> Vec<u8> {
    let n = records.len();
    let mut s =
        format!("2|apnic|20141224|{n}|19850701|20141223|+1000\napnic|*|ipv4|*|{n}|summary\n");
    for r in records {
        s.push_str(r);
        s.push('\n');
    }
    s.into_bytes()
}

pub fn record(cc: &str, start: &str, count: u32) -> String {
    format!("apnic|{cc}|ipv4|{start}|{count}|20141224|allocated")
}

pub struct Case {
    pub dir: PathBuf,
    /// The controller's policy.
    pub policy: PathBuf,
    /// The policy `update` reads (the same file unless written apart).
    pub update_policy: PathBuf,
    pub data: PathBuf,
}

impl Case {
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("rwupd-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self {
            policy: dir.join("policy.toml"),
            update_policy: dir.join("policy.toml"),
            data: dir.join("data"),
            dir,
        }
    }

    pub fn write_policy(&self, text: &str) {
        std::fs::write(&self.policy, text).expect("policy");
    }

    /// A policy of `update`'s own (as /etc/regionwall/update.toml is).
    pub fn write_update_policy(&mut self, text: &str) {
        self.update_policy = self.dir.join("update.toml");
        std::fs::write(&self.update_policy, text).expect("policy");
    }

    /// `regionwall update` as of `now`, telling `socket`'s controller.
    pub fn update(&self, now: u64, socket: Option<&Path>, extra: &[&str]) -> Output {
        let mut cmd = std::process::Command::new(exe());
        cmd.arg("update")
            .arg(&self.update_policy)
            .args(["--now", &now.to_string()]);
        match socket {
            Some(s) => cmd.arg("--socket").arg(s),
            None => cmd.arg("--no-reload"),
        };
        let out = cmd.args(extra).output().expect("run update");
        println!("update at {now}:\n{}", text(&out));
        out
    }

    pub fn versions(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.data.join("versions"))
            .expect("versions")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    pub fn current(&self) -> String {
        std::fs::read_link(self.data.join("current"))
            .expect("current link")
            .to_string_lossy()
            .into_owned()
    }

    /// Only good versions, the link, the status and the lock are left.
    pub fn assert_clean(&self, versions: &[&str], current: &str) {
        assert_eq!(self.versions(), versions, "versions kept");
        assert_eq!(self.current(), format!("versions/{current}"));
        for e in std::fs::read_dir(&self.data).expect("data dir") {
            let name = e.expect("entry").file_name().to_string_lossy().into_owned();
            assert!(
                [
                    "versions",
                    "current",
                    "status.json",
                    ".lock",
                    "history",
                    "last-version"
                ]
                .contains(&name.as_str()),
                "left in the data directory: {name}"
            );
        }
    }

    /// The update must fail naming `reason`, and leave version `current`.
    pub fn assert_rejected(&self, out: &Output, reason: &str, versions: &[&str], current: &str) {
        let all = text(out);
        assert!(!out.status.success(), "update succeeded:\n{all}");
        assert!(all.contains(reason), "expected {reason:?} in:\n{all}");
        self.assert_clean(versions, current);
        let status = std::fs::read_to_string(self.data.join("status.json")).expect("status");
        assert!(status.contains("\"error\""), "{status}");
    }
}

impl Drop for Case {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
