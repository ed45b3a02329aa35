//! The label announcement: a datagram of its own (magic `LBDL`) in which a
//! client tells its servers its labels. Beats stay as small as they are;
//! a client sends an announcement right after a beat at start, on a
//! change (reload), and again every [`REFRESH_BEATS`] beats, so a server
//! that lost them (a new server, a lost datagram) learns them again.
//!
//! It is signed like a beat (same key, same 20-byte tag, the MAC over every
//! byte before it; the magic differs, so a beat's MAC never verifies as an
//! announcement's) and carries the sequence number of the beat it follows:
//! with keys the server refuses one older than the host's newest beat, so
//! a replayed announcement cannot undo a change. Documented in
//! `docs/PROTOCOL.md` ("Label announcement").

use super::{
    DecodeError, Tag, array, begin, check_host_id_len, flags, host_id_len, push_tag, read_host_id,
    read_tag, split_header, tag_len,
};
use crate::labels::{LabelError, Labels, MAX_LABELS};

/// The four bytes an announcement starts with: ASCII `LBDL`.
pub const MAGIC: [u8; 4] = *b"LBDL";
/// Bytes before the host id: magic, version, flags, seq, sent at, host id
/// length.
pub const HEADER_LEN: usize = 23;
/// Longest announcement: it must fit the server's receive buffer whole.
pub const MAX_LEN: usize = 512;
/// A client announces its labels again after this many beats.
pub const REFRESH_BEATS: u64 = 30;

/// One decoded announcement, borrowing from the datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Announcement<'a> {
    /// Flag bits (only `TAGGED` means anything here).
    pub flags: u8,
    /// Sequence number of the beat it follows.
    pub seq: u64,
    /// Client's wall clock when sending, microseconds since the Unix epoch.
    pub sent_at_micros: u64,
    /// The host's id.
    pub host_id: &'a str,
    /// The label block: a count, then each name and value with a length
    /// byte before it (checked by [`decode`]).
    block: &'a [u8],
    /// Authentication tag, present when `TAGGED` is set.
    pub tag: Option<Tag>,
}

/// Why an announcement could not be built or read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AnnounceError {
    /// The datagram's structure is wrong.
    #[error("{0}")]
    Decode(DecodeError),
    /// A label is invalid (decoded ones are checked as the client's are).
    #[error("{0}")]
    Label(#[from] LabelError),
    /// The host id and labels do not fit one datagram.
    #[error(
        "host id and labels take {0} bytes in the label announcement, at most {MAX_LEN} fit one datagram"
    )]
    TooLong(usize),
    /// The host id is empty, too long or holds a forbidden character.
    #[error("bad host id")]
    HostId,
}

impl<'a> Announcement<'a> {
    /// The labels announced, checked (names, values, count).
    pub fn labels(&self) -> Result<Labels, AnnounceError> {
        let mut pairs = Vec::new();
        let mut rest = &self.block[1..];
        for _ in 0..self.block[0] {
            let (name, after) =
                field(rest).ok_or(AnnounceError::Decode(DecodeError::LengthMismatch))?;
            let (value, after) =
                field(after).ok_or(AnnounceError::Decode(DecodeError::LengthMismatch))?;
            let text = |b| {
                std::str::from_utf8(b)
                    .map_err(|_| LabelError::BadName(String::from_utf8_lossy(b).into()))
            };
            pairs.push((text(name)?, text(value)?));
            rest = after;
        }
        Ok(Labels::from_pairs(pairs)?)
    }
}

/// One length-prefixed field and what follows it.
fn field(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let (&len, rest) = bytes.split_first()?;
    (rest.len() >= usize::from(len)).then(|| rest.split_at(usize::from(len)))
}

/// True when `datagram` starts like an announcement.
pub fn is_announcement(datagram: &[u8]) -> bool {
    datagram.starts_with(&MAGIC)
}

