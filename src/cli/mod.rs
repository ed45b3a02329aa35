//! The command line: one file per subcommand, each going flags → config
//! overlay → run. [`parse`] reads the arguments (a refused command line is a
//! one-line [`UsageError`]), [`dispatch`] runs the command; `main.rs` prints
//! the one error and picks the exit code.

mod client;
mod completions;
mod defaults;
mod http;
mod keygen;
mod loadgen;
mod maintenance;
mod maintenance_api;
mod man;
mod server;
mod simulate;
mod status;
mod test_alert;

// The library's paths used here and in the subcommand files, in one place,
// so that a move inside the library is a change of these lines only.
use lubdub::config::{self, FileConfig};
use lubdub::shutdown;

use anyhow::Context;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use std::ffi::OsString;
use std::path::Path;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

/// Heartbeat monitor: tells you, at each host's own deadline, which of your
/// computers has stopped working.
#[derive(Parser)]
#[command(name = "lubdub", version, about)]
pub struct Cli {
    /// Flags every command takes.
    #[command(flatten)]
    pub global: Global,
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command takes: how much to log, and how.
#[derive(Args)]
pub struct Global {
    /// Quieter: only warnings and state changes.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// More output: -v adds every beat, -vv everything.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Log format on stderr: `text` for people, `json` (one object per
    /// line) for log collectors.
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,
}

/// The format of the log on stderr.
#[derive(Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    // No doc comments here: clap would list them under the flag.
    #[default]
    Text,
    Json,
}

/// The variable that chooses the log format when `--log-format` is not given.
const LOG_FORMAT_VAR: &str = "LUBDUB_LOG_FORMAT";

impl LogFormat {
    /// The flag, else `LUBDUB_LOG_FORMAT`, else the default. Read by hand
    /// rather than with clap's `env`, whose error would not name the variable.
    pub fn choose(flag: Option<LogFormat>) -> Result<LogFormat, UsageError> {
        use clap::ValueEnum;
        if let Some(format) = flag {
            return Ok(format);
        }
        match std::env::var_os(LOG_FORMAT_VAR) {
            None => Ok(LogFormat::default()),
            Some(value) if value.is_empty() => Ok(LogFormat::default()),
            Some(value) => {
                let text = value.to_string_lossy();
                LogFormat::from_str(&text, true).map_err(|_| {
                    UsageError(format!(
                        "{LOG_FORMAT_VAR}: invalid value {text:?} (text or json)"
                    ))
                })
            }
        }
    }
}

/// The commands.
#[derive(Subcommand)]
pub enum Command {
    /// Receive beats and report hosts that go silent.
    Server(server::ServerArgs),
    /// Send beats to one or more servers.
    Client(client::ClientArgs),
    /// Show the fleet as a server sees it (a table, JSON, or a Nagios check).
    Status(status::StatusArgs),
    /// Write a new random key to a key file (mode 0600), or derive a host's key.
    Keygen(keygen::KeygenArgs),
    /// Run the detector on simulated time over synthetic or recorded beat
    /// traces; report detection time and false alarms.
    Simulate(simulate::SimulateArgs),
    /// Simulate a fleet of hosts beating to a server, to measure it.
    Loadgen(loadgen::LoadgenArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(completions::CompletionsArgs),
    /// Print the man page, or write one page per command into a directory.
    Man(man::ManArgs),
    /// Send a test alert through a running server's sinks; print each outcome.
    TestAlert(test_alert::TestAlertArgs),
    /// Planned silence: announce this host's (`--for 20m`), or open, list
    /// and end windows through a server's API (`--server URL`).
    Maintenance(maintenance::MaintenanceArgs),
}

/// A command line that cannot run: a bad flag or value, or a bad
/// `LUBDUB_LOG_FORMAT`. Its message is one line; it exits with 2, as
/// clap's own usage errors do.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(String);

/// What [`parse`] found.
pub enum Parsed {
    /// A command to run (boxed: it is large, and made once).
    Run(Box<Cli>),
    /// Help or the version was asked for (or no command given) and has
    /// been printed; exit with this code.
    Shown(ExitCode),
}

/// The full command line definition, each flag's help naming its default
/// as the settings' `Default` impls give it (see [`defaults`]).
pub fn command() -> clap::Command {
    defaults::annotate(Cli::command())
}

/// Parses the process's arguments.
pub fn parse() -> Result<Parsed, UsageError> {
    let args: Vec<OsString> = std::env::args_os().collect();
    if let Some(cli) = ClientCli::parse_client(&args) {
        return Ok(Parsed::Run(Box::new(cli)));
    }
    let parsed = command()
        .try_get_matches_from(&args)
        .and_then(|mut matches| Cli::from_arg_matches_mut(&mut matches));
    let err = match parsed {
        Ok(cli) => return Ok(Parsed::Run(Box::new(cli))),
        Err(err) => err,
    };
    use clap::error::ErrorKind;
    let code = match err.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => ExitCode::SUCCESS,
        // Plain `lubdub`: the help on stderr, as a usage error.
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => ExitCode::from(2),
        _ => return Err(UsageError(one_line(&err, &args))),
    };
    // A closed pipe (`lubdub --help | head`) is no reason to complain.
    let _ = err.print();
    Ok(Parsed::Shown(code))
}

