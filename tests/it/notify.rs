//! Notifications: webhook templates, one test per preset (the exact request
//! against a recorder, and the down -> recovered pairing of the paging
//! services), digests, reminders, `lubdub test-alert`, `GET /api/v1/sinks`
//! and secrets read from files that appear in no output.
//! See: issue 18.

use crate::util::{Recorded, Recorder, Server, client, run, run_server, write_file};
use serde_json::{Value, json};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(15);

/// Starts a server (1 s timeout) with `sinks` as its config file.
fn server_with(sinks: &str) -> Server {
    Server::with_config(sinks, &["--timeout", "1s"])
}

/// Runs host `web-1` through joined -> down -> recovered against a server
/// whose only sink is the webhook `sink` (TOML lines; `{url}` is the
/// recorder), and returns the requests once `want` have come.
fn down_and_up(sink: &str, want: usize) -> Vec<Recorded> {
    let recorder = Recorder::answering(200);
    let mut sink = sink.replace("{url}", &recorder.url(""));
    if !sink.contains("events =") {
        // Not mass-silence: the messages of these tests name a host.
        sink.push_str("\nevents = [\"down\", \"recovered\"]");
    }
    let server = server_with(&format!("[[server.sinks.webhook]]\nretries = 0\n{sink}\n"));
    let _again = server.down_and_recover("web-1", WAIT);
    let requests = recorder.wait_for(want, WAIT);
    assert_eq!(requests.len(), want, "{requests:#?}");
    requests
}

/// The value of the request header `name` (lower case).
fn header<'a>(request: &'a Recorded, name: &str) -> Option<&'a str> {
    request.headers.get(name).map(String::as_str)
}

/// Checks the parts every preset request shares and returns the body.
fn post_json(request: &Recorded, path: &str) -> Value {
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, path);
    assert_eq!(header(request, "content-type"), Some("application/json"));
    request.body.clone()
}

/// The body like [`post_json`], with its summary at `pointer` checked and
/// replaced: a summary has a measured silence in it, so this checks its
/// start and puts `SUMMARY` in its place.
fn post_summary(request: &Recorded, path: &str, pointer: &str, start: &str) -> Value {
    let mut body = post_json(request, path);
    let field = body.pointer_mut(pointer).expect("field present");
    let text = field.as_str().expect("text").to_string();
    assert!(text.starts_with(start), "{text:?}");
    *field = json!("SUMMARY");
    body
}

const MESSAGE: &str = r#"message = "{{ kind }} {{ host }}""#;

/// The chat presets whose request is the message in a fixed JSON object:
/// each row's sink settings, the path it posts to, and the body with
/// `TEXT` standing for the message.
#[test]
fn chat_presets_post_the_message() {
    let hook = |preset: &str, url: &str| format!("preset = \"{preset}\"\nurl = \"{{url}}{url}\"");
    let telegram = hook("telegram", "") + "\ntoken = \"123:ABC\"\nchat_id = \"-10042\"";
    let text = r#"{"text": "TEXT"}"#;
    for (sink, path, body) in [
        (hook("slack", "/hook"), "/hook", text),
        (hook("mattermost", "/hook"), "/hook", text),
        (hook("googlechat", "/hook"), "/hook", text),
        (
            hook("discord", "/api/webhooks/1/tok"),
            "/api/webhooks/1/tok",
            r#"{"content": "TEXT"}"#,
        ),
        (
            telegram,
            "/bot123:ABC/sendMessage",
            r#"{"chat_id": "-10042", "text": "TEXT"}"#,
        ),
    ] {
        let requests = down_and_up(&format!("{sink}\n{MESSAGE}"), 2);
        for (request, text) in requests.iter().zip(["down web-1", "recovered web-1"]) {
            let want: Value = serde_json::from_str(&body.replace("TEXT", text)).expect("json");
            assert_eq!(post_json(request, path), want, "{sink}");
        }
    }
}

#[test]
fn teams_posts_an_adaptive_card() {
    let sink = format!("preset = \"teams\"\nurl = \"{{url}}/workflows/x\"\n{MESSAGE}");
    let requests = down_and_up(&sink, 2);
    let text = "/attachments/0/content/body/0/text";
    let body = post_summary(
        &requests[0],
        "/workflows/x",
        text,
        "host web-1 is down: silent for ",
    );
    assert_eq!(
        body,
        json!({
            "type": "message",
            "attachments": [{
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": null,
                "content": {
                    "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                    "type": "AdaptiveCard",
                    "version": "1.2",
                    "body": [
                        {"type": "TextBlock", "text": "SUMMARY", "weight": "Bolder", "size": "Medium", "wrap": true},
                        {"type": "TextBlock", "text": "down web-1", "wrap": true},
                    ],
                },
            }],
        })
    );
}