/// Decodes one announcement. Never panics; checks the structure (the
/// label block's lengths add up), not the labels' text (see
/// [`Announcement::labels`]).
pub fn decode(datagram: &[u8]) -> Result<Announcement<'_>, DecodeError> {
    let (header, rest) = split_header(datagram, HEADER_LEN, MAGIC)?;
    let flag_bits = header[5];
    let id_len = host_id_len(header[22])?;
    let tag_len = tag_len(flag_bits);
    if rest.len() < id_len + 1 + tag_len {
        return Err(DecodeError::LengthMismatch);
    }
    let (host_id, rest) = rest.split_at(id_len);
    let (block, tag_bytes) = rest.split_at(rest.len() - tag_len);
    // The block must be exactly its count of name/value pairs.
    let count = block[0];
    if usize::from(count) > MAX_LABELS {
        return Err(DecodeError::LengthMismatch);
    }
    let mut walk = &block[1..];
    for _ in 0..count * 2 {
        walk = field(walk).ok_or(DecodeError::LengthMismatch)?.1;
    }
    if !walk.is_empty() {
        return Err(DecodeError::LengthMismatch);
    }
    let host_id = read_host_id(host_id)?;
    let tag = read_tag(tag_bytes);
    Ok(Announcement {
        flags: flag_bits,
        seq: u64::from_be_bytes(array(&header[6..14])),
        sent_at_micros: u64::from_be_bytes(array(&header[14..22])),
        host_id,
        block,
        tag,
    })
}

