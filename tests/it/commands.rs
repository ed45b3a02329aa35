//! Every command the CLI lists, taken from its own `--help`: each answers
//! `--help`, has a man page, and is in every shell's completions with all
//! of its flags. See: issue 3, issue 14 (item 15).

use crate::util::{path_str, run};

/// The commands `lubdub --help` lists (but `help`).
fn commands() -> Vec<String> {
    let help = run(&["--help"], &[]);
    assert_eq!(help.code, Some(0), "{help:?}");
    let (_, listed) = help
        .stdout
        .split_once("Commands:\n")
        .expect("a command list");
    let commands: Vec<String> = listed
        .lines()
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(String::from)
        .collect();
    for known in [
        "server", "client", "status", "keygen", "simulate", "loadgen",
    ] {
        assert!(commands.iter().any(|c| c == known), "{known}: {listed}");
    }
    commands
}

/// The long flags of `lubdub COMMAND --help`, without their dashes.
fn flags_of(command: &str) -> Vec<String> {
    let help = run(&[command, "--help"], &[]);
    assert_eq!(help.code, Some(0), "{command} --help: {help:?}");
    assert!(
        help.stdout.contains(&format!("Usage: lubdub {command}")),
        "{command}: {}",
        help.stdout
    );
    let flags: Vec<String> = help
        .stdout
        .lines()
        .filter_map(|l| l.trim_start().split(", ").last()?.strip_prefix("--"))
        .filter_map(|l| l.split([' ', '.', '=']).next())
        .filter(|f| !f.is_empty() && *f != "help")
        .map(String::from)
        .collect();
    assert!(flags.iter().any(|f| f == "quiet"), "{command}: {flags:?}");
    flags
}

#[test]
fn every_command_has_help_a_man_page_and_completions_with_all_its_flags() {
    let commands = commands();
    let scripts: Vec<(&str, String)> = ["bash", "zsh", "fish", "elvish", "powershell"]
        .into_iter()
        .map(|shell| {
            let ran = run(&["completions", shell], &[]);
            assert_eq!(ran.code, Some(0), "{shell}: {ran:?}");
            (shell, ran.stdout)
        })
        .collect();
    let tmp = tempfile::tempdir().expect("tempdir");
    let man = run(&["man", "--dir", path_str(tmp.path())], &[]);
    assert_eq!(man.code, Some(0), "{man:?}");
    // roff escapes hyphens (`test\-alert`): compare the plain text.
    let top = std::fs::read_to_string(tmp.path().join("lubdub.1"))
        .expect("lubdub.1")
        .replace("\\-", "-");
    for command in &commands {
        let flags = flags_of(command);
        let page = tmp.path().join(format!("lubdub-{command}.1"));
        let page = std::fs::read_to_string(&page).unwrap_or_else(|e| panic!("{command}: {e}"));
        assert!(top.contains(command.as_str()), "lubdub(1) lists {command}");
        for (shell, script) in &scripts {
            assert!(script.contains(command.as_str()), "{shell} lacks {command}");
            // bash completes per command: its flags are in its own case.
            let scope = if *shell == "bash" {
                // clap_complete names a hyphen in a command `__subcmd__`.
                let case = format!("lubdub__subcmd__{})", command.replace('-', "__subcmd__"));
                let start = script.find(&case).unwrap_or_else(|| panic!("{case}"));
                let end = start + script[start..].find(";;").expect("end of case");
                &script[start..end]
            } else {
                script.as_str()
            };
            for flag in &flags {
                assert!(scope.contains(flag.as_str()), "{shell}: {command} --{flag}");
            }
        }
        for flag in &flags {
            // roff writes a dash as `\-`.
            let roff = format!("\\-\\-{}", flag.replace('-', "\\-"));
            assert!(page.contains(&roff), "man page of {command}: --{flag}");
        }
    }
}
