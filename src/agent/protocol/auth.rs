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
use sha2::{Digest, Sha256};
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
    #[error("key file {path} holds {len} bytes of key; at least {MIN_KEY_LEN} random bytes (64 hex digits) are required (make one with `dtcprobe keygen --out {path}`)")]
    TooShort { path: String, len: usize },
    /// Guessable: not hex, or bytes that repeat, count or take few values. A key found offline
    /// from one captured handshake opens every agent of the deployment.
    #[error("key file {path}: {problem}: refused, such a key can be guessed (make a new one with `dtcprobe keygen --out {path}`, and copy it to both sides)")]
    Weak { path: String, problem: String },
    /// The agent's identity file (its static private key) is not what `keygen --identity` writes.
    #[error("identity file {path}: {problem}: refused (make a new one with `dtcprobe keygen --identity --out {path}`; peers that pinned the old one must pin the new public key)")]
    WeakIdentity { path: String, problem: String },
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
    /// trimmed; what remains must be hex digits that decode to at least [`MIN_KEY_LEN`]
    /// random-looking bytes ([`check_key_material`]), as `keygen` writes. The derived keys come
    /// from the trimmed text, so a key file `keygen` wrote before this rule keeps its keys.
    pub fn from_bytes(bytes: &[u8], origin: &str) -> Result<Key, KeyError> {
        let trimmed = trim_ascii(bytes);
        let weak = |problem: String| KeyError::Weak {
            path: origin.to_string(),
            problem,
        };
        let decoded = std::str::from_utf8(trimmed)
            .ok()
            .and_then(hex_decode_key)
            .ok_or_else(|| weak("not hex digits (keygen writes 64 of them)".into()))?;
        if decoded.len() < MIN_KEY_LEN {
            return Err(KeyError::TooShort {
                path: origin.to_string(),
                len: decoded.len(),
            });
        }
        check_key_material(&decoded).map_err(|w| weak(w.to_string()))?;
        Ok(Key {
            psk: hkdf_sha256(KDF_SALT, trimmed, PSK_LABEL),
            callback_key: hkdf_sha256(KDF_SALT, trimmed, CALLBACK_LABEL),
            len: trimmed.len(),
        })
    }

    /// The Noise pre-shared key (32 bytes, as `psk0` needs).
    pub fn psk(&self) -> &[u8; 32] {
        &self.psk
    }

    /// Reads a key file. Refused: anything but a regular file (a FIFO would block, a device
    /// such as `/dev/zero` would never end), files over [`MAX_KEY_FILE_LEN`] bytes, and on Unix a
    /// file any group or other user may access (mode `& 0o077`), like ssh does with its keys. On
    /// Windows an ACL that lets other accounts read it (`agent::key_acl`) is warned about.
    pub fn load(path: &Path) -> Result<Key, KeyError> {
        let bytes = read_key_file(path)?;
        Key::from_bytes(&bytes, &path.display().to_string())
    }
}

/// Reads a secret file (the key file, an agent's identity file) under [`Key::load`]'s rules.
pub(super) fn read_key_file(path: &Path) -> Result<Vec<u8>, KeyError> {
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
    Ok(bytes)
}

/// Hex digits to bytes, any even length (a key file is at most [`MAX_KEY_FILE_LEN`] bytes).
fn hex_decode_key(text: &str) -> Option<Vec<u8>> {
    if text.is_empty() || text.len() % 2 != 0 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() / 2);
    for chunk in text.as_bytes().chunks(256) {
        out.extend(hex_decode(std::str::from_utf8(chunk).ok()?)?);
    }
    Some(out)
}

/// Why key material looks guessable.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum Weakness {
    #[error("{0} bytes, fewer than {MIN_KEY_LEN}")]
    Short(usize),
    #[error("one byte repeated")]
    Constant,
    #[error("a pattern of {0} bytes repeated")]
    Repeats(usize),
    #[error("a counting sequence")]
    Sequence,
    #[error("only {distinct} different byte values in {len} bytes (random bytes have many more)")]
    FewValues { distinct: usize, len: usize },
}

