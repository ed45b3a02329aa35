//! The wire format, version 1: encode and decode beats. No sockets, no clock.
//!
//! `docs/PROTOCOL.md` documents every byte; the test vectors there are
//! decoded by a unit test below, so the document and the code cannot drift.
//! Decoding borrows from the datagram and never allocates or panics, whatever
//! the input: it runs once per packet on the ingest hot path.

pub mod maintenance;
pub mod probe;

use std::fmt;

pub mod labels;

/// The four bytes every v1 packet starts with: ASCII `LBDB`.
pub const MAGIC: [u8; 4] = *b"LBDB";
/// The protocol version this module speaks.
pub const VERSION: u8 = 1;
/// Bytes before the host id: magic, version, flags, seq, boot id, sent at,
/// interval, host id length.
pub const HEADER_LEN: usize = 43;
/// Longest host id, in bytes of UTF-8 (it must also fit its one length byte).
pub const MAX_HOST_ID_LEN: usize = 255;
/// Bytes of the authentication tag: key id (4) and truncated MAC (16).
pub const TAG_LEN: usize = 4 + MAC_LEN;
/// Bytes of the truncated MAC inside the tag.
pub const MAC_LEN: usize = 16;
/// Bytes of a probe nonce, carried by an answering beat.
pub const NONCE_LEN: usize = 8;
/// Longest valid v1 packet; a receive buffer of this size never truncates one.
pub const MAX_PACKET_LEN: usize = HEADER_LEN + MAX_HOST_ID_LEN + NONCE_LEN + TAG_LEN;

/// The seed's (PyHeartBeat) payload, accepted as a beat keyed by source IP.
pub const LEGACY_THUMP: &[u8] = b"Thump!";
/// The original recipe's payload, accepted like [`LEGACY_THUMP`].
pub const LEGACY_PYHB: &[u8] = b"PyHB";

/// Flag bits of the flags byte. WARNING: only ever append new bits.
pub mod flags {
    /// The client is shutting down cleanly: the host *left*, it is not down.
    pub const GOODBYE: u8 = 0b0000_0001;
    /// A 20-byte authentication tag (key id + MAC) follows the host id.
    pub const TAGGED: u8 = 0b0000_0010;
    /// The client answers probes (`probe.rs`): a server may probe this host
    /// when it falls silent. Issue 15.
    pub const ANSWERS_PROBES: u8 = 0b0000_0100;
    /// This beat answers a probe: the probe's 8-byte nonce follows the host
    /// id (before the tag, so the MAC covers it). Issue 15.
    pub const ANSWER: u8 = 0b0000_1000;
    /// Every bit this version knows; receivers ignore the others so that a
    /// later client's new flag does not make its beats undecodable.
    pub const KNOWN: u8 = GOODBYE | TAGGED | ANSWERS_PROBES | ANSWER;
}

/// The authentication tag reserved by v1: which key signed the packet and
/// the MAC over every byte before the MAC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tag {
    /// Identifies the key in the server's key file.
    pub key_id: u32,
    /// HMAC-SHA256 over the packet up to the MAC, truncated to 16 bytes.
    pub mac: [u8; MAC_LEN],
}

/// One decoded v1 beat, borrowing its host id from the datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Beat<'a> {
    /// Flag bits (see [`flags`]); unknown bits are kept, not interpreted.
    pub flags: u8,
    /// Increases by one per beat; a gap means lost packets.
    pub seq: u64,
    /// Changes when the client's machine reboots (all zero: unknown).
    pub boot_id: [u8; 16],
    /// Client's wall clock when sending, microseconds since the Unix epoch.
    pub sent_at_micros: u64,
    /// The beat interval the client declares, in milliseconds (0: unknown).
    pub interval_ms: u32,
    /// The host's identity: 1 to [`MAX_HOST_ID_LEN`] bytes of UTF-8.
    pub host_id: &'a str,
    /// The nonce of the probe this beat answers (the `ANSWER` flag).
    pub answers: Option<u64>,
    /// Authentication tag, present when the `TAGGED` flag is set.
    pub tag: Option<Tag>,
}

