//! lubdub: a heartbeat monitor that tells you, at each host's own deadline,
//! which of your computers has stopped working.
//!
//! Every monitored host runs a [`client`] that sends a tiny UDP beat
//! ([`protocol`]) every few seconds; the [`server`] feeds them to the pure
//! [`monitor`] core, which reports state changes the moment a host's
//! deadline passes:
//!
//! ```text
//!  client ──UDP beat──▶ ingest ──▶ fleet ──────────▶ events ──▶ console, store, sinks
//!                       (socket,   (the one lock    (history,    (each event carries
//!                        decode,    around the       broadcast)   what a sink needs)
//!                        admit)     monitor)
//!                                     ├──▶ monitor: registry, deadline queue, policy,
//!                                     │    beats, flapping (pure: takes `now`)
//!                                     ├──▶ store (survives restarts)
//!                                     └──▶ HTTP: /healthz, /api/v1, /metrics, dashboard
//! ```
//!
//! Modules, bottom to top; each imports only from those before it
//! (checked by a test, see `docs/ARCHITECTURE.md`):
//!
//! - [`duration`] (the `500ms` / `10s` / `2m` syntax), [`ratelimit`] (log
//!   throttling), [`shutdown`] (signals): small utilities; [`labels`] (a
//!   host's `team=web` labels), [`select`] (choosing hosts by id glob,
//!   label, network) and [`schedule`] (cron maintenance windows in a time
//!   zone, pure);
//! - [`protocol`] (wire format, no I/O) and [`auth`] (keys, signing and
//!   verifying beats);
//! - [`monitor`]: the pure core (registry, deadlines, timeout policy, state
//!   machine, beat statistics), no I/O, no clock, no logging;
//! - [`config`]: settings, their documented defaults, and `validate()` into
//!   the checked type the server takes; [`trace`]: the beat trace format;
//! - [`store`]: the registry and recent events on disk, across restarts;
//! - [`server`]: ingest, the fleet (the one owner of the monitor's lock),
//!   timer, events, persistence, HTTP, metrics, alert sinks;
//! - [`client`] (beat loop), [`tools`] (the detector simulator, the load
//!   generator): at the top, under the binary (`src/main.rs`, `src/cli/`:
//!   one file per subcommand, `lubdub status` among them).
#![warn(missing_docs)]

pub mod auth;
pub mod client;
pub mod config;
pub mod duration;
pub mod labels;
pub mod monitor;
pub mod protocol;
pub mod ratelimit;
pub mod schedule;
pub mod select;
pub mod server;
pub mod shutdown;
pub mod store;
pub mod tools;
pub mod trace;

#[cfg(test)]
mod arrows;
