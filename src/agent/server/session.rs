//! One connection to the agent: the Noise handshake, the encrypted request (within the
//! handshake deadline), a session slot once authenticated, the request's checks, the answer.

use std::net::SocketAddr;

use tracing::{info, warn};

use super::super::fair_share::Slot;
use super::super::far_side;
use super::super::metrics::AgentStats;
use super::super::protocol::{
    parse_body, ChannelError, ErrorCode, IoFrameError, Message, RequestBody, ResponseBody,
    SecureChannel, CAPABILITY_FAR_SIDE,
};
use super::answer::fit_response;
use super::refusal::{
    debug_line, refuse, refuse_handshake, refuse_overrun, refuse_protocol, warn_refused,
};
use super::reverse::{hop_timeout, run_peer_request};
use super::state::{AgentState, AgentStream};

pub(super) async fn session(stream: AgentStream, peer: SocketAddr, state: &AgentState, slot: Slot) {
    let caller = peer.ip().to_canonical();
    let frame_timeout = state.config.frame_timeout;
    let handshake_timeout = state.config.handshake_timeout.min(frame_timeout);
    let started = tokio::time::Instant::now();
    // The Noise handshake (the agent's hello says nothing about it: no name, version or clock).
    let mut channel =
        match SecureChannel::accept(stream, &state.key, &state.identity, handshake_timeout).await {
            Ok(c) => c,
            Err((e, mut stream)) => {
                refuse_handshake(state, peer, e, &mut stream, frame_timeout).await;
                return;
            }
        };
    // The request, encrypted, still within the handshake deadline: a handshake replayed from a
    // recording gets this far (its first message decrypts), but can never produce a request
    // under this session's fresh keys.
    let remaining = handshake_timeout.saturating_sub(started.elapsed());
    let msg = match channel.recv(remaining).await {
        Ok(m) => m,
        Err(ChannelError::Io(IoFrameError::Closed)) => {
            debug_line(
                state,
                peer,
                "connection closed after the handshake without a request",
            );
            return;
        }
        Err(ChannelError::Io(IoFrameError::Timeout(t))) => {
            warn_refused(
                state,
                peer,
                "dropped session: no request in time",
                &format!("no complete request within {t:?}"),
            );
            AgentStats::bump(&state.stats.refused_timeout);
            return;
        }
        Err(ChannelError::Auth(e)) => {
            warn_refused(
                state,
                peer,
                "refused unauthenticated request",
                &e.to_string(),
            );
            AgentStats::bump(&state.stats.refused_auth);
            refuse(
                &mut channel,
                ErrorCode::AuthFailed,
                e.to_string(),
                frame_timeout,
            )
            .await;
            return;
        }
        Err(e) => {
            refuse_protocol(
                &mut channel,
                state,
                peer,
                ("dropped session: no valid request", &e.to_string()),
                e.to_string(),
                frame_timeout,
            )
            .await;
            return;
        }
    };
    let Message::Request { body } = msg else {
        refuse_protocol(
            &mut channel,
            state,
            peer,
            ("dropped session", "first message is not a request"),
            "expected a request".into(),
            frame_timeout,
        )
        .await;
        return;
    };
    // Authenticated (the request decrypted under this session's keys): the pre-authentication
    // slot is given back and a session slot is taken.
    drop(slot);
    let Ok(permit) = state.sessions.clone().try_acquire_owned() else {
        AgentStats::bump(&state.stats.refused_busy);
        if let Some(suppressed) = state.warn_busy.allow() {
            warn!(%peer, max_sessions = state.config.max_sessions, suppressed, "too many sessions: refusing");
        }
        refuse(
            &mut channel,
            ErrorCode::Busy,
            "agent busy, try again".into(),
            frame_timeout,
        )
        .await;
        return;
    };
    AgentStats::bump(&state.stats.sessions);
    let request: RequestBody = match parse_body(&body) {
        Ok(r) => r,
        Err(e) => {
            refuse_protocol(
                &mut channel,
                state,
                peer,
                ("refused malformed request body", &e.to_string()),
                e.to_string(),
                frame_timeout,
            )
            .await;
            return;
        }
    };
    let max_reverse = state.config.max_reverse_checks;
    // Far-side probes are reverse checks by another name: the same cap.
    let asked = match &request {
        RequestBody::Peer(req) => Some(req.reverse.len()),
        RequestBody::FarSide(req) => Some(req.targets.len()),
        RequestBody::Ping => None,
    };
    if let Some(asked) = asked {
        if asked > max_reverse {
            // Refused whole, before anything runs: a partial run whose answer may not fit in a
            // frame would only lose results.
            warn_refused(
                state,
                peer,
                "refused request",
                &format!("{asked} reverse checks (max_reverse_checks = {max_reverse})"),
            );
            AgentStats::bump(&state.stats.refused_limit);
            let message = format!(
                "{asked} reverse checks asked for, this agent runs at most {max_reverse} per request (max_reverse_checks)"
            );
            refuse(&mut channel, ErrorCode::Limit, message, frame_timeout).await;
            return;
        }
    }
    if channel
        .send(&Message::Accepted, frame_timeout)
        .await
        .is_err()
    {
        debug_line(
            state,
            peer,
            "near side left before the request was accepted",
        );
        return;
    }
    AgentStats::bump(&state.stats.requests);
    let mut response = ResponseBody {
        agent: state.host.clone(),
        zone: state.config.zone.clone(),
        cid: state.config.cid.clone(),
        caller_addr: Some(caller.to_string()),
        capabilities: vec![CAPABILITY_FAR_SIDE.to_string()],
        ..Default::default()
    };
    match request {
        RequestBody::Ping => info!(%peer, "authenticated ping"),
        RequestBody::FarSide(req) => {
            info!(%peer, targets = req.targets.len(), "authenticated far-side request");
            let cx = far_side::serve::FarSideContext {
                caller,
                allow: &state.config.allow,
                zone: state.config.zone.clone(),
                hop_timeout: hop_timeout(req.hop_timeout_ms, &state.config),
                stats: &state.stats,
            };
            match tokio::time::timeout(
                state.config.request_timeout,
                far_side::serve::run(&req, &cx),
            )
            .await
            {
                Ok(results) => response.far_side = results,
                Err(_) => {
                    warn!(%peer, "far-side request exceeded {:?}", state.config.request_timeout);
                    refuse_overrun(&mut channel, state, frame_timeout).await;
                    return;
                }
            }
        }
        RequestBody::Peer(req) => {
            info!(%peer, callback = req.callback.is_some(), reverse = req.reverse.len(), "authenticated peer request");
            let token = channel.callback_token(&state.key);
            match tokio::time::timeout(
                state.config.request_timeout,
                run_peer_request(&req, caller, &token, state),
            )
            .await
            {
                Ok((resolve, (callback, callback_from), reverse)) => {
                    if let Some(cb) = &callback {
                        AgentStats::bump(if cb.lets_chain_continue() {
                            &state.stats.callbacks_pass
                        } else {
                            &state.stats.callbacks_fail
                        });
                    }
                    response.resolve = resolve;
                    response.callback = callback;
                    response.callback_from =
                        callback_from.map(|a| a.ip().to_canonical().to_string());
                    response.callback_from_port = callback_from.map(|a| a.port());
                    response.reverse = reverse;
                }
                Err(_) => {
                    warn!(%peer, "request exceeded {:?}", state.config.request_timeout);
                    refuse_overrun(&mut channel, state, frame_timeout).await;
                    return;
                }
            }
        }
    }
    // The work is done: the slot is given back before the answer leaves, so a near side that
    // starts its next run as soon as it has this answer never finds its own session still
    // holding the slot (with `max_sessions = 1` it used to be refused `busy` now and then).
    drop(permit);
    match fit_response(response) {
        Ok(m) => {
            if let Err(e) = channel.send(&m, frame_timeout).await {
                warn!(%peer, error = %e, "could not send the response");
            }
        }
        Err(e) => {
            warn!(%peer, error = %e, "response too large");
            let message = format!("the answer is too large ({e}): ask for fewer reverse checks");
            refuse(&mut channel, ErrorCode::Protocol, message, frame_timeout).await;
        }
    }
}
