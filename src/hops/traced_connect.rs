//! A connect hop with hop `path` after it when it times out: the run's shared trace of the
//! address ([`crate::hops::path`]), read for this check, its probes started early so that a
//! dropped port costs one hop timeout. Apart from `hops::path` so that the trace itself (which
//! the run context holds) does not depend on the chain.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::chain::{Chain, HopOutput, RunContext};
use crate::hops::path::{book, interpret, timed_out_address, Reach, View};
use crate::model::{HopKind, HopResult};

/// The trace to `target`'s address for this check: the run's shared one (started now if there
/// is none yet, its probes each bounded by `limit`), read for this check's port. Bounded: the
/// wait for its turn in the ICMP budget (one hop timeout at most) and its probes.
async fn shared_trace(ctx: &RunContext, target: SocketAddr, limit: Duration) -> HopResult {
    let started = tokio::time::Instant::now();
    let route = ctx.routes.lookup(target.ip()).ok();
    let gateway = route.as_ref().and_then(|r| r.gateway);
    let reach = match &route {
        Some(r) if r.gateway.is_none() => Reach::OnLink,
        _ => Reach::Routed,
    };
    let max_wait = ctx.hop_timeout;
    let shared = ctx.traces.trace(book::Request {
        target,
        check: Arc::clone(&ctx.check),
        limit,
        reach,
        gateway,
        max_wait,
    });
    let bound = max_wait + limit + crate::chain::OVERRUN_GRACE;
    let Ok(traced) = tokio::time::timeout(bound, shared).await else {
        return crate::chain::overrun(HopKind::Path, bound).with_duration(started.elapsed());
    };
    let result = match &traced.probes {
        Ok((probes, method)) => {
            let answered = ctx.traces.answered_through(traced.gateway);
            interpret(&View {
                target,
                traced_port: traced.port,
                probes,
                reach: traced.reach,
                gateway: traced.gateway,
                answered_elsewhere: &answered,
            })
            .with_data("method", *method)
        }
        Err(not_traced) => not_traced.clone(),
    };
    let result = if Arc::ptr_eq(&traced.by, &ctx.check) {
        result
    } else {
        result
            .with_data("traced_by", &*traced.by)
            .with_data("traced_port", traced.port)
    };
    result.with_duration(started.elapsed())
}

/// A connect hop with its path trace started early, so that a dropped port costs one hop
/// timeout, not two (the trace used to start only after the connect had timed out).
///
/// If the connect to `target` has not ended half a hop timeout in, the run's trace of that
/// address is asked for while the connect still waits, its probes given the other half (ICMP
/// answers from routers take milliseconds; silence after half a timeout reads as silence after
/// a whole one). When the connect then times out on `target`, the trace's reading is recorded as
/// hop `path` right after it. When it connects or fails otherwise, this check stops waiting for
/// the trace (which goes on for the other checks of that address). `None` target (several
/// addresses: which one times out is known only at the end) or `--no-trace`: the connect alone,
/// then [`trace_after_timeout`].
pub async fn connect_with_early_trace<T, F>(
    chain: &mut Chain,
    ctx: &RunContext,
    kind: HopKind,
    target: Option<SocketAddr>,
    connect: F,
) -> Option<T>
where
    F: std::future::Future<Output = HopOutput<T>>,
{
    let Some(target) = target.filter(|_| ctx.trace) else {
        let value = chain.step(kind, connect).await;
        if value.is_none() {
            trace_after_timeout(chain, ctx).await;
        }
        return value;
    };
    let head_start = ctx.hop_timeout / 2;
    let probe_limit = ctx.hop_timeout - head_start;
    // The trace's future (some 18 KB) on the heap, made only when the connect is still
    // waiting half a timeout in: in this future's state it was copied with every check's
    // future, dozens of kilobytes of copying a check that fails or connects at once.
    let early = async {
        tokio::time::sleep(head_start).await;
        Box::pin(shared_trace(ctx, target, probe_limit)).await
    };
    let mut early = std::pin::pin!(early);
    let mut traced = None;
    let value = {
        let step = chain.step(kind, connect);
        let mut step = std::pin::pin!(step);
        loop {
            tokio::select! {
                value = &mut step => break value,
                result = &mut early, if traced.is_none() => traced = Some(result),
            }
        }
    };
    if value.is_none() && chain.with_last(timed_out_address) == Some(target) {
        let result = match traced {
            Some(result) => result,
            None => early.await,
        };
        chain.record(result);
    }
    value
}

/// Runs hop `path` when the hop just recorded (`tcp` or `rpc_port`) timed out on some address,
/// unless `--no-trace`. Its place in the report: right after that hop.
pub async fn trace_after_timeout(chain: &mut Chain, ctx: &RunContext) {
    if !ctx.trace {
        return;
    }
    let Some(target) = chain.with_last(timed_out_address) else {
        return;
    };
    // Boxed: see `connect_with_early_trace`.
    let result = Box::pin(shared_trace(ctx, target, ctx.hop_timeout)).await;
    chain.record(result);
}
