//! Authentication of the agent protocol (pre-shared key, HMAC-SHA256): the key, the request and
//! response MACs, nonces and the replay guard. Pure apart from reading the key file and drawing
//! random nonces; the scheme is described in the parent module.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use thiserror::Error;

use super::frame::FrameError;
use super::messages::{Message, RequestBody, ResponseBody};

/// Accepted clock difference between the near side and the agent, either way.
pub const REPLAY_WINDOW_SECS: u64 = 60;
/// Minimum key length, in bytes after trimming surrounding whitespace.
pub const MIN_KEY_LEN: usize = 32;
/// Length of nonces, in random bytes (sent hex-encoded).
pub const NONCE_LEN: usize = 16;

type HmacSha256 = Hmac<Sha256>;

const REQUEST_CONTEXT: &[u8] = b"dtcprobe-agent/1 request";
const RESPONSE_CONTEXT: &[u8] = b"dtcprobe-agent/1 response";
const CALLBACK_CONTEXT: &[u8] = b"dtcprobe-agent/2 callback";

#[derive(Debug, Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("request does not answer the nonce this agent issued")]
    WrongNonce,
    #[error("request timestamp is {skew_secs}s away from the agent's clock (allowed: ±{REPLAY_WINDOW_SECS}s)")]
    Stale { skew_secs: i64 },
    #[error("bad MAC: the near side and the agent do not share the same key")]
    BadMac,
    #[error("MAC is not valid hex")]
    MalformedMac,
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
    /// Windows: the ACL lets other accounts read the key.
    #[error("key file {path}: {problem}: refused; restrict it to your account with `icacls \"{path}\" /inheritance:r /grant:r \"%USERDOMAIN%\\%USERNAME%\":F` (cmd.exe) or `dtcprobe keygen --out` a new one")]
    Acl { path: String, problem: String },
}

/// Largest key file read, in bytes (a hex key from `keygen` is 65).
pub const MAX_KEY_FILE_LEN: u64 = 4096;

