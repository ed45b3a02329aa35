//! Help texts name each flag's default by reading it from the `Default`
//! impls of the settings, never from a literal, so `--help`, the man pages
//! and `--print-config` cannot drift apart (issue 12).
//!
//! The defaults are added to the help only, as `[default: VALUE]`: a clap
//! default value would be applied as if the flag were given, and clobber
//! the config file and the environment (defaults < file < env < flags).
//! A setting's flag also names its variable, as `[env: LUBDUB_NAME]`.

use lubdub::config::{ClientConfig, DEFAULT_PORT, ServerConfig, env};

use clap::{Arg, Command};

/// Adds the defaults (and variables) to the help of every command's flags.
pub fn annotate(command: Command) -> Command {
    use clap::ValueEnum;
    let server = table(&ServerConfig::default());
    let client = table(&ClientConfig::default());
    let log_format = super::LogFormat::default()
        .to_possible_value()
        .map(|v| v.get_name().to_string());
    command
        .mut_arg("log_format", |arg| {
            let arg = with_note(arg, &default_note(log_format));
            with_note(arg, &format!("[env: {}]", super::LOG_FORMAT_VAR))
        })
        .mut_subcommand("server", |c| {
            settings(c, env::fields::<ServerConfig>(), &server)
        })
        .mut_subcommand("client", |c| {
            settings(c, env::fields::<ClientConfig>(), &client).mut_arg("servers", |arg| {
                with_note(arg, &format!("[default port: {DEFAULT_PORT}]"))
            })
        })
        .mut_subcommand("simulate", |c| {
            // Its detector flags start from the server's settings (`timeout`,
            // `phi_window` for `[server.phi] window`), its traffic from the
            // client's (`interval`, `jitter`).
            with_defaults(c, |id| {
                let phi = id.strip_prefix("phi_").map(|key| format!("phi.{key}"));
                shown(&server, phi.as_deref().unwrap_or(id)).or_else(|| shown(&client, id))
            })
        })
        .mut_subcommand("loadgen", |c| {
            let defaults = super::loadgen::defaults();
            with_defaults(c, |id| {
                defaults
                    .iter()
                    .find(|(flag, _)| *flag == id)
                    .map(|(_, value)| value.clone())
            })
        })
}

/// A settings struct as a TOML table, as `--print-config` prints it.
fn table(settings: &impl serde::Serialize) -> toml::Table {
    // The settings are plain data; serialising them cannot fail.
    toml::Table::try_from(settings).expect("settings serialise to TOML")
}

/// The value at the dotted `key` of `table` as help shows it: a string
/// without quotes, a number or boolean as written; `None` for a table, an
/// empty list, or a setting that is unset by default.
fn shown(table: &toml::Table, key: &str) -> Option<String> {
    let (value, rest) = match key.split_once('.') {
        Some((head, rest)) => (table.get(head)?, Some(rest)),
        None => (table.get(key)?, None),
    };
    match (value, rest) {
        (toml::Value::Table(inner), Some(rest)) => shown(inner, rest),
        (_, Some(_)) | (toml::Value::Table(_), None) => None,
        (toml::Value::String(text), None) => Some(text.clone()),
        (toml::Value::Array(items), None) if items.is_empty() => None,
        (value, None) => Some(value.to_string()),
    }
}

/// The flags of `command` that set a field of `fields` (the arg id is the
/// field name) get the field's default and its variable.
fn settings(command: Command, fields: &[&str], defaults: &toml::Table) -> Command {
    command.mut_args(|arg| {
        let id = arg.get_id().as_str().to_string();
        if !fields.contains(&id.as_str()) {
            return arg;
        }
        let arg = with_default(arg, shown(defaults, &id));
        with_note(arg, &format!("[env: {}]", env::var_name(&id)))
    })
}

/// Each flag of `command` gets the default `lookup` gives for its id.
fn with_defaults(command: Command, lookup: impl Fn(&str) -> Option<String>) -> Command {
    command.mut_args(|arg| {
        let value = lookup(arg.get_id().as_str());
        with_default(arg, value)
    })
}

/// Adds `[default: VALUE]` to a flag that takes a value (a switch is off
/// unless given, so it shows none).
fn with_default(arg: Arg, value: Option<String>) -> Arg {
    if !arg.get_action().takes_values() {
        return arg;
    }
    with_note(arg, &default_note(value))
}

fn default_note(value: Option<String>) -> String {
    value.map_or_else(String::new, |value| format!("[default: {value}]"))
}

/// Appends `note` to the short and long help of `arg`.
fn with_note(arg: Arg, note: &str) -> Arg {
    if note.is_empty() {
        return arg;
    }
    let help = match arg.get_help() {
        Some(help) => format!("{help} {note}"),
        None => note.to_string(),
    };
    let long = arg.get_long_help().map(|long| format!("{long} {note}"));
    let arg = arg.help(help);
    match long {
        Some(long) => arg.long_help(long),
        None => arg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn help(command: &Command, sub: &str, id: &str) -> String {
        let sub = command.find_subcommand(sub).expect("subcommand");
        let arg = sub.get_arguments().find(|a| a.get_id() == id).expect("arg");
        arg.get_help().expect("help").to_string()
    }

    #[test]
    fn help_shows_the_defaults_of_the_settings() {
        let command = super::super::command();
        let server = ServerConfig::default();
        let checkpoint = lubdub::duration::format(server.checkpoint_interval);
        assert!(
            help(&command, "server", "checkpoint_interval").ends_with(&format!(
                "[default: {checkpoint}] [env: LUBDUB_CHECKPOINT_INTERVAL]"
            )),
            "{}",
            help(&command, "server", "checkpoint_interval")
        );
        let late = help(&command, "server", "late_after");
        assert!(!late.contains("[default:") && late.contains("[env: LUBDUB_LATE_AFTER]"));
        let window = server.phi.window.to_string();
        assert!(
            help(&command, "simulate", "phi_window").ends_with(&format!("[default: {window}]"))
        );
        let jitter = ClientConfig::default().jitter.to_string();
        assert!(help(&command, "simulate", "jitter").ends_with(&format!("[default: {jitter}]")));
        assert!(!help(&command, "client", "legacy").contains("[default:"));
    }

    #[test]
    fn shown_values() {
        let table: toml::Table =
            toml::from_str("a = \"30s\"\nb = 3\nc = []\n[d]\ne = 0.5\n").expect("toml");
        assert_eq!(shown(&table, "a").as_deref(), Some("30s"));
        assert_eq!(shown(&table, "b").as_deref(), Some("3"));
        assert_eq!(shown(&table, "c"), None);
        assert_eq!(shown(&table, "d"), None);
        assert_eq!(shown(&table, "d.e").as_deref(), Some("0.5"));
        assert_eq!(shown(&table, "missing"), None);
    }
}
