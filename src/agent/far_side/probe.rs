//! Pure: which failed forward connects the agent is asked about, and what its answers mean.
//!
//! "Reachable from the target's own zone, unreachable from here" proves a filter on the path;
//! "unreachable from both" points at the service or the host's own firewall (how Microsoft's SQL
//! networking support isolates a firewall). Only connect failures qualify: a login or RPC failure
//! after a connect is not something the far side's TCP view can explain.

use serde_json::Value;

use crate::hops::KindInfo;
use crate::hostport::{bracket_v6, url_host};
use crate::model::{Cause, CheckResult, Direction, HopKind, HopResult, Status};

use super::super::protocol::ReverseTarget;

/// A connect that ended with one of these is asked about.
pub const CONNECT_CAUSES: [Cause; 5] = [
    Cause::Timeout,
    Cause::Refused,
    Cause::Prohibited,
    Cause::Unreachable,
    Cause::Reset,
];

/// Data key set on the agent's `tcp` hop when its policy refused the probe (nothing was sent).
pub const POLICY_REFUSED: &str = "policy_refused";

/// One far-side probe: the host of a forward check (as the user wrote it, so that the agent's
/// own DNS and its `allow` entries, compared as written, apply) and a port that did not connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// Index of the forward check in the list the probes were taken from.
    pub check: usize,
    pub host: String,
    pub port: u16,
}

impl Probe {
    pub fn url(&self) -> String {
        format!("tcp://{}:{}", bracket_v6(&self.host), self.port)
    }

    /// The probe as the agent's request carries it.
    pub fn target(&self) -> ReverseTarget {
        ReverseTarget {
            name: format!("far_side {}", self.url()),
            url: self.url(),
            to_caller: false,
        }
    }
}

/// The probes for a run's forward checks: one per (check, port) that failed at the connect.
pub fn probes(checks: &[CheckResult]) -> Vec<Probe> {
    let mut out: Vec<Probe> = Vec::new();
    for (index, check) in checks.iter().enumerate() {
        // Which kinds qualify is a fact of each kind (`Kind::FAR_SIDE_PROBED`): today `tcp`,
        // `epm` (the mapper's port and `rpc_port`) and `mssql` (the SQL port).
        let probed = KindInfo::named(&check.kind).is_some_and(|k| k.far_side_probed);
        if check.direction != Direction::Forward || !probed {
            continue;
        }
        let target_host = url::Url::parse(&check.target)
            .ok()
            .and_then(|u| url_host(&u));
        for hop in &check.hops {
            if !matches!(hop.hop, HopKind::Tcp | HopKind::RpcPort)
                || !matches!(hop.status, Status::Fail | Status::Warn)
            {
                continue;
            }
            for (address, port) in failed_connects(check, hop) {
                // The name as written when there is one; else the address that was tried.
                let host = match (&target_host, address) {
                    (Some(h), _) => h.clone(),
                    (None, Some(a)) => a,
                    (None, None) => continue,
                };
                let probe = Probe {
                    check: index,
                    host,
                    port,
                };
                if !out.contains(&probe) {
                    out.push(probe);
                }
            }
        }
    }
    out
}

/// (address tried, port) of every attempt of `hop` that failed at the connect. A hop without
/// attempt data (built without the shared connect step) counts when its own cause qualifies
/// and the target names the port.
fn failed_connects(check: &CheckResult, hop: &HopResult) -> Vec<(Option<String>, u16)> {
    let qualifies = |cause: &str| CONNECT_CAUSES.iter().any(|c| c.as_str() == cause);
    match hop.data.get("attempts").and_then(Value::as_array) {
        Some(attempts) => attempts
            .iter()
            .filter(|a| {
                a.get("cause")
                    .and_then(Value::as_str)
                    .is_some_and(qualifies)
            })
            .filter_map(|a| {
                let addr: std::net::SocketAddr = a.get("address")?.as_str()?.parse().ok()?;
                Some((Some(addr.ip().to_string()), addr.port()))
            })
            .collect(),
        None => {
            let port = url::Url::parse(&check.target).ok().and_then(|u| u.port());
            match (hop.cause.map(|c| qualifies(c.as_str())), port) {
                (Some(true), Some(port)) => vec![(None, port)],
                _ => Vec::new(),
            }
        }
    }
}

/// Who answered the far-side request.
#[derive(Debug, Clone, Copy)]
pub struct Agent<'a> {
    pub name: &'a str,
    pub zone: Option<&'a str>,
}

