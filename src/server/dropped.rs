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
    /// With keys: a legacy `Thump!` from outside `legacy_networks`, or for
    /// a host that signs its beats.
    Legacy,
    /// With keys: a sequence number seen before or too old (a replay).
    Replay,
    /// With keys: a send time further than `max_clock_skew` from ours.
    ClockSkew,
    /// A new host while `max_hosts` hosts are tracked.
    MaxHosts,
    /// A host id with a control, bidirectional or invisible character
    /// (see [`crate::protocol::forbidden_in_host_id`]).
    BadHostId,
    /// A new host beyond `join_rate` joins a second.
    JoinRate,
    /// With keys: a seq whose run start (its high 32 bits, Unix seconds)
    /// lies past the beat's send time plus `max_clock_skew`.
    FutureRun,
    /// An answer to a probe the server did not send that host during its
    /// current suspicion (forged, replayed or late; issue 15).
    ProbeNonce,
}

impl DropReason {
    /// Every reason, in metric order.
    pub const ALL: [DropReason; 13] = [
        DropReason::Malformed,
        DropReason::UnsupportedVersion,
        DropReason::Unsigned,
        DropReason::BadMac,
        DropReason::UnknownKey,
        DropReason::Legacy,
        DropReason::Replay,
        DropReason::ClockSkew,
        DropReason::MaxHosts,
        DropReason::BadHostId,
        DropReason::JoinRate,
        DropReason::FutureRun,
        DropReason::ProbeNonce,
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
            DropReason::BadHostId => "bad_host_id",
            DropReason::JoinRate => "join_rate",
            DropReason::FutureRun => "future_run",
            DropReason::ProbeNonce => "probe_nonce",
        }
    }

    /// True for the refusals of a server with keys that a misconfigured
    /// client causes (no key, a wrong or retired key, a legacy beat from
    /// outside `legacy_networks`, a wrong clock): worth a warning, where a
    /// malformed packet is noise.
    pub fn is_refused_key(self) -> bool {
        matches!(
            self,
            DropReason::Unsigned
                | DropReason::BadMac
                | DropReason::UnknownKey
                | DropReason::Legacy
                | DropReason::ClockSkew
        )
    }

    /// What an operator should check, for the log.
    pub fn explain(self) -> &'static str {
        match self {
            DropReason::Unsigned => {
                "unsigned, and this server requires a key (client without key_file?)"
            }
            DropReason::BadMac => {
                "signature does not verify (client key differs from the server's key of that id)"
            }
            DropReason::UnknownKey => {
                "signed with a key id this server does not have (a removed or new key?)"
            }
            DropReason::Legacy => "legacy Thump! from outside legacy_networks",
            DropReason::ClockSkew => {
                "send time further than max_clock_skew from the server's clock"
            }
            DropReason::Malformed => "not a lubdub beat",
            DropReason::UnsupportedVersion => "a protocol version this server does not speak",
            DropReason::Replay => "a sequence number seen before (a replay)",
            DropReason::MaxHosts => "a new host beyond max_hosts",
            DropReason::BadHostId => "a host id that is not printable text",
            DropReason::JoinRate => "a new host beyond join_rate",
            DropReason::FutureRun => "a sequence number from a future run",
            DropReason::ProbeNonce => "an answer to a probe not sent to that host",
        }
    }

    /// Why a datagram that did not decode is dropped.
    pub fn of(error: DecodeError) -> Self {
        match error {
            DecodeError::UnsupportedVersion(_) => DropReason::UnsupportedVersion,
            DecodeError::HostIdForbiddenChar => DropReason::BadHostId,
            _ => DropReason::Malformed,
        }
    }
}