impl Beat<'_> {
    /// True when the client said goodbye (clean shutdown).
    pub fn is_goodbye(&self) -> bool {
        self.flags & flags::GOODBYE != 0
    }

    /// True when the client says it answers probes.
    pub fn answers_probes(&self) -> bool {
        self.flags & flags::ANSWERS_PROBES != 0
    }
}

/// A datagram the server understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Packet<'a> {
    /// A lubdub v1 beat.
    V1(Beat<'a>),
    /// The seed's bare `Thump!` (or `PyHB`): a beat from the source address.
    Legacy,
}

/// Why a datagram was not a beat. A plain enum: the hot path never
/// allocates, even to reject a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Shorter than the fixed header (and not a legacy payload).
    #[error("packet too short")]
    TooShort,
    /// Does not start with [`MAGIC`].
    #[error("bad magic")]
    BadMagic,
    /// A version this server does not speak.
    #[error("unsupported version {0}")]
    UnsupportedVersion(u8),
    /// The host id is empty.
    #[error("empty host id")]
    EmptyHostId,
    /// The host id is not valid UTF-8.
    #[error("host id is not utf-8")]
    HostIdNotUtf8,
    /// The length does not match the header: truncated or trailing bytes.
    #[error("packet length does not match its header")]
    LengthMismatch,
    /// The host id holds a character a host id may not (see
    /// [`forbidden_in_host_id`]).
    #[error("host id holds a control, bidirectional or invisible character")]
    HostIdForbiddenChar,
    /// A datagram kind this version does not know (e.g. a probe's type
    /// byte, see [`probe`]).
    #[error("unknown datagram type {0}")]
    UnknownType(u8),
}

impl DecodeError {
    /// Short stable name, used as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            DecodeError::TooShort => "too_short",
            DecodeError::BadMagic => "bad_magic",
            DecodeError::UnsupportedVersion(_) => "unsupported_version",
            DecodeError::EmptyHostId => "empty_host_id",
            DecodeError::HostIdNotUtf8 => "host_id_not_utf8",
            DecodeError::LengthMismatch => "length_mismatch",
            DecodeError::HostIdForbiddenChar => "host_id_forbidden_char",
            DecodeError::UnknownType(_) => "unknown_type",
        }
    }
}

/// Why a beat could not be encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The host id is empty or longer than [`MAX_HOST_ID_LEN`] bytes.
    #[error("host id must be 1 to {MAX_HOST_ID_LEN} bytes, got {0}")]
    HostIdLength(usize),
    /// The host id holds a character a host id may not.
    #[error(
        "host id may not hold {0:?} (control, bidirectional and invisible characters are refused)"
    )]
    HostIdChar(char),
}

/// True for a character a host id may not hold. Host ids are printed on
/// the server's console, in logs, in `lubdub status` and in alerts, and
/// passed to hooks as environment variables and arguments, so these are
/// refused by the decoder rather than escaped in every one of those places:
/// - control characters (C0, DEL, C1): a NUL cannot be passed to a
///   hook, a newline forges console lines, ESC starts terminal escapes;
/// - bidirectional controls (U+061C, U+200E, U+200F, U+202A to U+202E,
///   U+2066 to U+2069): they reorder what a terminal shows, so `web-1`
///   could be shown for another id (the "Trojan Source" trick);
/// - line and paragraph separators (U+2028, U+2029): line breaks to some
///   log viewers;
/// - invisible characters (U+200B to U+200D, U+2060, U+FEFF): an id that
///   looks like another one in every table.
///
/// Everything else valid in UTF-8 is allowed, spaces and non-Latin
/// scripts included.
pub fn forbidden_in_host_id(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}'
                | '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2060}'
                | '\u{2066}'..='\u{2069}'
                | '\u{feff}'
        )
}

