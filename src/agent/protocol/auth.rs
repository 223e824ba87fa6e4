//! Authentication of the agent protocol (pre-shared key, HMAC-SHA256): the key, the request and
//! response MACs, nonces and the replay guard. Pure apart from reading the key file and drawing
//! random nonces; the scheme is described in the parent module.

use std::collections::HashMap;
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

#[derive(Debug, Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("request does not answer the nonce this agent issued")]
    WrongNonce,
    #[error("request timestamp is {skew_secs}s away from the agent's clock (allowed: ±{REPLAY_WINDOW_SECS}s)")]
    Stale { skew_secs: i64 },
    #[error("request nonce was already used (replay)")]
    Replayed,
    #[error("too many recent requests to track for replay; try again shortly")]
    ReplayCacheFull,
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
    #[error("key file {path} holds {len} bytes after trimming; at least {MIN_KEY_LEN} are required (e.g. `openssl rand -hex 32 > {path}`)")]
    TooShort { path: String, len: usize },
}

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

    pub fn load(path: &Path) -> Result<Key, KeyError> {
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| KeyError::Read {
            path: shown.clone(),
            source,
        })?;
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

/// Remembers used nonces for the replay window and rejects stale timestamps. Bounded: at most
/// `capacity` nonces are tracked; when full (after pruning expired ones) new requests are refused
/// rather than forgetting nonces that are still inside the window.
#[derive(Debug)]
pub struct ReplayGuard {
    window_secs: u64,
    capacity: usize,
    /// nonce -> unix second after which it may be forgotten.
    seen: HashMap<String, u64>,
}

impl ReplayGuard {
    pub fn new(window_secs: u64, capacity: usize) -> ReplayGuard {
        ReplayGuard {
            window_secs,
            capacity,
            seen: HashMap::new(),
        }
    }

    /// Accepts `nonce` at `timestamp` (the request's) when the agent's clock reads `now`.
    pub fn check(&mut self, nonce: &str, timestamp: u64, now: u64) -> Result<(), AuthError> {
        let skew = timestamp as i128 - now as i128;
        if skew.unsigned_abs() > self.window_secs as u128 {
            return Err(AuthError::Stale {
                skew_secs: skew.clamp(i64::MIN as i128, i64::MAX as i128) as i64,
            });
        }
        if self.seen.contains_key(nonce) {
            return Err(AuthError::Replayed);
        }
        if self.seen.len() >= self.capacity {
            self.seen.retain(|_, expires| *expires > now);
            if self.seen.len() >= self.capacity {
                return Err(AuthError::ReplayCacheFull);
            }
        }
        // Forget a nonce once a request carrying it would be stale anyway.
        self.seen
            .insert(nonce.to_string(), now.saturating_add(2 * self.window_secs));
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

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

    #[test]
    fn replay_and_stale_timestamps() {
        let mut g = ReplayGuard::new(60, 3);
        let now = 10_000;
        // (nonce, timestamp) -> expected, applied in order
        let steps: &[(&str, u64, Result<(), AuthError>)] = &[
            ("a", now, Ok(())),
            ("a", now, Err(AuthError::Replayed)),
            ("b", now - 60, Ok(())),
            ("c", now + 60, Ok(())),
            ("d", now - 61, Err(AuthError::Stale { skew_secs: -61 })),
            ("e", now + 61, Err(AuthError::Stale { skew_secs: 61 })),
            ("f", 0, Err(AuthError::Stale { skew_secs: -10_000 })),
            ("g", now, Err(AuthError::ReplayCacheFull)),
        ];
        for (n, t, want) in steps {
            assert_eq!(&g.check(n, *t, now), want, "nonce {n} at {t}");
        }
        // Later, expired nonces are pruned and new ones fit again; a replay is still caught while
        // its entry lives.
        let later = now + 121;
        assert_eq!(g.check("h", later, later), Ok(()));
        assert_eq!(g.check("h", later, later), Err(AuthError::Replayed));
        assert_eq!(
            g.check("x", u64::MAX, 0),
            Err(AuthError::Stale {
                skew_secs: i64::MAX
            })
        );
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
