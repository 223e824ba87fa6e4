//! The server certificate of a TLS login (`data.certificate` on hop `login`, mssql and
//! postgres) and what it means for clients that check it: expired (a `fail` even when this
//! check trusts any certificate: the login works here, clients that check refuse it), expiring
//! within `--cert-warn-days` (a `warn`, cause `cert_expiring`), issued for another name than
//! the one connected to, or from a CA this host does not trust.
//!
//! Pure: the chain comes from a handshake elsewhere ([`crate::tls::CertCapture`], filled by
//! the PostgreSQL login's TLS and by the mssql certificate handshake,
//! [`crate::hops::mssql::certificate`]); the time is passed in. X.509 is read with
//! `x509-parser`. The revocation URLs of the chain (CRL distribution points, OCSP and CA
//! issuer URLs) are read here for hop `revocation` ([`crate::hops::revocation`]).

mod options;

use std::net::IpAddr;

use rustls::CertificateError;
use serde_json::{json, Value};
use sha1::{Digest, Sha1};
use x509_parser::extensions::{DistributionPointName, GeneralName, ParsedExtension};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::model::{Cause, HopResult, Status};
use crate::tls::SeenChain;

pub use options::{CertOptions, URL_KEYS};

/// Below this many days left, a certificate is reported as expiring (`--cert-warn-days`).
pub const DEFAULT_WARN_DAYS: u32 = 30;

const DAY: i64 = 86_400;

/// What the server's own certificate says, and how it fares for the name connected to.
#[derive(Debug, Clone, PartialEq)]
pub struct CertificateReport {
    pub subject: String,
    /// DNS names and IP addresses of the subjectAltName extension.
    pub sans: Vec<String>,
    pub issuer: String,
    /// Hex, colon-separated, as certificate viewers show it.
    pub serial: String,
    pub not_before: i64,
    pub not_after: i64,
    /// Whole days until `not_after` (negative: expired that long ago).
    pub days_left: i64,
    /// The name connected to is among the certificate's names (SAN; the subject's CN only when
    /// the certificate has no SAN extension at all, as Windows' Schannel still accepts).
    pub name_matches: bool,
    /// The chain check against the trusted roots (this host's store, or the given CA file)
    /// passed, the name left aside.
    pub chain_trusted: bool,
    /// Why the chain check failed, in rustls's words.
    pub trust_error: Option<String>,
    pub self_signed: bool,
    /// Certificates the server sent (its own first).
    pub chain_length: usize,
    /// The name connected to.
    pub connected_as: String,
}

/// Reads the server's certificate (the chain's first) and judges it for `connected_as` at
/// `now` (Unix seconds). `None` when the server sent no parsable certificate.
pub fn report(seen: &SeenChain, connected_as: &str, now: i64) -> Option<CertificateReport> {
    let der = seen.chain.first()?;
    let (_, cert) = X509Certificate::from_der(der.as_ref()).ok()?;
    let sans = sans_of(&cert);
    let not_before = cert.validity().not_before.timestamp();
    let not_after = cert.validity().not_after.timestamp();
    let chain_trusted = match &seen.verification {
        Ok(()) => true,
        // The name is judged on its own (`name_matches`): a chain that failed only on it is
        // trusted.
        Err(rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        )) => true,
        Err(_) => false,
    };
    let trust_error = match &seen.verification {
        Err(e) if !chain_trusted => Some(e.to_string()),
        _ => None,
    };
    Some(CertificateReport {
        subject: cert.subject().to_string(),
        name_matches: name_matches(&cert, &sans, connected_as),
        sans: sans.into_iter().map(|s| s.to_string()).collect(),
        issuer: cert.issuer().to_string(),
        serial: cert.raw_serial_as_string(),
        not_before,
        not_after,
        days_left: (not_after - now).div_euclid(DAY),
        chain_trusted,
        trust_error,
        self_signed: cert.subject().as_raw() == cert.issuer().as_raw(),
        chain_length: seen.chain.len(),
        connected_as: connected_as.to_string(),
    })
}

/// A name of the subjectAltName extension.
#[derive(Debug, Clone, PartialEq)]
enum San {
    Dns(String),
    Ip(IpAddr),
}

