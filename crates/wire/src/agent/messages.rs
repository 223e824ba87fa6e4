//! The agent protocol's messages: the envelope every frame carries, the messages, and the
//! request and response bodies. `Hello`, `Handshake` and a pre-handshake `Error` travel in clear
//! (plain frames); everything after the Noise handshake is encrypted (see [`super::channel`]).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    pub v: u32,
    pub msg: Message,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Message {
    /// Agent -> near side, first frame of every connection, in clear. Deliberately minimal:
    /// before authentication the agent reveals neither its name, nor its exact version, nor its
    /// clock; only the protocol version (the envelope's `v`) and the Noise pattern it expects.
    Hello { noise: String },
    /// A Noise handshake message, hex-encoded: near side -> agent (`psk, e`), then agent -> near
    /// side (`e, ee`). In clear by nature (ephemeral public keys and AEAD tags).
    Handshake { data: String },
    /// Near side -> agent, encrypted: one request per connection. `body` is a [`RequestBody`] as
    /// JSON (a string, so that a test can send a body the typed API cannot express).
    Request { body: String },
    /// Agent -> near side, encrypted: the request authenticated and is being worked on (lets the
    /// near side tell a refused request from an agent lost mid-run).
    Accepted,
    /// Agent -> near side, encrypted: the answer, a [`ResponseBody`] as JSON.
    Response { body: String },
    /// Agent -> near side: the request was refused or failed. Encrypted once the handshake is done;
    /// before that (a wrong key, a malformed handshake) in clear, so it carries no results.
    Error { code: ErrorCode, message: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The handshake failed (the two sides do not hold the same key), or an encrypted frame did
    /// not decrypt (tampered with, replayed, or from another session).
    AuthFailed,
    /// Too many concurrent sessions.
    Busy,
    /// The request asks for more than the agent's limits allow (e.g. `max_reverse_checks`); it
    /// was refused whole, nothing ran.
    Limit,
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
    /// Connect, from the agent's zone, to hosts and ports the near side could not reach: the far
    /// side's own view of a failed forward check. Sent only to an agent whose answer to `peer`
    /// listed [`CAPABILITY_FAR_SIDE`]: an older agent would refuse the unknown `op` as a
    /// malformed body.
    FarSide(FarSideRequest),
}

/// The capability an agent lists in [`ResponseBody::capabilities`] when it serves
/// [`RequestBody::FarSide`].
pub const CAPABILITY_FAR_SIDE: &str = "far_side";

/// The far-side probes of one `peer` run, all in one request (the agent runs them concurrently).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FarSideRequest {
    /// `tcp://HOST:PORT` targets (only `tcp`: a connect, nothing more), under the same policy as
    /// reverse checks: the caller itself or the agent's `allow` list. `to_caller` is refused:
    /// the far side's view of the caller is what the callback already checks.
    pub targets: Vec<ReverseTarget>,
    /// Per-hop timeout the near side would like, in milliseconds (the agent caps it).
    #[serde(default)]
    pub hop_timeout_ms: Option<u64>,
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
    /// Do not trace the path (hop `path`) after a reverse check's connect times out: the near
    /// side's `--no-trace`. Sent only when set.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_trace: bool,
}

/// There is no token field: the token the agent sends over the callback connection is derived
/// from the key and the session's Noise handshake hash by both sides (see dtcprobe's
/// `callback_token`), so it never travels before the callback, it is worthless in any other
/// session, and the caller cannot choose the bytes the agent writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallbackRequest {
    pub port: u16,
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
///
/// Generic over the hop and check results it carries: those are dtcprobe's report model, which
/// this crate does not know. dtcprobe names `ResponseBody<HopResult, CheckResult>`; the defaults
/// (any JSON value) are what a reader without the model (the fuzz target) parses into.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
// Explicit: `#[serde(default)]` would otherwise make serde demand `Hop: Default`.
#[serde(bound(deserialize = "Hop: Deserialize<'de>, Check: Deserialize<'de>"))]
pub struct ResponseBody<Hop = serde_json::Value, Check = serde_json::Value> {
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
    pub resolve: Option<Hop>,
    /// The agent's side of the callback connection.
    #[serde(default)]
    pub callback: Option<Hop>,
    /// The source address of the agent's callback connection (its local address), so that the
    /// near side accepts the callback only from the agent (this address, or the agent's own).
    #[serde(default)]
    pub callback_from: Option<String>,
    /// The source port of that connection: the near side compares it with the port the
    /// callback arrived from (different: relayed or port-translated). Absent from older agents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_from_port: Option<u16>,
    #[serde(default)]
    pub reverse: Vec<Check>,
    /// What this agent serves besides `ping` and `peer` (e.g. [`CAPABILITY_FAR_SIDE`]). Absent
    /// from older agents' answers, which is how the near side tells them apart.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<String>,
    /// The answer to a [`RequestBody::FarSide`]: one `tcp` check per target, in request order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub far_side: Vec<Check>,
}

// Not derived: a derive would demand `Hop: Default` and `Check: Default`, which the fields do not
// need (they start as `None` and empty).
impl<Hop, Check> Default for ResponseBody<Hop, Check> {
    fn default() -> Self {
        ResponseBody {
            agent: String::new(),
            zone: None,
            cid: None,
            caller_addr: None,
            resolve: None,
            callback: None,
            callback_from: None,
            callback_from_port: None,
            reverse: Vec::new(),
            capabilities: Vec::new(),
            far_side: Vec::new(),
        }
    }
}
