//! Pure: what a failure of the `tx_enlist` hop means, naming the SIDE (this host's MSDTC or the
//! SQL host's) and the SETTING to look at. Every MSDTC failure maps to the existing cause
//! `dtc_unavailable`; the hint carries the difference.

use super::dtc::{self, DtcError};
use crate::classify::Verdict;
use crate::hops::mssql::classify::classify_server_error;
use crate::model::Cause;

/// Where in the hop the local MSDTC call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalPhase {
    Begin,
    Export,
    Abort,
}

impl LocalPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            LocalPhase::Begin => "local begin",
            LocalPhase::Export => "local export",
            LocalPhase::Abort => "local abort",
        }
    }
}

pub const THIS_HOST_SECURITY: &str = "on THIS host (the client zone), in Component Services \
(dcomcnfg) > Computers > My Computer > Distributed Transaction Coordinator > Local DTC > \
Properties > Security: Network DTC Access, Allow Outbound and Allow Inbound (the SQL host's MSDTC \
calls back), and an authentication mode the SQL host accepts";

pub const SQL_HOST_SECURITY: &str = "on the SQL Server host, the same page (Local DTC > \
Properties > Security): Network DTC Access, Allow Inbound and Allow Outbound, and a matching \
authentication mode";

pub const RPC_BOTH_WAYS: &str = "the firewalls between the zones must allow TCP 135 (RPC \
endpoint mapper) and the dynamic RPC range MSDTC uses (49152-65535 unless restricted under \
HKLM\\SOFTWARE\\Microsoft\\Rpc\\Internet) in BOTH directions, since each MSDTC calls the other; \
and each host must resolve the other's NetBIOS name to the right address (dtcprobe's `epm` and \
`resolve` checks test these)";

const AUTHENTICATION: &str = "the two MSDTCs disagree on RPC authentication: use \"Mutual \
Authentication Required\" on both sides in one domain or trusted domains; across untrusted \
domains or workgroups, \"Incoming Caller Authentication Required\" or \"No Authentication \
Required\" on both";

fn dtc(hint: String) -> Verdict {
    Verdict::new(Cause::DtcUnavailable, String::new(), hint)
}

