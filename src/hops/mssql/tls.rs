//! Pure: what a TLS failure during a SQL Server login means.
//!
//! tiberius passes its rustls errors on as text only (`Error::Tls(String)`, or an `Error::Io`
//! whose message is the io::Error's rendering of the rustls error), so the error *type* cannot be
//! downcast here. Instead of guessing words, [`tls_problem`] keys on rustls's error types: it
//! renders typed rustls errors with rustls's own `Display` (the same rustls version tiberius
//! links, so the same texts) and looks for those renderings in the message. A rustls upgrade that
//! changes a text changes both sides at once; the unit tests pin each type to its problem.
//!
//! [`operator_text`] also removes what tiberius adds for Rust programmers (its advice names
//! `Config::trust_cert_ca(path)` and friends), which means nothing in an operator's report.

use std::time::Duration;

use rustls::pki_types::{ServerName, UnixTime};
use rustls::{AlertDescription, CertificateError, Error as RustlsError, PeerIncompatible};

/// The TLS trouble an operator can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsProblem {
    /// The certificate chains to no CA this machine trusts (self-signed, private CA).
    Untrusted,
    /// The certificate does not name the host connected to.
    WrongName,
    Expired,
    NotYetValid,
    /// No TLS version or cipher suite in common (the server refused ours, or offered only
    /// what rustls refuses: TLS 1.0/1.1, old ciphers).
    NoCommonVersionOrCipher,
    /// The server reset the connection in the middle of the TLS handshake: what SQL Server on
    /// Windows does when Schannel finds no common TLS version or cipher (OS error 10054).
    ResetDuringHandshake,
    Other,
}

/// A marker that no real message contains, to cut renderings before their variable part.
const SENTINEL_NAME: &str = "dtcprobe-sentinel.invalid";
const SENTINEL_SECS: u64 = 987_654_321;

/// The fixed part of `rendered`: everything before `sentinel` (all of it without one).
fn fixed_part(rendered: String, sentinel: &str) -> String {
    match rendered.find(sentinel) {
        Some(at) => rendered[..at].to_string(),
        None => rendered,
    }
}

/// (rendering, problem) for every rustls error type dtcprobe gives a specific hint for.
/// Certificate errors are rendered on their own (tiberius quotes them without rustls's
/// "invalid peer certificate: " prefix in its own message), so both forms match.
fn keyed_renderings() -> Vec<(String, TlsProblem)> {
    use TlsProblem::*;
    let time = UnixTime::since_unix_epoch(Duration::from_secs(SENTINEL_SECS));
    let secs = SENTINEL_SECS.to_string();
    let sentinel_name = ServerName::try_from(SENTINEL_NAME)
        .map(|n| n.to_owned())
        .ok();
    let mut v: Vec<(String, TlsProblem)> = vec![
        (CertificateError::UnknownIssuer.to_string(), Untrusted),
        (CertificateError::NotValidForName.to_string(), WrongName),
        (CertificateError::Expired.to_string(), Expired),
        (
            fixed_part(
                CertificateError::ExpiredContext {
                    time,
                    not_after: time,
                }
                .to_string(),
                &secs,
            ),
            Expired,
        ),
        (CertificateError::NotValidYet.to_string(), NotYetValid),
        (
            fixed_part(
                CertificateError::NotValidYetContext {
                    time,
                    not_before: time,
                }
                .to_string(),
                &secs,
            ),
            NotYetValid,
        ),
    ];
    if let Some(expected) = sentinel_name {
        v.push((
            fixed_part(
                CertificateError::NotValidForNameContext {
                    expected,
                    presented: Vec::new(),
                }
                .to_string(),
                SENTINEL_NAME,
            ),
            WrongName,
        ));
    }
    for alert in [
        AlertDescription::HandshakeFailure,
        AlertDescription::ProtocolVersion,
        AlertDescription::InsufficientSecurity,
    ] {
        v.push((
            RustlsError::AlertReceived(alert).to_string(),
            NoCommonVersionOrCipher,
        ));
    }
    // Every PeerIncompatible variant means "nothing in common"; its rendering is a fixed prefix
    // followed by the variant's name.
    let variant = format!("{:?}", PeerIncompatible::NoCipherSuitesInCommon);
    v.push((
        fixed_part(
            RustlsError::PeerIncompatible(PeerIncompatible::NoCipherSuitesInCommon).to_string(),
            &variant,
        ),
        NoCommonVersionOrCipher,
    ));
    v
}

