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

use std::sync::atomic::{AtomicUsize, Ordering};
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
pub async fn run_plan(specs: impl Into<Arc<[CheckSpec]>>, opts: &RunOptions) -> Report {
    let started_at = SystemTime::now();
    let started = Instant::now();
    let checks = run_checks(specs, opts).await;
    Report::new(started_at, started.elapsed(), local_host_name(), checks)
}

/// Runs every check until `stop` completes (SIGINT/SIGTERM). Returns the report and whether the
/// run was stopped: then the checks that finished are reported as they are, and every other
/// one with the hops it had finished plus its unfinished hops as `skip`, cause `interrupted`.
pub async fn run_plan_until(
    specs: impl Into<Arc<[CheckSpec]>>,
    opts: &RunOptions,
    stop: impl std::future::Future<Output = ()>,
) -> (Report, bool) {
    let started_at = SystemTime::now();
    let started = Instant::now();
    let specs = specs.into();
    let slots: Arc<[Slot]> = specs.iter().map(|_| Slot::default()).collect();
    let interrupted = tokio::select! {
        _ = run_into(&specs, opts, &slots) => false,
        _ = stop => true,
    };
    // The run future is dropped here: every check's task is aborted (`Running`), its in-flight
    // hops cancelled and their sockets closed. A task busy on another worker at this instant may
    // still finish; what its slot held when it was read below is what is reported.
    let mut results: Vec<CheckResult> = slots
        .iter()
        .zip(specs.iter())
        .map(|(slot, spec)| match slot.take() {
            SlotState::Done(result) => result,
            SlotState::Running(log) => {
                let hops = log
                    .lock()
                    .map(|log| log.interrupted_hops())
                    .unwrap_or_default();
                check_result(spec, hops)
            }
            SlotState::NotStarted => check_result(spec, HopLog::default().interrupted_hops()),
        })
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

    fn take(&self) -> SlotState {
        self.0
            .lock()
            .map(|mut slot| std::mem::take(&mut *slot))
            .unwrap_or_default()
    }
}

