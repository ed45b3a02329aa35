//! Maintenance announcements (`lubdub maintenance --for` on a host) and the
//! server's confirmations. Documented byte by byte in docs/PROTOCOL.md
//! ("Maintenance announcements"). No sockets, no clock; decoding never
//! panics and never allocates.
//!
//! Both are signed like beats when the host has a key: the tag's MAC is
//! HMAC-SHA256 (host key) over every byte before it, truncated to 16. A
//! confirmation echoes the announcement's nonce, so a client accepts only
//! the answer to its own question.

use super::{MAC_LEN, Tag, flags};

/// The four bytes an announcement starts with: ASCII `LBDM`.
pub const ANNOUNCE_MAGIC: [u8; 4] = *b"LBDM";
/// True when `datagram` claims to be a maintenance announcement (its
/// magic; the rest is checked by [`decode_announcement`]).
pub fn is_announcement(datagram: &[u8]) -> bool {
    datagram.starts_with(&ANNOUNCE_MAGIC)
}

/// The four bytes a confirmation starts with: ASCII `LBDC`.
pub const CONFIRM_MAGIC: [u8; 4] = *b"LBDC";
/// Longest reason, in bytes of UTF-8.
pub const MAX_REASON_LEN: usize = 200;

/// Why a maintenance reason is refused (at every entry: datagram, API,
/// config, command line).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BadReason {
    /// Longer than [`MAX_REASON_LEN`] bytes.
    #[error("longer than {MAX_REASON_LEN} bytes")]
    TooLong,
    /// A control character: a NUL cannot be passed in an exec hook's
    /// environment, a newline splits a log or event line.
    #[error("control character {0:?} (give one line of printable text)")]
    Control(char),
}

/// Checks a window's reason: one line of printable text, at most
/// [`MAX_REASON_LEN`] bytes.
pub fn check_reason(reason: &str) -> Result<(), BadReason> {
    if reason.len() > MAX_REASON_LEN {
        return Err(BadReason::TooLong);
    }
    match reason.chars().find(|c| c.is_control()) {
        Some(c) => Err(BadReason::Control(c)),
        None => Ok(()),
    }
}
/// Announcement bytes before the host id: magic, version, flags, sent at,
/// duration, nonce, host id length.
const ANNOUNCE_HEADER: usize = 4 + 1 + 1 + 8 + 8 + 8 + 1;
/// Confirmation bytes before the host id: magic, version, flags, status,
/// nonce, until, window id, host id length.
const CONFIRM_HEADER: usize = 4 + 1 + 1 + 1 + 8 + 8 + 8 + 1;

/// "Planned silence for `duration_ms` from now", from a host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Announcement<'a> {
    /// The host's wall clock when sending, microseconds since the epoch.
    pub sent_at_micros: u64,
    /// How long the window lasts, in milliseconds.
    pub duration_ms: u64,
    /// Random; echoed by the confirmation.
    pub nonce: [u8; 8],
    /// The host's id (as in its beats).
    pub host_id: &'a str,
    /// Why, in words (0 to [`MAX_REASON_LEN`] bytes).
    pub reason: &'a str,
    /// Authentication tag, when signed.
    pub tag: Option<Tag>,
}

/// A server's answer to an announcement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Confirmation<'a> {
    /// 0: the window is open; anything else: refused.
    pub status: u8,
    /// The announcement's nonce.
    pub nonce: [u8; 8],
    /// When the window ends, microseconds since the epoch (0 if refused).
    pub until_micros: u64,
    /// The window's id (0 if refused).
    pub window: u64,
    /// The host the answer is for.
    pub host_id: &'a str,
    /// Authentication tag, when signed.
    pub tag: Option<Tag>,
}

/// Confirmation status codes. WARNING: only append.
pub mod status {
    /// The window is open.
    pub const OPEN: u8 = 0;
    /// The server does not know the host (it never beat).
    pub const UNKNOWN_HOST: u8 = 1;
    /// The host is paused or left: no window was opened.
    pub const NOT_OPENED: u8 = 2;
}

