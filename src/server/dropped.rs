//! Why a datagram was dropped: decided by the admission checks ([`guard`]
//! and decoding) and by the monitor (replays, the host limit), counted by
//! the metrics. Its own module so that all three name it without importing
//! each other.
//!
//! [`guard`]: super::guard

use crate::protocol::DecodeError;

/// Why a datagram was dropped, as counted in the metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Not a lubdub beat: bad magic, wrong length, bad host id, oversized.
    Malformed,
    /// A lubdub packet of a version this server does not speak.
    UnsupportedVersion,
    /// With keys: a beat without a tag.
    Unsigned,
    /// With keys: a tag whose MAC does not verify.
    BadMac,
    /// With keys: a tag naming a key id the server does not have.
    UnknownKey,
    /// With keys: a legacy `Thump!` from outside `legacy_networks`.
    Legacy,
    /// With keys: a sequence number seen before or too old (a replay).
    Replay,
    /// With keys: a send time further than `max_clock_skew` from ours.
    ClockSkew,
    /// A new host while `max_hosts` hosts are tracked.
    MaxHosts,
}

impl DropReason {
    /// Every reason, in metric order.
    pub const ALL: [DropReason; 9] = [
        DropReason::Malformed,
        DropReason::UnsupportedVersion,
        DropReason::Unsigned,
        DropReason::BadMac,
        DropReason::UnknownKey,
        DropReason::Legacy,
        DropReason::Replay,
        DropReason::ClockSkew,
        DropReason::MaxHosts,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::UnsupportedVersion => "unsupported_version",
            DropReason::Unsigned => "unsigned",
            DropReason::BadMac => "bad_mac",
            DropReason::UnknownKey => "unknown_key",
            DropReason::Legacy => "legacy",
            DropReason::Replay => "replay",
            DropReason::ClockSkew => "clock_skew",
            DropReason::MaxHosts => "max_hosts",
        }
    }

    /// Why a datagram that did not decode is dropped.
    pub fn of(error: DecodeError) -> Self {
        match error {
            DecodeError::UnsupportedVersion(_) => DropReason::UnsupportedVersion,
            _ => DropReason::Malformed,
        }
    }
}
