//! Pure: what a SQL Server error (number, state) or a driver error means for the sysadmin:
//! a [`Verdict`] (a [`Cause`] from the fixed list, what was seen, and a hint naming what to check
//! next), the same shape every classifier in the tool returns.

use super::tls::{operator_text, tls_hint, tls_problem, TlsProblem};
use crate::classify::Verdict;
use crate::model::Cause;

/// A verdict whose detail the caller fills in (it knows what was seen).
fn meaning(cause: Cause, hint: impl Into<std::borrow::Cow<'static, str>>) -> Verdict {
    Verdict::new(cause, String::new(), hint)
}

const MSDTC_CHECKLIST: &str = "On BOTH machines (this client's zone and the SQL Server host): the \
Distributed Transaction Coordinator service (MSDTC) must be running; in Component Services > \
Local DTC > Security, enable Network DTC Access, Allow Inbound and Allow Outbound (and a matching \
authentication mode); the firewalls in between must allow TCP 135 (RPC endpoint mapper) and the \
dynamic RPC port range MSDTC uses, in both directions; and each side must resolve the other's \
NetBIOS/DNS name to the right address (run the `epm` and `resolve` checks of dtcprobe for those).";

/// The meaning of the state of error 18456, as documented by Microsoft. Servers send state 1 to
/// clients (the real state is only in the server's error log), so this is mostly useful when
/// someone reads that log, or for servers configured to reveal it.
pub fn login_failed_state(state: u8) -> &'static str {
    match state {
        1 => "state 1 is what the server tells every client (the real reason is hidden on purpose: read the \
              SQL Server error log on the server for the true state)",
        2 | 5 => "the login (user name) does not exist on this server",
        6 => "a Windows login name was used with SQL Server authentication",
        7 => "the login is disabled, and the password is also wrong",
        8 => "wrong password",
        9 => "the password is not valid (policy)",
        11 | 12 => "the login is valid but may not connect (server access / CONNECT SQL permission denied)",
        13 => "the SQL Server service is paused",
        18 => "the password must be changed before logging in",
        38 | 46 => "the login's database (requested or default) could not be opened",
        58 => "the server accepts Windows authentication only (SQL Server authentication is disabled)",
        102..=111 => "Microsoft Entra ID (Azure AD) authentication failure",
        122..=124 => "the user name or the password was empty",
        126 => "the database requested by the login does not exist",
        132 | 133 => "Microsoft Entra ID (Azure AD) authentication failure",
        _ => "unlisted state: read the SQL Server error log on the server for the reason",
    }
}

