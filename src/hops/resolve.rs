//! Hop `resolve`: forward lookup (A/AAAA), and optionally the reverse (PTR) of each address and
//! whether that PTR name maps back to the address. MSDTC identifies and calls back its partner by
//! name, so both directions must agree; a disagreement is a `warn` with cause `dns_mismatch`.

use std::net::IpAddr;
use std::time::Duration;

use serde_json::{json, Value};

use crate::chain::HopOutput;
use crate::model::{Cause, Fact, HopKind, HopResult};
use crate::resolver::{DnsError, DnsResolver};

pub const HINT_NXDOMAIN: &str =
    "the name does not exist as this host's DNS sees it: check the spelling, \
the DNS suffix search list, and that the record exists in the zone served to this host (split DNS \
between zones is a common cause)";
pub const HINT_DNS_TIMEOUT: &str = concat!(
    "the DNS servers configured on this host (",
    crate::platform_hints::dns_config_cmd!(),
    ") did not answer: DNS (UDP and TCP 53) may be blocked from this zone, or the servers are down"
);
pub const HINT_DNS_ERROR: &str = "the DNS server is reachable but refuses or fails to answer this \
name for this host: REFUSED means it does not serve this host or zone (recursion or an ACL limited to \
other networks), SERVFAIL that it could not get the answer itself (its forwarders or the \
authoritative server are unreachable from it). Check the server's ACLs/forwarders for this zone, or \
which server this host is configured to use";
pub const HINT_MISMATCH: &str = "MSDTC identifies and calls back its partner by name: the reverse (PTR) \
record of each address must name the host, and that name must resolve back to the same address. Fix \
the PTR record in the reverse zone, or put both names in the hosts file on both sides";

/// What was learned about one address in the reverse direction.
#[derive(Debug, Clone, PartialEq)]
pub struct ReverseEvidence {
    pub addr: IpAddr,
    /// The PTR lookup result.
    pub ptr: Result<Vec<String>, DnsError>,
    /// For each PTR name, its forward lookup.
    pub back: Vec<(String, Result<Vec<IpAddr>, DnsError>)>,
}

/// The verdict on forward/reverse agreement.
#[derive(Debug, Clone, PartialEq)]
pub enum Agreement {
    Agrees,
    /// A PTR lookup timed out: the reverse zone could not be checked.
    Unknown(String),
    Mismatch(String),
}

/// Pure: whether a PTR name names the host that was asked for: equal ignoring case and the
/// trailing dot, or the same first label when one of them is a short name.
pub fn names_same_host(asked: &str, ptr: &str) -> bool {
    let asked = asked.trim_end_matches('.');
    let ptr = ptr.trim_end_matches('.');
    if asked.eq_ignore_ascii_case(ptr) {
        return true;
    }
    let first = |n: &str| n.split('.').next().unwrap_or("").to_ascii_lowercase();
    (!asked.contains('.') || !ptr.contains('.')) && first(asked) == first(ptr)
}

/// Pure: decides whether the reverse direction agrees with the forward one. Every address must
/// have a PTR name that resolves back to that same address and, when a name was asked for
/// (`asked`), one of its PTR names must be that name: a PTR naming another host is what makes
/// MSDTC call back the wrong machine.
pub fn judge_agreement(asked: Option<&str>, evidence: &[ReverseEvidence]) -> Agreement {
    let mut problems = Vec::new();
    let mut unknown = Vec::new();
    for ev in evidence {
        match &ev.ptr {
            Err(DnsError::Timeout(_) | DnsError::Other(_) | DnsError::ServerError { .. }) => {
                unknown.push(format!(
                    "PTR lookup for {} failed: {}",
                    ev.addr,
                    ev.ptr.as_ref().unwrap_err()
                ))
            }
            Err(_) => problems.push(format!("{} has no PTR record", ev.addr)),
            Ok(names) => {
                let other_host = asked
                    .filter(|asked| !names.iter().any(|n| names_same_host(asked, n)))
                    .map(|asked| format!(", another host than {asked}"))
                    .unwrap_or_default();
                let maps_back = ev
                    .back
                    .iter()
                    .any(|(_, r)| r.as_ref().map(|a| a.contains(&ev.addr)).unwrap_or(false));
                if !maps_back {
                    let seen: Vec<String> = ev
                        .back
                        .iter()
                        .map(|(n, r)| match r {
                            Ok(a) => format!("{n} -> {}", join_addrs(a)),
                            Err(e) => format!("{n} -> ({e})"),
                        })
                        .collect();
                    problems.push(format!(
                        "{} -> PTR {}{other_host} but {} (not back to {})",
                        ev.addr,
                        names.join(", "),
                        if seen.is_empty() {
                            "no forward lookup".into()
                        } else {
                            seen.join("; ")
                        },
                        ev.addr
                    ));
                } else if !other_host.is_empty() {
                    problems.push(format!(
                        "{} -> PTR {}{other_host}",
                        ev.addr,
                        names.join(", ")
                    ));
                }
            }
        }
    }
    if !problems.is_empty() {
        Agreement::Mismatch(problems.join("; "))
    } else if !unknown.is_empty() {
        Agreement::Unknown(unknown.join("; "))
    } else {
        Agreement::Agrees
    }
}

