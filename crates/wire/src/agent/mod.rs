//! The agent protocol's codec: plain frames, the encrypted phase's record and chunk layer, and the
//! messages. The cryptography (the Noise handshake, encrypting each chunk), the key and the socket
//! I/O stay in dtcprobe's `agent::protocol`; what is here is what a peer has to parse from
//! untrusted bytes, hence what the `agent_frame` and `agent_channel` fuzz targets hold to "never
//! panics, never over-allocates".

pub mod channel;
pub mod frame;
pub mod messages;

pub use channel::{
    chunk_payload, encode_record, record_len, Reassembler, CHUNK_LAST, CHUNK_MORE, MAX_CHUNK_DATA,
    MIN_RECORD, NOISE_MAX_MESSAGE, NOISE_TAG_LEN,
};
pub use frame::{
    decode_frame, decode_payload, encode_frame, encode_payload, frame_len, parse_body, FrameError,
    MAX_FRAME, PROTOCOL_VERSION,
};
pub use messages::{
    CallbackRequest, Envelope, ErrorCode, FarSideRequest, Message, PeerRequest, RequestBody,
    ResponseBody, ReverseTarget, CAPABILITY_FAR_SIDE,
};