/// Why a datagram is not a valid announcement or confirmation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Wrong magic, version, or lengths that do not add up.
    #[error("malformed maintenance datagram")]
    Malformed,
    /// The host id or reason is not UTF-8, the host id is empty, or the
    /// reason is not one line of printable text.
    #[error("bad text in maintenance datagram")]
    BadText,
    /// A host id or reason too long to encode.
    #[error("host id or reason too long")]
    TooLong,
}

/// The tag after the body: exactly [`super::TAG_LEN`] bytes when the flags say
/// `TAGGED`, nothing otherwise.
fn tag_of(flags_byte: u8, rest: &[u8]) -> Result<Option<Tag>, Error> {
    if rest.len() != super::tag_len(flags_byte) {
        return Err(Error::Malformed);
    }
    Ok(super::read_tag(rest))
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

fn text(bytes: &[u8]) -> Result<&str, Error> {
    std::str::from_utf8(bytes).map_err(|_| Error::BadText)
}

/// Where the host id of a datagram of kind `magic`, whose fixed part is
/// `header` bytes (its last: the id's length), ends; checks the magic,
/// the version and that the id is there and not empty.
fn host_id_end(bytes: &[u8], magic: [u8; 4], header: usize) -> Result<usize, Error> {
    let (fixed, rest) = super::split_header(bytes, header, magic).map_err(|_| Error::Malformed)?;
    let id_len = usize::from(fixed[header - 1]);
    if id_len == 0 || rest.len() < id_len {
        return Err(Error::Malformed);
    }
    Ok(header + id_len)
}

/// Encodes a datagram of kind `magic` into `out` (replacing its
/// contents): magic, version, flags, the `fixed` fields, the host id and
/// the `reason` (each with its length byte first), and a zeroed tag if
/// `key_id` is given (the caller writes the MAC over all but the last 16
/// bytes). Returns the length.
fn encode(
    magic: [u8; 4],
    fixed: &[&[u8]],
    host_id: &str,
    reason: Option<&str>,
    key_id: Option<u32>,
    out: &mut Vec<u8>,
) -> Result<usize, Error> {
    super::check_host_id(host_id).map_err(|_| Error::TooLong)?;
    super::begin(magic, if key_id.is_some() { flags::TAGGED } else { 0 }, out);
    for field in fixed {
        out.extend_from_slice(field);
    }
    push_text(host_id, out);
    if let Some(reason) = reason {
        push_text(reason, out);
    }
    let tag = key_id.map(|key_id| Tag {
        key_id,
        mac: [0; MAC_LEN],
    });
    super::push_tag(tag, out);
    Ok(out.len())
}

/// Appends `text` with its length (one byte) first.
fn push_text(text: &str, out: &mut Vec<u8>) {
    out.push(text.len() as u8);
    out.extend_from_slice(text.as_bytes());
}

/// Decodes an announcement.
pub fn decode_announcement(bytes: &[u8]) -> Result<Announcement<'_>, Error> {
    let id_end = host_id_end(bytes, ANNOUNCE_MAGIC, ANNOUNCE_HEADER)?;
    let reason_len = usize::from(*bytes.get(id_end).ok_or(Error::Malformed)?);
    let reason_end = id_end + 1 + reason_len;
    if reason_len > MAX_REASON_LEN || bytes.len() < reason_end {
        return Err(Error::Malformed);
    }
    let host_id = text(&bytes[ANNOUNCE_HEADER..id_end])?;
    if host_id.chars().any(super::forbidden_in_host_id) {
        return Err(Error::BadText);
    }
    let reason = text(&bytes[id_end + 1..reason_end])?;
    check_reason(reason).map_err(|_| Error::BadText)?;
    Ok(Announcement {
        sent_at_micros: u64_at(bytes, 6),
        duration_ms: u64_at(bytes, 14),
        nonce: bytes[22..30].try_into().expect("8 bytes"),
        host_id,
        reason,
        tag: tag_of(bytes[5], &bytes[reason_end..])?,
    })
}

/// Encodes `a` into `out` (replacing its contents), with a zeroed tag if
/// `key_id` is given (the caller writes the MAC over all but the last 16
/// bytes). Returns the length.
pub fn encode_announcement(
    a: &Announcement<'_>,
    key_id: Option<u32>,
    out: &mut Vec<u8>,
) -> Result<usize, Error> {
    if a.reason.len() > MAX_REASON_LEN {
        return Err(Error::TooLong);
    }
    let fixed: [&[u8]; 3] = [
        &a.sent_at_micros.to_be_bytes(),
        &a.duration_ms.to_be_bytes(),
        &a.nonce,
    ];
    encode(
        ANNOUNCE_MAGIC,
        &fixed,
        a.host_id,
        Some(a.reason),
        key_id,
        out,
    )
}

