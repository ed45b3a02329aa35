//! Tools built on the library, at the top of the arrows: the detector
//! simulator ([`simulate`], behind `lubdub simulate`) and the load
//! generator ([`loadgen`], a simulated fleet for benchmarks and
//! `lubdub loadgen`).

mod engine;
mod fleet;
pub mod loadgen;
pub mod simulate;
