//! The report of `dtcprobe matrix` (see [`crate::matrix`]): rows (one per zone and its agent),
//! cells (one per declared from/to pair, holding the check reports its agent ran), the firewall
//! rows of the failing cells, and the exit code. Pure data and pure functions over it, apart from
//! the check model, so that the exporters in `report::matrix` and the runner in `matrix` can both
//! use it without importing each other.

use serde::Serialize;

use crate::model::{Cause, CheckResult, HopResult, Report, Status};
use crate::verdict::FirewallRequest;

/// The JSON document's version (docs/matrix.md, docs/matrix.schema.json).
pub const MATRIX_FORMAT_VERSION: &str = "1.0";

/// How far a row got with its agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RowState {
    /// The agent answered every request of the row.
    Answered,
    /// The zone has no agent in the matrix file: nothing was run from it.
    NoAgent,
    /// Authenticated, then no answer (agent killed, connection cut): the row is unknown.
    AgentLost,
    /// Not reached or not authenticated: the row is unknown.
    AgentUnreachable,
}

/// One cell's verdict, as the grid shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CellState {
    Pass,
    Warn,
    Fail,
    /// Nothing to check between these zones (or the diagonal): not in the JSON cells.
    None,
    NotRun,
    AgentUnreachable,
    AgentLost,
}

impl CellState {
    pub fn as_str(self) -> &'static str {
        match self {
            CellState::Pass => "pass",
            CellState::Warn => "warn",
            CellState::Fail => "fail",
            CellState::None => "none",
            CellState::NotRun => "not_run",
            CellState::AgentUnreachable => "agent_unreachable",
            CellState::AgentLost => "agent_lost",
        }
    }
}

/// One zone's row: its agent and how the session(s) with it went.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub zone: String,
    /// `host:port` of the agent (absent: the zone has none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    pub state: RowState,
    /// The zone the agent says it is in (its config's `zone`), when it answered with one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_zone: Option<String>,
    /// One line: why the row is not (fully) known, or what the agent said.
    pub detail: String,
    /// Requests the row was split into (at most `max_checks_per_request` checks each).
    pub requests: usize,
    /// The sessions themselves, as `peer` reports them: check `agent` (this host reaching and
    /// authenticating to the agent) and check `callback` (the agent connecting back to this
    /// host). They concern this host's paths to the zone, not the zone-to-zone cells.
    pub session_checks: Vec<CheckResult>,
}

/// One (from, to) cell.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    pub from: String,
    pub to: String,
    pub state: CellState,
    /// The cause of the first problem (fail or warn), when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<Cause>,
    /// Checks by status.
    pub pass: usize,
    pub warn: usize,
    pub fail: usize,
    /// Every check of the cell, with all its hops, as the agent of `from` ran it.
    pub checks: Vec<CheckResult>,
}

impl Cell {
    /// The grid's text: `pass`, `FAIL timeout`, `agent unreachable`...
    pub fn label(&self) -> String {
        let with_cause = |s: &str| match self.cause {
            Some(c) => format!("{s} {}", c.as_str()),
            None => s.to_string(),
        };
        match self.state {
            CellState::Pass => "pass".into(),
            CellState::Warn => with_cause("WARN"),
            CellState::Fail if self.cause == Some(Cause::Config) => "FAIL refused (allow)".into(),
            CellState::Fail => with_cause("FAIL"),
            CellState::None => "-".into(),
            CellState::NotRun => "not run (no agent)".into(),
            CellState::AgentUnreachable => "agent unreachable".into(),
            CellState::AgentLost => "agent lost".into(),
        }
    }

