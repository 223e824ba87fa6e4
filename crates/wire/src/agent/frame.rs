//! Plain frames: a 4-byte big-endian length, then that many bytes of JSON (an [`Envelope`]). The
//! length is checked before anything is allocated, the version before the message is read. The
//! hello and the handshake travel as plain frames; after the handshake the same JSON payloads
//! travel encrypted, in records (see [`super::channel`]).

use serde::{de::DeserializeOwned, Deserialize};
use thiserror::Error;

use super::messages::{Envelope, Message};

/// Version of the wire protocol. Bumped on incompatible changes: 3 is the Noise channel (2 was
/// the HMAC-framed protocol, whose peers are told "version mismatch" at the first frame).
pub const PROTOCOL_VERSION: u32 = 3;
/// Largest frame either side accepts (payload bytes, without the 4-byte prefix); also the
/// largest message reassembled from encrypted chunks.
pub const MAX_FRAME: usize = 64 * 1024;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    #[error("empty frame")]
    Empty,
    #[error("protocol version mismatch: the other side speaks version {got}, this build version {PROTOCOL_VERSION}: upgrade both sides to the same dtcprobe release")]
    Version { got: u32 },
    #[error("malformed frame: {0}")]
    Malformed(String),
}

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

/// Serializes a message into a frame payload (the envelope's JSON, no prefix), at most
/// [`MAX_FRAME`] bytes.
pub fn encode_payload(msg: &Message) -> Result<Vec<u8>, FrameError> {
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
    Ok(json)
}

/// Serializes a message into a complete frame (prefix + JSON).
pub fn encode_frame(msg: &Message) -> Result<Vec<u8>, FrameError> {
    let json = encode_payload(msg)?;
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

/// Parses a request or response body string into its type.
pub fn parse_body<T: DeserializeOwned>(body: &str) -> Result<T, FrameError> {
    serde_json::from_str(body).map_err(|e| FrameError::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::messages::ErrorCode;

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
                r#"{"v":3,"msg":{"type":"error","code":"busy","message":"m"}}"#,
                None,
            ),
            (
                r#"{"v":1,"msg":{"type":"error","code":"busy","message":"m"}}"#,
                Some(FrameError::Version { got: 1 }),
            ),
            // The HMAC-framed protocol's hello: an old agent is told apart at its first frame.
            (
                r#"{"v":2,"msg":{"type":"hello","nonce":"00"}}"#,
                Some(FrameError::Version { got: 2 }),
            ),
            (
                r#"{"v":1,"msg":"anything at all"}"#,
                Some(FrameError::Version { got: 1 }),
            ),
            (r#"{"msg":{}}"#, Some(FrameError::Malformed(String::new()))),
            (
                r#"{"v":3,"msg":{"type":"nope"}}"#,
                Some(FrameError::Malformed(String::new())),
            ),
            (
                r#"{"v":3,"msg":{"type":"error","code":"busy","message":"m"},"x":1}"#,
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
}
