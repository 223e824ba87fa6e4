//! The near side's far-side round: one more session with the agent, after the forward checks and
//! the `peer` session, carrying every probe in one request. Any failure is an [`AskError`]: the
//! probes' hops then say "not asked" with its text (the forward results stand as they are).

use std::time::Duration;

use tokio::time::Instant;

use crate::agent::peer_options::PeerOptions;
use crate::agent::protocol::{
    message_name, parse_body, ChannelError, ErrorCode, FarSideRequest, FrameError, IoFrameError,
    Message, RequestBody, ResponseBody, ReverseTarget, SecureChannel,
};
use crate::classify::classify_connect;
use crate::hops::connect::connect;

/// Bound on the whole round: reaching the agent, the handshake, and the agent's own resolve and
/// connect (each bounded by the hop timeout on its side).
pub fn round_deadline(hop_timeout: Duration) -> Duration {
    hop_timeout * 4
}

/// Why the agent gave no far-side answer.
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    #[error("the agent did not answer within {}", shown(.0))]
    NoAnswerWithin(Duration),
    #[error("cannot resolve the agent `{agent}`: {source}")]
    Resolve {
        agent: String,
        source: std::io::Error,
    },
    #[error("the agent `{0}` has no address")]
    NoAddress(String),
    #[error("cannot reconnect to the agent at {addr}: {why}")]
    Reconnect {
        addr: std::net::SocketAddr,
        why: String,
    },
    #[error("the handshake with the agent failed: {0}")]
    Handshake(ChannelError),
    #[error("{0}")]
    Encode(serde_json::Error),
    #[error("sending the far-side request failed: {0}")]
    Send(ChannelError),
    #[error("the agent refused the request ({code:?}): {message}")]
    Refused { code: ErrorCode, message: String },
    #[error("unexpected {0} from the agent")]
    Unexpected(&'static str),
    #[error("no acceptance from the agent: {0}")]
    NoAcceptance(ChannelError),
    #[error("unreadable answer: {0}")]
    Unreadable(FrameError),
    #[error("the agent gave up ({code:?}): {message}")]
    GaveUp { code: ErrorCode, message: String },
    #[error("no answer from the agent: {0}")]
    NoAnswer(ChannelError),
}

fn shown(d: &Duration) -> humantime::FormattedDuration {
    humantime::format_duration(*d)
}

/// Asks the agent at `opts.agent` to try `targets`; its answer, or why there is none.
pub async fn ask(
    opts: &PeerOptions,
    targets: Vec<ReverseTarget>,
) -> Result<ResponseBody, AskError> {
    let deadline = round_deadline(opts.hop_timeout);
    match tokio::time::timeout(deadline, exchange(opts, targets)).await {
        Ok(r) => r,
        Err(_) => Err(AskError::NoAnswerWithin(deadline)),
    }
}

async fn exchange(
    opts: &PeerOptions,
    targets: Vec<ReverseTarget>,
) -> Result<ResponseBody, AskError> {
    let limit = opts.hop_timeout;
    let started = Instant::now();
    let addr = tokio::net::lookup_host(opts.agent.as_str())
        .await
        .map_err(|source| AskError::Resolve {
            agent: opts.agent.clone(),
            source,
        })?
        .next()
        .ok_or_else(|| AskError::NoAddress(opts.agent.clone()))?;
    let (attempt, stream) = connect(addr, limit).await;
    let stream = stream.ok_or_else(|| {
        let why = classify_connect(attempt.outcome)
            .map(|v| v.detail)
            .unwrap_or_else(|| "no connection".into());
        AskError::Reconnect { addr, why }
    })?;
    let mut channel =
        SecureChannel::connect_pinned(stream, &opts.key, opts.agent_pubkey.as_ref(), limit)
            .await
            .map_err(AskError::Handshake)?;
    let request = RequestBody::FarSide(FarSideRequest {
        targets,
        hop_timeout_ms: Some(limit.as_millis().min(u64::MAX as u128) as u64),
    });
    let body = serde_json::to_string(&request).map_err(AskError::Encode)?;
    channel
        .send(&Message::Request { body }, limit)
        .await
        .map_err(AskError::Send)?;
    match channel.recv(limit).await {
        Ok(Message::Accepted) => {}
        Ok(Message::Error { code, message }) => return Err(AskError::Refused { code, message }),
        Ok(other) => return Err(AskError::Unexpected(message_name(&other))),
        Err(e) => return Err(AskError::NoAcceptance(e)),
    }
    let deadline = round_deadline(limit);
    match channel
        .recv(deadline.saturating_sub(started.elapsed()))
        .await
    {
        Ok(Message::Response { body }) => {
            parse_body::<ResponseBody>(&body).map_err(AskError::Unreadable)
        }
        Ok(Message::Error { code, message }) => Err(AskError::GaveUp { code, message }),
        Ok(other) => Err(AskError::Unexpected(message_name(&other))),
        // The same words as the round's own deadline, which this one races.
        Err(ChannelError::Io(IoFrameError::Timeout(_))) => Err(AskError::NoAnswerWithin(deadline)),
        Err(e) => Err(AskError::NoAnswer(e)),
    }
}
