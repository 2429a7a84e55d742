//! `regionwall`: region egress policies enforced at line rate by XDP.

mod cli;
mod demo;

use clap::{Parser, Subcommand};

/// Stops devices on your network from uploading to regions you did not agree to.
///
/// regionwall attaches an XDP program to the LAN-facing interface of a
/// gateway, drops what the policy forbids, and reports every drop with the
/// device, region and rule that decided it.
#[derive(Parser)]
#[command(
    name = "regionwall",
    version,
    verbatim_doc_comment,
    // A bare `regionwall` prints the help (on stderr, exit status 2, as
    // clap does for any missing argument): it never builds namespaces or
    // attaches anything by surprise.
    arg_required_else_help = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Run(cli::run::Args),
    Check(cli::check::Args),
    Explain(cli::explain::Args),
    Demo(cli::demo::Args),
    Events(cli::client::EventsArgs),
    Stats(cli::client::StatsArgs),
    Detach(cli::client::DetachArgs),
    History(cli::history::Args),
    Update(cli::update::Args),
    Stage(cli::candidate::StageArgs),
    Diff(cli::candidate::DiffArgs),
    Promote(cli::candidate::PromoteArgs),
    Discard(cli::candidate::DiscardArgs),
    #[command(hide = true)]
    Manpages(cli::generate::ManpagesArgs),
    #[command(hide = true)]
    Completions(cli::generate::CompletionsArgs),
}

fn main() -> std::process::ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => cli::run::main(args),
        Command::Check(args) => cli::check::main(&args),
        Command::Explain(args) => cli::explain::main(&args),
        Command::Demo(args) => cli::demo::main(&args),
        Command::Events(args) => cli::client::events(&args),
        Command::Stats(args) => cli::client::stats(&args),
        Command::Detach(args) => cli::client::detach(&args),
        Command::History(args) => cli::history::main(&args),
        Command::Update(args) => cli::update::main(&args),
        Command::Stage(args) => cli::candidate::stage(&args),
        Command::Diff(args) => cli::candidate::diff(&args),
        Command::Promote(args) => cli::candidate::promote(&args),
        Command::Discard(args) => cli::candidate::discard(&args),
        Command::Manpages(args) => cli::generate::manpages(&args),
        Command::Completions(args) => cli::generate::completions(&args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("regionwall: error: {}", cli::error_text(&e));
            std::process::ExitCode::FAILURE
        }
    }
}
