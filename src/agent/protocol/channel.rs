//! The encrypted channel between `peer` and the agent: a Noise `NXpsk0` handshake keyed by the
//! key file's PSK and the agent's static key ([`super::identity`]), then every message encrypted
//! (ChaCha20-Poly1305), cut into chunks that fit Noise's 65,535-byte messages by the pure codec
//! (`dtcprobe_wire::agent::channel`).
//!
//! ```text
//! agent -> peer   plain frame  Hello { noise: "Noise_NXpsk0_25519_ChaChaPoly_BLAKE2s" }
//! peer  -> agent  plain frame  Handshake { data: hex(-> psk, e) }
//! agent -> peer   plain frame  Handshake { data: hex(<- e, ee, s, es) }
//! peer  -> agent  record(s)    Request { body }           (encrypted from here on)
//! agent -> peer   record(s)    Accepted, then Response { body } or Error { .. }
//! ```
//!
//! Why this pattern: `psk0` mixes the PSK in before the first message, so the agent can only
//! decrypt the peer's first handshake message if the peer holds the key, and the peer can only
//! decrypt the agent's answer if the agent does (mutual authentication by the shared key); `ee`
//! (both sides' fresh ephemeral X25519 keys) gives every session its own keys, hence forward
//! secrecy for recorded sessions even if the key file leaks later, and replay protection without
//! a cache or a clock: the request travels after the handshake, under keys that depend on the
//! agent's fresh ephemeral key, so a recorded handshake or request replayed on a new connection
//! never decrypts. Within a session, Noise's per-direction nonce counters refuse reordered,
//! replayed or altered records. Versus TLS 1.3 with pinned keys: the same guarantees here, but it
//! keeps the single key file `keygen` makes (no key pairs or certificates to distribute and pin,
//! no verifier to customise) and pulls no second TLS configuration next to tiberius's rustls.
//!
//! The agent's identity: `s, es` in its answer send its static public key (encrypted: only a
//! holder of the PSK sees it) and prove it holds the private half. The near side compares it with
//! its pin ([`SecureChannel::connect_pinned`]) before it sends anything: with one PSK shared by
//! every agent, a forwarder that passes a connection aimed at agent A on to agent B is caught
//! (B's key is not A's pin). Without a pin the near side learns and reports which agent answered.
//!
//! What it does not give: identity of the near side (whoever holds the key file can play it),
//! an identity without a pin (the first run trusts what answers, as ssh does), protection
//! against traffic analysis (sizes and timing show), or against a denial of service
//! (an on-path host can drop or delay traffic; reported as a failure, never as a pass).

use std::time::Duration;

use snow::{HandshakeState, TransportState};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::auth::{callback_token, hex_decode, hex_encode, AuthError, Key};
use super::frame::{decode_payload, encode_payload, FrameError};
use super::identity::{AgentIdentity, AgentPublicKey};
use super::io::{read_frame, write_frame, IoFrameError};
use super::messages::{ErrorCode, Message};
use dtcprobe_wire::agent::channel::{
    chunk_payload, encode_record, record_len, Reassembler, NOISE_MAX_MESSAGE, NOISE_TAG_LEN,
};

/// The Noise protocol name: pattern, DH, cipher, hash.
pub const NOISE_PATTERN: &str = "Noise_NXpsk0_25519_ChaChaPoly_BLAKE2s";
/// Bound into the handshake (Noise prologue): both sides must agree on the protocol version.
const PROLOGUE: &[u8] = b"dtcprobe-agent/3";
/// Largest handshake message accepted: `psk, e` with an empty payload is 48 bytes, `e, ee, s,
/// es` 96.
const MAX_HANDSHAKE_MESSAGE: usize = 128;