/// Classifies a SQL Server error by number (and state, for 18456).
pub fn classify_server_error(number: u32, state: u8) -> Verdict {
    use Cause::*;
    let mut verdict = match number {
        18456 => meaning(
            AuthFailed,
            format!(
                "login failed (error 18456, state {state}: {}). Check the user name and password, that \
                 the login exists and is enabled, and that the server allows SQL Server authentication \
                 (mixed mode)",
                login_failed_state(state)
            ),
        ),
        18452 => meaning(
            AuthFailed,
            "login from an untrusted domain (18452): Windows authentication failed; the client's \
             domain is not trusted by the server's, or Kerberos/NTLM was refused",
        ),
        18470 => meaning(AuthFailed, "the login is disabled (18470): ALTER LOGIN ... ENABLE"),
        18486 => meaning(AuthFailed, "the login is locked out by the password policy (18486)"),
        18487 | 18488 => meaning(AuthFailed, "the password has expired or must be changed (18487/18488)"),
        18461 => meaning(AuthFailed, "the server is in single-user mode and the one connection is taken (18461)"),
        18401 => meaning(
            DbUnavailable,
            "the server is in script upgrade mode (18401): only administrators may connect while \
             it upgrades its databases, typically for minutes right after a cumulative update or \
             service pack was installed. Wait, then retry; the SQL Server error log shows progress",
        ),
        18451 => meaning(
            DbUnavailable,
            "only administrators may connect at this time (18451): the instance runs in single-user \
             or minimal-configuration mode (started with -m or -f), e.g. for maintenance",
        ),
        40615 => meaning(
            Prohibited,
            "the Azure SQL server firewall does not allow this client's IP address (40615): add a \
             firewall rule for this zone's outbound address (the message names it)",
        ),
        40532 => meaning(
            Config,
            "the Azure SQL gateway cannot open the server named in the login (40532): check the \
             server name in the host (and a user@server login form, where used)",
        ),
        4060 => meaning(
            DbUnavailable,
            "cannot open the requested database (4060): it does not exist, is offline or restoring, \
             or the login has no user in it. Check the database name and the login's user mapping",
        ),
        4064 => meaning(
            DbUnavailable,
            "cannot open the login's default database (4064): name a database in the target, or fix \
             the login's default database",
        ),
        911 => meaning(DbUnavailable, "the database does not exist (911): check the name"),
        916 => meaning(
            DbUnavailable,
            "the login cannot access this database (916): map the login to a user in the database",
        ),
        922 | 927 | 942 | 945 | 978 | 983 | 40613 => meaning(
            DbUnavailable,
            "the database exists but is not available now (recovering, restoring, offline, or a \
             non-readable availability-group secondary / failover in progress)",
        ),
        8501 => meaning(
            DtcUnavailable,
            format!("MSDTC on the SQL Server host is unavailable (8501): start the Distributed \
                     Transaction Coordinator service there (on a cluster: the clustered DTC resource). {MSDTC_CHECKLIST}"),
        ),
        8522 => meaning(
            DtcUnavailable,
            format!("MSDTC stopped the transaction (8522): usually the partner MSDTC could not be \
                     reached in time, or one side aborted. {MSDTC_CHECKLIST}"),
        ),
        8524 => meaning(
            DtcUnavailable,
            format!("the transaction could not be exported to the remote provider (8524): Network DTC \
                     Access or Allow Outbound is off, or the partner is unreachable. {MSDTC_CHECKLIST}"),
        ),
        7391 => meaning(
            DtcUnavailable,
            format!("the linked server could not begin a distributed transaction (7391): MSDTC between \
                     the two SQL Servers is blocked or misconfigured (Network DTC Access, Inbound/Outbound, \
                     firewall on TCP 135 and the dynamic RPC ports, name resolution both ways). {MSDTC_CHECKLIST}"),
        ),
        7392 => meaning(
            DtcUnavailable,
            format!("the linked server's provider could not start a transaction (7392): \
                     distributed transactions through this provider failed. {MSDTC_CHECKLIST}"),
        ),
        // "A nested transaction was required because the XACT_ABORT option was set to OFF":
        // a session setting, not the DTC path.
        7395 => meaning(
            SqlError,
            "the linked server's provider needs a nested transaction because XACT_ABORT is OFF \
             (7395): run SET XACT_ABORT ON before data modifications through a linked server \
             (dtcprobe's own distributed check sets it)",
        ),
        7390 => meaning(
            SqlError,
            "the linked server's OLE DB provider does not support the transaction interface SQL \
             Server needs (7390): use a provider that does (MSOLEDBSQL), or avoid the transaction \
             through this linked server",
        ),
        7416 => meaning(
            AuthFailed,
            "the linked server refused access because no login mapping exists (7416): add one with \
             sp_addlinkedsrvlogin, or set the linked server's security to use a remote login",
        ),
        3910 => meaning(
            SqlError,
            "transaction context in use by another session (3910): most often a loopback linked \
             server (one that points back to this same instance), which cannot take part in a \
             distributed transaction; use three-part names instead, or point the linked server \
             at the other instance",
        ),
        8525 => meaning(
            SqlError,
            "the session's distributed transaction already completed (8525): the session must \
             enlist in a new transaction or none; a client/session-state problem, not the DTC path",
        ),
        8508 => meaning(
            SqlError,
            "a COM QueryInterface call failed inside SQL Server (8508, \"QueryInterface failed for \
             ...\"): an interface the transaction needs is missing (provider or MSDTC component \
             registration), not the network path: read the message text for the interface",
        ),
        // Microsoft (MSSQLSERVER_7399): a generic error from the linked server's provider, most
        // often "Timeout expired"; the text after it names the real error. Not a DTC verdict.
        7399 => meaning(
            SqlError,
            "the linked server's OLE DB provider reported an error (7399): the text that follows \
             names it, most often \"Timeout expired\" (raise the `remote login timeout` / `remote \
             query timeout` server options, or check the remote server is reachable from the SQL \
             host) or a login/permission error on the remote server",
        ),
        1206 => meaning(
            DtcUnavailable,
            format!("MSDTC cancelled the distributed transaction (1206). {MSDTC_CHECKLIST}"),
        ),
        8509 | 8510 | 8512 | 8517 | 8518 | 8527 | 8506 | 8502 | 8504 => meaning(
            DtcUnavailable,
            format!("MSDTC refused or lost the transaction (error {number}). {MSDTC_CHECKLIST}"),
        ),
        7202 => meaning(
            SqlError,
            "the linked server is not defined on this SQL Server (7202): check sys.servers / the name",
        ),
        7411 => meaning(
            SqlError,
            "the linked server is not configured for data access (7411): sp_serveroption ... 'data access', 'true'",
        ),
        229 | 262 | 297 | 300 | 1031 => meaning(
            SqlError,
            "permission denied: the login may connect but lacks a permission the probe needs \
             (creating a #temp table needs only CONNECT; linked servers need a login mapping)",
        ),
        _ => meaning(
            SqlError,
            format!("SQL Server error {number}: see the message; look the number up in the SQL Server docs"),
        ),
    };
    verdict.detail = format!("error {number}, state {state}");
    verdict
}

