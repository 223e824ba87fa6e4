//! `dtcprobe keygen [--out FILE]`: a pre-shared key for `agent`/`peer` without openssl. 32 random
//! bytes from the OS, hex-encoded (64 characters and a newline), so the file can be copied, pasted
//! and compared by eye.
//!
//! With `--out`, the file is created new (an existing file is never overwritten: rotating a key
//! is a deliberate act) and owner-only: mode 0600 at creation on Unix (no window in which it is
//! readable by others); on Windows its ACL is set to one entry for the current account,
//! inheritance removed (`SetEntriesInAclW` + `SetNamedSecurityInfoW`, `agent::key_acl`). Under
//! wine that sets the Unix mode to 0600, and the key then passes the loader's ACL check there;
//! real NTFS behaviour is for a real Windows host to confirm. If it fails the file is deleted and
//! keygen fails, so a key is never left readable by others.

use std::io::Write;
use std::path::Path;

use thiserror::Error;

use super::protocol::hex_encode;

/// Random bytes in a generated key.
pub const KEY_BYTES: usize = 32;

#[derive(Debug, Error)]
pub enum KeygenError {
    #[error("no randomness from the operating system: {0}")]
    Random(String),
    #[error("{path} already exists: not overwritten (remove it first to rotate the key)")]
    Exists { path: String },
    #[error("cannot write key file {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot restrict the ACL of {path} to its owner: {reason} (file removed)")]
    Acl { path: String, reason: String },
}

/// A fresh key file's contents: 64 hex digits and a newline.
pub fn new_key_text() -> Result<String, KeygenError> {
    let mut bytes = [0u8; KEY_BYTES];
    getrandom::fill(&mut bytes).map_err(|e| KeygenError::Random(e.to_string()))?;
    Ok(format!("{}\n", hex_encode(&bytes)))
}

/// Writes a new key file at `path`, owner-only.
pub fn write_key_file(path: &Path) -> Result<(), KeygenError> {
    let shown = path.display().to_string();
    let text = new_key_text()?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::AlreadyExists {
            KeygenError::Exists {
                path: shown.clone(),
            }
        } else {
            KeygenError::Write {
                path: shown.clone(),
                source,
            }
        }
    })?;
    #[cfg(windows)]
    if let Err(reason) = restrict_acl_windows(path) {
        drop(file);
        let _ = std::fs::remove_file(path);
        return Err(KeygenError::Acl {
            path: shown,
            reason,
        });
    }
    let written = file
        .write_all(text.as_bytes())
        .and_then(|_| file.sync_all());
    if let Err(source) = written {
        drop(file);
        let _ = std::fs::remove_file(path);
        return Err(KeygenError::Write {
            path: shown,
            source,
        });
    }
    Ok(())
}

/// Windows: an ACL of one entry for this account, inherited entries removed (before the key is
/// written), through the ACL API (`agent::key_acl`).
#[cfg(windows)]
fn restrict_acl_windows(path: &Path) -> Result<(), String> {
    super::key_acl::restrict_to_owner(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::protocol::Key;

    #[test]
    fn generated_keys_are_hex_random_and_load() {
        let a = new_key_text().unwrap();
        let b = new_key_text().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), KEY_BYTES * 2 + 1);
        assert!(a.trim_end().bytes().all(|c| c.is_ascii_hexdigit()));
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("agent.key");
        write_key_file(&p).unwrap();
        assert!(Key::load(&p).is_ok(), "a generated key file loads");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        // Never overwritten.
        let before = std::fs::read(&p).unwrap();
        assert!(matches!(
            write_key_file(&p),
            Err(KeygenError::Exists { .. })
        ));
        assert_eq!(std::fs::read(&p).unwrap(), before);
    }
}
