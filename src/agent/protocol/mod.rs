//! The agent wire protocol. Framing and messages are the shared codec (`dtcprobe_wire::agent`,
//! re-exported by [`frame`] and [`messages`]); authentication is [`auth`]; [`io`] wraps the codec
//! with deadlines for sockets. Every item is re-exported here, so callers name
//! `agent::protocol::X` whatever file X lives in.
//!
//! # Framing
//! Every frame is a 4-byte big-endian length followed by that many bytes of JSON (an
//! [`Envelope`]). Frames larger than [`MAX_FRAME`] are rejected from the length prefix alone,
//! before any buffer is allocated. Every envelope carries the protocol version `v`; a frame with
//! another version is rejected before its message is interpreted.
//!
//! # Authentication (pre-shared key, HMAC-SHA256)
//! 1. The agent sends [`Message::Hello`] with a fresh random server nonce, and nothing else.
//! 2. The client sends [`Message::Request`]: the server nonce, its own client nonce, a unix
//!    timestamp, the request body as a JSON *string* (so both sides MAC the exact same bytes), and
//!    `mac = HMAC(key, "dtcprobe-agent/1 request" | nonce | client_nonce | timestamp | body)`
//!    (each field length-prefixed, so fields cannot be shifted into each other).
//! 3. The agent checks, in order: version, that the nonce is the one it issued on this connection
//!    (a fresh random one per connection: a recorded request is useless anywhere else, so no replay
//!    cache is needed), the MAC (constant-time, via `hmac`'s `verify_slice`), and the timestamp
//!    against its clock (±[`REPLAY_WINDOW_SECS`]).
//! 4. The agent answers with [`Message::Response`], MACed over the client nonce and the response
//!    body, so the near side also knows it talks to an agent holding the key.

pub mod auth;
pub mod frame;
pub mod io;
pub mod messages;

pub use auth::{
    callback_token, check_fresh, hex_decode, hex_encode, new_nonce, sign_request, sign_request_raw,
    sign_response, unix_now, verify_request, verify_response, AuthError, Key, KeyError,
    CALLBACK_TOKEN_LEN, MAX_KEY_FILE_LEN, MIN_KEY_LEN, NONCE_LEN, REPLAY_WINDOW_SECS,
};
pub use frame::{
    decode_frame, decode_payload, encode_frame, frame_len, parse_body, Envelope, FrameError,
    MAX_FRAME, PROTOCOL_VERSION,
};
pub use io::{read_frame, write_frame, IoFrameError};
pub use messages::{
    CallbackRequest, ErrorCode, Message, PeerRequest, RequestBody, ResponseBody, ReverseTarget,
};
