//! Pure: what a PostgreSQL error (by SQLSTATE) means for the sysadmin, as a [`Verdict`].

use super::tls::SslMode;
use crate::classify::Verdict;
use crate::model::Cause;

pub const HINT_AUTH: &str = "the server refused the login: wrong password, unknown role, or no \
pg_hba.conf line allows this user from this address (the server log names which)";
pub const HINT_DB: &str = "the login worked but the database cannot be used: it does not exist, \
the server is starting up or shutting down, or all connection slots are taken";
pub const HINT_TWOPHASE: &str = "the server does not allow prepared transactions: set \
max_prepared_transactions > 0 in postgresql.conf (it needs a restart); a distributed transaction \
manager (XA, MSDTC through ODBC) cannot commit here until it does";
pub const HINT_PROTOCOL: &str = "the peer does not speak the PostgreSQL protocol as expected: a \
different service on this port, a proxy, or TLS required by a pooler";
pub const HINT_SQL: &str = "the server rejected a statement; see the detail";

/// A PostgreSQL error, by SQLSTATE, with `detail` saying what was seen. `None` code: not a
/// server error.
pub fn classify_sqlstate(code: Option<&str>, detail: String) -> Verdict {
    let (cause, hint) = match code {
        Some("28P01" | "28000") => (Cause::AuthFailed, HINT_AUTH),
        Some("3D000" | "57P03" | "53300" | "57P01") => (Cause::DbUnavailable, HINT_DB),
        Some(_) => (Cause::SqlError, HINT_SQL),
        None => (Cause::ProtocolError, HINT_PROTOCOL),
    };
    Verdict::new(cause, detail, hint)
}

/// A failure of PREPARE TRANSACTION. SQLSTATE 55000 with max_prepared_transactions = 0.
pub fn classify_twophase(code: Option<&str>, detail: String) -> Verdict {
    if code == Some("55000") || detail.contains("prepared transactions are disabled") {
        Verdict::new(Cause::DtcUnavailable, detail, HINT_TWOPHASE)
    } else {
        classify_sqlstate(code, detail)
    }
}

/// The SQLSTATE (for server errors) and a one-line detail of a driver error.
pub fn error_detail(e: &tokio_postgres::Error) -> (Option<String>, String) {
    match e.as_db_error() {
        Some(db) => (
            Some(db.code().code().to_string()),
            format!("{} {}: {}", db.severity(), db.code().code(), db.message()),
        ),
        None => (None, e.to_string()),
    }
}

pub const HINT_NO_TLS: &str = "the server does not offer TLS (ssl = off in postgresql.conf, or a \
pooler in front that does not speak it): turn ssl on with a certificate, or, if the risk is \
accepted, use sslmode=prefer or disable";
pub const HINT_UNTRUSTED: &str = "the server's certificate is not from a CA this host trusts \
(self-signed or a private CA): give that CA's certificate in sslrootcert, or use sslmode=require \
to encrypt without verifying";
pub const HINT_WRONG_NAME: &str = "the server's certificate does not name the host in the \
target: connect by a name the certificate carries, or use sslmode=verify-ca to check the CA \
only";
pub const HINT_TLS: &str = "the TLS handshake with the server failed: see the detail (protocol \
versions, ciphers, a TLS-intercepting middlebox)";
pub const HINT_HOSTSSL: &str = "pg_hba.conf allows this login only over TLS (a hostssl line): \
use sslmode=prefer, require or stronger";

/// A login failure: TLS trouble by what the driver and rustls said, else by SQLSTATE (with
/// pg_hba.conf's "no encryption" refusal pointed at sslmode).
pub fn classify_login_error(e: &tokio_postgres::Error, mode: SslMode) -> Verdict {
    let (code, detail) = error_detail(e);
    let text = full_text(e);
    if code.is_none() && text.contains("TLS") {
        let hint = if text.contains("server does not support TLS") {
            HINT_NO_TLS
        } else if text.contains("UnknownIssuer") || text.contains("BadSignature") {
            HINT_UNTRUSTED
        } else if text.contains("NotValidForName") || text.contains("not valid for name") {
            HINT_WRONG_NAME
        } else {
            HINT_TLS
        };
        return Verdict::new(
            Cause::TlsError,
            format!("{text} (sslmode={})", mode.as_str()),
            hint,
        );
    }
    if code.as_deref() == Some("28000") && detail.contains("no encryption") {
        return Verdict::new(Cause::AuthFailed, detail, HINT_HOSTSSL);
    }
    classify_sqlstate(code.as_deref(), detail)
}

/// The error and its sources in one line (tokio-postgres puts rustls's reason in a source).
fn full_text(e: &tokio_postgres::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

/// A driver error, classified by its SQLSTATE.
pub fn classify_error(e: &tokio_postgres::Error) -> Verdict {
    let (code, detail) = error_detail(e);
    classify_sqlstate(code.as_deref(), detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstate_table() {
        let rows = [
            (Some("28P01"), Cause::AuthFailed),
            (Some("28000"), Cause::AuthFailed),
            (Some("3D000"), Cause::DbUnavailable),
            (Some("53300"), Cause::DbUnavailable),
            (Some("42601"), Cause::SqlError),
            (None, Cause::ProtocolError),
        ];
        for (code, cause) in rows {
            let v = classify_sqlstate(code, "seen".into());
            assert_eq!((v.cause, v.detail.as_str()), (cause, "seen"), "{code:?}");
        }
        assert_eq!(
            classify_twophase(Some("55000"), String::new()).cause,
            Cause::DtcUnavailable
        );
        assert_eq!(
            classify_twophase(None, "prepared transactions are disabled".into()).cause,
            Cause::DtcUnavailable
        );
        assert_eq!(
            classify_twophase(Some("28P01"), String::new()).cause,
            Cause::AuthFailed
        );
    }
}
