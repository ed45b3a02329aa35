//! Integration tests: the real `lubdub` binary on loopback.

mod core;
mod persistence;
mod util;
