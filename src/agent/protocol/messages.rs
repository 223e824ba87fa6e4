//! The agent's messages, from the shared codec. Only the response body is specialised here: the
//! codec leaves the hop and check results it carries generic, dtcprobe fills in its report model.

use crate::model::{CheckResult, HopResult};

pub use dtcprobe_wire::agent::messages::{
    CallbackRequest, ErrorCode, FarSideRequest, Message, PeerRequest, RequestBody, ReverseTarget,
    CAPABILITY_FAR_SIDE,
};

/// The agent's answer to a [`RequestBody::Peer`] (or `Ping`: only the identity fields).
pub type ResponseBody = dtcprobe_wire::agent::messages::ResponseBody<HopResult, CheckResult>;