/// ntfy and Gotify: the token in a header, the summary as the title; each
/// row's sink, token header, path, `down` body and `recovered` priority.
#[test]
fn ntfy_and_gotify_send_the_token_and_a_titled_message() {
    let ntfy = "preset = \"ntfy\"\nurl = \"{url}/\"\ntopic = \"lubdub-alerts\"\ntoken = \"tk_abc\"";
    let gotify = "preset = \"gotify\"\nurl = \"{url}/gotify\"\ntoken = \"AppT0ken\"";
    let ntfy_down = json!({"topic": "lubdub-alerts", "title": "SUMMARY", "message": "down web-1",
                           "priority": 4, "tags": ["rotating_light"]});
    let gotify_down = json!({"title": "SUMMARY", "message": "down web-1", "priority": 8});
    let ntfy_key = ("authorization", "Bearer tk_abc");
    let gotify_key = ("x-gotify-key", "AppT0ken");
    let rows = [
        (ntfy, ntfy_key, "/", ntfy_down, 3),
        (gotify, gotify_key, "/gotify/message", gotify_down, 4),
    ];
    let (down_title, up_title) = (
        "host web-1 is down: silent for ",
        "host web-1 recovered after ",
    );
    for (sink, (name, value), path, down_body, up_priority) in rows {
        let requests = down_and_up(&format!("{sink}\n{MESSAGE}"), 2);
        assert_eq!(header(&requests[0], name), Some(value), "{sink}");
        let down = post_summary(&requests[0], path, "/title", down_title);
        assert_eq!(down, down_body);
        let up = post_summary(&requests[1], path, "/title", up_title);
        assert_eq!(up["priority"], up_priority, "{up}");
    }
}

#[test]
fn pagerduty_triggers_and_resolves_one_incident_per_host() {
    let sink = "preset = \"pagerduty\"\nurl = \"{url}\"\ntoken = \"R0UTINGKEY\"";
    let requests = down_and_up(sink, 2);
    let summary = "/payload/summary";
    let mut trigger = post_summary(&requests[0], "/v2/enqueue", summary, "host web-1 is down");
    let details = trigger["payload"]["custom_details"].take();
    assert_eq!(details["event"]["kind"], "down");
    let timestamp = trigger["payload"]["timestamp"].take();
    assert!(timestamp.as_str().is_some_and(|t| t.ends_with('Z')));
    assert_eq!(
        trigger,
        json!({
            "routing_key": "R0UTINGKEY",
            "event_action": "trigger",
            "dedup_key": "lubdub/web-1",
            "payload": {"summary": "SUMMARY", "source": "web-1", "severity": "critical",
                        "timestamp": null, "component": "lubdub", "custom_details": null},
        })
    );
    assert_eq!(
        post_json(&requests[1], "/v2/enqueue"),
        json!({"routing_key": "R0UTINGKEY", "event_action": "resolve", "dedup_key": "lubdub/web-1"})
    );
}

#[test]
fn opsgenie_creates_and_closes_by_alias() {
    let sink = "preset = \"opsgenie\"\nurl = \"{url}\"\ntoken = \"genie-key\"";
    let requests = down_and_up(sink, 2);
    for request in &requests {
        assert_eq!(header(request, "authorization"), Some("GenieKey genie-key"));
    }
    let mut create = post_summary(&requests[0], "/v2/alerts", "/message", "host web-1 is down");
    let description = create["description"].take();
    assert!(
        description
            .as_str()
            .is_some_and(|d| d.contains("address: 127.0.0.1:"))
    );
    assert_eq!(
        create,
        json!({"message": "SUMMARY", "alias": "lubdub/web-1", "description": null,
               "source": "lubdub", "entity": "web-1", "tags": ["lubdub", "down"], "priority": "P1"})
    );
    let close = &requests[1];
    assert_eq!(close.query, "identifierType=alias");
    let path = "/v2/alerts/lubdub%2Fweb-1/close";
    let body = post_summary(close, path, "/note", "host web-1 recovered");
    assert_eq!(body, json!({"source": "lubdub", "note": "SUMMARY"}));
}

#[test]
fn templates_shape_body_headers_and_query() {
    let sink = r#"url = "{url}/t"
events = ["down"]
body = '{"who": {{ host|tojson }}, "what": {{ kind|tojson }}, "n": {{ events|length }}}'
headers = { "X-Host" = "{{ host }}" }
query = { kind = "{{ kind }}" }"#;
    let requests = down_and_up(sink, 1);
    assert_eq!(
        post_json(&requests[0], "/t"),
        json!({"who": "web-1", "what": "down", "n": 1})
    );
    assert_eq!(requests[0].query, "kind=down");
    assert_eq!(header(&requests[0], "x-host"), Some("web-1"));
}

