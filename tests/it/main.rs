//! Integration tests: the real `lubdub` binary on loopback.

mod core;
mod security;
mod util;
