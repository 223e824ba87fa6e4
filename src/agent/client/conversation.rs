//! The conversation with the agent: reach it, authenticate (Noise), open the callback listener,
//! send the request, and wait (bounded) for the answer while callbacks arrive. Its outcome is a
//! [`Conversation`], judged by [`super::report`]; its progress is kept outside its future
//! ([`SessionProgress`]) so that a stopped run can still report the hops that finished.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use tokio::net::TcpListener;
use tokio::time::Instant;

use super::super::peer_options::PeerOptions;
use super::super::protocol::{
    message_name as msg_name, parse_body, AgentPublicKey, CallbackRequest, ChannelError, ErrorCode,
    IoFrameError, Message, PeerRequest, RequestBody, ResponseBody, SecureChannel,
};
use super::callback::{accept_callbacks, lock, Observed};
use super::login_hop::{agent_error, channel_failure};
use crate::chain::interrupted_hop;
use crate::hops;
use crate::model::{Cause, HopKind, HopResult};

/// How far the session got, for the checks that depend on it.
pub(super) enum Session {
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
pub(super) struct SessionProgress {
    tcp_hop: Option<HopResult>,
    login_hop: Option<HopResult>,
    observed: Arc<Mutex<Observed>>,
    callback_port: Option<u16>,
    listen_error: Option<String>,
    agent_ip: Option<IpAddr>,
}

/// Everything the conversation produced, for [`super::report::build_checks`].
pub(super) struct Conversation {
    pub(super) tcp_hop: HopResult,
    pub(super) login_hop: Option<HopResult>,
    pub(super) session: Session,
    pub(super) observed: Observed,
    pub(super) callback_port: Option<u16>,
    pub(super) listen_error: Option<String>,
}

impl SessionProgress {
    /// The conversation as far as it got when the run was stopped: finished hops as they are,
    /// the unfinished ones `skip` with cause `interrupted`.
    pub(super) fn interrupted(self) -> Conversation {
        let tcp_unfinished = self.tcp_hop.is_none();
        let tcp_hop = self
            .tcp_hop
            .unwrap_or_else(|| interrupted_hop(HopKind::Tcp));
        // Login was unfinished if it was under way (tcp passed) or tcp itself was.
        let login_hop = self.login_hop.or_else(|| {
            (tcp_unfinished || tcp_hop.lets_chain_continue())
                .then(|| interrupted_hop(HopKind::Login))
        });
        let mut observed = std::mem::take(&mut *lock(&self.observed));
        observed.agent = self.agent_ip;
        Conversation {
            tcp_hop,
            login_hop,
            session: Session::Interrupted,
            observed,
            callback_port: self.callback_port,
            listen_error: self.listen_error,
        }
    }
}

/// The agent session proper; records its progress in `progress` as it goes.
pub(super) async fn converse(
    opts: &PeerOptions,
    progress: &Mutex<SessionProgress>,
) -> Conversation {
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
        let mut retries = 0;
        let result = async {
            // The Noise handshake: authenticates both sides by the key, in one round trip.
            let (handshake, tried_again) = handshake_with_retries(stream, opts, limit).await;
            retries = tried_again;
            let mut channel =
                handshake.map_err(|e| channel_failure(e, "during the handshake with the agent"))?;
            let local = channel.get_ref().local_addr();
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
        let result = result.map_err(|hop| with_retries(hop, retries));
        match result {
            Err(hop) => login_hop = Some(hop.with_duration(login_started.elapsed())),
            Ok((mut channel, listener, token)) => {
                // The agent's name is only known from its encrypted answer (the hello is anonymous).
                login_hop = Some(with_retries(
                    identified(
                        HopResult::pass(
                            HopKind::Login,
                            "authenticated to the agent (pre-shared key)",
                        ),
                        channel.agent_key(),
                        opts.agent_pubkey.is_some(),
                    )
                    .with_duration(login_started.elapsed()),
                    retries,
                ));
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
                    | Err(e @ ChannelError::Identity { .. })
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
            let identity = match (hop.data.get("agent_fingerprint"), opts.agent_pubkey) {
                (Some(f), Some(_)) => format!("; identity {} as pinned", f.as_str().unwrap_or("?")),
                (Some(f), None) => format!("; identity {}, not pinned", f.as_str().unwrap_or("?")),
                (None, _) => String::new(),
            };
            // The retries said in the detail stay said once the agent's name is known.
            let retries = hop
                .data
                .get("retries")
                .and_then(|r| r.as_u64())
                .unwrap_or(0) as u32;
            hop.detail = format!(
                "authenticated to agent {} (pre-shared key{identity})",
                b.agent
            );
            let taken = std::mem::replace(hop, HopResult::skip(HopKind::Login, ""));
            *hop = with_retries(taken.with_data("agent", b.agent.clone()), retries);
        }
    }
    let mut observed = std::mem::take(&mut *lock(&observed));
    observed.agent = agent_ip;
    Conversation {
        tcp_hop,
        login_hop,
        session,
        observed,
        callback_port,
        listen_error,
    }
}

/// Retries of a connection the agent closed before its hello or handshake answer: an agent under
/// a flood closes its oldest silent connections to make room, and a real peer's can be one of
/// them for the round trip before it speaks.
const HANDSHAKE_RETRIES: u32 = 2;

/// The handshake; a connection closed or reset before it finished is tried again (a new TCP
/// connection) up to [`HANDSHAKE_RETRIES`] times, after 50-250 ms (jitter: peers turned away
/// together do not come back together). Returns the outcome and the retries made.
async fn handshake_with_retries(
    mut stream: tokio::net::TcpStream,
    opts: &PeerOptions,
    limit: std::time::Duration,
) -> (
    Result<SecureChannel<tokio::net::TcpStream>, ChannelError>,
    u32,
) {
    let agent = stream.peer_addr().ok();
    let mut retries = 0;
    loop {
        let outcome =
            SecureChannel::connect_pinned(stream, &opts.key, opts.agent_pubkey.as_ref(), limit)
                .await;
        let closed = matches!(
            outcome,
            Err(ChannelError::Io(IoFrameError::Closed | IoFrameError::Io(_)))
        );
        let (true, Some(agent)) = (closed && retries < HANDSHAKE_RETRIES, agent) else {
            return (outcome, retries);
        };
        retries += 1;
        let mut jitter = [0u8; 1];
        let _ = getrandom::fill(&mut jitter);
        let pause = std::time::Duration::from_millis(50 + u64::from(jitter[0]) * 200 / 255);
        tokio::time::sleep(pause).await;
        match tokio::time::timeout(limit, tokio::net::TcpStream::connect(agent)).await {
            Ok(Ok(s)) => stream = s,
            _ => return (outcome, retries),
        }
    }
}

/// Says in the login hop that the handshake was retried, and why.
fn with_retries(mut hop: HopResult, retries: u32) -> HopResult {
    if retries == 0 {
        return hop;
    }
    hop.detail = format!(
        "{} (after {retries} retr{}: the agent closed the connection before the handshake, as it \
         does to its oldest silent connections when flooded)",
        hop.detail,
        if retries == 1 { "y" } else { "ies" }
    );
    hop.with_data("retries", retries)
}

/// The login hop with the identity the agent proved: its public key, fingerprint, and whether it
/// was checked against a pin.
fn identified(hop: HopResult, agent_key: Option<AgentPublicKey>, pinned: bool) -> HopResult {
    match agent_key {
        Some(k) => hop
            .with_data("agent_pubkey", k.to_hex())
            .with_data("agent_fingerprint", k.fingerprint())
            .with_data("agent_pinned", pinned),
        None => hop,
    }
}

fn unreachable_accept<T>() -> Result<T, ChannelError> {
    Err(ChannelError::Io(IoFrameError::Io(std::io::Error::other(
        "callback listener stopped",
    ))))
}
