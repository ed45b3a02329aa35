//! Keys, signing and verifying: the MAC of the v1 tag (see docs/PROTOCOL.md
//! and docs/SECURITY.md). No sockets, no clock.
//!
//! The MAC is HMAC-SHA256 over every byte of the packet before the MAC
//! (header, host id and key id), truncated to its first 16 bytes, compared
//! in constant time. Verifying allocates nothing: each key's keyed HMAC
//! state is computed once when the key file is read and cloned per packet
//! (a copy of a few hundred bytes on the stack).
//!
//! A key file holds one or more keys, each with an id, so keys can be
//! rotated: the server accepts any listed key; a client signs with one. A
//! key marked `per_host` is a *master* key: the server verifies a beat from
//! host `H` with `HMAC-SHA256(master, "lubdub host key" || H)`, and each
//! client holds only its own derived key ([`KeyRing::derive_for_host`]), so a
//! leaked client key cannot speak for any other host.

use crate::protocol::probe::Probe;
use crate::protocol::{self, Beat, EncodeError, MAC_LEN, Tag};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::fmt;
use std::path::{Path, PathBuf};

type HmacSha256 = Hmac<Sha256>;

/// The domain-separation prefix of a per-host key derivation.
pub const HOST_KEY_CONTEXT: &[u8] = b"lubdub host key";
/// Bytes of secret `lubdub keygen` generates (the HMAC-SHA256 block size
/// would allow more; 32 is SHA-256's own strength).
pub const SECRET_LEN: usize = 32;
/// Shortest secret a key file may hold: shorter keys are guessable.
pub const MIN_SECRET_LEN: usize = 16;
/// Longest secret a key file may hold (HMAC-SHA256's block size).
pub const MAX_SECRET_LEN: usize = 64;

/// Why a key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The key file cannot be read.
    #[error("cannot read key file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The key file is not a valid key file; the message says where.
    #[error("key file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// One line: what is wrong.
        message: String,
    },
    /// The key file is readable (or writable) by users other than its
    /// owner: anyone of them can forge beats. Refused, as ssh refuses a
    /// private key others can read.
    #[error(
        "key file {path} is accessible by {who} (mode {mode:04o}): anyone who can read it can forge beats; run chmod 600 {path}"
    )]
    Exposed {
        /// The file.
        path: PathBuf,
        /// `other users` or `its group`.
        who: &'static str,
        /// Its permission bits.
        mode: u32,
    },
    /// No key with the id asked for.
    #[error("key file {path} has no key with id {id}")]
    NoSuchKey {
        /// The file.
        path: PathBuf,
        /// The id asked for.
        id: u32,
    },
    /// The key is bound to another host than the one signing with it.
    #[error("key {id} is for host {key_host:?}, not {host:?}")]
    WrongHost {
        /// The key's id.
        id: u32,
        /// The host the key was derived for.
        key_host: String,
        /// The host id of this client.
        host: String,
    },
}

/// Why a signed-beats-only server refused a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The beat carries no tag.
    #[error("unsigned beat")]
    Unsigned,
    /// The tag names a key id the server does not have.
    #[error("unknown key id")]
    UnknownKey,
    /// The MAC does not match (wrong key, altered packet, or a key bound to
    /// another host).
    #[error("bad mac")]
    BadMac,
}

/// One key as written in the key file.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    id: u32,
    secret: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    per_host: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    host: Option<String>,
}

/// The key file: a list of `[[key]]` tables.
#[derive(Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    #[serde(default)]
    key: Vec<KeyEntry>,
}

/// One key: its id, its secret (kept only as a keyed HMAC state) and how
/// it may be used.
#[derive(Clone)]
pub struct Key {
    /// The id written in the tag of every packet signed with this key.
    pub id: u32,
    /// A master key: beats are verified with the key derived from it and
    /// the beat's host id.
    pub per_host: bool,
    /// Set on a key derived for one host: the only host it authenticates.
    pub host: Option<String>,
    secret: Vec<u8>,
    mac: HmacSha256,
}

