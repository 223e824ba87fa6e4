//! The agent's side of a far-side request: a `tcp` check (resolve, connect) of each target, all at
//! once, under the reverse checks' policy (the caller itself or the agent's `allow` list), so
//! the agent never becomes a scanner of its own zone for a key holder.

use std::net::IpAddr;
use std::sync::Arc;

use futures::future::join_all;
use tracing::{info, warn};

use super::probe::POLICY_REFUSED;
use crate::agent::limits::log_text;
use crate::agent::metrics::AgentStats;
use crate::agent::policy::{authorize, Refusal};
use crate::agent::protocol::{FarSideRequest, ReverseTarget};
use crate::agent::AllowEntry;
use crate::chain::RunContext;
use crate::model::{Cause, CheckResult, Direction, HopKind, HopResult};
use crate::resolver::DnsResolver;
use crate::target::{CheckSpec, Target};

/// Pure policy: a far-side target is a `tcp://` target the reverse-check policy allows, and
/// never the caller (the far side's view of the caller is what the callback checks).
pub fn authorize_probe(
    t: &ReverseTarget,
    caller: IpAddr,
    allow: &[AllowEntry],
) -> Result<Target, Refusal> {
    if t.to_caller {
        return Err(Refusal::ProbeToCaller);
    }
    let target = authorize(t, caller, allow)?;
    if target.kind() != "tcp" {
        return Err(Refusal::ProbeNotTcp {
            kind: target.kind(),
        });
    }
    Ok(target)
}

/// What the agent needs to serve a far-side request.
pub struct FarSideContext<'a> {
    pub caller: IpAddr,
    pub allow: &'a [AllowEntry],
    pub zone: Option<String>,
    pub hop_timeout: std::time::Duration,
    pub stats: &'a AgentStats,
}

/// Runs every target of `req` concurrently; one check per target, in request order. Counted in
/// the reverse-check metrics (`run` / `refused`).
pub async fn run(req: &FarSideRequest, cx: &FarSideContext<'_>) -> Vec<CheckResult> {
    // A connect is the whole question; a trace would add seconds to the near side's wait.
    let ctx = RunContext::new(
        cx.hop_timeout,
        Arc::new(DnsResolver::from_system(cx.hop_timeout)),
        false,
    );
    join_all(req.targets.iter().map(|t| {
        let ctx = &ctx;
        async move {
            let mut result = match authorize_probe(t, cx.caller, cx.allow) {
                Ok(target) => {
                    info!(target = %log_text(&target.display()), "running far-side probe");
                    AgentStats::bump(&cx.stats.reverse_run);
                    let spec = CheckSpec {
                        name: t.name.clone(),
                        from: cx.zone.clone(),
                        to: cx.zone.clone(),
                        timeout: Some(ctx.hop_timeout),
                        target,
                    };
                    crate::runner::run_check(&spec, ctx).await
                }
                Err(reason) => {
                    warn!(url = %log_text(&t.url), caller = %cx.caller, reason = %log_text(&reason.to_string()), "refused far-side probe");
                    AgentStats::bump(&cx.stats.reverse_refused);
                    refused(t, &reason, cx.zone.clone())
                }
            };
            result.direction = Direction::Forward;
            result
        }
    }))
    .await
}

fn refused(t: &ReverseTarget, reason: &Refusal, zone: Option<String>) -> CheckResult {
    let hop = HopResult::fail(
        HopKind::Tcp,
        Cause::Config,
        format!("refused by the agent: {reason}"),
    )
    .with_data(POLICY_REFUSED, true);
    let mut check = CheckResult::new(t.name.clone(), "tcp", t.url.clone(), vec![hop]);
    check.from = zone.clone();
    check.to = zone;
    check
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(url: &str, to_caller: bool) -> ReverseTarget {
        ReverseTarget {
            name: "p".into(),
            url: url.into(),
            to_caller,
        }
    }

    #[test]
    fn the_reverse_policy_applies_and_only_tcp_runs() {
        let caller: IpAddr = "198.18.0.1".parse().unwrap();
        let allow = vec![AllowEntry::parse("sql01:1433").unwrap()];
        let cases: &[(&str, bool, bool)] = &[
            ("tcp://sql01:1433", false, true),
            ("tcp://SQL01:1433", false, true),
            ("tcp://sql01:1434", false, false),
            ("tcp://198.18.1.2:1433", false, false), // names compare as written
            ("epm://sql01:1433", false, false),      // allowed host, but not a connect
            ("tcp://x:1433", true, false),           // the caller: the callback's business
            ("tcp://198.18.0.1:22", false, true),    // the caller's address, as the policy says
        ];
        for (url, to_caller, ok) in cases {
            let got = authorize_probe(&probe(url, *to_caller), caller, &allow);
            assert_eq!(got.is_ok(), *ok, "{url}: {got:?}");
        }
    }
}
