//! The near side of `dtcprobe peer`: runs the forward checks locally and, in the same invocation,
//! asks the agent on the far side to resolve this host's name, connect back to a callback port
//! opened here for the duration, and run the reverse checks. Every outcome, including a lost or
//! refused agent session, ends up in the report: nothing here waits without a deadline.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::Instant;

use super::protocol::{
    message_name as msg_name, parse_body, AuthError, CallbackRequest, ChannelError, ErrorCode,
    IoFrameError, Key, Message, PeerRequest, RequestBody, ResponseBody, ReverseTarget,
    SecureChannel,
};
use crate::chain::interrupted_hop;
use crate::hops;
use crate::model::{Cause, CheckResult, Direction, HopKind, HopResult, Report};
use crate::runner::{self, RunOptions};
use crate::target::CheckSpec;

/// Added to a failed callback's hint: the classic one-way firewall.
pub const HINT_BIDIRECTIONAL: &str = concat!(
    "this host reaches the agent, but the agent's connection \
back gets no answer or is blocked: MSDTC needs firewall rules in BOTH directions (TCP 135 and the \
RPC dynamic port range, from the agent's zone to this host, besides the forward rules). Open the \
reverse direction on every firewall between the zones, and on this host's own firewall (inbound \
rules; ",
    crate::platform_hints::local_firewall_cmd!(),
    ")"
);

pub const HINT_AGENT_LOST: &str =
    "the agent stopped answering mid-run (killed, crashed, restarted, \
or the connection was cut by a firewall/IPS idle timer): check the agent's service state and logs";

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

/// Runs the forward checks and the agent session concurrently and builds one report.
pub async fn run_peer(opts: &PeerOptions, specs: &[CheckSpec], run: &RunOptions) -> Report {
    run_peer_until(opts, specs, run, std::future::pending())
        .await
        .0
}

/// As [`run_peer`], until `stop` completes (SIGINT/SIGTERM). Returns the report and whether the
/// run was stopped: then finished checks (forward or from the agent) are reported as they are,
/// and every unfinished hop, forward or agent side, as `skip` with cause `interrupted`.
pub async fn run_peer_until(
    opts: &PeerOptions,
    specs: &[CheckSpec],
    run: &RunOptions,
    stop: impl std::future::Future<Output = ()>,
) -> (Report, bool) {
    use futures::FutureExt;
    let started_at = SystemTime::now();
    let started = Instant::now();
    // One stop request ends both halves.
    let stop = stop.shared();
    let ((forward, forward_stopped), (outcome, agent_stopped)) = tokio::join!(
        runner::run_plan_until(specs, run, stop.clone()),
        agent_checks_until(opts, stop.clone()),
    );
    let mut forward = forward.checks;
    for c in &mut forward {
        if c.from.is_none() {
            c.from = opts.zone.clone();
        }
        if c.to.is_none() {
            c.to = outcome.agent_zone.clone();
        }
    }
    // The far side's own view of the forward connects that failed (hop `far_side`): one more
    // round with the agent, once both halves are done. Not started on a stopped run.
    let far_side_stopped = if forward_stopped || agent_stopped {
        false
    } else {
        super::far_side::add_hops(opts, &mut forward, &outcome.far_side, stop).await
    };
    let mut checks = forward;
    checks.extend(outcome.checks);
    // MSDTC CIDs seen by `epm` hops in both directions (this host's CID from the agent's reverse
    // epm check, the agent's from a forward one): the same CID on two hosts is `duplicate_cid`.
    crate::hops::epm::mark_duplicate_cids(&mut checks);
    // MSDTC configurations read on both sides (`msdtc://localhost` here and as `--reverse`).
    let pair = msdtc_pair_checks(
        &opts.agent,
        opts.zone.clone(),
        outcome.agent_zone.clone(),
        &checks,
    );
    checks.extend(pair);
    let report = Report::new(
        started_at,
        started.elapsed(),
        runner::local_host_name(),
        checks,
    );
    (report, forward_stopped || agent_stopped || far_side_stopped)
}

/// What the agent session produced.
pub struct AgentOutcome {
    pub agent_zone: Option<String>,
    pub checks: Vec<CheckResult>,
    /// Whether the agent can be asked for the far side's view of failed forward connects.
    pub far_side: super::far_side::Availability,
}

/// How far the session got, for the checks that depend on it.
enum Session {
    /// Never authenticated: reverse checks did not run at all.
    NotEstablished,
    /// Authenticated, but no answer came: the agent was lost mid-run.
    Lost {
        cause: Cause,
        detail: String,
    },
    Answered(Box<ResponseBody>),
    /// The run was stopped (SIGINT/SIGTERM) before the agent answered.
    Interrupted,
}

