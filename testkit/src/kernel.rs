//! The running kernel's version, for tests that need a kernel feature.

/// `(major, minor)` of the running kernel, from /proc/sys/kernel/osrelease.
#[must_use]
pub fn version() -> Option<(u32, u32)> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    parse(&release)
}

fn parse(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.trim().split(['.', '-', '+']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Whether the kernel is at least `major.minor` (an unknown version counts
/// as new enough: the test then runs and says what fails).
#[must_use]
pub fn at_least(major: u32, minor: u32) -> bool {
    version().is_none_or(|v| v >= (major, minor))
}

/// A kernel feature a test needs, and the release that brought it.
#[derive(Clone, Copy, Debug)]
pub struct Feature {
    pub since: (u32, u32),
    pub what: &'static str,
}

/// Linux 5.9 added XDP bpf_link (BPF_LINK_CREATE for XDP), BPF_LINK_UPDATE
/// of an XDP link and BPF_LINK_DETACH: how `regionwall run` attaches,
/// replaces and detaches its program.
pub const XDP_LINK: Feature = Feature {
    since: (5, 9),
    what: "XDP bpf_link, BPF_LINK_UPDATE and BPF_LINK_DETACH",
};

impl Feature {
    /// True if the running kernel has the feature; otherwise prints why
    /// the calling test is skipped and returns false.
    #[must_use]
    pub fn supported(&self) -> bool {
        let (major, minor) = self.since;
        if at_least(major, minor) {
            return true;
        }
        let running = version().map_or_else(|| "unknown".into(), |(a, b)| format!("{a}.{b}"));
        eprintln!(
            "skipped: needs Linux {major}.{minor}+ for {} (running {running})",
            self.what
        );
        false
    }
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn releases_parse() {
        assert_eq!(parse("6.18.44-fc-v669\n"), Some((6, 18)));
        assert_eq!(parse("5.9.0"), Some((5, 9)));
        assert_eq!(parse("4.19-rc1"), Some((4, 19)));
        assert_eq!(parse("garbage"), None);
    }
}
