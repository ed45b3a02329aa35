//! lubdub: a heartbeat monitor that tells you, at each host's own deadline,
//! which of your computers has stopped working.
//!
//! Every monitored host runs a [`client`] that sends a tiny UDP beat
//! ([`protocol`]) every few seconds; the [`server`] remembers when it last
//! heard from each host and reports state changes the moment a host's
//! deadline passes:
//!
//! ```text
//!  client ──UDP beat──▶ ingest ──▶ registry ──▶ detector ──▶ events ──▶ console
//!                       (socket,   (host id →    (deadlines,   (joined, late,
//!                        decode)    last seen)    states)       down, …)
//!                                      └──▶ HTTP: /healthz, /api/v1, /metrics, dashboard
//! ```
//!
//! Module map: [`protocol`] (wire format, no I/O), [`config`] (settings and
//! their documented defaults), [`client`] (beat loop), [`server`] (ingest,
//! registry, detector, events, HTTP, alert sinks), [`shutdown`] (signals),
//! [`duration`] (the `500ms` / `10s` / `2m` syntax), [`ratelimit`] (log
//! throttling), [`status`] (`lubdub status`), [`store`] (the registry and
//! recent events on disk, across restarts), [`auth`] (keys, signing and
//! verifying beats), [`detection`] (detector settings), [`simulate`]
//! (the detector simulator), [`loadgen`] (a simulated fleet, for
//! benchmarks).
#![warn(missing_docs)]

pub mod auth;
pub mod client;
pub mod config;
pub mod duration;
pub mod monitor;
pub mod protocol;
pub mod ratelimit;
pub mod server;
pub mod shutdown;
pub mod status;
pub mod store;
pub mod tools;
pub mod trace;
