//! Integration tests: the real `lubdub` binary on loopback.

mod api;
mod core;
mod dashboard;
mod metrics;
mod util;
