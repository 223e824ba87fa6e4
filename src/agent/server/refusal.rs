//! Refusals: counted, logged (rate-limited, network text escaped), and said to the near side
//! when it can still read them (in clear before the handshake, encrypted after; never the key).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tracing::{debug, warn};

use super::super::limits::log_text;
use super::super::metrics::AgentStats;
use super::super::protocol::{
    write_frame, ChannelError, ErrorCode, IoFrameError, Message, SecureChannel,
};
use super::state::{AgentState, AgentStream};

/// Logs a refusal, rate-limited (a flood of bad clients must not flood the log).
pub(super) fn warn_refused(state: &AgentState, peer: SocketAddr, what: &str, reason: &str) {
    // The first from each source is always logged (a wrong key is a misconfiguration someone
    // must see, flood or not); the rest are rate-limited.
    if state.first_refusal.first(peer.ip()) {
        warn!(%peer, reason = %log_text(reason), first_from_source = true, "{what}");
    } else if let Some(suppressed) = state.warn_refused.allow() {
        warn!(%peer, reason = %log_text(reason), suppressed, "{what}");
    }
}

/// A per-connection debug line (`-vv`), rate-limited like the warnings.
pub(super) fn debug_line(state: &AgentState, peer: SocketAddr, what: &str) {
    if let Some(suppressed) = state.debug_lines.allow() {
        debug!(%peer, suppressed, "{what}");
    }
}

/// A failed handshake: counted, logged (rate-limited, escaped) and, when the near side is still
/// there to read it, answered in clear with the reason (never the key).
pub(super) async fn refuse_handshake(
    state: &AgentState,
    peer: SocketAddr,
    e: ChannelError,
    stream: &mut AgentStream,
    frame_timeout: Duration,
) {
    let code = match &e {
        // A bare TCP probe (connect, close) is normal: `dtcprobe check tcp://agent:port` does it.
        ChannelError::Io(IoFrameError::Closed) => {
            debug_line(state, peer, "connection closed without a handshake");
            return;
        }
        ChannelError::Io(IoFrameError::Timeout(t)) => {
            warn_refused(
                state,
                peer,
                "dropped session: no handshake in time",
                &format!("no complete handshake within {t:?}"),
            );
            AgentStats::bump(&state.stats.refused_timeout);
            return;
        }
        ChannelError::Io(IoFrameError::Io(_)) => {
            debug_line(state, peer, "connection failed during the handshake");
            return;
        }
        // The key files differ: the same wording and error code as ever.
        ChannelError::Auth(_) => {
            warn_refused(
                state,
                peer,
                "refused unauthenticated request",
                &e.to_string(),
            );
            AgentStats::bump(&state.stats.refused_auth);
            ErrorCode::AuthFailed
        }
        _ => {
            warn_refused(
                state,
                peer,
                "dropped session: no valid handshake",
                &e.to_string(),
            );
            AgentStats::bump(&state.stats.refused_protocol);
            ErrorCode::Protocol
        }
    };
    let refusal = Message::Error {
        code,
        message: e.to_string(),
    };
    let _ = write_frame(stream, &refusal, frame_timeout).await;
    let _ = stream.shutdown().await;
}

/// Sends a refusal (encrypted: the handshake is done) and closes.
pub(super) async fn refuse(
    channel: &mut SecureChannel<AgentStream>,
    code: ErrorCode,
    message: String,
    limit: Duration,
) {
    let _ = channel.send(&Message::Error { code, message }, limit).await;
    channel.shutdown().await;
}

/// Refuses a session whose request was not one (counted as a protocol refusal, logged through
/// the rate limit as `what: reason`, and `message` said to the peer).
pub(super) async fn refuse_protocol(
    channel: &mut SecureChannel<AgentStream>,
    state: &AgentState,
    peer: SocketAddr,
    (what, reason): (&str, &str),
    message: String,
    limit: Duration,
) {
    warn_refused(state, peer, what, reason);
    AgentStats::bump(&state.stats.refused_protocol);
    refuse(channel, ErrorCode::Protocol, message, limit).await;
}

/// Refuses a request that ran past `request_timeout` (counted, said to the peer).
pub(super) async fn refuse_overrun(
    channel: &mut SecureChannel<AgentStream>,
    state: &AgentState,
    limit: Duration,
) {
    AgentStats::bump(&state.stats.refused_timeout);
    let msg = format!(
        "request did not finish within {:?}",
        state.config.request_timeout
    );
    refuse(channel, ErrorCode::Timeout, msg, limit).await;
}