impl Agent<'_> {
    fn label(&self) -> String {
        match self.zone {
            Some(z) => format!("agent {}, zone {z}", self.name),
            None => format!("agent {}", self.name),
        }
    }

    fn data(&self, hop: HopResult) -> HopResult {
        let hop = hop.with_data("agent", self.name);
        match self.zone {
            Some(z) => hop.with_data("from_zone", z),
            None => hop,
        }
    }
}

pub const HINT_PATH: &str = "the port answers from the target's own zone, so the service \
listens: the flow is blocked between the zones (a firewall or filtering router on the path), or \
the host's own firewall admits only its own zone. Ask for the rule on the firewalls between the \
zones. If the agent runs on the target host itself, its connection does not cross that host's \
inbound rules the way a remote one does: check their scope too";

/// The hint of a far-side failure, by the agent's cause: the advice moves to the host.
pub fn hint_unreachable(cause: Cause, port: u16) -> String {
    match cause {
        Cause::Refused => format!(
            "nothing accepts connections on port {port} even from the target's zone: the service is \
             stopped, listens on another port or address (SQL Server: TCP/IP enabled? which port?), \
             or the host's own firewall rejects with a reset. Fix the service before asking for \
             firewall changes between the zones"
        ),
        Cause::Timeout => format!(
            "the target drops connections to port {port} from its own zone too: the host's own \
             firewall (its inbound rule for port {port}) or the host is down. Opening the firewalls \
             between the zones would not fix this alone"
        ),
        Cause::Prohibited => format!(
            "connections to port {port} are rejected from the target's zone too (ICMP \
             administratively prohibited): the host's own firewall, or a firewall inside the \
             target's zone"
        ),
        Cause::Unreachable => "the agent cannot reach the host either: the host is down or not at \
             that address"
            .to_string(),
        _ => format!(
            "the connection to port {port} fails from the target's zone too: look at the service \
             and the host, not the path between the zones"
        ),
    }
}

/// The `far_side` hop for `probe` from the agent's answer (its `tcp` check of the probe).
pub fn hop_from_answer(probe: &Probe, answer: &CheckResult, agent: Agent) -> HopResult {
    let base = |hop: HopResult| {
        agent
            .data(hop)
            .with_data("target", probe.url())
            .with_data("port", probe.port)
    };
    let tcp = answer.hops.iter().find(|h| h.hop == HopKind::Tcp);
    let Some(tcp) = tcp else {
        return base(HopResult::skip(
            HopKind::FarSide,
            format!("the agent's answer for {} has no tcp hop", probe.url()),
        ));
    };
    if tcp.data.get(POLICY_REFUSED) == Some(&Value::Bool(true)) {
        // Nothing was sent: a configuration matter, not a network result.
        return base(
            HopResult::fail(
                HopKind::FarSide,
                Cause::Config,
                format!(
                    "not tried: the agent's policy refused it: {}",
                    tcp.detail
                        .strip_prefix("refused by the agent: ")
                        .unwrap_or(&tcp.detail)
                ),
            )
            .with_hint(format!(
                "the agent connects only to the caller and to the hosts in its own `allow` list: \
                 add \"{}:{}\" to `allow` in the agent's config to get the far side's view",
                probe.host, probe.port
            )),
        );
    }
    match (tcp.status, tcp.cause) {
        // Warn: some of the addresses connected; the service answers from there.
        (Status::Pass | Status::Warn, _) => {
            let address = attempt_address(tcp, true);
            let to = address.as_deref().unwrap_or(&probe.host);
            let hop = HopResult::pass(
                HopKind::FarSide,
                format!(
                    "reachable from the target's zone ({} connected to {to}): the block is on \
                     the path between the zones",
                    agent.label()
                ),
            )
            .with_hint(HINT_PATH)
            .with_duration(tcp.duration_seconds);
            with_address(base(hop), address)
        }
        (Status::Fail, Some(cause)) if CONNECT_CAUSES.contains(&cause) => {
            let hop = HopResult::fail(
                HopKind::FarSide,
                cause,
                format!(
                    "unreachable from the target's zone too ({}: {}): the service, or the host's \
                     own firewall",
                    agent.label(),
                    tcp.detail
                ),
            )
            .with_hint(hint_unreachable(cause, probe.port))
            .with_data("cause", cause.as_str())
            .with_duration(tcp.duration_seconds);
            with_address(base(hop), attempt_address(tcp, false))
        }
        _ => {
            // The agent could not tell (its DNS failed, the tcp hop did not run): no verdict.
            let problem = answer.first_problem().unwrap_or(tcp);
            let mut hop = HopResult::skip(
                HopKind::FarSide,
                format!(
                    "inconclusive: the agent could not try {} ({}: {})",
                    probe.url(),
                    problem.hop.as_str(),
                    problem.detail
                ),
            );
            if let Some(c) = problem.cause {
                hop = hop.with_data("cause", c.as_str());
            }
            base(hop)
        }
    }
}

