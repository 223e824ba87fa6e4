//! The agent wire protocol (version 3). Framing and messages are the shared codec
//! (`dtcprobe_wire::agent`, re-exported by [`frame`] and [`messages`]); the key and what is
//! derived from it are [`auth`]; the agent's own key pair is [`identity`]; the encrypted channel (Noise `NXpsk0`) is [`channel`]; [`io`]
//! reads and writes plain frames with deadlines. Every item is re-exported here, so callers name
//! `agent::protocol::X` whatever file X lives in.
//!
//! # Plain frames
//! A 4-byte big-endian length followed by that many bytes of JSON (an [`Envelope`]). Frames
//! larger than [`MAX_FRAME`] are rejected from the length prefix alone, before any buffer is
//! allocated. Every envelope carries the protocol version `v`; a frame with another version is
//! rejected before its message is interpreted ("version mismatch: upgrade both sides"). Only the
//! agent's hello, the two handshake messages and a refusal before the handshake finished travel
//! as plain frames.
//!
//! # The channel
//! See [`channel`]: the Noise handshake authenticates both sides by the key file's PSK and gives
//! the session fresh keys; then every message is encrypted, in records of at most 65,535 bytes.
//! There are no MACs, nonces or timestamps of dtcprobe's own any more: Noise's AEAD and its
//! per-direction counters protect integrity and order, the fresh ephemeral keys make replays
//! on another connection fail to decrypt, and no clock is involved.

pub mod auth;
pub mod channel;
pub mod frame;
pub mod identity;
pub mod io;
pub mod messages;

pub use auth::{
    callback_token, check_key_material, example_key_text, hex_decode, hex_encode, AuthError, Key,
    KeyError, Weakness, CALLBACK_TOKEN_LEN, MAX_KEY_FILE_LEN, MIN_KEY_LEN,
};
pub use channel::{message_name, ChannelError, SecureChannel, NOISE_PATTERN};
pub use frame::{
    decode_frame, decode_payload, encode_frame, encode_payload, frame_len, parse_body, Envelope,
    FrameError, MAX_FRAME, PROTOCOL_VERSION,
};
pub use identity::{AgentIdentity, AgentPublicKey, IdentityError, PinError};
pub use io::{read_frame, write_frame, IoFrameError};
pub use messages::{
    CallbackRequest, ErrorCode, FarSideRequest, Message, PeerRequest, RequestBody, ResponseBody,
    ReverseTarget, CAPABILITY_FAR_SIDE,
};