/// What a driver-level failure looks like, independent of the driver crate (so it can be
/// table-tested).
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// An ERROR token from the server.
    Server {
        number: u32,
        state: u8,
        class: u8,
        message: String,
    },
    /// TLS handshake or certificate trouble.
    Tls(String),
    /// The connection was closed or reset while the TLS handshake was under way.
    TlsReset(String),
    /// The server says it is not the named instance the client asked for (PRELOGIN INSTOPT).
    InstanceMismatch { instance: String, port: u16 },
    /// The server declined the requested encryption level during PRELOGIN.
    EncryptionDeclined(String),
    /// `encrypt=strict`: the server did not answer the TLS ClientHello that TDS 8 sends first
    /// with TLS (it answered TDS 7, or hung up): it does not speak TDS 8.
    NoTlsFirst(String),
    /// The TCP connect itself failed, as the shared connect classifier saw it (the login opens
    /// its own connection after the `tcp` hop, and the path can break in between).
    Connect(Verdict),
    /// The connection closed or was reset.
    Closed(String),
    /// Our own timeout fired.
    Timeout(String),
    /// The bytes were not TDS, or not what TDS allows at this point.
    Protocol(String),
    /// The server answered, but not with what SQL Server returns for the statement.
    Unexpected(String),
    /// The server redirected us (Azure SQL gateway "redirect" policy).
    Routing { host: String, port: u16 },
    /// This host's side of Windows authentication (NTLM) could not produce or answer a token
    /// (`tx_enlist`'s own session; the `login` hop's come through tiberius).
    Sspi(String),
}

/// What to do when a server does not speak TDS 8 (TLS before PRELOGIN).
pub const HINT_NO_TLS_FIRST: &str = "the server does not speak TDS 8 (TLS before any TDS packet), \
which encrypt=strict requires: SQL Server before 2022 answers the TLS ClientHello with TDS 7 or \
hangs up. Use encrypt=on (TLS inside TDS; the certificate is still validated unless \
trust_server_certificate=true) for this server, or move it to SQL Server 2022 or later. A \
TLS-intercepting device between the zones, or a server sharing no TLS version with this client \
(TLS 1.2+), can hang up the same way";

