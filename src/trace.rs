//! The beat trace: what `lubdub server --record FILE` writes (every v1
//! beat's arrival, compactly) and `lubdub simulate --trace` reads back to
//! tune the detector on real traffic. Below both the server and the tools,
//! so neither imports the other.

use crate::monitor::Observation;
use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::Path;
use std::time::{Duration, Instant};

/// Why a trace could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// Reading or writing failed.
    #[error("trace i/o")]
    Io(#[from] std::io::Error),
    /// A line is not in the trace format.
    #[error("line {line}: {reason}")]
    Format {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: &'static str,
    },
}

/// Header line of a trace file.
pub const TRACE_HEADER: &str = "# lubdub trace v1";

/// Writes the beat arrivals of a live server as a compact text trace:
/// `h INDEX INTERVAL_MS HOST_ID` the first time a host is seen, then
/// `b MILLIS INDEX SEQ` per beat (milliseconds since recording started).
pub struct Recorder {
    out: std::io::BufWriter<std::fs::File>,
    hosts: HashMap<Box<str>, u32>,
    start: Instant,
    failed: bool,
}

impl Recorder {
    /// Creates (or truncates) `path` and writes the header; beat times
    /// count from `start`.
    pub fn create(path: &Path, start: Instant) -> Result<Self, TraceError> {
        let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
        writeln!(out, "{TRACE_HEADER}")?;
        Ok(Self {
            out,
            hosts: HashMap::new(),
            start,
            failed: false,
        })
    }

    /// Records one beat (v1 beats only: legacy ones carry no sequence).
    /// After a write error it records nothing more.
    pub fn record(&mut self, beat: &Observation<'_>, at: Instant) -> Result<(), TraceError> {
        if self.failed {
            return Ok(());
        }
        let result = self.write(beat, at);
        self.failed = result.is_err();
        result
    }

    fn write(&mut self, beat: &Observation<'_>, at: Instant) -> Result<(), TraceError> {
        let Some(seq) = beat.seq else { return Ok(()) };
        let index = match self.hosts.get(beat.host_id) {
            Some(&index) => index,
            None => {
                let index = u32::try_from(self.hosts.len()).unwrap_or(u32::MAX);
                self.hosts.insert(beat.host_id.into(), index);
                // Host ids are printable without spaces (protocol checks).
                writeln!(self.out, "h {index} {} {}", beat.interval_ms, beat.host_id)?;
                index
            }
        };
        let ms = at.saturating_duration_since(self.start).as_millis();
        writeln!(self.out, "b {ms} {index} {seq}")?;
        Ok(())
    }

    /// Writes out what is buffered.
    pub fn flush(&mut self) -> Result<(), TraceError> {
        self.out.flush()?;
        Ok(())
    }
}

/// One host's arrivals in a trace: declared interval, (time, seq) pairs.
pub type HostTrace = (u32, Vec<(Duration, u64)>);

/// Reads a trace written by [`Recorder`].
pub fn read_trace(reader: impl BufRead) -> Result<Vec<(String, HostTrace)>, TraceError> {
    let mut hosts: Vec<(String, HostTrace)> = Vec::new();
    for (n, line) in reader.lines().enumerate() {
        let line = line?;
        let bad = |reason| TraceError::Format {
            line: n + 1,
            reason,
        };
        if n == 0 {
            if line != TRACE_HEADER {
                return Err(bad("not a lubdub trace (bad header)"));
            }
            continue;
        }
        let mut words = line.split(' ');
        match words.next() {
            Some("h") => {
                let index: usize = words
                    .next()
                    .and_then(|w| w.parse().ok())
                    .ok_or(bad("bad host index"))?;
                let interval: u32 = words
                    .next()
                    .and_then(|w| w.parse().ok())
                    .ok_or(bad("bad interval"))?;
                let id = words.next().ok_or(bad("missing host id"))?;
                if index != hosts.len() {
                    return Err(bad("host indexes must count up from 0"));
                }
                hosts.push((id.to_string(), (interval, Vec::new())));
            }
            Some("b") => {
                let mut num = || words.next().and_then(|w| w.parse::<u64>().ok());
                let (Some(ms), Some(index), Some(seq)) = (num(), num(), num()) else {
                    return Err(bad("a beat is `b MILLIS INDEX SEQ`"));
                };
                let host = usize::try_from(index)
                    .ok()
                    .and_then(|i| hosts.get_mut(i))
                    .ok_or(bad("beat of an undeclared host"))?;
                host.1.1.push((Duration::from_millis(ms), seq));
            }
            Some("") | None => {}
            Some(w) if w.starts_with('#') => {}
            Some(_) => return Err(bad("lines start with `h` or `b`")),
        }
    }
    Ok(hosts)
}
