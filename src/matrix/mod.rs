//! `dtcprobe matrix -c matrix.toml`: which zone can still reach which, in one invocation.
//!
//! Every zone's row (what that zone must reach in the others) is run *by that zone's agent*,
//! through the existing agent API ([`crate::agent::client::agent_checks`]: the peer request whose
//! reverse checks are "run these from your zone"), all agents asked at once. So a row is the
//! zone's own view (its DNS, its routes, its firewalls), not this host's.
//!
//! - [`config`]: the matrix file, resolved (keys loaded, URLs built) before anything is probed.
//! - [`run`]: asks the agents concurrently and assembles the [`MatrixReport`].
//! - The report model is [`crate::matrix_report`]; outputs are in `report::matrix` (human,
//!   markdown, json; one exporter each).
//!
//! A row whose agent cannot be reached (or stops answering) is shown as such: its cells are
//! `agent_unreachable` / `agent_lost`, never `fail`, since nothing was learnt about the path
//! between the zones. A zone without an agent has its row `not_run`.

pub mod config;
pub mod dcs;
pub mod run;
pub mod zone_config;

pub use crate::matrix_report::*;
use crate::model::Direction;

/// The direction a cell's check is reported in: MSDTC's callback checks are `reverse` (they
/// exist because of a rule in the other direction), the rest `forward`.
pub fn direction_of(purpose: config::Purpose) -> Direction {
    match purpose {
        config::Purpose::Callback => Direction::Reverse,
        _ => Direction::Forward,
    }
}

/// Pure: for every zone with an agent, the `allow` lines its agent config needs.
pub fn allow_lists(plan: &config::MatrixPlan) -> String {
    let mut out = String::new();
    for zone in &plan.zones {
        let Some(agent) = &zone.agent else {
            out.push_str(&format!(
                "# zone {}: no agent (its row is not run)\n\n",
                zone.name
            ));
            continue;
        };
        let entries = plan.required_allow(&zone.name);
        out.push_str(&format!(
            "# zone {}: agent {} (its agent.toml)\nzone = \"{}\"\n",
            zone.name, agent.address, zone.name
        ));
        if entries.is_empty() {
            out.push_str("allow = []\n\n");
            continue;
        }
        out.push_str("allow = [\n");
        for e in entries {
            out.push_str(&format!("  \"{e}\",\n"));
        }
        out.push_str("]\n\n");
    }
    out
}
