//! The agent wire protocol: pure framing, messages and authentication (no I/O here, apart from the
//! async frame reader/writer at the bottom, which only wraps the pure codec with deadlines).
//!
//! # Framing
//! Every frame is a 4-byte big-endian length followed by that many bytes of JSON (an
//! [`Envelope`]). Frames larger than [`MAX_FRAME`] are rejected from the length prefix alone,
//! before any buffer is allocated. Every envelope carries the protocol version `v`; a frame with
//! another version is rejected before its message is interpreted.
//!
//! # Authentication (pre-shared key, HMAC-SHA256)
//! 1. The agent sends [`Message::Hello`] with a fresh random server nonce and its clock.
//! 2. The client sends [`Message::Request`]: the server nonce, its own client nonce, a unix
//!    timestamp, the request body as a JSON *string* (so both sides MAC the exact same bytes), and
//!    `mac = HMAC(key, "dtcprobe-agent/1 request" | nonce | client_nonce | timestamp | body)`
//!    (each field length-prefixed, so fields cannot be shifted into each other).
//! 3. The agent checks, in order: version, that the nonce is the one it issued on this connection,
//!    the timestamp against its clock (±[`REPLAY_WINDOW_SECS`]), that the nonce was never used before
//!    ([`ReplayGuard`]), and the MAC (constant-time, via `hmac`'s `verify_slice`).
//! 4. The agent answers with [`Message::Response`], MACed over the client nonce and the response
//!    body, so the near side also knows it talks to an agent holding the key.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use sha2::Sha256;
use thiserror::Error;

use crate::model::{CheckResult, HopResult};

/// Version of the wire protocol. Bumped on incompatible changes.
pub const PROTOCOL_VERSION: u32 = 1;
/// Largest frame either side accepts (payload bytes, without the 4-byte prefix).
pub const MAX_FRAME: usize = 64 * 1024;
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
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    #[error("empty frame")]
    Empty,
    #[error("unsupported protocol version {got} (this build speaks version {PROTOCOL_VERSION})")]
    Version { got: u32 },
    #[error("malformed frame: {0}")]
    Malformed(String),
}

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

/// Every frame on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    pub v: u32,
    pub msg: Message,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Message {
    /// Agent -> near side, first frame of every connection.
    Hello {
        nonce: String,
        /// The agent's clock, unix seconds (lets the near side report skew).
        time: u64,
        agent: String,
        tool_version: String,
    },
    /// Near side -> agent: one authenticated request per connection.
    Request {
        nonce: String,
        client_nonce: String,
        timestamp: u64,
        /// A [`RequestBody`] serialized as JSON; MACed as these exact bytes.
        body: String,
        mac: String,
    },
    /// Agent -> near side: the request authenticated and is being worked on (lets the near side
    /// tell a refused request from an agent lost mid-run).
    Accepted,
    /// Agent -> near side: the answer, MACed over the client nonce and `body` (a [`ResponseBody`]).
    Response { body: String, mac: String },
    /// Agent -> near side: the request was refused or failed. Not MACed (it carries no results).
    Error { code: ErrorCode, message: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Bad MAC, wrong nonce, stale timestamp or replay.
    AuthFailed,
    /// Too many concurrent sessions.
    Busy,
    /// Malformed frame or body, wrong version.
    Protocol,
    /// The request did not finish within the agent's per-request timeout.
    Timeout,
}

/// What the near side asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum RequestBody {
    /// Authenticate only.
    Ping,
    Peer(PeerRequest),
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerRequest {
    /// The near side's host name, as MSDTC on the agent's side would look it up.
    #[serde(default)]
    pub caller_name: Option<String>,
    /// Connect back to the caller's source address on this port. There is deliberately no host
    /// field: a callback only ever goes to the address the authenticated connection came from.
    #[serde(default)]
    pub callback: Option<CallbackRequest>,
    /// Reverse checks for the agent to run.
    #[serde(default)]
    pub reverse: Vec<ReverseTarget>,
    /// Per-hop timeout the near side would like, in milliseconds (the agent caps it).
    #[serde(default)]
    pub hop_timeout_ms: Option<u64>,
    /// The near side's zone (reverse checks run `to` it).
    #[serde(default)]
    pub zone: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallbackRequest {
    pub port: u16,
    /// Random token the agent sends over the callback connection so the near side can tell it
    /// from any other inbound connection.
    pub token: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReverseTarget {
    /// Check name in the report.
    pub name: String,
    /// Target URL (`tcp://host:port`, `epm://host`...). With `to_caller`, the host part is replaced
    /// by the caller's source address.
    pub url: String,
    #[serde(default)]
    pub to_caller: bool,
}

/// The agent's answer to a [`RequestBody::Peer`] (or `Ping`: only the identity fields).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ResponseBody {
    pub agent: String,
    #[serde(default)]
    pub zone: Option<String>,
    /// The agent host's MSDTC CID, when it knows it.
    #[serde(default)]
    pub cid: Option<String>,
    /// The caller's address as the agent saw it.
    #[serde(default)]
    pub caller_addr: Option<String>,
    /// The agent's lookup of the caller's name (forward + reverse).
    #[serde(default)]
    pub resolve: Option<HopResult>,
    /// The agent's side of the callback connection.
    #[serde(default)]
    pub callback: Option<HopResult>,
    #[serde(default)]
    pub reverse: Vec<CheckResult>,
}

// ---------------------------------------------------------------------------------------------
// Framing (pure)

/// Checks a length prefix. Called before allocating the payload buffer.
pub fn frame_len(prefix: [u8; 4]) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len == 0 {
        return Err(FrameError::Empty);
    }
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge {
            len,
            max: MAX_FRAME,
        });
    }
    Ok(len)
}

