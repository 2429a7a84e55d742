//! `regionwall manpages` and `regionwall completions` (hidden): the man
//! pages and shell completions, generated from the clap definitions that
//! parse the command line, so they name exactly the options that exist.
//! `./x install` calls them on the binary it installs.

use std::{io::Write as _, path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use clap::CommandFactory as _;

/// Write the man pages: regionwall(1) and one per subcommand
#[derive(clap::Args)]
pub struct ManpagesArgs {
    /// Directory to write regionwall.1 and regionwall-<command>.1 into.
    #[arg(long)]
    pub dir: PathBuf,
}

/// Print the completion script for a shell
#[derive(clap::Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

pub fn manpages(args: &ManpagesArgs) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    clap_mangen::generate_to(crate::Cli::command(), &args.dir)
        .with_context(|| format!("writing man pages into {}", args.dir.display()))?;
    Ok(ExitCode::SUCCESS)
}

pub fn completions(args: &CompletionsArgs) -> anyhow::Result<ExitCode> {
    let mut out = Vec::new();
    clap_complete::generate(
        args.shell,
        &mut crate::Cli::command(),
        "regionwall",
        &mut out,
    );
    std::io::stdout()
        .write_all(&out)
        .context("writing the completion script")?;
    Ok(ExitCode::SUCCESS)
}