impl fmt::Debug for Key {
    // Never print the secret, not even in a debug log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("id", &self.id)
            .field("per_host", &self.per_host)
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

impl Key {
    /// A key from its secret bytes (16 to 64 of them).
    pub fn new(
        id: u32,
        secret: &[u8],
        per_host: bool,
        host: Option<String>,
    ) -> Result<Key, String> {
        if !(MIN_SECRET_LEN..=MAX_SECRET_LEN).contains(&secret.len()) {
            return Err(format!(
                "key {id}: secret must be {MIN_SECRET_LEN} to {MAX_SECRET_LEN} bytes, got {}",
                secret.len()
            ));
        }
        let mac = HmacSha256::new_from_slice(secret).expect("HMAC takes a key of any length");
        Ok(Key {
            id,
            per_host,
            host,
            secret: secret.to_vec(),
            mac,
        })
    }

    /// A new random key from the operating system's generator.
    pub fn generate(id: u32, per_host: bool) -> Result<Key, getrandom::Error> {
        let mut secret = [0u8; SECRET_LEN];
        getrandom::fill(&mut secret)?;
        Ok(Key::new(id, &secret, per_host, None).expect("SECRET_LEN is in range"))
    }

    /// The HMAC state that authenticates beats from `host_id` with this key:
    /// the key's own, or for a master key the derived host key's.
    fn mac_for(&self, host_id: &str) -> HmacSha256 {
        if self.per_host {
            let derived = derive(&self.mac, host_id);
            HmacSha256::new_from_slice(&derived).expect("HMAC takes a key of any length")
        } else {
            self.mac.clone()
        }
    }
}

/// `HMAC-SHA256(master, "lubdub host key" || host_id)`.
fn derive(master: &HmacSha256, host_id: &str) -> [u8; 32] {
    let mut mac = master.clone();
    mac.update(HOST_KEY_CONTEXT);
    mac.update(host_id.as_bytes());
    mac.finalize().into_bytes().into()
}

/// The per-host key derived from `master_secret` for `host_id`, as the
/// server computes it for a `per_host` key.
pub fn host_key(master_secret: &[u8], host_id: &str) -> [u8; 32] {
    let master = HmacSha256::new_from_slice(master_secret).expect("HMAC takes a key of any length");
    derive(&master, host_id)
}

/// Refuses a key file that users other than its owner can access: any
/// permission for others, always; permission for its group unless root
/// owns the file (an administrator's deliberate `root:lubdub 0640`, as
/// PostgreSQL allows for its TLS key). `lubdub keygen` writes 0600.
pub fn check_private(path: &Path, metadata: &std::fs::Metadata) -> Result<(), Error> {
    use std::os::unix::fs::MetadataExt;
    let mode = metadata.mode() & 0o7777;
    let who = if mode & 0o007 != 0 {
        "other users"
    } else if mode & 0o070 != 0 && metadata.uid() != 0 {
        "its group"
    } else {
        return Ok(());
    };
    Err(Error::Exposed {
        path: path.to_path_buf(),
        who,
        mode,
    })
}

/// The keys of one key file, sorted by id.
#[derive(Clone, Debug, Default)]
pub struct KeyRing {
    keys: Vec<Key>,
}

impl KeyRing {
    /// Reads and checks a key file. A file others can access is refused
    /// (see [`check_private`]).
    pub fn load(path: &Path) -> Result<KeyRing, Error> {
        use std::io::Read;
        let read_error = |source| Error::Read {
            path: path.to_path_buf(),
            source,
        };
        let mut file = std::fs::File::open(path).map_err(read_error)?;
        // The mode of the file actually opened, not of whatever the path
        // names a moment later.
        let metadata = file.metadata().map_err(read_error)?;
        check_private(path, &metadata)?;
        let mut text = String::new();
        file.read_to_string(&mut text).map_err(read_error)?;
        KeyRing::parse(&text).map_err(|message| Error::Parse {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Parses key file text (TOML, see docs/SECURITY.md). It must hold at
    /// least one key, and ids must be unique.
    pub fn parse(text: &str) -> Result<KeyRing, String> {
        let file: KeyFile =
            toml::from_str(text).map_err(|e: toml::de::Error| e.message().replace('\n', " "))?;
        let mut ring = KeyRing::default();
        for entry in file.key {
            let secret = hex::decode(entry.secret.trim())
                .map_err(|e| format!("key {}: secret is not hex: {e}", entry.id))?;
            if entry.per_host && entry.host.is_some() {
                return Err(format!(
                    "key {}: a per_host master key is not bound to one host",
                    entry.id
                ));
            }
            ring.add(Key::new(entry.id, &secret, entry.per_host, entry.host)?)?;
        }
        if ring.keys.is_empty() {
            return Err("no keys ([[key]] tables)".into());
        }
        Ok(ring)
    }

    /// Adds a key; its id must be new.
    pub fn add(&mut self, key: Key) -> Result<(), String> {
        match self.keys.binary_search_by_key(&key.id, |k| k.id) {
            Ok(_) => Err(format!("key id {} is listed twice", key.id)),
            Err(at) => {
                self.keys.insert(at, key);
                Ok(())
            }
        }
    }

    /// The key with `id`.
    pub fn get(&self, id: u32) -> Option<&Key> {
        self.keys
            .binary_search_by_key(&id, |k| k.id)
            .ok()
            .map(|i| &self.keys[i])
    }

    /// The key with the highest id: the newest, by the rotation convention
    /// that `lubdub keygen --add` numbers keys upwards.
    pub fn newest(&self) -> Option<&Key> {
        self.keys.last()
    }

    /// Every key, by id.
    pub fn keys(&self) -> &[Key] {
        &self.keys
    }

    /// The keys `host_id` signs with: for each master key (or only the one
    /// with `only_id`), the key derived for that host, bound to it.
    pub fn derive_for_host(&self, host_id: &str, only_id: Option<u32>) -> Result<KeyRing, String> {
        let mut out = KeyRing::default();
        for key in self
            .keys
            .iter()
            .filter(|k| only_id.is_none_or(|id| k.id == id))
        {
            if key.per_host {
                let derived = derive(&key.mac, host_id);
                out.add(Key::new(key.id, &derived, false, Some(host_id.into()))?)?;
            }
        }
        if out.keys.is_empty() {
            return Err(match only_id {
                Some(id) => format!("no per_host master key with id {id}"),
                None => "no per_host master key to derive from".into(),
            });
        }
        Ok(out)
    }

    /// The key file text for these keys, with a header saying what it is.
    pub fn to_toml(&self) -> String {
        let file = KeyFile {
            key: self
                .keys
                .iter()
                .map(|k| KeyEntry {
                    id: k.id,
                    secret: hex::encode(&k.secret),
                    per_host: k.per_host,
                    host: k.host.clone(),
                })
                .collect(),
        };
        let body = toml::to_string(&file).expect("a key file serialises");
        format!(
            "# lubdub key file: keep it secret (mode 0600). See docs/SECURITY.md.\n\
             # The server accepts every key listed; a client signs with the one\n\
             # given by --key-id, or the highest id.\n\n{body}"
        )
    }

    /// Checks a beat's tag against these keys. `datagram` is the whole
    /// packet `beat` was decoded from. Allocation-free.
    pub fn verify(&self, datagram: &[u8], beat: &Beat<'_>) -> Result<(), VerifyError> {
        self.verify_tag(datagram, beat.host_id, beat.tag)
    }

    /// [`KeyRing::verify`] for a label announcement: the same keys and MAC.
    pub fn verify_announcement(
        &self,
        datagram: &[u8],
        announcement: &crate::protocol::labels::Announcement<'_>,
    ) -> Result<(), VerifyError> {
        self.verify_tag(datagram, announcement.host_id, announcement.tag)
    }

    fn verify_tag(
        &self,
        datagram: &[u8],
        host_id: &str,
        tag: Option<Tag>,
    ) -> Result<(), VerifyError> {
        let tag = tag.ok_or(VerifyError::Unsigned)?;
        let key = self.get(tag.key_id).ok_or(VerifyError::UnknownKey)?;
        if key.host.as_deref().is_some_and(|h| h != host_id) {
            return Err(VerifyError::BadMac);
        }
        // The decoder checked that a tagged packet ends with the MAC.
        let signed = &datagram[..datagram.len() - MAC_LEN];
        let mut mac = key.mac_for(host_id);
        mac.update(signed);
        mac.verify_truncated_left(&tag.mac)
            .map_err(|_| VerifyError::BadMac)
    }
}

impl KeyRing {
    /// Checks the tag of a datagram other than a beat (a maintenance
    /// announcement) from `host_id`: `datagram` ends with the MAC.
    pub fn verify_tagged(
        &self,
        datagram: &[u8],
        tag: Option<Tag>,
        host_id: &str,
    ) -> Result<(), VerifyError> {
        let tag = tag.ok_or(VerifyError::Unsigned)?;
        let key = self.get(tag.key_id).ok_or(VerifyError::UnknownKey)?;
        if key.host.as_deref().is_some_and(|h| h != host_id) || datagram.len() < MAC_LEN {
            return Err(VerifyError::BadMac);
        }
        let mut mac = key.mac_for(host_id);
        mac.update(&datagram[..datagram.len() - MAC_LEN]);
        mac.verify_truncated_left(&tag.mac)
            .map_err(|_| VerifyError::BadMac)
    }

    /// Writes the MAC of key `key_id` for `host_id` over all but the last
    /// [`MAC_LEN`] bytes of `datagram` into them (a server's signed reply).
    pub fn sign_tagged(&self, key_id: u32, host_id: &str, datagram: &mut [u8]) -> Option<()> {
        let key = self.get(key_id)?;
        let split = datagram.len().checked_sub(MAC_LEN)?;
        let mut mac = key.mac_for(host_id);
        mac.update(&datagram[..split]);
        datagram[split..].copy_from_slice(&mac.finalize().into_bytes()[..MAC_LEN]);
        Some(())
    }

    /// The key id the server signs probes with (its newest key): a host is
    /// probed only while its beats are signed with this key too, so the
    /// client holds the key to check the probe with (issue 15).
    pub fn probe_key_id(&self) -> Option<u32> {
        self.newest().map(|key| key.id)
    }

    /// Encodes `probe` into `out`, signed with the newest key (for a master
    /// key, with the probed host's derived key).
    pub fn sign_probe(&self, probe: &Probe<'_>, out: &mut Vec<u8>) -> Result<usize, EncodeError> {
        let Some(key) = self.newest() else {
            return protocol::probe::encode_probe(
                &Probe {
                    tag: None,
                    ..*probe
                },
                out,
            );
        };
        let tagged = Probe {
            tag: Some(Tag {
                key_id: key.id,
                mac: [0; MAC_LEN],
            }),
            ..*probe
        };
        let len = protocol::probe::encode_probe(&tagged, out)?;
        let mut mac = key.mac_for(probe.host_id);
        mac.update(&out[..len - MAC_LEN]);
        let full = mac.finalize().into_bytes();
        out[len - MAC_LEN..].copy_from_slice(&full[..MAC_LEN]);
        Ok(len)
    }
}

/// Signs beats of one host with one key (the client's side).
#[derive(Clone)]
pub struct Signer {
    key_id: u32,
    mac: HmacSha256,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// A signer for `host_id` with `key`. A master key is turned into the
    /// host's derived key here, so the beats verify against the same master
    /// on the server (though a client should hold only its derived key).
    pub fn new(key: &Key, host_id: &str) -> Result<Signer, Error> {
        if let Some(key_host) = &key.host
            && key_host != host_id
        {
            return Err(Error::WrongHost {
                id: key.id,
                key_host: key_host.clone(),
                host: host_id.into(),
            });
        }
        Ok(Signer {
            key_id: key.id,
            mac: key.mac_for(host_id),
        })
    }

    /// The key id written in the tags.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// Writes the MAC over all but the last [`MAC_LEN`] bytes of
    /// `datagram` into them (datagrams other than beats).
    pub fn sign_tagged(&self, datagram: &mut [u8]) {
        let split = datagram.len().saturating_sub(MAC_LEN);
        let mut mac = self.mac.clone();
        mac.update(&datagram[..split]);
        datagram[split..].copy_from_slice(&mac.finalize().into_bytes()[..MAC_LEN]);
    }

    /// True when `datagram` (ending with the MAC of `tag`) was signed with
    /// this signer's key (constant time).
    pub fn verify_tagged(&self, datagram: &[u8], tag: Option<Tag>) -> bool {
        let Some(tag) = tag.filter(|t| t.key_id == self.key_id) else {
            return false;
        };
        let Some(split) = datagram.len().checked_sub(MAC_LEN) else {
            return false;
        };
        let mut mac = self.mac.clone();
        mac.update(&datagram[..split]);
        mac.verify_truncated_left(&tag.mac).is_ok()
    }

    /// Checks a probe's tag (`datagram`: the whole probe `probe` was
    /// decoded from): signed with this very key, for this host.
    pub fn verify_probe(&self, datagram: &[u8], probe: &Probe<'_>) -> Result<(), VerifyError> {
        let tag = probe.tag.ok_or(VerifyError::Unsigned)?;
        if tag.key_id != self.key_id {
            return Err(VerifyError::UnknownKey);
        }
        let mut mac = self.mac.clone();
        mac.update(protocol::probe::signed_part(datagram));
        mac.verify_truncated_left(&tag.mac)
            .map_err(|_| VerifyError::BadMac)
    }

    /// Encodes `beat` into `out` with a tag whose MAC covers every byte
    /// before it. The beat's own tag, if any, is replaced.
    pub fn sign(&self, beat: &Beat<'_>, out: &mut Vec<u8>) -> Result<usize, EncodeError> {
        let tagged = Beat {
            tag: Some(Tag {
                key_id: self.key_id,
                mac: [0; MAC_LEN],
            }),
            ..*beat
        };
        let len = protocol::encode(&tagged, out)?;
        self.fill_mac(&mut out[..len]);
        Ok(len)
    }

    /// Encodes a label announcement into `out`, signed as a beat is.
    pub fn sign_announcement(
        &self,
        seq: u64,
        sent_at_micros: u64,
        host_id: &str,
        labels: &crate::labels::Labels,
        out: &mut Vec<u8>,
    ) -> Result<usize, crate::protocol::labels::AnnounceError> {
        let tag = Tag {
            key_id: self.key_id,
            mac: [0; MAC_LEN],
        };
        let len =
            crate::protocol::labels::encode(seq, sent_at_micros, host_id, labels, Some(tag), out)?;
        self.fill_mac(&mut out[..len]);
        Ok(len)
    }

    /// Writes the MAC over every byte before the packet's last 16.
    fn fill_mac(&self, packet: &mut [u8]) {
        let len = packet.len();
        let mut mac = self.mac.clone();
        mac.update(&packet[..len - MAC_LEN]);
        let full = mac.finalize().into_bytes();
        packet[len - MAC_LEN..].copy_from_slice(&full[..MAC_LEN]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Packet, decode, flags};

    /// The documented test key of docs/PROTOCOL.md and docs/SECURITY.md:
    /// bytes 0x00 to 0x1f.
    fn test_key_secret() -> Vec<u8> {
        (0u8..32).collect()
    }

    fn beat(host_id: &str) -> Beat<'_> {
        Beat {
            flags: 0,
            seq: 1,
            boot_id: [0x11; 16],
            sent_at_micros: 1_700_000_000_000_000,
            interval_ms: 10_000,
            host_id,
            answers: None,
            tag: None,
        }
    }

    fn ring(keys: &[(u32, &[u8], bool)]) -> KeyRing {
        let mut ring = KeyRing::default();
        for &(id, secret, per_host) in keys {
            ring.add(Key::new(id, secret, per_host, None).expect("key"))
                .expect("add");
        }
        ring
    }

    /// A ring holding only the documented test key, as key `id` (not per
    /// host), and a signer of `web-1` with it.
    fn test_ring_and_signer(id: u32) -> (KeyRing, Signer) {
        let ring = ring(&[(id, &test_key_secret(), false)]);
        let key = ring.get(id).expect("the test key");
        let signer = Signer::new(key, "web-1").expect("signer");
        (ring, signer)
    }

    fn verify(ring: &KeyRing, bytes: &[u8]) -> Result<(), VerifyError> {
        let Ok(Packet::V1(beat)) = decode(bytes) else {
            panic!("decodes")
        };
        ring.verify(bytes, &beat)
    }

    #[test]
    fn signed_beats_verify_and_every_failure_has_its_reason() {
        let (ring, signer) = test_ring_and_signer(1);
        let mut bytes = Vec::new();
        signer.sign(&beat("web-1"), &mut bytes).expect("sign");
        assert_eq!(verify(&ring, &bytes), Ok(()));

        let mut plain = Vec::new();
        protocol::encode(&beat("web-1"), &mut plain).expect("encode");
        assert_eq!(verify(&ring, &plain), Err(VerifyError::Unsigned));

        let other = self::ring(&[(2, &[7u8; 32], false)]);
        assert_eq!(verify(&other, &bytes), Err(VerifyError::UnknownKey));
        let wrong = self::ring(&[(1, &[7u8; 32], false)]);
        assert_eq!(verify(&wrong, &bytes), Err(VerifyError::BadMac));

        // Every single bit of the packet is covered, the MAC included.
        for byte in 0..bytes.len() {
            for bit in 0..8 {
                let mut flipped = bytes.clone();
                flipped[byte] ^= 1 << bit;
                if let Ok(Packet::V1(beat)) = decode(&flipped)
                    && beat.tag.is_some_and(|t| t.key_id == 1)
                {
                    assert_eq!(
                        ring.verify(&flipped, &beat),
                        Err(VerifyError::BadMac),
                        "bit {bit} of byte {byte}"
                    );
                }
            }
        }
    }

    #[test]
    fn per_host_keys_speak_only_for_their_host() {
        let master = test_key_secret();
        let server = ring(&[(5, &master, true)]);
        let clients = server.derive_for_host("web-1", None).expect("derive");
        let key = clients.get(5).expect("derived key 5");
        assert_eq!(key.host.as_deref(), Some("web-1"));
        assert_eq!(key.secret, host_key(&master, "web-1"));
        assert_ne!(key.secret, master);

        let signer = Signer::new(key, "web-1").expect("signer");
        let mut bytes = Vec::new();
        signer.sign(&beat("web-1"), &mut bytes).expect("sign");
        assert_eq!(verify(&server, &bytes), Ok(()));

        // web-1's key refuses to sign for db-1, and a forged beat for db-1
        // made with web-1's key does not verify.
        assert!(matches!(
            Signer::new(key, "db-1"),
            Err(Error::WrongHost { .. })
        ));
        let unbound = Key::new(5, &key.secret, false, None).expect("key");
        let forger = Signer::new(&unbound, "db-1").expect("signer");
        forger.sign(&beat("db-1"), &mut bytes).expect("sign");
        assert_eq!(verify(&server, &bytes), Err(VerifyError::BadMac));

        // A server listing web-1's bound key accepts only web-1.
        let bound = KeyRing::parse(&clients.to_toml()).expect("parse");
        assert_eq!(verify(&bound, &bytes), Err(VerifyError::BadMac));
    }

    #[test]
    fn documented_host_key_derivation() {
        // The value docs/PROTOCOL.md states for host web-1 and the test key.
        assert_eq!(
            hex::encode(host_key(&test_key_secret(), "web-1")),
            "0b603b526a604861ed5a9db3eef21af89e39a11b80c129e6f99b9a8419fcc110"
        );
    }

    #[test]
    fn key_file_round_trips_and_rejects_bad_files() {
        let mut ring = KeyRing::default();
        ring.add(Key::generate(1, false).expect("random"))
            .expect("add");
        ring.add(Key::generate(2, true).expect("random"))
            .expect("add");
        let text = ring.to_toml();
        let back = KeyRing::parse(&text).expect("parse");
        assert_eq!(back.keys().len(), 2);
        assert_eq!(back.newest().map(|k| (k.id, k.per_host)), Some((2, true)));
        assert_eq!(
            back.get(1).map(|k| &k.secret),
            ring.get(1).map(|k| &k.secret)
        );
        assert_ne!(
            ring.get(1).map(|k| &k.secret),
            ring.get(2).map(|k| &k.secret)
        );
        assert!(!format!("{back:?}").contains(&hex::encode(&back.keys()[0].secret)));

        let s = "00112233445566778899aabbccddeeff";
        for (bad, why) in [
            ("", "no keys"),
            (
                &format!("[[key]]\nid = 1\nsecret = \"{s}\"\n[[key]]\nid = 1\nsecret = \"{s}\"\n"),
                "twice",
            ),
            ("[[key]]\nid = 1\nsecret = \"0011\"\n", "16 to 64 bytes"),
            ("[[key]]\nid = 1\nsecret = \"zz\"\n", "not hex"),
            (
                &format!("[[key]]\nid = 1\nsecret = \"{s}\"\nsecrte = 1\n"),
                "secrte",
            ),
            (
                &format!("[[key]]\nid = 1\nsecret = \"{s}\"\nper_host = true\nhost = \"a\"\n"),
                "master",
            ),
        ] {
            let err = KeyRing::parse(bad).expect_err(why);
            assert!(err.contains(why) && !err.contains('\n'), "{why}: {err}");
        }
    }

    #[test]
    fn signing_replaces_an_existing_tag_and_sets_the_flag() {
        let (ring, signer) = test_ring_and_signer(9);
        let mut bytes = Vec::new();
        let with_tag = Beat {
            tag: Some(Tag {
                key_id: 1,
                mac: [0xee; MAC_LEN],
            }),
            ..beat("web-1")
        };
        signer.sign(&with_tag, &mut bytes).expect("sign");
        let Ok(Packet::V1(got)) = decode(&bytes) else {
            panic!("decodes")
        };
        assert_eq!(got.flags & flags::TAGGED, flags::TAGGED);
        assert_eq!(got.tag.map(|t| t.key_id), Some(9));
        assert_eq!(ring.verify(&bytes, &got), Ok(()));
    }
}
