//! Runs a plan: every check concurrently (bounded by `--concurrency`), each as a chain of hops.
//! Wall time is about the slowest chain, not the sum.
//!
//! Checks are scheduled in completion order (`buffer_unordered`): a slot is given back the moment
//! its check ends, so one dropped port holds one slot for one timeout and never stalls the checks
//! queued behind it (in-order `buffered` kept every finished slot until all earlier checks had
//! finished, so each window holding one dropped target cost a whole timeout). The report is put
//! back in plan order afterwards. A check's future is created only when it gets a slot, and every
//! hop starts its own timeout when it runs, so time spent waiting in the queue never counts
//! against a check's deadline.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::stream::{self, StreamExt};
use tokio::time::Instant;

use crate::chain::RunContext;
use crate::hops;
use crate::model::{CheckResult, Direction, Report};
use crate::resolver::DnsResolver;
use crate::target::CheckSpec;

/// Told about each finished check (progress bars, watch mode).
pub trait Progress: Send + Sync {
    fn check_done(&self, done: usize, total: usize, result: &CheckResult);
}

#[derive(Clone)]
pub struct RunOptions {
    pub timeout: Duration,
    pub concurrency: usize,
    pub progress: Option<Arc<dyn Progress>>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            timeout: Duration::from_secs(3),
            concurrency: crate::plan::DEFAULT_CONCURRENCY,
            progress: None,
        }
    }
}

/// Runs every check and builds the report.
pub async fn run_plan(specs: &[CheckSpec], opts: &RunOptions) -> Report {
    let started_at = SystemTime::now();
    let started = Instant::now();
    let checks = run_checks(specs, opts).await;
    Report::new(started_at, started.elapsed(), local_host_name(), checks)
}

/// Runs every check; results come back in plan order.
pub async fn run_checks(specs: &[CheckSpec], opts: &RunOptions) -> Vec<CheckResult> {
    let resolver = Arc::new(DnsResolver::from_system(opts.timeout));
    let total = specs.len();
    let done = std::sync::atomic::AtomicUsize::new(0);
    let mut finished: Vec<(usize, CheckResult)> = stream::iter(specs.iter().enumerate())
        .map(|(index, spec)| {
            let ctx = RunContext {
                hop_timeout: spec.timeout.unwrap_or(opts.timeout),
                resolver: resolver.clone(),
            };
            let progress = opts.progress.clone();
            let done = &done;
            async move {
                let result = run_check(spec, &ctx).await;
                if let Some(p) = progress {
                    let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                    p.check_done(n, total, &result);
                }
                (index, result)
            }
        })
        .buffer_unordered(opts.concurrency.max(1))
        .collect()
        .await;
    // Back to plan order: reports, baselines and exit codes must not depend on timing.
    finished.sort_unstable_by_key(|(index, _)| *index);
    let mut results: Vec<CheckResult> = finished.into_iter().map(|(_, r)| r).collect();
    // Cloned machines show up only across checks: compare MSDTC CIDs over the whole run.
    hops::epm::mark_duplicate_cids(&mut results);
    results
}

/// Runs one check's hop chain (the kind's own `run`, see [`crate::hops::Kind`]).
pub async fn run_check(spec: &CheckSpec, ctx: &RunContext) -> CheckResult {
    let hops = spec.target.run(ctx).await;
    for hop in &hops {
        tracing::debug!(
            check = %spec.name,
            hop = hop.hop.as_str(),
            status = hop.status.as_str(),
            cause = hop.cause.map(|c| c.as_str()).unwrap_or("-"),
            seconds = hop.duration_seconds.as_secs_f64(),
            "{}",
            hop.detail
        );
    }
    CheckResult {
        name: spec.name.clone(),
        kind: spec.target.kind().to_string(),
        target: spec.target.display(),
        from: spec.from.clone(),
        to: spec.to.clone(),
        direction: Direction::Forward,
        status: CheckResult::status_of(&hops),
        hops,
    }
}

pub fn local_host_name() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}
