//! What a check points at: parsed from an ad-hoc URL (`tcp://host:port`) or a config table.
//! Pure parsing; no I/O.

use std::time::Duration;

use thiserror::Error;
use url::Url;

use crate::config::{CheckKind, RawCheck};

#[derive(Debug, Error, PartialEq)]
pub enum TargetError {
    /// Unknown URL scheme: a usage error (exit 2).
    #[error("unknown target scheme `{scheme}` in `{url}` (expected one of: {expected})")]
    UnknownScheme {
        scheme: String,
        url: String,
        expected: &'static str,
    },
    /// A URL that does not parse or lacks a part: a usage error (exit 2).
    #[error("invalid target `{url}`: {message}")]
    InvalidUrl { url: String, message: String },
    /// A config problem at a byte offset of the config text (exit 78).
    #[error("{message}")]
    At { offset: usize, message: String },
}

/// The schemes this build understands.
pub const SCHEMES: &str = "tcp://, dns://, mssql://, epm://, postgres://";

/// One check to run: a name, the zones it crosses, and its target.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckSpec {
    pub name: String,
    pub from: Option<String>,
    pub to: Option<String>,
    /// Per-hop timeout for this check; `None` uses the run's `--timeout`.
    pub timeout: Option<Duration>,
    pub target: Target,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    Tcp(TcpTarget),
    Dns(DnsTarget),
    Epm(crate::hops::epm::EpmTarget),
    Mssql(crate::hops::mssql::MssqlTarget),
    Postgres(crate::hops::postgres::PgTarget),
}

impl Target {
    /// The `kind` string in reports.
    pub fn kind(&self) -> &'static str {
        match self {
            Target::Tcp(_) => "tcp",
            Target::Dns(_) => "dns",
            Target::Epm(_) => "epm",
            Target::Mssql(_) => "mssql",
            Target::Postgres(_) => "postgres",
        }
    }

    /// A canonical, secret-free rendering for reports (`tcp://host:port`).
    pub fn display(&self) -> String {
        match self {
            Target::Tcp(t) => format!("tcp://{}:{}", bracket_v6(&t.host), t.port),
            Target::Dns(t) => format!("dns://{}", bracket_v6(&t.host)),
            Target::Epm(t) => t.display(),
            Target::Mssql(t) => t.display(),
            Target::Postgres(t) => t.display(),
        }
    }

    pub fn from_url(text: &str) -> Result<Target, TargetError> {
        let invalid = |message: String| TargetError::InvalidUrl {
            url: text.to_string(),
            message,
        };
        let scheme = text.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
        let Some(scheme) = scheme else {
            return Err(invalid(format!(
                "expected SCHEME://HOST..., with a scheme among {SCHEMES}"
            )));
        };
        if scheme == "mssql" {
            // Parsed by hand: `host\instance` is not URL syntax.
            return Ok(Target::Mssql(crate::hops::mssql::MssqlTarget::from_url(
                text,
            )?));
        }
        if scheme == "postgres" || scheme == "postgresql" {
            return Ok(Target::Postgres(crate::hops::postgres::PgTarget::from_url(
                text,
            )?));
        }
        match scheme.as_str() {
            "tcp" | "dns" | "epm" => {}
            _ => {
                return Err(TargetError::UnknownScheme {
                    scheme,
                    url: text.to_string(),
                    expected: SCHEMES,
                })
            }
        }
        let url = Url::parse(text).map_err(|e| invalid(e.to_string()))?;
        let host = url_host(&url).ok_or_else(|| invalid("no host".into()))?;
        match scheme.as_str() {
            "tcp" => {
                let port = url
                    .port()
                    .ok_or_else(|| invalid("no port (tcp://HOST:PORT)".into()))?;
                Ok(Target::Tcp(TcpTarget {
                    host,
                    port,
                    reverse_dns: false,
                }))
            }
            "dns" => Ok(Target::Dns(DnsTarget { host })),
            "epm" => Ok(Target::Epm(
                crate::hops::epm::EpmTarget::from_url(&url, host).map_err(invalid)?,
            )),
            _ => unreachable!("scheme checked above"),
        }
    }

    pub fn from_config(raw: &RawCheck) -> Result<Target, TargetError> {
        if let Some(url) = &raw.target {
            if raw.kind.is_some() || raw.host.is_some() || raw.port.is_some() {
                return Err(TargetError::At {
                    offset: url.span().start,
                    message: "use either `target = URL` or `kind`/`host`/`port`, not both".into(),
                });
            }
            let mut target = Target::from_url(url.get_ref()).map_err(|e| TargetError::At {
                offset: url.span().start,
                message: e.to_string(),
            })?;
            // Everything but the password is in the URL; a key beside it would be ignored.
            let beside_url: &[&str] = match target {
                Target::Mssql(_) | Target::Postgres(_) => &["password_env", "password_file"],
                _ => &[],
            };
            if let Some((key, offset)) = raw
                .kind_specific_keys()
                .into_iter()
                .find(|(key, _)| !beside_url.contains(key))
            {
                return Err(TargetError::At {
                    offset: offset.unwrap_or(url.span().start),
                    message: format!(
                        "`{key}` does not go with `target = URL`: put it in the URL, or use `kind`/`host` instead"
                    ),
                });
            }
            let password = raw
                .password_source()
                .map_err(|(offset, message)| TargetError::At { offset, message })?;
            match &mut target {
                Target::Mssql(t) => t.password = password,
                Target::Postgres(t) => t.password = password,
                _ => {}
            }
            return Ok(target);
        }
        let kind = raw.kind.as_ref().ok_or_else(|| TargetError::At {
            offset: 0,
            message: "check has neither `kind` nor `target`".into(),
        })?;
        let kind_offset = kind.span().start;
        reject_keys_of_other_kinds(raw, *kind.get_ref(), kind_offset)?;
        let host = || -> Result<String, TargetError> {
            let h = raw.host.as_ref().ok_or_else(|| TargetError::At {
                offset: kind_offset,
                message: "check has no `host`".into(),
            })?;
            if h.get_ref().trim().is_empty() {
                return Err(TargetError::At {
                    offset: h.span().start,
                    message: "`host` is empty".into(),
                });
            }
            Ok(h.get_ref().trim().to_string())
        };
        match kind.get_ref() {
            CheckKind::Tcp => {
                let port = raw.port.as_ref().ok_or_else(|| TargetError::At {
                    offset: kind_offset,
                    message: "kind `tcp` needs a `port`".into(),
                })?;
                Ok(Target::Tcp(TcpTarget {
                    host: host()?,
                    port: *port.get_ref(),
                    reverse_dns: raw.reverse_dns.unwrap_or(false),
                }))
            }
            CheckKind::Dns => Ok(Target::Dns(DnsTarget { host: host()? })),
            CheckKind::Epm => Ok(Target::Epm(crate::hops::epm::EpmTarget::from_config(
                raw,
                host()?,
            )?)),
            CheckKind::Mssql => Ok(Target::Mssql(crate::hops::mssql::MssqlTarget::from_config(
                raw,
                host()?,
            )?)),
            CheckKind::Postgres => Ok(Target::Postgres(
                crate::hops::postgres::PgTarget::from_config(raw, kind_offset)?,
            )),
        }
    }

    pub fn host(&self) -> &str {
        match self {
            Target::Tcp(t) => &t.host,
            Target::Dns(t) => &t.host,
            Target::Epm(t) => &t.host,
            Target::Mssql(t) => &t.host,
            Target::Postgres(t) => &t.host,
        }
    }
}

