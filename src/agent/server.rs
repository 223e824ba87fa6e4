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

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use super::limits::{log_text, BudgetRefusal, PreAuthBudget, PreAuthSlot, WarnLimiter};
use super::metrics::AgentStats;
use super::protocol::{
    self, encode_payload, parse_body, write_frame, ChannelError, ErrorCode, FrameError,
    IoFrameError, Key, Message, PeerRequest, RequestBody, ResponseBody, ReverseTarget,
    SecureChannel, CAPABILITY_FAR_SIDE,
};
use super::{url_port, AgentConfig, AllowEntry};
use crate::chain::RunContext;
use crate::hops;
use crate::model::{Cause, CheckResult, Direction, HopKind, HopResult, Status};
use crate::resolver::DnsResolver;
use crate::target::{CheckSpec, Target};

/// Hop timeout used when the near side does not ask for one.
pub const DEFAULT_HOP_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a shut-down agent lets running sessions finish.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

pub struct AgentState {
    key: Key,
    config: AgentConfig,
    sessions: Arc<Semaphore>,
    pre_auth: Arc<PreAuthBudget>,
    /// One limiter per kind of repetitive warning.
    warn_busy: WarnLimiter,
    warn_pre_auth: WarnLimiter,
    warn_refused: WarnLimiter,
    host: String,
    pub stats: super::metrics::AgentStats,
    started: std::time::SystemTime,
}

impl AgentState {
    pub fn new(key: Key, config: AgentConfig) -> AgentState {
        let sessions = Arc::new(Semaphore::new(config.max_sessions));
        // No replay cache: a request travels under keys fresh to its own connection (Noise
        // ephemeral keys), so a recorded one never decrypts on any other.
        AgentState {
            key,
            sessions,
            pre_auth: Arc::new(PreAuthBudget::new(
                config.max_pending,
                config.max_pending_per_source,
            )),
            warn_busy: WarnLimiter::default(),
            warn_pre_auth: WarnLimiter::default(),
            warn_refused: WarnLimiter::default(),
            host: crate::runner::local_host_name(),
            config,
            stats: Default::default(),
            started: std::time::SystemTime::now(),
        }
    }

    /// What `/metrics` shows now.
    pub fn snapshot(&self) -> super::metrics::Snapshot {
        let max = self.config.max_sessions;
        let active = max.saturating_sub(self.sessions.available_permits());
        let started = self
            .started
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        self.stats.snapshot(active, max, started)
    }
}

/// Accepts sessions until `shutdown` completes, then lets running sessions finish for up to
/// [`SHUTDOWN_GRACE`] and aborts the rest.
pub async fn serve<S>(
    listener: TcpListener,
    state: Arc<AgentState>,
    shutdown: S,
) -> std::io::Result<()>
where
    S: Future<Output = ()>,
{
    let mut tasks = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        while tasks.try_join_next().is_some() {}
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let slot = match state.pre_auth.try_take(peer.ip().to_canonical()) {
            Ok(slot) => slot,
            Err(why) => {
                AgentStats::bump(&state.stats.refused_pre_auth);
                if let Some(suppressed) = state.warn_pre_auth.allow() {
                    let limit = match why {
                        BudgetRefusal::Total => "max_pending",
                        BudgetRefusal::Source => "max_pending_per_source",
                    };
                    warn!(%peer, limit, suppressed, "too many unauthenticated connections: closed");
                }
                // Closed without a word: an unauthenticated flood gets nothing to read.
                continue;
            }
        };
        let state = state.clone();
        tasks.spawn(async move {
            let limit = state.config.request_timeout + state.config.frame_timeout * 3;
            if tokio::time::timeout(limit, session(stream, peer, &state, slot))
                .await
                .is_err()
            {
                warn!(%peer, "session exceeded {limit:?}: dropped");
            }
        });
    }
    info!(running = tasks.len(), "shutting down: no new sessions");
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
        warn!("sessions still running after {SHUTDOWN_GRACE:?}: aborted");
        tasks.shutdown().await;
    }
    Ok(())
}

/// Logs a refusal, rate-limited (a flood of bad clients must not flood the log).
fn warn_refused(state: &AgentState, peer: SocketAddr, what: &str, reason: &str) {
    if let Some(suppressed) = state.warn_refused.allow() {
        warn!(%peer, reason = %log_text(reason), suppressed, "{what}");
    }
}

