//! Integration tests: the real `lubdub` binary on loopback.

mod alerts;
mod core;
mod util;
