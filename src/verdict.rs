//! The verdict of a finished run: what a sysadmin pastes into a ticket, and the firewall change
//! request derived from it.
//!
//! Pure functions over a [`Report`]: nothing here touches the network, so every row has a table
//! test. A *blocked flow* is a connect attempt (hops `tcp`, `rpc_port`, `callback`) that got no
//! answer (`timeout`: dropped), an ICMP "administratively prohibited" (`prohibited`: rejected by
//! a firewall) or a reset a device on the path forged (`reset_by_path`: rejected by a firewall,
//! told by the reset's TTL). Those are the flows a firewall rule can open; everything else that
//! did not pass (refused, DNS, login, ...) is a verdict line but never a firewall request, since
//! opening a port does not fix it (a `refused` reset came from the target, or its origin could
//! not be checked: no firewall is named).
//!
//! Each row names the flow as the firewall sees it: the source address the connection used or
//! would use (`data.source` of the hop, recorded by the shared connect step on whichever side
//! opened the connection: this host for forward hops, the agent for callbacks and reverse checks),
//! the destination address and the real port. An MSDTC dynamic port is that port, with the advice
//! to pin it (ServerTcpPort), since the dynamic port changes when MSDTC restarts.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use serde::Serialize;
use serde_json::Value;

use crate::hops::KindInfo;
use crate::model::{Cause, CheckResult, Datum, Direction, HopKind, HopResult, Report, Status};

/// How the blocked flow showed itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Observed {
    /// No answer to the SYN (a firewall dropping it, or a host that is down).
    Dropped,
    /// ICMP administratively prohibited, or a reset forged on the path: a firewall rejects it.
    Rejected,
}

impl Observed {
    fn of(cause: &str) -> Option<Observed> {
        match cause {
            "timeout" => Some(Observed::Dropped),
            "prohibited" | "reset_by_path" => Some(Observed::Rejected),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Observed::Dropped => "dropped",
            Observed::Rejected => "rejected",
        }
    }
}

/// One row of the firewall change request (JSON `firewall_requests`, `--firewall-request`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FirewallRequest {
    pub from_zone: Option<String>,
    /// The source address (None when the connecting side could not tell).
    pub source: Option<String>,
    pub to_zone: Option<String>,
    pub destination: String,
    pub protocol: &'static str,
    /// The port to open (a single port: the one that was tried).
    pub ports: String,
    pub direction: Direction,
    pub observed: Observed,
    /// What listens there ("SQL Server", "MSDTC dynamic port", "callback", ...).
    pub service: Option<String>,
    /// The check whose hop showed the block.
    pub evidence_check: String,
    pub evidence_hop: HopKind,
    /// What else the change needs (MSDTC: pin the port with ServerTcpPort).
    pub advice: Option<String>,
    /// Stronger evidence from a `peer` run: the agent reached the same host and port from the
    /// target's zone (hop `far_side` pass), so the service listens and the block is on the path.
    /// Absent otherwise. (A far-side failure removes the row instead: the advice is the host's.)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub far_side: Option<String>,
}

/// The advice for an MSDTC dynamic port. Registry value documented by Microsoft for Windows
/// Server 2012 R2 and later; only a real Windows host can confirm it takes effect.
pub const MSDTC_PORT_ADVICE: &str =
    "the port is assigned when MSDTC starts and changes on restart: \
pin it (HKLM\\SOFTWARE\\Microsoft\\MSDTC ServerTcpPort, DWORD, then restart MSDTC) and open that \
port, or open the RPC dynamic range 49152-65535; TCP 135 must stay open too";
pub const RPC_PORT_ADVICE: &str = "an RPC dynamic port (assigned when the service starts): \
open the RPC dynamic range 49152-65535, or pin the service to a fixed port and open that";
pub const DTC_NAME_ADVICE: &str = "this host's MSDTC contacts the SQL host's MSDTC at the name \
SQL Server gives out (hop dtc_name): TCP 135 there first, then MSDTC's dynamic port (check it \
with an epm:// check to that name); the SQL host needs the same rules back to this host";
pub const CALLBACK_ADVICE: &str = "MSDTC connects back from the far side: this rule is needed \
in addition to the one in the forward direction";

