//! The pre-shared key: loading the key file safely, and the keys derived from it for the Noise
//! channel ([`Key::psk`]) and the callback token ([`callback_token`]). Pure apart from reading the
//! key file.
//!
//! What the key file holds is never used directly: HKDF-SHA256 (RFC 5869) with a salt naming the
//! protocol version and one `info` label per use turns it into independent 32-byte keys, so the
//! Noise PSK and the callback key cannot be mistaken for each other, or for the keys of another
//! protocol version, even though they come from the same file.

use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use thiserror::Error;

/// Minimum key length, in bytes after trimming surrounding whitespace.
pub const MIN_KEY_LEN: usize = 32;

type HmacSha256 = Hmac<Sha256>;

/// HKDF salt: the protocol this key material is for.
const KDF_SALT: &[u8] = b"dtcprobe-agent/3";
/// HKDF labels, one per derived key.
const PSK_LABEL: &[u8] = b"noise NNpsk0 psk";
const CALLBACK_LABEL: &[u8] = b"callback token";

/// Why the handshake or an encrypted frame did not authenticate.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("handshake failed: the near side and the agent do not hold the same key")]
    Handshake,
    #[error(
        "an encrypted frame did not decrypt: tampered with, replayed, or from another session"
    )]
    Decrypt,
}

#[derive(Debug, Error)]
pub enum KeyError {
    #[error("cannot read key file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("key file {path} holds {len} bytes after trimming; at least {MIN_KEY_LEN} are required (make one with `dtcprobe keygen --out {path}`)")]
    TooShort { path: String, len: usize },
    #[error("key file {path} is larger than {MAX_KEY_FILE_LEN} bytes: not a key file")]
    TooLarge { path: String },
    #[error("key file {path} is not a regular file (a FIFO, device or directory): refused")]
    NotAFile { path: String },
    #[error("key file {path} is accessible by group or others (mode {mode:04o}): refused; restrict it with `chmod 600 {path}`")]
    Permissions { path: String, mode: u32 },
    /// Windows: the ACL lets other accounts read the key (printed as a warning, see `load`).
    #[error("key file {path}: {problem}: restrict it to your account with `icacls \"{path}\" /inheritance:r /grant:r \"%USERDOMAIN%\\%USERNAME%\":F` (cmd.exe) or `dtcprobe keygen --out` a new one")]
    Acl { path: String, problem: String },
}

/// Largest key file read, in bytes (a hex key from `keygen` is 65).
pub const MAX_KEY_FILE_LEN: u64 = 4096;

/// The pre-shared key, as the two keys derived from it (the key file's bytes are not kept). Its
/// `Debug` never shows them.
#[derive(Clone)]
pub struct Key {
    psk: [u8; 32],
    callback_key: [u8; 32],
    len: usize,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key(<{} bytes, redacted>)", self.len)
    }
}

impl Key {
    /// A key from the contents of a key file: surrounding whitespace (a trailing newline) is
    /// trimmed; at least [`MIN_KEY_LEN`] bytes must remain.
    pub fn from_bytes(bytes: &[u8], origin: &str) -> Result<Key, KeyError> {
        let trimmed = trim_ascii(bytes);
        if trimmed.len() < MIN_KEY_LEN {
            return Err(KeyError::TooShort {
                path: origin.to_string(),
                len: trimmed.len(),
            });
        }
        Ok(Key {
            psk: hkdf_sha256(KDF_SALT, trimmed, PSK_LABEL),
            callback_key: hkdf_sha256(KDF_SALT, trimmed, CALLBACK_LABEL),
            len: trimmed.len(),
        })
    }

    /// The Noise pre-shared key (32 bytes, as `NNpsk0` needs).
    pub fn psk(&self) -> &[u8; 32] {
        &self.psk
    }

