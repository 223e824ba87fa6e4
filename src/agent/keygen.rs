//! `dtcprobe keygen [--out FILE]`: a pre-shared key for `agent`/`peer` without openssl. 32 random
//! bytes from the OS, hex-encoded (64 characters and a newline), so the file can be copied, pasted
//! and compared by eye.
//!
//! `dtcprobe keygen --identity [--out FILE]`: an agent's own static key pair (its identity file,
//! the private key in the same format), and prints the public key and its fingerprint: what
//! peers pin with `--agent-pubkey`. The agent also makes one itself on first start.
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

use super::protocol::{hex_encode, AgentIdentity};

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
    write_secret_file(path, &new_key_text()?)
}

/// A new agent identity, written to `path` owner-only (never over an existing file).
pub fn write_identity_file(path: &Path) -> Result<AgentIdentity, KeygenError> {
    let identity = AgentIdentity::generate().map_err(|e| KeygenError::Random(e.to_string()))?;
    write_secret_file(path, &identity.file_text())?;
    Ok(identity)
}

/// What peers need to pin an identity, for the terminal (never the private key).
pub fn describe_public(identity: &AgentIdentity) -> String {
    let public = identity.public();
    format!(
        "agent public key: {public}\nfingerprint: {}\npin it on the near side with --agent-pubkey {public} (matrix: agent_pubkey = \"{public}\" in the zone)",
        public.fingerprint()
    )
}

/// `dtcprobe keygen`: exit code 0, or 78 when nothing could be written.
pub fn keygen_main(out: Option<&Path>, identity: bool) -> u8 {
    let result = match (out, identity) {
        (Some(path), false) => write_key_file(path).map(|()| {
            eprintln!(
                "wrote {} (owner-only); copy it to the other host over a safe channel",
                path.display()
            );
        }),
        (None, false) => new_key_text().map(|text| print!("{text}")),
        (Some(path), true) => write_identity_file(path).map(|id| {
            eprintln!(
                "wrote {} (owner-only; it stays on the agent's host: pass it with --identity-file)",
                path.display()
            );
            println!("{}", describe_public(&id));
        }),
        (None, true) => AgentIdentity::generate()
            .map_err(|e| KeygenError::Random(e.to_string()))
            .map(|id| {
                print!("{}", id.file_text());
                eprintln!("{}", describe_public(&id));
            }),
    };
    match result {
        Ok(()) => crate::exit::OK,
        Err(e) => {
            eprintln!("dtcprobe keygen: {e}");
            crate::exit::CONFIG
        }
    }
}

/// Creates `path` new and owner-only, then writes `text` (removed again on any failure).
fn write_secret_file(path: &Path, text: &str) -> Result<(), KeygenError> {
    let shown = path.display().to_string();
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