/// Every blocked flow of the run, in report order, without duplicates (the same source,
/// destination and port seen by two checks is one row, with the first check as evidence).
pub fn firewall_requests(report: &Report) -> Vec<FirewallRequest> {
    let mut rows = Vec::new();
    let mut seen = BTreeSet::new();
    for check in &report.checks {
        for hop in &check.hops {
            for row in blocked_flows(check, hop) {
                let key = (
                    row.source.clone(),
                    row.destination.clone(),
                    row.protocol,
                    row.ports.clone(),
                );
                if seen.insert(key) {
                    rows.push(row);
                }
            }
        }
    }
    rows
}

/// The blocked flows one hop shows: one per failed attempt that was dropped or rejected.
fn blocked_flows(check: &CheckResult, hop: &HopResult) -> Vec<FirewallRequest> {
    if !matches!(
        hop.hop,
        HopKind::Tcp
            | HopKind::RpcPort
            | HopKind::Callback
            | HopKind::DtcName
            | HopKind::Kdc
            | HopKind::Revocation
            | HopKind::DtcConfig
    ) || !matches!(hop.status, Status::Fail | Status::Warn)
    {
        return Vec::new();
    }
    // Read in place (`datum`): this runs over every failed hop of a run, and the `tcp` hop's
    // data is in the typed form, which `get` would build a map of.
    let hop_source = hop.data.datum("source").and_then(Datum::as_str);
    let (service, advice) = service_of(check, hop);
    let row = |destination: SocketAddr, source: Option<&str>, observed| FirewallRequest {
        from_zone: check.from.clone(),
        source: source.or(hop_source).map(str::to_string),
        to_zone: check.to.clone(),
        destination: destination.ip().to_string(),
        protocol: "tcp",
        ports: destination.port().to_string(),
        direction: check.direction,
        observed,
        service: service.clone(),
        evidence_check: check.name.clone(),
        evidence_hop: hop.hop,
        advice: advice.clone(),
        far_side: None,
    };
    // The far side's view of the same port: reachable from there strengthens the row;
    // unreachable from there too means no firewall between the zones is the (only) problem.
    let with_far_side = |mut row: FirewallRequest| -> Option<FirewallRequest> {
        let port: u16 = row.ports.parse().ok()?;
        match far_side_of(check, port) {
            Some(f) if f.status == Status::Pass => {
                row.far_side = Some(far_side_evidence(f));
                Some(row)
            }
            Some(f) if f.status == Status::Fail && f.cause != Some(Cause::Config) => None,
            _ => Some(row),
        }
    };
    match hop.data.datum("attempts").and_then(Datum::items) {
        Some(attempts) => attempts
            .filter_map(|a| {
                let observed = Observed::of(a.get("cause")?.as_str()?)?;
                let destination = a.get("address")?.as_str()?.parse().ok()?;
                let mut r = row(
                    destination,
                    a.get("source").and_then(Datum::as_str),
                    observed,
                );
                // Hop `kdc` probes several services and UDP too: each attempt names its own.
                if let Some(service) = a.get("service").and_then(Datum::as_str) {
                    r.service = Some(service.to_string());
                }
                if a.get("protocol").and_then(Datum::as_str) == Some("udp") {
                    r.protocol = "udp";
                }
                with_far_side(r)
            })
            .collect(),
        // A callback that failed on the near side's account has no attempts: the target names
        // the flow (tcp://CALLER:PORT).
        None => {
            let observed = hop.cause.and_then(|c| Observed::of(c.as_str()));
            let destination = check
                .target
                .strip_prefix("tcp://")
                .and_then(|t| t.parse::<SocketAddr>().ok());
            match (observed, destination) {
                (Some(observed), Some(destination)) => {
                    with_far_side(row(destination, None, observed))
                        .into_iter()
                        .collect()
                }
                _ => Vec::new(),
            }
        }
    }
}

/// The check's `far_side` hop for `port` (`peer` runs only).
fn far_side_of(check: &CheckResult, port: u16) -> Option<&HopResult> {
    check.hops.iter().find(|h| {
        h.hop == HopKind::FarSide && h.data.get("port").and_then(Value::as_u64) == Some(port.into())
    })
}

/// "reachable from the sql zone's agent (sql01)", from a passed `far_side` hop.
fn far_side_evidence(hop: &HopResult) -> String {
    let agent = hop.data.get("agent").and_then(Value::as_str);
    let zone = hop.data.get("from_zone").and_then(Value::as_str);
    let whose = match zone {
        Some(z) => format!("the {z} zone's agent"),
        None => "the target zone's agent".to_string(),
    };
    match agent {
        Some(a) => format!("reachable from {whose} ({a})"),
        None => format!("reachable from {whose}"),
    }
}