#[derive(Debug, Error)]
pub enum ChannelError {
    #[error("{0}")]
    Io(#[from] IoFrameError),
    #[error("{0}")]
    Auth(#[from] AuthError),
    /// The agent refused in clear before the handshake finished (wrong key, malformed handshake).
    #[error("{message}")]
    Refused { code: ErrorCode, message: String },
    #[error("{0}")]
    Unexpected(String),
    #[error("Noise: {0}")]
    Noise(String),
    /// The agent proved another static key than the pinned one.
    #[error("the agent answered with identity {} (public key {answered}), not the pinned {}", answered.fingerprint(), pinned.fingerprint())]
    Identity {
        pinned: AgentPublicKey,
        answered: AgentPublicKey,
    },
}

impl From<FrameError> for ChannelError {
    fn from(e: FrameError) -> Self {
        ChannelError::Io(IoFrameError::Frame(e))
    }
}

fn builder(key: &Key) -> Result<snow::Builder<'_>, ChannelError> {
    let params = NOISE_PATTERN
        .parse()
        .map_err(|e: snow::Error| ChannelError::Noise(e.to_string()))?;
    snow::Builder::new(params)
        .psk(0, key.psk())
        .and_then(|b| b.prologue(PROLOGUE))
        .map_err(|e| ChannelError::Noise(e.to_string()))
}

fn noise_err(e: snow::Error) -> ChannelError {
    ChannelError::Noise(e.to_string())
}

/// One end of an established channel: the stream, the transport keys, the handshake hash, and
/// (on the near side) the agent's static public key.
pub struct SecureChannel<S> {
    stream: S,
    transport: TransportState,
    handshake_hash: Vec<u8>,
    agent_key: Option<AgentPublicKey>,
}

impl<S> std::fmt::Debug for SecureChannel<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecureChannel(<keys redacted>)")
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> SecureChannel<S> {
    /// The near side's handshake (Noise initiator): reads the agent's hello, sends `psk, e`,
    /// reads `e, ee`. The whole handshake must finish within `deadline`. A plain `Error` from the
    /// agent is returned as [`ChannelError::Refused`]; an answer that does not decrypt (an agent
    /// holding another key) as [`AuthError::Handshake`]; an agent of another protocol version as
    /// a [`FrameError::Version`] (its hello says so: "version mismatch, upgrade both sides").
    pub async fn connect(stream: S, key: &Key, deadline: Duration) -> Result<Self, ChannelError> {
        SecureChannel::connect_pinned(stream, key, None, deadline).await
    }

    /// As [`SecureChannel::connect`], and the agent's static key must be `pin` when one is given
    /// ([`ChannelError::Identity`] otherwise, before anything is sent under the session's keys).
    pub async fn connect_pinned(
        mut stream: S,
        key: &Key,
        pin: Option<&AgentPublicKey>,
        deadline: Duration,
    ) -> Result<Self, ChannelError> {
        let handshake = async {
            match read_frame(&mut stream, deadline).await? {
                Message::Hello { noise } if noise == NOISE_PATTERN => {}
                Message::Hello { noise } => {
                    return Err(ChannelError::Unexpected(format!(
                    "the agent offers the channel `{noise}`, this build speaks `{NOISE_PATTERN}`"
                )))
                }
                Message::Error { code, message } => {
                    return Err(ChannelError::Refused { code, message })
                }
                other => {
                    return Err(ChannelError::Unexpected(format!(
                        "expected a hello from the agent, got {}",
                        message_name(&other)
                    )))
                }
            }
            let mut noise = builder(key)?.build_initiator().map_err(noise_err)?;
            let mut buf = [0u8; MAX_HANDSHAKE_MESSAGE];
            let n = noise.write_message(&[], &mut buf).map_err(noise_err)?;
            let first = Message::Handshake {
                data: hex_encode(&buf[..n]),
            };
            write_frame(&mut stream, &first, deadline).await?;
            let data = match read_frame(&mut stream, deadline).await? {
                Message::Handshake { data } => data,
                Message::Error { code, message } => {
                    return Err(ChannelError::Refused { code, message })
                }
                other => {
                    return Err(ChannelError::Unexpected(format!(
                        "expected the agent's handshake, got {}",
                        message_name(&other)
                    )))
                }
            };
            read_handshake(&mut noise, &data)?;
            Ok(noise)
        };
        let noise = tokio::time::timeout(deadline, handshake)
            .await
            .unwrap_or(Err(ChannelError::Io(IoFrameError::Timeout(deadline))))?;
        let answered = noise
            .get_remote_static()
            .and_then(AgentPublicKey::from_bytes)
            .ok_or_else(|| ChannelError::Noise("the agent sent no static key".into()))?;
        if let Some(pinned) = pin {
            if *pinned != answered {
                return Err(ChannelError::Identity {
                    pinned: *pinned,
                    answered,
                });
            }
        }
        let (transport, handshake_hash) = finish(noise)?;
        Ok(SecureChannel {
            stream,
            transport,
            handshake_hash,
            agent_key: Some(answered),
        })
    }

    /// The agent's handshake (Noise responder): sends the hello, reads `psk, e` (which only
    /// decrypts if the near side holds the key), answers `e, ee`; within `deadline`. On failure the
    /// stream is handed back so that the agent can say why, in clear.
    pub async fn accept(
        mut stream: S,
        key: &Key,
        identity: &AgentIdentity,
        deadline: Duration,
    ) -> Result<Self, (ChannelError, S)> {
        let handshake = async {
            let hello = Message::Hello {
                noise: NOISE_PATTERN.to_string(),
            };
            write_frame(&mut stream, &hello, deadline).await?;
            let data = match read_frame(&mut stream, deadline).await? {
                Message::Handshake { data } => data,
                other => {
                    return Err(ChannelError::Unexpected(format!(
                        "expected a handshake, got {}",
                        message_name(&other)
                    )))
                }
            };
            let mut noise = builder(key)?
                .local_private_key(identity.private())
                .map_err(noise_err)?
                .build_responder()
                .map_err(noise_err)?;
            read_handshake(&mut noise, &data)?;
            let mut buf = [0u8; MAX_HANDSHAKE_MESSAGE];
            let n = noise.write_message(&[], &mut buf).map_err(noise_err)?;
            let answer = Message::Handshake {
                data: hex_encode(&buf[..n]),
            };
            write_frame(&mut stream, &answer, deadline).await?;
            Ok(noise)
        };
        let result = tokio::time::timeout(deadline, handshake)
            .await
            .unwrap_or(Err(ChannelError::Io(IoFrameError::Timeout(deadline))));
        match result.and_then(finish) {
            Ok((transport, handshake_hash)) => Ok(SecureChannel {
                stream,
                transport,
                handshake_hash,
                agent_key: None,
            }),
            Err(e) => Err((e, stream)),
        }
    }

    /// The session's callback token (see [`callback_token`]).
    pub fn callback_token(&self, key: &Key) -> String {
        callback_token(key, &self.handshake_hash)
    }

    /// The agent's static public key (near side only: the agent's end has none to report).
    pub fn agent_key(&self) -> Option<AgentPublicKey> {
        self.agent_key
    }

    pub fn get_ref(&self) -> &S {
        &self.stream
    }

    /// Sends one message, encrypted, in as many records as it needs (at most two), within
    /// `deadline`.
    pub async fn send(&mut self, msg: &Message, deadline: Duration) -> Result<(), ChannelError> {
        let mut wire = Vec::new();
        for chunk in chunk_payload(&encode_payload(msg)?)? {
            let mut sealed = vec![0u8; chunk.len() + NOISE_TAG_LEN];
            let n = self
                .transport
                .write_message(&chunk, &mut sealed)
                .map_err(noise_err)?;
            wire.extend_from_slice(&encode_record(&sealed[..n])?);
        }
        let write = async {
            self.stream.write_all(&wire).await?;
            self.stream.flush().await?;
            Ok::<_, std::io::Error>(())
        };
        match tokio::time::timeout(deadline, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(IoFrameError::Io(e).into()),
            Err(_) => Err(IoFrameError::Timeout(deadline).into()),
        }
    }

    /// Receives one message: its records must all arrive within `deadline`; each record's length
    /// is checked before its buffer is allocated, the reassembled size before a chunk is added.
    /// A record that does not decrypt is [`AuthError::Decrypt`].
    pub async fn recv(&mut self, deadline: Duration) -> Result<Message, ChannelError> {
        let read = async {
            let mut reassembler = Reassembler::new();
            loop {
                let mut prefix = [0u8; 4];
                read_exact_or_closed(&mut self.stream, &mut prefix).await?;
                let len = record_len(prefix)?;
                let mut sealed = vec![0u8; len];
                read_exact_or_closed(&mut self.stream, &mut sealed).await?;
                let mut chunk = vec![0u8; len.min(NOISE_MAX_MESSAGE)];
                let n = self
                    .transport
                    .read_message(&sealed, &mut chunk)
                    .map_err(|_| AuthError::Decrypt)?;
                if let Some(payload) = reassembler.push(&chunk[..n])? {
                    return Ok(decode_payload(&payload)?);
                }
            }
        };
        tokio::time::timeout(deadline, read)
            .await
            .unwrap_or(Err(ChannelError::Io(IoFrameError::Timeout(deadline))))
    }

    /// Closes the writing half (best effort).
    pub async fn shutdown(&mut self) {
        let _ = self.stream.shutdown().await;
    }
}

/// The transport keys and the handshake hash of a finished handshake.
fn finish(noise: HandshakeState) -> Result<(TransportState, Vec<u8>), ChannelError> {
    let handshake_hash = noise.get_handshake_hash().to_vec();
    let transport = noise.into_transport_mode().map_err(noise_err)?;
    Ok((transport, handshake_hash))
}

fn read_handshake(noise: &mut HandshakeState, data: &str) -> Result<(), ChannelError> {
    let bytes = hex_decode(data)
        .filter(|b| b.len() <= MAX_HANDSHAKE_MESSAGE)
        .ok_or_else(|| ChannelError::Unexpected("malformed handshake message".into()))?;
    let mut payload = [0u8; MAX_HANDSHAKE_MESSAGE];
    noise
        .read_message(&bytes, &mut payload)
        .map_err(|_| AuthError::Handshake)?;
    Ok(())
}

async fn read_exact_or_closed<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut [u8],
) -> Result<(), ChannelError> {
    match stream.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(IoFrameError::Closed.into()),
        Err(e) => Err(IoFrameError::Io(e).into()),
    }
}