fn join_addrs(addrs: &[IpAddr]) -> String {
    addrs
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Pure: the hop result for a failed forward lookup.
pub fn forward_failure(host: &str, err: &DnsError) -> HopResult {
    match err {
        DnsError::NxDomain | DnsError::NoRecords(_) => HopResult::fail(
            HopKind::Resolve,
            Cause::DnsNxdomain,
            format!("{host}: {err}"),
        )
        .with_hint(HINT_NXDOMAIN),
        DnsError::ServerError { .. } => {
            HopResult::fail(HopKind::Resolve, Cause::DnsError, format!("{host}: {err}"))
                .with_hint(HINT_DNS_ERROR)
        }
        DnsError::Timeout(_) | DnsError::Other(_) => HopResult::fail(
            HopKind::Resolve,
            Cause::DnsTimeout,
            format!("{host}: {err}"),
        )
        .with_hint(HINT_DNS_TIMEOUT),
    }
}

/// Runs the hop. On success the value is the list of addresses to connect to.
pub async fn resolve(
    resolver: &DnsResolver,
    host: &str,
    check_reverse: bool,
    limit: Duration,
) -> HopOutput<Vec<IpAddr>> {
    let addrs = match host.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        // The lookups' futures on the heap: in this future's state (also for a literal
        // address, which needs none) they were copied with every check's future.
        Err(_) => match Box::pin(resolver.forward(host, limit)).await {
            Ok(a) => a,
            Err(e) => return HopOutput::stop(forward_failure(host, &e)),
        },
    };
    let literal = host.parse::<IpAddr>().is_ok();
    let forward_detail = if literal {
        format!("{host} is an address (no forward lookup)")
    } else {
        format!("{host} -> {}", join_addrs(&addrs))
    };

    if !check_reverse {
        // Typed (see `crate::hop_data`): every check has this hop.
        let listed: Vec<Fact> = addrs.iter().map(Fact::display).collect();
        let result =
            HopResult::pass(HopKind::Resolve, forward_detail).with_fact("addresses", listed);
        return HopOutput::ok(result, addrs);
    }
    let addr_list: Vec<Value> = addrs.iter().map(|a| json!(a.to_string())).collect();

    let mut evidence = Vec::with_capacity(addrs.len());
    let mut ptr_data = serde_json::Map::new();
    for addr in &addrs {
        let ptr = Box::pin(resolver.reverse(*addr, limit)).await;
        let mut back = Vec::new();
        if let Ok(names) = &ptr {
            for name in names {
                back.push((name.clone(), Box::pin(resolver.forward(name, limit)).await));
            }
            ptr_data.insert(addr.to_string(), json!(names));
        }
        evidence.push(ReverseEvidence {
            addr: *addr,
            ptr,
            back,
        });
    }

    let base = |r: HopResult| {
        r.with_data("addresses", addr_list.clone())
            .with_data("ptr", Value::Object(ptr_data.clone()))
    };
    let asked = (!literal).then_some(host);
    let server_error = evidence
        .iter()
        .any(|e| matches!(e.ptr, Err(DnsError::ServerError { .. })));
    let result = match judge_agreement(asked, &evidence) {
        Agreement::Agrees => base(HopResult::pass(
            HopKind::Resolve,
            format!(
                "{forward_detail}; reverse agrees ({})",
                ptr_summary(&evidence)
            ),
        )),
        Agreement::Unknown(why) => base(
            HopResult::warn(
                HopKind::Resolve,
                if server_error {
                    Cause::DnsError
                } else {
                    Cause::DnsTimeout
                },
                format!("{forward_detail}; reverse not checked: {why}"),
            )
            .with_hint(if server_error {
                HINT_DNS_ERROR
            } else {
                HINT_DNS_TIMEOUT
            }),
        ),
        Agreement::Mismatch(why) => base(
            HopResult::warn(
                HopKind::Resolve,
                Cause::DnsMismatch,
                format!("{forward_detail}; reverse disagrees: {why}"),
            )
            .with_hint(HINT_MISMATCH),
        ),
    };
    HopOutput::ok(result, addrs)
}

