//! Integration tests: the real `lubdub` binary on loopback.

mod core;
mod detection;
mod netns;
mod util;