/// A message's name for error texts (never its content: that may be attacker text).
pub fn message_name(m: &Message) -> &'static str {
    match m {
        Message::Hello { .. } => "hello",
        Message::Handshake { .. } => "handshake",
        Message::Request { .. } => "request",
        Message::Accepted => "accepted",
        Message::Response { .. } => "response",
        Message::Error { .. } => "error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(5);

    fn key(c: u8) -> Key {
        Key::from_bytes(
            super::super::auth::example_key_text(&format!("k{c}")).as_bytes(),
            "test",
        )
        .unwrap()
    }

    async fn pair(
        client_key: Key,
        agent_key: Key,
    ) -> (
        Result<SecureChannel<tokio::io::DuplexStream>, ChannelError>,
        Result<SecureChannel<tokio::io::DuplexStream>, ChannelError>,
    ) {
        pair_pinned(
            client_key,
            agent_key,
            &AgentIdentity::generate().unwrap(),
            None,
        )
        .await
    }

    async fn pair_pinned(
        client_key: Key,
        agent_key: Key,
        identity: &AgentIdentity,
        pin: Option<&AgentPublicKey>,
    ) -> (
        Result<SecureChannel<tokio::io::DuplexStream>, ChannelError>,
        Result<SecureChannel<tokio::io::DuplexStream>, ChannelError>,
    ) {
        let (a, b) = tokio::io::duplex(1 << 20);
        let connect = SecureChannel::connect_pinned(a, &client_key, pin, T);
        let (client, agent) = tokio::join!(connect, async {
            match SecureChannel::accept(b, &agent_key, identity, T).await {
                Ok(c) => Ok(c),
                Err((e, mut s)) => {
                    // As the agent does: say why in clear, then close.
                    let refusal = Message::Error {
                        code: ErrorCode::AuthFailed,
                        message: e.to_string(),
                    };
                    let _ = write_frame(&mut s, &refusal, T).await;
                    Err(e)
                }
            }
        });
        (client, agent)
    }

    #[tokio::test]
    async fn same_key_talks_and_shares_the_callback_token_large_messages_are_chunked() {
        let (client, agent) = pair(key(b'k'), key(b'k')).await;
        let (mut client, mut agent) = (client.unwrap(), agent.unwrap());
        assert_eq!(
            client.callback_token(&key(b'k')),
            agent.callback_token(&key(b'k'))
        );
        // A message bigger than one Noise message travels in two records.
        let big = Message::Response {
            body: "x".repeat(65_000),
        };
        for msg in [Message::Accepted, big] {
            agent.send(&msg, T).await.unwrap();
            assert_eq!(client.recv(T).await.unwrap(), msg);
        }
        let req = Message::Request { body: "{}".into() };
        client.send(&req, T).await.unwrap();
        assert_eq!(agent.recv(T).await.unwrap(), req);
        // Too large for a frame: refused before anything is sent.
        let huge = Message::Response {
            body: "x".repeat(70_000),
        };
        assert!(matches!(
            agent.send(&huge, T).await,
            Err(ChannelError::Io(IoFrameError::Frame(
                FrameError::TooLarge { .. }
            )))
        ));
        // Sessions have their own tokens.
        let (other, _) = pair(key(b'k'), key(b'k')).await;
        assert_ne!(
            other.unwrap().callback_token(&key(b'k')),
            client.callback_token(&key(b'k'))
        );
    }

    #[tokio::test]
    async fn the_agent_proves_its_identity_and_a_pin_is_enforced() {
        let a = AgentIdentity::generate().unwrap();
        let b = AgentIdentity::generate().unwrap();
        // Unpinned: the near side learns which agent answered.
        let (client, _agent) = pair_pinned(key(b'k'), key(b'k'), &b, None).await;
        assert_eq!(client.unwrap().agent_key(), Some(b.public()));
        // Pinned to the agent that answers: fine.
        let (client, agent) = pair_pinned(key(b'k'), key(b'k'), &a, Some(&a.public())).await;
        assert_eq!(client.unwrap().agent_key(), Some(a.public()));
        assert!(agent.is_ok());
        // Pinned to A, B answers (same pre-shared key): refused before anything is sent.
        let (client, _agent) = pair_pinned(key(b'k'), key(b'k'), &b, Some(&a.public())).await;
        match client {
            Err(ChannelError::Identity { pinned, answered }) => {
                assert_eq!((pinned, answered), (a.public(), b.public()));
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_different_key_fails_the_handshake_on_both_sides() {
        let (client, agent) = pair(key(b'x'), key(b'k')).await;
        assert!(
            matches!(agent, Err(ChannelError::Auth(AuthError::Handshake))),
            "{agent:?}"
        );
        match client {
            Err(ChannelError::Refused {
                code: ErrorCode::AuthFailed,
                message,
            }) => assert!(message.contains("same key"), "{message}"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn an_impostor_agent_is_detected_by_the_near_side() {
        // An "agent" with another key that answers anyway: it cannot produce a valid `e, ee`
        // because it cannot read `psk, e`; here it answers with its own responder state.
        let (a, mut b) = tokio::io::duplex(1 << 16);
        let impostor = tokio::spawn(async move {
            let hello = Message::Hello {
                noise: NOISE_PATTERN.into(),
            };
            write_frame(&mut b, &hello, T).await.unwrap();
            let _ = read_frame(&mut b, T).await.unwrap();
            let mut other = builder(&key(b'z')).unwrap().build_initiator().unwrap();
            let mut buf = [0u8; 128];
            let n = other.write_message(&[], &mut buf).unwrap();
            let answer = Message::Handshake {
                data: hex_encode(&buf[..n]),
            };
            write_frame(&mut b, &answer, T).await.unwrap();
            b
        });
        let client = SecureChannel::connect(a, &key(b'k'), T).await;
        assert!(
            matches!(client, Err(ChannelError::Auth(AuthError::Handshake))),
            "{client:?}"
        );
        drop(impostor.await);
    }

    #[tokio::test]
    async fn an_old_protocol_agent_is_a_version_mismatch_not_a_hang() {
        let (a, mut b) = tokio::io::duplex(1 << 16);
        let old_hello =
            br#"{"v":2,"msg":{"type":"hello","nonce":"00112233445566778899aabbccddeeff"}}"#;
        let mut frame = (old_hello.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(old_hello);
        b.write_all(&frame).await.unwrap();
        let started = std::time::Instant::now();
        let err = SecureChannel::connect(a, &key(b'k'), T).await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(1));
        assert!(
            matches!(
                err,
                ChannelError::Io(IoFrameError::Frame(FrameError::Version { got: 2 }))
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("upgrade both sides"), "{err}");
    }

    #[tokio::test]
    async fn silent_peers_hit_the_handshake_deadline() {
        let (a, _b) = tokio::io::duplex(1 << 16);
        let started = std::time::Instant::now();
        let err = SecureChannel::connect(a, &key(b'k'), Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(
            matches!(err, ChannelError::Io(IoFrameError::Timeout(_))),
            "{err:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
