//! The packet decoder and MAC verifier on arbitrary datagrams: neither may
//! panic, a decoded beat re-encodes to the same bytes, and a beat signed
//! with a key verifies with it while the same bytes with any other tag do not.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lubdub::auth::{Key, KeyRing, Signer, VerifyError};
use lubdub::protocol::{self, Packet};
use std::sync::OnceLock;

/// The documented test key (id 1) and a per-host master key (id 2).
fn ring() -> &'static KeyRing {
    static RING: OnceLock<KeyRing> = OnceLock::new();
    RING.get_or_init(|| {
        let secret: Vec<u8> = (0u8..32).collect();
        let mut ring = KeyRing::default();
        ring.add(Key::new(1, &secret, false, None).expect("test key"))
            .expect("add");
        ring.add(Key::new(2, &[0x42; 32], true, None).expect("master key"))
            .expect("add");
        ring
    })
}

fuzz_target!(|data: &[u8]| {
    let ring = ring();
    let Ok(packet) = protocol::decode(data) else {
        return;
    };
    let Packet::V1(beat) = packet else { return };
    let result = ring.verify(data, &beat);
    if beat.tag.is_none() {
        assert_eq!(result, Err(VerifyError::Unsigned));
    }

    // Decoding is exact: encoding the beat gives back the same bytes.
    let mut again = Vec::new();
    protocol::encode(&beat, &mut again).expect("a decoded beat encodes");
    assert_eq!(again, data);

    // Signing the beat with either key makes it verify; the signed bytes
    // decode to the same beat apart from the tag.
    for id in [1, 2] {
        let signer = Signer::new(ring.get(id).expect("key"), beat.host_id).expect("signer");
        let mut signed = Vec::new();
        signer.sign(&beat, &mut signed).expect("sign");
        let Ok(Packet::V1(back)) = protocol::decode(&signed) else {
            panic!("a signed beat decodes");
        };
        assert_eq!(back.host_id, beat.host_id);
        assert_eq!(back.seq, beat.seq);
        assert_eq!(ring.verify(&signed, &back), Ok(()));
        // The fuzzer's own MAC on these bytes verifies only if it is the
        // right one.
        if let Some(tag) = beat.tag
            && tag.key_id == id
            && result.is_ok()
        {
            assert_eq!(back.tag.map(|t| t.mac), Some(tag.mac));
        }
    }
});
