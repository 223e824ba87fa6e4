//! Who sent the TCP reset (a shared step of the connect hops `tcp` and `rpc_port`, not a kind).
//!
//! Many firewalls answer a blocked SYN with a forged reset (Palo Alto and Cisco ASA "reset"
//! actions, nftables/iptables `reject with tcp reset`). It carries the target's address, so the
//! OS reports "connection refused" exactly as for a closed port, and the sysadmin goes to check a
//! healthy server. What tells them apart is the reset's IP TTL: a device on the path sends it
//! from nearer than the target, so it arrives having crossed fewer routers than the target's own
//! packets (what Microsoft's SQL Network Analyzer looks at).
//!
//! After a refused connect to a non-loopback IPv4 address, [`ResetProbe::origin`] connects to the
//! same port once more from a local port it knows, reads that reset's TTL from a raw socket, and
//! compares it with the target's own TTL (a SYN-ACK from a port of that host which connected
//! earlier in the run, else an ICMP echo reply). The comparison ([`judge`]) is pure: each TTL is
//! read as "initial value minus routers crossed", the initial value being the next of 32, 64,
//! 128 and 255 at or above it. Raw sockets need root or CAP_NET_RAW (Linux); without them, on
//! Windows, for IPv6, or when the target's TTL cannot be read, the reset stays `refused` and the
//! detail says its origin was not checked and why: never a guess.

pub mod judge;
pub mod packet;

#[cfg(target_os = "linux")]
mod linux;

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::classify::Verdict;
use crate::model::{Cause, Fact};

pub use judge::{hops_crossed, initial_ttl, judge, Judgement, ResetOrigin, TtlSource};

pub const HINT_RESET_BY_PATH: &str = "the TCP reset did not come from the target: it arrived \
having crossed fewer routers than the target's own packets, so a device between the zones sent it \
in the target's name and the SYN never reached the server. Firewalls do this to reject a port: \
Palo Alto and Cisco ASA \"reset\" actions (reset-client, reset-both), nftables/iptables `reject \
with tcp reset`. Checking the service will not help: look in the deny logs of the device that \
many routers before the target (the detail says how many; `traceroute -T -p <port> <target>` \
lists the routers in between) for this port, in this direction, and ask for it to be opened";

pub const HINT_REFUSED_BY_TARGET: &str = concat!(
    "the reset came from the target itself (its TTL matches the target's own packets): the host \
is up and nothing listens on that port (service stopped, wrong port or named instance), or the \
target's own host firewall rejects it with a reset. Check the service on the server: ",
    crate::platform_hints::listeners_cmd!()
);

pub const HINT_REFUSED_LOOPBACK: &str = concat!(
    "the reset came from this host's own stack (a loopback address: no device in between): \
nothing listens on that port here (service stopped, wrong port or named instance), or this host's \
own firewall rejects it with a reset. Check the service: ",
    crate::platform_hints::listeners_cmd!()
);

/// The verdict of a refused connect to a loopback address: this host's own stack answered.
pub fn this_host_verdict() -> Verdict {
    Verdict::new(
        Cause::Refused,
        "refused: TCP reset received from this host (a loopback address)",
        HINT_REFUSED_LOOPBACK,
    )
}

