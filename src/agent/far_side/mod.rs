//! The far side's own view, in `peer` runs (hop `far_side`), and the wording of what the agent ran.
//!
//! When a forward `tcp`, `epm` (mapper port, `rpc_port`) or `mssql` (SQL port) check fails at the
//! connect, the near side asks the agent to try the same host and port from its zone: reachable
//! from there means the block is on the path between the zones; unreachable from there too
//! points at the service or the host's own firewall. Every probe of a run travels in one extra
//! session (one request, run concurrently by the agent), after the forward checks finished.
//!
//! - [`probe`]: pure: which connects are asked about, and the `far_side` hop from the answer.
//! - [`ask`]: the near side's session (bounded by 4 x the hop timeout).
//! - [`serve`]: the agent's side, under the reverse checks' `allow` policy.
//! - [`reword`]: hints of hops the agent ran, reworded for the far side.

pub mod ask;
pub mod probe;
pub mod reword;
pub mod serve;

pub use probe::{probes, Probe};
pub use reword::{reword_check, reword_hint, reword_hop};

use super::peer_options::PeerOptions;
use super::protocol::{ResponseBody, CAPABILITY_FAR_SIDE};
use crate::model::CheckResult;

/// Whether the agent can be asked, from the `peer` session's outcome.
#[derive(Debug, Clone, PartialEq)]
pub enum Availability {
    Ready {
        agent: String,
        zone: Option<String>,
    },
    /// It answered `peer` without listing the far-side capability.
    Older {
        agent: String,
    },
    /// No answer to `peer` (unreachable, wrong key, lost, stopped): why.
    Unavailable(String),
}

impl Availability {
    /// From the agent's answer to `peer`.
    pub fn of(response: &ResponseBody) -> Availability {
        if response
            .capabilities
            .iter()
            .any(|c| c == CAPABILITY_FAR_SIDE)
        {
            Availability::Ready {
                agent: response.agent.clone(),
                zone: response.zone.clone(),
            }
        } else {
            Availability::Older {
                agent: response.agent.clone(),
            }
        }
    }
}

/// Asks the agent about every failed forward connect among `checks` and appends a `far_side` hop
/// to each such check. Returns true when `stop` completed first (the hops then say so).
pub async fn add_hops(
    opts: &PeerOptions,
    checks: &mut [CheckResult],
    availability: &Availability,
    stop: impl std::future::Future<Output = ()>,
) -> bool {
    let probes = probes(checks);
    if probes.is_empty() {
        return false;
    }
    let skip_all = |why: &str| probes.iter().map(|p| probe::skipped(p, why)).collect();
    let (hops, stopped) = match availability {
        Availability::Unavailable(why) => (skip_all(why), false),
        Availability::Older { agent } => (
            skip_all(&format!(
                "the agent ({agent}) is older than this peer (no far-side probes): upgrade it"
            )),
            false,
        ),
        Availability::Ready { agent, zone } => {
            let targets = probes.iter().map(Probe::target).collect();
            let answer = tokio::select! {
                a = ask::ask(opts, targets) => Some(a),
                _ = stop => None,
            };
            match answer {
                None => (
                    skip_all("the run was stopped before the agent answered"),
                    true,
                ),
                Some(Err(why)) => (skip_all(&why.to_string()), false),
                Some(Ok(body)) if body.far_side.len() != probes.len() => (
                    skip_all(&format!(
                        "the agent answered {} far-side results for {} probes",
                        body.far_side.len(),
                        probes.len()
                    )),
                    false,
                ),
                Some(Ok(body)) => {
                    // The name of the first answer is the one to show; both come from the agent.
                    let who = probe::Agent {
                        name: if body.agent.is_empty() {
                            agent
                        } else {
                            &body.agent
                        },
                        zone: body.zone.as_deref().or(zone.as_deref()),
                    };
                    let hops = probes
                        .iter()
                        .zip(&body.far_side)
                        .map(|(p, answer)| probe::hop_from_answer(p, answer, who))
                        .collect();
                    (hops, false)
                }
            }
        }
    };
    probe::attach(checks, &probes, hops);
    stopped
}