/// Which [`TlsProblem`] a TLS error message (tiberius's text of a rustls error) shows.
pub fn tls_problem(message: &str) -> TlsProblem {
    keyed_renderings()
        .into_iter()
        .filter(|(text, _)| !text.is_empty())
        .find(|(text, _)| message.contains(text.as_str()))
        .map(|(_, p)| p)
        .unwrap_or(TlsProblem::Other)
}

/// The message without the advice tiberius appends for programmers (API names, crate
/// features): everything from "To connect anyway" on, and any sentence that names `Config::`.
pub fn operator_text(message: &str) -> String {
    let cut = message
        .find(" To connect anyway")
        .map_or(message, |at| &message[..at]);
    let kept: Vec<&str> = cut
        .split_inclusive(". ")
        .filter(|s| !s.contains("Config::") && !s.contains('`'))
        .collect();
    kept.concat().trim().trim_end_matches('.').to_string()
}

/// The hint's first sentence when a TLS failure under `encrypt=strict` came with
/// `trust_server_certificate=true`: the setting was ignored on purpose (the `login` hop through
/// tiberius and `tx_enlist` through its own session both ignore it).
pub const STRICT_IGNORES_TRUST: &str = "encrypt=strict ignores trust_server_certificate=true, as \
Microsoft's drivers do: TDS 8 always validates the server's certificate. Install the issuing CA \
on this machine, or use encrypt=on with trust_server_certificate=true if you accept the risk.";

