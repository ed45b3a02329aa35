//! The probe: a datagram from the server to a silent host's client, asking
//! "are you there?" (issue 15). The client answers with an ordinary beat
//! carrying the probe's nonce (`flags::ANSWER`), to its server, never to
//! the probe's source if that differs.
//!
//! Its own magic (`LBDP`), so a probe can never be read as a beat (nor a
//! beat's MAC as a probe's: the MAC covers the magic). Always shorter than
//! the beat that earned it: 16 bytes plus the host id (plus the 20-byte
//! tag when the server has keys), where a beat has 43 plus the host id.
//! `docs/PROTOCOL.md`, "Probes", documents every byte, with test vectors
//! that a unit test decodes.

use super::{
    DecodeError, EncodeError, MAC_LEN, Tag, array, begin, check_host_id_len, flags, host_id_len,
    push_tag, read_host_id, read_tag, split_header, tag_len,
};

/// The four bytes every probe starts with: ASCII `LBDP`.
pub const PROBE_MAGIC: [u8; 4] = *b"LBDP";
/// Bytes before the host id: magic, version, type, flags, nonce, host id
/// length.
pub const PROBE_HEADER_LEN: usize = 16;
/// Datagram types after the `LBDP` magic. WARNING: only append.
pub const TYPE_PROBE: u8 = 1;

/// One decoded probe, borrowing its host id from the datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe<'a> {
    /// Fresh per probe; the answering beat carries it back.
    pub nonce: u64,
    /// The host probed: a client answers only probes for its own id.
    pub host_id: &'a str,
    /// Present when the server signs (it has keys): key id and MAC over
    /// every byte before the MAC, with the host's key.
    pub tag: Option<Tag>,
}

/// True when `datagram` starts like a probe (for counting what a client
/// receives).
pub fn is_probe(datagram: &[u8]) -> bool {
    datagram.len() >= 4 && datagram[..4] == PROBE_MAGIC
}

/// Decodes a probe. Never panics, never allocates.
pub fn decode_probe(datagram: &[u8]) -> Result<Probe<'_>, DecodeError> {
    let (header, rest) = split_header(datagram, PROBE_HEADER_LEN, PROBE_MAGIC)?;
    if header[5] != TYPE_PROBE {
        return Err(DecodeError::UnknownType(header[5]));
    }
    let tag_len = tag_len(header[6]);
    let id_len = host_id_len(header[15])?;
    if rest.len() != id_len + tag_len {
        return Err(DecodeError::LengthMismatch);
    }
    let (id, tag_bytes) = rest.split_at(id_len);
    Ok(Probe {
        nonce: u64::from_be_bytes(array(&header[7..15])),
        host_id: read_host_id(id)?,
        tag: read_tag(tag_bytes),
    })
}

/// Encodes `probe` into `out` (cleared first) and returns its length. The
/// tag is written as given; the auth layer fills in the MAC.
pub fn encode_probe(probe: &Probe<'_>, out: &mut Vec<u8>) -> Result<usize, EncodeError> {
    let id = probe.host_id.as_bytes();
    check_host_id_len(probe.host_id)?;
    begin(PROBE_MAGIC, TYPE_PROBE, out);
    // A probe's flags byte has the beat's `TAGGED` bit, which `tag_len` reads.
    out.push(probe.tag.map_or(0, |_| flags::TAGGED));
    out.extend_from_slice(&probe.nonce.to_be_bytes());
    out.push(id.len() as u8); // checked against MAX_HOST_ID_LEN above
    out.extend_from_slice(id);
    push_tag(probe.tag, out);
    Ok(out.len())
}

/// The bytes a tagged probe's MAC covers: all but the MAC.
pub fn signed_part(datagram: &[u8]) -> &[u8] {
    &datagram[..datagram.len().saturating_sub(MAC_LEN)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encoded(probe: &Probe<'_>) -> Vec<u8> {
        super::super::tests::encoded_by(encode_probe, probe)
    }

    #[test]
    fn round_trip_and_always_shorter_than_the_beat() {
        for tag in [
            None,
            Some(Tag {
                key_id: 1,
                mac: [7; MAC_LEN],
            }),
        ] {
            let probe = Probe {
                nonce: 0x0102_0304_0506_0708,
                host_id: "web-1",
                tag,
            };
            let bytes = encoded(&probe);
            assert_eq!(decode_probe(&bytes), Ok(probe));
            let beat = super::super::Beat {
                flags: 0,
                seq: 1,
                boot_id: [0; 16],
                sent_at_micros: 0,
                interval_ms: 0,
                host_id: "web-1",
                answers: None,
                tag,
            };
            let mut beat_bytes = Vec::new();
            super::super::encode(&beat, &mut beat_bytes).expect("beat");
            assert!(bytes.len() < beat_bytes.len());
        }
    }

    #[test]
    fn every_decode_error() {
        let good = encoded(&Probe {
            nonce: 1,
            host_id: "h",
            tag: None,
        });
        let with = |at: usize, value: u8| {
            let mut bytes = good.clone();
            bytes[at] = value;
            bytes
        };
        let cases: &[(&[u8], DecodeError)] = &[
            (b"LBDP", DecodeError::TooShort),
            (b"LBDB0000000000000000", DecodeError::BadMagic),
            (&with(4, 2), DecodeError::UnsupportedVersion(2)),
            (&with(5, 9), DecodeError::UnknownType(9)),
            (&with(15, 0), DecodeError::EmptyHostId),
            (&with(6, flags::TAGGED), DecodeError::LengthMismatch),
            (&with(16, 0xff), DecodeError::HostIdNotUtf8),
            (&with(16, b'\n'), DecodeError::HostIdForbiddenChar),
        ];
        for (bytes, want) in cases {
            assert_eq!(decode_probe(bytes), Err(*want), "{bytes:02x?}");
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = decode_probe(&bytes);
        }
    }
}