fn ptr_summary(evidence: &[ReverseEvidence]) -> String {
    evidence
        .iter()
        .map(|e| match &e.ptr {
            Ok(n) => format!("{} -> {}", e.addr, n.join(", ")),
            Err(err) => format!("{} -> {err}", e.addr),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn agreement_table() {
        let a = ip("198.18.0.10");
        let agrees = ReverseEvidence {
            addr: a,
            ptr: Ok(vec!["sql01".into()]),
            back: vec![("sql01".into(), Ok(vec![a]))],
        };
        let stale_ptr = ReverseEvidence {
            addr: a,
            ptr: Ok(vec!["web02".into()]),
            back: vec![("web02".into(), Ok(vec![ip("198.18.0.11")]))],
        };
        let no_ptr = ReverseEvidence {
            addr: a,
            ptr: Err(DnsError::NxDomain),
            back: vec![],
        };
        let ptr_timeout = ReverseEvidence {
            addr: a,
            ptr: Err(DnsError::Timeout(Duration::from_secs(1))),
            back: vec![],
        };
        let dangling = ReverseEvidence {
            addr: a,
            ptr: Ok(vec!["gone".into()]),
            back: vec![("gone".into(), Err(DnsError::NxDomain))],
        };

        assert_eq!(
            judge_agreement(None, std::slice::from_ref(&agrees)),
            Agreement::Agrees
        );
        assert!(
            matches!(judge_agreement(None, &[stale_ptr]), Agreement::Mismatch(m) if m.contains("web02") && m.contains("198.18.0.11"))
        );
        assert!(
            matches!(judge_agreement(None, &[no_ptr]), Agreement::Mismatch(m) if m.contains("no PTR"))
        );
        assert!(matches!(
            judge_agreement(None, std::slice::from_ref(&ptr_timeout)),
            Agreement::Unknown(_)
        ));
        assert!(matches!(
            judge_agreement(None, &[dangling]),
            Agreement::Mismatch(_)
        ));
        // A definite mismatch outweighs an address that could not be checked.
        let mixed = [
            ptr_timeout,
            ReverseEvidence {
                addr: ip("198.18.0.12"),
                ptr: Err(DnsError::NoRecords("PTR")),
                back: vec![],
            },
        ];
        assert!(matches!(
            judge_agreement(None, &mixed),
            Agreement::Mismatch(_)
        ));
    }

    #[test]
    fn a_ptr_naming_another_host_is_a_mismatch() {
        let a = ip("198.18.0.2");
        let other = ReverseEvidence {
            addr: a,
            ptr: Ok(vec!["web07.zone.test".into()]),
            back: vec![("web07.zone.test".into(), Ok(vec![a]))],
        };
        assert!(
            matches!(judge_agreement(Some("sql01.zone.test"), std::slice::from_ref(&other)), Agreement::Mismatch(m) if m.contains("another host"))
        );
        assert_eq!(
            judge_agreement(Some("web07"), std::slice::from_ref(&other)),
            Agreement::Agrees
        );
        assert!(names_same_host("SQL01.zone.test.", "sql01.zone.test"));
        assert!(names_same_host("sql01", "sql01.zone.test"));
        assert!(!names_same_host("sql01.a.test", "sql01.b.test"));
    }

    #[test]
    fn forward_failures_map_to_dns_causes() {
        assert_eq!(
            forward_failure(
                "x",
                &DnsError::ServerError {
                    code: "Refused".into(),
                    servers: "198.18.0.2".into()
                }
            )
            .cause,
            Some(Cause::DnsError)
        );
        assert_eq!(
            forward_failure("x", &DnsError::NxDomain).cause,
            Some(Cause::DnsNxdomain)
        );
        assert_eq!(
            forward_failure("x", &DnsError::NoRecords("A/AAAA")).cause,
            Some(Cause::DnsNxdomain)
        );
        assert_eq!(
            forward_failure("x", &DnsError::Timeout(Duration::from_secs(1))).cause,
            Some(Cause::DnsTimeout)
        );
    }
}
