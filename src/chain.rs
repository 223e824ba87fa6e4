//! Running a check as a chain of hops: each hop timed and bounded by the hop timeout; a hop that
//! fails makes the hops after it `skip` (they depend on it), reported with the reason.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::model::{Cause, HopKind, HopResult};
use crate::resolver::DnsResolver;

/// Shared by every check of a run.
#[derive(Clone)]
pub struct RunContext {
    /// Per-hop timeout (the check's own, or `--timeout`).
    pub hop_timeout: Duration,
    pub resolver: Arc<DnsResolver>,
    /// Run hop `path` (a TTL-stepped trace) after a connect times out (`--no-trace` clears it).
    pub trace: bool,
    /// The check goes from one declared zone to another (`from`/`to` in the config): a target
    /// on a directly connected network of this host is then suspicious (hop `route`).
    pub cross_zone: bool,
    /// Routes looked up so far in this run (hop `route`); a fresh one per run.
    pub routes: Arc<crate::hops::route::RouteCache>,
    /// Who sent a reset that refused a connect (hops `tcp`, `rpc_port`): the run's raw socket,
    /// opened on first need, and the target TTLs read so far; a fresh one per run.
    pub resets: Arc<crate::hops::reset_origin::ResetProbe>,
    /// The path traces of this run, one per address (hop `path`); a fresh one per run.
    pub traces: Arc<crate::hops::path::book::TraceBook>,
    /// The check this context runs (set by [`crate::runner::run_check`]): a trace names the
    /// check that made it.
    pub check: Arc<str>,
    /// A login whose server certificate expires within this many days warns (`cert_expiring`;
    /// `--cert-warn-days`, a check's `cert_warn_days`).
    pub cert_warn_days: u32,
    /// This host's trust store and the servers' certificate chains, each read once in this run
    /// (the certificate report, [`crate::tls::RunTls`]); a fresh one per run.
    pub tls: Arc<crate::tls::RunTls>,
}

impl RunContext {
    /// The context of a run of its own: no zone judgement, its own route cache and path traces
    /// (set `cross_zone`, or share the caches across a run's checks, with struct update syntax).
    pub fn new(hop_timeout: Duration, resolver: Arc<DnsResolver>, trace: bool) -> RunContext {
        RunContext {
            hop_timeout,
            resolver,
            trace,
            cross_zone: false,
            routes: Default::default(),
            traces: Default::default(),
            resets: Default::default(),
            check: Arc::from(""),
            cert_warn_days: crate::hops::certificate::DEFAULT_WARN_DAYS,
            tls: Default::default(),
        }
    }
}

/// What a hop hands back: its result, and on success the value later hops build on
/// (resolved addresses, an open connection, a port number...).
pub struct HopOutput<T> {
    pub result: HopResult,
    pub value: Option<T>,
}

impl<T> HopOutput<T> {
    pub fn ok(result: HopResult, value: T) -> Self {
        HopOutput {
            result,
            value: Some(value),
        }
    }

    /// A result that stops the chain (or a pass/warn with nothing to pass on).
    pub fn stop(result: HopResult) -> Self {
        HopOutput {
            result,
            value: None,
        }
    }
}

/// The hops a check has finished so far, kept while it runs so that a run stopped by SIGINT or
/// SIGTERM can still report them (see [`crate::runner::run_plan_until`]). Set per check as a
/// task-local by the runner; chains outside such a scope (tests, the agent) keep a private one.
///
/// This is the chain's only copy of its results (they are moved out by [`Chain::finish`]): an
/// earlier version kept a clone of every finished hop here beside the chain's own list, which at
/// 10,000 checks was half of the run's peak heap and a large share of its allocations.
#[derive(Debug, Default)]
pub struct HopLog {
    pub planned: Vec<HopKind>,
    pub done: Vec<HopResult>,
}

pub type SharedHopLog = Arc<std::sync::Mutex<HopLog>>;

tokio::task_local! {
    pub static HOP_LOG: SharedHopLog;
}

impl HopLog {
    /// The hops of a check stopped before it finished: those done, then every planned one not
    /// yet done as `skip` with cause `interrupted` (one such hop when nothing was planned yet).
    pub fn interrupted_hops(&self) -> Vec<HopResult> {
        let mut hops = self.done.clone();
        let mut ran: Vec<HopKind> = hops.iter().map(|h| h.hop).collect();
        for kind in &self.planned {
            if let Some(pos) = ran.iter().position(|k| k == kind) {
                ran.remove(pos);
                continue;
            }
            hops.push(interrupted_hop(*kind));
        }
        if hops.iter().all(|h| h.cause != Some(Cause::Interrupted)) {
            // Nothing planned is left (or nothing was planned yet): the check was still running.
            let next = if self.done.is_empty() {
                HopKind::Resolve
            } else {
                hops.last().map(|h| h.hop).unwrap_or(HopKind::Resolve)
            };
            hops.push(interrupted_hop(next));
        }
        hops
    }
}

pub(crate) fn interrupted_hop(kind: HopKind) -> HopResult {
    HopResult::skip(kind, "not finished: the run was interrupted").with_cause(Cause::Interrupted)
}

pub struct Chain {
    /// The planned hops and the results so far: the runner's per-check log when there is one (a
    /// stopped run reads it), else the chain's own.
    log: SharedHopLog,
    hop_timeout: Duration,
}

impl Chain {
    /// `planned` lists the hops the check would run if all pass, in order: the ones not reached
    /// are reported as `skip`.
    pub fn new(planned: Vec<HopKind>, hop_timeout: Duration) -> Chain {
        let log = HOP_LOG.try_with(Arc::clone).unwrap_or_default();
        if let Ok(mut log) = log.lock() {
            log.planned = planned;
            log.done = Vec::with_capacity(log.planned.len());
        }
        Chain { log, hop_timeout }
    }

