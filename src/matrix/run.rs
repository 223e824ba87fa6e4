//! Runs a resolved [`MatrixPlan`]: every zone's row is asked of that zone's agent, all agents at
//! once, through [`agent_checks`] (the same session `peer` uses; its reverse checks are the
//! row's checks). A row with more checks than an agent accepts per request is split into
//! several requests, sent concurrently too. So the whole matrix takes about as long as the
//! slowest single request: one hop timeout when a path is dropped (plus the agent's path trace
//! after it), one connect timeout for an agent that cannot be reached.
//!
//! Each request also makes the agent connect back to this host (the `callback` check of a peer
//! session): that result concerns this host's path to the zone and is reported with the row,
//! never in a cell.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::SystemTime;

use futures::future::join_all;
use tokio::time::Instant;

use super::config::{CellCheck, MatrixPlan};
use super::{
    direction_of, Cell, CellState, MatrixReport, MatrixSummary, Row, RowState,
    MATRIX_FORMAT_VERSION,
};
use crate::agent::client::{agent_checks, AgentOutcome, PeerOptions, HINT_AGENT_LOST};
use crate::model::{CheckResult, Status};

/// One request to one agent: a slice of its row.
struct Request<'a> {
    zone: &'a str,
    checks: Vec<&'a CellCheck>,
}

/// What one request gave.
struct RequestOutcome {
    state: RowState,
    detail: String,
    agent_zone: Option<String>,
    session_checks: Vec<CheckResult>,
    /// The cell checks by name.
    results: HashMap<String, CheckResult>,
}