/// Pure: the verdict of a refused attempt, given where its reset came from. `base` is what the
/// OS error alone said (its hint already says a firewall can forge a reset).
pub fn verdict(base: Verdict, origin: &ResetOrigin) -> Verdict {
    match origin {
        ResetOrigin::ThisHost => this_host_verdict(),
        ResetOrigin::Compared {
            reset_ttl,
            target_ttl,
            target_ttl_from,
            judgement,
        } => {
            let ttls = format!(
                "the reset arrived with TTL {reset_ttl} ({} routers from an initial {}), the \
                 target's {} with TTL {target_ttl} ({} routers from an initial {})",
                hops_crossed(*reset_ttl),
                initial_ttl(*reset_ttl),
                match target_ttl_from {
                    TtlSource::SynAck => "SYN-ACK",
                    TtlSource::IcmpEcho => "echo reply",
                },
                hops_crossed(*target_ttl),
                initial_ttl(*target_ttl),
            );
            match judgement {
                Judgement::Path { hops_before_target } => Verdict::new(
                    Cause::ResetByPath,
                    format!(
                        "TCP reset sent by a device on the path, {hops_before_target} router(s) \
                         before the target: {ttls}"
                    ),
                    HINT_RESET_BY_PATH,
                ),
                Judgement::Target => Verdict::new(
                    Cause::Refused,
                    format!("refused: TCP reset received from the target itself: {ttls}"),
                    HINT_REFUSED_BY_TARGET,
                ),
                Judgement::FartherThanTarget => Verdict {
                    detail: format!(
                        "{}; where the reset came from is unclear: {ttls}, so it crossed more \
                         routers than the target's packets (asymmetric routing?)",
                        base.detail
                    ),
                    ..base
                },
                Judgement::OtherInitialTtl => Verdict {
                    detail: format!(
                        "{}; where the reset came from is unclear: {ttls}: the same distance but \
                         another initial TTL (a second device beside the target, or a stack \
                         whose TCP and ICMP TTLs differ)",
                        base.detail
                    ),
                    ..base
                },
            }
        }
        ResetOrigin::NotChecked { why, .. } => Verdict {
            detail: format!(
                "{}; where the reset came from was not checked: {why}",
                base.detail
            ),
            ..base
        },
    }
}

/// The `data` keys an origin adds (on the hop, and on each attempt): `reset_origin` (`target`,
/// `path`, `unclear`, `not_checked`), `reset_ttl`, `target_ttl`, `target_ttl_from`,
/// `reset_hops_before_target`, each when known. None for a loopback target (the detail says
/// "from this host"): a run of many refused loopback ports builds nothing more.
pub fn data(origin: &ResetOrigin) -> Map<String, Value> {
    facts(origin)
        .into_iter()
        .map(|(key, value)| (key.to_string(), value.to_value()))
        .collect()
}

/// [`data`] in the typed form hop results keep (see [`crate::hop_data`]), in the same order.
pub fn facts(origin: &ResetOrigin) -> Vec<(&'static str, Fact)> {
    let mut data = Vec::new();
    let (name, reset_ttl) = match origin {
        ResetOrigin::ThisHost => return data,
        ResetOrigin::NotChecked { reset_ttl, .. } => ("not_checked", *reset_ttl),
        ResetOrigin::Compared {
            reset_ttl,
            target_ttl,
            target_ttl_from,
            judgement,
        } => {
            data.push(("target_ttl", Fact::from(*target_ttl)));
            data.push(("target_ttl_from", Fact::Static(target_ttl_from.as_str())));
            let name = match judgement {
                Judgement::Target => "target",
                Judgement::Path { hops_before_target } => {
                    data.push(("reset_hops_before_target", Fact::from(*hops_before_target)));
                    "path"
                }
                Judgement::FartherThanTarget | Judgement::OtherInitialTtl => "unclear",
            };
            (name, Some(*reset_ttl))
        }
    };
    data.push(("reset_origin", Fact::Static(name)));
    if let Some(ttl) = reset_ttl {
        data.push(("reset_ttl", Fact::from(ttl)));
    }
    data
}

/// The watch for the segment that answers one connect (see [`ResetProbe::expect_answer`]).
pub struct Answer {
    #[cfg(target_os = "linux")]
    inner: linux::Answer,
}

/// The run's reset-origin state, shared by every check of a run through
/// [`crate::chain::RunContext`]: a raw socket opened on the first refused connect that needs it
/// (never for a run without one), the target TTLs already read, and the ports seen open.
#[derive(Default)]
pub struct ResetProbe {
    #[cfg(target_os = "linux")]
    linux: linux::Probe,
}