    /// Reads a key file. Refused: anything but a regular file (a FIFO would block, a device
    /// such as `/dev/zero` would never end), files over [`MAX_KEY_FILE_LEN`] bytes, and on Unix a
    /// file any group or other user may access (mode `& 0o077`), like ssh does with its keys. On
    /// Windows an ACL that lets other accounts read it (`agent::key_acl`) is warned about.
    pub fn load(path: &Path) -> Result<Key, KeyError> {
        use std::io::Read;
        let shown = path.display().to_string();
        let read_error = |source| KeyError::Read {
            path: shown.clone(),
            source,
        };
        let mut options = std::fs::OpenOptions::new();
        options.read(true);
        // Opening a FIFO for reading blocks until a writer appears: open non-blocking, then
        // refuse it from the metadata of what was opened.
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.custom_flags(libc::O_NONBLOCK);
        }
        let file = options.open(path).map_err(read_error)?;
        let meta = file.metadata().map_err(read_error)?;
        if !meta.is_file() {
            return Err(KeyError::NotAFile { path: shown });
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode() & 0o7777;
            if mode & 0o077 != 0 {
                return Err(KeyError::Permissions { path: shown, mode });
            }
        }
        // Windows: warned, not refused. Inherited read entries (Users, Authenticated Users from
        // the parent folder) are common on servers and a refusal there would stop the agent on
        // first start; the warning names the accounts and the fix.
        #[cfg(windows)]
        if let Err(problem) = crate::agent::key_acl::check(path) {
            eprintln!(
                "dtcprobe: warning: {}",
                KeyError::Acl {
                    path: shown.clone(),
                    problem: problem.to_string(),
                }
            );
        }
        let mut bytes = Vec::new();
        file.take(MAX_KEY_FILE_LEN + 1)
            .read_to_end(&mut bytes)
            .map_err(read_error)?;
        if bytes.len() as u64 > MAX_KEY_FILE_LEN {
            return Err(KeyError::TooLarge { path: shown });
        }
        Key::from_bytes(&bytes, &shown)
    }
}

fn trim_ascii(mut b: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = b {
        if first.is_ascii_whitespace() {
            b = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = b {
        if last.is_ascii_whitespace() {
            b = rest;
        } else {
            break;
        }
    }
    b
}

/// HKDF-SHA256 (RFC 5869), extract then expand, for one 32-byte output block.
fn hkdf_sha256(salt: &[u8], ikm: &[u8], info: &[u8]) -> [u8; 32] {
    let mut extract = <HmacSha256 as Mac>::new_from_slice(salt).expect("HMAC takes any key length");
    extract.update(ikm);
    let prk = extract.finalize().into_bytes();
    let mut expand = <HmacSha256 as Mac>::new_from_slice(&prk).expect("HMAC takes any key length");
    expand.update(info);
    expand.update(&[1]);
    expand.finalize().into_bytes().into()
}

/// The token the agent sends over the callback connection: HMAC-SHA256 under the key file's
/// callback key, over the session's Noise handshake hash, as 64 lowercase hex digits. Bound to the
/// session (every handshake hash differs: fresh ephemeral keys on both sides) and to the key (the
/// handshake hash alone is computable by an eavesdropper, the token is not). Both sides compute
/// it, so it never travels before the callback, a token seen on one callback is worthless for any
/// other session, and the caller cannot choose the bytes the agent writes to its port.
pub fn callback_token(key: &Key, handshake_hash: &[u8]) -> String {
    let mut mac =
        <HmacSha256 as Mac>::new_from_slice(&key.callback_key).expect("HMAC takes any key length");
    mac.update(handshake_hash);
    hex_encode(&mac.finalize().into_bytes())
}

/// Length of a callback token, in hex digits.
pub const CALLBACK_TOKEN_LEN: usize = 64;

pub fn hex_encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 0xf) as usize] as char);
    }
    s
}