    /// The colour class of the label, as the human report colours statuses.
    pub fn status(&self) -> Status {
        match self.state {
            CellState::Pass => Status::Pass,
            CellState::Warn => Status::Warn,
            CellState::Fail => Status::Fail,
            _ => Status::Skip,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct MatrixSummary {
    pub cells: usize,
    pub pass: usize,
    pub warn: usize,
    pub fail: usize,
    pub not_run: usize,
    pub agent_unreachable: usize,
    pub agent_lost: usize,
}

/// The result of one matrix run.
#[derive(Debug, Clone, Serialize)]
pub struct MatrixReport {
    pub format_version: String,
    pub tool_version: String,
    pub started_at: String,
    #[serde(serialize_with = "seconds")]
    pub duration_seconds: std::time::Duration,
    /// The host that ran the matrix (it only talks to the agents).
    pub host: String,
    #[serde(serialize_with = "seconds")]
    pub timeout_seconds: std::time::Duration,
    pub zones: Vec<String>,
    pub summary: MatrixSummary,
    pub rows: Vec<Row>,
    /// Only the cells with checks (the grid shows the others as `-`).
    pub cells: Vec<Cell>,
    /// The blocked flows of the failing cells (see docs/report.md, `firewall_requests`).
    pub firewall_requests: Vec<FirewallRequest>,
}

fn seconds<S: serde::Serializer>(d: &std::time::Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64((d.as_secs_f64() * 1e6).round() / 1e6)
}

impl MatrixReport {
    pub fn cell(&self, from: &str, to: &str) -> Option<&Cell> {
        self.cells.iter().find(|c| c.from == from && c.to == to)
    }

    pub fn row(&self, zone: &str) -> Option<&Row> {
        self.rows.iter().find(|r| r.zone == zone)
    }

    /// Every check of a failing or warning cell with its first problem hop, in cell order: the
    /// "failing cells" list each text exporter prints.
    pub fn problems(&self) -> Vec<(&Cell, &CheckResult, &HopResult)> {
        self.cells
            .iter()
            .filter(|c| matches!(c.state, CellState::Fail | CellState::Warn))
            .flat_map(|c| {
                c.checks
                    .iter()
                    .filter_map(move |check| Some((c, check, check.first_problem()?)))
            })
            .collect()
    }

    /// The checks of the cells whose agent answered, as one ordinary report: what the firewall
    /// request and the exit code are computed from (cells of unknown rows are not evidence).
    pub fn answered_report(&self) -> Report {
        let checks = self
            .cells
            .iter()
            .filter(|c| matches!(c.state, CellState::Pass | CellState::Warn | CellState::Fail))
            .flat_map(|c| c.checks.iter().cloned())
            .collect();
        let started =
            humantime::parse_rfc3339(&self.started_at).unwrap_or(std::time::SystemTime::UNIX_EPOCH);
        Report::new(started, self.duration_seconds, self.host.clone(), checks)
    }
}

/// Pure: the exit code of a finished matrix run, consistent with `check`: 1 when a cell's check
/// failed (or warned, with `--fail-on warning`); otherwise 3 (inconclusive) when a row with
/// cells could not be run because its agent was unreachable or lost, or only tool faults
/// (`config`: a check refused by the agent's allow list) went wrong; else 0. Rows of zones
/// without an agent are declared in the file and do not change the code.
pub fn exit_code(report: &MatrixReport, fail_on: crate::exit::FailOn) -> u8 {
    let code = crate::exit::for_report(&report.answered_report(), fail_on);
    let unknown = report.summary.agent_unreachable + report.summary.agent_lost > 0;
    if code == crate::exit::OK && unknown {
        crate::exit::INCONCLUSIVE
    } else {
        code
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::FailOn;
    use crate::model::{HopKind, HopResult};

    fn cell(state: CellState, hop: Option<HopResult>) -> Cell {
        let checks = hop
            .map(|h| vec![CheckResult::new("c", "tcp", "tcp://h:1", vec![h])])
            .unwrap_or_default();
        Cell {
            from: "a".into(),
            to: "b".into(),
            state,
            cause: None,
            pass: 0,
            warn: 0,
            fail: 0,
            checks,
        }
    }

    fn report(cells: Vec<Cell>) -> MatrixReport {
        let mut summary = MatrixSummary::default();
        for c in &cells {
            match c.state {
                CellState::AgentUnreachable => summary.agent_unreachable += 1,
                CellState::AgentLost => summary.agent_lost += 1,
                _ => {}
            }
        }
        MatrixReport {
            format_version: MATRIX_FORMAT_VERSION.into(),
            tool_version: "0".into(),
            started_at: "2026-01-01T00:00:00Z".into(),
            duration_seconds: Default::default(),
            host: "h".into(),
            timeout_seconds: Default::default(),
            zones: vec!["a".into(), "b".into()],
            summary,
            rows: vec![],
            cells,
            firewall_requests: vec![],
        }
    }

    #[test]
    fn exit_codes() {
        let pass = || cell(CellState::Pass, Some(HopResult::pass(HopKind::Tcp, "")));
        let fail = || {
            cell(
                CellState::Fail,
                Some(HopResult::fail(HopKind::Tcp, Cause::Timeout, "")),
            )
        };
        let refused = || {
            cell(
                CellState::Fail,
                Some(HopResult::fail(HopKind::Tcp, Cause::Config, "")),
            )
        };
        // An unreachable agent's placeholder checks are never counted as failures.
        let unreachable = || {
            cell(
                CellState::AgentUnreachable,
                Some(HopResult::fail(HopKind::Tcp, Cause::Timeout, "")),
            )
        };
        let not_run = || cell(CellState::NotRun, None);
        let rows: Vec<(Vec<Cell>, FailOn, u8)> = vec![
            (vec![pass(), not_run()], FailOn::Failure, 0),
            (vec![pass(), fail()], FailOn::Failure, 1),
            (vec![unreachable(), fail()], FailOn::Failure, 1),
            (vec![pass(), unreachable()], FailOn::Failure, 3),
            (vec![pass(), refused()], FailOn::Failure, 3),
            (vec![fail()], FailOn::Never, 0),
            (vec![unreachable()], FailOn::Never, 3),
        ];
        for (i, (cells, fail_on, want)) in rows.into_iter().enumerate() {
            assert_eq!(exit_code(&report(cells), fail_on), want, "row {i}");
        }
    }
}
