//! Label announcements (LBDL): a client's labels, sent after a beat to
//! every server.

use super::Client;
use super::servers::send;
use super::unix_micros;
use crate::protocol;
use std::time::SystemTime;

impl Client {
    /// Announces the labels after a beat when due: at start, after a
    /// change, and every `REFRESH_BEATS` beats (a client without labels
    /// announces the empty set at start and on a change only, so a
    /// server's stale labels are cleared without a steady extra datagram).
    pub(super) fn announce(&mut self) {
        if self.announce_in > 0 {
            self.announce_in -= 1;
            return;
        }
        self.announce_in = if self.config.labels.is_empty() {
            u64::MAX
        } else {
            protocol::labels::REFRESH_BEATS - 1
        };
        let seq = self.seq.wrapping_sub(1); // the beat just sent
        let sent_at = unix_micros(SystemTime::now());
        let mut packet = Vec::with_capacity(protocol::labels::MAX_LEN);
        let encoded = match &self.signer {
            Some(signer) => signer.sign_announcement(
                seq,
                sent_at,
                &self.host_id,
                &self.config.labels,
                &mut packet,
            ),
            None => protocol::labels::encode(
                seq,
                sent_at,
                &self.host_id,
                &self.config.labels,
                None,
                &mut packet,
            ),
        };
        if encoded.is_err() {
            return; // checked at start
        }
        // Failures are the beat's to log: the announcement goes where the
        // beat just went.
        for target in &mut self.targets {
            if let Err(e) = send(target, &mut self.sockets, &packet) {
                tracing::debug!(server = %target.host, "cannot send label announcement: {e}");
            }
        }
    }
}
