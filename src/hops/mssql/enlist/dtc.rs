//! This host's MSDTC, behind a small trait.
//!
//! Why a trait: the real implementation is COM on Windows (xolehlp's DtcGetTransactionManagerExW,
//! ITransactionDispenser, ITransactionExportFactory/ITransactionExport, ITransaction::Abort; see
//! [`super::windows`]) and can only run there; the tests drive the same hop with a scripted
//! implementation that shares its transactions with the TDS test peer, so the whole TDS side of
//! the hop (get address, propagate, work inside the enlisted transaction, abort, verify) is
//! exercised end to end on Linux.
//!
//! The calls block (they are RPCs to the local MSDTC service, and an export makes this host's
//! MSDTC talk to the SQL host's MSDTC), so the hop runs them on a blocking thread under its
//! timeout.

use thiserror::Error;

/// A failed MSDTC call: which call, and its HRESULT.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{call} failed: {}", hresult_text(*.hresult))]
pub struct DtcError {
    /// The COM call, e.g. `ITransactionExport::Export`.
    pub call: &'static str,
    pub hresult: u32,
}

/// This host's transaction manager.
pub trait LocalDtc: Send + Sync {
    /// Begins a transaction (ITransactionDispenser::BeginTransaction).
    fn begin(&self) -> Result<Box<dyn LocalTransaction>, DtcError>;
}

/// A transaction this host's MSDTC began.
pub trait LocalTransaction: Send {
    /// The unit of work (the transaction's GUID), for the report.
    fn id(&self) -> String;
    /// Exports the transaction to the transaction manager at `whereabouts` (what SQL Server
    /// answered to TM_GET_DTC_ADDRESS) and returns the cookie SQL Server imports. This is the
    /// step where this host's MSDTC first contacts the SQL host's MSDTC.
    fn export(&mut self, whereabouts: &[u8]) -> Result<Vec<u8>, DtcError>;
    /// Aborts the transaction (ITransaction::Abort): every enlisted party rolls back.
    fn abort(&mut self) -> Result<(), DtcError>;
}

pub const XACT_E_ABORTED: u32 = 0x8004_D019;
pub const XACT_E_CONNECTION_DENIED: u32 = 0x8004_D01D;
pub const XACT_E_CONNECTION_DOWN: u32 = 0x8004_D01C;
pub const XACT_E_INVALIDCOOKIE: u32 = 0x8004_D015;
pub const XACT_E_NETWORK_TX_DISABLED: u32 = 0x8004_D024;
pub const XACT_E_NOIMPORTOBJECT: u32 = 0x8004_D014;
pub const XACT_E_NOTRANSACTION: u32 = 0x8004_D00E;
pub const XACT_E_PARTNER_NETWORK_TX_DISABLED: u32 = 0x8004_D025;
pub const XACT_E_REENLISTTIMEOUT: u32 = 0x8004_D01E;
pub const XACT_E_TMNOTAVAILABLE: u32 = 0x8004_D01B;
pub const XACT_E_UNABLE_TO_READ_DTC_CONFIG: u32 = 0x8004_D027;
/// "Unable to enlist in the transaction."
pub const XACT_E_NOENLIST: u32 = 0x8004_D00A;
/// The transaction is busy with another operation (System.Transactions' DtcProxyShim retries
/// Export on it: 100 times, 50 ms apart).
pub const XACT_E_ALREADYINPROGRESS: u32 = 0x8004_D018;
/// This host's MSDTC log is full.
pub const XACT_E_LOGFULL: u32 = 0x8004_D01A;
/// The destination transaction manager (the SQL host's MSDTC) is not available.
pub const XACT_E_DEST_TMNOTAVAILABLE: u32 = 0x8004_D022;
/// This host's MSDTC could not push the transaction to the destination (winerror.h: firewall,
/// NetBIOS names, network transactions not enabled on one side).
pub const XACT_E_PUSH_COMM_FAILURE: u32 = 0x8004_D02A;
/// The destination could not pull the transaction from this host's MSDTC (the same causes, on
/// the way back).
pub const XACT_E_PULL_COMM_FAILURE: u32 = 0x8004_D02B;
/// The request to connect to the specified transaction coordinator was denied.
pub const XACT_E_CONNECTION_REQUEST_DENIED: u32 = 0x8004_D100;
/// HRESULT_FROM_WIN32(RPC_S_SERVER_UNAVAILABLE = 1722).
pub const RPC_S_SERVER_UNAVAILABLE: u32 = 0x8007_06BA;
/// HRESULT_FROM_WIN32(RPC_S_CALL_FAILED = 1726).
pub const RPC_S_CALL_FAILED: u32 = 0x8007_06BE;
/// E_ACCESSDENIED (HRESULT_FROM_WIN32(ERROR_ACCESS_DENIED = 5)).
pub const E_ACCESSDENIED: u32 = 0x8007_0005;