/// Decodes a confirmation.
pub fn decode_confirmation(bytes: &[u8]) -> Result<Confirmation<'_>, Error> {
    let id_end = host_id_end(bytes, CONFIRM_MAGIC, CONFIRM_HEADER)?;
    Ok(Confirmation {
        status: bytes[6],
        nonce: bytes[7..15].try_into().expect("8 bytes"),
        until_micros: u64_at(bytes, 15),
        window: u64_at(bytes, 23),
        host_id: text(&bytes[CONFIRM_HEADER..id_end])?,
        tag: tag_of(bytes[5], &bytes[id_end..])?,
    })
}

/// Encodes `c` like [`encode_announcement`].
pub fn encode_confirmation(
    c: &Confirmation<'_>,
    key_id: Option<u32>,
    out: &mut Vec<u8>,
) -> Result<usize, Error> {
    let fixed: [&[u8]; 4] = [
        &[c.status],
        &c.nonce,
        &c.until_micros.to_be_bytes(),
        &c.window.to_be_bytes(),
    ];
    encode(CONFIRM_MAGIC, &fixed, c.host_id, None, key_id, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_damage() {
        let a = Announcement {
            sent_at_micros: 1_700_000_000_000_000,
            duration_ms: 1_200_000,
            nonce: *b"12345678",
            host_id: "web-1",
            reason: "kernel update",
            tag: None,
        };
        let mut buf = Vec::new();
        let len = encode_announcement(&a, None, &mut buf).expect("encodes");
        assert_eq!(decode_announcement(&buf[..len]), Ok(a));
        encode_announcement(&a, Some(7), &mut buf).expect("encodes");
        let tagged = decode_announcement(&buf).expect("decodes");
        assert_eq!(tagged.tag.map(|t| t.key_id), Some(7));
        for cut in 0..buf.len() {
            assert!(decode_announcement(&buf[..cut]).is_err(), "cut at {cut}");
        }
        let c = Confirmation {
            status: status::OPEN,
            nonce: a.nonce,
            until_micros: 1_700_001_200_000_000,
            window: 3,
            host_id: "web-1",
            tag: None,
        };
        let len = encode_confirmation(&c, None, &mut buf).expect("encodes");
        assert_eq!(decode_confirmation(&buf[..len]), Ok(c));
        for cut in 0..len {
            assert!(decode_confirmation(&buf[..cut]).is_err(), "cut at {cut}");
        }
        assert_eq!(decode_confirmation(b"LBDB"), Err(Error::Malformed));
        let long = "x".repeat(MAX_REASON_LEN + 1);
        let too_long = Announcement { reason: &long, ..a };
        assert_eq!(
            encode_announcement(&too_long, None, &mut buf),
            Err(Error::TooLong)
        );
    }

    #[test]
    fn a_reason_is_one_bounded_line_of_printable_text() {
        let long = "é".repeat(MAX_REASON_LEN / 2 + 1);
        for (reason, want) in [
            ("kernel update, back in 20m", Ok(())),
            ("", Ok(())),
            ("a\0b", Err(BadReason::Control('\0'))),
            ("two\nlines", Err(BadReason::Control('\n'))),
            ("bell\u{7}", Err(BadReason::Control('\u{7}'))),
            ("c1\u{85}", Err(BadReason::Control('\u{85}'))),
            (long.as_str(), Err(BadReason::TooLong)),
        ] {
            assert_eq!(check_reason(reason), want, "{reason:?}");
        }
        // A datagram carrying one (encoding does not judge) is refused.
        let a = Announcement {
            sent_at_micros: 1,
            duration_ms: 1000,
            nonce: [0; 8],
            host_id: "web-1",
            reason: "nul\0here",
            tag: None,
        };
        let mut buf = Vec::new();
        encode_announcement(&a, None, &mut buf).expect("encodes");
        assert_eq!(decode_announcement(&buf), Err(Error::BadText));
    }
}
