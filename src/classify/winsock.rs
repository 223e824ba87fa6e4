//! Pure classification of a TCP connect outcome as Windows reports it.
//!
//! Why a separate table: on Windows there is no `IP_RECVERR` error queue, so the ICMP type and
//! code behind a failed connect are never seen. All a program gets is a Winsock error number,
//! and the Windows TCP stack folds an ICMP reject (admin-prohibited, host-unreachable) into
//! refused, unreachable or a plain timeout depending on the version and on its retransmission
//! settings. Claiming "no ICMP came back" or "administratively prohibited" on Windows would be
//! a guess, so every detail below names the Winsock error it saw and says that the ICMP detail
//! is missing.
//!
//! The function is compiled on every platform (the error numbers are plain constants), so its
//! table test runs on Linux CI too; `classify::classify_connect` calls it only on Windows.

use super::outcome::{
    ConnectOutcome, Verdict, HINT_LOCAL_FIREWALL, HINT_NET_UNREACHABLE, HINT_NO_LOCAL_ADDRESS,
    HINT_RESET, HINT_TIMEOUT,
};
use crate::model::Cause;

// Winsock error numbers (winerror.h). Rust's std maps some of them to an io::ErrorKind, but not
// all the same way on every Rust version; the number is what Windows really said.
pub const WSAEACCES: i32 = 10013;
pub const WSAEADDRNOTAVAIL: i32 = 10049;
pub const WSAENETUNREACH: i32 = 10051;
pub const WSAECONNRESET: i32 = 10054;
pub const WSAETIMEDOUT: i32 = 10060;
pub const WSAECONNREFUSED: i32 = 10061;
pub const WSAEHOSTUNREACH: i32 = 10065;

/// Appended to every Windows detail that an ICMP reject could have produced.
pub const NO_ICMP_DETAIL: &str = "Windows reports no ICMP detail for TCP: a firewall reject \
(ICMP admin-prohibited or unreachable) is seen as refused, unreachable or a timeout";

pub const HINT_REFUSED_WINDOWS: &str = concat!(
    "refused: a TCP reset came back (nothing listens on that \
port: service stopped, wrong port or named instance) or a firewall rejects the connection; \
Windows cannot tell a reset from an ICMP reject. Check the service on the server (",
    crate::platform_hints::listeners_cmd!(),
    "), then the firewalls between the zones for this port"
);
pub const HINT_HOST_UNREACHABLE_WINDOWS: &str = "host unreachable: the address cannot be \
reached (host down, wrong address, ARP failing on the last hop) or a firewall rejects with an \
ICMP message, which Windows does not tell apart. Check the address and that the host is up, \
then the firewall rules between the zones for this port";

/// Classifies what a connect attempt ended with on Windows. `None` when the Windows view adds
/// nothing (a connection, an error number not in the table): the generic classification applies.
pub fn classify_windows(outcome: ConnectOutcome) -> Option<Verdict> {
    match outcome {
        ConnectOutcome::NoReply(limit) => Some(Verdict::new(
            Cause::Timeout,
            format!(
                "timed out after {}: no SYN-ACK and no reset. {NO_ICMP_DETAIL}",
                humantime::format_duration(limit)
            ),
            HINT_TIMEOUT,
        )),
        ConnectOutcome::Error(_, Some(code)) => classify_wsa_error(code),
        ConnectOutcome::Connected
        | ConnectOutcome::Error(_, None)
        | ConnectOutcome::Icmp { .. } => None,
    }
}

/// Pure: a Winsock connect error number to a cause, or `None` for a number not in the table.
pub fn classify_wsa_error(code: i32) -> Option<Verdict> {
    let (cause, what, hint, icmp_possible) = match code {
        WSAECONNREFUSED => (Cause::Refused, "refused", HINT_REFUSED_WINDOWS, true),
        WSAETIMEDOUT => (
            Cause::Timeout,
            "timed out (operating system connect timeout): no reply",
            HINT_TIMEOUT,
            true,
        ),
        WSAEHOSTUNREACH => (
            Cause::Unreachable,
            "unreachable: host unreachable",
            HINT_HOST_UNREACHABLE_WINDOWS,
            true,
        ),
        WSAENETUNREACH => (
            Cause::Unreachable,
            "unreachable: no route to the network",
            HINT_NET_UNREACHABLE,
            true,
        ),
        WSAECONNRESET => (
            Cause::Reset,
            "connection reset during setup",
            HINT_RESET,
            false,
        ),
        // Windows Firewall (WFP) blocking an outbound connection reports access denied.
        WSAEACCES => (
            Cause::Prohibited,
            "access denied: blocked by this host's own firewall (or a broadcast address)",
            HINT_LOCAL_FIREWALL,
            false,
        ),
        WSAEADDRNOTAVAIL => (
            Cause::Unreachable,
            "address not available: the target address is not valid from this host, or no \
             local address or port is free",
            HINT_NO_LOCAL_ADDRESS,
            false,
        ),
        _ => return None,
    };
    let name = wsa_name(code).unwrap_or("WSA error");
    let detail = if icmp_possible {
        format!("{what} ({name} {code}). {NO_ICMP_DETAIL}")
    } else {
        format!("{what} ({name} {code})")
    };
    Some(Verdict::new(cause, detail, hint))
}