pub fn classify_failure(f: &Failure) -> Verdict {
    let mut verdict = match f {
        Failure::Server { number, state, .. } => classify_server_error(*number, *state),
        Failure::Tls(msg) => meaning(Cause::TlsError, tls_hint(tls_problem(msg))),
        Failure::TlsReset(_) => meaning(
            Cause::TlsError,
            tls_hint(TlsProblem::ResetDuringHandshake),
        ),
        Failure::InstanceMismatch { instance, port } => meaning(
            Cause::Config,
            format!(
                "the SQL Server listening on port {port} is not instance `{instance}`: a static \
                 port in the target may belong to another instance, or the SQL Server Browser \
                 pointed elsewhere. Check the instance's TCP port in SQL Server Configuration \
                 Manager"
            ),
        ),
        Failure::EncryptionDeclined(_) => meaning(
            Cause::TlsError,
            "the server declined TLS for this connection (it has no certificate / encryption disabled): \
             give the server a certificate, or if the risk is accepted, encrypt=off or encrypt=none",
        ),
        Failure::NoTlsFirst(_) => meaning(Cause::TlsError, HINT_NO_TLS_FIRST),
        Failure::Connect(c) => meaning(c.cause, c.hint.clone()),
        Failure::Closed(_) => meaning(
            Cause::Reset,
            "the server (or something in between) closed the connection during the exchange: an \
             encryption mismatch the server refused, a server at its connection limit, or a \
             firewall/IPS that inspects and kills TDS; the SQL Server error log may say which",
        ),
        Failure::Timeout(_) => meaning(
            Cause::Timeout,
            "the server accepted TCP but stopped answering: a hung or overloaded SQL Server, a \
             non-SQL service on this port, or a firewall/IPS that lets the handshake through and then \
             drops the traffic",
        ),
        Failure::Protocol(_) => meaning(
            Cause::ProtocolError,
            "the peer does not speak TDS as SQL Server does: is this port really SQL Server (and not \
             an HTTP proxy, SSH or another service)? A TLS-intercepting middlebox can cause this too",
        ),
        Failure::Unexpected(_) => meaning(
            Cause::SqlError,
            "the server accepted the statement but did not behave as SQL Server does (the row written \
             inside the transaction did not read back, or the transaction did not end): a TDS proxy or \
             a non-SQL Server endpoint may be in between",
        ),
        Failure::Routing { host, port } => meaning(
            Cause::ProtocolError,
            format!(
                "the server redirected the client to {host}:{port} (Azure SQL redirect connection \
                 policy): check that address from this zone, typically TCP 11000-11999"
            ),
        ),
        Failure::Sspi(_) => meaning(
            Cause::AuthFailed,
            "this host could not complete Windows authentication (NTLM) with the server: for \
             auth=windows check the DOMAIN\\user and password, for auth=integrated that the \
             account dtcprobe runs as may use NTLM (policy \"Network security: Restrict NTLM\"); \
             this session speaks NTLM, not Kerberos",
        ),
    };
    verdict.detail = failure_detail(f);
    verdict
}

