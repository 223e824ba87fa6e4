//! Hop `path` (a shared step, not a kind): after a connect timed out, where do the packets die?
//!
//! A timeout alone sends the sysadmin to "the firewall team", who may answer that their logs are
//! clean. This hop sends TCP SYNs to the same address and port with TTL 1, 2, 3 ... and reads
//! each socket's error queue (`IP_RECVERR`, unprivileged on Linux): every router that answers
//! ICMP time-exceeded is named, and the last one that answered is where the packets die ("at or
//! just after"). All TTLs are probed at once, each bounded by one hop timeout.
//!
//! Routers ration the ICMP errors they send to one host, so a trace is a shared, paced resource
//! of the run ([`book`]): one per destination address, serving every dropped port of it, and no
//! more traces through one router than its budget allows. Silence is read in that light
//! ([`interpret`]): "no router answered" only within the budget and from a first router that
//! answered no trace of the run; otherwise the hop says it could not tell.
//!
//! On Windows, where Winsock has no error queue for TCP, the trace is an ICMP echo with the same
//! TTL steps through `IcmpSendEcho2` (unprivileged); `data.method` says which trace ran
//! ([`probe`]). The interpretation is pure and tested on its own.

pub mod book;
mod probe;

use std::net::{IpAddr, SocketAddr};

use serde_json::json;

use crate::model::{Cause, HopKind, HopResult, Status};

/// TTLs probed: 1 to this. Zone-to-zone paths inside a datacenter are a handful of hops.
pub const MAX_TTL: u8 = 12;

/// What came back for one TTL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// ICMP time exceeded from this router.
    Router(IpAddr),
    /// The target answered (SYN-ACK or reset): this TTL reached it.
    Reached,
    /// The target answered an ICMP echo (the Windows trace): the route works, which says nothing
    /// about the TCP port.
    EchoReplied,
    /// An ICMP destination unreachable from this device (a reject on the way).
    Rejected(IpAddr),
    /// Nothing before the deadline.
    Silent,
    /// The probe could not be sent (local error).
    Failed,
}

pub const HINT_DIES_AFTER: &str = "the SYN passes every device up to the last one that answered, \
then nothing comes back: the next device drops it. That is the firewall (or the target's own host \
firewall) to look at: check its rules and DROP logs for this port, in this direction";
pub const HINT_NO_ROUTER: &str = "not even the first router answered, and it answered no other \
trace of this run either: the packets die at the first device after this host (its gateway or a \
firewall right after it), or the routers on the way do not send ICMP time-exceeded (or it is \
filtered back to this zone). Check the local gateway's firewall first";
pub const HINT_RATE_LIMITED: &str = "routers send only a few ICMP errors per second to one host \
(Linux: a burst of 6, then 1 per second; Cisco and Juniper similar), and this run's other traces \
used them up: the silence says nothing about where the packets die. The connect's timeout stands: \
run this check alone (`dtcprobe check --only NAME`) to trace it";
pub const HINT_NOT_TRACED: &str = "the connect's timeout stands; where the packets die was not \
traced, to keep within what the routers allow in ICMP errors (the traces that did go out are \
on other hops of this run). Run this check alone (`dtcprobe check --only NAME`), or with fewer \
dropped hosts at once, to trace it";
pub const HINT_OTHER_PORT_REACHES: &str = "a SYN to another port of the same host gets through to \
it, so the route and the host are fine: the SYN to this port is dropped by a rule for this port, \
on the target's own firewall (Windows Firewall: `Get-NetFirewallRule -Direction Inbound -Enabled \
True | Get-NetFirewallPortFilter`) or on a firewall in front of it. Check both for this port and \
direction";
pub const HINT_PORT_FILTERED: &str = "ICMP echo gets through to the target, so the route and the \
host are fine: the TCP SYN to this port is dropped by a rule for this port, on the target's own \
firewall (Windows Firewall: `Get-NetFirewallRule -Direction Inbound -Enabled True | \
Get-NetFirewallPortFilter`) or on a firewall in front of it. Check both for this port and \
direction";
pub const HINT_ON_LINK_SILENT: &str = "no router stands between this host and the target, so \
the SYN reached the target's own network and nothing answered: the target's host firewall \
(Windows Firewall, nftables/iptables) drops this port, or no host holds that address right now \
(compare `ip neigh show ADDRESS` / `Get-NetNeighbor` with the target's MAC, and check for an \
address conflict)";

/// How the kernel reaches the target, from a route lookup made for the trace: this decides how
/// "nobody answered" reads. With no router in between, "before the first router" would send the
/// sysadmin to a gateway the packets never cross.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Through a gateway (or not known).
    Routed,
    /// On a directly connected network: TTL 1 already reaches the target.
    OnLink,
}

