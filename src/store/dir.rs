//! The data directory: where it is, its lock, the alive mark beside the
//! store, and forgetting the store.

use super::record::{from_millis, millis};
use super::{Error, FILE_NAME, LOCK_NAME};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The data directory to use: the configured one; else systemd's
/// `$STATE_DIRECTORY` (`StateDirectory=lubdub` → `/var/lib/lubdub`); else
/// the per-user data directory (`~/.local/share/lubdub` on Linux).
pub fn resolve_data_dir(configured: Option<&Path>) -> Result<PathBuf, Error> {
    if let Some(dir) = configured {
        return Ok(dir.to_path_buf());
    }
    if let Some(dirs) = std::env::var_os("STATE_DIRECTORY") {
        // systemd lists one directory per StateDirectory= entry, ':'-separated.
        if let Some(first) = dirs.to_str().and_then(|d| d.split(':').next())
            && !first.is_empty()
        {
            return Ok(PathBuf::from(first));
        }
    }
    directories::ProjectDirs::from("", "", "lubdub")
        .map(|dirs| dirs.data_dir().to_path_buf())
        .ok_or(Error::NoDataDir)
}

/// Takes the data directory's lock (creating the directory), so that no
/// other server can use it.
pub(super) fn lock(dir: &Path) -> Result<File, Error> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    // Private: the store holds every host's address. An existing directory
    // keeps its mode (systemd's StateDirectory= sets its own).
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| Error::Dir {
            path: dir.to_path_buf(),
            source,
        })?;
    let lock_path = dir.join(LOCK_NAME);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&lock_path)
        .map_err(|source| Error::Dir {
            path: lock_path,
            source,
        })?;
    // SAFETY: flock(2) on a descriptor we own; no memory is involved.
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if locked != 0 {
        let err = io::Error::last_os_error();
        return Err(if err.kind() == io::ErrorKind::WouldBlock {
            Error::Locked {
                path: dir.to_path_buf(),
            }
        } else {
            Error::Dir {
                path: dir.join(LOCK_NAME),
                source: err,
            }
        });
    }
    Ok(file)
}

/// The alive mark beside the store: the wall time (Unix milliseconds, as
/// text) the server last said it was running, rewritten every
/// [`ALIVE_EVERY`]. Much cheaper than a checkpoint, so that after a
/// `kill -9` the outage is known to within that, not to within the
/// checkpoint interval.
pub const ALIVE_NAME: &str = "lubdub.alive";

/// How often the running server rewrites its alive mark.
pub const ALIVE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Writes the alive mark in `dir`: the server is running at `now`.
pub fn mark_alive(dir: &Path, now: SystemTime) -> io::Result<()> {
    // Not atomic, and need not be: a torn mark reads as none, and the
    // store's own last write stands in for it.
    std::fs::write(dir.join(ALIVE_NAME), millis(now).to_string())
}

/// The alive mark in `dir`, if there is a readable one.
pub(super) fn read_alive(dir: &Path) -> Option<SystemTime> {
    let text = std::fs::read_to_string(dir.join(ALIVE_NAME)).ok()?;
    text.trim().parse().ok().map(from_millis)
}

/// Removes the store in `dir` (under the lock, so never under a running
/// server), for `lubdub server --forget-all`. Returns whether there was one.
pub fn forget(dir: &Path) -> Result<bool, Error> {
    let _lock = lock(dir)?;
    let _ = std::fs::remove_file(dir.join(ALIVE_NAME));
    let path = dir.join(FILE_NAME);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(Error::Dir { path, source }),
    }
}

/// Creates an empty store file readable by its owner only (redb would
/// create it with the umask's mode).
pub(super) fn create_private(path: &Path) -> Result<(), Error> {
    use std::os::unix::fs::OpenOptionsExt;
    File::options()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map(drop)
        .map_err(|source| Error::Dir {
            path: path.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    #[test]
    fn a_second_open_of_one_directory_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let _first = Store::open(dir.path()).expect("open");
        let err = Store::open(dir.path()).err().expect("second open refused");
        assert!(matches!(err, Error::Locked { .. }), "{err}");
        assert!(
            matches!(forget(dir.path()), Err(Error::Locked { .. })),
            "no forgetting under a running server"
        );
    }
}