/// Encodes an announcement of `labels` into `out` (cleared first), with a
/// zeroed tag when `tag` is given (signing fills the MAC in, as for beats).
pub fn encode(
    seq: u64,
    sent_at_micros: u64,
    host_id: &str,
    labels: &Labels,
    tag: Option<Tag>,
    out: &mut Vec<u8>,
) -> Result<usize, AnnounceError> {
    let id = host_id.as_bytes();
    check_host_id_len(host_id).map_err(|_| AnnounceError::HostId)?;
    begin(MAGIC, if tag.is_some() { flags::TAGGED } else { 0 }, out);
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&sent_at_micros.to_be_bytes());
    out.push(id.len() as u8); // checked above
    out.extend_from_slice(id);
    // Labels are checked on the way in: at most 16, names of 64 bytes,
    // values of 128, so every count and length fits its byte.
    out.push(labels.len() as u8);
    for (name, value) in labels.iter() {
        out.push(name.len() as u8);
        out.extend_from_slice(name.as_bytes());
        out.push(value.len() as u8);
        out.extend_from_slice(value.as_bytes());
    }
    push_tag(tag, out);
    if out.len() > MAX_LEN {
        return Err(AnnounceError::TooLong(out.len()));
    }
    Ok(out.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(text: &str) -> Labels {
        Labels::parse_list(text).expect("labels")
    }

    #[test]
    fn round_trips_plain_and_tagged() {
        let mut out = Vec::new();
        let set = labels("team=web,role=frontend");
        encode(7, 99, "web-1", &set, None, &mut out).expect("encode");
        assert!(is_announcement(&out));
        let got = decode(&out).expect("decode");
        assert_eq!((got.seq, got.sent_at_micros, got.host_id), (7, 99, "web-1"));
        assert_eq!(got.labels().expect("labels"), set);
        assert_eq!(got.tag, None);
        let tag = Tag {
            key_id: 3,
            mac: [9; 16],
        };
        encode(8, 99, "web-1", &Labels::new(), Some(tag), &mut out).expect("encode");
        let got = decode(&out).expect("decode");
        assert_eq!(got.tag, Some(tag));
        assert!(got.labels().expect("labels").is_empty());
    }

    #[test]
    fn every_truncation_and_extension_is_refused_without_panic() {
        let mut out = Vec::new();
        encode(1, 2, "h", &labels("a=1,bb=22"), None, &mut out).expect("encode");
        for len in 0..out.len() {
            assert!(decode(&out[..len]).is_err(), "cut at {len}");
        }
        let mut longer = out.clone();
        longer.push(0);
        assert_eq!(decode(&longer), Err(DecodeError::LengthMismatch));
        // Arbitrary bytes after the magic: an error, never a panic.
        for byte in 0..=255u8 {
            let mut junk = out.clone();
            for at in 4..junk.len() {
                junk[at] = byte;
                let _ = decode(&junk).map(|a| a.labels());
            }
        }
    }

    #[test]
    fn bad_labels_and_oversize_are_refused() {
        let mut out = Vec::new();
        encode(1, 2, "h", &labels("team=web"), None, &mut out).expect("encode");
        let at = out.iter().position(|&b| b == b't').expect("name");
        out[at] = b'-';
        assert!(matches!(
            decode(&out).expect("structure").labels(),
            Err(AnnounceError::Label(_))
        ));
        let big: Vec<String> = (0..4)
            .map(|i| format!("l{i}={}", "v".repeat(120)))
            .collect();
        assert!(matches!(
            encode(1, 2, "h", &labels(&big.join(",")), None, &mut out),
            Err(AnnounceError::TooLong(_))
        ));
    }

    /// What a vector decodes to, as `docs/PROTOCOL.md` writes it.
    fn described(bytes: &[u8]) -> String {
        let a = match decode(bytes) {
            Ok(a) => a,
            Err(e) => return format!("error {}", e.as_str()),
        };
        let tag = a.tag.map_or("none".to_string(), |t| {
            let mac: String = t.mac.iter().map(|b| format!("{b:02x}")).collect();
            format!("{}:{mac}", t.key_id)
        });
        match a.labels() {
            Ok(set) => format!(
                "seq={} sent={} host={} labels={set} tag={tag}",
                a.seq, a.sent_at_micros, a.host_id
            ),
            Err(e) => format!("bad label: {e}"),
        }
    }

    /// The vectors of the doc's "Label announcements" section: a `### name`
    /// heading, a ```hex block, and `Announces: …`.
    fn doc_vectors() -> Vec<(String, Vec<u8>, String)> {
        let doc = include_str!("../../docs/PROTOCOL.md");
        let section = doc
            .split("\n## Label announcements")
            .nth(1)
            .expect("the section");
        let section = section.split("\n## ").next().unwrap_or(section);
        let (mut out, mut name, mut bytes) = (Vec::new(), String::new(), Vec::new());
        let mut lines = section.lines();
        while let Some(line) = lines.next() {
            if let Some(heading) = line.strip_prefix("### ") {
                name = heading.to_string();
            } else if line.trim() == "```hex" {
                let digits: String = lines
                    .by_ref()
                    .take_while(|l| l.trim() != "```")
                    .flat_map(|l| l.split('#').next().unwrap_or("").split_whitespace())
                    .collect();
                bytes = (0..digits.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).expect("hex"))
                    .collect();
            } else if let Some(expect) = line.strip_prefix("Announces: ") {
                out.push((name.clone(), bytes.clone(), expect.trim_matches('`').into()));
            }
        }
        out
    }

    #[test]
    fn protocol_doc_label_vectors() {
        let secret: Vec<u8> = (0u8..32).collect();
        let key = crate::auth::Key::new(1, &secret, false, None).expect("test key");
        let mut ring = crate::auth::KeyRing::default();
        ring.add(key.clone()).expect("one key");
        let vectors = doc_vectors();
        assert!(vectors.len() >= 4, "vectors in docs/PROTOCOL.md");
        for (name, bytes, expect) in vectors {
            assert_eq!(described(&bytes), expect, "vector {name}");
            let Ok(a) = decode(&bytes) else { continue };
            let Ok(set) = a.labels() else { continue };
            // The encoder writes exactly the documented bytes.
            let mut again = Vec::new();
            match a.tag {
                None => encode(a.seq, a.sent_at_micros, a.host_id, &set, None, &mut again),
                Some(_) => crate::auth::Signer::new(&key, a.host_id)
                    .expect("signer")
                    .sign_announcement(a.seq, a.sent_at_micros, a.host_id, &set, &mut again),
            }
            .expect("encodes");
            assert_eq!(again, bytes, "vector {name} encodes the same");
            if a.tag.is_some() {
                assert_eq!(ring.verify_announcement(&bytes, &a), Ok(()), "{name}");
            }
        }
    }
}