/// What [`interpret`] reads: one trace, and what the run knows besides.
pub struct View<'a> {
    /// The check's own target (its port may differ from the traced one).
    pub target: SocketAddr,
    /// The port the trace's SYNs went to.
    pub traced_port: u16,
    /// What came back, index 0 being TTL 1.
    pub probes: &'a [Probe],
    pub reach: Reach,
    /// The first router (the route's gateway), when known.
    pub gateway: Option<IpAddr>,
    /// For each TTL, a router that answered it on some trace of this run through the same
    /// first router (from [`book::TraceBook::answered_through`]).
    pub answered_elsewhere: &'a [Option<IpAddr>],
}

/// Pure: the hop result for one trace.
pub fn interpret(view: &View<'_>) -> HopResult {
    let View { target, probes, .. } = *view;
    let routers: Vec<serde_json::Value> = probes
        .iter()
        .enumerate()
        .filter_map(|(i, p)| match p {
            Probe::Router(ip) | Probe::Rejected(ip) => Some(json!({
                "ttl": i + 1,
                "address": ip.to_string(),
            })),
            _ => None,
        })
        .collect();
    let reached = probes.iter().position(|p| *p == Probe::Reached);
    let echoed = probes.iter().position(|p| *p == Probe::EchoReplied);
    let rejected = probes.iter().enumerate().find_map(|(i, p)| match p {
        Probe::Rejected(ip) => Some((i + 1, *ip)),
        _ => None,
    });
    let last = probes
        .iter()
        .enumerate()
        .filter_map(|(i, p)| match p {
            Probe::Router(ip) => Some((i + 1, *ip)),
            _ => None,
        })
        .next_back();
    let base = |r: HopResult| {
        let r = r
            .with_data("target", target.to_string())
            .with_data("max_ttl", probes.len())
            .with_data("routers", routers.clone());
        match last {
            Some((ttl, ip)) => r
                .with_data("last_responder", ip.to_string())
                .with_data("last_ttl", ttl),
            None => r,
        }
    };
    if let Some(i) = reached {
        if view.traced_port != target.port() {
            // The trace went to another dropped-looking port of this host, and that one got
            // through: the route is fine, this port is filtered.
            return base(
                HopResult::fail(
                    HopKind::Path,
                    Cause::Timeout,
                    format!(
                        "a SYN to port {} reaches {} at hop {} while the SYN to port {} gets no \
                         answer: the port is dropped by a filter for it, at the target or just in \
                         front of it",
                        view.traced_port,
                        target.ip(),
                        i + 1,
                        target.port()
                    ),
                )
                .with_data("reached_ttl", i + 1)
                .with_hint(HINT_OTHER_PORT_REACHES),
            );
        }
        return base(
            HopResult::new(
                HopKind::Path,
                Status::Warn,
                format!(
                    "the trace reached {target} at hop {} this time: the timeout before was \
                     intermittent (overload, a rate limit, or a stateful device that drops only \
                     some connections)",
                    i + 1
                ),
            )
            .with_cause(Cause::Timeout)
            .with_hint("run the check again; compare with the firewall's connection logs"),
        );
    }
    if let Some(i) = echoed {
        return base(
            HopResult::fail(
                HopKind::Path,
                Cause::Timeout,
                format!(
                    "ICMP echo reaches {} at hop {} while the SYN to port {} gets no answer: \
                     the port is dropped by a filter for it, at the target or just in front of it",
                    target.ip(),
                    i + 1,
                    target.port()
                ),
            )
            .with_data("echo_ttl", i + 1)
            .with_hint(HINT_PORT_FILTERED),
        );
    }
    if let Some((ttl, ip)) = rejected {
        return base(
            HopResult::fail(
                HopKind::Path,
                Cause::Prohibited,
                format!("a SYN with TTL {ttl} was rejected by {ip} (ICMP destination unreachable)"),
            )
            .with_hint(crate::classify::HINT_PROHIBITED),
        );
    }
    if let Some((ttl, ip)) = last {
        return base(
            HopResult::fail(
                HopKind::Path,
                Cause::Timeout,
                format!(
                    "packets die at or just after {ip} (hop {ttl}); {} of {} hops answered",
                    routers.len(),
                    probes.len()
                ),
            )
            .with_hint(HINT_DIES_AFTER),
        );
    }
    if probes.iter().all(|p| *p == Probe::Failed) {
        return base(HopResult::skip(
            HopKind::Path,
            "the trace probes could not be sent (see -v)",
        ));
    }
    if view.reach == Reach::OnLink {
        return base(
            HopResult::fail(
                HopKind::Path,
                Cause::Timeout,
                format!(
                    "{} is on a directly connected network (no router between) and did not \
                     answer any of {} SYNs: it is dropped at the target itself",
                    target.ip(),
                    probes.len()
                ),
            )
            .with_data("on_link", true)
            .with_hint(HINT_ON_LINK_SILENT),
        );
    }
    // Nobody answered. Silence reads as "the first router is silent" only when that router
    // answered no trace of the run: if it answered another, this silence is its ICMP budget.
    let first = view.gateway.map(|g| format!(" ({g})")).unwrap_or_default();
    if let Some(router) = view.answered_elsewhere.first().copied().flatten() {
        return base(
            HopResult::fail(
                HopKind::Path,
                Cause::Timeout,
                format!(
                    "could not tell where the packets die: no router answered this trace, while \
                     the first router{first} answered TTL 1 from {router} on another trace of \
                     this run (its ICMP rate limit, not a drop)"
                ),
            )
            .with_data("rate_limited", true)
            .with_hint(HINT_RATE_LIMITED),
        );
    }
    base(
        HopResult::fail(
            HopKind::Path,
            Cause::Timeout,
            format!(
                "no router answered any TTL from 1 to {}, and the first router{first} answered no \
                 other trace of this run: packets die at the first device after this host, or it \
                 sends no time-exceeded",
                probes.len()
            ),
        )
        .with_hint(HINT_NO_ROUTER),
    )
}

