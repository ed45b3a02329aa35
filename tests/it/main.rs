//! Integration tests: the real `lubdub` binary on loopback.

mod core;
mod netns;
mod util;