pub async fn run(plan: &MatrixPlan) -> MatrixReport {
    let started_at = SystemTime::now();
    let started = Instant::now();

    // Split every row with an agent into requests.
    let mut requests: Vec<Request<'_>> = Vec::new();
    for zone in &plan.zones {
        if zone.agent.is_none() {
            continue;
        }
        let row: Vec<&CellCheck> = plan
            .cells_from(&zone.name)
            .flat_map(|c| c.checks.iter())
            .collect();
        for chunk in row.chunks(plan.max_checks_per_request) {
            requests.push(Request {
                zone: &zone.name,
                checks: chunk.to_vec(),
            });
        }
    }
    let outcomes = join_all(requests.iter().map(|r| ask(plan, r))).await;

    // Rows, in zone order.
    let mut rows: Vec<Row> = Vec::new();
    let mut results: HashMap<(String, String), CheckResult> = HashMap::new();
    let mut request_state: HashMap<(String, String), RowState> = HashMap::new();
    for zone in &plan.zones {
        let Some(agent) = &zone.agent else {
            rows.push(Row {
                zone: zone.name.clone(),
                agent: None,
                state: RowState::NoAgent,
                agent_zone: None,
                detail: "no agent in the matrix file: this zone's row is not run".into(),
                requests: 0,
                session_checks: Vec::new(),
            });
            continue;
        };
        let mine: Vec<(&Request<'_>, &RequestOutcome)> = requests
            .iter()
            .zip(outcomes.iter())
            .filter(|(r, _)| r.zone == zone.name)
            .collect();
        // The worst request decides the row's state; its detail explains it.
        let worst = mine.iter().map(|(_, o)| o).max_by_key(|o| o.state);
        let (state, mut detail, agent_zone) = match worst {
            Some(o) => (o.state, o.detail.clone(), o.agent_zone.clone()),
            None => (
                RowState::Answered,
                "nothing to check from this zone".to_string(),
                None,
            ),
        };
        if let Some(az) = &agent_zone {
            if az != &zone.name {
                detail.push_str(&format!(
                    "; NOTE: the agent says it is in zone `{az}`, not `{}`: check the address in the matrix file",
                    zone.name
                ));
            }
        }
        for (req, out) in &mine {
            for c in &req.checks {
                request_state.insert((zone.name.clone(), c.name.clone()), out.state);
                if let Some(r) = out.results.get(&c.name) {
                    results.insert((zone.name.clone(), c.name.clone()), r.clone());
                }
            }
        }
        rows.push(Row {
            zone: zone.name.clone(),
            agent: Some(agent.address.clone()),
            state,
            agent_zone,
            detail,
            requests: mine.len(),
            session_checks: mine
                .iter()
                .flat_map(|(_, o)| o.session_checks.iter().cloned())
                .collect(),
        });
    }

    // Cells.
    let mut cells = Vec::new();
    let mut summary = MatrixSummary::default();
    for cp in &plan.cells {
        let zone = plan.zone(&cp.from).expect("cells name known zones");
        let mut checks = Vec::new();
        let mut worst_request = RowState::Answered;
        for c in &cp.checks {
            let key = (cp.from.clone(), c.name.clone());
            worst_request = worst_request.max(
                request_state
                    .get(&key)
                    .copied()
                    .unwrap_or(RowState::NoAgent),
            );
            if let Some(mut r) = results.remove(&key) {
                r.from = Some(cp.from.clone());
                r.to = Some(cp.to.clone());
                r.direction = direction_of(c.purpose);
                checks.push(r);
            }
        }
        let state = if zone.agent.is_none() {
            CellState::NotRun
        } else {
            match worst_request {
                RowState::AgentUnreachable => CellState::AgentUnreachable,
                RowState::AgentLost => CellState::AgentLost,
                RowState::NoAgent => CellState::NotRun,
                RowState::Answered => match checks.iter().map(|c| c.status).max() {
                    Some(Status::Fail) => CellState::Fail,
                    Some(Status::Warn) => CellState::Warn,
                    Some(_) => CellState::Pass,
                    // The agent answered without these checks: never a pass.
                    None => CellState::AgentLost,
                },
            }
        };
        let counted = matches!(state, CellState::Pass | CellState::Warn | CellState::Fail);
        let cause = if counted {
            checks
                .iter()
                .filter_map(|c| c.first_problem())
                .max_by_key(|h| h.status)
                .and_then(|h| h.cause)
        } else {
            None
        };
        let count = |s: Status| {
            if counted {
                checks.iter().filter(|c| c.status == s).count()
            } else {
                0
            }
        };
        summary.cells += 1;
        match state {
            CellState::Pass => summary.pass += 1,
            CellState::Warn => summary.warn += 1,
            CellState::Fail => summary.fail += 1,
            CellState::NotRun => summary.not_run += 1,
            CellState::AgentUnreachable => summary.agent_unreachable += 1,
            CellState::AgentLost => summary.agent_lost += 1,
            CellState::None => {}
        }
        cells.push(Cell {
            from: cp.from.clone(),
            to: cp.to.clone(),
            state,
            cause,
            pass: count(Status::Pass),
            warn: count(Status::Warn),
            fail: count(Status::Fail),
            checks,
        });
    }

    let mut report = MatrixReport {
        format_version: MATRIX_FORMAT_VERSION.to_string(),
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        started_at: humantime::format_rfc3339_seconds(started_at).to_string(),
        duration_seconds: started.elapsed(),
        host: crate::runner::local_host_name(),
        timeout_seconds: plan.timeout,
        zones: plan.zones.iter().map(|z| z.name.clone()).collect(),
        summary,
        rows,
        cells,
        firewall_requests: Vec::new(),
    };
    report.firewall_requests = crate::verdict::firewall_requests(&report.answered_report());
    name_sql_server_ports(plan, &mut report.firewall_requests);
    report
}

/// A SQL Server cell's check is the credential-free `mssql` login, whose kind names the service;
/// the plan knows it all the same, whatever the verdict could tell from the check (a row left
/// unnamed is named here, never renamed).
fn name_sql_server_ports(plan: &MatrixPlan, requests: &mut [crate::verdict::FirewallRequest]) {
    let sql_checks: std::collections::HashSet<&str> = plan
        .cells
        .iter()
        .flat_map(|cp| &cp.checks)
        .filter(|c| c.purpose == crate::matrix::config::Purpose::Mssql)
        .map(|c| c.name.as_str())
        .collect();
    for request in requests {
        if request.service.is_none() && sql_checks.contains(request.evidence_check.as_str()) {
            request.service = Some("SQL Server".to_string());
        }
    }
}

/// One request to one agent, bounded by the session's own timeouts (connect: one hop timeout;
/// the answer: the session timeout).
async fn ask(plan: &MatrixPlan, req: &Request<'_>) -> RequestOutcome {
    let zone = plan.zone(req.zone).expect("requests name known zones");
    let agent = zone
        .agent
        .as_ref()
        .expect("requests only for zones with agents");
    let Some(key) = agent.key.clone() else {
        // A plan from `load_layout` (no key read) is never run; should one be, no agent is
        // asked and nothing is claimed about its cells.
        return RequestOutcome {
            state: RowState::AgentUnreachable,
            detail: "agent not asked: the matrix file was read without its key files".into(),
            agent_zone: None,
            session_checks: Vec::new(),
            results: HashMap::new(),
        };
    };
    let opts = PeerOptions {
        agent: agent.address.clone(),
        key,
        agent_pubkey: agent.pubkey,
        callback_bind: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        callback_port: 0,
        // No name lookup of this host by the agent: the matrix is about the zones.
        caller_name: None,
        zone: None,
        reverse: req.checks.iter().map(|c| c.reverse_target()).collect(),
        hop_timeout: plan.timeout,
        session_timeout: plan.session_timeout,
        cid: None,
        trace: plan.trace,
    };
    let outcome = agent_checks(&opts).await;
    classify(outcome, &req.checks)
}

/// Pure: what a request's outcome says about the row, and its cell checks by name.
fn classify(outcome: AgentOutcome, asked: &[&CellCheck]) -> RequestOutcome {
    let mut session_checks = Vec::new();
    let mut results = HashMap::new();
    for c in outcome.checks {
        if asked.iter().any(|a| a.name == c.name) {
            results.insert(c.name.clone(), c);
        } else {
            session_checks.push(c);
        }
    }
    let agent_check = session_checks.iter().find(|c| c.name == "agent");
    let unreachable = agent_check
        .map(|c| c.hops.iter().any(|h| !h.lets_chain_continue()))
        .unwrap_or(true);
    // Authenticated, but the agent never answered: the client marks every reverse check with
    // the agent-lost hint.
    let lost = results.values().any(|c| {
        c.hops
            .iter()
            .any(|h| h.hint.as_deref() == Some(HINT_AGENT_LOST))
    });
    let (state, detail) = if unreachable {
        let why = agent_check
            .and_then(|c| c.hops.iter().find(|h| !h.lets_chain_continue()))
            .map(|h| {
                format!(
                    "agent unreachable: {} {}: {}",
                    h.hop.as_str(),
                    h.cause.map(|c| c.as_str()).unwrap_or("-"),
                    h.detail
                )
            })
            .unwrap_or_else(|| "agent unreachable".into());
        (RowState::AgentUnreachable, why)
    } else if lost {
        let why = results
            .values()
            .flat_map(|c| c.hops.iter())
            .find(|h| h.hint.as_deref() == Some(HINT_AGENT_LOST))
            .map(|h| format!("agent lost: {}", h.detail))
            .unwrap_or_else(|| "agent lost".into());
        (RowState::AgentLost, why)
    } else {
        let name = agent_check
            .and_then(|c| c.hops.iter().find_map(|h| h.data.get("agent")))
            .and_then(|v| v.as_str())
            .unwrap_or("?");
        (RowState::Answered, format!("agent {name} answered"))
    };
    RequestOutcome {
        state,
        detail,
        agent_zone: outcome.agent_zone,
        session_checks,
        results,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::config::parse;
    use crate::matrix_report::exit_code;

    /// A blocked SQL Server cell is a tcp check of its port: its firewall row names the service
    /// all the same (it said `service: null`), and a plain tcp cell's row stays unnamed.
    #[test]
    fn sql_server_cells_name_their_service_in_firewall_rows() {
        let text = "[[zone]]\nname = \"a\"\nhosts = [\"198.18.99.1\"]\n\
                    [[zone]]\nname = \"b\"\nhosts = [\"198.18.99.2\"]\n\
                    [[reach]]\nfrom = \"a\"\nto = \"b\"\nmssql = true\nmssql_port = 14330\ntcp = [22]\n";
        let plan = parse(text, std::path::Path::new("m.toml"), None, &|_| {
            Err("no key needed".into())
        })
        .unwrap();
        let names: Vec<String> = plan.cells[0]
            .checks
            .iter()
            .map(|c| c.name.clone())
            .collect();
        let row = |check: &str| crate::verdict::FirewallRequest {
            from_zone: Some("a".into()),
            source: None,
            to_zone: Some("b".into()),
            destination: "198.18.99.2".into(),
            protocol: "tcp",
            ports: "1".into(),
            direction: crate::model::Direction::Forward,
            observed: crate::verdict::Observed::Dropped,
            service: None,
            evidence_check: check.to_string(),
            evidence_hop: crate::model::HopKind::Tcp,
            advice: None,
            far_side: None,
        };
        let mut rows: Vec<_> = names.iter().map(|n| row(n)).collect();
        name_sql_server_ports(&plan, &mut rows);
        let sql = names.iter().position(|n| n.contains("mssql")).unwrap();
        let tcp = names.iter().position(|n| n.contains(":22")).unwrap();
        assert_eq!(
            rows[sql].service.as_deref(),
            Some("SQL Server"),
            "{names:?}"
        );
        assert_eq!(rows[tcp].service, None, "{names:?}");
    }

    /// Zones without agents: their rows are `no_agent`, their cells `not_run`, nothing is
    /// contacted, and the run is not a failure (the file says so on purpose).
    #[tokio::test]
    async fn zones_without_agents_are_not_run() {
        let text = "[[zone]]\nname = \"a\"\nhosts = [\"198.18.99.1\"]\n\
                    [[zone]]\nname = \"b\"\nhosts = [\"198.18.99.2\"]\n\
                    [[reach]]\nfrom = \"*\"\nto = \"*\"\ntcp = [1]\n";
        let plan = parse(text, std::path::Path::new("m.toml"), None, &|_| {
            Err("no key needed".into())
        })
        .unwrap();
        let report = run(&plan).await;
        assert_eq!(report.rows.len(), 2);
        assert!(report.rows.iter().all(|r| r.state == RowState::NoAgent));
        assert_eq!(report.cells.len(), 2);
        assert!(report
            .cells
            .iter()
            .all(|c| c.state == CellState::NotRun && c.checks.is_empty()));
        assert_eq!(report.summary.not_run, 2);
        assert_eq!(
            exit_code(&report, crate::exit::FailOn::Failure),
            crate::exit::OK
        );
    }
}
