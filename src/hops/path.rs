//! Hop `path` (a shared step, not a kind): after a connect timed out, where do the packets die?
//!
//! A timeout alone sends the sysadmin to "the firewall team", who may answer that their logs are
//! clean. This hop sends TCP SYNs to the same address and port with TTL 1, 2, 3 ... and reads
//! each socket's error queue (`IP_RECVERR`, unprivileged on Linux): every router that answers
//! ICMP time-exceeded is named, and the last one that answered is where the packets die ("at or
//! just after"). All TTLs are probed at once, each bounded by one hop timeout, so the hop takes
//! about one hop timeout (never more than two).
//!
//! On Windows the hop is `skip` with the reason (an ICMP echo trace with IcmpSendEcho2 is not
//! implemented yet). The interpretation ([`interpret`]) is pure and tested on its own.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde_json::json;

use crate::chain::{Chain, HopOutput, RunContext};
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
pub const HINT_NO_ROUTER: &str = "not even the first router answered: the packets die at the first \
device after this host (its gateway or a firewall right after it), or the routers on the way do not \
send ICMP time-exceeded (or it is filtered back to this zone). Check the local gateway's firewall \
first";
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

/// Pure: the hop result for the probes, index 0 being TTL 1.
pub fn interpret(target: SocketAddr, probes: &[Probe], reach: Reach) -> HopResult {
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
    match last {
        Some((ttl, ip)) => base(
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
        ),
        None if probes.iter().all(|p| *p == Probe::Failed) => base(HopResult::skip(
            HopKind::Path,
            "the trace probes could not be sent (see -v)",
        )),
        None if reach == Reach::OnLink => base(
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
        ),
        None => base(
            HopResult::fail(
                HopKind::Path,
                Cause::Timeout,
                format!(
                    "no router answered any TTL from 1 to {}: packets die before the first router",
                    probes.len()
                ),
            )
            .with_hint(HINT_NO_ROUTER),
        ),
    }
}

/// Runs the trace to `target`: every TTL at once, each bounded by `limit`.
pub async fn trace(target: SocketAddr, limit: Duration) -> HopOutput<()> {
    #[cfg(target_os = "linux")]
    {
        let probes =
            futures::future::join_all((1..=MAX_TTL).map(|ttl| linux::probe(target, ttl, limit)))
                .await;
        // A route lookup is one netlink round trip; an error just keeps the routed wording.
        let reach = match crate::hops::route::lookup(target.ip()) {
            Ok(info) if info.gateway.is_none() => Reach::OnLink,
            _ => Reach::Routed,
        };
        HopOutput::stop(interpret(target, &probes, reach))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = limit;
        HopOutput::stop(HopResult::skip(
            HopKind::Path,
            format!(
                "path trace to {target} is not implemented on this platform yet \
                 (Windows: IcmpSendEcho2 pending): where the packets die is not known"
            ),
        ))
    }
}

/// Runs hop `path` when the hop just recorded (`tcp` or `rpc_port`) timed out on some address,
/// unless `--no-trace`. Its place in the report: right after that hop.
pub async fn trace_after_timeout(chain: &mut Chain, ctx: &RunContext) {
    if !ctx.trace {
        return;
    }
    let Some(target) = chain.last().and_then(timed_out_address) else {
        return;
    };
    // Each probe is bounded by the hop timeout; the chain's bound adds its small grace.
    chain
        .step_with_timeout(
            HopKind::Path,
            ctx.hop_timeout,
            trace(target, ctx.hop_timeout),
        )
        .await;
}

/// Pure: the first address a failed connect hop timed out on, from its `attempts`.
pub fn timed_out_address(hop: &HopResult) -> Option<SocketAddr> {
    if hop.status != Status::Fail || hop.cause != Some(Cause::Timeout) {
        return None;
    }
    hop.data.get("attempts")?.as_array()?.iter().find_map(|a| {
        (a.get("cause")?.as_str()? == "timeout")
            .then(|| a.get("address")?.as_str()?.parse().ok())
            .flatten()
    })
}

#[cfg(target_os = "linux")]
mod linux {
    use std::net::SocketAddr;
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    use super::Probe;

    fn set_ttl(socket: &tokio::net::TcpSocket, v6: bool, ttl: u8) -> std::io::Result<()> {
        let value = libc::c_int::from(ttl);
        let (level, name) = if v6 {
            (libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS)
        } else {
            (libc::IPPROTO_IP, libc::IP_TTL)
        };
        // SAFETY: valid socket fd; the option value is a c_int.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                level,
                name,
                &value as *const _ as *const libc::c_void,
                std::mem::size_of_val(&value) as libc::socklen_t,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }

    /// One SYN with `ttl`, and what answered it.
    pub async fn probe(target: SocketAddr, ttl: u8, limit: Duration) -> Probe {
        let v6 = target.is_ipv6();
        let socket = match if v6 {
            tokio::net::TcpSocket::new_v6()
        } else {
            tokio::net::TcpSocket::new_v4()
        } {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!("path probe socket: {e}");
                return Probe::Failed;
            }
        };
        if let Err(e) = set_ttl(&socket, v6, ttl) {
            tracing::debug!("path probe TTL {ttl}: {e}");
            return Probe::Failed;
        }
        let Some(errqueue) = crate::hops::errqueue::enable(&socket, v6) else {
            return Probe::Failed;
        };
        match tokio::time::timeout(limit, socket.connect(target)).await {
            Ok(Ok(_)) => Probe::Reached,
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => Probe::Reached,
            Ok(Err(e)) => match crate::hops::errqueue::read_queued(&errqueue, v6) {
                // v4 type 11 / v6 type 3: time exceeded in transit.
                Some(icmp) if matches!((icmp.v6, icmp.icmp_type), (false, 11) | (true, 3)) => {
                    icmp.offender.map(Probe::Router).unwrap_or(Probe::Silent)
                }
                Some(icmp) => icmp.offender.map(Probe::Rejected).unwrap_or(Probe::Silent),
                None => {
                    tracing::debug!("path probe TTL {ttl}: {e}");
                    Probe::Failed
                }
            },
            Err(_) => Probe::Silent,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
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
        let r = interpret(target, &probes, Reach::Routed);
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
        let r = interpret(target, &[Probe::Silent, Probe::Silent], Reach::OnLink);
        assert_eq!((r.status, r.cause), (Status::Fail, Some(Cause::Timeout)));
        assert!(r.detail.contains("directly connected"), "{}", r.detail);
        assert!(!r.detail.contains("first router"), "{}", r.detail);
        assert_eq!(r.data["on_link"], true);
        assert_eq!(r.hint.as_deref(), Some(HINT_ON_LINK_SILENT));
    }

    #[test]
    fn no_router_reached_and_rejected() {
        let target: SocketAddr = "198.18.3.2:1433".parse().unwrap();
        let r = interpret(target, &[Probe::Silent, Probe::Silent], Reach::Routed);
        assert!(r.detail.contains("before the first router"), "{}", r.detail);
        assert!(!r.data.contains_key("last_responder"));
        let r = interpret(
            target,
            &[Probe::Router(ip("198.18.0.254")), Probe::Reached],
            Reach::Routed,
        );
        assert_eq!(r.status, Status::Warn);
        let r = interpret(
            target,
            &[Probe::Rejected(ip("198.18.0.254")), Probe::Silent],
            Reach::Routed,
        );
        assert_eq!(r.cause, Some(Cause::Prohibited));
        let r = interpret(target, &[Probe::Failed, Probe::Failed], Reach::Routed);
        assert_eq!(r.status, Status::Skip);
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
