//! Pure classification of what came back from a TCP connect attempt into a cause a sysadmin can act
//! on. No I/O here: the tcp hop (and every hop that opens a TCP connection: epm, rpc_port, callback,
//! login) feeds it the error it got, and the table tests below pin each mapping.

use std::io;
use std::net::IpAddr;

use crate::model::Cause;

/// The outcome and verdict shapes and the shared hints.
pub mod outcome;
/// Windows connect errors (Winsock numbers), which carry no ICMP detail.
pub mod winsock;

pub use outcome::{
    ConnectOutcome, Verdict, HINT_HOST_UNREACHABLE, HINT_LOCAL_FIREWALL, HINT_NET_UNREACHABLE,
    HINT_NO_LOCAL_ADDRESS, HINT_PORT_UNREACHABLE_TCP, HINT_PROHIBITED, HINT_REFUSED, HINT_RESET,
    HINT_TIMEOUT, HINT_UNKNOWN,
};

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
    let classified = |cause, detail: &str, hint: &'static str| Verdict::new(cause, detail, hint);
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
    use std::time::Duration;

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
