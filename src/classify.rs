//! Pure classification of what came back from a TCP connect attempt into a cause a sysadmin can act
//! on. No I/O here: the tcp hop (and every hop that opens a TCP connection: epm, rpc_port, callback,
//! login) feeds it the error it got, and the table tests below pin each mapping.

use std::io;
use std::net::IpAddr;
use std::time::Duration;

use crate::model::{Cause, HopKind, HopResult};

/// Windows connect errors (Winsock numbers), which carry no ICMP detail.
pub mod winsock;

/// What the connect attempt ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectOutcome {
    /// The SYN-ACK came back.
    Connected,
    /// Nothing at all came back before our own deadline.
    NoReply(Duration),
    /// The OS reported an error: its kind and, where known, the raw OS error number.
    Error(io::ErrorKind, Option<i32>),
    /// An ICMP error answered the SYN, read from the socket's error queue (Linux `IP_RECVERR`):
    /// the only way to tell "administratively prohibited" from "host unreachable", which the
    /// kernel folds into the same errno. `from` is the device that sent it (`SO_EE_OFFENDER`)
    /// and `by_target` whether that device is the address we connected to: "rejected by a
    /// router on the path" and "rejected by the target" send a sysadmin to different teams.
    Icmp {
        v6: bool,
        icmp_type: u8,
        code: u8,
        from: Option<IpAddr>,
        by_target: bool,
    },
}

impl ConnectOutcome {
    pub fn from_io_error(e: &io::Error) -> ConnectOutcome {
        ConnectOutcome::Error(e.kind(), e.raw_os_error())
    }
}

/// A classified failure: the cause, a one-line detail of what was observed, and what to do next.
/// The one shape every classifier returns (TCP connects here, SQL Server errors in
/// `hops::mssql::classify`, SQLSTATEs in `hops::postgres::classify`), so a hop turns any of
/// them into its result the same way ([`Verdict::into_hop`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub cause: Cause,
    pub detail: String,
    pub hint: String,
}

impl Verdict {
    pub fn new(cause: Cause, detail: impl Into<String>, hint: impl Into<String>) -> Verdict {
        Verdict {
            cause,
            detail: detail.into(),
            hint: hint.into(),
        }
    }

    /// The failed hop result this verdict describes.
    pub fn into_hop(self, kind: HopKind) -> HopResult {
        HopResult::fail(kind, self.cause, self.detail).with_hint(self.hint)
    }
}

pub const HINT_TIMEOUT: &str = concat!(
    "no reply at all: packets silently dropped, typical of a firewall DROP \
rule between zones (or a host that is powered off); firewall logs may not show it if logging is off \
for the rule. Check the rules on every firewall between the zones for this port, in this direction; \
retest from this host with ",
    crate::platform_hints::retest_cmd!()
);
/// A reset whose origin was not checked: what it usually means, and that a firewall can forge one
/// (`hops::reset_origin` tells the two apart where it can read TTLs).
pub const HINT_REFUSED: &str = concat!(
    "refused: a TCP reset answered the SYN. Usually the host is up and nothing listens on that \
port (service stopped, wrong port or named instance), but a firewall between the zones can forge \
the reset in the target's name (Palo Alto/ASA \"reset\" actions, a Linux router's `reject with \
tcp reset`), and the detail says whether its origin was checked. Check the service on the server (",
    crate::platform_hints::listeners_cmd!(),
    "); if it listens, check the firewalls' deny logs for this port, in this direction"
);
pub const HINT_HOST_UNREACHABLE: &str =
    "ICMP host unreachable: a router (or the host's own subnet) \
says the address cannot be reached: host down, ARP failing on the last hop, or a reject rule using \
host-unreachable. Check the address is right and the host is up";
pub const HINT_NET_UNREACHABLE: &str =
    "no route to that network: this host or a router on the way has \
no route for the address (or answered ICMP net unreachable). Check routing tables and VPN/VLAN \
membership for the target zone";
pub const HINT_PROHIBITED: &str = "ICMP administratively prohibited: a firewall between the zones \
rejects this traffic explicitly (nftables/iptables `reject with icmp admin-prohibited`, an ACL, or a \
host firewall). The rule exists and should appear in that firewall's logs; ask for this port to be \
opened in this direction";
pub const HINT_PORT_UNREACHABLE_TCP: &str = "ICMP port unreachable in answer to a TCP SYN: a \
TCP stack answers a closed port with a reset, so this ICMP comes from a firewall rule that rejects \
the connection (nftables' plain `reject`, iptables' default REJECT). The rule exists and should \
appear in that firewall's logs; ask for this port to be opened in this direction";
pub const HINT_LOCAL_FIREWALL: &str = concat!(
    "this host's own firewall (output rules) refused to send the \
connection: check the local firewall's outbound rules: ",
    crate::platform_hints::local_firewall_cmd!()
);
pub const HINT_RESET: &str =
    "the connection was reset during setup: a firewall or IPS that resets \
unwanted sessions, or a service that crashed on accept";
pub const HINT_NO_LOCAL_ADDRESS: &str = "this host has no usable source address for the target \
(interface down or address family not configured)";
pub const HINT_UNKNOWN: &str =
    "an unexpected error from the operating system; run with -v for details";

