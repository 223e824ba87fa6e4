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

use crate::chain::{HopLog, RunContext, SharedHopLog, HOP_LOG};
use crate::hops;
use crate::model::{CheckResult, Direction, Report};
use crate::resolver::DnsResolver;
use crate::target::CheckSpec;

/// Told about each finished check (progress bars, watch mode).
pub trait Progress: Send + Sync {
    fn check_done(&self, done: usize, total: usize, result: &CheckResult);
}

/// Checks in flight at once. High enough that up to 1,024 checks all start together, so any
/// number of dropped ports up to that costs one timeout, not one per batch; each check in flight
/// costs ~15 KB and two descriptors (the soft open-file limit is raised at start, see `fdlimit`),
/// and checks that end early give their slot back at once (below).
pub const DEFAULT_CONCURRENCY: usize = 1024;

#[derive(Clone)]
pub struct RunOptions {
    pub timeout: Duration,
    pub concurrency: usize,
    pub progress: Option<Arc<dyn Progress>>,
    /// Trace the path (hop `path`) after a connect times out.
    pub trace: bool,
    /// See [`crate::chain::RunContext::cert_warn_days`].
    pub cert_warn_days: u32,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            timeout: Duration::from_secs(3),
            concurrency: DEFAULT_CONCURRENCY,
            progress: None,
            trace: true,
            cert_warn_days: crate::hops::certificate::DEFAULT_WARN_DAYS,
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

/// Runs every check until `stop` completes (SIGINT/SIGTERM). Returns the report and whether the
/// run was stopped: then the checks that finished are reported as they are, and every other
/// one with the hops it had finished plus its unfinished hops as `skip`, cause `interrupted`.
pub async fn run_plan_until(
    specs: &[CheckSpec],
    opts: &RunOptions,
    stop: impl std::future::Future<Output = ()>,
) -> (Report, bool) {
    let started_at = SystemTime::now();
    let started = Instant::now();
    let slots: Vec<Slot> = specs.iter().map(|_| Slot::default()).collect();
    let interrupted = tokio::select! {
        _ = run_into(specs, opts, &slots) => false,
        _ = stop => true,
    };
    // The run future is dropped here: in-flight hops are cancelled, their sockets closed.
    let mut results: Vec<CheckResult> = slots
        .into_iter()
        .zip(specs)
        .map(
            |(slot, spec)| match slot.0.into_inner().unwrap_or_default() {
                SlotState::Done(result) => result,
                SlotState::Running(log) => {
                    let hops = log
                        .lock()
                        .map(|log| log.interrupted_hops())
                        .unwrap_or_default();
                    check_result(spec, hops)
                }
                SlotState::NotStarted => check_result(spec, HopLog::default().interrupted_hops()),
            },
        )
        .collect();
    hops::epm::mark_duplicate_cids(&mut results);
    let report = Report::new(started_at, started.elapsed(), local_host_name(), results);
    (report, interrupted)
}

/// Where one check's outcome is kept as it runs: its finished hops, then its result.
#[derive(Default)]
struct Slot(std::sync::Mutex<SlotState>);

/// The hop log exists only while its check runs: 10,000 logs held for the whole run were 80
/// bytes a check of its peak memory.
#[derive(Default)]
enum SlotState {
    #[default]
    NotStarted,
    Running(SharedHopLog),
    Done(CheckResult),
}

impl Slot {
    fn set(&self, state: SlotState) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = state;
        }
    }
}

/// Runs every check; results come back in plan order.
pub async fn run_checks(specs: &[CheckSpec], opts: &RunOptions) -> Vec<CheckResult> {
    let slots: Vec<Slot> = specs.iter().map(|_| Slot::default()).collect();
    run_into(specs, opts, &slots).await;
    let mut results: Vec<CheckResult> = slots
        .into_iter()
        .filter_map(|s| match s.0.into_inner() {
            Ok(SlotState::Done(result)) => Some(result),
            _ => None,
        })
        .collect();
    // Cloned machines show up only across checks: compare MSDTC CIDs over the whole run.
    hops::epm::mark_duplicate_cids(&mut results);
    results
}

/// The context one check runs in: the run's shared resolver and caches (`run`), with the check's
/// own hop timeout (else `default_timeout`) and zone judgement. The one place it is built, for a
/// run's checks and for a `/probe` alike.
pub fn check_context(run: &RunContext, spec: &CheckSpec, default_timeout: Duration) -> RunContext {
    RunContext {
        hop_timeout: spec.timeout.unwrap_or(default_timeout),
        cross_zone: spec.crosses_zones(),
        ..run.clone()
    }
}

/// Runs every check, storing each result in its slot as soon as it finishes (so that a stopped
/// run still has them).
async fn run_into(specs: &[CheckSpec], opts: &RunOptions, slots: &[Slot]) {
    // One resolver, route cache, trace book and reset probe for the whole run; each check's context is
    // this one with its own timeout and zone judgement.
    let run = RunContext {
        cert_warn_days: opts.cert_warn_days,
        ..RunContext::new(
            opts.timeout,
            Arc::new(DnsResolver::from_system(opts.timeout)),
            opts.trace,
        )
    };
    let total = specs.len();
    let done = std::sync::atomic::AtomicUsize::new(0);
    stream::iter(specs.iter().zip(slots))
        .map(|(spec, slot)| {
            let ctx = check_context(&run, spec, opts.timeout);
            let progress = opts.progress.clone();
            let done = &done;
            async move {
                let log = SharedHopLog::default();
                slot.set(SlotState::Running(log.clone()));
                let result = HOP_LOG.scope(log, run_check(spec, &ctx)).await;
                if let Some(p) = progress {
                    let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                    p.check_done(n, total, &result);
                }
                slot.set(SlotState::Done(result));
            }
        })
        .buffer_unordered(opts.concurrency.max(1))
        .collect::<Vec<()>>()
        .await;
}

/// Runs one check's hop chain (the kind's own `run`, see [`crate::hops::Kind`]).
pub async fn run_check(spec: &CheckSpec, ctx: &RunContext) -> CheckResult {
    let ctx = RunContext {
        check: Arc::from(spec.name.as_str()),
        ..ctx.clone()
    };
    let hops = spec.target.run(&ctx).await;
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
    check_result(spec, hops)
}

fn check_result(spec: &CheckSpec, hops: Vec<crate::model::HopResult>) -> CheckResult {
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
