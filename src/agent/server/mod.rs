//! The agent: accepts authenticated requests from near sides, connects back to them, and runs the
//! reverse checks its policy allows.
//!
//! Resource bounds: a connection first takes a slot of the pre-authentication budget
//! (`max_pending` in total, `max_pending_per_source` per address; over budget it is closed at
//! once) and must finish the Noise handshake and present its encrypted request within
//! `handshake_timeout` (the channel: [`super::protocol::channel`]). Only an authenticated
//! request takes one of the `max_sessions` session slots (others get a `busy` error without
//! waiting), so idle unauthenticated sockets cannot lock real peers out. Every frame must arrive
//! whole within `frame_timeout`, every request finishes within `request_timeout`, frames over
//! 64 KiB (and encrypted records over 65,535 bytes) are refused from their length prefix, and a request for more than `max_reverse_checks`
//! reverse checks is refused whole. Repetitive warnings are rate-limited and network-derived text
//! is escaped before it is logged ([`super::limits`]).
//!
//! - [`admission`]: the accept loop and the pre-authentication budget.
//! - [`session`]: one connection, from the handshake to the answer.
//! - [`refusal`]: refusals, counted, logged and said to the near side.
//! - [`reverse`]: a `peer` request's callback, caller lookup and reverse checks.
//! - [`callback`], [`caller_name`]: the callback and the lookup themselves.
//! - [`answer`]: the answer made to fit in one frame.
//! - [`start`]: binding, the metrics endpoint, serving until shutdown.
//!
//! Which reverse checks are allowed is [`super::policy`]'s (pure) decision.

pub mod admission;
mod answer;
mod callback;
mod caller_name;
mod refusal;
mod reverse;
mod session;
pub mod start;
pub mod state;

pub use admission::{serve, SHUTDOWN_GRACE};
pub use answer::fit_response;
pub use reverse::DEFAULT_HOP_TIMEOUT;
pub use start::{run, run_until, shutdown_signal};
pub use state::AgentState;
