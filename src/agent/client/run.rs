//! `peer`'s orchestration: the forward checks and the agent session run concurrently, then the
//! far side's view of failed forward connects, the CID and MSDTC pair comparisons, one report.
//! A stop request (SIGINT/SIGTERM) ends both halves; what finished is reported as it is.

use std::sync::Mutex;
use std::time::SystemTime;

use tokio::time::Instant;

use super::super::far_side;
use super::super::peer_options::PeerOptions;
use super::conversation::{converse, SessionProgress};
use super::msdtc_pair::msdtc_pair_checks;
use super::report::{build_checks, AgentOutcome};
use crate::model::Report;
use crate::runner::{self, RunOptions};
use crate::target::CheckSpec;

/// Runs the forward checks and the agent session concurrently and builds one report.
pub async fn run_peer(
    opts: &PeerOptions,
    specs: impl Into<std::sync::Arc<[CheckSpec]>>,
    run: &RunOptions,
) -> Report {
    run_peer_until(opts, specs, run, std::future::pending())
        .await
        .0
}

/// As [`run_peer`], until `stop` completes (SIGINT/SIGTERM). Returns the report and whether the
/// run was stopped: then finished checks (forward or from the agent) are reported as they are,
/// and every unfinished hop, forward or agent side, as `skip` with cause `interrupted`.
pub async fn run_peer_until(
    opts: &PeerOptions,
    specs: impl Into<std::sync::Arc<[CheckSpec]>>,
    run: &RunOptions,
    stop: impl std::future::Future<Output = ()>,
) -> (Report, bool) {
    use futures::FutureExt;
    let started_at = SystemTime::now();
    let started = Instant::now();
    // One stop request ends both halves.
    let stop = stop.shared();
    let ((forward, forward_stopped), (outcome, agent_stopped)) = tokio::join!(
        runner::run_plan_until(specs, run, stop.clone()),
        agent_checks_until(opts, stop.clone()),
    );
    let mut forward = forward.checks;
    for c in &mut forward {
        if c.from.is_none() {
            c.from = opts.zone.clone();
        }
        if c.to.is_none() {
            c.to = outcome.agent_zone.clone();
        }
    }
    // The far side's own view of the forward connects that failed (hop `far_side`): one more
    // round with the agent, once both halves are done. Not started on a stopped run.
    let far_side_stopped = if forward_stopped || agent_stopped {
        false
    } else {
        far_side::add_hops(opts, &mut forward, &outcome.far_side, stop).await
    };
    let mut checks = forward;
    checks.extend(outcome.checks);
    // MSDTC CIDs seen by `epm` hops in both directions (this host's CID from the agent's reverse
    // epm check, the agent's from a forward one): the same CID on two hosts is `duplicate_cid`.
    crate::hops::epm::mark_duplicate_cids(&mut checks);
    // MSDTC configurations read on both sides (`msdtc://localhost` here and as `--reverse`).
    let pair = msdtc_pair_checks(
        &opts.agent,
        opts.zone.clone(),
        outcome.agent_zone.clone(),
        &checks,
    );
    checks.extend(pair);
    let report = Report::new(
        started_at,
        started.elapsed(),
        runner::local_host_name(),
        checks,
    );
    (report, forward_stopped || agent_stopped || far_side_stopped)
}

pub async fn agent_checks(opts: &PeerOptions) -> AgentOutcome {
    agent_checks_until(opts, std::future::pending()).await.0
}

/// As [`agent_checks`], until `stop` completes. Returns the outcome and whether it was stopped:
/// then the hops that finished are reported as they are (a callback already seen with the right
/// token is still a pass), the rest `skip` with cause `interrupted`.
pub async fn agent_checks_until(
    opts: &PeerOptions,
    stop: impl std::future::Future<Output = ()>,
) -> (AgentOutcome, bool) {
    let progress = Mutex::new(SessionProgress::default());
    let finished = {
        let conversation = converse(opts, &progress);
        tokio::select! {
            c = conversation => Some(c),
            _ = stop => None,
        }
    };
    // The conversation's future is dropped here: its connection and callback listener are closed.
    match finished {
        Some(conversation) => (build_checks(opts, conversation), false),
        None => {
            let progress = progress.into_inner().unwrap_or_else(|p| p.into_inner());
            (build_checks(opts, progress.interrupted()), true)
        }
    }
}
