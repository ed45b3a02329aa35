//! Integration tests: the real `lubdub` binary on loopback.

mod core;
mod loadgen;
mod util;