// Linux errno values the std ErrorKind folds together but a sysadmin needs apart. The numbers are
// the same on every Linux architecture dtcprobe builds for.
const EPERM: i32 = 1;
const ENONET: i32 = 64;
const EHOSTDOWN: i32 = 112;

/// Maps a connect outcome to a cause. `Connected` is not a failure and yields `None`.
pub fn classify_connect(outcome: ConnectOutcome) -> Option<Verdict> {
    use io::ErrorKind as K;
    // Windows sees no ICMP detail for TCP: its own table says so instead of guessing.
    if cfg!(windows) {
        if let Some(v) = winsock::classify_windows(outcome) {
            return Some(v);
        }
    }
    let classified = |cause, detail: &str, hint: &str| Verdict::new(cause, detail, hint);
    match outcome {
        ConnectOutcome::Connected => None,
        ConnectOutcome::NoReply(t) => Some(Verdict::new(
            Cause::Timeout,
            format!(
                "timed out after {}: no SYN-ACK, no reset, no ICMP",
                humantime::format_duration(t)
            ),
            HINT_TIMEOUT,
        )),
        ConnectOutcome::Icmp {
            v6,
            icmp_type,
            code,
            from,
            by_target,
        } => Some(classify_icmp(v6, icmp_type, code, from, by_target)),
        ConnectOutcome::Error(kind, raw) => Some(match (kind, raw) {
            (_, Some(EPERM)) if cfg!(target_os = "linux") => classified(
                Cause::Prohibited,
                "not permitted: blocked by this host's own firewall",
                HINT_LOCAL_FIREWALL,
            ),
            (K::ConnectionRefused, _) => {
                classified(Cause::Refused, "refused: TCP reset received", HINT_REFUSED)
            }
            (K::TimedOut, _) => classified(
                Cause::Timeout,
                "timed out (operating system connect timeout): no reply",
                HINT_TIMEOUT,
            ),
            (K::PermissionDenied, _) => classified(
                Cause::Prohibited,
                "rejected: ICMP administratively prohibited received",
                HINT_PROHIBITED,
            ),
            (K::HostUnreachable, _) => classified(
                Cause::Unreachable,
                "unreachable: ICMP host unreachable received",
                HINT_HOST_UNREACHABLE,
            ),
            (_, Some(EHOSTDOWN | ENONET)) if cfg!(target_os = "linux") => classified(
                Cause::Unreachable,
                "unreachable: host down",
                HINT_HOST_UNREACHABLE,
            ),
            (K::NetworkUnreachable, _) => classified(
                Cause::Unreachable,
                "unreachable: no route to the network",
                HINT_NET_UNREACHABLE,
            ),
            (K::ConnectionReset | K::ConnectionAborted, _) => {
                classified(Cause::Reset, "connection reset during setup", HINT_RESET)
            }
            (K::AddrNotAvailable, _) => classified(
                Cause::Unreachable,
                "no usable local address for this destination",
                HINT_NO_LOCAL_ADDRESS,
            ),
            (other, _) => Verdict::new(
                Cause::Internal,
                format!("unexpected connect error: {other}"),
                HINT_UNKNOWN,
            ),
        }),
    }
}

