//! The `lubdub` command: parse, set up logging, dispatch, print the one
//! error, exit. The commands themselves live in `cli/`, one file each.

mod cli;

use std::io::IsTerminal;
use std::process::ExitCode;

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(err) => {
            // The one place an error is printed: one line, causes joined.
            eprintln!("lubdub: {err:#}");
            // Usage errors exit 2, as clap's convention; the rest 1.
            if err.is::<cli::UsageError>() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn run() -> anyhow::Result<ExitCode> {
    let cli = match cli::parse()? {
        cli::Parsed::Run(cli) => *cli,
        cli::Parsed::Shown(code) => return Ok(code),
    };
    let format = cli::LogFormat::choose(cli.global.log_format)?;
    init_logging(cli.global.quiet, cli.global.verbose, format);
    cli::warn_unknown_vars();
    cli::dispatch(cli.command)
}

/// Logs to stderr: `LUBDUB_LOG` (an `EnvFilter`) if set, else the level
/// that `-q`/`-v` choose.
fn init_logging(quiet: bool, verbose: u8, format: cli::LogFormat) {
    let level = match (quiet, verbose) {
        (true, _) => "warn",
        (false, 0) => "info",
        (false, 1) => "debug",
        (false, _) => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("LUBDUB_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("lubdub={level}")));
    let logger = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        cli::LogFormat::Json => logger.json().init(),
        cli::LogFormat::Text => logger.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}
