//! Failures of the control connection (handshake, request, the agent's refusals), as the `login`
//! hop of check `agent` reports them, each with the hint that tells what to change.

use super::super::protocol::{AuthError, ChannelError, ErrorCode, FrameError, IoFrameError};
use crate::model::{Cause, HopKind, HopResult};

/// A failed handshake or exchange with the agent, as the `login` hop reports it. A handshake the
/// agent's answer does not verify is the key mismatch the agent itself would report.
pub(super) fn channel_failure(e: ChannelError, during: &str) -> HopResult {
    match e {
        ChannelError::Io(io) => login_failure(&io, during),
        ChannelError::Refused { code, message } => agent_error(code, &message),
        ChannelError::Auth(AuthError::Handshake) => HopResult::fail(
            HopKind::Login,
            Cause::AuthFailed,
            format!("{during}: the agent's handshake does not verify: it does not hold this key"),
        )
        .with_hint(HINT_KEY_MISMATCH),
        ChannelError::Auth(AuthError::Decrypt) => HopResult::fail(
            HopKind::Login,
            Cause::AuthFailed,
            format!("{during}: {}", AuthError::Decrypt),
        )
        .with_hint(
            "something on the path altered the encrypted traffic (a proxy, an IPS rewriting \
             packets), or the agent restarted mid-session: retry, then check the path",
        ),
        e @ (ChannelError::Unexpected(_) | ChannelError::Noise(_)) => HopResult::fail(
            HopKind::Login,
            Cause::ProtocolError,
            format!("{during}: {e}"),
        )
        .with_hint(
            "something other than a dtcprobe agent of this version answered: check the address and both versions",
        ),
    }
}

const HINT_KEY_MISMATCH: &str = "the key files on the two sides differ (compare them; \
surrounding whitespace is ignored): copy the same key file to both hosts";

fn login_failure(e: &IoFrameError, during: &str) -> HopResult {
    let (cause, hint) = match e {
        IoFrameError::Timeout(_) => (
            Cause::Timeout,
            "the port answers but no dtcprobe agent speaks there (another service?), or the agent is overloaded",
        ),
        IoFrameError::Closed | IoFrameError::Io(_) => (
            Cause::Reset,
            "the agent dropped the connection: too many sessions, a firewall/IPS, or not a dtcprobe agent",
        ),
        IoFrameError::Frame(FrameError::Version { .. }) => (
            Cause::ProtocolError,
            "the agent runs a dtcprobe release with another protocol version (before version 3 the \
             channel was not encrypted): install the same dtcprobe release on both sides",
        ),
        IoFrameError::Frame(_) => (
            Cause::ProtocolError,
            "something other than a dtcprobe agent of this version answered: check the address and both versions",
        ),
    };
    HopResult::fail(HopKind::Login, cause, format!("{during}: {e}")).with_hint(hint)
}

pub(super) fn agent_error(code: ErrorCode, message: &str) -> HopResult {
    match code {
        // No clocks are involved any more (replays are refused by the fresh session keys), so a
        // refusal is a key mismatch, or traffic altered on the path.
        ErrorCode::AuthFailed => HopResult::fail(
            HopKind::Login,
            Cause::AuthFailed,
            format!("refused by the agent: {message}"),
        )
        .with_hint(HINT_KEY_MISMATCH),
        ErrorCode::Limit => HopResult::fail(
            HopKind::Login,
            Cause::Config,
            format!("the agent refused the request: {message}"),
        )
        .with_hint(
            "ask for fewer reverse checks per run (split them over several runs), or raise \
             `max_reverse_checks` in the agent's config; nothing was run",
        ),
        ErrorCode::Busy => HopResult::fail(
            HopKind::Login,
            Cause::Refused,
            format!("the agent is busy: {message}"),
        )
        .with_hint(
            "the agent is at its max_sessions limit; retry, or raise `max_sessions` in its config",
        ),
        ErrorCode::Timeout => HopResult::fail(
            HopKind::Login,
            Cause::Timeout,
            format!("the agent gave up: {message}"),
        ),
        ErrorCode::Protocol => HopResult::fail(
            HopKind::Login,
            Cause::ProtocolError,
            format!("the agent rejected the request: {message}"),
        )
        .with_hint("versions of dtcprobe on the two sides may differ"),
    }
}