/// The symbolic name of an HRESULT this hop knows, or `None`.
pub fn hresult_name(hr: u32) -> Option<&'static str> {
    Some(match hr {
        XACT_E_ABORTED => "XACT_E_ABORTED",
        XACT_E_CONNECTION_DENIED => "XACT_E_CONNECTION_DENIED",
        XACT_E_CONNECTION_DOWN => "XACT_E_CONNECTION_DOWN",
        XACT_E_INVALIDCOOKIE => "XACT_E_INVALIDCOOKIE",
        XACT_E_NETWORK_TX_DISABLED => "XACT_E_NETWORK_TX_DISABLED",
        XACT_E_NOIMPORTOBJECT => "XACT_E_NOIMPORTOBJECT",
        XACT_E_NOTRANSACTION => "XACT_E_NOTRANSACTION",
        XACT_E_PARTNER_NETWORK_TX_DISABLED => "XACT_E_PARTNER_NETWORK_TX_DISABLED",
        XACT_E_REENLISTTIMEOUT => "XACT_E_REENLISTTIMEOUT",
        XACT_E_TMNOTAVAILABLE => "XACT_E_TMNOTAVAILABLE",
        XACT_E_UNABLE_TO_READ_DTC_CONFIG => "XACT_E_UNABLE_TO_READ_DTC_CONFIG",
        XACT_E_NOENLIST => "XACT_E_NOENLIST",
        XACT_E_ALREADYINPROGRESS => "XACT_E_ALREADYINPROGRESS",
        XACT_E_LOGFULL => "XACT_E_LOGFULL",
        XACT_E_DEST_TMNOTAVAILABLE => "XACT_E_DEST_TMNOTAVAILABLE",
        XACT_E_PUSH_COMM_FAILURE => "XACT_E_PUSH_COMM_FAILURE",
        XACT_E_PULL_COMM_FAILURE => "XACT_E_PULL_COMM_FAILURE",
        XACT_E_CONNECTION_REQUEST_DENIED => "XACT_E_CONNECTION_REQUEST_DENIED",
        RPC_S_SERVER_UNAVAILABLE => "RPC_S_SERVER_UNAVAILABLE (1722)",
        RPC_S_CALL_FAILED => "RPC_S_CALL_FAILED (1726)",
        E_ACCESSDENIED => "E_ACCESSDENIED (5)",
        _ => return None,
    })
}

/// `0x8004D01B (XACT_E_TMNOTAVAILABLE)`, or just the hex for unknown values.
pub fn hresult_text(hr: u32) -> String {
    match hresult_name(hr) {
        Some(n) => format!("0x{hr:08X} ({n})"),
        None => format!("0x{hr:08X}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_text_names_call_and_hresult() {
        let e = DtcError {
            call: "ITransactionExport::Export",
            hresult: XACT_E_PARTNER_NETWORK_TX_DISABLED,
        };
        assert_eq!(
            e.to_string(),
            "ITransactionExport::Export failed: 0x8004D025 (XACT_E_PARTNER_NETWORK_TX_DISABLED)"
        );
        assert_eq!(hresult_text(0x8000_4005), "0x80004005");
        assert_eq!(
            hresult_name(RPC_S_SERVER_UNAVAILABLE),
            Some("RPC_S_SERVER_UNAVAILABLE (1722)")
        );
    }
}