/// How far the agent session got, kept outside its future so that a stopped run can still
/// report the hops that finished.
#[derive(Default)]
struct SessionProgress {
    tcp_hop: Option<HopResult>,
    login_hop: Option<HopResult>,
    observed: Arc<Mutex<Observed>>,
    callback_port: Option<u16>,
    listen_error: Option<String>,
    agent_ip: Option<IpAddr>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Connections that presented the right token, recorded (at most this many sources).
const MAX_VALID_SOURCES: usize = 16;

/// The callbacks the near side saw arriving (token verified). Which of them is the agent's is
/// decided once the agent's answer names its callback source (see [`Observed::agents_callback`]).
#[derive(Debug, Default)]
struct Observed {
    /// Sources of the connections that presented the right token.
    valid_from: Vec<SocketAddr>,
    /// Connections accepted on the callback port, and those that presented the token.
    accepted: usize,
    valid: usize,
    /// The agent's address (the one this host connected to).
    agent: Option<IpAddr>,
}

impl Observed {
    /// The first valid callback from an address the agent may call back from: its own address
    /// (the one this host connected to) or the callback source it reports in its MACed answer.
    /// A valid token from anywhere else is not the agent's callback, whatever it carries.
    fn agents_callback(&self, agent: Option<IpAddr>, reported: Option<&str>) -> Option<SocketAddr> {
        let reported: Option<IpAddr> = reported.and_then(|r| r.parse().ok());
        self.valid_from.iter().copied().find(|from| {
            let ip = from.ip().to_canonical();
            Some(ip) == agent.map(|a| a.to_canonical())
                || Some(ip) == reported.map(|r| r.to_canonical())
        })
    }