/// The kind-specific keys each kind reads (besides name, kind, host, from, to, timeout).
pub fn keys_of_kind(kind: CheckKind) -> &'static [&'static str] {
    match kind {
        CheckKind::Tcp => &["port", "reverse_dns"],
        CheckKind::Dns => &[],
        CheckKind::Mssql => &[
            "port",
            "reverse_dns",
            "instance",
            "database",
            "user",
            "password_env",
            "password_file",
            "auth",
            "encrypt",
            "trust_server_certificate",
            "tx",
            "linked_server",
        ],
        CheckKind::Epm => &["port", "reverse_dns", "iface", "list_endpoints"],
        CheckKind::Postgres => &[
            "port",
            "database",
            "user",
            "password_env",
            "password_file",
            "tx",
        ],
    }
}

/// A key another kind uses is an error here rather than silently ignored: a `database` on a
/// `tcp` check is a mistake the user wants to hear about.
fn reject_keys_of_other_kinds(
    raw: &RawCheck,
    kind: CheckKind,
    kind_offset: usize,
) -> Result<(), TargetError> {
    let accepted = keys_of_kind(kind);
    match raw
        .kind_specific_keys()
        .into_iter()
        .find(|(key, _)| !accepted.contains(key))
    {
        Some((key, offset)) => Err(TargetError::At {
            offset: offset.unwrap_or(kind_offset),
            message: format!("`{key}` does not apply to kind `{}`", kind_name(kind)),
        }),
        None => Ok(()),
    }
}

fn kind_name(kind: CheckKind) -> &'static str {
    match kind {
        CheckKind::Tcp => "tcp",
        CheckKind::Dns => "dns",
        CheckKind::Mssql => "mssql",
        CheckKind::Epm => "epm",
        CheckKind::Postgres => "postgres",
    }
}

/// The host part of a URL, without IPv6 brackets.
pub fn url_host(url: &Url) -> Option<String> {
    match url.host()? {
        url::Host::Domain(d) => Some(d.to_string()),
        url::Host::Ipv4(a) => Some(a.to_string()),
        url::Host::Ipv6(a) => Some(a.to_string()),
    }
}

pub fn bracket_v6(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct TcpTarget {
    pub host: String,
    pub port: u16,
    /// Also check reverse DNS agreement in the resolve hop.
    pub reverse_dns: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DnsTarget {
    pub host: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tcp_and_dns_urls() {
        assert_eq!(
            Target::from_url("tcp://sql01:1433").unwrap(),
            Target::Tcp(TcpTarget {
                host: "sql01".into(),
                port: 1433,
                reverse_dns: false
            })
        );
        assert_eq!(
            Target::from_url("TCP://[2001:db8::1]:135").unwrap().host(),
            "2001:db8::1"
        );
        assert_eq!(
            Target::from_url("dns://web01.corp").unwrap(),
            Target::Dns(DnsTarget {
                host: "web01.corp".into()
            })
        );
    }

    #[test]
    fn unknown_scheme_is_its_own_error() {
        assert!(matches!(
            Target::from_url("ftp://x:21"),
            Err(TargetError::UnknownScheme { .. })
        ));
        assert!(matches!(
            Target::from_url("sql01:1433"),
            Err(TargetError::InvalidUrl { .. })
        ));
        assert!(matches!(
            Target::from_url("tcp://sql01"),
            Err(TargetError::InvalidUrl { .. })
        ));
        assert!(matches!(
            Target::from_url("tcp://sql01:99999"),
            Err(TargetError::InvalidUrl { .. })
        ));
    }

    #[test]
    fn display_round_trips() {
        for u in ["tcp://sql01:1433", "dns://web01", "tcp://[::1]:135"] {
            assert_eq!(Target::from_url(u).unwrap().display(), u);
        }
    }
}