/// Runs every check; results come back in plan order.
pub async fn run_checks(specs: impl Into<Arc<[CheckSpec]>>, opts: &RunOptions) -> Vec<CheckResult> {
    let specs = specs.into();
    let slots: Arc<[Slot]> = specs.iter().map(|_| Slot::default()).collect();
    run_into(&specs, opts, &slots).await;
    let mut results: Vec<CheckResult> = slots
        .iter()
        .filter_map(|s| match s.take() {
            SlotState::Done(result) => Some(result),
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
///
/// The checks run in one lane per runtime worker ([`lanes`]): each lane is a task that polls its
/// share of the checks in flight and takes the next check of the plan whenever one of its own
/// ends. One task polling every check kept a 10,000-port run on one core (its connects' kernel
/// time, most of a refused port's cost, included) while the other idled; a task per check spread
/// them but spent what it won on waking threads for every check that ended. The lanes are
/// aborted if this future is dropped (a stopped run).
async fn run_into(specs: &Arc<[CheckSpec]>, opts: &RunOptions, slots: &Arc<[Slot]>) {
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
    let workers = tokio::runtime::Handle::current().metrics().num_workers();
    let shared = Arc::new(Lanes {
        specs: specs.clone(),
        slots: slots.clone(),
        run,
        progress: opts.progress.clone(),
        next: AtomicUsize::new(0),
        done: AtomicUsize::new(0),
    });
    let lanes: Vec<AbortOnDrop> = lanes(opts.concurrency, workers, specs.len())
        .into_iter()
        .map(|in_flight| AbortOnDrop(tokio::spawn(shared.clone().lane(in_flight))))
        .collect();
    for lane in lanes {
        // A check that panicked ends the run, as it did when the checks ran in the caller's task.
        if let Err(e) = lane.await {
            if e.is_panic() {
                std::panic::resume_unwind(e.into_panic());
            }
        }
    }
}

/// How many checks each lane keeps in flight: one lane per worker (never more lanes than
/// checks in flight or checks), and the run's `--concurrency` split between them, so the whole
/// run never has more checks in flight than asked for.
fn lanes(concurrency: usize, workers: usize, checks: usize) -> Vec<usize> {
    let concurrency = concurrency.max(1);
    let n = workers.clamp(1, concurrency).min(checks.max(1));
    (0..n)
        .map(|i| concurrency / n + usize::from(i < concurrency % n))
        .collect()
}

/// What a run's lanes share: the plan, its slots, the run's context, and the next check to take.
struct Lanes {
    specs: Arc<[CheckSpec]>,
    slots: Arc<[Slot]>,
    run: RunContext,
    progress: Option<Arc<dyn Progress>>,
    next: AtomicUsize,
    done: AtomicUsize,
}

impl Lanes {
    /// Runs up to `in_flight` checks at once, taking the plan's next check as each one ends
    /// (`buffer_unordered`, see the module's note), until the plan has none left.
    async fn lane(self: Arc<Self>, in_flight: usize) {
        let total = self.specs.len();
        let taken = std::iter::from_fn(|| {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            (i < total).then_some(i)
        });
        stream::iter(taken)
            .map(|i| self.run_one(i))
            .buffer_unordered(in_flight.max(1))
            .for_each(|()| async {})
            .await;
    }

    async fn run_one(&self, i: usize) {
        let (spec, slot) = (&self.specs[i], &self.slots[i]);
        // The run's own hop timeout is the default for checks without one (`RunContext::new`).
        let ctx = check_context(&self.run, spec, self.run.hop_timeout);
        let log = SharedHopLog::default();
        slot.set(SlotState::Running(log.clone()));
        let result = HOP_LOG.scope(log, run_check(spec, &ctx)).await;
        if let Some(p) = &self.progress {
            let n = self.done.fetch_add(1, Ordering::Relaxed) + 1;
            p.check_done(n, self.specs.len(), &result);
        }
        slot.set(SlotState::Done(result));
    }
}

/// A lane's task, aborted when its handle is dropped: a stopped run leaves no check running.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl std::future::Future for AbortOnDrop {
    type Output = Result<(), tokio::task::JoinError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx)
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes_split_the_concurrency_and_never_exceed_it() {
        // One lane per worker, the run's concurrency split between them.
        assert_eq!(lanes(1024, 2, 10_000), vec![512, 512]);
        assert_eq!(lanes(3, 2, 10_000), vec![2, 1]);
        // --concurrency 1 is one check at a time, however many workers.
        assert_eq!(lanes(1, 2, 10_000), vec![1]);
        // A current-thread runtime, or one check: one lane.
        assert_eq!(lanes(1024, 1, 10_000), vec![1024]);
        assert_eq!(lanes(1024, 8, 1), vec![1024]);
        for (c, w, n) in [(7, 3, 100), (1, 1, 1), (5, 8, 100), (1024, 16, 3)] {
            let split = lanes(c, w, n);
            assert_eq!(split.iter().sum::<usize>(), c.max(1), "{c} {w} {n}");
            assert!(split.iter().all(|&k| k >= 1));
        }
    }

    /// The lanes of a multi-threaded runtime run every check once and the results come back in
    /// plan order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lanes_run_every_check_once_in_plan_order() {
        let specs: Vec<CheckSpec> = (0..200)
            .map(|i| CheckSpec {
                name: format!("c{i}"),
                from: None,
                to: None,
                timeout: None,
                target: crate::target::Target::from_url(&format!("dummy://h{i}:1")).unwrap(),
            })
            .collect();
        let opts = RunOptions {
            concurrency: 3,
            ..RunOptions::default()
        };
        let results = run_checks(specs, &opts).await;
        let names: Vec<String> = results.iter().map(|r| r.name.clone()).collect();
        let want: Vec<String> = (0..200).map(|i| format!("c{i}")).collect();
        assert_eq!(names, want);
    }
}