/// The first character of `id` that a host id may not hold, if any.
pub fn check_host_id(id: &str) -> Result<(), EncodeError> {
    // The common case, printable ASCII, without decoding characters.
    if id.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Ok(());
    }
    match id.chars().find(|&c| forbidden_in_host_id(c)) {
        Some(c) => Err(EncodeError::HostIdChar(c)),
        None => Ok(()),
    }
}

/// Splits a datagram into its `header_len`-byte header and the rest, once
/// the header starts with `magic` and [`VERSION`]: the checks every kind of
/// packet opens with. Too short for the header is `BadMagic` when four
/// wrong bytes are there to tell, `TooShort` otherwise.
#[inline]
pub(crate) fn split_header(
    datagram: &[u8],
    header_len: usize,
    magic: [u8; 4],
) -> Result<(&[u8], &[u8]), DecodeError> {
    if datagram.len() < header_len {
        return Err(if datagram.len() >= 4 && datagram[..4] != magic {
            DecodeError::BadMagic
        } else {
            DecodeError::TooShort
        });
    }
    let (header, rest) = datagram.split_at(header_len);
    if header[..4] != magic {
        return Err(DecodeError::BadMagic);
    }
    if header[4] != VERSION {
        return Err(DecodeError::UnsupportedVersion(header[4]));
    }
    Ok((header, rest))
}

/// Bytes of the tag after the body of a datagram whose flags byte is
/// `flag_bits`: every kind marks its tag with the same `TAGGED` bit.
#[inline]
pub(crate) fn tag_len(flag_bits: u8) -> usize {
    if flag_bits & flags::TAGGED != 0 {
        TAG_LEN
    } else {
        0
    }
}

/// The host id length from its header byte; a host id is never empty.
#[inline]
pub(crate) fn host_id_len(byte: u8) -> Result<usize, DecodeError> {
    match byte {
        0 => Err(DecodeError::EmptyHostId),
        len => Ok(usize::from(len)),
    }
}

/// Reads a host id: UTF-8 without a character a host id may not hold.
#[inline]
pub(crate) fn read_host_id(bytes: &[u8]) -> Result<&str, DecodeError> {
    let host_id = std::str::from_utf8(bytes).map_err(|_| DecodeError::HostIdNotUtf8)?;
    check_host_id(host_id).map_err(|_| DecodeError::HostIdForbiddenChar)?;
    Ok(host_id)
}

/// Reads a tag from its [`TAG_LEN`] bytes; none when `bytes` is empty
/// (the caller has checked the length against the `TAGGED` flag).
#[inline]
pub(crate) fn read_tag(bytes: &[u8]) -> Option<Tag> {
    (!bytes.is_empty()).then(|| Tag {
        key_id: u32::from_be_bytes(array(&bytes[..4])),
        mac: array(&bytes[4..]),
    })
}

/// Checks a host id before encoding: 1 to [`MAX_HOST_ID_LEN`] bytes (so
/// its length fits one byte), no forbidden character.
pub(crate) fn check_host_id_len(id: &str) -> Result<(), EncodeError> {
    if id.is_empty() || id.len() > MAX_HOST_ID_LEN {
        return Err(EncodeError::HostIdLength(id.len()));
    }
    check_host_id(id)
}

/// Starts a datagram of kind `magic` in `out` (cleared first): magic,
/// [`VERSION`], then `byte` (the flags; a probe's type).
pub(crate) fn begin(magic: [u8; 4], byte: u8, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&magic);
    out.push(VERSION);
    out.push(byte);
}

/// Appends `tag` (key id, then MAC), if any: the tail of every signed kind.
pub(crate) fn push_tag(tag: Option<Tag>, out: &mut Vec<u8>) {
    if let Some(tag) = tag {
        out.extend_from_slice(&tag.key_id.to_be_bytes());
        out.extend_from_slice(&tag.mac);
    }
}