/// The address the agent connected to (`connected`) or first failed to.
fn attempt_address(hop: &HopResult, connected: bool) -> Option<String> {
    let attempts = hop.data.get("attempts")?.as_array()?;
    attempts
        .iter()
        .find(|a| (a.get("status").and_then(Value::as_str) == Some("pass")) == connected)
        .and_then(|a| a.get("address")?.as_str().map(str::to_string))
}

fn with_address(hop: HopResult, address: Option<String>) -> HopResult {
    match address {
        Some(a) => hop.with_data("address", a),
        None => hop,
    }
}

/// A `far_side` hop that was not asked or got no answer: `skip`, saying why.
pub fn skipped(probe: &Probe, why: &str) -> HopResult {
    HopResult::skip(HopKind::FarSide, format!("not asked: {why}"))
        .with_data("target", probe.url())
        .with_data("port", probe.port)
}

/// Appends each probe's hop to its check (the check's status is recomputed: a far-side pass
/// never turns a failed check into a passed one, since the forward hop still failed).
pub fn attach(checks: &mut [CheckResult], probes: &[Probe], hops: Vec<HopResult>) {
    for (probe, hop) in probes.iter().zip(hops) {
        if let Some(check) = checks.get_mut(probe.check) {
            check.hops.push(hop);
            check.status = CheckResult::status_of(&check.hops);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn attempt(address: &str, cause: Option<&str>) -> Value {
        json!({"address": address, "source": "198.18.0.1",
               "status": if cause.is_some() {"fail"} else {"pass"}, "cause": cause})
    }

    fn forward(kind: &str, target: &str, hops: Vec<HopResult>) -> CheckResult {
        CheckResult::new(target, kind, target, hops)
    }

    fn connect(kind: HopKind, status: Status, attempts: Vec<Value>) -> HopResult {
        let cause = attempts
            .iter()
            .find_map(|a| a["cause"].as_str())
            .and_then(|c| Cause::ALL.iter().copied().find(|k| k.as_str() == c));
        let mut hop = HopResult::new(kind, status, "x").with_data("attempts", attempts);
        hop.cause = cause;
        hop
    }

    #[test]
    fn only_failed_connects_of_forward_tcp_epm_mssql_are_probed() {
        let dropped = |a: &str| {
            connect(
                HopKind::Tcp,
                Status::Fail,
                vec![attempt(a, Some("timeout"))],
            )
        };
        let mut reverse = forward(
            "tcp",
            "tcp://198.18.0.1:135",
            vec![dropped("198.18.0.1:135")],
        );
        reverse.direction = Direction::Reverse;
        let checks = vec![
            // 0: a dropped SQL port, named target: the name is what the agent tries.
            forward(
                "mssql",
                "mssql://sql01:1433/master",
                vec![dropped("198.18.1.2:1433")],
            ),
            // 1: epm: 135 passed, two dynamic ports, one refused and one passed.
            forward(
                "epm",
                "epm://198.18.1.2:135",
                vec![
                    connect(
                        HopKind::Tcp,
                        Status::Pass,
                        vec![attempt("198.18.1.2:135", None)],
                    ),
                    connect(
                        HopKind::RpcPort,
                        Status::Warn,
                        vec![
                            attempt("198.18.1.2:49153", Some("refused")),
                            attempt("198.18.1.2:49154", None),
                        ],
                    ),
                ],
            ),
            // 2: a login failure after the connect: not the far side's business.
            forward(
                "mssql",
                "mssql://sql01/master",
                vec![
                    connect(
                        HopKind::Tcp,
                        Status::Pass,
                        vec![attempt("198.18.1.2:1433", None)],
                    ),
                    HopResult::fail(HopKind::Login, Cause::AuthFailed, "no"),
                ],
            ),
            // 3: a DNS failure: nothing was connected to.
            forward(
                "tcp",
                "tcp://nowhere:1",
                vec![HopResult::fail(HopKind::Resolve, Cause::DnsNxdomain, "no")],
            ),
            // 4: reverse: the agent's own check.
            reverse,
            // 5: another kind (postgres) is not probed.
            forward(
                "postgres",
                "postgres://pg:5432/db",
                vec![dropped("198.18.1.3:5432")],
            ),
            // 6: a load-balanced name: two addresses failed, one port: one probe.
            forward(
                "tcp",
                "tcp://[2001:db8::5]:1433",
                vec![connect(
                    HopKind::Tcp,
                    Status::Fail,
                    vec![
                        attempt("[2001:db8::5]:1433", Some("reset")),
                        attempt("[2001:db8::5]:1433", Some("unreachable")),
                    ],
                )],
            ),
        ];
        let got: Vec<(usize, String)> =
            probes(&checks).iter().map(|p| (p.check, p.url())).collect();
        assert_eq!(
            got,
            vec![
                (0, "tcp://sql01:1433".to_string()),
                (1, "tcp://198.18.1.2:49153".to_string()),
                (6, "tcp://[2001:db8::5]:1433".to_string()),
            ]
        );
    }

    fn answer(hop: HopResult) -> CheckResult {
        CheckResult::new(
            "far_side tcp://sql01:1433",
            "tcp",
            "tcp://sql01:1433",
            vec![hop],
        )
    }

    #[test]
    fn the_agents_answer_becomes_pass_fail_or_no_verdict() {
        let probe = Probe {
            check: 0,
            host: "sql01".into(),
            port: 1433,
        };
        let agent = Agent {
            name: "sqlagent",
            zone: Some("sql"),
        };
        // Reachable from there: pass, with the address the agent connected to.
        let ok = connect(
            HopKind::Tcp,
            Status::Pass,
            vec![attempt("198.18.1.2:1433", None)],
        );
        let hop = hop_from_answer(&probe, &answer(ok), agent);
        assert_eq!((hop.hop, hop.status), (HopKind::FarSide, Status::Pass));
        assert!(
            hop.detail
                .contains("the block is on the path between the zones"),
            "{hop:?}"
        );
        assert_eq!(hop.data["address"], "198.18.1.2:1433");
        assert_eq!(hop.data["agent"], "sqlagent");
        assert_eq!(hop.data["from_zone"], "sql");
        assert!(hop.data.get("cause").is_none());

        // Unreachable from there too: fail with the agent's cause, in data as well.
        for (cause, needle) in [
            ("refused", "service"),
            ("timeout", "host's own firewall"),
            ("prohibited", "host's own firewall"),
            ("unreachable", "host is down"),
        ] {
            let failed = connect(
                HopKind::Tcp,
                Status::Fail,
                vec![attempt("198.18.1.2:1433", Some(cause))],
            );
            let hop = hop_from_answer(&probe, &answer(failed), agent);
            assert_eq!(hop.status, Status::Fail, "{cause}");
            assert_eq!(hop.cause.map(|c| c.as_str()), Some(cause));
            assert_eq!(hop.data["cause"], cause);
            assert_eq!(hop.data["address"], "198.18.1.2:1433");
            assert!(
                hop.detail
                    .contains("unreachable from the target's zone too"),
                "{hop:?}"
            );
            assert!(
                hop.hint.as_deref().unwrap().contains(needle),
                "{cause}: {hop:?}"
            );
        }

        // Refused by the agent's policy: a configuration matter, nothing was tried.
        let refused = HopResult::fail(
            HopKind::Tcp,
            Cause::Config,
            "refused by the agent: not allowed",
        )
        .with_data(POLICY_REFUSED, true);
        let hop = hop_from_answer(&probe, &answer(refused), agent);
        assert_eq!((hop.status, hop.cause), (Status::Fail, Some(Cause::Config)));
        assert!(
            hop.hint.as_deref().unwrap().contains("\"sql01:1433\""),
            "{hop:?}"
        );
        assert!(hop.data.get("address").is_none());

        // The agent's DNS could not resolve the name: no verdict either way.
        let no_name = CheckResult::new(
            "f",
            "tcp",
            "tcp://sql01:1433",
            vec![
                HopResult::fail(HopKind::Resolve, Cause::DnsNxdomain, "no such name"),
                HopResult::skip(HopKind::Tcp, "not run"),
            ],
        );
        let hop = hop_from_answer(
            &probe,
            &no_name,
            Agent {
                name: "a",
                zone: None,
            },
        );
        assert_eq!((hop.status, hop.cause), (Status::Skip, None));
        assert_eq!(hop.data["cause"], "dns_nxdomain");
        assert!(hop.data.get("from_zone").is_none());
    }

    #[test]
    fn attached_hops_keep_a_failed_check_failed() {
        let mut checks = vec![forward(
            "tcp",
            "tcp://sql01:1433",
            vec![connect(
                HopKind::Tcp,
                Status::Fail,
                vec![attempt("198.18.1.2:1433", Some("timeout"))],
            )],
        )];
        let probes = probes(&checks);
        let pass = HopResult::pass(HopKind::FarSide, "reachable");
        attach(&mut checks, &probes, vec![pass]);
        assert_eq!(checks[0].hops.len(), 2);
        assert_eq!(checks[0].status, Status::Fail);
        assert_eq!(skipped(&probes[0], "x").detail, "not asked: x");
    }
}