    /// The log, even if a panic elsewhere poisoned its lock (its data stays consistent: every
    /// update is a single push or take).
    fn lock(&self) -> std::sync::MutexGuard<'_, HopLog> {
        self.log
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs one hop under the hop timeout (a safety net: hops apply their own, more precise
    /// timeouts), times it, records the result, and returns the value for the next hop if the
    /// chain may continue.
    pub async fn step<T, F>(&mut self, kind: HopKind, hop: F) -> Option<T>
    where
        F: Future<Output = HopOutput<T>>,
    {
        self.step_with_timeout(kind, self.hop_timeout, hop).await
    }

    /// As [`Chain::step`], for hops that legitimately need longer than one hop timeout (several
    /// round trips).
    pub async fn step_with_timeout<T, F>(
        &mut self,
        kind: HopKind,
        limit: Duration,
        hop: F,
    ) -> Option<T>
    where
        F: Future<Output = HopOutput<T>>,
    {
        let started = Instant::now();
        let output = match tokio::time::timeout(limit + OVERRUN_GRACE, hop).await {
            Ok(output) => output,
            Err(_) => HopOutput::stop(overrun(kind, limit)),
        };
        let mut result = output.result;
        debug_assert_eq!(
            result.hop, kind,
            "hop result recorded under another hop kind"
        );
        result.hop = kind;
        if result.duration_seconds.is_zero() {
            result.duration_seconds = started.elapsed();
        }
        if self.record(result) {
            output.value
        } else {
            None
        }
    }

    /// Calls `f` with the result recorded last (hop `path` looks at the connect hop before it).
    pub fn with_last<R>(&self, f: impl FnOnce(&HopResult) -> Option<R>) -> Option<R> {
        self.lock().done.last().and_then(f)
    }

    /// Records a result computed elsewhere (e.g. a hop whose value was already known).
    pub fn record(&mut self, mut result: HopResult) -> bool {
        let go_on = result.lets_chain_continue();
        // Kept until the whole report is written: without the spare room its builders left.
        result.compact();
        self.lock().done.push(result);
        go_on
    }

    /// Closes the chain: planned hops that never ran become `skip`, naming the hop that stopped
    /// the chain. The results are moved out of the log (a run stopped after this reports the
    /// check from the runner's copy of the finished result, not from the log).
    pub fn finish(self) -> Vec<HopResult> {
        let (planned, mut results) = {
            let mut log = self.lock();
            (
                std::mem::take(&mut log.planned),
                std::mem::take(&mut log.done),
            )
        };
        // Hop `path` diagnoses the hop before it; it is never what later hops depend on. Nor is
        // a `route` skip (no route lookup on this platform), after which the chain went on.
        let blocker = results
            .iter()
            .rev()
            .find(|r| {
                !r.lets_chain_continue()
                    && r.hop != HopKind::Path
                    && !(r.hop == HopKind::Route && r.status == crate::model::Status::Skip)
            })
            .map(|r| r.hop.as_str());
        let mut ran: Vec<HopKind> = results.iter().map(|r| r.hop).collect();
        let mut skipped = Vec::new();
        for kind in planned {
            if let Some(pos) = ran.iter().position(|k| *k == kind) {
                ran.remove(pos);
                continue;
            }
            let detail = match blocker {
                Some(b) => format!("not run: depends on `{b}`, which did not pass"),
                None => "not run".to_string(),
            };
            skipped.push(HopResult::skip(kind, detail));
        }
        results.append(&mut skipped);
        results
    }
}

/// The chain's own bound on a hop is its limit plus this grace, so that a hop's own timeout,
/// which words the cause precisely, normally fires first.
pub const OVERRUN_GRACE: Duration = Duration::from_millis(250);

/// The result of a hop that overran the chain's bound on it.
pub fn overrun(kind: HopKind, limit: Duration) -> HopResult {
    HopResult::fail(
        kind,
        Cause::Timeout,
        format!("no answer within {}", humantime::format_duration(limit)),
    )
    .with_hint(
        "the peer accepted the connection but stopped answering: a hung service, or a \
         firewall/IPS that lets the handshake through and then drops the traffic",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Status;

    #[tokio::test]
    async fn failed_hop_skips_the_rest() {
        let mut chain = Chain::new(
            vec![HopKind::Resolve, HopKind::Tcp, HopKind::Login],
            Duration::from_secs(1),
        );
        let v = chain
            .step(HopKind::Resolve, async {
                HopOutput::ok(HopResult::pass(HopKind::Resolve, "ok"), 7)
            })
            .await;
        assert_eq!(v, Some(7));
        let v: Option<()> = chain
            .step(HopKind::Tcp, async {
                HopOutput::stop(HopResult::fail(HopKind::Tcp, Cause::Refused, "rst"))
            })
            .await;
        assert!(v.is_none());
        let hops = chain.finish();
        assert_eq!(hops.len(), 3);
        assert_eq!(hops[2].hop, HopKind::Login);
        assert_eq!(hops[2].status, Status::Skip);
        assert!(hops[2].detail.contains("tcp"), "{}", hops[2].detail);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_hop_is_cut_off_with_timeout() {
        let mut chain = Chain::new(vec![HopKind::Login], Duration::from_secs(2));
        let v: Option<()> = chain
            .step(HopKind::Login, async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                HopOutput::stop(HopResult::pass(HopKind::Login, "never"))
            })
            .await;
        assert!(v.is_none());
        let hops = chain.finish();
        assert_eq!(hops[0].cause, Some(Cause::Timeout));
        assert!(hops[0].duration_seconds < Duration::from_secs(3));
    }
}