/// Serializes a message into a complete frame (prefix + JSON).
pub fn encode_frame(msg: &Message) -> Result<Vec<u8>, FrameError> {
    let env = Envelope {
        v: PROTOCOL_VERSION,
        msg: msg.clone(),
    };
    let json = serde_json::to_vec(&env).map_err(|e| FrameError::Malformed(e.to_string()))?;
    if json.len() > MAX_FRAME {
        return Err(FrameError::TooLarge {
            len: json.len(),
            max: MAX_FRAME,
        });
    }
    let mut out = Vec::with_capacity(4 + json.len());
    out.extend_from_slice(&(json.len() as u32).to_be_bytes());
    out.extend_from_slice(&json);
    Ok(out)
}

/// Parses a frame payload (without the prefix): version first, then the message.
pub fn decode_payload(payload: &[u8]) -> Result<Message, FrameError> {
    if payload.len() > MAX_FRAME {
        return Err(FrameError::TooLarge {
            len: payload.len(),
            max: MAX_FRAME,
        });
    }
    #[derive(Deserialize)]
    struct VersionOnly {
        v: u32,
    }
    let version: VersionOnly =
        serde_json::from_slice(payload).map_err(|e| FrameError::Malformed(e.to_string()))?;
    if version.v != PROTOCOL_VERSION {
        return Err(FrameError::Version { got: version.v });
    }
    let env: Envelope =
        serde_json::from_slice(payload).map_err(|e| FrameError::Malformed(e.to_string()))?;
    Ok(env.msg)
}

/// Decodes one frame from the front of `buf`: `Ok(None)` if more bytes are needed, else the
/// message and the number of bytes consumed. Never allocates more than the frame itself.
pub fn decode_frame(buf: &[u8]) -> Result<Option<(Message, usize)>, FrameError> {
    let Some(prefix) = buf.get(..4) else {
        return Ok(None);
    };
    let len = frame_len(prefix.try_into().expect("4 bytes"))?;
    let Some(payload) = buf.get(4..4 + len) else {
        return Ok(None);
    };
    Ok(Some((decode_payload(payload)?, 4 + len)))
}

/// Parses a MACed body string into its type.
pub fn parse_body<T: DeserializeOwned>(body: &str) -> Result<T, FrameError> {
    serde_json::from_str(body).map_err(|e| FrameError::Malformed(e.to_string()))
}

// ---------------------------------------------------------------------------------------------
// Authentication (pure)

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

// ---------------------------------------------------------------------------------------------
// Async frame I/O with deadlines

#[derive(Debug, Error)]
pub enum IoFrameError {
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("peer closed the connection")]
    Closed,
    #[error("no complete frame within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Reads one frame. The whole frame (prefix and payload) must arrive within `deadline`, which
/// drops slow or silent peers; the length is checked before the payload buffer is allocated.
pub async fn read_frame<R>(reader: &mut R, deadline: Duration) -> Result<Message, IoFrameError>
where
    R: tokio::io::AsyncRead + Unpin,
{
    use tokio::io::AsyncReadExt;
    let read = async {
        let mut prefix = [0u8; 4];
        match reader.read_exact(&mut prefix).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(IoFrameError::Closed)
            }
            Err(e) => return Err(e.into()),
        }
        let len = frame_len(prefix)?;
        let mut payload = vec![0u8; len];
        match reader.read_exact(&mut payload).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(IoFrameError::Closed)
            }
            Err(e) => return Err(e.into()),
        }
        Ok(decode_payload(&payload)?)
    };
    tokio::time::timeout(deadline, read)
        .await
        .unwrap_or(Err(IoFrameError::Timeout(deadline)))
}