/// Who sent an ICMP error, in words: "198.18.1.1, a router on the path" / "the target".
pub fn icmp_sender(from: Option<IpAddr>, by_target: bool) -> String {
    match (from, by_target) {
        (Some(ip), true) => format!("{ip} (the target itself)"),
        (Some(ip), false) => format!("{ip}, a router or firewall on the path"),
        (None, _) => "an unknown device (the sender address was not reported)".to_string(),
    }
}

/// Pure: an ICMP destination-unreachable (v4 type 3 / v6 type 1) by type and code, naming the
/// device that sent it.
fn classify_icmp(
    v6: bool,
    icmp_type: u8,
    code: u8,
    from: Option<IpAddr>,
    by_target: bool,
) -> Verdict {
    let sender = icmp_sender(from, by_target);
    let named = |cause, detail: String, hint: String| Verdict::new(cause, detail, hint);
    let what = |name: &str| {
        format!(
            "ICMP{} {name} received (type {icmp_type}, code {code}) from {sender}",
            if v6 { "v6" } else { "" }
        )
    };
    let sent_by = |hint: &str| format!("{hint}. The ICMP error was sent by {sender}");
    match (v6, icmp_type, code) {
        // v4: 9/10 network/host administratively prohibited, 13 communication administratively
        // prohibited (what `reject with icmp admin-prohibited` sends). v6: 1 administratively
        // prohibited, 5 source address failed policy, 6 reject route.
        (false, 3, 9 | 10 | 13) | (true, 1, 1 | 5 | 6) => named(
            Cause::Prohibited,
            what("administratively prohibited"),
            sent_by(HINT_PROHIBITED),
        ),
        // A TCP stack answers a closed port with a reset, never with ICMP port unreachable:
        // that ICMP comes from a firewall's plain `reject` (nftables' default, iptables'
        // REJECT), on the target or on the way.
        (false, 3, 3) | (true, 1, 4) => named(
            Cause::Prohibited,
            what("port unreachable"),
            format!(
                "{HINT_PORT_UNREACHABLE_TCP}. The rejecting device is {sender}: look for the \
                 reject rule there"
            ),
        ),
        (false, 3, 0 | 6 | 11) | (true, 1, 0) => named(
            Cause::Unreachable,
            what("network unreachable"),
            sent_by(HINT_NET_UNREACHABLE),
        ),
        (false, 3, _) | (true, 1, _) => named(
            Cause::Unreachable,
            what("host unreachable"),
            sent_by(HINT_HOST_UNREACHABLE),
        ),
        _ => named(
            Cause::Unreachable,
            what("error"),
            sent_by(HINT_HOST_UNREACHABLE),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use io::ErrorKind as K;

    #[test]
    fn table() {
        // (observed outcome, expected cause) — one row per thing a network can answer.
        let rows: &[(ConnectOutcome, Cause)] = &[
            (
                ConnectOutcome::NoReply(Duration::from_secs(3)),
                Cause::Timeout,
            ),
            (
                ConnectOutcome::Error(K::ConnectionRefused, Some(111)),
                Cause::Refused,
            ),
            (
                ConnectOutcome::Error(K::TimedOut, Some(110)),
                Cause::Timeout,
            ),
            (
                ConnectOutcome::Error(K::PermissionDenied, Some(13)),
                Cause::Prohibited,
            ),
            (
                ConnectOutcome::Error(K::HostUnreachable, Some(113)),
                Cause::Unreachable,
            ),
            (
                ConnectOutcome::Error(K::NetworkUnreachable, Some(101)),
                Cause::Unreachable,
            ),
            (
                ConnectOutcome::Error(K::ConnectionReset, Some(104)),
                Cause::Reset,
            ),
            (
                ConnectOutcome::Error(K::AddrNotAvailable, Some(99)),
                Cause::Unreachable,
            ),
            (ConnectOutcome::Error(K::Other, None), Cause::Internal),
            (
                ConnectOutcome::Icmp {
                    v6: false,
                    icmp_type: 3,
                    code: 13,
                    from: None,
                    by_target: false,
                },
                Cause::Prohibited,
            ),
            (
                ConnectOutcome::Icmp {
                    v6: false,
                    icmp_type: 3,
                    code: 10,
                    from: None,
                    by_target: false,
                },
                Cause::Prohibited,
            ),
            (
                ConnectOutcome::Icmp {
                    v6: false,
                    icmp_type: 3,
                    code: 1,
                    from: None,
                    by_target: false,
                },
                Cause::Unreachable,
            ),
            (
                ConnectOutcome::Icmp {
                    v6: false,
                    icmp_type: 3,
                    code: 0,
                    from: None,
                    by_target: false,
                },
                Cause::Unreachable,
            ),
            (
                ConnectOutcome::Icmp {
                    v6: false,
                    icmp_type: 3,
                    code: 3,
                    from: None,
                    by_target: false,
                },
                Cause::Prohibited,
            ),
            (
                ConnectOutcome::Icmp {
                    v6: true,
                    icmp_type: 1,
                    code: 1,
                    from: None,
                    by_target: false,
                },
                Cause::Prohibited,
            ),
            (
                ConnectOutcome::Icmp {
                    v6: true,
                    icmp_type: 1,
                    code: 3,
                    from: None,
                    by_target: false,
                },
                Cause::Unreachable,
            ),
            (
                ConnectOutcome::Icmp {
                    v6: true,
                    icmp_type: 1,
                    code: 4,
                    from: None,
                    by_target: false,
                },
                Cause::Prohibited,
            ),
        ];
        for (outcome, cause) in rows {
            let c = classify_connect(*outcome).expect("a failure");
            assert_eq!(c.cause, *cause, "{outcome:?}");
            assert!(!c.hint.is_empty() && !c.detail.is_empty());
        }
        assert_eq!(classify_connect(ConnectOutcome::Connected), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn linux_errno_refinements() {
        let local =
            classify_connect(ConnectOutcome::Error(K::PermissionDenied, Some(EPERM))).unwrap();
        assert_eq!(local.cause, Cause::Prohibited);
        assert_eq!(local.hint, HINT_LOCAL_FIREWALL);
        let down = classify_connect(ConnectOutcome::Error(K::Other, Some(EHOSTDOWN))).unwrap();
        assert_eq!(down.cause, Cause::Unreachable);
    }

    #[test]
    fn icmp_names_its_sender_and_port_unreachable_is_a_firewall() {
        let router: IpAddr = "198.18.1.1".parse().unwrap();
        let by_router = classify_connect(ConnectOutcome::Icmp {
            v6: false,
            icmp_type: 3,
            code: 3,
            from: Some(router),
            by_target: false,
        })
        .unwrap();
        assert_eq!(by_router.cause, Cause::Prohibited);
        assert!(
            by_router.detail.contains("198.18.1.1, a router"),
            "{}",
            by_router.detail
        );
        assert!(by_router.hint.contains("firewall") && by_router.hint.contains("198.18.1.1"));
        let by_target = classify_connect(ConnectOutcome::Icmp {
            v6: false,
            icmp_type: 3,
            code: 13,
            from: Some("198.18.2.2".parse().unwrap()),
            by_target: true,
        })
        .unwrap();
        assert!(
            by_target.detail.contains("the target itself"),
            "{}",
            by_target.detail
        );
    }

    #[test]
    fn timeout_hint_says_silently_dropped() {
        let c = classify_connect(ConnectOutcome::NoReply(Duration::from_millis(1500))).unwrap();
        assert!(c.hint.contains("silently dropped"));
        assert!(c.detail.contains("1s 500ms"), "{}", c.detail);
    }
}