/// The pre-shared key. Its `Debug` never shows the bytes.
#[derive(Clone)]
pub struct Key(Vec<u8>);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key(<{} bytes, redacted>)", self.0.len())
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
        Ok(Key(trimmed.to_vec()))
    }

    /// Reads a key file. Refused: anything but a regular file (a FIFO would block, a device
    /// such as `/dev/zero` would never end), files over [`MAX_KEY_FILE_LEN`] bytes, and on Unix a
    /// file any group or other user may access (mode `& 0o077`), like ssh does with its keys; on
    /// Windows an ACL that lets other accounts read it (`agent::key_acl`).
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
        #[cfg(windows)]
        if let Err(problem) = crate::agent::key_acl::check(path) {
            return Err(KeyError::Acl {
                path: shown,
                problem: problem.to_string(),
            });
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

    fn mac(&self) -> HmacSha256 {
        // HMAC accepts keys of any length.
        <HmacSha256 as Mac>::new_from_slice(&self.0).expect("HMAC takes any key length")
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

fn feed(mac: &mut HmacSha256, field: &[u8]) {
    mac.update(&(field.len() as u64).to_be_bytes());
    mac.update(field);
}

fn request_mac(
    key: &Key,
    nonce: &str,
    client_nonce: &str,
    timestamp: u64,
    body: &str,
) -> HmacSha256 {
    let mut mac = key.mac();
    feed(&mut mac, REQUEST_CONTEXT);
    feed(&mut mac, nonce.as_bytes());
    feed(&mut mac, client_nonce.as_bytes());
    feed(&mut mac, &timestamp.to_be_bytes());
    feed(&mut mac, body.as_bytes());
    mac
}

fn response_mac(key: &Key, client_nonce: &str, body: &str) -> HmacSha256 {
    let mut mac = key.mac();
    feed(&mut mac, RESPONSE_CONTEXT);
    feed(&mut mac, client_nonce.as_bytes());
    feed(&mut mac, body.as_bytes());
    mac
}

/// Builds an authenticated request message for the server nonce of a `Hello`.
pub fn sign_request(
    key: &Key,
    nonce: &str,
    client_nonce: &str,
    timestamp: u64,
    body: &RequestBody,
) -> Message {
    let body = serde_json::to_string(body).expect("request bodies always serialize");
    sign_request_raw(key, nonce, client_nonce, timestamp, &body)
}

/// As [`sign_request`], for a body already serialized (tests use it to send bodies the typed API
/// cannot express).
pub fn sign_request_raw(
    key: &Key,
    nonce: &str,
    client_nonce: &str,
    timestamp: u64,
    body: &str,
) -> Message {
    let mac = request_mac(key, nonce, client_nonce, timestamp, body)
        .finalize()
        .into_bytes();
    Message::Request {
        nonce: nonce.to_string(),
        client_nonce: client_nonce.to_string(),
        timestamp,
        body: body.to_string(),
        mac: hex_encode(&mac),
    }
}

/// Verifies a request MAC in constant time.
pub fn verify_request(
    key: &Key,
    nonce: &str,
    client_nonce: &str,
    timestamp: u64,
    body: &str,
    mac_hex: &str,
) -> Result<(), AuthError> {
    let tag = hex_decode(mac_hex).ok_or(AuthError::MalformedMac)?;
    request_mac(key, nonce, client_nonce, timestamp, body)
        .verify_slice(&tag)
        .map_err(|_| AuthError::BadMac)
}

pub fn sign_response(
    key: &Key,
    client_nonce: &str,
    body: &ResponseBody,
) -> Result<Message, FrameError> {
    let body = serde_json::to_string(body).map_err(|e| FrameError::Malformed(e.to_string()))?;
    let mac = response_mac(key, client_nonce, &body)
        .finalize()
        .into_bytes();
    Ok(Message::Response {
        body,
        mac: hex_encode(&mac),
    })
}

pub fn verify_response(
    key: &Key,
    client_nonce: &str,
    body: &str,
    mac_hex: &str,
) -> Result<(), AuthError> {
    let tag = hex_decode(mac_hex).ok_or(AuthError::MalformedMac)?;
    response_mac(key, client_nonce, body)
        .verify_slice(&tag)
        .map_err(|_| AuthError::BadMac)
}

/// Rejects a request timestamp more than [`REPLAY_WINDOW_SECS`] away from the agent's clock
/// `now`. Replays need no cache: a request must answer the nonce the agent issued on its own
/// connection, and every connection gets a fresh random one.
pub fn check_fresh(timestamp: u64, now: u64) -> Result<(), AuthError> {
    let skew = timestamp as i128 - now as i128;
    if skew.unsigned_abs() > REPLAY_WINDOW_SECS as u128 {
        return Err(AuthError::Stale {
            skew_secs: skew.clamp(i64::MIN as i128, i64::MAX as i128) as i64,
        });
    }
    Ok(())
}

/// The token the agent sends over the callback connection: HMAC(key, context | server nonce |
/// client nonce), hex. Both sides compute it, so it never travels before the callback; an
/// eavesdropper who saw the nonces cannot compute it without the key, and the caller cannot
/// choose the bytes the agent writes to its port. Fixed format: [`CALLBACK_TOKEN_LEN`] hex digits.
pub fn callback_token(key: &Key, nonce: &str, client_nonce: &str) -> String {
    let mut mac = key.mac();
    feed(&mut mac, CALLBACK_CONTEXT);
    feed(&mut mac, nonce.as_bytes());
    feed(&mut mac, client_nonce.as_bytes());
    hex_encode(&mac.finalize().into_bytes())
}

/// Length of a callback token, in hex digits.
pub const CALLBACK_TOKEN_LEN: usize = 64;

// ---------------------------------------------------------------------------------------------
// Small helpers

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

/// A fresh random nonce, hex-encoded.
pub fn new_nonce() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; NONCE_LEN];
    getrandom::fill(&mut bytes)?;
    Ok(hex_encode(&bytes))
}

