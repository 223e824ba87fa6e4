//! What `dtcprobe peer` (and the matrix, per zone) asks of one agent besides the forward checks.
//! Apart from the near side's code so that the far-side probes ([`super::far_side`]) and the
//! near side both read it without importing each other.

use std::net::IpAddr;
use std::time::Duration;

use super::protocol::{Key, ReverseTarget};

/// Everything `peer` needs besides the forward checks.
#[derive(Debug, Clone)]
pub struct PeerOptions {
    /// `host:port` of the agent.
    pub agent: String,
    pub key: Key,
    /// Address the callback listener binds to (`0.0.0.0` by default).
    pub callback_bind: IpAddr,
    /// Callback port; 0 picks an ephemeral one.
    pub callback_port: u16,
    /// This host's name as MSDTC on the far side would look it up.
    pub caller_name: Option<String>,
    pub zone: Option<String>,
    pub reverse: Vec<ReverseTarget>,
    pub hop_timeout: Duration,
    /// Overall bound on the agent's answer once the request is sent.
    pub session_timeout: Duration,
    /// This host's MSDTC CID, when known, to compare with the agent's.
    pub cid: Option<String>,
    /// Let the agent trace the path after a reverse check times out (off: `--no-trace`).
    pub trace: bool,
}

impl PeerOptions {
    pub fn default_session_timeout(hop_timeout: Duration) -> Duration {
        hop_timeout * 8 + Duration::from_secs(5)
    }
}
