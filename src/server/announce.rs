//! Label announcements (`protocol::labels`): admitted like beats (the same
//! keys, the same clock-skew bound), then handed to the monitor, which
//! refuses a stale one. Rare next to beats: a few per client per
//! `REFRESH_BEATS` beats, so they are handled one by one after the batch's
//! beats (which may have just added the host they name).

use super::fleet::Fleet;
use super::guard::Guard;
use crate::monitor::Declared;
use crate::protocol::labels;
use std::net::SocketAddr;
use std::time::SystemTime;

/// What became of one announcement: the `result` label of
/// `lubdub_label_announcements_total`.
pub fn apply(
    fleet: &Fleet,
    guard: &Guard,
    datagram: &[u8],
    from: SocketAddr,
    wall: SystemTime,
) -> &'static str {
    let Ok(announcement) = labels::decode(datagram) else {
        return "malformed";
    };
    if guard
        .check_announcement(datagram, &announcement, wall)
        .is_err()
    {
        return "refused";
    }
    let Ok(set) = announcement.labels() else {
        return "bad_label";
    };
    match fleet.declare_labels(announcement.host_id, &set, announcement.seq) {
        Declared::Applied { changed: true } => {
            tracing::info!(host = announcement.host_id, %from, labels = %set, "labels announced");
            "applied"
        }
        Declared::Applied { changed: false } => "unchanged",
        Declared::UnknownHost => "unknown_host",
        Declared::Stale => "stale",
        Declared::TableFull => "table_full",
    }
}

/// Every `result` an announcement is counted under.
pub const RESULTS: [&str; 8] = [
    "applied",
    "unchanged",
    "unknown_host",
    "stale",
    "table_full",
    "malformed",
    "refused",
    "bad_label",
];

// An announcement must reach ingest whole.
const _: () = assert!(labels::MAX_LEN <= super::recv::BUF_LEN);