pub fn hex_encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 0xf) as usize] as char);
    }
    s
}

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
        let err = Key::from_bytes(b"short", "/etc/k").unwrap_err().to_string();
        assert!(err.contains("/etc/k") && err.contains("32"), "{err}");
    }

    #[test]
    fn request_mac_verifies_and_detects_tampering() {
        let k = key();
        let other = Key::from_bytes(&[b'z'; 40], "other").unwrap();
        let Message::Request {
            nonce,
            client_nonce,
            timestamp,
            body,
            mac,
        } = sign_request(&k, "n1", "c1", 1000, &RequestBody::Ping)
        else {
            panic!("not a request")
        };
        assert_eq!(
            verify_request(&k, &nonce, &client_nonce, timestamp, &body, &mac),
            Ok(())
        );
        // (key, nonce, client nonce, timestamp, body, mac) -> expected
        type Case<'a> = (
            &'a Key,
            &'a str,
            &'a str,
            u64,
            &'a str,
            String,
            Result<(), AuthError>,
        );
        let flipped = {
            let mut m = hex_decode(&mac).unwrap();
            m[0] ^= 1;
            hex_encode(&m)
        };
        let cases: Vec<Case> = vec![
            (
                &other,
                "n1",
                "c1",
                1000,
                &body,
                mac.clone(),
                Err(AuthError::BadMac),
            ),
            (
                &k,
                "n2",
                "c1",
                1000,
                &body,
                mac.clone(),
                Err(AuthError::BadMac),
            ),
            (
                &k,
                "n1",
                "c2",
                1000,
                &body,
                mac.clone(),
                Err(AuthError::BadMac),
            ),
            (
                &k,
                "n1",
                "c1",
                1001,
                &body,
                mac.clone(),
                Err(AuthError::BadMac),
            ),
            (
                &k,
                "n1",
                "c1",
                1000,
                r#"{"op":"peer"}"#,
                mac.clone(),
                Err(AuthError::BadMac),
            ),
            (&k, "n1", "c1", 1000, &body, flipped, Err(AuthError::BadMac)),
            (
                &k,
                "n1",
                "c1",
                1000,
                &body,
                mac[..10].to_string(),
                Err(AuthError::BadMac),
            ),
            (
                &k,
                "n1",
                "c1",
                1000,
                &body,
                "zz".into(),
                Err(AuthError::MalformedMac),
            ),
            (
                &k,
                "n1",
                "c1",
                1000,
                &body,
                "abc".into(),
                Err(AuthError::MalformedMac),
            ),
            // Field boundaries matter: moving a character from one field to the next breaks it.
            (
                &k,
                "n",
                "1c1",
                1000,
                &body,
                mac.clone(),
                Err(AuthError::BadMac),
            ),
        ];
        for (key, n, c, t, b, m, want) in cases {
            assert_eq!(
                verify_request(key, n, c, t, b, &m),
                want,
                "{n} {c} {t} {b} {m}"
            );
        }
    }

    #[test]
    fn response_mac_binds_client_nonce() {
        let k = key();
        let body = ResponseBody {
            agent: "a".into(),
            ..Default::default()
        };
        let Message::Response { body, mac } = sign_response(&k, "c1", &body).unwrap() else {
            panic!()
        };
        assert_eq!(verify_response(&k, "c1", &body, &mac), Ok(()));
        assert_eq!(
            verify_response(&k, "c2", &body, &mac),
            Err(AuthError::BadMac)
        );
        let other = Key::from_bytes(&[b'q'; 32], "o").unwrap();
        assert_eq!(
            verify_response(&other, "c1", &body, &mac),
            Err(AuthError::BadMac)
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
    fn stale_timestamps() {
        let now = 10_000;
        let cases: &[(u64, Result<(), AuthError>)] = &[
            (now, Ok(())),
            (now - 60, Ok(())),
            (now + 60, Ok(())),
            (now - 61, Err(AuthError::Stale { skew_secs: -61 })),
            (now + 61, Err(AuthError::Stale { skew_secs: 61 })),
            (0, Err(AuthError::Stale { skew_secs: -10_000 })),
        ];
        for (t, want) in cases {
            assert_eq!(&check_fresh(*t, now), want, "timestamp {t}");
        }
        assert_eq!(
            check_fresh(u64::MAX, 0),
            Err(AuthError::Stale {
                skew_secs: i64::MAX
            })
        );
    }

    #[test]
    fn callback_token_is_fixed_format_and_bound_to_key_and_session() {
        let k = key();
        let other = Key::from_bytes(&[b'z'; 40], "other").unwrap();
        let t = callback_token(&k, "n1", "c1");
        assert_eq!(t.len(), CALLBACK_TOKEN_LEN);
        assert!(t.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(t, callback_token(&k, "n1", "c1"));
        for different in [
            callback_token(&other, "n1", "c1"),
            callback_token(&k, "n2", "c1"),
            callback_token(&k, "n1", "c2"),
            callback_token(&k, "n", "1c1"),
        ] {
            assert_ne!(t, different);
        }
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
        assert_eq!(new_nonce().unwrap().len(), NONCE_LEN * 2);
        assert_ne!(new_nonce().unwrap(), new_nonce().unwrap());
    }
}
