//! Integration tests: the real `lubdub` binary on loopback.

mod alerts;
mod api;
mod beat_attacks;
mod client;
mod commands;
mod config;
mod core;
mod dashboard;
mod detection;
mod email;
mod hardening;
mod keys;
mod loadgen;
mod metrics;
mod mixin;
mod netns;
mod notify;
mod operating;
mod ops;
mod package;
mod persistence;
mod reload;
mod security;
mod status;
mod util;
mod watchdog;