/// What listens at the far end of a hop, and the advice that goes with it.
fn service_of(check: &CheckResult, hop: &HopResult) -> (Option<String>, Option<String>) {
    let service = |s: &str| Some(s.to_string());
    match (hop.hop, check.kind.as_str()) {
        (HopKind::Callback, _) => (service("callback"), service(CALLBACK_ADVICE)),
        (HopKind::DtcName, _) => (service("MSDTC endpoint mapper"), service(DTC_NAME_ADVICE)),
        (HopKind::Revocation, _) => (
            service(crate::hops::revocation::SERVICE),
            service(REVOCATION_ADVICE),
        ),
        (HopKind::RpcPort, _) if is_msdtc(check) => {
            (service("MSDTC dynamic port"), service(MSDTC_PORT_ADVICE))
        }
        (HopKind::RpcPort, _) => (service("RPC dynamic port"), service(RPC_PORT_ADVICE)),
        // Not a kind: the far side's check of the agent's own port.
        (_, "agent") => (service("dtcprobe agent"), None),
        (_, kind) => (
            KindInfo::named(kind)
                .and_then(|k| k.service)
                .and_then(service),
            None,
        ),
    }
}

/// Whether an `epm` check asked for MSDTC's interface (IXnRemote, the default).
fn is_msdtc(check: &CheckResult) -> bool {
    let msdtc = crate::dcerpc::IXNREMOTE
        .uuid
        .to_string()
        .to_ascii_lowercase();
    let iface = check
        .hops
        .iter()
        .find(|h| h.hop == HopKind::Epm)
        .and_then(|h| h.data.get("iface"))
        .and_then(Value::as_str);
    match iface {
        Some(i) => i.to_ascii_lowercase().contains(&msdtc),
        // No epm hop data (it did not run): the target names a non-default interface.
        None => check.kind == "epm" && !check.target.contains("iface="),
    }
}

/// The advice for a CRL or OCSP URL of the server's certificate chain (hop `revocation`).
const REVOCATION_ADVICE: &str = "a CRL or OCSP URL of the SQL/PostgreSQL server's certificate \
chain (hop revocation's data.urls names it): clients that check revocation fetch it during the \
TLS handshake; allow it here or through the proxy clients use";

/// One line of a firewall request, as the verdict prints it:
/// `web 198.18.0.1 -> sql 198.18.0.2 TCP 49153 (MSDTC dynamic port) DROPPED`.
pub fn request_line(r: &FirewallRequest) -> String {
    let end = |zone: &Option<String>, addr: Option<&str>| {
        [zone.as_deref(), addr]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" ")
    };
    let from = end(&r.from_zone, r.source.as_deref());
    let from = if from.is_empty() {
        "this host".to_string()
    } else {
        from
    };
    let service = r
        .service
        .as_deref()
        .map(|s| format!(" ({s})"))
        .unwrap_or_default();
    let far_side = r
        .far_side
        .as_deref()
        .map(|f| format!(" ({f})"))
        .unwrap_or_default();
    format!(
        "{from} -> {} {} {}{service} {}{far_side}",
        end(&r.to_zone, Some(&r.destination)),
        r.protocol.to_ascii_uppercase(),
        r.ports,
        r.observed.as_str().to_ascii_uppercase()
    )
}

/// The verdict: one line per blocked flow, then one per other problem (refused ports, DNS,
/// logins...), then what the run could not cover (interrupted, skipped). Never empty.
pub fn verdict_lines(report: &Report) -> Vec<String> {
    let requests = firewall_requests(report);
    let mut lines: Vec<String> = requests.iter().map(request_line).collect();
    let mut interrupted = 0;
    for check in &report.checks {
        if check
            .hops
            .iter()
            .any(|h| h.cause == Some(Cause::Interrupted))
        {
            interrupted += 1;
            continue;
        }
        // A hop the check asked for that could not run here is a line too: without it a run
        // whose other hops passed would read "no failure found" about a path it never tested.
        for hop in check.hops.iter().filter(|h| h.needs_attention()) {
            // Already a firewall request line.
            if requests
                .iter()
                .any(|r| r.evidence_check == check.name && r.evidence_hop == hop.hop)
            {
                continue;
            }
            lines.push(problem_line(check, hop));
        }
    }
    if interrupted > 0 {
        lines.push(format!(
            "INTERRUPTED: {interrupted} of {} checks did not finish; this verdict covers only what ran",
            report.checks.len()
        ));
    }
    if lines.is_empty() {
        let s = &report.summary;
        lines.push(if s.skip > 0 {
            format!(
                "no failure found; {} of {} checks skipped (not checked)",
                s.skip,
                report.checks.len()
            )
        } else {
            format!(
                "every path checked is open: {} of {} checks passed",
                s.pass,
                report.checks.len()
            )
        });
    }
    lines
}

