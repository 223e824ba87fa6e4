//! The near side's far-side round: one more session with the agent, after the forward checks and
//! the `peer` session, carrying every probe in one request. Any failure is a reason string: the
//! probes' hops then say "not asked" with it (the forward results stand as they are).

use std::time::Duration;

use tokio::time::Instant;

use crate::agent::peer_options::PeerOptions;
use crate::agent::protocol::{
    message_name, parse_body, ChannelError, FarSideRequest, IoFrameError, Message, RequestBody,
    ResponseBody, ReverseTarget, SecureChannel,
};
use crate::classify::classify_connect;
use crate::hops::connect::connect;

/// Bound on the whole round: reaching the agent, the handshake, and the agent's own resolve and
/// connect (each bounded by the hop timeout on its side).
pub fn round_deadline(hop_timeout: Duration) -> Duration {
    hop_timeout * 4
}

/// Asks the agent at `opts.agent` to try `targets`; its answer, or why there is none.
pub async fn ask(opts: &PeerOptions, targets: Vec<ReverseTarget>) -> Result<ResponseBody, String> {
    let deadline = round_deadline(opts.hop_timeout);
    match tokio::time::timeout(deadline, exchange(opts, targets)).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "the agent did not answer within {}",
            humantime::format_duration(deadline)
        )),
    }
}

async fn exchange(opts: &PeerOptions, targets: Vec<ReverseTarget>) -> Result<ResponseBody, String> {
    let limit = opts.hop_timeout;
    let started = Instant::now();
    let addr = tokio::net::lookup_host(opts.agent.as_str())
        .await
        .map_err(|e| format!("cannot resolve the agent `{}`: {e}", opts.agent))?
        .next()
        .ok_or_else(|| format!("the agent `{}` has no address", opts.agent))?;
    let (attempt, stream) = connect(addr, limit).await;
    let stream = stream.ok_or_else(|| {
        let why = classify_connect(attempt.outcome)
            .map(|v| v.detail)
            .unwrap_or_else(|| "no connection".into());
        format!("cannot reconnect to the agent at {addr}: {why}")
    })?;
    let mut channel = SecureChannel::connect(stream, &opts.key, limit)
        .await
        .map_err(|e| format!("the handshake with the agent failed: {e}"))?;
    let request = RequestBody::FarSide(FarSideRequest {
        targets,
        hop_timeout_ms: Some(limit.as_millis().min(u64::MAX as u128) as u64),
    });
    let body = serde_json::to_string(&request).map_err(|e| e.to_string())?;
    channel
        .send(&Message::Request { body }, limit)
        .await
        .map_err(|e| format!("sending the far-side request failed: {e}"))?;
    match channel.recv(limit).await {
        Ok(Message::Accepted) => {}
        Ok(Message::Error { code, message }) => {
            return Err(format!(
                "the agent refused the request ({code:?}): {message}"
            ))
        }
        Ok(other) => {
            return Err(format!(
                "unexpected {} from the agent",
                message_name(&other)
            ))
        }
        Err(e) => return Err(format!("no acceptance from the agent: {e}")),
    }
    let deadline = round_deadline(limit);
    match channel
        .recv(deadline.saturating_sub(started.elapsed()))
        .await
    {
        Ok(Message::Response { body }) => {
            parse_body::<ResponseBody>(&body).map_err(|e| format!("unreadable answer: {e}"))
        }
        Ok(Message::Error { code, message }) => {
            Err(format!("the agent gave up ({code:?}): {message}"))
        }
        Ok(other) => Err(format!(
            "unexpected {} from the agent",
            message_name(&other)
        )),
        // The same words as the round's own deadline, which this one races.
        Err(ChannelError::Io(IoFrameError::Timeout(_))) => Err(format!(
            "the agent did not answer within {}",
            humantime::format_duration(deadline)
        )),
        Err(e) => Err(format!("no answer from the agent: {e}")),
    }
}