async fn session(stream: TcpStream, peer: SocketAddr, state: &AgentState, slot: PreAuthSlot) {
    let caller = peer.ip().to_canonical();
    let frame_timeout = state.config.frame_timeout;
    let handshake_timeout = state.config.handshake_timeout.min(frame_timeout);
    let started = tokio::time::Instant::now();
    // The Noise handshake (the agent's hello says nothing about it: no name, version or clock).
    let mut channel = match SecureChannel::accept(stream, &state.key, handshake_timeout).await {
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
            debug!(%peer, "connection closed after the handshake without a request");
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
            warn_refused(
                state,
                peer,
                "dropped session: no valid request",
                &e.to_string(),
            );
            AgentStats::bump(&state.stats.refused_protocol);
            refuse(
                &mut channel,
                ErrorCode::Protocol,
                e.to_string(),
                frame_timeout,
            )
            .await;
            return;
        }
    };
    let Message::Request { body } = msg else {
        warn_refused(
            state,
            peer,
            "dropped session",
            "first message is not a request",
        );
        AgentStats::bump(&state.stats.refused_protocol);
        refuse(
            &mut channel,
            ErrorCode::Protocol,
            "expected a request".into(),
            frame_timeout,
        )
        .await;
        return;
    };
    // Authenticated (the request decrypted under this session's keys): the pre-authentication
    // slot is given back and a session slot is taken.
    drop(slot);
    let Ok(_permit) = state.sessions.clone().try_acquire_owned() else {
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
            warn_refused(
                state,
                peer,
                "refused malformed request body",
                &e.to_string(),
            );
            AgentStats::bump(&state.stats.refused_protocol);
            refuse(
                &mut channel,
                ErrorCode::Protocol,
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
        debug!(%peer, "near side left before the request was accepted");
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
            let cx = super::far_side::serve::FarSideContext {
                caller,
                allow: &state.config.allow,
                zone: state.config.zone.clone(),
                hop_timeout: hop_timeout(req.hop_timeout_ms, &state.config),
                stats: &state.stats,
            };
            match tokio::time::timeout(
                state.config.request_timeout,
                super::far_side::serve::run(&req, &cx),
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

/// A failed handshake: counted, logged (rate-limited, escaped) and, when the near side is still
/// there to read it, answered in clear with the reason (never the key).
async fn refuse_handshake(
    state: &AgentState,
    peer: SocketAddr,
    e: ChannelError,
    stream: &mut TcpStream,
    frame_timeout: Duration,
) {
    let code = match &e {
        // A bare TCP probe (connect, close) is normal: `dtcprobe check tcp://agent:port` does it.
        ChannelError::Io(IoFrameError::Closed) => {
            debug!(%peer, "connection closed without a handshake");
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
        ChannelError::Io(IoFrameError::Io(err)) => {
            debug!(%peer, error = %err, "connection failed during the handshake");
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

/// Pure: the response, if need be without the reverse checks' hop data so that it fits in one
/// frame (the verdicts matter more than the details); an error if even that is too large.
pub fn fit_response(mut response: ResponseBody) -> Result<Message, FrameError> {
    let respond = |r: &ResponseBody| -> Result<Message, FrameError> {
        let body = serde_json::to_string(r).map_err(|e| FrameError::Malformed(e.to_string()))?;
        Ok(Message::Response { body })
    };
    let msg = respond(&response)?;
    if encode_payload(&msg).is_ok() {
        return Ok(msg);
    }
    for check in &mut response.reverse {
        for hop in &mut check.hops {
            if !hop.data.is_empty() {
                hop.data.clear();
                hop.detail
                    .push_str(" [hop data dropped: answer over the frame limit]");
            }
        }
    }
    let msg = respond(&response)?;
    encode_payload(&msg)?;
    Ok(msg)
}

/// Sends a refusal (encrypted: the handshake is done) and closes.
async fn refuse(
    channel: &mut SecureChannel<TcpStream>,
    code: ErrorCode,
    message: String,
    limit: Duration,
) {
    let _ = channel.send(&Message::Error { code, message }, limit).await;
    channel.shutdown().await;
}

/// Refuses a request that ran past `request_timeout` (counted, said to the peer).
async fn refuse_overrun(
    channel: &mut SecureChannel<TcpStream>,
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

type CallbackOutcome = (Option<HopResult>, Option<SocketAddr>);

async fn run_peer_request(
    req: &PeerRequest,
    caller: IpAddr,
    token: &str,
    state: &AgentState,
) -> (Option<HopResult>, CallbackOutcome, Vec<CheckResult>) {
    let hop_timeout = hop_timeout(req.hop_timeout_ms, &state.config);
    let resolver = Arc::new(DnsResolver::from_system(hop_timeout));

    let resolve = async {
        match &req.caller_name {
            Some(name) => Some(resolve_caller(&resolver, name, caller, hop_timeout).await),
            None => None,
        }
    };
    let callback = async {
        match &req.callback {
            Some(cb) if cb.port == 0 => (
                Some(HopResult::fail(
                    HopKind::Callback,
                    Cause::ProtocolError,
                    "the near side asked for a callback to port 0",
                )),
                None,
            ),
            Some(cb) => {
                let (hop, from) = callback(caller, cb.port, token, hop_timeout).await;
                (Some(hop), from)
            }
            None => (None, None),
        }
    };
    // The near side's `--no-trace` holds for the reverse checks too. The caller's zone is the
    // request's word, not a declared check: no zone judgement.
    let ctx = RunContext::new(hop_timeout, resolver.clone(), !req.no_trace);
    let reverse = run_reverse(&req.reverse, req_zone(req), caller, state, &ctx);
    tokio::join!(resolve, callback, reverse)
}

/// The hop timeout a near side asked for, capped by the agent's config.
fn hop_timeout(asked_ms: Option<u64>, config: &AgentConfig) -> Duration {
    asked_ms
        .map(Duration::from_millis)
        .unwrap_or(DEFAULT_HOP_TIMEOUT)
        .clamp(Duration::from_millis(100), config.max_hop_timeout)
}

fn req_zone(req: &PeerRequest) -> Option<String> {
    req.zone.clone()
}

/// The agent's view of the caller's name: what MSDTC on this side would find when it calls back.
async fn resolve_caller(
    resolver: &DnsResolver,
    name: &str,
    caller: IpAddr,
    limit: Duration,
) -> HopResult {
    let started = tokio::time::Instant::now();
    let mut result = resolve_caller_inner(resolver, name, caller, limit).await;
    if result.duration_seconds.is_zero() {
        result.duration_seconds = started.elapsed();
    }
    result
}

async fn resolve_caller_inner(
    resolver: &DnsResolver,
    name: &str,
    caller: IpAddr,
    limit: Duration,
) -> HopResult {
    let output = match tokio::time::timeout(
        limit * 4,
        hops::resolve::resolve(resolver, name, true, limit),
    )
    .await
    {
        Ok(o) => o,
        Err(_) => {
            return HopResult::fail(
                HopKind::Resolve,
                Cause::DnsTimeout,
                format!("no DNS answer for `{name}` in time"),
            )
        }
    };
    let mut result = output
        .result
        .with_data("caller_address", caller.to_string());
    if let Some(addrs) = output.value {
        if !addrs.iter().any(|a| a.to_canonical() == caller) && result.status == Status::Pass {
            let list: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
            result = HopResult::warn(
                HopKind::Resolve,
                Cause::DnsMismatch,
                format!(
                    "the agent resolves `{name}` to {}, but the connection came from {caller}",
                    list.join(", ")
                ),
            )
            .with_hint(
                "MSDTC calls back by name: the agent side would connect to the resolved address, not the one \
                 this host connects from (NAT, a stale record, or a multi-homed host). Fix the DNS/hosts record \
                 the agent's side uses",
            )
            .with_data("caller_address", caller.to_string())
            .with_data("addresses", list);
        }
    }
    result.detail = format!("as seen by the agent: {}", result.detail);
    result
}

/// Connects back to the caller's source address, sends the session's callback token (derived
/// from the key and the session's handshake hash: fixed format, never chosen by the caller, never
/// sent before, worthless in any other session), waits for the near side's ack. Also returns the callback socket's local address,
/// which the near side uses to tell the agent's callback from anyone else's.
async fn callback(
    caller: IpAddr,
    port: u16,
    token: &str,
    limit: Duration,
) -> (HopResult, Option<SocketAddr>) {
    let started = tokio::time::Instant::now();
    let (result, from) = callback_inner(caller, port, token, limit).await;
    (result.with_duration(started.elapsed()), from)
}

async fn callback_inner(
    caller: IpAddr,
    port: u16,
    token: &str,
    limit: Duration,
) -> (HopResult, Option<SocketAddr>) {
    let addr = SocketAddr::new(caller, port);
    let (attempt, stream) = hops::connect::connect(addr, limit).await;
    let Some(mut stream) = stream else {
        return (
            hops::connect::hop_result(HopKind::Callback, &[attempt]).with_data("port", port),
            None,
        );
    };
    let from = stream.local_addr().ok();
    (
        callback_exchange(&mut stream, addr, port, token, limit).await,
        from,
    )
}

async fn callback_exchange(
    stream: &mut TcpStream,
    addr: SocketAddr,
    port: u16,
    token: &str,
    limit: Duration,
) -> HopResult {
    let exchange = async {
        stream.write_all(format!("{token}\n").as_bytes()).await?;
        let mut ack = [0u8; 3];
        stream.read_exact(&mut ack).await?;
        Ok::<_, std::io::Error>(ack)
    };
    match tokio::time::timeout(limit, exchange).await {
        Ok(Ok(ack)) if &ack == b"ok\n" => {
            HopResult::pass(HopKind::Callback, format!("agent connected back to {addr}"))
                .with_data("port", port)
        }
        Ok(Ok(_)) => HopResult::fail(
            HopKind::Callback,
            Cause::ProtocolError,
            format!("connected back to {addr}, but something else answered there"),
        ),
        Ok(Err(e)) => HopResult::fail(
            HopKind::Callback,
            Cause::Reset,
            format!("connected back to {addr}, then the connection failed: {e}"),
        ),
        Err(_) => HopResult::fail(
            HopKind::Callback,
            Cause::Timeout,
            format!("connected back to {addr}, but the near side did not acknowledge"),
        ),
    }
}

async fn run_reverse(
    targets: &[ReverseTarget],
    caller_zone: Option<String>,
    caller: IpAddr,
    state: &AgentState,
    ctx: &RunContext,
) -> Vec<CheckResult> {
    // The count was checked before the request was accepted.
    join_all(targets.iter().map(|t| {
        let caller_zone = caller_zone.clone();
        async move {
            let authorized = authorize(t, caller, &state.config.allow);
            let mut result = match authorized {
                Ok(target) => {
                    info!(name = %log_text(&t.name), target = %log_text(&target.display()), "running reverse check");
                    AgentStats::bump(&state.stats.reverse_run);
                    let spec = CheckSpec {
                        name: t.name.clone(),
                        from: state.config.zone.clone(),
                        to: caller_zone,
                        timeout: Some(ctx.hop_timeout),
                        target,
                    };
                    crate::runner::run_check(&spec, ctx).await
                }
                Err(reason) => {
                    warn!(name = %log_text(&t.name), url = %log_text(&t.url), %caller, reason = %log_text(&reason), "refused reverse check");
                    AgentStats::bump(&state.stats.reverse_refused);
                    refused_check(t, &reason, state.config.zone.clone(), caller_zone)
                }
            };
            result.direction = Direction::Reverse;
            result
        }
    }))
    .await
}

fn refused_check(
    t: &ReverseTarget,
    reason: &str,
    from: Option<String>,
    to: Option<String>,
) -> CheckResult {
    let hop = HopResult::fail(HopKind::Tcp, Cause::Config, format!("refused by the agent: {reason}")).with_hint(
        "the agent only runs reverse checks against the caller itself or hosts in its own `allow` list; \
         add HOST or HOST:PORT to `allow` in the agent's config if this check is intended",
    );
    let hops = vec![hop];
    CheckResult {
        name: t.name.clone(),
        kind: t.url.split("://").next().unwrap_or("unknown").to_string(),
        target: t.url.clone(),
        from,
        to,
        direction: Direction::Reverse,
        status: CheckResult::status_of(&hops),
        hops,
    }
}

/// Check kinds the agent runs on request. `msdtc` reads the agent host's own MSDTC configuration
/// (see [`authorize`] for why it needs no allow entry).
pub const REVERSE_KINDS: &[&str] = &["tcp", "dns", "epm", "msdtc"];

/// Pure policy: may the agent run this reverse check for a caller at `caller`? Returns the target
/// to run (with the caller's address substituted when `to_caller`), or why not.
pub fn authorize(
    t: &ReverseTarget,
    caller: IpAddr,
    allow: &[AllowEntry],
) -> Result<Target, String> {
    let mut url =
        url::Url::parse(&t.url).map_err(|e| format!("invalid target `{}`: {e}", t.url))?;
    if t.to_caller {
        let host = match caller {
            IpAddr::V4(a) => a.to_string(),
            IpAddr::V6(a) => format!("[{a}]"),
        };
        url.set_host(Some(&host))
            .map_err(|e| format!("cannot point `{}` at the caller: {e}", t.url))?;
    }
    let target = Target::from_url(url.as_str()).map_err(|e| e.to_string())?;
    // Network-level checks only: the agent never holds or asks for database credentials (and
    // must never wait on a password prompt).
    if !REVERSE_KINDS.contains(&target.kind()) {
        return Err(format!(
            "`{}` checks are not run by the agent (reverse checks may be: {})",
            target.kind(),
            REVERSE_KINDS.join(", ")
        ));
    }
    // A held session (`hold=DUR`, hop `idle`) would tie up the agent, and outlast the peer's
    // session timeout, for as long as the caller asks: not run by the agent (yet).
    if let Target::Tcp(t) = &target {
        if t.hold.is_some() {
            return Err(format!(
                "`{}`: the agent does not run held sessions (hold=); run `dtcprobe check` with \
                 hold= on the far side instead",
                target.display()
            ));
        }
    }
    // `msdtc://localhost` (its target type refuses every other host) reads this agent host's own
    // registry and MSDTC service state: no packet leaves this host, nothing is written, and the
    // caller chooses only the role the config is judged for. The allow list is about where the
    // agent may connect to; this connects nowhere, so it is allowed for every authenticated
    // caller. What it reveals (DTC security settings, RPC ports, the MSDTC CID) is what the
    // caller needs to compare both sides, and only a holder of the key can ask.
    if let Target::Msdtc(_) = &target {
        return Ok(target);
    }
    let host = target.host();
    let is_caller = host
        .parse::<IpAddr>()
        .map(|a| a.to_canonical() == caller)
        .unwrap_or(false);
    if is_caller {
        return Ok(target);
    }
    let port = url_port(&url);
    if allow.iter().any(|e| e.matches(host, port)) {
        return Ok(target);
    }
    Err(format!(
        "`{}` is neither the caller ({caller}) nor in the agent's allow list",
        target.display()
    ))
}

/// Binds and serves until SIGTERM or Ctrl-C.
pub async fn run(listen: Option<&str>, key: Key, config: AgentConfig) -> anyhow::Result<()> {
    run_until(listen, key, config, shutdown_signal()).await
}

/// Binds and serves until `shutdown` completes (a signal, or the Windows service being stopped).
pub async fn run_until<S>(
    listen: Option<&str>,
    key: Key,
    config: AgentConfig,
    shutdown: S,
) -> anyhow::Result<()>
where
    S: Future<Output = ()>,
{
    let listen = listen
        .map(str::to_string)
        .or_else(|| config.listen.clone())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no listen address: pass --listen ADDR or set `listen` in the agent config"
            )
        })?;
    let listener = TcpListener::bind(&listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    info!(
        listen = %listener.local_addr()?,
        allow = config.allow.len(),
        max_sessions = config.max_sessions,
        "agent listening (protocol v{})",
        protocol::PROTOCOL_VERSION
    );
    let metrics_listen = config.metrics_listen.clone();
    let metrics_max_connections = config.metrics_max_connections;
    // `max_sessions` sessions (each with a callback and reverse-check sockets) plus the
    // pre-authentication and metrics budgets need more than the usual soft limit of 1024: the
    // one start-up rule for every command raises it to the hard limit.
    crate::fdlimit::raise_open_file_limit();
    let state = Arc::new(AgentState::new(key, config));
    // The metrics endpoint stops with the agent.
    let (stopped_tx, stopped_rx) = tokio::sync::oneshot::channel::<()>();
    if let Some(addr) = metrics_listen {
        let metrics_listener = TcpListener::bind(&addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen for metrics on {addr}: {e}"))?;
        info!(listen = %metrics_listener.local_addr()?, "serving /metrics and /healthz");
        let snapshot_state = state.clone();
        let snapshot: super::metrics::SnapshotFn = Arc::new(move || snapshot_state.snapshot());
        tokio::spawn(async move {
            let stop = async {
                let _ = stopped_rx.await;
            };
            let limits = super::metrics::MetricsLimits {
                max_connections: metrics_max_connections,
                ..Default::default()
            };
            if let Err(e) = super::metrics::serve(metrics_listener, snapshot, limits, stop).await {
                warn!(error = %e, "metrics endpoint failed");
            }
        });
    }
    let shutdown = async move {
        shutdown.await;
        let _ = stopped_tx.send(());
    };
    serve(listener, state, shutdown).await?;
    info!("agent stopped");
    Ok(())
}

pub use crate::signals::shutdown_signal;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversize_answers_drop_hop_data_then_give_up() {
        let check = |data: usize, detail: usize| {
            let hop = HopResult::pass(HopKind::Tcp, "d".repeat(detail))
                .with_data("blob", "x".repeat(data));
            CheckResult {
                name: "c".into(),
                kind: "tcp".into(),
                target: "tcp://h:1".into(),
                from: None,
                to: None,
                direction: Direction::Reverse,
                status: Status::Pass,
                hops: vec![hop],
            }
        };
        let body = |checks: Vec<CheckResult>| ResponseBody {
            agent: "a".into(),
            reverse: checks,
            ..Default::default()
        };
        let decode = |m: &Message| -> ResponseBody {
            let Message::Response { body } = m else {
                panic!("not a response")
            };
            protocol::parse_body(body).unwrap()
        };
        // Small: unchanged.
        let m = fit_response(body(vec![check(10, 10)])).unwrap();
        assert_eq!(decode(&m).reverse[0].hops[0].data["blob"], "x".repeat(10));
        // Bulky data: verdict kept, data dropped, detail says so.
        let m = fit_response(body(vec![check(40_000, 10), check(40_000, 10)])).unwrap();
        let back = decode(&m);
        assert_eq!(back.reverse.len(), 2);
        assert!(back.reverse[0].hops[0].data.is_empty());
        assert!(back.reverse[0].hops[0].detail.contains("hop data dropped"));
        assert_eq!(back.reverse[0].hops[0].status, Status::Pass);
        // Too large even without data: an error, not a truncated frame.
        assert!(fit_response(body(vec![check(0, 70_000)])).is_err());
    }

    fn rt(url: &str, to_caller: bool) -> ReverseTarget {
        ReverseTarget {
            name: "n".into(),
            url: url.into(),
            to_caller,
        }
    }

    #[test]
    fn reverse_policy_table() {
        let caller: IpAddr = "198.18.0.1".parse().unwrap();
        let allow = vec![
            AllowEntry::parse("sql01:1433").unwrap(),
            AllowEntry::parse("dc01").unwrap(),
        ];
        // (target, to_caller, expected host when allowed)
        let cases: &[(&str, bool, Option<&str>)] = &[
            ("tcp://anything:135", true, Some("198.18.0.1")),
            ("tcp://198.18.0.1:22", false, Some("198.18.0.1")),
            ("tcp://198.18.0.2:22", false, None),
            ("tcp://sql01:1433", false, Some("sql01")),
            ("tcp://SQL01:1433", false, Some("sql01")),
            ("tcp://sql01:1434", false, None),
            ("tcp://dc01:389", false, Some("dc01")),
            ("dns://dc01", false, Some("dc01")),
            ("dns://evil", false, None),
            ("ftp://x:1", false, None),
            ("epm://caller", true, Some("198.18.0.1")),
            ("epm://sql01:1433", false, Some("sql01")),
            ("epm://sql01", false, None), // default port 135 is not the allowed 1433
            ("mssql://sa@sql01/master", false, None), // credentialed kinds never run
            ("mssql://sa@caller/master", true, None),
            // Held sessions (hop `idle`) are not run by the agent, even towards an allowed port.
            ("tcp://sql01:1433?hold=15s", false, None),
            ("tcp://caller:135?hold=15s", true, None),
            // The agent's own MSDTC config: no connection anywhere, no allow entry needed.
            ("msdtc://localhost", false, Some("localhost")),
            ("msdtc://localhost?role=server", false, Some("localhost")),
            ("msdtc://caller", true, None), // never another host's, not even the caller's
            ("msdtc://sql01", false, None),
            ("not a url", false, None),
        ];
        for (url, to_caller, want) in cases {
            let got = authorize(&rt(url, *to_caller), caller, &allow);
            match (want, &got) {
                (Some(h), Ok(t)) => assert_eq!(t.host().to_ascii_lowercase(), *h, "{url}"),
                (None, Err(_)) => {}
                _ => panic!("{url} to_caller={to_caller}: want {want:?}, got {got:?}"),
            }
        }
        let v6: IpAddr = "2001:db8::7".parse().unwrap();
        let t = authorize(&rt("tcp://x:135", true), v6, &[]).unwrap();
        assert_eq!(t.host(), "2001:db8::7");
        // An IPv4 caller on a dual-stack socket shows up v4-mapped; the policy normalizes it.
        let mapped: IpAddr = "::ffff:198.18.0.1".parse().unwrap();
        assert!(authorize(&rt("tcp://198.18.0.1:1", false), mapped.to_canonical(), &[]).is_ok());
    }
}