    fn unexpected(&self, agent: Option<IpAddr>, reported: Option<&str>) -> Vec<String> {
        let accepted = self.agents_callback(agent, reported).map(|a| a.ip());
        let reported: Option<IpAddr> = reported.and_then(|r| r.parse().ok());
        let mut out: Vec<String> = self
            .valid_from
            .iter()
            .map(|f| f.ip().to_canonical())
            .filter(|ip| {
                Some(*ip) != accepted.map(|a| a.to_canonical())
                    && Some(*ip) != agent.map(|a| a.to_canonical())
                    && Some(*ip) != reported.map(|r| r.to_canonical())
            })
            .map(|ip| ip.to_string())
            .collect();
        out.dedup();
        out
    }
}

pub async fn agent_checks(opts: &PeerOptions) -> AgentOutcome {
    agent_checks_until(opts, std::future::pending()).await.0
}

/// As [`agent_checks`], until `stop` completes. Returns the outcome and whether it was stopped:
/// then the hops that finished are reported as they are (a callback already seen with the right
/// token is still a pass), the rest `skip` with cause `interrupted`.
pub async fn agent_checks_until(
    opts: &PeerOptions,
    stop: impl std::future::Future<Output = ()>,
) -> (AgentOutcome, bool) {
    let progress = Mutex::new(SessionProgress::default());
    let finished = {
        let session = agent_session(opts, &progress);
        tokio::select! {
            outcome = session => Some(outcome),
            _ = stop => None,
        }
    };
    // The session future is dropped here: its connection and callback listener are closed.
    match finished {
        Some(outcome) => (outcome, false),
        None => {
            let p = progress.into_inner().unwrap_or_else(|p| p.into_inner());
            let tcp_unfinished = p.tcp_hop.is_none();
            let tcp_hop = p.tcp_hop.unwrap_or_else(|| interrupted_hop(HopKind::Tcp));
            // Login was unfinished if it was under way (tcp passed) or tcp itself was.
            let login_hop = p.login_hop.or_else(|| {
                (tcp_unfinished || tcp_hop.lets_chain_continue())
                    .then(|| interrupted_hop(HopKind::Login))
            });
            let mut observed = std::mem::take(&mut *lock(&p.observed));
            observed.agent = p.agent_ip;
            let outcome = build_checks(
                opts,
                tcp_hop,
                login_hop,
                Session::Interrupted,
                observed,
                p.callback_port,
                p.listen_error,
            );
            (outcome, true)
        }
    }
}

/// The agent session proper; records its progress in `progress` as it goes.
async fn agent_session(opts: &PeerOptions, progress: &Mutex<SessionProgress>) -> AgentOutcome {
    let limit = opts.hop_timeout;
    let mut login_hop = None;
    let mut session = Session::NotEstablished;
    let observed = lock(progress).observed.clone();
    let mut callback_port = None;
    let mut listen_error = None;
    let mut agent_ip = None;

    // 1. Reach the agent.
    let started = Instant::now();
    let mut stream = None;
    let tcp_hop = match tokio::time::timeout(limit, tokio::net::lookup_host(opts.agent.as_str()))
        .await
    {
        Ok(Ok(addrs)) => match addrs.into_iter().next() {
            Some(addr) => {
                let (attempt, s) = hops::connect::connect(addr, limit).await;
                stream = s;
                hops::connect::hop_result(HopKind::Tcp, &[attempt]).with_duration(started.elapsed())
            }
            None => HopResult::fail(
                HopKind::Tcp,
                Cause::DnsNxdomain,
                format!("agent `{}` has no address", opts.agent),
            ),
        },
        Ok(Err(e)) => HopResult::fail(
            HopKind::Tcp,
            Cause::DnsNxdomain,
            format!("cannot resolve agent `{}`: {e}", opts.agent),
        ),
        Err(_) => HopResult::fail(
            HopKind::Tcp,
            Cause::DnsTimeout,
            format!("no DNS answer for agent `{}`", opts.agent),
        ),
    };

    lock(progress).tcp_hop = Some(tcp_hop.clone());

    // 2. Authenticate and send the request; 3. collect the callback and the answer.
    if let Some(stream) = stream {
        agent_ip = stream.peer_addr().ok().map(|a| a.ip());
        lock(progress).agent_ip = agent_ip;
        let login_started = Instant::now();
        let result = async {
            // The Noise handshake: authenticates both sides by the key, in one round trip.
            let local = stream.local_addr();
            let mut channel = SecureChannel::connect(stream, &opts.key, limit)
                .await
                .map_err(|e| channel_failure(e, "during the handshake with the agent"))?;
            // Open the callback listener before asking for the callback.
            // The agent calls back the address this connection comes from: listen in its family.
            let bind = match (opts.callback_bind, local) {
                (IpAddr::V4(a), Ok(SocketAddr::V6(_))) if a.is_unspecified() => {
                    IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
                }
                (b, _) => b,
            };
            let listener = match TcpListener::bind((bind, opts.callback_port)).await {
                Ok(l) => Some(l),
                Err(e) => {
                    listen_error = Some(format!(
                        "cannot listen on {} for the callback: {e}",
                        SocketAddr::new(bind, opts.callback_port)
                    ));
                    None
                }
            };
            // Derived from the key and this session's handshake, never sent: only the agent of
            // this very session can present it.
            let token = channel.callback_token(&opts.key);
            callback_port = listener
                .as_ref()
                .and_then(|l| l.local_addr().ok())
                .map(|a| a.port());
            {
                let mut p = lock(progress);
                p.callback_port = callback_port;
                p.listen_error = listen_error.clone();
            }
            let request = PeerRequest {
                caller_name: opts.caller_name.clone(),
                callback: callback_port.map(|port| CallbackRequest { port }),
                reverse: opts.reverse.clone(),
                hop_timeout_ms: Some(limit.as_millis().min(u64::MAX as u128) as u64),
                zone: opts.zone.clone(),
                no_trace: !opts.trace,
            };
            let body = serde_json::to_string(&RequestBody::Peer(request))
                .map_err(|e| HopResult::fail(HopKind::Login, Cause::Internal, e.to_string()))?;
            channel
                .send(&Message::Request { body }, limit)
                .await
                .map_err(|e| channel_failure(e, "sending the request"))?;
            let accepted = channel
                .recv(limit)
                .await
                .map_err(|e| channel_failure(e, "waiting for the agent to accept the request"))?;
            match accepted {
                Message::Accepted => {}
                Message::Error { code, message } => return Err(agent_error(code, &message)),
                other => {
                    return Err(HopResult::fail(
                        HopKind::Login,
                        Cause::ProtocolError,
                        format!("expected the agent to accept, got {}", msg_name(&other)),
                    ))
                }
            }
            Ok((channel, listener, token))
        }
        .await;
        match result {
            Err(hop) => login_hop = Some(hop.with_duration(login_started.elapsed())),
            Ok((mut channel, listener, token)) => {
                // The agent's name is only known from its encrypted answer (the hello is anonymous).
                login_hop = Some(
                    HopResult::pass(
                        HopKind::Login,
                        "authenticated to the agent (pre-shared key)",
                    )
                    .with_duration(login_started.elapsed()),
                );
                lock(progress).login_hop = login_hop.clone();
                let answer = async {
                    match tokio::time::timeout(
                        opts.session_timeout,
                        channel.recv(opts.session_timeout),
                    )
                    .await
                    {
                        Err(_) => Err(ChannelError::Io(IoFrameError::Timeout(
                            opts.session_timeout,
                        ))),
                        Ok(r) => r,
                    }
                };
                let accept = accept_callbacks(listener, token, limit, observed.clone());
                let answer = tokio::select! {
                    a = answer => a,
                    _ = accept => unreachable_accept(),
                };
                session = match answer {
                    // Decrypted under this session's keys: it comes from the agent.
                    Ok(Message::Response { body }) => match parse_body::<ResponseBody>(&body) {
                        Ok(b) => Session::Answered(Box::new(b)),
                        Err(e) => Session::Lost {
                            cause: Cause::ProtocolError,
                            detail: format!("unreadable answer: {e}"),
                        },
                    },
                    Ok(Message::Error { code, message }) => Session::Lost {
                        cause: match code {
                            ErrorCode::Timeout => Cause::Timeout,
                            ErrorCode::AuthFailed => Cause::AuthFailed,
                            _ => Cause::ProtocolError,
                        },
                        detail: format!("the agent gave up: {message}"),
                    },
                    Ok(other) => Session::Lost {
                        cause: Cause::ProtocolError,
                        detail: format!("unexpected {} from the agent", msg_name(&other)),
                    },
                    Err(ChannelError::Auth(e)) => Session::Lost {
                        cause: Cause::AuthFailed,
                        detail: format!("the agent's answer failed authentication: {e}"),
                    },
                    Err(ChannelError::Io(IoFrameError::Timeout(t))) => Session::Lost {
                        cause: Cause::Timeout,
                        detail: format!(
                            "the agent accepted the request but did not answer within {}",
                            humantime::format_duration(t)
                        ),
                    },
                    Err(ChannelError::Io(IoFrameError::Closed)) => Session::Lost {
                        cause: Cause::Reset,
                        detail: "the agent closed the connection before answering".into(),
                    },
                    Err(ChannelError::Io(IoFrameError::Io(e))) => Session::Lost {
                        cause: Cause::Reset,
                        detail: format!(
                            "the connection to the agent failed before it answered: {e}"
                        ),
                    },
                    Err(e @ ChannelError::Io(IoFrameError::Frame(_)))
                    | Err(e @ ChannelError::Refused { .. })
                    | Err(e @ ChannelError::Unexpected(_))
                    | Err(e @ ChannelError::Noise(_)) => Session::Lost {
                        cause: Cause::ProtocolError,
                        detail: format!("bad frame from the agent: {e}"),
                    },
                };
            }
        }
    }

    if let (Some(hop), Session::Answered(b)) = (&mut login_hop, &session) {
        if hop.lets_chain_continue() {
            hop.detail = format!("authenticated to agent {} (pre-shared key)", b.agent);
            let taken = std::mem::replace(hop, HopResult::skip(HopKind::Login, ""));
            *hop = taken.with_data("agent", b.agent.clone());
        }
    }
    let mut observed = std::mem::take(&mut *observed.lock().unwrap_or_else(|p| p.into_inner()));
    observed.agent = agent_ip;
    build_checks(
        opts,
        tcp_hop,
        login_hop,
        session,
        observed,
        callback_port,
        listen_error,
    )
}

fn unreachable_accept<T>() -> Result<T, ChannelError> {
    Err(ChannelError::Io(IoFrameError::Io(std::io::Error::other(
        "callback listener stopped",
    ))))
}

/// Accepts connections on the callback port until dropped; a connection that presents the token
/// is the agent's callback (acknowledged with `ok\n`); anything else is counted and closed.
async fn accept_callbacks(
    listener: Option<TcpListener>,
    token: String,
    limit: Duration,
    observed: Arc<Mutex<Observed>>,
) {
    let Some(listener) = listener else {
        return std::future::pending().await;
    };
    // Each connection is read concurrently, so a stray or silent connection cannot hold up the
    // agent's; at most 16 are handled at once (more are closed straight away).
    let mut pending = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            Some(_) = pending.join_next(), if !pending.is_empty() => continue,
        };
        let Ok((mut conn, from)) = accepted else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        observed.lock().unwrap_or_else(|p| p.into_inner()).accepted += 1;
        if pending.len() >= 16 {
            continue;
        }
        let token = token.clone();
        let observed = observed.clone();
        pending.spawn(async move {
            let read_token = async {
                let mut buf = Vec::with_capacity(token.len() + 1);
                let mut byte = [0u8; 1];
                while buf.len() <= token.len() {
                    if conn.read(&mut byte).await? == 0 || byte[0] == b'\n' {
                        break;
                    }
                    buf.push(byte[0]);
                }
                Ok::<_, std::io::Error>(buf)
            };
            let got = tokio::time::timeout(limit, read_token).await;
            let good = matches!(got, Ok(Ok(b)) if b == token.as_bytes());
            if good {
                {
                    let mut o = observed.lock().unwrap_or_else(|p| p.into_inner());
                    if o.valid_from.len() < MAX_VALID_SOURCES {
                        o.valid_from.push(from);
                    }
                    o.valid += 1;
                }
                let _ = tokio::time::timeout(limit, conn.write_all(b"ok\n")).await;
            }
        });
    }
}

