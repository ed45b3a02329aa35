//! Who the client says it is: the host id, the boot id, and the key its
//! beats are signed with.

use super::Error;
use crate::auth::{KeyRing, Signer};
use crate::protocol;

/// The OS's boot id (Linux: `/proc/sys/kernel/random/boot_id`); all zero
/// (unknown) elsewhere, so the server never reports a false reboot.
pub fn boot_id() -> [u8; 16] {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .and_then(|text| protocol::parse_boot_id(&text))
        .unwrap_or([0; 16])
}

/// The boot id written in `path` (a UUID, as the kernel's).
pub fn boot_id_from(path: &std::path::Path) -> Result<[u8; 16], Error> {
    let error = |reason: String| Error::BootId {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
    protocol::parse_boot_id(&text)
        .ok_or_else(|| error("expected a UUID such as 0f5ad3c2-6a1e-4b0c-9d7e-2f4a8c1b3e5d".into()))
}

/// This machine's hostname, cut to the protocol's host id limit.
pub fn default_host_id() -> String {
    let mut name = gethostname::gethostname().to_string_lossy().into_owned();
    if name.is_empty() {
        name = "localhost".into();
    }
    let mut end = name.len().min(protocol::MAX_HOST_ID_LEN);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name.truncate(end);
    name
}

/// The signer for `host_id` from the key file: key `key_id`, or the newest.
pub fn signer(path: &std::path::Path, key_id: Option<u32>, host_id: &str) -> Result<Signer, Error> {
    let ring = KeyRing::load(path)?;
    let key = match key_id {
        Some(id) => ring.get(id).ok_or_else(|| crate::auth::Error::NoSuchKey {
            path: path.to_path_buf(),
            id,
        })?,
        None => ring.newest().expect("a loaded key file has a key"),
    };
    Ok(Signer::new(key, host_id)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostname_default_fits_the_protocol() {
        let id = default_host_id();
        assert!(!id.is_empty() && id.len() <= protocol::MAX_HOST_ID_LEN);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn linux_has_a_boot_id() {
        assert_ne!(boot_id(), [0; 16]);
    }
}