/// Pure: the first address a failed connect hop timed out on, from its `attempts`.
pub fn timed_out_address(hop: &HopResult) -> Option<SocketAddr> {
    if hop.status != Status::Fail || hop.cause != Some(Cause::Timeout) {
        return None;
    }
    hop.data.datum("attempts")?.items()?.find_map(|a| {
        (a.get("cause")?.as_str()? == "timeout")
            .then(|| a.get("address")?.as_str()?.parse().ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// A trace of the check's own port, through gateway 198.18.0.254, alone in its run.
    fn read(target: SocketAddr, probes: &[Probe], reach: Reach) -> HopResult {
        interpret(&View {
            target,
            traced_port: target.port(),
            probes,
            reach,
            gateway: Some(ip("198.18.0.254")),
            answered_elsewhere: &[None; MAX_TTL as usize],
        })
    }

    #[test]
    fn names_the_last_router_that_answered() {
        let target: SocketAddr = "198.18.3.2:1433".parse().unwrap();
        let probes = [
            Probe::Router(ip("198.18.0.254")),
            Probe::Router(ip("198.18.5.1")),
            Probe::Silent,
            Probe::Silent,
        ];
        let r = read(target, &probes, Reach::Routed);
        assert_eq!((r.status, r.cause), (Status::Fail, Some(Cause::Timeout)));
        assert!(
            r.detail.contains("at or just after 198.18.5.1 (hop 2)"),
            "{}",
            r.detail
        );
        assert_eq!(r.data["last_responder"], "198.18.5.1");
        assert_eq!(r.data["last_ttl"], 2);
        assert_eq!(r.data["routers"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn silence_on_a_directly_connected_network_names_the_target_not_a_router() {
        let target: SocketAddr = "198.18.3.2:1433".parse().unwrap();
        let r = read(target, &[Probe::Silent, Probe::Silent], Reach::OnLink);
        assert_eq!((r.status, r.cause), (Status::Fail, Some(Cause::Timeout)));
        assert!(r.detail.contains("directly connected"), "{}", r.detail);
        assert!(!r.detail.contains("first router"), "{}", r.detail);
        assert_eq!(r.data["on_link"], true);
        assert_eq!(r.hint.as_deref(), Some(HINT_ON_LINK_SILENT));
    }

    #[test]
    fn an_echo_that_reaches_the_target_blames_a_port_filter_not_the_route() {
        let target: SocketAddr = "198.18.3.2:1433".parse().unwrap();
        let probes = [
            Probe::Router(ip("198.18.0.254")),
            Probe::EchoReplied,
            Probe::EchoReplied,
        ];
        let r = read(target, &probes, Reach::Routed);
        assert_eq!((r.status, r.cause), (Status::Fail, Some(Cause::Timeout)));
        assert!(
            r.detail.contains("ICMP echo reaches 198.18.3.2 at hop 2") && r.detail.contains("1433"),
            "{}",
            r.detail
        );
        assert_eq!(r.data["echo_ttl"], 2);
        assert_eq!(r.data["last_responder"], "198.18.0.254");
        assert_eq!(r.hint.as_deref(), Some(HINT_PORT_FILTERED));
    }

    #[test]
    fn no_router_reached_and_rejected() {
        let target: SocketAddr = "198.18.3.2:1433".parse().unwrap();
        let r = read(target, &[Probe::Silent, Probe::Silent], Reach::Routed);
        assert!(
            r.detail.contains("no router answered any TTL from 1 to 2")
                && r.detail
                    .contains("first router (198.18.0.254) answered no other trace"),
            "{}",
            r.detail
        );
        assert_eq!(r.hint.as_deref(), Some(HINT_NO_ROUTER));
        assert!(!r.data.contains_key("last_responder"));
        assert!(!r.data.contains_key("rate_limited"));
        let r = read(
            target,
            &[Probe::Router(ip("198.18.0.254")), Probe::Reached],
            Reach::Routed,
        );
        assert_eq!(r.status, Status::Warn);
        let r = read(
            target,
            &[Probe::Rejected(ip("198.18.0.254")), Probe::Silent],
            Reach::Routed,
        );
        assert_eq!(r.cause, Some(Cause::Prohibited));
        let r = read(target, &[Probe::Failed, Probe::Failed], Reach::Routed);
        assert_eq!(r.status, Status::Skip);
    }

    #[test]
    fn silence_from_a_first_router_that_answered_another_trace_is_its_rate_limit() {
        let target: SocketAddr = "198.18.3.2:1433".parse().unwrap();
        let mut elsewhere = [None; MAX_TTL as usize];
        elsewhere[0] = Some(ip("198.18.0.254"));
        elsewhere[1] = Some(ip("198.18.1.2"));
        let silent = [Probe::Silent; 4];
        let r = interpret(&View {
            target,
            traced_port: 1433,
            probes: &silent,
            reach: Reach::Routed,
            gateway: Some(ip("198.18.0.254")),
            answered_elsewhere: &elsewhere,
        });
        assert_eq!((r.status, r.cause), (Status::Fail, Some(Cause::Timeout)));
        assert!(r.detail.starts_with("could not tell"), "{}", r.detail);
        assert!(!r.detail.contains("die at"), "{}", r.detail);
        assert_eq!(r.data["rate_limited"], true);
        assert_eq!(r.hint.as_deref(), Some(HINT_RATE_LIMITED));
        // A router that did answer this trace still names where the packets die: what other
        // traces saw deeper does not override it (their paths may branch after it).
        let answered = [
            Probe::Router(ip("198.18.0.254")),
            Probe::Silent,
            Probe::Silent,
        ];
        let r = interpret(&View {
            target,
            traced_port: 1433,
            probes: &answered,
            reach: Reach::Routed,
            gateway: Some(ip("198.18.0.254")),
            answered_elsewhere: &elsewhere,
        });
        assert!(
            r.detail.contains("at or just after 198.18.0.254 (hop 1)"),
            "{}",
            r.detail
        );
        assert!(!r.data.contains_key("rate_limited"));
    }

    #[test]
    fn a_shared_trace_that_reached_another_port_blames_this_ports_filter() {
        let target: SocketAddr = "198.18.3.2:1434".parse().unwrap();
        let probes = [
            Probe::Router(ip("198.18.0.254")),
            Probe::Router(ip("198.18.1.2")),
            Probe::Reached,
        ];
        let view = |traced_port| View {
            target,
            traced_port,
            probes: &probes,
            reach: Reach::Routed,
            gateway: None,
            answered_elsewhere: &[],
        };
        let r = interpret(&view(1433));
        assert_eq!((r.status, r.cause), (Status::Fail, Some(Cause::Timeout)));
        assert!(
            r.detail
                .contains("a SYN to port 1433 reaches 198.18.3.2 at hop 3")
                && r.detail.contains("port 1434 gets no answer"),
            "{}",
            r.detail
        );
        assert_eq!(r.data["reached_ttl"], 3);
        assert_eq!(r.hint.as_deref(), Some(HINT_OTHER_PORT_REACHES));
        // Its own port reached: the timeout was intermittent.
        assert_eq!(interpret(&view(1434)).status, Status::Warn);
    }

    #[test]
    fn finds_the_timed_out_address() {
        let hop = HopResult::fail(HopKind::RpcPort, Cause::Timeout, "x").with_data(
            "attempts",
            json!([
                {"address": "198.18.3.2:49664", "cause": "refused"},
                {"address": "198.18.3.2:49665", "cause": "timeout"},
            ]),
        );
        assert_eq!(
            timed_out_address(&hop),
            Some("198.18.3.2:49665".parse().unwrap())
        );
        let refused = HopResult::fail(HopKind::Tcp, Cause::Refused, "x");
        assert_eq!(timed_out_address(&refused), None);
    }
}