/// A failed call to this host's MSDTC.
pub fn local_failure(phase: LocalPhase, e: &DtcError) -> Verdict {
    use dtc::*;
    let mut v = match (phase, e.hresult) {
        (LocalPhase::Begin, XACT_E_TMNOTAVAILABLE) => dtc(format!(
            "THIS host's MSDTC is not available: start the Distributed Transaction Coordinator \
             service here (services.msc, `sc start msdtc`); on a cluster, the clustered DTC \
             resource. Then check {THIS_HOST_SECURITY}"
        )),
        (_, XACT_E_UNABLE_TO_READ_DTC_CONFIG) => dtc(
            "THIS host's MSDTC cannot read its own configuration: reinstall it (`msdtc -uninstall`, \
             `msdtc -install`) and restart the service"
                .into(),
        ),
        (LocalPhase::Begin, E_ACCESSDENIED) => dtc(
            "this account may not use THIS host's MSDTC (access denied): run dtcprobe as the \
             application's account, and check the MSDTC security settings here"
                .into(),
        ),
        (_, XACT_E_NETWORK_TX_DISABLED) => dtc(format!(
            "THIS host's MSDTC refuses network transactions (XACT_E_NETWORK_TX_DISABLED): turn \
             on {THIS_HOST_SECURITY}. Restart the MSDTC service after changing them"
        )),
        (_, XACT_E_PARTNER_NETWORK_TX_DISABLED) => dtc(format!(
            "the SQL host's MSDTC refuses network transactions \
             (XACT_E_PARTNER_NETWORK_TX_DISABLED): turn on {SQL_HOST_SECURITY}, then restart \
             MSDTC there"
        )),
        (_, XACT_E_LOGFULL) => dtc(
            "THIS host's MSDTC log is full (XACT_E_LOGFULL): in Component Services > Local DTC > \
             Properties > Logging, enlarge the log (or reset it with `msdtc -resetlog` after \
             resolving in-doubt transactions), then restart MSDTC"
                .into(),
        ),
        (_, XACT_E_PUSH_COMM_FAILURE) => dtc(format!(
            "THIS host's MSDTC could not push the transaction to the SQL host's MSDTC \
             (XACT_E_PUSH_COMM_FAILURE): MS-DTCO push propagation makes the SQL host's MSDTC \
             call THIS host back during the export, so a block in EITHER direction fails it. \
             {RPC_BOTH_WAYS}. Also check {THIS_HOST_SECURITY}; {SQL_HOST_SECURITY}"
        )),
        (_, XACT_E_PULL_COMM_FAILURE) => dtc(format!(
            "the SQL host's MSDTC could not pull the transaction from THIS host's MSDTC \
             (XACT_E_PULL_COMM_FAILURE): the way BACK is blocked: the SQL host must reach this \
             host on TCP 135 and the dynamic RPC range and resolve this host's NetBIOS name. \
             {RPC_BOTH_WAYS}. Also check {THIS_HOST_SECURITY}"
        )),
        (_, XACT_E_DEST_TMNOTAVAILABLE) => dtc(format!(
            "the SQL host's MSDTC (the destination named by TM_GET_DTC_ADDRESS) is not \
             available (XACT_E_DEST_TMNOTAVAILABLE): start MSDTC there (on a cluster, the \
             clustered DTC resource), and make sure this host resolves and reaches the DTC host \
             name in that address. {RPC_BOTH_WAYS}"
        )),
        (_, XACT_E_CONNECTION_REQUEST_DENIED) => dtc(format!(
            "the SQL host's MSDTC denied this host's connection request \
             (XACT_E_CONNECTION_REQUEST_DENIED): {AUTHENTICATION}. Also check {SQL_HOST_SECURITY}"
        )),
        (_, XACT_E_NOENLIST) => dtc(format!(
            "the SQL host's transaction manager could not enlist in this host's transaction \
             (XACT_E_NOENLIST): usually the two MSDTCs could not complete their handshake: \
             {RPC_BOTH_WAYS}. Also check {SQL_HOST_SECURITY}"
        )),
        (_, XACT_E_CONNECTION_DENIED) | (LocalPhase::Export, E_ACCESSDENIED) => dtc(format!(
            "the SQL host's MSDTC refused this host's MSDTC: {AUTHENTICATION}. Also check \
             {SQL_HOST_SECURITY}"
        )),
        (LocalPhase::Export, XACT_E_TMNOTAVAILABLE)
        | (_, RPC_S_SERVER_UNAVAILABLE)
        | (_, RPC_S_CALL_FAILED)
        | (_, XACT_E_CONNECTION_DOWN)
        | (_, XACT_E_REENLISTTIMEOUT) => dtc(format!(
            "THIS host's MSDTC could not reach (or lost) the SQL host's MSDTC named in the \
             address SQL Server gave: {RPC_BOTH_WAYS}. Also check that MSDTC runs on the SQL \
             host and {SQL_HOST_SECURITY}"
        )),
        (_, XACT_E_NOTRANSACTION) | (_, XACT_E_ABORTED) => dtc(format!(
            "the transaction was already over (aborted) when this step ran: usually one MSDTC \
             gave up on the other after a timeout. {RPC_BOTH_WAYS}"
        )),
        (_, XACT_E_INVALIDCOOKIE) | (_, XACT_E_NOIMPORTOBJECT) => dtc(
            "the SQL host's transaction manager address (from TM_GET_DTC_ADDRESS) was not usable \
             by this host's MSDTC: different MSDTC versions, or something between rewrote the \
             answer"
                .into(),
        ),
        (LocalPhase::Abort, _) => dtc(format!(
            "this host's MSDTC could not abort the transaction; SQL Server rolls it back on its \
             own when its MSDTC times out. {RPC_BOTH_WAYS}"
        )),
        _ => dtc(format!(
            "an MSDTC call on THIS host failed; look the HRESULT up (winerror.h). Check \
             {THIS_HOST_SECURITY}; and {RPC_BOTH_WAYS}"
        )),
    };
    v.detail = format!("{}: {e}", phase.as_str());
    v
}