/// What was seen, in one line.
fn failure_detail(f: &Failure) -> String {
    match f {
        Failure::Server {
            number,
            state,
            class,
            message,
        } => format!("error {number}, state {state}, class {class}: {message}"),
        Failure::Tls(m) => format!("TLS: {}", operator_text(m)),
        Failure::TlsReset(m) => format!("TLS: the connection was reset during the handshake: {m}"),
        Failure::InstanceMismatch { instance, port } => format!(
            "the server on port {port} answered PRELOGIN saying it is not instance `{instance}`"
        ),
        Failure::EncryptionDeclined(m) => format!("encryption: {m}"),
        Failure::NoTlsFirst(m) => format!("TLS first (TDS 8, encrypt=strict): {m}"),
        Failure::Connect(c) => format!("TCP connect: {}", c.detail),
        Failure::Closed(m) => format!("connection closed: {m}"),
        Failure::Timeout(m) => m.clone(),
        Failure::Protocol(m) => format!("protocol: {m}"),
        Failure::Routing { host, port } => format!("redirected to {host}:{port}"),
        Failure::Unexpected(m) => format!("unexpected answer: {m}"),
        Failure::Sspi(m) => format!("Windows authentication (NTLM): {m}"),
    }
}

/// Maps tiberius' error type into a [`Failure`].
pub fn failure_from_tiberius(e: &tiberius::error::Error) -> Failure {
    use tiberius::error::Error as E;
    match e {
        E::Server(t) => Failure::Server {
            number: t.code(),
            state: t.state(),
            class: t.class(),
            message: t.message().to_string(),
        },
        E::Tls(m) => Failure::Tls(m.clone()),
        E::Protocol(m) if m.contains("server rejected the requested instance") => {
            Failure::InstanceMismatch {
                instance: quoted(m).unwrap_or_default(),
                port: 0,
            }
        }
        E::Protocol(m) if m.contains("encryption level") => {
            Failure::EncryptionDeclined(m.to_string())
        }
        E::Io { kind, message } => {
            use std::io::ErrorKind as K;
            match kind {
                K::TimedOut => Failure::Timeout(message.clone()),
                K::ConnectionReset
                | K::ConnectionAborted
                | K::UnexpectedEof
                | K::BrokenPipe
                | K::NotConnected => Failure::Closed(message.clone()),
                K::InvalidData => {
                    // tokio-rustls reports alerts and certificate errors as InvalidData io
                    // errors rendering the rustls error.
                    if tls_problem(message) != TlsProblem::Other
                        || message.contains("received fatal alert")
                        || message.contains("invalid peer certificate")
                        || message.contains("peer is incompatible")
                    {
                        Failure::Tls(message.clone())
                    } else {
                        Failure::Protocol(message.clone())
                    }
                }
                _ => Failure::Closed(format!("{kind:?}: {message}")),
            }
        }
        E::Routing { host, port } => Failure::Routing {
            host: host.clone(),
            port: *port,
        },
        other => Failure::Protocol(other.to_string()),
    }
}

/// The first `"..."` quoted text in tiberius's message (its `{:?}` of the instance name).
fn quoted(m: &str) -> Option<String> {
    let start = m.find('"')? + 1;
    let len = m[start..].find('"')?;
    Some(m[start..start + len].to_string())
}

