//! `lubdub test-alert [--sink NAME]`: asks a running server to send a test
//! alert through its sinks (`POST /api/v1/test-alert`) and prints, per sink,
//! whether it was delivered and why not. Exits 1 unless every sink
//! delivered.

use lubdub::config::ServerConfig;
use lubdub::duration;
use lubdub::server::sinks::api::TestResult;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Flags of `lubdub test-alert`.
#[derive(clap::Args)]
pub struct TestAlertArgs {
    /// The server's HTTP API: HOST:PORT, or a URL such as http://mon:43278/.
    #[arg(long, visible_alias = "http", value_name = "ADDR",
          default_value_t = ServerConfig::default().http.to_string())]
    server: String,
    /// Only this sink (default: every sink).
    #[arg(long, value_name = "NAME")]
    sink: Option<String>,
    /// A file holding the server's API token (its `api_token`).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Give up after this long (sinks that retry may take a while).
    #[arg(long, value_parser = duration::parse, default_value = "60s")]
    timeout: Duration,
}

/// Runs the command (a blocking request, so without the runtime): prints
/// one line per sink.
pub fn run(args: TestAlertArgs) -> anyhow::Result<ExitCode> {
    let code = match request(&args) {
        Ok(results) => {
            let mut ok = true;
            for r in &results {
                match &r.error {
                    None if r.delivered => println!("{}: delivered", r.sink),
                    error => {
                        ok = false;
                        println!("{}: failed: {}", r.sink, error.as_deref().unwrap_or("?"));
                    }
                }
            }
            if results.is_empty() {
                println!("the server has no sinks");
            }
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => anyhow::bail!("{e}"),
    };
    Ok(code)
}

fn request(args: &TestAlertArgs) -> Result<Vec<TestResult>, String> {
    let api = super::http::Api::new(&args.server, args.token_file.as_deref(), args.timeout)?;
    let url = api.url("/api/v1/test-alert");
    let request = api
        .authorized(api.agent().post(&url))
        .header("Accept", "application/json");
    let request = match &args.sink {
        Some(sink) => request.query("sink", sink),
        None => request,
    };
    let mut response = request
        .send_empty()
        .map_err(|e| format!("cannot reach {url}: {e}"))?;
    let status = response.status().as_u16();
    let text = response
        .body_mut()
        .read_to_string()
        .map_err(|e| format!("reading the answer of {url}: {e}"))?;
    if status != 200 {
        return Err(super::http::refusal(&url, status, &text));
    }
    serde_json::from_str(&text).map_err(|e| format!("{url}: unexpected answer: {e}"))
}