impl ResetProbe {
    /// Notes a port that connected: its host's SYN-ACK can later give that host's own TTL
    /// (no effect on loopback, IPv6 or outside Linux).
    pub fn saw_open(&self, addr: SocketAddr) {
        #[cfg(target_os = "linux")]
        if let SocketAddr::V4(v4) = addr {
            if !v4.ip().is_loopback() {
                self.linux.saw_open(v4);
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = addr;
    }

    /// Before a connect to `target` whose refusal would have its origin read (IPv4, not
    /// loopback, Linux): binds `socket`'s local port and watches for the segment that answers
    /// it, so that a refusal's own reset gives the TTL and the port is not connected a second
    /// time (1,000 ports behind a router: the second connects of the refused third were about
    /// 20 ms of the run). `None` where that cannot be done; [`ResetProbe::origin`] then connects
    /// again, as it always did.
    pub fn expect_answer(
        &self,
        socket: &tokio::net::TcpSocket,
        target: SocketAddr,
    ) -> Option<Answer> {
        #[cfg(target_os = "linux")]
        if let SocketAddr::V4(v4) = target {
            if !v4.ip().is_loopback() {
                return self
                    .linux
                    .expect_answer(socket, v4)
                    .map(|inner| Answer { inner });
            }
        }
        let _ = (socket, target);
        None
    }

    /// Where the reset that refused a connect to `target` came from, bounded by `budget`.
    /// `answer`: what [`ResetProbe::expect_answer`] set up for that connect, if anything.
    pub async fn origin(
        &self,
        target: SocketAddr,
        budget: Duration,
        answer: Option<Answer>,
    ) -> ResetOrigin {
        if target.ip().is_loopback() {
            return ResetOrigin::ThisHost;
        }
        let SocketAddr::V4(v4) = target else {
            return ResetOrigin::NotChecked {
                reset_ttl: None,
                why: "an IPv6 target (the reset's origin is read for IPv4 only)".into(),
            };
        };
        #[cfg(target_os = "linux")]
        {
            self.linux.origin(v4, budget, answer.map(|a| a.inner)).await
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = (v4, budget, answer);
            ResetOrigin::NotChecked {
                reset_ttl: None,
                why: "this platform offers no raw TCP socket to read the reset's TTL, so a \
                      firewall on the path may have forged it"
                    .into(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_ttl_is_the_next_common_value() {
        let rows = [
            (1, 32),
            (32, 32),
            (33, 64),
            (62, 64),
            (64, 64),
            (65, 128),
            (126, 128),
            (128, 128),
            (129, 255),
            (254, 255),
            (255, 255),
        ];
        for (observed, initial) in rows {
            assert_eq!(initial_ttl(observed), initial, "{observed}");
        }
        assert_eq!(hops_crossed(62), 2);
        assert_eq!(hops_crossed(255), 0);
    }

    #[test]
    fn judges_by_routers_crossed() {
        // (reset TTL, target TTL, judgement), as the namespaces test sees them and beyond.
        let rows = [
            // A router right in front of this host forges it (nftables, initial 64); the target
            // (Linux) is two routers away.
            (
                64,
                62,
                Judgement::Path {
                    hops_before_target: 2,
                },
            ),
            // The second router forges it.
            (
                63,
                62,
                Judgement::Path {
                    hops_before_target: 1,
                },
            ),
            // The target's own reset.
            (62, 62, Judgement::Target),
            // A Windows target: 128 for both.
            (125, 125, Judgement::Target),
            // A Windows target three routers away behind a Linux-based firewall next to this
            // host (initial 64), or behind network gear one router away (initial 255).
            (
                64,
                125,
                Judgement::Path {
                    hops_before_target: 3,
                },
            ),
            (
                254,
                125,
                Judgement::Path {
                    hops_before_target: 2,
                },
            ),
            // Farther than the target: never blamed on the path.
            (61, 62, Judgement::FartherThanTarget),
            // Same distance, another stack (ICMP 255 and TCP 64 on one host, say): unclear.
            (62, 253, Judgement::OtherInitialTtl),
        ];
        for (reset, target, judgement) in rows {
            assert_eq!(
                judge(reset, target),
                judgement,
                "reset {reset}, target {target}"
            );
        }
    }

    fn base() -> Verdict {
        Verdict::new(
            Cause::Refused,
            "refused: TCP reset received",
            crate::classify::HINT_REFUSED,
        )
    }

    #[test]
    fn verdicts_and_data() {
        let compared = |reset_ttl, target_ttl| ResetOrigin::Compared {
            reset_ttl,
            target_ttl,
            target_ttl_from: TtlSource::IcmpEcho,
            judgement: judge(reset_ttl, target_ttl),
        };
        let path = compared(64, 62);
        let v = verdict(base(), &path);
        assert_eq!(v.cause, Cause::ResetByPath);
        assert!(
            v.detail.contains("2 router(s) before the target"),
            "{}",
            v.detail
        );
        assert!(
            v.detail.contains("TTL 64") && v.detail.contains("TTL 62"),
            "{}",
            v.detail
        );
        assert!(v.hint.contains("Palo Alto") && v.hint.contains("reject with tcp reset"));
        let d = data(&path);
        assert_eq!(d["reset_origin"], "path");
        assert_eq!(d["reset_ttl"], 64);
        assert_eq!(d["target_ttl"], 62);
        assert_eq!(d["target_ttl_from"], "icmp_echo");
        assert_eq!(d["reset_hops_before_target"], 2);

        let own = compared(62, 62);
        let v = verdict(base(), &own);
        assert_eq!(
            (v.cause, v.hint.as_ref()),
            (Cause::Refused, HINT_REFUSED_BY_TARGET)
        );
        assert!(v.detail.contains("from the target itself"), "{}", v.detail);
        assert_eq!(data(&own)["reset_origin"], "target");
        assert!(!data(&own).contains_key("reset_hops_before_target"));

        let unclear = verdict(base(), &compared(61, 62));
        assert_eq!(unclear.cause, Cause::Refused);
        assert!(unclear.detail.contains("unclear"), "{}", unclear.detail);
        assert_eq!(data(&compared(61, 62))["reset_origin"], "unclear");

        let unchecked = ResetOrigin::NotChecked {
            reset_ttl: Some(64),
            why: "no TTL of the target".into(),
        };
        let v = verdict(base(), &unchecked);
        assert_eq!((v.cause, v.hint), (Cause::Refused, base().hint));
        assert!(
            v.detail.ends_with("was not checked: no TTL of the target"),
            "{}",
            v.detail
        );
        assert_eq!(data(&unchecked)["reset_ttl"], 64);
        assert!(!data(&unchecked).contains_key("target_ttl"));
    }

    #[test]
    fn the_unchecked_refused_hint_does_not_claim_nothing_listens() {
        let hint = crate::classify::HINT_REFUSED;
        assert!(!hint.contains("so nothing listens"), "{hint}");
        assert!(hint.contains("forge"), "{hint}");
    }

    #[tokio::test]
    async fn loopback_and_ipv6_are_not_probed() {
        let probe = ResetProbe::default();
        let limit = Duration::from_millis(100);
        assert_eq!(
            probe
                .origin("127.0.0.1:9".parse().unwrap(), limit, None)
                .await,
            ResetOrigin::ThisHost
        );
        let v6 = probe
            .origin("[2001:db8::1]:1433".parse().unwrap(), limit, None)
            .await;
        assert!(
            matches!(&v6, ResetOrigin::NotChecked { why, .. } if why.contains("IPv6")),
            "{v6:?}"
        );
    }
}