/// Pure: a TDS version number (LOGINACK / `sys.dm_exec_connections.protocol_version`) as text.
pub fn tds_version_name(v: u32) -> String {
    match v {
        0x0800_0000 => "8.0".into(),
        0x7400_0004 => "7.4".into(),
        0x730B_0003 => "7.3B".into(),
        0x730A_0003 => "7.3A".into(),
        0x7209_0002 => "7.2".into(),
        0x7100_0001 => "7.1 SP1".into(),
        0x0700_0001 | 0x7100_0000 => "7.1".into(),
        0x0700_0000 => "7.0".into(),
        other => format!("0x{other:08X}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_numbers_map_to_causes() {
        let table: &[(u32, Cause)] = &[
            (18456, Cause::AuthFailed),
            (18452, Cause::AuthFailed),
            (18470, Cause::AuthFailed),
            (18486, Cause::AuthFailed),
            (18488, Cause::AuthFailed),
            (4060, Cause::DbUnavailable),
            (4064, Cause::DbUnavailable),
            (911, Cause::DbUnavailable),
            (40613, Cause::DbUnavailable),
            (8501, Cause::DtcUnavailable),
            (8522, Cause::DtcUnavailable),
            (8524, Cause::DtcUnavailable),
            (7391, Cause::DtcUnavailable),
            (7399, Cause::SqlError),
            (1206, Cause::DtcUnavailable),
            (8509, Cause::DtcUnavailable),
            (8510, Cause::DtcUnavailable),
            (7202, Cause::SqlError),
            (102, Cause::SqlError),
            (208, Cause::SqlError),
        ];
        for (n, want) in table {
            let v = classify_server_error(*n, 1);
            assert_eq!(v.cause, *want, "error {n}");
            assert!(!v.hint.is_empty());
        }
    }

    /// The corrections and additions of issue 17 (sources in docs/mssql.md).
    #[test]
    fn corrected_and_added_error_numbers() {
        let table: &[(u32, Cause, &str)] = &[
            (7395, Cause::SqlError, "XACT_ABORT"),
            (8525, Cause::SqlError, "session"),
            (8508, Cause::SqlError, "QueryInterface"),
            (7399, Cause::SqlError, "remote query timeout"),
            (3910, Cause::SqlError, "loopback"),
            (8518, Cause::DtcUnavailable, "Network DTC Access"),
            (8527, Cause::DtcUnavailable, "Network DTC Access"),
            (7390, Cause::SqlError, "transaction interface"),
            (7416, Cause::AuthFailed, "login mapping"),
            (18401, Cause::DbUnavailable, "script upgrade mode"),
            (18451, Cause::DbUnavailable, "administrators"),
            (40615, Cause::Prohibited, "firewall"),
            (40532, Cause::Config, "server name"),
        ];
        for (n, cause, needle) in table {
            let v = classify_server_error(*n, 1);
            assert_eq!(v.cause, *cause, "error {n}");
            assert!(v.hint.contains(needle), "{n}: {}", v.hint);
        }
        for (state, needle) in [
            (122, "empty"),
            (123, "empty"),
            (124, "empty"),
            (126, "does not exist"),
        ] {
            let h = classify_server_error(18456, state).hint;
            assert!(h.contains(needle), "state {state}: {h}");
        }
    }

    #[test]
    fn tls_reset_instance_mismatch_and_library_text() {
        let v = classify_failure(&Failure::TlsReset("connection reset by peer".into()));
        assert_eq!(v.cause, Cause::TlsError);
        assert!(v.hint.contains("Schannel"), "{}", v.hint);
        let v = classify_failure(&Failure::InstanceMismatch {
            instance: "SALES".into(),
            port: 1500,
        });
        assert_eq!(v.cause, Cause::Config);
        assert!(
            v.hint.contains("1500") && v.hint.contains("SALES"),
            "{}",
            v.hint
        );
        assert!(
            v.detail.contains("1500") && v.detail.contains("SALES"),
            "{}",
            v.detail
        );
        let tiberius = "the server's certificate was rejected during the TLS handshake: \
            UnknownIssuer. To connect anyway you can: (1) trust a specific CA certificate with \
            `Config::trust_cert_ca(path)`";
        let v = classify_failure(&Failure::Tls(tiberius.into()));
        assert!(!v.detail.contains("Config::"), "{}", v.detail);
        assert!(v.hint.contains("trust_server_certificate"), "{}", v.hint);
        let f = failure_from_tiberius(&tiberius::error::Error::Protocol(
            "server rejected the requested instance \"SALES\" (INSTOPT validity byte was non-zero, got \"x\")".into(),
        ));
        assert!(
            matches!(f, Failure::InstanceMismatch { ref instance, .. } if instance == "SALES"),
            "{f:?}"
        );
        let f = failure_from_tiberius(&tiberius::error::Error::Io {
            kind: std::io::ErrorKind::InvalidData,
            message: "received fatal alert: HandshakeFailure".into(),
        });
        assert!(matches!(f, Failure::Tls(_)), "{f:?}");
        assert!(classify_failure(&f).hint.contains("Schannel"));
    }

    #[test]
    fn login_failed_names_the_state() {
        for (state, needle) in [
            (8, "wrong password"),
            (2, "does not exist"),
            (58, "Windows authentication only"),
            (1, "error log"),
        ] {
            let v = classify_server_error(18456, state);
            assert!(v.hint.contains(&format!("state {state}")), "{}", v.hint);
            assert!(v.hint.contains(needle), "state {state}: {}", v.hint);
        }
    }

    #[test]
    fn dtc_hints_name_the_msdtc_settings() {
        for n in [8501, 8524, 7391] {
            let h = classify_server_error(n, 1).hint;
            for needle in ["Network DTC Access", "135", "Inbound"] {
                assert!(h.contains(needle), "{n}: {h}");
            }
        }
    }

    #[test]
    fn driver_failures() {
        let table = [
            (
                Failure::Tls("invalid peer certificate: UnknownIssuer".into()),
                Cause::TlsError,
                "trust_server_certificate",
            ),
            (
                Failure::Tls("invalid peer certificate: NotValidForName".into()),
                Cause::TlsError,
                "does not name",
            ),
            (
                Failure::EncryptionDeclined("x".into()),
                Cause::TlsError,
                "declined",
            ),
            (Failure::Closed("eof".into()), Cause::Reset, "closed"),
            // A connect that fails at login time keeps the tcp hop's classification.
            (
                Failure::Connect(
                    crate::classify::classify_connect(crate::classify::ConnectOutcome::Icmp {
                        v6: false,
                        icmp_type: 3,
                        code: 13,
                        from: None,
                        by_target: false,
                    })
                    .unwrap(),
                ),
                Cause::Prohibited,
                "administratively prohibited",
            ),
            (
                Failure::Connect(
                    crate::classify::classify_connect(crate::classify::ConnectOutcome::NoReply(
                        std::time::Duration::from_secs(1),
                    ))
                    .unwrap(),
                ),
                Cause::Timeout,
                "silently dropped",
            ),
            (
                Failure::Timeout("t".into()),
                Cause::Timeout,
                "stopped answering",
            ),
            (
                Failure::Protocol("junk".into()),
                Cause::ProtocolError,
                "TDS",
            ),
            (
                Failure::Routing {
                    host: "h".into(),
                    port: 11001,
                },
                Cause::ProtocolError,
                "h:11001",
            ),
        ];
        for (f, cause, needle) in table {
            let v = classify_failure(&f);
            assert_eq!(v.cause, cause, "{f:?}");
            assert!(v.hint.contains(needle), "{f:?}: {}", v.hint);
        }
    }

    #[test]
    fn tiberius_errors_are_mapped() {
        use tiberius::error::Error as E;
        let io = |kind| E::Io {
            kind,
            message: "m".into(),
        };
        assert!(matches!(
            failure_from_tiberius(&io(std::io::ErrorKind::UnexpectedEof)),
            Failure::Closed(_)
        ));
        assert!(matches!(
            failure_from_tiberius(&io(std::io::ErrorKind::TimedOut)),
            Failure::Timeout(_)
        ));
        assert!(matches!(
            failure_from_tiberius(&E::Tls("x".into())),
            Failure::Tls(_)
        ));
        assert!(matches!(
            failure_from_tiberius(&E::Protocol(
                "Server does not allow the requested encryption level.".into()
            )),
            Failure::EncryptionDeclined(_)
        ));
        assert!(matches!(
            failure_from_tiberius(&E::Protocol("bad token".into())),
            Failure::Protocol(_)
        ));
        assert!(matches!(
            failure_from_tiberius(&E::Utf16),
            Failure::Protocol(_)
        ));
    }

    #[test]
    fn tds_versions() {
        assert_eq!(tds_version_name(0x74000004), "7.4");
        assert_eq!(tds_version_name(0x08000000), "8.0");
        assert_eq!(tds_version_name(0x12345678), "0x12345678");
    }
}
