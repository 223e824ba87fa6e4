//! Framing, from the shared codec: the fuzz targets and the agent decode frames with the same
//! functions.

pub use dtcprobe_wire::agent::frame::{
    decode_frame, decode_payload, encode_frame, encode_payload, frame_len, parse_body, FrameError,
    MAX_FRAME, PROTOCOL_VERSION,
};
pub use dtcprobe_wire::agent::messages::Envelope;
