//! `lubdub keygen`: writes key files (docs/SECURITY.md), readable by their
//! owner only.

use anyhow::{Context, bail};
use clap::Args;
use lubdub::auth::{Key, KeyRing};
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Key files hold secrets: owner read/write only.
const KEY_FILE_MODE: u32 = 0o600;

/// Flags of `lubdub keygen`.
#[derive(Args)]
pub struct KeygenArgs {
    /// Key file to write (unset: print the key to stdout).
    #[arg(value_name = "FILE")]
    file: Option<PathBuf>,
    /// Add a new key (next free id) to an existing FILE, for rotation.
    #[arg(long, requires = "file", conflicts_with = "force")]
    add: bool,
    /// Replace FILE if it exists.
    #[arg(long, requires = "file")]
    force: bool,
    /// Make the new key a per-host master key: each host signs with its
    /// own key derived from it (`--for-host`).
    #[arg(long, conflicts_with = "for_host")]
    per_host: bool,
    /// Id of the new key (unset: 1, or one above the highest with --add).
    #[arg(long, value_name = "N", conflicts_with = "for_host")]
    id: Option<u32>,
    /// Write HOST's own keys, derived from the per-host master keys of
    /// `--from`, instead of a new random key.
    #[arg(long, value_name = "HOST", requires = "from")]
    for_host: Option<String>,
    /// With --for-host: the server's key file holding the master keys.
    #[arg(long, value_name = "MASTER_FILE", requires = "for_host")]
    from: Option<PathBuf>,
    /// With --for-host: derive only the master key with this id.
    #[arg(long, value_name = "N", requires = "for_host")]
    key_id: Option<u32>,
}

/// Writes or prints the new key file.
pub fn run(args: KeygenArgs) -> anyhow::Result<()> {
    let (ring, added) = match (&args.for_host, &args.from) {
        (Some(host), Some(master)) => {
            let master = KeyRing::load(master)?;
            let ring = master
                .derive_for_host(host, args.key_id)
                .map_err(anyhow::Error::msg)
                .with_context(|| format!("deriving keys for host {host:?}"))?;
            let ids: Vec<u32> = ring.keys().iter().map(|k| k.id).collect();
            (ring, ids)
        }
        _ => {
            let mut ring = match (&args.file, args.add) {
                (Some(path), true) => KeyRing::load(path)?,
                _ => KeyRing::default(),
            };
            let id = match args.id {
                Some(id) => id,
                None => match ring.newest() {
                    Some(k) => k.id.checked_add(1).context("key ids exhausted")?,
                    None => 1,
                },
            };
            let key = Key::generate(id, args.per_host)
                .map_err(|e| anyhow::anyhow!("reading the OS random generator: {e}"))?;
            ring.add(key).map_err(anyhow::Error::msg)?;
            (ring, vec![id])
        }
    };
    let text = ring.to_toml();
    match &args.file {
        None => print!("{text}"),
        Some(path) => {
            write_key_file(path, &text, args.add || args.force)?;
            eprintln!(
                "lubdub: wrote key {} to {} (mode 0600)",
                added
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                path.display()
            );
        }
    }
    Ok(())
}

/// Writes `text` to `path` with mode 0600. Without `replace`, an existing
/// file is an error; with it, the file is replaced atomically (a temporary
/// file renamed over it), so a crash never leaves half a key file.
fn write_key_file(path: &Path, text: &str, replace: bool) -> anyhow::Result<()> {
    if !replace {
        let mut file = match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(KEY_FILE_MODE)
            .open(path)
        {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => bail!(
                "{} exists: use --add to add a key to it, or --force to replace it",
                path.display()
            ),
            other => other.with_context(|| format!("creating {}", path.display()))?,
        };
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .with_context(|| format!("writing {}", path.display()))?;
        return Ok(());
    }
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let _ = std::fs::remove_file(&tmp); // a stale one from a crash
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(KEY_FILE_MODE)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("replacing {} with {}", path.display(), tmp.display()))
}