/// A failed handshake or exchange with the agent, as the `login` hop reports it. A handshake the
/// agent's answer does not verify is the key mismatch the agent itself would report.
fn channel_failure(e: ChannelError, during: &str) -> HopResult {
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
        IoFrameError::Frame(super::protocol::FrameError::Version { .. }) => (
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

fn agent_error(code: ErrorCode, message: &str) -> HopResult {
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

fn build_checks(
    opts: &PeerOptions,
    tcp_hop: HopResult,
    login_hop: Option<HopResult>,
    session: Session,
    observed: Observed,
    callback_port: Option<u16>,
    listen_error: Option<String>,
) -> AgentOutcome {
    let agent_zone = match &session {
        Session::Answered(b) => b.zone.clone(),
        _ => None,
    };
    use super::far_side::Availability;
    let far_side = match &session {
        Session::Answered(b) => Availability::of(b),
        Session::NotEstablished => {
            Availability::Unavailable("no authenticated session with the agent".into())
        }
        Session::Lost { detail, .. } => {
            Availability::Unavailable(format!("the agent did not answer: {detail}"))
        }
        Session::Interrupted => Availability::Unavailable("the run was stopped".into()),
    };
    let mut checks = Vec::new();

    // The control connection itself.
    let mut hops = vec![tcp_hop];
    hops.push(login_hop.unwrap_or_else(|| {
        HopResult::skip(
            HopKind::Login,
            "not run: depends on `tcp`, which did not pass",
        )
    }));
    let forward_ok = hops.iter().all(|h| h.lets_chain_continue());
    checks.push(check(
        "agent",
        "agent",
        format!("agent://{}", opts.agent),
        opts.zone.clone(),
        agent_zone.clone(),
        Direction::Forward,
        hops,
    ));

    // The callback (reverse direction).
    let caller_addr = match &session {
        Session::Answered(b) => b.caller_addr.clone(),
        _ => None,
    };
    let callback_target = format!(
        "tcp://{}:{}",
        caller_addr
            .as_deref()
            .map(crate::hostport::bracket_v6)
            .unwrap_or_else(|| "caller".into()),
        callback_port
            .map(|p| p.to_string())
            .unwrap_or_else(|| "?".into())
    );
    let (resolve_hop, callback_hop) = match &session {
        Session::NotEstablished => (
            HopResult::skip(
                HopKind::Resolve,
                "not run: no authenticated session with the agent",
            ),
            HopResult::skip(
                HopKind::Callback,
                "not run: no authenticated session with the agent",
            ),
        ),
        // A callback already seen (right token, from the agent) is a fact; the rest is unknown.
        Session::Interrupted => (
            interrupted_hop(HopKind::Resolve),
            match observed.agents_callback(observed.agent, None) {
                Some(from) => callback_seen(from, callback_port),
                None => interrupted_hop(HopKind::Callback),
            },
        ),
        Session::Lost { cause, detail } => (
            HopResult::skip(
                HopKind::Resolve,
                format!("no answer from the agent: {detail}"),
            ),
            match observed.agents_callback(observed.agent, None) {
                Some(from) => callback_seen(from, callback_port),
                None => HopResult::fail(HopKind::Callback, *cause, detail.clone())
                    .with_hint(HINT_AGENT_LOST),
            },
        ),
        Session::Answered(b) => {
            // The agent ran this lookup: its hint speaks of the agent's host, not this one.
            let resolve = b
                .resolve
                .clone()
                .map(super::far_side::reword_hop)
                .unwrap_or_else(|| {
                    HopResult::skip(HopKind::Resolve, "not run: no caller name to look up")
                });
            let seen = observed.agents_callback(observed.agent, b.callback_from.as_deref());
            let callback = match (seen, &b.callback, &listen_error) {
                // The agent's signed verdict says its callback failed, yet one arrived here:
                // something on the path answered for one side or the other. Never a pass.
                (Some(from), Some(agent_side), _) if !agent_side.lets_chain_continue() => {
                    HopResult::fail(
                        HopKind::Callback,
                        Cause::CallbackMismatch,
                        format!(
                            "a callback arrived from {} but the agent reports its own failed: {}",
                            from.ip(),
                            agent_side.detail
                        ),
                    )
                    .with_hint(
                        "the agent's answer (authenticated) and what reached this host disagree: a device on \
                         the path (proxy, NAT, IPS) may be answering or relaying connections; do not trust this \
                         path for MSDTC until explained",
                    )
                    .with_data("from", from.ip().to_string())
                }
                (Some(from), agent_side, _) => {
                    let hop = callback_seen(from, callback_port);
                    match agent_side {
                        Some(a) => hop.with_duration(a.duration_seconds),
                        None => hop,
                    }
                }
                (None, _, Some(e)) => HopResult::fail(HopKind::Callback, Cause::Internal, e.clone()),
                (None, Some(agent_side), None) if !agent_side.lets_chain_continue() => {
                    let mut hop = agent_side.clone();
                    hop.detail = format!("agent -> this host: {}", hop.detail);
                    // The agent made this connection: a hint about "this host" means the agent's.
                    let original = hop.hint.take().map(|h| super::far_side::reword_hint(&h));
                    // A silent drop is exactly the one-way firewall: the bidirectional hint says
                    // it all. Other causes keep their own explanation after it.
                    let hint = match (forward_ok, original) {
                        (true, _) if hop.cause == Some(Cause::Timeout) => HINT_BIDIRECTIONAL.to_string(),
                        (true, Some(o)) => format!("{HINT_BIDIRECTIONAL}. Also: {o}"),
                        (true, None) => HINT_BIDIRECTIONAL.to_string(),
                        (false, o) => o.unwrap_or_default(),
                    };
                    hop.with_hint(hint)
                }
                (None, Some(agent_side), None) => HopResult::fail(
                    HopKind::Callback,
                    Cause::CallbackMismatch,
                    format!("the agent reports a callback ({}), but none arrived here with the right token", agent_side.detail),
                )
                .with_hint("a NAT or port forward may send the agent's connection to another host"),
                (None, None, None) => HopResult::skip(HopKind::Callback, "the agent did not attempt a callback"),
            };
            (resolve, callback)
        }
    };
    let mut callback_hop = callback_hop;
    let stray = observed.accepted.saturating_sub(observed.valid);
    if stray > 0 {
        callback_hop = callback_hop.with_data("stray_connections", stray);
    }
    let reported = match &session {
        Session::Answered(b) => b.callback_from.as_deref(),
        _ => None,
    };
    let unexpected = observed.unexpected(observed.agent, reported);
    if !unexpected.is_empty() {
        callback_hop = callback_hop.with_data("unexpected_sources", unexpected);
    }
    checks.push(check(
        "callback",
        "callback",
        callback_target,
        agent_zone.clone(),
        opts.zone.clone(),
        Direction::Reverse,
        vec![resolve_hop, callback_hop],
    ));

    // Reverse checks run by the agent.
    match &session {
        Session::Answered(b) => checks.extend(b.reverse.iter().cloned().map(|c| {
            let mut c = super::far_side::reword_check(c);
            c.direction = Direction::Reverse;
            c
        })),
        other => {
            for t in &opts.reverse {
                let hop = match other {
                    Session::Lost { cause, detail } => {
                        HopResult::fail(HopKind::Tcp, *cause, detail.clone())
                            .with_hint(HINT_AGENT_LOST)
                    }
                    Session::Interrupted => interrupted_hop(HopKind::Tcp),
                    _ => HopResult::skip(
                        HopKind::Tcp,
                        "not run: no authenticated session with the agent",
                    ),
                };
                let kind = t.url.split("://").next().unwrap_or("unknown").to_string();
                let mut c = check(
                    &t.name,
                    &kind,
                    t.url.clone(),
                    agent_zone.clone(),
                    opts.zone.clone(),
                    Direction::Reverse,
                    vec![hop],
                );
                c.kind = kind;
                checks.push(c);
            }
        }
    }

    // MSDTC CIDs: identical CIDs (cloned machines) break distributed transactions between them.
    if let (Some(_), Session::Interrupted) = (&opts.cid, &session) {
        checks.push(check(
            "msdtc_cid",
            "msdtc_cid",
            format!("agent://{}", opts.agent),
            opts.zone.clone(),
            agent_zone.clone(),
            Direction::Forward,
            vec![interrupted_hop(HopKind::TxDistributed)],
        ));
    }
    if let (Some(local), Session::Answered(b)) = (&opts.cid, &session) {
        if let Some(remote) = &b.cid {
            checks.push(check(
                "msdtc_cid",
                "msdtc_cid",
                format!("agent://{}", opts.agent),
                opts.zone.clone(),
                agent_zone.clone(),
                Direction::Forward,
                vec![compare_cids(local, remote)],
            ));
        }
    }
    AgentOutcome {
        agent_zone,
        checks,
        far_side,
    }
}

fn callback_seen(from: SocketAddr, port: Option<u16>) -> HopResult {
    let mut hop = HopResult::pass(
        HopKind::Callback,
        format!("the agent connected back from {}", from.ip()),
    )
    .with_data("from", from.ip().to_string());
    if let Some(p) = port {
        hop.detail = format!("the agent connected back from {} to port {p}", from.ip());
        hop = hop.with_data("port", p);
    }
    hop
}

fn check(
    name: &str,
    kind: &str,
    target: String,
    from: Option<String>,
    to: Option<String>,
    direction: Direction,
    hops: Vec<HopResult>,
) -> CheckResult {
    CheckResult {
        name: name.to_string(),
        kind: kind.to_string(),
        target,
        from,
        to,
        direction,
        status: CheckResult::status_of(&hops),
        hops,
    }
}

/// Pure: when this run read MSDTC's configuration on both sides (a forward `msdtc` check and a
/// reverse one, each with a `dtc_config` hop), the pair judged together: check `msdtc_pair`
/// (authentication levels that cannot work together, the direction each side must allow) and,
/// unless `--cid` with the agent's `cid` already produced it, check `msdtc_cid` from the two CIDs
/// the registry gave (the same comparison, [`compare_cids`]). Nothing when either check is absent.
pub fn msdtc_pair_checks(
    agent: &str,
    zone: Option<String>,
    agent_zone: Option<String>,
    checks: &[CheckResult],
) -> Vec<CheckResult> {
    let config_hop = |direction: Direction| {
        checks
            .iter()
            .filter(|c| c.kind == "msdtc" && c.direction == direction)
            .flat_map(|c| c.hops.iter())
            .find(|h| h.hop == HopKind::DtcConfig)
    };
    let (Some(near), Some(far)) = (
        config_hop(Direction::Forward),
        config_hop(Direction::Reverse),
    ) else {
        return Vec::new();
    };
    use crate::hops::msdtc::{compare_pair, MsdtcConfig};
    let target = format!("agent://{agent}");
    let pair_check = |name: &str, kind: &str, hop: HopResult| {
        check(
            name,
            kind,
            target.clone(),
            zone.clone(),
            agent_zone.clone(),
            Direction::Forward,
            vec![hop],
        )
    };
    let (near_config, far_config) = (
        MsdtcConfig::from_data(&near.data),
        MsdtcConfig::from_data(&far.data),
    );
    let (Some(near_config), Some(far_config)) = (near_config.as_ref(), far_config.as_ref()) else {
        let (side, hop) = if near_config.is_none() {
            ("this host", near)
        } else {
            ("the agent's host", far)
        };
        let skipped = HopResult::skip(
            HopKind::DtcConfig,
            format!(
                "not compared: {side} has no MSDTC configuration in this report ({} {}: {})",
                hop.hop.as_str(),
                hop.status.as_str(),
                hop.detail
            ),
        );
        return vec![pair_check("msdtc_pair", "msdtc_pair", skipped)];
    };
    let mut out = vec![pair_check(
        "msdtc_pair",
        "msdtc_pair",
        compare_pair(near_config, far_config),
    )];
    let cid_compared = checks.iter().any(|c| c.kind == "msdtc_cid");
    if let (false, Some(local), Some(remote)) = (cid_compared, &near_config.cid, &far_config.cid) {
        out.push(pair_check(
            "msdtc_cid",
            "msdtc_cid",
            compare_cids(local, remote),
        ));
    }
    out
}

/// Pure: compares two MSDTC CIDs (GUIDs; braces and case ignored).
pub fn compare_cids(local: &str, remote: &str) -> HopResult {
    let norm = |s: &str| {
        s.trim()
            .trim_matches(|c| c == '{' || c == '}')
            .to_ascii_lowercase()
    };
    let data = json!({ "local": local, "remote": remote });
    if norm(local) == norm(remote) {
        HopResult::fail(HopKind::TxDistributed, Cause::DuplicateCid, format!("both hosts have MSDTC CID {}", norm(local)))
            .with_hint(
                "identical MSDTC CIDs (cloned VM or image without sysprep) make MSDTC treat the two hosts as one and \
                 distributed transactions between them fail: on one host run `msdtc -uninstall` then `msdtc -install` \
                 (Windows) and re-apply the DTC security settings",
            )
            .with_data("cid", data)
    } else {
        HopResult::pass(HopKind::TxDistributed, "MSDTC CIDs differ").with_data("cid", data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Status;

    /// A `dtc_config` check as `msdtc://localhost` produces it, here or (reverse) on the agent.
    fn dtc_check(direction: Direction, config: &crate::hops::msdtc::MsdtcConfig) -> CheckResult {
        use crate::hops::msdtc::{config_hop, Role};
        let mut c = CheckResult::new(
            "m",
            "msdtc",
            "msdtc://localhost",
            vec![config_hop(config, Role::Both)],
        );
        c.direction = direction;
        c
    }

    #[test]
    fn msdtc_pair_from_both_sides_configs() {
        use crate::hops::msdtc::{MsdtcConfig, ServiceState};
        let good = |allow_only_secure: u32, turn_off: u32, cid: &str| MsdtcConfig {
            service_state: Some(ServiceState::Running),
            network_dtc_access: Some(1),
            network_dtc_access_inbound: Some(1),
            network_dtc_access_outbound: Some(1),
            allow_only_secure_rpc_calls: Some(allow_only_secure),
            turn_off_rpc_security: Some(turn_off),
            cid: Some(cid.into()),
            ..MsdtcConfig::default()
        };
        let pair = |near: &MsdtcConfig, far: &MsdtcConfig, more: Vec<CheckResult>| {
            let mut checks = vec![
                dtc_check(Direction::Forward, near),
                dtc_check(Direction::Reverse, far),
            ];
            checks.extend(more);
            msdtc_pair_checks(
                "sql01:7135",
                Some("web".into()),
                Some("sql".into()),
                &checks,
            )
        };
        // Mutual here, none there, and the same CID: both problems, in two checks.
        let out = pair(&good(1, 0, "aaaa"), &good(0, 1, "AAAA"), vec![]);
        assert_eq!(out.len(), 2, "{out:#?}");
        assert_eq!(
            (out[0].name.as_str(), out[0].kind.as_str()),
            ("msdtc_pair", "msdtc_pair")
        );
        assert_eq!(out[0].hops[0].cause, Some(Cause::DtcAuthMismatch));
        assert_eq!(out[0].target, "agent://sql01:7135");
        assert_eq!(
            (out[0].from.as_deref(), out[0].to.as_deref()),
            (Some("web"), Some("sql"))
        );
        assert_eq!(out[1].name, "msdtc_cid");
        assert_eq!(out[1].hops[0].cause, Some(Cause::DuplicateCid));
        // Compatible and distinct: both pass.
        let out = pair(&good(1, 0, "aaaa"), &good(1, 0, "bbbb"), vec![]);
        assert_eq!(
            out.iter().map(|c| c.status).collect::<Vec<_>>(),
            [Status::Pass, Status::Pass]
        );
        // `--cid` already compared the CIDs: not twice.
        let given = check(
            "msdtc_cid",
            "msdtc_cid",
            "agent://sql01:7135".into(),
            None,
            None,
            Direction::Forward,
            vec![compare_cids("x", "y")],
        );
        let out = pair(&good(1, 0, "aaaa"), &good(1, 0, "aaaa"), vec![given]);
        assert_eq!(out.len(), 1, "{out:#?}");
        // The agent could not read its side (a Linux agent): skipped, and says why.
        let mut linux = CheckResult::new(
            "m",
            "msdtc",
            "msdtc://localhost",
            vec![HopResult::unsupported(
                HopKind::DtcConfig,
                "needs the Windows build",
            )],
        );
        linux.direction = Direction::Reverse;
        let checks = vec![dtc_check(Direction::Forward, &good(1, 0, "a")), linux];
        let out = msdtc_pair_checks("a:1", None, None, &checks);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].status, Status::Skip);
        assert!(
            out[0].hops[0].detail.contains("the agent's host"),
            "{:?}",
            out[0].hops[0]
        );
        assert!(out[0].hops[0].detail.contains("needs the Windows build"));
        // Only one side read: nothing to compare.
        let checks = vec![dtc_check(Direction::Forward, &good(1, 0, "a"))];
        assert!(msdtc_pair_checks("a:1", None, None, &checks).is_empty());
    }

    #[test]
    fn cid_comparison_table() {
        let cases = [
            ("{5D1E...A}", "{5d1e...a}", Status::Fail),
            ("5d1eaaaa-0000", "{5D1EAAAA-0000}", Status::Fail),
            ("aaaa", "bbbb", Status::Pass),
        ];
        for (l, r, want) in cases {
            let hop = compare_cids(l, r);
            assert_eq!(hop.status, want, "{l} vs {r}");
            if want == Status::Fail {
                assert_eq!(hop.cause, Some(Cause::DuplicateCid));
            }
            assert_eq!(hop.data["cid"]["local"], l);
        }
    }
}
