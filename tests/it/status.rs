//! `lubdub status` against a live server: table, colour, `--json`,
//! `--state`, and all four `--check` exit codes.
//! See: issue 3.

use crate::util::{Server, client, closed_port, run, wait_until};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(15);

#[test]
fn check_exit_codes_follow_the_fleet() {
    // Late after 1 s, down after 4 s of silence: with 100 ms beats the
    // living host keeps a wide margin on a loaded machine, and the silent
    // one stays `late` for 3 s, long enough to ask about it.
    let server = Server::start(&["--timeout", "4s", "--late-after", "1s"]);
    let http = server.http.to_string();
    let check = || run(&["status", "--server", &http, "--check"], &[]);
    let _alive = client(&[server.udp], "alive", &[]);
    let mut doomed = client(&[server.udp], "doomed", &[]);
    assert!(
        wait_until(WAIT, || server.kinds_of("alive") == ["joined"]
            && server.kinds_of("doomed") == ["joined"]),
        "{:?}",
        server.events()
    );

    let ok = check();
    assert_eq!(ok.code, Some(0), "{ok:?}");
    assert_eq!(
        ok.stdout,
        "LUBDUB OK - 2 hosts, none late or down | up=2 late=0 down=0 left=0 paused=0 maintenance=0 unreachable=0\n"
    );

    doomed.kill();
    for (kind, code, summary) in [
        (
            "late",
            1,
            "LUBDUB WARNING - 1 late (doomed); 2 hosts | up=1 late=1 down=0",
        ),
        (
            "down",
            2,
            "LUBDUB CRITICAL - 1 down (doomed); 2 hosts | up=1 late=0 down=1",
        ),
    ] {
        assert!(server.wait_event("doomed", kind, WAIT));
        let answer = check();
        assert_eq!(answer.code, Some(code), "{answer:?}");
        assert!(answer.stdout.starts_with(summary), "{answer:?}");
    }
    // The check covers only the states asked for.
    let up_only = run(
        &["status", "--server", &http, "--check", "--state", "up"],
        &[],
    );
    assert_eq!(up_only.code, Some(0), "{up_only:?}");
    assert_eq!(server.kinds_of("alive"), ["joined"], "alive never changed");

    let unreachable = closed_port().to_string();
    let unknown = run(&["status", "--server", &unreachable, "--check"], &[]);
    assert_eq!(unknown.code, Some(3), "{unknown:?}");
    assert!(
        unknown.stdout.starts_with(&format!(
            "LUBDUB UNKNOWN - cannot reach http://{unreachable}/api/v1/hosts: "
        )),
        "{unknown:?}"
    );
    assert_eq!(unknown.stdout.lines().count(), 1, "one line: {unknown:?}");
    // An answer that is not the host list is unknown too, not a crash.
    let wrong_path = format!("http://{http}/no/such/api");
    let wrong = run(&["status", "--server", &wrong_path, "--check"], &[]);
    assert_eq!(wrong.code, Some(3), "{wrong:?}");
    assert!(wrong.stdout.contains("answered 404"), "{wrong:?}");
}

#[test]
fn table_json_and_state_filter() {
    let server = Server::start(&["--timeout", "1s"]);
    let http = server.http.to_string();
    let _web = client(&[server.udp], "web-1", &[]);
    let mut db = client(&[server.udp], "db-1", &[]);
    assert!(server.wait_event("web-1", "joined", WAIT));
    assert!(server.wait_event("db-1", "joined", WAIT));
    db.kill();
    assert!(server.wait_event("db-1", "down", WAIT));

    // Piped: plain text, aligned columns, a count line.
    let table = run(&["status", "--server", &http], &[]);
    assert_eq!(table.code, Some(0), "{table:?}");
    assert!(!table.stdout.contains('\x1b'), "no colour in a pipe");
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{}", table.stdout);
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        ["HOST", "STATE", "FOR", "SILENT", "ADDR", "BEATS", "LOSSES"]
    );
    let db_row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(&db_row[..2], ["db-1", "down"], "{}", table.stdout);
    assert!(db_row[4].starts_with("127.0.0.1:"), "{}", table.stdout);
    let web_row: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(&web_row[..2], ["web-1", "up"], "{}", table.stdout);
    assert!(
        web_row[5].parse::<u64>().expect("beats") > 0,
        "{}",
        table.stdout
    );
    assert_eq!(lines[3], "2 hosts: 1 up, 1 down");
    // The state column starts at the same place on every line.
    let state_at = lines[0].find("STATE").expect("STATE");
    assert_eq!(lines[1].find("down"), Some(state_at));
    assert_eq!(lines[2].find("up"), Some(state_at));

    // Forced colour (as a terminal would get): the states are styled.
    let coloured = run(&["status", "--server", &http], &[("CLICOLOR_FORCE", "1")]);
    assert!(
        coloured.stdout.contains("\x1b[31m") && coloured.stdout.contains("\x1b[32m"),
        "{:?}",
        coloured.stdout
    );
    let no_colour = run(
        &["status", "--server", &http],
        &[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "1")],
    );
    assert!(!no_colour.stdout.contains('\x1b'), "NO_COLOR wins");

    let down = run(&["status", "--server", &http, "--state", "down"], &[]);
    let lines: Vec<&str> = down.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", down.stdout);
    assert!(lines[1].starts_with("db-1 "), "{}", down.stdout);
    assert_eq!(lines[2], "1 host: 1 down");

    let json = run(&["status", "--server", &http, "--json"], &[]);
    assert_eq!(json.code, Some(0), "{json:?}");
    let all: serde_json::Value = serde_json::from_str(&json.stdout).expect("json");
    let all = all.as_array().expect("array");
    assert_eq!(all.len(), 2);
    assert_eq!(all[0]["id"], "db-1");
    assert_eq!(all[1]["state"], "up");
    assert!(
        all[1]["last_seen"]
            .as_str()
            .expect("last_seen")
            .ends_with('Z')
    );

    let filtered = run(
        &["status", "--http", &http, "--json", "--state", "late,down"],
        &[],
    );
    let filtered: serde_json::Value = serde_json::from_str(&filtered.stdout).expect("json");
    assert_eq!(filtered.as_array().map(Vec::len), Some(1), "{filtered}");
    assert_eq!(filtered[0]["id"], "db-1");

    let bad_state = run(&["status", "--server", &http, "--state", "dead"], &[]);
    assert_eq!(bad_state.code, Some(2), "usage error: {bad_state:?}");
    assert!(bad_state.stderr.contains("dead"), "{bad_state:?}");

    let unreachable = closed_port().to_string();
    let failed = run(&["status", "--server", &unreachable], &[]);
    assert_eq!(failed.code, Some(1), "{failed:?}");
    assert!(failed.stdout.is_empty());
    assert!(
        failed.stderr.starts_with("lubdub: cannot reach ") && failed.stderr.lines().count() == 1,
        "{failed:?}"
    );
}
