//! Integration tests: the real `lubdub` binary on loopback.

mod config;
mod core;
mod ops;
mod status;
mod util;