/// A problem that is not a blocked flow: `check (from -> to): hop CAUSE: detail`.
fn problem_line(check: &CheckResult, hop: &HopResult) -> String {
    let zones = match (&check.from, &check.to) {
        (Some(f), Some(t)) => format!(" ({f} -> {t})"),
        _ => String::new(),
    };
    let rev = match check.direction {
        Direction::Reverse => " reverse",
        Direction::Forward => "",
    };
    let cause = hop
        .cause
        .map(|c| c.as_str().to_ascii_uppercase())
        .unwrap_or_else(|| hop.status.as_str().to_ascii_uppercase());
    format!(
        "{}{zones}:{rev} {} {cause}: {}",
        check.name,
        hop.hop.as_str(),
        hop.detail
    )
}

/// `--firewall-request csv=PATH`: RFC 4180, one header line. Cells that a spreadsheet would run
/// as a formula (`=`, `+`, `-`, `@` first) get a leading `'`.
pub fn to_csv(rows: &[FirewallRequest]) -> String {
    let mut out = String::from(
        "from_zone,source,to_zone,destination,protocol,ports,direction,observed,service,evidence_check,evidence_hop,advice,far_side\r\n",
    );
    for r in rows {
        let cells = cells(r);
        let line: Vec<String> = cells.iter().map(|c| csv_cell(c)).collect();
        out.push_str(&line.join(","));
        out.push_str("\r\n");
    }
    out
}

fn cells(r: &FirewallRequest) -> [String; 13] {
    let opt = |o: &Option<String>| o.clone().unwrap_or_default();
    [
        opt(&r.from_zone),
        opt(&r.source),
        opt(&r.to_zone),
        r.destination.clone(),
        r.protocol.to_string(),
        r.ports.clone(),
        match r.direction {
            Direction::Forward => "forward".into(),
            Direction::Reverse => "reverse".into(),
        },
        r.observed.as_str().to_string(),
        opt(&r.service),
        r.evidence_check.clone(),
        r.evidence_hop.as_str().to_string(),
        opt(&r.advice),
        opt(&r.far_side),
    ]
}