/// Decodes one datagram. Never panics, never allocates.
pub fn decode(datagram: &[u8]) -> Result<Packet<'_>, DecodeError> {
    if datagram == LEGACY_THUMP || datagram == LEGACY_PYHB {
        return Ok(Packet::Legacy);
    }
    let (header, rest) = split_header(datagram, HEADER_LEN, MAGIC)?;
    let flags = header[5];
    let host_id_len = host_id_len(header[42])?;
    let tag_len = tag_len(flags);
    let nonce_len = if flags & flags::ANSWER != 0 {
        NONCE_LEN
    } else {
        0
    };
    if rest.len() != host_id_len + nonce_len + tag_len {
        return Err(DecodeError::LengthMismatch);
    }
    let (host_id, rest) = rest.split_at(host_id_len);
    let (nonce, tag_bytes) = rest.split_at(nonce_len);
    let host_id = read_host_id(host_id)?;
    let tag = read_tag(tag_bytes);
    Ok(Packet::V1(Beat {
        flags,
        seq: u64::from_be_bytes(array(&header[6..14])),
        boot_id: array(&header[14..30]),
        sent_at_micros: u64::from_be_bytes(array(&header[30..38])),
        interval_ms: u32::from_be_bytes(array(&header[38..42])),
        host_id,
        answers: (nonce_len != 0).then(|| u64::from_be_bytes(array(nonce))),
        tag,
    }))
}

/// Encodes `beat` into `out` (cleared first) and returns its length.
///
/// The tag is written as given; signing, which fills in the MAC over the
/// bytes before it, belongs to the auth layer.
pub fn encode(beat: &Beat<'_>, out: &mut Vec<u8>) -> Result<usize, EncodeError> {
    let id = beat.host_id.as_bytes();
    check_host_id_len(beat.host_id)?;
    let mut flags = beat.flags & !(flags::TAGGED | flags::ANSWER);
    if beat.tag.is_some() {
        flags |= flags::TAGGED;
    }
    if beat.answers.is_some() {
        flags |= flags::ANSWER;
    }
    begin(MAGIC, flags, out);
    out.extend_from_slice(&beat.seq.to_be_bytes());
    out.extend_from_slice(&beat.boot_id);
    out.extend_from_slice(&beat.sent_at_micros.to_be_bytes());
    out.extend_from_slice(&beat.interval_ms.to_be_bytes());
    out.push(id.len() as u8); // checked against MAX_HOST_ID_LEN above
    out.extend_from_slice(id);
    if let Some(nonce) = beat.answers {
        out.extend_from_slice(&nonce.to_be_bytes());
    }
    push_tag(beat.tag, out);
    Ok(out.len())
}

/// Copies a slice whose length the caller has already checked into an array.
fn array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0; N];
    out.copy_from_slice(bytes);
    out
}

/// Shows `T` with every character a host id may not hold escaped (as
/// `\u{202e}`): for lines that print host ids, which may come from a store
/// written before the decoder refused them. Writes through, without
/// allocating.
pub struct Printable<T>(pub T);

impl<T: fmt::Display> fmt::Display for Printable<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use fmt::Write;
        write!(Escaping(f), "{}", self.0)
    }
}

/// A writer that escapes forbidden characters on their way to `W`.
struct Escaping<W>(W);

impl<W: fmt::Write> fmt::Write for Escaping<W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if check_host_id(s).is_ok() {
            return self.0.write_str(s);
        }
        for c in s.chars() {
            if forbidden_in_host_id(c) {
                for e in c.escape_unicode() {
                    self.0.write_char(e)?;
                }
            } else {
                self.0.write_char(c)?;
            }
        }
        Ok(())
    }
}

/// Formats a boot id as a UUID (8-4-4-4-12 lowercase hex).
pub struct BootId<'a>(pub &'a [u8; 16]);

impl fmt::Display for BootId<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, byte) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