/// Pure: does `bytes` (decoded key material) look like the output of a random generator? Refused:
/// fewer than [`MIN_KEY_LEN`] bytes, one byte repeated, a repeated pattern, a counting sequence,
/// or few distinct values (32 random bytes take about 30 different values; fewer than half of
/// the possible ones happens by chance with a probability below 1e-9).
pub fn check_key_material(bytes: &[u8]) -> Result<(), Weakness> {
    let len = bytes.len();
    if len < MIN_KEY_LEN {
        return Err(Weakness::Short(len));
    }
    if bytes.iter().all(|b| *b == bytes[0]) {
        return Err(Weakness::Constant);
    }
    if let Some(period) = (1..=len / 2).find(|p| (0..len - p).all(|i| bytes[i] == bytes[i + p])) {
        return Err(Weakness::Repeats(period));
    }
    let step = bytes[1].wrapping_sub(bytes[0]);
    if bytes.windows(2).all(|w| w[1].wrapping_sub(w[0]) == step) {
        return Err(Weakness::Sequence);
    }
    let mut seen = [false; 256];
    for b in bytes {
        seen[*b as usize] = true;
    }
    let distinct = seen.iter().filter(|s| **s).count();
    if distinct * 2 < len.min(256) {
        return Err(Weakness::FewValues { distinct, len });
    }
    Ok(())
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

/// A well-formed key file's text derived from `label` (SHA-256, hex): for tests and examples
/// only, since the key is exactly as secret as the label. Real keys come from `keygen`.
pub fn example_key_text(label: &str) -> String {
    format!("{}\n", hex_encode(&Sha256::digest(label.as_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Key {
        Key::from_bytes(example_key_text("unit").as_bytes(), "test").unwrap()
    }

    #[test]
    fn key_file_rules() {
        let good = example_key_text("rules");
        let hex = good.trim();
        let cases: Vec<(Vec<u8>, bool)> = vec![
            (b"".to_vec(), false),
            (b"short".to_vec(), false),
            (hex.as_bytes()[..62].to_vec(), false), // 31 bytes
            (hex.as_bytes().to_vec(), true),
            (format!("\t{hex}\r\n").into_bytes(), true),
            (format!("{hex}{hex}").into_bytes(), false), // repeated
            // What the attacks used: 32 `a`, 32 NUL bytes, non-hex text.
            (vec![b'a'; 32], false),
            (vec![b'a'; 64], false),
            (vec![0u8; 32], false),
            (
                b"attack-suite-key-0123456789abcdef0123456789".to_vec(),
                false,
            ),
            (
                b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef".to_vec(),
                false,
            ),
            // A counting sequence: 32 distinct values, still guessable.
            (
                hex_encode(&(0u8..32).collect::<Vec<_>>()).into_bytes(),
                false,
            ),
        ];
        for (bytes, ok) in &cases {
            assert_eq!(
                Key::from_bytes(bytes, "k").is_ok(),
                *ok,
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
        let k = key();
        assert!(
            !format!("{k:?}").contains(&example_key_text("unit")[..8]),
            "Debug must not leak the key"
        );
        // Trimmed whitespace does not change the key.
        let spaced = Key::from_bytes(
            format!("  {}\r\n", example_key_text("unit").trim()).as_bytes(),
            "k",
        )
        .unwrap();
        assert_eq!(spaced.psk(), k.psk());
        let err = Key::from_bytes(b"abcd", "/etc/k").unwrap_err().to_string();
        assert!(
            err.contains("/etc/k") && err.contains("32") && err.contains("keygen"),
            "{err}"
        );
        let err = Key::from_bytes(&[b'z'; 40], "/etc/k")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("not hex") && err.contains("keygen --out /etc/k"),
            "{err}"
        );
    }

    #[test]
    fn key_material_weaknesses_table() {
        let random: Vec<u8> = Sha256::digest(b"x").to_vec();
        assert_eq!(check_key_material(&random), Ok(()));
        let cases: &[(&[u8], Weakness)] = &[
            (&[7u8; 20], Weakness::Short(20)),
            (&[0u8; 32], Weakness::Constant),
            (&[1, 2, 3, 4].repeat(8), Weakness::Repeats(4)),
        ];
        for (bytes, want) in cases {
            assert_eq!(check_key_material(bytes).unwrap_err(), *want, "{bytes:?}");
        }
        let counting: Vec<u8> = (100u8..140).collect();
        assert_eq!(check_key_material(&counting), Err(Weakness::Sequence));
        // Eight values, in a random order.
        let few: Vec<u8> = Sha256::digest(b"few").iter().map(|b| b % 8).collect();
        assert!(
            matches!(check_key_material(&few), Err(Weakness::FewValues { .. })),
            "{few:?}"
        );
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
        let good = example_key_text("load");
        let good = good.as_bytes();
        assert!(Key::load(&write("ok", good, 0o600)).is_ok());
        assert!(Key::load(&write("ro", good, 0o400)).is_ok());
        for mode in [0o644, 0o640, 0o666, 0o604, 0o620] {
            let e = Key::load(&write(&format!("m{mode:o}"), good, mode)).unwrap_err();
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
        let other = Key::from_bytes(example_key_text("other").as_bytes(), "other").unwrap();
        assert_ne!(k.psk(), other.psk());
        // The PSK and the callback key come from the same key file under different labels.
        assert_ne!(k.psk(), &k.callback_key);
        let raw = hex_decode(example_key_text("unit").trim()).unwrap();
        assert_ne!(
            &k.psk()[..],
            &raw[..],
            "the PSK is derived, not the key file itself"
        );
    }

    #[test]
    fn callback_token_is_fixed_format_and_bound_to_key_and_session() {
        let k = key();
        let other = Key::from_bytes(example_key_text("other").as_bytes(), "other").unwrap();
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
