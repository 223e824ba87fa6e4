//! The checks the agent session contributes to the report (`agent`, `callback`, the reverse
//! checks, `msdtc_cid` from `--cid`), judged from the [`Conversation`]: what the agent answered
//! (authenticated) and what this host saw arriving on the callback port.

use std::net::SocketAddr;

use super::super::far_side::{self, Availability};
use super::super::peer_options::PeerOptions;
use super::checks::check;
use super::conversation::{Conversation, Session};
use super::msdtc_pair::compare_cids;
use crate::chain::interrupted_hop;
use crate::model::{Cause, CheckResult, Direction, HopKind, HopResult};

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

/// What the agent session produced.
pub struct AgentOutcome {
    pub agent_zone: Option<String>,
    pub checks: Vec<CheckResult>,
    /// Whether the agent can be asked for the far side's view of failed forward connects.
    pub far_side: Availability,
}

pub(super) fn build_checks(opts: &PeerOptions, conversation: Conversation) -> AgentOutcome {
    let Conversation {
        tcp_hop,
        login_hop,
        session,
        observed,
        callback_port,
        listen_error,
    } = conversation;
    let agent_zone = match &session {
        Session::Answered(b) => b.zone.clone(),
        _ => None,
    };
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
                .map(far_side::reword_hop)
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
                    let original = hop.hint.take().map(|h| far_side::reword_hint(&h));
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
            let mut c = far_side::reword_check(c);
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
