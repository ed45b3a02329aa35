//! Integration tests: the real `lubdub` binary on loopback.

mod alerts;
mod config;
mod core;
mod ops;
mod persistence;
mod security;
mod status;
mod util;
