//! The near side of `dtcprobe peer`: runs the forward checks locally and, in the same invocation,
//! asks the agent on the far side to resolve this host's name, connect back to a callback port
//! opened here for the duration, and run the reverse checks. Every outcome, including a lost or
//! refused agent session, ends up in the report: nothing here waits without a deadline.
//!
//! - [`run`]: the orchestration (forward checks and agent session together, one report).
//! - [`conversation`]: the session with the agent (connect, Noise handshake, request, answer).
//! - [`callback`]: the callback listener (which connections presented the session's token).
//! - [`login_hop`]: failures of the control connection as the `login` hop reports them.
//! - [`report`]: the agent session's checks, judged from the conversation and the callbacks.
//! - [`msdtc_pair`]: both sides' MSDTC configurations and CIDs compared.

mod callback;
mod checks;
mod conversation;
mod login_hop;
pub mod msdtc_pair;
pub mod report;
pub mod run;

pub use super::peer_options::PeerOptions;
pub use msdtc_pair::{compare_cids, msdtc_pair_checks};
pub use report::{AgentOutcome, HINT_AGENT_LOST, HINT_BIDIRECTIONAL};
pub use run::{agent_checks, agent_checks_until, run_peer, run_peer_until};