pub async fn write_frame<W>(
    writer: &mut W,
    msg: &Message,
    deadline: Duration,
) -> Result<(), IoFrameError>
where
    W: tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::AsyncWriteExt;
    let frame = encode_frame(msg)?;
    let write = async {
        writer.write_all(&frame).await?;
        writer.flush().await?;
        Ok(())
    };
    tokio::time::timeout(deadline, write)
        .await
        .unwrap_or(Err(IoFrameError::Timeout(deadline)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Key {
        Key::from_bytes(b"0123456789abcdef0123456789abcdef\n", "test").unwrap()
    }

    #[test]
    fn frame_length_limits() {
        let cases: &[([u8; 4], Result<usize, FrameError>)] = &[
            ([0, 0, 0, 0], Err(FrameError::Empty)),
            ([0, 0, 0, 1], Ok(1)),
            ([0, 1, 0, 0], Ok(MAX_FRAME)),
            (
                [0, 1, 0, 1],
                Err(FrameError::TooLarge {
                    len: MAX_FRAME + 1,
                    max: MAX_FRAME,
                }),
            ),
            (
                [0xff, 0xff, 0xff, 0xff],
                Err(FrameError::TooLarge {
                    len: u32::MAX as usize,
                    max: MAX_FRAME,
                }),
            ),
        ];
        for (prefix, want) in cases {
            assert_eq!(&frame_len(*prefix), want, "{prefix:?}");
        }
    }

    #[test]
    fn frames_round_trip_and_need_whole_input() {
        let msg = Message::Error {
            code: ErrorCode::Busy,
            message: "x".into(),
        };
        let frame = encode_frame(&msg).unwrap();
        for cut in 0..frame.len() {
            assert_eq!(decode_frame(&frame[..cut]), Ok(None), "cut at {cut}");
        }
        let mut two = frame.clone();
        two.extend_from_slice(&frame);
        let (back, used) = decode_frame(&two).unwrap().unwrap();
        assert_eq!(back, msg);
        assert_eq!(used, frame.len());
    }

    #[test]
    fn payload_table() {
        let cases: &[(&str, Option<FrameError>)] = &[
            (
                r#"{"v":1,"msg":{"type":"error","code":"busy","message":"m"}}"#,
                None,
            ),
            (
                r#"{"v":2,"msg":{"type":"error","code":"busy","message":"m"}}"#,
                Some(FrameError::Version { got: 2 }),
            ),
            (
                r#"{"v":2,"msg":"anything at all"}"#,
                Some(FrameError::Version { got: 2 }),
            ),
            (r#"{"msg":{}}"#, Some(FrameError::Malformed(String::new()))),
            (
                r#"{"v":1,"msg":{"type":"nope"}}"#,
                Some(FrameError::Malformed(String::new())),
            ),
            (
                r#"{"v":1,"msg":{"type":"error","code":"busy","message":"m"},"x":1}"#,
                Some(FrameError::Malformed(String::new())),
            ),
            ("not json", Some(FrameError::Malformed(String::new()))),
            ("", Some(FrameError::Malformed(String::new()))),
        ];
        for (payload, want) in cases {
            let got = decode_payload(payload.as_bytes());
            match (want, &got) {
                (None, Ok(_)) => {}
                (Some(FrameError::Malformed(_)), Err(FrameError::Malformed(_))) => {}
                (Some(w), Err(g)) if w == g => {}
                _ => panic!("{payload}: want {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn oversize_message_is_not_encoded() {
        let msg = Message::Error {
            code: ErrorCode::Protocol,
            message: "x".repeat(MAX_FRAME),
        };
        assert!(matches!(
            encode_frame(&msg),
            Err(FrameError::TooLarge { .. })
        ));
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

    #[tokio::test]
    async fn reader_rejects_oversize_before_reading_payload_and_drops_silent_peers() {
        // Oversize prefix, no payload behind it: rejected from the prefix alone.
        let mut data: &[u8] = &[0x7f, 0xff, 0xff, 0xff];
        let err = read_frame(&mut data, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(
            matches!(err, IoFrameError::Frame(FrameError::TooLarge { .. })),
            "{err:?}"
        );

        // A peer that sends half a prefix then nothing is cut off at the deadline.
        let (mut client, mut server) = tokio::io::duplex(64);
        use tokio::io::AsyncWriteExt;
        client.write_all(&[0, 0]).await.unwrap();
        let started = std::time::Instant::now();
        let err = read_frame(&mut server, Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(matches!(err, IoFrameError::Timeout(_)), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
        drop(client);

        // Closed mid-frame.
        let mut data: &[u8] = &[0, 0, 0, 10, b'{'];
        assert!(matches!(
            read_frame(&mut data, Duration::from_secs(1)).await,
            Err(IoFrameError::Closed)
        ));
    }
}