fn csv_cell(text: &str) -> String {
    let text = if text.starts_with(['=', '+', '-', '@']) {
        format!("'{text}")
    } else {
        text.to_string()
    };
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

/// The firewall requests as a markdown table (empty rows: a sentence saying so).
pub fn to_markdown_table(rows: &[FirewallRequest]) -> String {
    if rows.is_empty() {
        return "No blocked flow was found.\n".to_string();
    }
    let mut out = String::from(
        "| From zone | Source | To zone | Destination | Protocol | Ports | Direction | Observed | Service | Evidence | Advice | Far side |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let c = cells(r);
        let evidence = format!("{} / {}", c[9], c[10]);
        let row = [
            &c[0], &c[1], &c[2], &c[3], &c[4], &c[5], &c[6], &c[7], &c[8], &evidence, &c[11],
            &c[12],
        ];
        out.push('|');
        for cell in row {
            out.push(' ');
            out.push_str(&markdown_escape(cell));
            out.push_str(" |");
        }
        out.push('\n');
    }
    out
}

/// `--firewall-request markdown=PATH`: a heading and the table, ready for a change request.
pub fn to_markdown_document(report: &Report, rows: &[FirewallRequest]) -> String {
    format!(
        "# Firewall change request\n\nFrom dtcprobe {} on {} at {}.\n\n{}",
        report.tool_version,
        markdown_escape(&report.host),
        report.started_at,
        to_markdown_table(rows)
    )
}

/// Escapes text for a markdown table cell or list item: the characters that would start
/// emphasis, code, links, HTML or end a cell are backslash-escaped, line breaks become spaces.
pub fn markdown_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, ch) in text.chars().enumerate() {
        match ch {
            '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '|' | '~' | '&' => {
                out.push('\\');
                out.push(ch);
            }
            '#' | '+' | '-' | '=' | '!' | '>' if i == 0 => {
                out.push('\\');
                out.push(ch);
            }
            '\n' | '\r' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::{Duration, SystemTime};

    fn check(
        name: &str,
        kind: &str,
        target: &str,
        zones: (&str, &str),
        direction: Direction,
        hops: Vec<HopResult>,
    ) -> CheckResult {
        let mut c = CheckResult::new(name, kind, target, hops);
        c.from = Some(zones.0.into());
        c.to = Some(zones.1.into());
        c.direction = direction;
        c
    }

    fn attempt(address: &str, source: &str, cause: Option<&str>) -> Value {
        json!({"address": address, "source": source,
               "status": if cause.is_some() {"fail"} else {"pass"},
               "cause": cause, "duration_seconds": 1.0})
    }

    /// The seed scenario: forward MSDTC dynamic port dropped, callback dropped, a stale PTR, a
    /// refused SQL port, and a load-balanced name with one dropped address.
    fn seed() -> Report {
        let epm = check(
            "sql01-dtc",
            "epm",
            "epm://sql01:135",
            ("web", "sql"),
            Direction::Forward,
            vec![
                HopResult::warn(
                    HopKind::Resolve,
                    Cause::DnsMismatch,
                    "PTR of 198.18.1.2 names oldweb",
                ),
                HopResult::pass(HopKind::Epm, "ok")
                    .with_data("iface", "906b0ce0-c70b-1067-b317-00dd010662da/v1.0"),
                HopResult::fail(HopKind::RpcPort, Cause::Timeout, "dropped")
                    .with_data("source", "198.18.1.2")
                    .with_data(
                        "attempts",
                        json!([attempt("198.18.2.2:49153", "198.18.1.2", Some("timeout"))]),
                    ),
            ],
        );
        let callback = check(
            "callback",
            "callback",
            "tcp://198.18.1.2:5001",
            ("sql", "web"),
            Direction::Reverse,
            vec![HopResult::fail(
                HopKind::Callback,
                Cause::Timeout,
                "agent -> this host: dropped",
            )
            .with_data(
                "attempts",
                json!([attempt("198.18.1.2:5001", "198.18.2.2", Some("timeout"))]),
            )],
        );
        let refused = check(
            "sql01",
            "mssql",
            "mssql://sql01:1433/master",
            ("web", "sql"),
            Direction::Forward,
            vec![
                HopResult::fail(HopKind::Tcp, Cause::Refused, "198.18.2.2:1433: refused")
                    .with_data(
                        "attempts",
                        json!([attempt("198.18.2.2:1433", "198.18.1.2", Some("refused"))]),
                    ),
            ],
        );
        let balanced = check(
            "sqlvip",
            "tcp",
            "tcp://sqlvip:1433",
            ("web", "sql"),
            Direction::Forward,
            vec![
                HopResult::warn(HopKind::Tcp, Cause::Prohibited, "1 of 2").with_data(
                    "attempts",
                    json!([
                        attempt("198.18.2.3:1433", "198.18.1.2", None),
                        attempt("198.18.2.4:1433", "198.18.1.2", Some("prohibited"))
                    ]),
                ),
            ],
        );
        Report::new(
            SystemTime::UNIX_EPOCH,
            Duration::from_secs(1),
            "web".into(),
            vec![epm, callback, refused, balanced],
        )
    }

    #[test]
    fn blocked_flows_become_firewall_rows() {
        let rows = firewall_requests(&seed());
        let got: Vec<_> = rows
            .iter()
            .map(|r| {
                (
                    r.source.as_deref(),
                    r.destination.as_str(),
                    r.ports.as_str(),
                    r.direction,
                    r.observed,
                    r.service.as_deref(),
                    r.evidence_check.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    Some("198.18.1.2"),
                    "198.18.2.2",
                    "49153",
                    Direction::Forward,
                    Observed::Dropped,
                    Some("MSDTC dynamic port"),
                    "sql01-dtc"
                ),
                (
                    Some("198.18.2.2"),
                    "198.18.1.2",
                    "5001",
                    Direction::Reverse,
                    Observed::Dropped,
                    Some("callback"),
                    "callback"
                ),
                // Only the address of the load-balanced name that was rejected.
                (
                    Some("198.18.1.2"),
                    "198.18.2.4",
                    "1433",
                    Direction::Forward,
                    Observed::Rejected,
                    None,
                    "sqlvip"
                ),
            ]
        );
        assert!(rows[0].advice.as_deref().unwrap().contains("ServerTcpPort"));
        assert_eq!(rows[1].from_zone.as_deref(), Some("sql"));
        assert_eq!(rows[1].to_zone.as_deref(), Some("web"));
    }

    #[test]
    fn a_reset_forged_on_the_path_is_a_rejected_flow_and_the_targets_own_is_not() {
        let hop = |port: u16, cause: Cause| {
            HopResult::fail(HopKind::Tcp, cause, "reset").with_data(
                "attempts",
                json!([attempt(
                    &format!("198.18.2.2:{port}"),
                    "198.18.0.1",
                    Some(cause.as_str())
                )]),
            )
        };
        let report = Report::new(
            SystemTime::UNIX_EPOCH,
            Duration::from_secs(1),
            "web".into(),
            vec![
                check(
                    "forged",
                    "tcp",
                    "tcp://198.18.2.2:1450",
                    ("web", "sql"),
                    Direction::Forward,
                    vec![hop(1450, Cause::ResetByPath)],
                ),
                check(
                    "closed",
                    "tcp",
                    "tcp://198.18.2.2:1452",
                    ("web", "sql"),
                    Direction::Forward,
                    vec![hop(1452, Cause::Refused)],
                ),
            ],
        );
        let rows = firewall_requests(&report);
        assert_eq!(rows.len(), 1, "{rows:#?}");
        assert_eq!(
            (rows[0].ports.as_str(), rows[0].observed),
            ("1450", Observed::Rejected)
        );
        assert_eq!(
            verdict_lines(&report)[0],
            "web 198.18.0.1 -> sql 198.18.2.2 TCP 1450 REJECTED"
        );
    }

    #[test]
    fn verdict_lines_name_flows_then_other_problems() {
        let lines = verdict_lines(&seed());
        assert_eq!(
            lines[..3],
            [
                "web 198.18.1.2 -> sql 198.18.2.2 TCP 49153 (MSDTC dynamic port) DROPPED",
                "sql 198.18.2.2 -> web 198.18.1.2 TCP 5001 (callback) DROPPED",
                "web 198.18.1.2 -> sql 198.18.2.4 TCP 1433 REJECTED",
            ]
        );
        assert_eq!(
            lines[3],
            "sql01-dtc (web -> sql): resolve DNS_MISMATCH: PTR of 198.18.1.2 names oldweb"
        );
        assert_eq!(
            lines[4],
            "sql01 (web -> sql): tcp REFUSED: 198.18.2.2:1433: refused"
        );
        assert_eq!(lines.len(), 5, "{lines:#?}");
    }

    /// `peer` runs: the agent's view of the same port decides where the advice goes.
    #[test]
    fn far_side_pass_strengthens_the_row_and_far_side_fail_moves_it_to_the_host() {
        let dropped = |name: &str, port: u16, far_side: HopResult| {
            let address = format!("198.18.1.2:{port}");
            check(
                name,
                "tcp",
                &format!("tcp://sql01:{port}"),
                ("web", "sql"),
                Direction::Forward,
                vec![
                    HopResult::fail(HopKind::Tcp, Cause::Timeout, "dropped").with_data(
                        "attempts",
                        json!([attempt(&address, "198.18.0.1", Some("timeout"))]),
                    ),
                    far_side.with_data("port", port),
                ],
            )
        };
        let reachable = HopResult::pass(HopKind::FarSide, "reachable from the target's zone")
            .with_data("agent", "sqlagent")
            .with_data("from_zone", "sql");
        let unreachable = HopResult::fail(
            HopKind::FarSide,
            Cause::Timeout,
            "unreachable from the target's zone too (agent sqlagent, zone sql: dropped): the \
             service, or the host's own firewall",
        )
        .with_data("cause", "timeout");
        let not_allowed = HopResult::fail(HopKind::FarSide, Cause::Config, "policy");
        let report = Report::new(
            SystemTime::UNIX_EPOCH,
            Duration::from_secs(1),
            "web".into(),
            vec![
                dropped("path", 1433, reachable),
                dropped("host", 1434, unreachable),
                dropped("unknown", 1435, not_allowed),
            ],
        );
        let rows = firewall_requests(&report);
        let got: Vec<_> = rows
            .iter()
            .map(|r| (r.ports.as_str(), r.far_side.as_deref()))
            .collect();
        // 1434: unreachable from the sql zone too: no firewall row for the path.
        assert_eq!(
            got,
            [
                (
                    "1433",
                    Some("reachable from the sql zone's agent (sqlagent)")
                ),
                ("1435", None),
            ]
        );
        let lines = verdict_lines(&report);
        assert_eq!(
            lines[0],
            "web 198.18.0.1 -> sql 198.18.1.2 TCP 1433 DROPPED (reachable from the sql zone's agent (sqlagent))"
        );
        // The host's problem is told as such: the forward drop and the far side's view.
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("host (web -> sql): tcp TIMEOUT")),
            "{lines:#?}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("host (web -> sql): far_side TIMEOUT")
                    && l.contains("the host's own firewall")),
            "{lines:#?}"
        );
        assert!(to_csv(&rows)
            .lines()
            .next()
            .unwrap()
            .ends_with(",advice,far_side"));
        let md = to_markdown_table(&rows);
        assert!(
            md.contains("| reachable from the sql zone's agent (sqlagent) |"),
            "{md}"
        );
        // JSON: the key only where there is far-side evidence (the contract stays additive).
        let json = serde_json::to_value(&rows).unwrap();
        assert_eq!(
            json[0]["far_side"],
            "reachable from the sql zone's agent (sqlagent)"
        );
        assert!(json[1].get("far_side").is_none());
    }

    #[test]
    fn a_clean_run_and_an_interrupted_one_say_so() {
        let pass = CheckResult::new(
            "a",
            "tcp",
            "tcp://a:1",
            vec![HopResult::pass(HopKind::Tcp, "")],
        );
        let report = Report::new(
            SystemTime::UNIX_EPOCH,
            Duration::ZERO,
            "h".into(),
            vec![pass.clone()],
        );
        assert_eq!(
            verdict_lines(&report),
            ["every path checked is open: 1 of 1 checks passed"]
        );
        let stopped = CheckResult::new(
            "b",
            "tcp",
            "tcp://b:1",
            vec![HopResult::skip(HopKind::Tcp, "interrupted").with_cause(Cause::Interrupted)],
        );
        let report = Report::new(
            SystemTime::UNIX_EPOCH,
            Duration::ZERO,
            "h".into(),
            vec![pass, stopped],
        );
        let lines = verdict_lines(&report);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].starts_with("INTERRUPTED: 1 of 2 checks"),
            "{lines:?}"
        );
    }

    #[test]
    fn a_hop_that_could_not_run_here_is_a_verdict_line_not_a_clean_run() {
        let check = CheckResult::new(
            "db",
            "mssql",
            "mssql://sql01/app?tx=enlist",
            vec![
                HopResult::pass(HopKind::Login, ""),
                HopResult::unsupported(HopKind::TxEnlist, "needs the Windows build"),
            ],
        );
        let report = Report::new(
            SystemTime::UNIX_EPOCH,
            Duration::ZERO,
            "h".into(),
            vec![check],
        );
        assert_eq!(
            verdict_lines(&report),
            ["db: tx_enlist UNSUPPORTED: needs the Windows build"]
        );
        assert!(firewall_requests(&report).is_empty());
    }

    #[test]
    fn csv_quotes_and_defuses_formulas() {
        let mut rows = firewall_requests(&seed());
        rows[0].from_zone = Some("=cmd|' /C calc'!A0".into());
        let csv = to_csv(&rows[..1]);
        let mut lines = csv.split("\r\n");
        assert!(lines.next().unwrap().starts_with("from_zone,source,"));
        let row = lines.next().unwrap();
        assert!(row.starts_with("'=cmd|' /C calc'!A0,198.18.1.2,sql,198.18.2.2,tcp,49153,forward,dropped,MSDTC dynamic port,sql01-dtc,rpc_port,\"the port"), "{row}");
    }

    #[test]
    fn markdown_escape_keeps_cells_intact() {
        assert_eq!(markdown_escape("a|b_c\nd"), "a\\|b\\_c d");
        assert_eq!(markdown_escape("#x-y"), "\\#x-y");
    }
}