/// The symbolic name of a Winsock error number in the table.
pub fn wsa_name(code: i32) -> Option<&'static str> {
    Some(match code {
        WSAEACCES => "WSAEACCES",
        WSAEADDRNOTAVAIL => "WSAEADDRNOTAVAIL",
        WSAENETUNREACH => "WSAENETUNREACH",
        WSAECONNRESET => "WSAECONNRESET",
        WSAETIMEDOUT => "WSAETIMEDOUT",
        WSAECONNREFUSED => "WSAECONNREFUSED",
        WSAEHOSTUNREACH => "WSAEHOSTUNREACH",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::ErrorKind as K;
    use std::time::Duration;

    #[test]
    fn table() {
        // (Winsock error, cause, whether the detail must admit the missing ICMP detail)
        let rows: &[(i32, Cause, bool)] = &[
            (WSAETIMEDOUT, Cause::Timeout, true),
            (WSAECONNREFUSED, Cause::Refused, true),
            (WSAENETUNREACH, Cause::Unreachable, true),
            (WSAEHOSTUNREACH, Cause::Unreachable, true),
            (WSAECONNRESET, Cause::Reset, false),
            (WSAEACCES, Cause::Prohibited, false),
            (WSAEADDRNOTAVAIL, Cause::Unreachable, false),
        ];
        for &(code, cause, icmp_note) in rows {
            let c = classify_wsa_error(code).unwrap_or_else(|| panic!("{code} not mapped"));
            assert_eq!(c.cause, cause, "{code}");
            assert!(c.detail.contains(&code.to_string()), "{code}: {}", c.detail);
            assert!(
                c.detail.contains(wsa_name(code).unwrap()),
                "{code}: {}",
                c.detail
            );
            assert_eq!(c.detail.contains(NO_ICMP_DETAIL), icmp_note, "{code}");
            assert!(!c.hint.is_empty());
            // The ErrorKind std chose does not matter: the number decides.
            let via_outcome = classify_windows(ConnectOutcome::Error(K::Other, Some(code)));
            assert_eq!(via_outcome, Some(c));
        }
        assert_eq!(
            classify_wsa_error(10035),
            None,
            "WSAEWOULDBLOCK is not a verdict"
        );
        assert_eq!(wsa_name(10035), None);
    }

    #[test]
    fn local_firewall_and_reject_hints_differ() {
        assert_eq!(
            classify_wsa_error(WSAEACCES).unwrap().hint,
            HINT_LOCAL_FIREWALL
        );
        assert!(classify_wsa_error(WSAECONNREFUSED)
            .unwrap()
            .hint
            .contains("cannot tell a reset from an ICMP reject"));
    }

    #[test]
    fn no_reply_says_icmp_is_unknown_not_absent() {
        let c = classify_windows(ConnectOutcome::NoReply(Duration::from_millis(1500))).unwrap();
        assert_eq!(c.cause, Cause::Timeout);
        assert!(c.detail.contains("1s 500ms"), "{}", c.detail);
        assert!(c.detail.contains(NO_ICMP_DETAIL), "{}", c.detail);
        // Not the Linux wording, which claims no ICMP came back.
        assert!(!c.detail.contains("no reset, no ICMP"), "{}", c.detail);
    }

    #[test]
    fn outcomes_the_windows_view_leaves_alone() {
        assert_eq!(classify_windows(ConnectOutcome::Connected), None);
        assert_eq!(
            classify_windows(ConnectOutcome::Error(K::Other, None)),
            None
        );
        assert_eq!(
            classify_windows(ConnectOutcome::Error(K::Other, Some(10035))),
            None
        );
    }
}