/// What to do about it, for the hop's hint.
pub fn tls_hint(problem: TlsProblem) -> &'static str {
    match problem {
        TlsProblem::Untrusted => {
            "the server's certificate is not trusted by this machine (self-signed or from a \
             private CA): install the issuing CA in this machine's trust store, or set \
             trust_server_certificate=true if you accept the risk (not honoured with \
             encrypt=strict)"
        }
        TlsProblem::WrongName => {
            "the server's certificate does not name the host you connected to: connect with a name \
             the certificate lists, or fix the certificate"
        }
        TlsProblem::Expired => "the server's certificate has expired: renew it on the server",
        TlsProblem::NotYetValid => {
            "the server's certificate is not valid yet: check the clocks of both machines, or the \
             certificate's validity dates"
        }
        TlsProblem::NoCommonVersionOrCipher => {
            "no TLS version or cipher suite in common: the server probably offers only TLS 1.0/1.1 \
             or old ciphers (this client needs TLS 1.2+ with modern ciphers). Patch the server and \
             enable TLS 1.2 (and its ciphers) in its Schannel settings \
             (HKLM\\SYSTEM\\CurrentControlSet\\Control\\SecurityProviders\\SCHANNEL)"
        }
        TlsProblem::ResetDuringHandshake => {
            "the server reset the connection during the TLS handshake, which is what SQL Server on \
             Windows does when Schannel shares no TLS version or cipher with the client (the \
             client sees OS error 10054). Enable TLS 1.2 and modern cipher suites in the server's \
             Schannel settings (HKLM\\SYSTEM\\CurrentControlSet\\Control\\SecurityProviders\\SCHANNEL), \
             and check the System event log on the server for Schannel errors; a TLS-inspecting \
             firewall between the zones can do this too"
        }
        TlsProblem::Other => {
            "the TLS handshake inside TDS failed: check the server certificate, TLS versions, and \
             any TLS-intercepting device between the zones"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each rustls error TYPE, as rustls renders it (directly, inside an io::Error as tokio-rustls
    /// wraps it, and quoted in tiberius's certificate message), maps to its problem.
    #[test]
    fn rustls_error_types_map_to_problems() {
        let name = ServerName::try_from("sql01.example.net")
            .unwrap()
            .to_owned();
        let now = UnixTime::now();
        let table: Vec<(RustlsError, TlsProblem)> = vec![
            (
                RustlsError::InvalidCertificate(CertificateError::UnknownIssuer),
                TlsProblem::Untrusted,
            ),
            (
                RustlsError::InvalidCertificate(CertificateError::NotValidForName),
                TlsProblem::WrongName,
            ),
            (
                RustlsError::InvalidCertificate(CertificateError::NotValidForNameContext {
                    expected: name,
                    presented: vec!["localhost".into()],
                }),
                TlsProblem::WrongName,
            ),
            (
                RustlsError::InvalidCertificate(CertificateError::Expired),
                TlsProblem::Expired,
            ),
            (
                RustlsError::InvalidCertificate(CertificateError::ExpiredContext {
                    time: now,
                    not_after: UnixTime::since_unix_epoch(Duration::from_secs(1)),
                }),
                TlsProblem::Expired,
            ),
            (
                RustlsError::InvalidCertificate(CertificateError::NotValidYetContext {
                    time: now,
                    not_before: UnixTime::since_unix_epoch(Duration::from_secs(u32::MAX as u64)),
                }),
                TlsProblem::NotYetValid,
            ),
            (
                RustlsError::AlertReceived(AlertDescription::HandshakeFailure),
                TlsProblem::NoCommonVersionOrCipher,
            ),
            (
                RustlsError::AlertReceived(AlertDescription::ProtocolVersion),
                TlsProblem::NoCommonVersionOrCipher,
            ),
            (
                RustlsError::PeerIncompatible(PeerIncompatible::ServerDoesNotSupportTls12Or13),
                TlsProblem::NoCommonVersionOrCipher,
            ),
            (
                RustlsError::PeerIncompatible(PeerIncompatible::NoCipherSuitesInCommon),
                TlsProblem::NoCommonVersionOrCipher,
            ),
            (
                RustlsError::AlertReceived(AlertDescription::DecryptError),
                TlsProblem::Other,
            ),
            (RustlsError::DecryptError, TlsProblem::Other),
        ];
        for (err, want) in table {
            let direct = err.to_string();
            assert_eq!(tls_problem(&direct), want, "{direct}");
            let io = std::io::Error::new(std::io::ErrorKind::InvalidData, err.clone()).to_string();
            assert_eq!(tls_problem(&io), want, "{io}");
            if let RustlsError::InvalidCertificate(c) = &err {
                let tiberius = format!(
                    "the server's certificate was rejected during the TLS handshake: {c}. To \
                     connect anyway you can: (1) trust a specific CA certificate with \
                     `Config::trust_cert_ca(path)`"
                );
                assert_eq!(tls_problem(&tiberius), want, "{tiberius}");
            }
        }
        // The words the old matcher looked for, which rustls never prints, mean nothing now.
        assert_eq!(tls_problem("protocol version"), TlsProblem::Other);
        assert_eq!(tls_problem("no cipher"), TlsProblem::Other);
    }

    #[test]
    fn operator_text_drops_library_advice() {
        let tiberius = "the server's certificate was rejected during the TLS handshake: \
            UnknownIssuer. To connect anyway you can: (1) trust a specific CA certificate with \
            `Config::trust_cert_ca(path)`, or skip validation with `Config::trust_cert()`. Note: \
            SQL Server always performs a TLS handshake during login even when `Encrypt=false`.";
        let text = operator_text(tiberius);
        assert_eq!(
            text,
            "the server's certificate was rejected during the TLS handshake: UnknownIssuer"
        );
        assert_eq!(
            operator_text("received fatal alert: HandshakeFailure"),
            "received fatal alert: HandshakeFailure"
        );
        for p in [
            TlsProblem::Untrusted,
            TlsProblem::WrongName,
            TlsProblem::Expired,
            TlsProblem::NotYetValid,
            TlsProblem::NoCommonVersionOrCipher,
            TlsProblem::ResetDuringHandshake,
            TlsProblem::Other,
        ] {
            assert!(!tls_hint(p).contains("Config::"), "{p:?}");
        }
        assert!(tls_hint(TlsProblem::ResetDuringHandshake).contains("Schannel"));
        assert!(tls_hint(TlsProblem::ResetDuringHandshake).contains("10054"));
    }
}
