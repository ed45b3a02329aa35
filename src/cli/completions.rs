//! `lubdub completions SHELL`: a completion script, from the CLI definition.

use clap::Args;
use std::process::ExitCode;

/// Flags of `lubdub completions`.
#[derive(Args)]
pub struct CompletionsArgs {
    /// The shell.
    shell: clap_complete::Shell,
}

/// Prints the script on stdout.
pub fn run(args: CompletionsArgs) -> anyhow::Result<ExitCode> {
    let mut command = super::command();
    clap_complete::generate(args.shell, &mut command, "lubdub", &mut std::io::stdout());
    Ok(ExitCode::SUCCESS)
}