/// What SQL Server answered with an error to TM_GET_DTC_ADDRESS or TM_PROPAGATE_XACT.
pub fn server_refusal(step: &str, number: u32, state: u8) -> Verdict {
    let hint = match (step, number) {
        (_, 8501) => Some(format!(
            "the SQL host's MSDTC is unavailable (8501): start the Distributed Transaction \
             Coordinator service on the SQL Server host (on a cluster, the clustered DTC \
             resource), then check {SQL_HOST_SECURITY}"
        )),
        // Push propagation (MS-DTCO): the export already pushed the transaction, and the SQL
        // host's MSDTC already called this host back during it; the import only looks it up.
        ("propagate", 8509) | ("propagate", 8510) | ("propagate", 8502) => Some(format!(
            "SQL Server could not import the transaction THIS host's MSDTC exported (error \
             {number}). The two MSDTCs already talked in both directions during the export \
             (push propagation: the SQL host's MSDTC calls this host back then), so here the \
             SQL host's MSDTC no longer has the transaction or is not the one the export went \
             to: the session between them cut after the export (a firewall dropping it), a \
             clustered SQL Server that imports through another DTC than the one TM_GET_DTC_ADDRESS \
             named (hop dtc_name's tm_host), or an authentication mismatch. {RPC_BOTH_WAYS}. Check \
             {THIS_HOST_SECURITY}; {SQL_HOST_SECURITY}; {AUTHENTICATION}"
        )),
        ("propagate", 8522) | ("propagate", 8524) | ("propagate", 1206) => Some(format!(
            "MSDTC stopped the transaction while SQL Server enlisted (error {number}): one MSDTC \
             could not reach the other in time. {RPC_BOTH_WAYS}"
        )),
        _ => None,
    };
    let mut v = classify_server_error(number, state);
    if let Some(h) = hint {
        v.cause = Cause::DtcUnavailable;
        v.hint = h.into();
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(hr: u32) -> DtcError {
        DtcError {
            call: "ITransactionExport::Export",
            hresult: hr,
        }
    }

    #[test]
    fn local_hresults_name_side_and_setting() {
        let cases = [
            (
                LocalPhase::Begin,
                dtc::XACT_E_TMNOTAVAILABLE,
                "THIS host's MSDTC is not available",
            ),
            (
                LocalPhase::Export,
                dtc::XACT_E_NETWORK_TX_DISABLED,
                "Network DTC Access",
            ),
            (
                LocalPhase::Export,
                dtc::XACT_E_PARTNER_NETWORK_TX_DISABLED,
                "the SQL host's MSDTC refuses",
            ),
            (LocalPhase::Export, dtc::XACT_E_TMNOTAVAILABLE, "TCP 135"),
            (
                LocalPhase::Export,
                dtc::RPC_S_SERVER_UNAVAILABLE,
                "BOTH directions",
            ),
            (
                LocalPhase::Export,
                dtc::XACT_E_CONNECTION_DOWN,
                "could not reach",
            ),
            (
                LocalPhase::Export,
                dtc::E_ACCESSDENIED,
                "Mutual Authentication",
            ),
            (
                LocalPhase::Begin,
                dtc::E_ACCESSDENIED,
                "may not use THIS host's MSDTC",
            ),
            (
                LocalPhase::Export,
                dtc::XACT_E_NOTRANSACTION,
                "already over",
            ),
            (
                LocalPhase::Abort,
                dtc::XACT_E_CONNECTION_DOWN,
                "could not reach",
            ),
            (LocalPhase::Abort, 0x8000_4005, "could not abort"),
            (
                LocalPhase::Export,
                dtc::XACT_E_PUSH_COMM_FAILURE,
                "call THIS host back during the export",
            ),
            (
                LocalPhase::Export,
                dtc::XACT_E_PULL_COMM_FAILURE,
                "the way BACK is blocked",
            ),
            (
                LocalPhase::Export,
                dtc::XACT_E_DEST_TMNOTAVAILABLE,
                "DTC host name",
            ),
            (
                LocalPhase::Export,
                dtc::XACT_E_CONNECTION_REQUEST_DENIED,
                "Mutual Authentication",
            ),
            (LocalPhase::Export, dtc::XACT_E_NOENLIST, "could not enlist"),
            (LocalPhase::Begin, dtc::XACT_E_LOGFULL, "log is full"),
            (LocalPhase::Begin, 0x8000_4005, "winerror.h"),
        ];
        for (phase, hr, want) in cases {
            let v = local_failure(phase, &err(hr));
            assert_eq!(v.cause, Cause::DtcUnavailable, "{hr:X}");
            assert!(v.hint.contains(want), "{phase:?} {hr:X}: {}", v.hint);
            assert!(v.detail.contains(&format!("0x{hr:08X}")), "{}", v.detail);
        }
        assert!(
            local_failure(LocalPhase::Export, &err(dtc::XACT_E_NETWORK_TX_DISABLED))
                .hint
                .contains("THIS host")
        );
        // Each new HRESULT is named in the detail, not only its hex.
        for (hr, name) in [
            (dtc::XACT_E_NOENLIST, "XACT_E_NOENLIST"),
            (dtc::XACT_E_PUSH_COMM_FAILURE, "XACT_E_PUSH_COMM_FAILURE"),
            (dtc::XACT_E_PULL_COMM_FAILURE, "XACT_E_PULL_COMM_FAILURE"),
            (
                dtc::XACT_E_DEST_TMNOTAVAILABLE,
                "XACT_E_DEST_TMNOTAVAILABLE",
            ),
            (
                dtc::XACT_E_CONNECTION_REQUEST_DENIED,
                "XACT_E_CONNECTION_REQUEST_DENIED",
            ),
            (dtc::XACT_E_LOGFULL, "XACT_E_LOGFULL"),
        ] {
            let v = local_failure(LocalPhase::Export, &err(hr));
            assert!(v.detail.contains(name), "{}", v.detail);
        }
    }

    #[test]
    fn server_refusals_point_at_the_right_side() {
        let v = server_refusal("get DTC address", 8501, 3);
        assert_eq!(v.cause, Cause::DtcUnavailable);
        assert!(v.hint.contains("SQL Server host"), "{}", v.hint);
        let v = server_refusal("propagate", 8509, 1);
        assert_eq!(v.cause, Cause::DtcUnavailable);
        // The call back into this zone happened during the export (push propagation): the
        // import's hint says so instead of placing it here (issue 23 finding 7).
        assert!(v.hint.contains("during the export"), "{}", v.hint);
        assert!(!v.hint.contains("reach this host back"), "{}", v.hint);
        // Anything else keeps the general SQL Server error table.
        let v = server_refusal("propagate", 18456, 1);
        assert_eq!(v.cause, Cause::AuthFailed);
    }
}