#[test]
fn a_bad_template_is_one_line_at_start() {
    let tmp = tempfile::tempdir().expect("tempdir");
    for (body, expect) in [
        ("{{ host ", "sinks.webhook.body: sink \"webhook0\": "),
        // Mass silences have no host: refused since the sink takes them.
        ("{\"h\": \"{{ host }}\"}", "fails on a mass-silence event"),
        ("{\"text\": {{ host }}}", "renders invalid JSON"),
    ] {
        let config = write_file(
            tmp.path(),
            "bad.toml",
            &format!("[[server.sinks.webhook]]\nurl = \"http://127.0.0.1:9/\"\nbody = '{body}'\n"),
        );
        let data = tmp.path().join("data");
        let ran = run_server(&config, &data);
        assert_eq!(ran.code, Some(1), "{body}: {ran:?}");
        let stderr = ran.stderr.trim_end();
        assert!(stderr.contains(expect), "{body}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }
}

#[test]
fn three_downs_in_a_window_are_one_digest() {
    let recorder = Recorder::answering(200);
    let server = server_with(&format!(
        "[[server.sinks.webhook]]\npreset = \"slack\"\nurl = \"{}\"\nevents = [\"down\"]\n\
             group_wait = \"1500ms\"\nmessage = \"{{{{ summary }}}}\"\n",
        recorder.url("/digest")
    ));
    let mut clients: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|h| client(&[server.udp], h, &[]))
        .collect();
    for host in ["a", "b", "c"] {
        assert!(server.wait_event(host, "joined", WAIT));
    }
    for c in &mut clients {
        c.kill();
    }
    for host in ["a", "b", "c"] {
        assert!(server.wait_event(host, "down", WAIT));
    }
    let requests = recorder.wait_for(1, WAIT);
    // Nothing more comes after the window (bounded wait, then the count).
    std::thread::sleep(Duration::from_millis(2000));
    let requests = if requests.len() == 1 {
        recorder.requests()
    } else {
        requests
    };
    assert_eq!(requests.len(), 1, "{requests:#?}");
    let text = requests[0].body["text"].as_str().expect("text").to_string();
    assert!(text.starts_with("3 hosts down: "), "{text}");
    let mut hosts: Vec<&str> = text["3 hosts down: ".len()..].split(", ").collect();
    hosts.sort();
    assert_eq!(hosts, ["a", "b", "c"]);
}

#[test]
fn a_host_that_stays_down_is_reminded_until_it_recovers() {
    let recorder = Recorder::answering(200);
    let server = server_with(&format!(
        "[[server.sinks.webhook]]\nurl = \"{}\"\nevents = [\"down\"]\nrepeat = \"300ms\"\n",
        recorder.url("/r")
    ));
    let mut beating = client(&[server.udp], "web-1", &[]);
    assert!(server.wait_event("web-1", "joined", WAIT));
    beating.kill();
    assert!(server.wait_event("web-1", "down", WAIT));
    let requests = recorder.wait_for(3, WAIT);
    assert!(requests.len() >= 3, "{requests:#?}");
    assert_eq!(requests[0].body["kind"], "down");
    assert_eq!(requests[0].body.get("reminder"), None);
    for reminder in &requests[1..3] {
        assert_eq!(reminder.body["kind"], "down");
        assert_eq!(reminder.body["reminder"], true);
        assert_eq!(reminder.body["host"], "web-1");
    }
    let _again = client(&[server.udp], "web-1", &[]);
    assert!(server.wait_event("web-1", "recovered", WAIT));
    // Recovered is not one of the sink's events, but it ends the reminders.
    let after = recorder.requests().len();
    std::thread::sleep(Duration::from_millis(1000));
    assert!(
        recorder.requests().len() <= after + 1,
        "reminders went on after recovery: {:#?}",
        recorder.requests()
    );
}

#[test]
fn test_alert_reports_a_good_and_a_failing_sink() {
    let good = Recorder::answering(200);
    let bad = Recorder::answering(500);
    let tmp = tempfile::tempdir().expect("tempdir");
    let token = write_file(tmp.path(), "api-token", "t0ken\n");
    let server = server_with(&format!(
        "[server]\napi_token = \"t0ken\"\n\
             [[server.sinks.webhook]]\nname = \"good\"\nurl = \"{}\"\n\
             [[server.sinks.webhook]]\nname = \"bad\"\nurl = \"{}\"\nretries = 0\n",
        good.url("/ok"),
        bad.url("/fail")
    ));
    let http = server.http.to_string();
    let ran = run(
        &["test-alert", "--server", &http, "--token-file", &token],
        &[],
    );
    assert_eq!(ran.code, Some(1), "{ran:?}");
    assert_eq!(
        ran.stdout,
        "good: delivered\nbad: failed: answered 500 Internal Server Error\n"
    );
    let sent = good.requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].body["kind"], "test");
    assert_eq!(
        sent[0].body["message"],
        "test alert from lubdub (sink good)"
    );
    // One sink only, and a good one: exit 0.
    let ran = run(
        &[
            "test-alert",
            "--server",
            &http,
            "--token-file",
            &token,
            "--sink",
            "good",
        ],
        &[],
    );
    assert_eq!(
        (ran.code, ran.stdout.as_str()),
        (Some(0), "good: delivered\n")
    );
    // Without the token: refused.
    let ran = run(&["test-alert", "--server", &http], &[]);
    assert_eq!(ran.code, Some(1));
    assert!(ran.stderr.contains("401"), "{ran:?}");
    // The sinks' list shows both, with their latest outcomes.
    let sinks = server.get_json("/api/v1/sinks");
    assert_eq!(sinks[0]["name"], "good");
    assert_eq!(sinks[0]["kind"], "webhook");
    assert!(sinks[0]["last_success"].is_string(), "{sinks}");
    assert!(sinks[0]["last_failure"].is_null(), "{sinks}");
    assert_eq!(sinks[1]["name"], "bad");
    assert_eq!(sinks[1]["last_error"], "answered 500 Internal Server Error");
    assert_eq!(sinks[1]["queue"], 0);
}