/// Hex to bytes; `None` for odd lengths, non-hex digits, or more than 256 digits (nothing in the
/// protocol is longer: a handshake message is 48 bytes).
pub fn hex_decode(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 || text.len() > 256 {
        return None;
    }
    let digit = |c: u8| -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    };
    text.as_bytes()
        .chunks(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Key {
        Key::from_bytes(b"0123456789abcdef0123456789abcdef\n", "test").unwrap()
    }

    #[test]
    fn key_file_rules() {
        let cases: &[(&[u8], bool)] = &[
            (b"", false),
            (b"short", false),
            (b"   0123456789abcdef0123456789abcde  \n", false), // 31 after trim
            (b"0123456789abcdef0123456789abcdef", true),
            (b"\t0123456789abcdef0123456789abcdef\r\n", true),
        ];
        for (bytes, ok) in cases {
            assert_eq!(Key::from_bytes(bytes, "k").is_ok(), *ok, "{bytes:?}");
        }
        let k = key();
        assert!(
            !format!("{k:?}").contains("0123"),
            "Debug must not leak the key"
        );
        // Trimmed whitespace does not change the key.
        let spaced = Key::from_bytes(b"  0123456789abcdef0123456789abcdef\r\n", "k").unwrap();
        assert_eq!(spaced.psk(), k.psk());
        let err = Key::from_bytes(b"short", "/etc/k").unwrap_err().to_string();
        assert!(err.contains("/etc/k") && err.contains("32"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn key_file_loading_refuses_unsafe_files() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, bytes: &[u8], mode: u32| {
            let p = dir.path().join(name);
            std::fs::write(&p, bytes).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            p
        };
        let good = [b'k'; 64];
        assert!(Key::load(&write("ok", &good, 0o600)).is_ok());
        assert!(Key::load(&write("ro", &good, 0o400)).is_ok());
        for mode in [0o644, 0o640, 0o666, 0o604, 0o620] {
            let e = Key::load(&write(&format!("m{mode:o}"), &good, mode)).unwrap_err();
            assert!(matches!(e, KeyError::Permissions { .. }), "{mode:o}: {e}");
            assert!(e.to_string().contains("chmod 600"), "{e}");
        }
        let big = vec![b'k'; MAX_KEY_FILE_LEN as usize + 1];
        assert!(matches!(
            Key::load(&write("big", &big, 0o600)),
            Err(KeyError::TooLarge { .. })
        ));
        // Devices and FIFOs are refused without reading (no endless read, no blocking open).
        assert!(matches!(
            Key::load(Path::new("/dev/zero")),
            Err(KeyError::NotAFile { .. })
        ));
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(matches!(Key::load(&fifo), Err(KeyError::NotAFile { .. })));
        assert!(matches!(
            Key::load(dir.path()),
            Err(KeyError::NotAFile { .. }) | Err(KeyError::Read { .. })
        ));
    }

    #[test]
    fn hex_round_trip() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(
            hex_decode(&hex_encode(&bytes[..100])).unwrap(),
            bytes[..100]
        );
        assert_eq!(hex_decode("0G"), None);
        assert_eq!(hex_decode("ABcd"), Some(vec![0xab, 0xcd]));
    }
    #[test]
    fn hkdf_matches_rfc5869_test_case_1() {
        let ikm = [0x0bu8; 22];
        let salt: Vec<u8> = (0x00..=0x0c).collect();
        let info: Vec<u8> = (0xf0..=0xf9).collect();
        assert_eq!(
            hex_encode(&hkdf_sha256(&salt, &ikm, &info)),
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"
        );
    }

    #[test]
    fn derived_keys_are_separated_by_label_and_key() {
        let k = key();
        let other = Key::from_bytes(&[b'z'; 40], "other").unwrap();
        assert_ne!(k.psk(), other.psk());
        // The PSK and the callback key come from the same key file under different labels.
        assert_ne!(k.psk(), &k.callback_key);
        let raw = b"0123456789abcdef0123456789abcdef";
        assert_ne!(
            &k.psk()[..],
            &raw[..],
            "the PSK is derived, not the key file itself"
        );
    }

    #[test]
    fn callback_token_is_fixed_format_and_bound_to_key_and_session() {
        let k = key();
        let other = Key::from_bytes(&[b'z'; 40], "other").unwrap();
        let t = callback_token(&k, &[1u8; 32]);
        assert_eq!(t.len(), CALLBACK_TOKEN_LEN);
        assert!(t.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
        assert_eq!(t, callback_token(&k, &[1u8; 32]));
        for different in [
            callback_token(&other, &[1u8; 32]),
            callback_token(&k, &[2u8; 32]),
        ] {
            assert_ne!(t, different);
        }
    }
}
