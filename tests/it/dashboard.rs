//! The dashboard in a real browser: headless Chromium loads `/` from the
//! live server and the test reads the DOM it built, and takes a screenshot.
//! See: issue 3.

use crate::util::{Server, beat, fleet, packet, send_packets, wait_until};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(10);

/// Runs headless Chromium on `url` with `args` (e.g. `--dump-dom`) and
/// returns its stdout. Bounded: killed after 90 s.
fn chromium(profile: &Path, url: &str, args: &[&str]) -> String {
    let out_path = profile.with_extension("out");
    let mut child = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        // Page timers run on virtual time: the page polls the API a few
        // times, then Chromium dumps what it shows.
        .arg("--virtual-time-budget=5000")
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).expect("stdout file"))
        .stderr(Stdio::null())
        .spawn()
        .expect("chromium is installed by scripts/test");
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within 90 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "chromium failed: {status}");
    std::fs::read_to_string(&out_path).expect("chromium output")
}

/// The opening tag of the table row of `host` in a dumped DOM.
fn row_of<'a>(dom: &'a str, host: &str) -> Option<&'a str> {
    let at = dom.find(&format!("data-id=\"{host}\""))?;
    let start = dom[..at].rfind("<tr")?;
    let end = at + dom[at..].find('>')?;
    Some(&dom[start..=end])
}

/// Text of the element with `id` (its first text node).
fn text_of<'a>(dom: &'a str, id: &str) -> Option<&'a str> {
    let at = dom.find(&format!("id=\"{id}\""))?;
    let open_end = at + dom[at..].find('>')? + 1;
    let close = open_end + dom[open_end..].find('<')?;
    Some(&dom[open_end..close])
}

/// Sends v1 beats for `host` with counters `0..=last` except `lost`, as
/// one client run: the server counts exactly those gaps.
fn beats_with_gaps(server: &Server, host: &str, last: u64, lost: &[u64]) {
    let run = 1_800_000_000u64 << 32;
    let packets: Vec<Vec<u8>> = (0..=last)
        .filter(|c| !lost.contains(c))
        .map(|counter| packet(&beat(host, run + counter), None))
        .collect();
    // Spaced out so no datagram is lost in a burst: a loss would be
    // counted and spoil the exact expectation below.
    send_packets(server.udp, &packets, 1);
}

#[test]
fn dashboard_shows_the_fleet_a_host_going_down_and_beat_gaps() {
    // 2 s: no host but the killed one may go late while the browser runs.
    let server = Server::start(&["--timeout", "2s"]);
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut clients = fleet(
        &server,
        &["web-1", "web-2", "db-1", "api-1", "cache-1", "queue-1"],
    );
    let home = server.url("/");

    let before = chromium(&tmp.path().join("p1"), &home, &["--dump-dom"]);
    let row = row_of(&before, "web-2").unwrap_or_else(|| panic!("web-2 row in {before}"));
    assert!(row.contains("data-state=\"up\""), "{row}");
    assert_eq!(text_of(&before, "n-up"), Some("6"));
    assert_eq!(text_of(&before, "n-down"), Some("0"));

    clients[1].kill(); // no goodbye: the host just stops
    assert!(server.wait_event("web-2", "down", WAIT));
    let after = chromium(&tmp.path().join("p2"), &home, &["--dump-dom"]);
    let row = row_of(&after, "web-2").unwrap_or_else(|| panic!("web-2 row in {after}"));
    assert!(row.contains("data-state=\"down\""), "{row}");
    assert!(row_of(&after, "web-1").is_some_and(|r| r.contains("data-state=\"up\"")));
    assert_eq!(text_of(&after, "n-down"), Some("1"));
    assert_eq!(text_of(&after, "n-up"), Some("5"));
    assert!(
        after.contains("class=\"k-down\">down<"),
        "down in the event list"
    );

    // Server-side filter: only the down host's row.
    let filtered = chromium(
        &tmp.path().join("p3"),
        &format!("{home}#state=down"),
        &["--dump-dom"],
    );
    assert!(row_of(&filtered, "web-2").is_some());
    assert!(row_of(&filtered, "web-1").is_none(), "filtered out");

    // A host that lost beats 5, 6 and 12 of 0..=20: its chart shows them.
    beats_with_gaps(&server, "lossy", 20, &[5, 6, 12]);
    assert!(wait_until(WAIT, || {
        server.get_json("/api/v1/hosts/lossy")["losses"] == 3
    }));
    let detail = chromium(
        &tmp.path().join("p4"),
        &format!("{home}#host=lossy"),
        &["--dump-dom"],
    );
    // The chart as rendered (the page's script holds the same markup as
    // text, so only the drawn <svg> is counted).
    let start = detail.find("<svg id=\"chart\"").expect("chart drawn");
    let chart = &detail[start..start + detail[start..].find("</svg>").expect("svg end")];
    assert_eq!(
        chart.matches("fill=\"#e5534b\"").count(),
        3,
        "one gap mark per lost beat: {chart}"
    );
    assert_eq!(chart.matches("fill=\"#3fb96b\"").count(), 18, "{chart}");
    assert!(detail.contains("last 21 beats: 18 received, 3 lost"));

    // Every state on the picture: a paused host and one that said goodbye.
    let paused = server.request("POST", "/api/v1/hosts/db-1/pause", None, None);
    assert_eq!(paused.status, 200);
    clients[0].signal(libc::SIGTERM);
    assert!(server.wait_event("web-1", "left", WAIT));
    assert!(server.wait_event("db-1", "paused", WAIT));
    let states = chromium(&tmp.path().join("p5"), &home, &["--dump-dom"]);
    for (host, state) in [("db-1", "paused"), ("web-1", "left"), ("api-1", "up")] {
        let row = row_of(&states, host).unwrap_or_else(|| panic!("{host} row in {states}"));
        assert!(row.contains(&format!("data-state=\"{state}\"")), "{row}");
    }
    assert_eq!(text_of(&states, "n-paused"), Some("1"));
    assert_eq!(text_of(&states, "n-left"), Some("1"));
    // web-2, and lossy, whose beats stopped.
    assert_eq!(text_of(&states, "n-down"), Some("2"));
    for kind in ["paused", "left"] {
        assert!(
            states.contains(&format!("class=\"k-{kind}\">{kind}<")),
            "{kind} in the event list"
        );
    }
    let shot = screenshot(&server, &tmp.path().join("p6"), "#host=lossy");
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 20_000,
        "{} bytes",
        png.len()
    );
}

/// Takes a 1400×860 screenshot of the dashboard into the test's temp
/// folder (and into `docs/dashboard.png` when LUBDUB_UPDATE_SCREENSHOT is
/// set, to refresh the README's picture).
fn screenshot(server: &Server, profile: &Path, fragment: &str) -> PathBuf {
    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    chromium(
        profile,
        &format!("{}{fragment}", server.url("/")),
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1400,860",
        ],
    );
    if std::env::var_os("LUBDUB_UPDATE_SCREENSHOT").is_some() {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/dashboard.png");
        std::fs::copy(&shot, docs).expect("update docs/dashboard.png");
    }
    shot
}
