//! `lubdub man [--dir DIR]`: the man pages, from the CLI definition.

use anyhow::Context;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

/// Flags of `lubdub man`.
#[derive(Args)]
pub struct ManArgs {
    /// Write lubdub.1, lubdub-server.1, ... here instead.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

/// The definition the pages are made from. Without clap's `help`
/// subcommand: it gets no page of its own, so `lubdub(1)` must not name a
/// `lubdub-help(1)` (clap_mangen's `generate_to` leaves it out the same way).
fn command() -> clap::Command {
    super::command().disable_help_subcommand(true)
}

/// Prints `lubdub(1)`, or writes every page into `--dir`.
pub fn run(args: ManArgs) -> anyhow::Result<ExitCode> {
    match args.dir {
        Some(dir) => clap_mangen::generate_to(command(), &dir)
            .with_context(|| format!("writing man pages to {}", dir.display()))?,
        None => clap_mangen::Man::new(command())
            .render(&mut std::io::stdout())
            .context("printing the man page")?,
    }
    Ok(ExitCode::SUCCESS)
}
