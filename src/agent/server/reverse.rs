//! A `peer` request run by the agent: the caller's name looked up, the callback, and the reverse
//! checks its policy allows, concurrently and each bounded by the (capped) hop timeout.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use tracing::{info, warn};

use super::super::limits::log_text;
use super::super::metrics::AgentStats;
use super::super::policy::{authorize, Refusal};
use super::super::protocol::{PeerRequest, ReverseTarget};
use super::super::AgentConfig;
use super::callback::callback;
use super::caller_name::resolve_caller;
use super::state::AgentState;
use crate::chain::RunContext;
use crate::model::{Cause, CheckResult, Direction, HopKind, HopResult};
use crate::resolver::DnsResolver;
use crate::target::CheckSpec;

/// Hop timeout used when the near side does not ask for one.
pub const DEFAULT_HOP_TIMEOUT: Duration = Duration::from_secs(3);

type CallbackOutcome = (Option<HopResult>, Option<SocketAddr>);

pub(super) async fn run_peer_request(
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
pub(super) fn hop_timeout(asked_ms: Option<u64>, config: &AgentConfig) -> Duration {
    asked_ms
        .map(Duration::from_millis)
        .unwrap_or(DEFAULT_HOP_TIMEOUT)
        .clamp(Duration::from_millis(100), config.max_hop_timeout)
}

fn req_zone(req: &PeerRequest) -> Option<String> {
    req.zone.clone()
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
                    warn!(name = %log_text(&t.name), url = %log_text(&t.url), %caller, reason = %log_text(&reason.to_string()), "refused reverse check");
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
    reason: &Refusal,
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
