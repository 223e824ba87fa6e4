//! The agent's view of the caller's name (hop `resolve`): what MSDTC on this side would find when
//! it calls back by name, compared with the address the connection came from.

use std::net::IpAddr;
use std::time::Duration;

use crate::hops;
use crate::model::{Cause, HopKind, HopResult, Status};
use crate::resolver::DnsResolver;

/// The agent's view of the caller's name: what MSDTC on this side would find when it calls back.
pub(super) async fn resolve_caller(
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
