//! Integration tests: the real `lubdub` binary on loopback.

mod alerts;
mod config;
mod core;
mod ops;
mod persistence;
mod status;
mod util;