/// Clap's error as one line: its message, with any `tip:` folded in and a
/// pointer to the command's help in place of the usage block and the
/// "For more information" line.
fn one_line(err: &clap::Error, args: &[OsString]) -> String {
    let text = err.render().to_string();
    let parts: Vec<String> = text
        .split("\n\n")
        .map(str::trim)
        .filter(|part| {
            !part.is_empty() && !part.starts_with("Usage:") && !part.starts_with("For more")
        })
        .map(|part| part.lines().map(str::trim).collect::<Vec<_>>().join(" "))
        .collect();
    let message = parts.join("; ");
    let message = message.strip_prefix("error: ").unwrap_or(&message);
    // The command the user meant: the first argument naming one.
    let names: Vec<String> = Cli::command()
        .get_subcommands()
        .map(|c| c.get_name().to_string())
        .collect();
    let path = match args
        .iter()
        .skip(1)
        .find(|a| names.iter().any(|n| **a == **n))
    {
        Some(name) => format!("lubdub {}", name.to_string_lossy()),
        None => "lubdub".into(),
    };
    format!("{message} (see '{path} --help')")
}

/// The CLI cut down to `lubdub [-q|-v] [--log-format F] client …`: parsing
/// it builds only the client's flags, not every subcommand's, so the code
/// that builds the others never becomes resident in an idle client
/// (issue 7). Anything it cannot parse (help, errors, other commands) goes
/// to [`Cli`], which words the output.
#[derive(Parser)]
#[command(name = "lubdub")]
struct ClientCli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: ClientOnly,
}

#[derive(Subcommand)]
enum ClientOnly {
    Client(client::ClientArgs),
}

impl ClientCli {
    /// `Some` when the arguments are a valid client command line.
    fn parse_client(args: &[OsString]) -> Option<Cli> {
        if !args.iter().any(|arg| arg == "client") {
            return None;
        }
        let cli = ClientCli::try_parse_from(args).ok()?;
        let ClientOnly::Client(args) = cli.command;
        Some(Cli {
            global: cli.global,
            command: Command::Client(args),
        })
    }
}

/// Runs the command. `status`, `client`, `completions` and `man` run
/// without the async runtime (the client so that it stays small, issue 7);
/// the others run on it, where the first SIGINT or SIGTERM asks them to stop.
pub fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Status(args) => status::run(args),
        Command::Client(args) => client::run(args),
        Command::Completions(args) => completions::run(args),
        Command::Man(args) => man::run(args),
        Command::TestAlert(args) => test_alert::run(args),
        Command::Maintenance(args) => maintenance::run(args),
        Command::Server(args) => in_runtime(|stop| server::run(args, stop)),
        Command::Keygen(args) => in_runtime(|_| async { keygen::run(args) }),
        Command::Simulate(args) => in_runtime(|_| async { simulate::run(args) }),
        Command::Loadgen(args) => in_runtime(|stop| loadgen::run(args, stop)),
    }
}

/// Runs `run` on a new runtime, with a token cancelled by the first signal.
fn in_runtime<F>(run: impl FnOnce(CancellationToken) -> F) -> anyhow::Result<ExitCode>
where
    F: Future<Output = anyhow::Result<()>>,
{
    let runtime = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
    runtime.block_on(async { run(shutdown::on_signal()).await })?;
    Ok(ExitCode::SUCCESS)
}

/// The `LUBDUB_…` variables that set nothing (a typo, usually): each is
/// logged as a warning.
pub fn warn_unknown_vars() {
    let names = std::env::vars_os().map(|(name, _)| name);
    for var in config::env::unknown_vars::<config::ServerConfig, config::ClientConfig>(names) {
        tracing::warn!("{var} is set but is no lubdub setting; ignored");
    }
}

/// The first two layers of a command's settings: its table of the config
/// file (or the defaults without one), then the `LUBDUB_…` variables.
/// Flags go on top, then `validate()`.
fn file_and_env<T>(path: Option<&Path>, table: fn(FileConfig) -> T) -> anyhow::Result<T>
where
    T: Clone + serde::Serialize + serde::de::DeserializeOwned,
{
    let file = match path {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    };
    Ok(config::env::overlay_process(&table(file))?)
}

/// `--print-config`: the effective settings, as a config file.
fn print_config(file: &impl serde::Serialize) -> anyhow::Result<()> {
    print!("{}", toml::to_string(file).context("printing the config")?);
    Ok(())
}

/// Overrides `field` with a flag's value, when the flag was given.
fn set<T>(field: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *field = value;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(args: &[&str]) -> String {
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        let err = command().try_get_matches_from(&args).expect_err("refused");
        one_line(&err, &args)
    }

    #[test]
    fn usage_errors_are_one_line_with_the_tip_and_the_command() {
        let unknown = refused(&["lubdub", "server", "--timout", "3s"]);
        assert_eq!(
            unknown,
            "unexpected argument '--timout' found; tip: a similar argument exists: \
             '--timeout' (see 'lubdub server --help')"
        );
        let missing = refused(&["lubdub", "loadgen"]);
        assert!(
            missing.contains("not provided: <TARGET>")
                && missing.ends_with("(see 'lubdub loadgen --help')"),
            "{missing}"
        );
        let command = refused(&["lubdub", "frobnicate"]);
        assert!(
            command.starts_with("unrecognized subcommand 'frobnicate'")
                && command.ends_with("(see 'lubdub --help')"),
            "{command}"
        );
        for line in [unknown, missing, command] {
            assert!(!line.contains('\n'), "{line}");
        }
    }

    #[test]
    fn the_definition_is_consistent() {
        command().debug_assert();
    }
}
