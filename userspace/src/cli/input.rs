//! `--max-file-size`, shared by every command that reads a policy.

use regionwall::input::{Limits, parse_size};

/// Bounds on the files a policy makes regionwall read (flatten into a
/// command's arguments with `#[command(flatten)]`).
#[derive(clap::Args, Clone, Copy, Debug)]
pub struct InputArgs {
    /// Largest file read: the policy, `file =` lists, country data, RIR,
    /// CSV and MMDB files. Bytes, or with a unit: 64K, 256M, 1G. A larger
    /// file is an error before anything is read.
    #[arg(long, value_name = "SIZE", value_parser = parse_size, default_value = "256M")]
    pub max_file_size: u64,
}

impl InputArgs {
    #[must_use]
    pub const fn limits(self) -> Limits {
        Limits {
            max_file_size: self.max_file_size,
        }
    }
}