impl std::fmt::Display for San {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            San::Dns(name) => f.write_str(name),
            San::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

fn sans_of(cert: &X509Certificate<'_>) -> Vec<San> {
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => Some(San::Dns(dns.to_string())),
            GeneralName::IPAddress(bytes) => match bytes.len() {
                4 => Some(San::Ip(IpAddr::from(<[u8; 4]>::try_from(*bytes).ok()?))),
                16 => Some(San::Ip(IpAddr::from(<[u8; 16]>::try_from(*bytes).ok()?))),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

fn name_matches(cert: &X509Certificate<'_>, sans: &[San], host: &str) -> bool {
    let host = host.trim_end_matches('.');
    if let Ok(ip) = host.parse::<IpAddr>() {
        return sans.contains(&San::Ip(ip));
    }
    let has_san = matches!(cert.subject_alternative_name(), Ok(Some(_)));
    let common_names: Vec<String> = if has_san {
        Vec::new()
    } else {
        cert.subject()
            .iter_common_name()
            .filter_map(|cn| cn.as_str().ok().map(str::to_string))
            .collect()
    };
    sans.iter()
        .filter_map(|s| match s {
            San::Dns(d) => Some(d.as_str()),
            San::Ip(_) => None,
        })
        .chain(common_names.iter().map(String::as_str))
        .any(|pattern| dns_name_matches(pattern, host))
}

/// RFC 6125: case-insensitive, a wildcard only as the whole left-most label, matching exactly
/// one label.
fn dns_name_matches(pattern: &str, host: &str) -> bool {
    let pattern = pattern.trim_end_matches('.').to_ascii_lowercase();
    let host = host.to_ascii_lowercase();
    match pattern.strip_prefix("*.") {
        Some(rest) => host
            .split_once('.')
            .is_some_and(|(first, tail)| !first.is_empty() && tail == rest),
        None => pattern == host,
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ`.
pub fn rfc3339(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| unix.to_string())
}

impl CertificateReport {
    /// `data.certificate`.
    pub fn to_json(&self) -> Value {
        json!({
            "subject": self.subject,
            "sans": self.sans,
            "issuer": self.issuer,
            "serial": self.serial,
            "not_before": rfc3339(self.not_before),
            "not_after": rfc3339(self.not_after),
            "days_left": self.days_left,
            "name_matches": self.name_matches,
            "chain_trusted": self.chain_trusted,
            "trust_error": self.trust_error,
            "self_signed": self.self_signed,
            "chain_length": self.chain_length,
        })
    }

    /// The names the certificate is issued for, for a detail.
    fn issued_for(&self) -> String {
        if self.sans.is_empty() {
            self.subject.clone()
        } else {
            self.sans.join(", ")
        }
    }

    /// "issued for sql01.corp.example; connected as 198.51.100.7", when the name does not match.
    pub fn mismatch(&self) -> Option<String> {
        (!self.name_matches).then(|| {
            format!(
                "issued for {}; connected as {}",
                self.issued_for(),
                self.connected_as
            )
        })
    }
}

/// The login's result with the certificate report added and judged:
/// - expired or not yet valid: `fail` (`tls_error`) whatever the login did, since a login with
///   trust checks off works and every client that checks refuses it;
/// - fewer than `warn_days` days left: a passing login becomes `warn`, cause `cert_expiring`;
/// - a name mismatch or an untrusted chain is named in the detail (a passing login is one whose
///   check trusted any certificate, so it stays `pass`: the data says what clients that check
///   will see).
pub fn judge_login(
    mut r: HopResult,
    cert: &CertificateReport,
    now: i64,
    warn_days: u32,
) -> HopResult {
    r = r.with_data("certificate", cert.to_json());
    let ok = matches!(r.status, Status::Pass | Status::Warn);
    let mut notes = Vec::new();
    if let Some(m) = cert.mismatch() {
        notes.push(format!("the server's certificate is {m}"));
    }
    if !cert.chain_trusted {
        notes.push(format!(
            "its chain is not trusted here ({})",
            cert.trust_error.as_deref().unwrap_or("unknown reason")
        ));
    }
    let out_of_date = if now >= cert.not_after {
        let ago = (now - cert.not_after).div_euclid(DAY);
        Some((
            format!(
                "the server's certificate expired on {} ({ago} days ago)",
                rfc3339(cert.not_after)
            ),
            "the login works here only because this check does not validate the certificate; \
             clients that check it (ODBC Driver 18, Microsoft.Data.SqlClient, libpq verify-full) \
             will refuse it",
        ))
    } else if now < cert.not_before {
        Some((
            format!(
                "the server's certificate is not valid before {}",
                rfc3339(cert.not_before)
            ),
            "clients that check it will refuse it (or this host's clock is wrong)",
        ))
    } else {
        None
    };
    if let Some((what, meaning)) = out_of_date {
        if ok {
            r.status = Status::Fail;
            r.cause = Some(Cause::TlsError);
            r.detail = format!("{what}: {meaning}. {}", r.detail);
        } else {
            r.detail = format!("{}; {what}", r.detail);
        }
        r.hint = Some(
            "renew the server's certificate (SQL Server: SQL Server Configuration Manager, \
             Protocols, Certificate; PostgreSQL: ssl_cert_file) and restart the service; or \
             correct this host's clock if it is wrong"
                .into(),
        );
    } else if cert.days_left < i64::from(warn_days) && r.status == Status::Pass {
        r.status = Status::Warn;
        r.cause = Some(Cause::CertExpiring);
        r.detail = format!(
            "{}; the server's certificate expires on {} (in {} days, under the {warn_days}-day \
             warning)",
            r.detail,
            rfc3339(cert.not_after),
            cert.days_left
        );
        r.hint = Some(
            "renew the server's certificate before it expires: clients that check it will \
             refuse the login from then on"
                .into(),
        );
    }
    if !notes.is_empty() {
        r.detail = format!("{}; {}", r.detail, notes.join("; "));
    }
    r
}

/// [`judge_login`] for the chain a handshake showed, now; the result unchanged when the chain
/// holds no parsable certificate.
pub fn judge_seen(r: HopResult, seen: &SeenChain, connected_as: &str, warn_days: u32) -> HopResult {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    match report(seen, connected_as, now) {
        Some(cert) => judge_login(r, &cert, now, warn_days),
        None => r,
    }
}

/// What a revocation URL serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UrlKind {
    /// A CRL distribution point.
    Crl,
    /// An OCSP responder (authorityInfoAccess id-ad-ocsp).
    Ocsp,
    /// The issuer's certificate (authorityInfoAccess id-ad-caIssuers).
    CaIssuers,
}

impl UrlKind {
    pub fn as_str(self) -> &'static str {
        match self {
            UrlKind::Crl => "crl",
            UrlKind::Ocsp => "ocsp",
            UrlKind::CaIssuers => "ca_issuers",
        }
    }
}

/// One URL a client checking the chain may fetch.
#[derive(Debug, Clone, PartialEq)]
pub struct RevocationUrl {
    pub kind: UrlKind,
    pub url: String,
    /// The certificate of the chain it is named in (0: the server's).
    pub cert_index: usize,
    /// For an OCSP URL: the request for that certificate (RFC 6960 CertID, SHA-1), when its
    /// issuer's key is known (the next certificate of the chain, or its authority key id).
    pub ocsp_request: Option<Vec<u8>>,
}

/// id-ad-ocsp and id-ad-caIssuers (RFC 5280 4.2.2.1).
const AD_OCSP: &str = "1.3.6.1.5.5.7.48.1";
const AD_CA_ISSUERS: &str = "1.3.6.1.5.5.7.48.2";

/// Every CRL, OCSP and CA-issuers URL of the chain, each once, in chain order. A self-signed
/// certificate (a root) has none that matter and is skipped.
pub fn revocation_urls(seen: &SeenChain) -> Vec<RevocationUrl> {
    let certs: Vec<X509Certificate<'_>> = seen
        .chain
        .iter()
        .filter_map(|der| X509Certificate::from_der(der.as_ref()).ok().map(|(_, c)| c))
        .collect();
    let mut out: Vec<RevocationUrl> = Vec::new();
    for (index, cert) in certs.iter().enumerate() {
        if cert.subject().as_raw() == cert.issuer().as_raw() {
            continue;
        }
        let mut push = |kind: UrlKind, url: &str, request: Option<Vec<u8>>| {
            if !out.iter().any(|u| u.url == url && u.kind == kind) {
                out.push(RevocationUrl {
                    kind,
                    url: url.to_string(),
                    cert_index: index,
                    ocsp_request: request,
                });
            }
        };
        for ext in cert.extensions() {
            match ext.parsed_extension() {
                ParsedExtension::CRLDistributionPoints(points) => {
                    for point in points.iter() {
                        if let Some(DistributionPointName::FullName(names)) =
                            &point.distribution_point
                        {
                            for name in names {
                                if let GeneralName::URI(uri) = name {
                                    push(UrlKind::Crl, uri, None);
                                }
                            }
                        }
                    }
                }
                ParsedExtension::AuthorityInfoAccess(aia) => {
                    for desc in aia.iter() {
                        let GeneralName::URI(uri) = desc.access_location else {
                            continue;
                        };
                        match desc.access_method.to_id_string().as_str() {
                            AD_OCSP => {
                                push(UrlKind::Ocsp, uri, ocsp_request(cert, certs.get(index + 1)))
                            }
                            AD_CA_ISSUERS => push(UrlKind::CaIssuers, uri, None),
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
    }
    out
}

/// The OCSP request for `cert`: the issuer's name hash from `cert`'s own issuer field, the key
/// hash from the issuer's certificate when the server sent it, else from `cert`'s authority key
/// identifier (which CAs derive as that same SHA-1 in practice, RFC 5280 4.2.1.2).
fn ocsp_request(
    cert: &X509Certificate<'_>,
    issuer: Option<&X509Certificate<'_>>,
) -> Option<Vec<u8>> {
    let name_hash: [u8; 20] = Sha1::digest(cert.issuer().as_raw()).into();
    let key_hash: [u8; 20] = match issuer {
        Some(issuer) => Sha1::digest(issuer.public_key().subject_public_key.data.as_ref()).into(),
        None => cert
            .extensions()
            .iter()
            .find_map(|ext| match ext.parsed_extension() {
                ParsedExtension::AuthorityKeyIdentifier(aki) => {
                    <[u8; 20]>::try_from(aki.key_identifier.as_ref()?.0).ok()
                }
                _ => None,
            })?,
    };
    Some(dtcprobe_wire::ocsp::encode_request(
        &name_hash,
        &key_hash,
        cert.raw_serial(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_one_label_only() {
        assert!(dns_name_matches("sql01.corp.example", "SQL01.corp.example"));
        assert!(dns_name_matches("*.corp.example", "sql01.corp.example"));
        assert!(!dns_name_matches("*.corp.example", "a.b.corp.example"));
        assert!(!dns_name_matches("*.corp.example", "corp.example"));
        assert!(!dns_name_matches(
            "sql01.corp.example",
            "sql02.corp.example"
        ));
    }

    fn report_for(days_left: i64, name_matches: bool, trusted: bool) -> CertificateReport {
        let now = 1_800_000_000;
        CertificateReport {
            subject: "CN=sql01.corp.example".into(),
            sans: vec!["sql01.corp.example".into()],
            issuer: "CN=Corp CA".into(),
            serial: "01".into(),
            not_before: now - 300 * DAY,
            not_after: now + days_left * DAY + 3600,
            days_left,
            name_matches,
            chain_trusted: trusted,
            trust_error: (!trusted).then(|| "invalid peer certificate: UnknownIssuer".into()),
            self_signed: false,
            chain_length: 2,
            connected_as: "198.51.100.7".into(),
        }
    }

    #[test]
    fn expiry_expiring_and_mismatch_are_judged() {
        let now = 1_800_000_000;
        let pass = || HopResult::pass(crate::model::HopKind::Login, "logged in");
        // Expired: a fail even though the login passed.
        let r = judge_login(pass(), &report_for(-3, true, true), now, 30);
        assert_eq!((r.status, r.cause), (Status::Fail, Some(Cause::TlsError)));
        assert!(r.detail.contains("expired on"), "{}", r.detail);
        assert!(r.detail.contains("clients that check"), "{}", r.detail);
        // Expiring in 10 days: warn.
        let r = judge_login(pass(), &report_for(10, true, true), now, 30);
        assert_eq!(
            (r.status, r.cause),
            (Status::Warn, Some(Cause::CertExpiring))
        );
        assert!(r.detail.contains("in 10 days"), "{}", r.detail);
        // ... but not with a 7-day warning.
        let r = judge_login(pass(), &report_for(10, true, true), now, 7);
        assert_eq!(r.status, Status::Pass);
        // A name mismatch is named.
        let r = judge_login(pass(), &report_for(200, false, false), now, 30);
        assert_eq!(r.status, Status::Pass);
        assert!(
            r.detail
                .contains("issued for sql01.corp.example; connected as 198.51.100.7"),
            "{}",
            r.detail
        );
        assert!(r.detail.contains("UnknownIssuer"), "{}", r.detail);
        assert_eq!(r.data["certificate"]["days_left"], 200);
        assert_eq!(r.data["certificate"]["name_matches"], false);
        // A failed login keeps its own cause; the expiry is added to its detail.
        let failed = HopResult::fail(crate::model::HopKind::Login, Cause::AuthFailed, "18456");
        let r = judge_login(failed, &report_for(-1, true, true), now, 30);
        assert_eq!(r.cause, Some(Cause::AuthFailed));
        assert!(r.detail.contains("expired"), "{}", r.detail);
    }

    #[test]
    fn rfc3339_is_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_800_000_000), "2027-01-15T08:00:00Z");
    }
}
