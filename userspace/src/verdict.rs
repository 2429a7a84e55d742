//! Verdicts as a userspace type: named the same way in events, filters,
//! statistics and JSON, compared as values, never as strings.

use serde::{Deserialize, Serialize};

/// What happened to a packet (the kernel's [`regionwall_common::Verdict`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Drop,
    /// Passed, but reported like a drop.
    Audit,
    /// Dropped and answered (TCP RST, ICMP administratively prohibited).
    Reject,
}

impl Verdict {
    /// Every verdict, in the kernel's order.
    pub const ALL: [Self; 4] = [Self::Pass, Self::Drop, Self::Audit, Self::Reject];

    /// The verdict the kernel numbered `v`; `None` for a number it never
    /// writes.
    #[must_use]
    pub fn from_kernel(v: u32) -> Option<Self> {
        let v = u8::try_from(v).ok()?;
        regionwall_common::Verdict::from_u8(v).map(Self::from)
    }

    /// The kernel's number.
    #[must_use]
    pub const fn kernel(self) -> u32 {
        match self {
            Self::Pass => regionwall_common::Verdict::Pass as u32,
            Self::Drop => regionwall_common::Verdict::Drop as u32,
            Self::Audit => regionwall_common::Verdict::Audit as u32,
            Self::Reject => regionwall_common::Verdict::Reject as u32,
        }
    }

    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Drop => "drop",
            Self::Audit => "audit",
            Self::Reject => "reject",
        }
    }
}

impl From<regionwall_common::Verdict> for Verdict {
    fn from(v: regionwall_common::Verdict) -> Self {
        match v {
            regionwall_common::Verdict::Pass => Self::Pass,
            regionwall_common::Verdict::Drop => Self::Drop,
            regionwall_common::Verdict::Audit => Self::Audit,
            regionwall_common::Verdict::Reject => Self::Reject,
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A verdict name that is not one.
#[derive(Debug, thiserror::Error)]
#[error("unknown verdict {0:?}; expected pass, drop, audit or reject")]
pub struct UnknownVerdict(String);

impl std::str::FromStr for Verdict {
    type Err = UnknownVerdict;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| UnknownVerdict(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_numbers_names_and_json_agree() {
        for v in Verdict::ALL {
            assert_eq!(Verdict::from_kernel(v.kernel()), Some(v));
            assert_eq!(v.as_str().parse::<Verdict>().ok(), Some(v));
            assert_eq!(
                serde_json::to_string(&v).ok(),
                Some(format!("\"{}\"", v.as_str()))
            );
        }
        assert_eq!(Verdict::from_kernel(3), Some(Verdict::Reject));
        assert_eq!(Verdict::from_kernel(4), None);
        assert!("DROP".parse::<Verdict>().is_err());
    }
}
