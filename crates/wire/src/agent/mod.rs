//! The agent protocol's codec: frames and the messages in them. Authentication (HMAC, nonces,
//! replay) and the socket I/O stay in dtcprobe's `agent::protocol`; what is here is what a peer
//! has to parse before it can authenticate anything, hence what the `agent_frame` fuzz target
//! holds to "never panics, never over-allocates".

pub mod frame;
pub mod messages;

pub use frame::{
    decode_frame, decode_payload, encode_frame, frame_len, parse_body, FrameError, MAX_FRAME,
    PROTOCOL_VERSION,
};
pub use messages::{
    CallbackRequest, Envelope, ErrorCode, Message, PeerRequest, RequestBody, ResponseBody,
    ReverseTarget,
};