/// Parses a UUID in its usual text form (hyphens optional) into 16 bytes.
pub fn parse_boot_id(text: &str) -> Option<[u8; 16]> {
    let hex: Vec<u8> = text.trim().bytes().filter(|&b| b != b'-').collect();
    if hex.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        let digits = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(digits, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Beat<'static> {
        Beat {
            flags: 0,
            seq: 7,
            boot_id: [0x11; 16],
            sent_at_micros: 1_700_000_000_000_000,
            interval_ms: 10_000,
            host_id: "web-1",
            answers: None,
            tag: None,
        }
    }

    /// Encodes `item` with `encode` (a beat's, a probe's encoder) into a
    /// fresh buffer: the test kit of every datagram kind.
    pub(super) fn encoded_by<T: ?Sized>(
        encode: impl FnOnce(&T, &mut Vec<u8>) -> Result<usize, EncodeError>,
        item: &T,
    ) -> Vec<u8> {
        let mut out = Vec::new();
        encode(item, &mut out).expect("valid datagram");
        out
    }

    fn encoded(beat: &Beat<'_>) -> Vec<u8> {
        encoded_by(encode, beat)
    }

    #[test]
    fn round_trip_plain_goodbye_and_tagged() {
        let plain = sample();
        let goodbye = Beat {
            flags: flags::GOODBYE,
            ..sample()
        };
        let tagged = Beat {
            tag: Some(Tag {
                key_id: 3,
                mac: [0xab; MAC_LEN],
            }),
            flags: flags::TAGGED,
            ..sample()
        };
        for beat in [plain, goodbye, tagged] {
            let bytes = encoded(&beat);
            assert_eq!(decode(&bytes), Ok(Packet::V1(beat)));
        }
        assert!(matches!(decode(&encoded(&goodbye)), Ok(Packet::V1(b)) if b.is_goodbye()));
    }

    #[test]
    fn longest_host_id_fits_max_packet_len() {
        let id = "h".repeat(MAX_HOST_ID_LEN);
        let beat = Beat {
            host_id: &id,
            answers: Some(u64::MAX),
            tag: Some(Tag {
                key_id: 1,
                mac: [0; MAC_LEN],
            }),
            ..sample()
        };
        assert_eq!(encoded(&beat).len(), MAX_PACKET_LEN);
        let too_long = "h".repeat(MAX_HOST_ID_LEN + 1);
        let beat = Beat {
            host_id: &too_long,
            ..sample()
        };
        assert_eq!(
            encode(&beat, &mut Vec::new()),
            Err(EncodeError::HostIdLength(256))
        );
    }

    #[test]
    fn legacy_payloads_are_beats() {
        assert_eq!(decode(b"Thump!"), Ok(Packet::Legacy));
        assert_eq!(decode(b"PyHB"), Ok(Packet::Legacy));
        assert_eq!(decode(b"Thump!\n"), Err(DecodeError::BadMagic));
    }

    #[test]
    fn every_decode_error() {
        let good = encoded(&sample());
        let mut bad_magic = good.clone();
        bad_magic[0] = b'X';
        let mut bad_version = good.clone();
        bad_version[4] = 2;
        let mut empty_id = good[..HEADER_LEN].to_vec();
        empty_id[42] = 0;
        let mut not_utf8 = good.clone();
        not_utf8[HEADER_LEN] = 0xff;
        let mut claims_tag = good.clone();
        claims_tag[5] |= flags::TAGGED;
        let cases: &[(&[u8], DecodeError)] = &[
            (b"", DecodeError::TooShort),
            (b"LBD", DecodeError::TooShort),
            (&good[..HEADER_LEN - 1], DecodeError::TooShort),
            (b"GET / HTTP/1.0", DecodeError::BadMagic),
            (&bad_magic, DecodeError::BadMagic),
            (&bad_version, DecodeError::UnsupportedVersion(2)),
            (&empty_id, DecodeError::EmptyHostId),
            (&not_utf8, DecodeError::HostIdNotUtf8),
            (&good[..good.len() - 1], DecodeError::LengthMismatch),
            (
                &[good.as_slice(), b"x"].concat(),
                DecodeError::LengthMismatch,
            ),
            (&claims_tag, DecodeError::LengthMismatch),
        ];
        for (bytes, want) in cases {
            assert_eq!(decode(bytes), Err(*want), "input {bytes:02x?}");
        }
    }

    /// Each kind of forbidden character is refused by the decoder and the
    /// encoder; spaces and other scripts are not.
    #[test]
    fn host_ids_with_hostile_characters_are_refused() {
        let with_id = |id: &[u8]| {
            let mut bytes = encoded(&Beat {
                host_id: "x",
                ..sample()
            });
            bytes.truncate(HEADER_LEN - 1);
            bytes.push(id.len() as u8);
            bytes.extend_from_slice(id);
            bytes
        };
        for id in [
            "web\0-1",
            "web-1\nDOWN forged",
            "\x1b[2Jweb",
            "web\u{7f}",
            "web\u{85}",
            "\u{202e}1-bew",
            "web\u{2066}",
            "web\u{2028}",
            "web\u{200b}-1",
            "\u{feff}web",
        ] {
            assert_eq!(
                decode(&with_id(id.as_bytes())),
                Err(DecodeError::HostIdForbiddenChar),
                "{id:?}"
            );
            let beat = Beat {
                host_id: id,
                ..sample()
            };
            assert!(
                matches!(
                    encode(&beat, &mut Vec::new()),
                    Err(EncodeError::HostIdChar(_))
                ),
                "{id:?}"
            );
        }
        for id in ["web 1", "db.example.org", "服务器-1", "é", "a_b:c/d"] {
            assert!(decode(&with_id(id.as_bytes())).is_ok(), "{id:?}");
            assert_eq!(Printable(id).to_string(), id);
        }
        assert_eq!(
            Printable("down \u{202e}1-bew\nforged\x1b[2J").to_string(),
            "down \\u{202e}1-bew\\u{a}forged\\u{1b}[2J"
        );
    }

    #[test]
    fn unknown_flags_are_kept_and_ignored() {
        let mut bytes = encoded(&sample());
        bytes[5] |= 0x80;
        let Ok(Packet::V1(beat)) = decode(&bytes) else {
            panic!("a new flag bit must not make a beat undecodable");
        };
        assert_eq!(beat.flags & !flags::KNOWN, 0x80);
        assert!(!beat.is_goodbye());
    }

    /// A tag as the test vectors write it: `KEY_ID:MAC_HEX`, or `none`.
    fn tag_text(tag: Option<Tag>) -> String {
        tag.map_or("none".to_string(), |t| {
            let mac: String = t.mac.iter().map(|b| format!("{b:02x}")).collect();
            format!("{}:{mac}", t.key_id)
        })
    }

    /// Parses the hex test vectors out of `docs/PROTOCOL.md` and checks each
    /// against the fields the document states next to it.
    #[test]
    fn protocol_doc_test_vectors() {
        let doc = include_str!("../../docs/PROTOCOL.md");
        let vectors = doc_vectors(doc);
        assert!(vectors.len() >= 4, "expected test vectors in PROTOCOL.md");
        for (name, bytes, expect) in vectors {
            if probe::is_probe(&bytes) {
                let got = match probe::decode_probe(&bytes) {
                    Ok(p) => format!(
                        "probe nonce={} host={} tag={}",
                        p.nonce,
                        p.host_id,
                        tag_text(p.tag),
                    ),
                    Err(e) => format!("error {}", e.as_str()),
                };
                assert_eq!(got, expect, "vector {name}");
                if name.starts_with("signed") {
                    let probe = probe::decode_probe(&bytes).expect("a probe");
                    let secret: Vec<u8> = (0u8..32).collect();
                    let key = crate::auth::Key::new(1, &secret, false, None).expect("test key");
                    let signer = crate::auth::Signer::new(&key, probe.host_id).expect("signer");
                    assert_eq!(signer.verify_probe(&bytes, &probe), Ok(()), "{name}");
                    let mut ring = crate::auth::KeyRing::default();
                    ring.add(key).expect("one key");
                    let mut again = Vec::new();
                    ring.sign_probe(&probe, &mut again).expect("sign");
                    assert_eq!(again, bytes, "the server signs {name} the same");
                }
                continue;
            }
            let got = match decode(&bytes) {
                Ok(Packet::V1(b)) => {
                    format!(
                        "v1 flags={} seq={} boot={} sent={} interval={} host={} tag={}",
                        b.flags,
                        b.seq,
                        BootId(&b.boot_id),
                        b.sent_at_micros,
                        b.interval_ms,
                        b.host_id,
                        tag_text(b.tag),
                    ) + &b.answers.map_or(String::new(), |n| format!(" answers={n}"))
                }
                Ok(Packet::Legacy) => "legacy".to_string(),
                Err(e) => format!("error {}", e.as_str()),
            };
            assert_eq!(got, expect, "vector {name}");
            if name.starts_with("signed") {
                // Signed vectors must also verify with the documented test key.
                let Ok(Packet::V1(beat)) = decode(&bytes) else {
                    panic!("vector {name} is a v1 beat")
                };
                let mut ring = crate::auth::KeyRing::default();
                let secret: Vec<u8> = (0u8..32).collect();
                ring.add(crate::auth::Key::new(1, &secret, false, None).expect("test key"))
                    .expect("one key");
                assert_eq!(ring.verify(&bytes, &beat), Ok(()), "vector {name} verifies");
            }
        }
    }

    /// Vectors are written as a `### name` heading, a ```hex block, and a
    /// line `Expect: …`.
    fn doc_vectors(doc: &str) -> Vec<(String, Vec<u8>, String)> {
        let mut out = Vec::new();
        let mut name = String::new();
        let mut lines = doc.lines();
        let mut bytes = Vec::new();
        while let Some(line) = lines.next() {
            if let Some(heading) = line.strip_prefix("### ") {
                name = heading.to_string();
            } else if line.trim() == "```hex" {
                bytes.clear();
                for hex_line in lines.by_ref().take_while(|l| l.trim() != "```") {
                    let digits: String = hex_line
                        .split('#')
                        .next()
                        .unwrap_or("")
                        .split_whitespace()
                        .collect();
                    for pair in digits.as_bytes().chunks(2) {
                        let pair = std::str::from_utf8(pair).expect("ascii");
                        bytes.push(u8::from_str_radix(pair, 16).expect("hex digits"));
                    }
                }
            } else if let Some(expect) = line.strip_prefix("Expect: ") {
                out.push((
                    name.clone(),
                    std::mem::take(&mut bytes),
                    expect.trim_matches('`').to_string(),
                ));
            }
        }
        out
    }

    #[test]
    fn boot_id_text_round_trip() {
        let id = parse_boot_id("0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9\n").expect("uuid");
        assert_eq!(
            BootId(&id).to_string(),
            "0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9"
        );
        assert_eq!(parse_boot_id("not a uuid"), None);
        assert_eq!(parse_boot_id("zz1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9"), None);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn mutated_beats_never_panic(pos in 0usize..80, value in any::<u8>(), cut in 0usize..80) {
            let mut bytes = encoded(&Beat { tag: Some(Tag { key_id: 9, mac: [1; MAC_LEN] }), ..sample() });
            let pos = pos % bytes.len();
            bytes[pos] = value;
            bytes.truncate(bytes.len().saturating_sub(cut));
            let _ = decode(&bytes);
        }

        #[test]
        fn any_valid_beat_round_trips(
            flags in any::<u8>(), seq in any::<u64>(), boot in any::<[u8; 16]>(),
            sent in any::<u64>(), interval in any::<u32>(), id in "[a-zA-Z0-9.é-]{1,60}",
            tag in proptest::option::of((any::<u32>(), any::<[u8; 16]>())),
        ) {
            let tag = tag.map(|(key_id, mac)| Tag { key_id, mac });
            let mut flags = flags & !flags::TAGGED;
            if tag.is_some() { flags |= flags::TAGGED; }
            let beat = Beat { flags: flags & !flags::ANSWER, seq, boot_id: boot, sent_at_micros: sent, interval_ms: interval, host_id: &id, answers: None, tag };
            let bytes = encoded(&beat);
            prop_assert_eq!(decode(&bytes), Ok(Packet::V1(beat)));
        }
    }
}