#[test]
fn secrets_from_files_appear_in_no_output() {
    let recorder = Recorder::answering(200);
    let tmp = tempfile::tempdir().expect("tempdir");
    let creds = tmp.path().join("creds");
    std::fs::create_dir(&creds).expect("mkdir");
    let url_secret = format!("{}/hook/SECRET-IN-URL", recorder.url(""));
    write_file(&creds, "slack-url", &format!("{url_secret}\n"));
    write_file(&creds, "bearer", "SECRET-BEARER\n");
    // Sent to a closed port: the delivery error is logged, without the URL.
    let closed = crate::util::closed_port();
    let config = write_file(
        tmp.path(),
        "lubdub.toml",
        &format!(
            "[[server.sinks.webhook]]\nname = \"chat\"\npreset = \"slack\"\nurl_file = \"slack-url\"\n\
             [[server.sinks.webhook]]\nname = \"dead\"\nurl = \"http://{closed}/x?key=SECRET-INLINE\"\n\
             bearer_token_file = \"{}\"\nretries = 0\n",
            creds.join("bearer").display()
        ),
    );
    let env = [("CREDENTIALS_DIRECTORY", creds.to_str().expect("utf-8"))];
    let printed = run(&["server", "--config", &config, "--print-config"], &env);
    assert_eq!(printed.code, Some(0), "{printed:?}");
    assert!(
        printed.stdout.contains("url_file = \"slack-url\""),
        "{}",
        printed.stdout
    );
    assert!(printed.stdout.contains("<redacted>"), "{}", printed.stdout);
    let data = tmp.path().join("data");
    let dir = data.to_str().expect("utf-8");
    let proc = crate::util::Proc::spawn_env(
        &[
            "server",
            "--config",
            &config,
            "--data-dir",
            dir,
            "--timeout",
            "1s",
            "-v",
            "--listen",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
        ],
        &env,
    );
    let http = proc.wait_addrs().1.to_string();
    let ran = run(&["test-alert", "--server", &http], &[]);
    assert_eq!(ran.code, Some(1), "the dead sink fails: {ran:?}");
    assert!(
        ran.stdout.starts_with("chat: delivered\ndead: failed: "),
        "{ran:?}"
    );
    // The secret URL from the file was used.
    let sent = recorder.requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].path, "/hook/SECRET-IN-URL");
    let api = ureq::get(&format!("http://{http}/api/v1/sinks"))
        .call()
        .expect("GET sinks")
        .body_mut()
        .read_to_string()
        .expect("body");
    assert!(
        proc.wait_stderr(WAIT, "webhook delivery failed"),
        "{:?}",
        proc.stderr()
    );
    let everything = [
        printed.stdout,
        printed.stderr,
        ran.stdout,
        ran.stderr,
        api,
        proc.stdout().join("\n"),
        proc.stderr().join("\n"),
    ]
    .join("\n");
    for secret in ["SECRET-IN-URL", "SECRET-BEARER", "SECRET-INLINE"] {
        assert!(
            !everything.contains(secret),
            "{secret} printed:\n{everything}"
        );
    }
}
