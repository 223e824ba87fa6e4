//! `dtcprobe agent` (the far side, a long-running service) and `dtcprobe peer` (the near side,
//! one invocation covering both directions).
//!
//! - [`protocol`]: framing, messages, the key, the agent's identity, and the encrypted channel (Noise `NXpsk0`).
//! - [`server`]: the agent: admission, sessions, callback, reverse checks.
//! - [`policy`]: which reverse checks the agent runs, against which hosts (the allow list).
//! - [`client`]: the near side: the agent session, the callback listener, the combined report.
//! - [`peer_options`]: what the near side asks of one agent.
//!
//! Security model: the near side and the agent authenticate each other with a pre-shared key in a
//! Noise handshake that gives every session fresh keys; everything after it is encrypted (so
//! replays never decrypt, and nothing is readable on the path). The agent never acts as a
//! scanner or proxy: a callback only goes to the source address of the authenticated connection,
//! and reverse checks only to that address or to hosts listed in the agent's own `allow` list.

pub mod client;
pub mod cmd;
pub mod fair_share;
pub mod far_side;
pub mod install;
#[cfg(windows)]
pub mod key_acl;
pub mod keygen;
pub mod limits;
pub mod log_budget;
pub mod metrics;
pub mod peer_options;
pub mod policy;
pub mod protocol;
pub mod server;
pub mod service_name;
#[cfg(windows)]
pub mod winsvc;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

/// The agent's config file (`-c agent.toml`). Every key is optional.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentConfig {
    pub listen: Option<String>,
    /// Where to serve the agent's own `/metrics` and `/healthz` (`--metrics-listen`).
    pub metrics_listen: Option<String>,
    /// This host's zone, reported to the near side (reverse checks run `from` it).
    pub zone: Option<String>,
    /// This host's MSDTC CID, when known; the near side compares it with its own.
    pub cid: Option<String>,
    /// Hosts (and optionally ports) reverse checks may target besides the caller itself.
    pub allow: Vec<AllowEntry>,
    /// Concurrent *authenticated* sessions (unauthenticated connections have their own budget).
    pub max_sessions: usize,
    /// Connections still authenticating, in total and per source (an IPv4 address or an IPv6
    /// /64), from the first connection; when full, the oldest silent one is closed for a new one.
    pub max_pending: usize,
    pub max_pending_per_source: usize,
    /// An unauthenticated connection must finish the Noise handshake and send its encrypted request
    /// within this time (capped by `frame_timeout`).
    pub handshake_timeout: Duration,
    /// Concurrent connections to `--metrics-listen` (more are closed at once).
    pub metrics_max_connections: usize,
    /// Bound on the whole request (callback and reverse checks included).
    pub request_timeout: Duration,
    /// A frame must arrive whole within this time: slow or silent clients are dropped.
    pub frame_timeout: Duration,
    /// Cap on the per-hop timeout a near side may ask for.
    pub max_hop_timeout: Duration,
    /// Cap on reverse checks per request.
    pub max_reverse_checks: usize,
    /// Bytes per second the log may grow by, at any verbosity ([`log_budget`]).
    pub log_bytes_per_second: usize,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            listen: None,
            metrics_listen: None,
            zone: None,
            cid: None,
            allow: Vec::new(),
            max_sessions: 256,
            max_pending: 512,
            max_pending_per_source: 32,
            handshake_timeout: Duration::from_secs(3),
            metrics_max_connections: 32,
            request_timeout: Duration::from_secs(60),
            frame_timeout: Duration::from_secs(10),
            max_hop_timeout: Duration::from_secs(10),
            max_reverse_checks: 32,
            log_bytes_per_second: log_budget::AGENT_LOG_BYTES_PER_SECOND,
        }
    }
}

#[derive(Debug, Error)]
#[error("{path}:{line}:{column}: {message}")]
pub struct AgentConfigError {
    pub path: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgentConfig {
    listen: Option<String>,
    metrics_listen: Option<String>,
    zone: Option<String>,
    cid: Option<String>,
    #[serde(default)]
    allow: Vec<toml::Spanned<String>>,
    max_sessions: Option<toml::Spanned<usize>>,
    max_pending: Option<toml::Spanned<usize>>,
    max_pending_per_source: Option<toml::Spanned<usize>>,
    handshake_timeout: Option<toml::Spanned<String>>,
    metrics_max_connections: Option<toml::Spanned<usize>>,
    request_timeout: Option<toml::Spanned<String>>,
    frame_timeout: Option<toml::Spanned<String>>,
    max_hop_timeout: Option<toml::Spanned<String>>,
    max_reverse_checks: Option<usize>,
    log_bytes_per_second: Option<toml::Spanned<usize>>,
}

impl AgentConfig {
    pub fn load(path: &Path) -> Result<AgentConfig, AgentConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| AgentConfigError {
            path: path.to_path_buf(),
            line: 0,
            column: 0,
            message: format!("cannot read agent config: {e}"),
        })?;
        AgentConfig::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<AgentConfig, AgentConfigError> {
        let at = |offset: usize, message: String| {
            let (line, column) = crate::config::line_column(text, offset);
            AgentConfigError {
                path: path.to_path_buf(),
                line,
                column,
                message,
            }
        };
        let raw: RawAgentConfig =
            crate::config::from_toml(text).map_err(|(offset, message)| at(offset, message))?;
        let duration = |v: &Option<toml::Spanned<String>>,
                        default: Duration|
         -> Result<Duration, AgentConfigError> {
            match v {
                None => Ok(default),
                Some(s) => crate::config::positive_duration(s.get_ref())
                    .map_err(|e| at(s.span().start, e.to_string())),
            }
        };
        let d = AgentConfig::default();
        let mut allow = Vec::new();
        for entry in &raw.allow {
            allow.push(
                AllowEntry::parse(entry.get_ref())
                    .map_err(|e| at(entry.span().start, e.to_string()))?,
            );
        }
        let at_least_one = |v: Option<toml::Spanned<usize>>,
                            name: &str,
                            default: usize|
         -> Result<usize, AgentConfigError> {
            match v {
                Some(s) if *s.get_ref() == 0 => {
                    Err(at(s.span().start, format!("`{name}` must be at least 1")))
                }
                Some(s) => Ok(s.into_inner()),
                None => Ok(default),
            }
        };
        let max_sessions = at_least_one(raw.max_sessions, "max_sessions", d.max_sessions)?;
        let max_pending = at_least_one(raw.max_pending, "max_pending", d.max_pending)?;
        let max_pending_per_source = at_least_one(
            raw.max_pending_per_source,
            "max_pending_per_source",
            d.max_pending_per_source,
        )?;
        let log_bytes_per_second = at_least_one(
            raw.log_bytes_per_second,
            "log_bytes_per_second",
            d.log_bytes_per_second,
        )?;
        let metrics_max_connections = at_least_one(
            raw.metrics_max_connections,
            "metrics_max_connections",
            d.metrics_max_connections,
        )?;
        Ok(AgentConfig {
            listen: raw.listen,
            metrics_listen: raw.metrics_listen,
            zone: raw.zone,
            cid: raw.cid,
            allow,
            max_sessions,
            max_pending,
            max_pending_per_source,
            handshake_timeout: duration(&raw.handshake_timeout, d.handshake_timeout)?,
            metrics_max_connections,
            request_timeout: duration(&raw.request_timeout, d.request_timeout)?,
            frame_timeout: duration(&raw.frame_timeout, d.frame_timeout)?,
            max_hop_timeout: duration(&raw.max_hop_timeout, d.max_hop_timeout)?,
            max_reverse_checks: raw.max_reverse_checks.unwrap_or(d.max_reverse_checks),
            log_bytes_per_second,
        })
    }
}

/// One `allow` entry: `host` (any port on it) or `host:port` / `[v6]:port`. Hosts compare
/// case-insensitively, as written: the agent does not resolve names to match them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowEntry {
    pub host: String,
    pub port: Option<u16>,
}

/// An `allow` entry (or `--allow`) that is not `HOST`, `HOST:PORT` or `[IPv6]:PORT`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid allow entry `{0}` (expected HOST, HOST:PORT or [IPv6]:PORT)")]
pub struct InvalidAllowEntry(pub String);

impl AllowEntry {
    pub fn parse(text: &str) -> Result<AllowEntry, InvalidAllowEntry> {
        let text = text.trim();
        let bad = || InvalidAllowEntry(text.to_string());
        if text.is_empty() || text.contains('/') || text.contains(char::is_whitespace) {
            return Err(bad());
        }
        if let Some(rest) = text.strip_prefix('[') {
            let (host, after) = rest.split_once(']').ok_or_else(bad)?;
            let port = match after {
                "" => None,
                p => Some(
                    p.strip_prefix(':')
                        .ok_or_else(bad)?
                        .parse::<u16>()
                        .map_err(|_| bad())?,
                ),
            };
            return Ok(AllowEntry {
                host: host.to_ascii_lowercase(),
                port,
            });
        }
        match text.matches(':').count() {
            0 => Ok(AllowEntry {
                host: text.to_ascii_lowercase(),
                port: None,
            }),
            1 => {
                let (host, port) = text.split_once(':').expect("one colon");
                if host.is_empty() {
                    return Err(bad());
                }
                Ok(AllowEntry {
                    host: host.to_ascii_lowercase(),
                    port: Some(port.parse().map_err(|_| bad())?),
                })
            }
            // A bare IPv6 address: any port.
            _ => Ok(AllowEntry {
                host: text.to_ascii_lowercase(),
                port: None,
            }),
        }
    }

    pub fn matches(&self, host: &str, port: Option<u16>) -> bool {
        if !self.host.eq_ignore_ascii_case(host) {
            return false;
        }
        match self.port {
            None => true,
            Some(p) => port == Some(p),
        }
    }
}

/// The port a target URL connects to: explicit, else its kind's default (`Kind::DEFAULT_PORT`).
pub fn url_port(url: &url::Url) -> Option<u16> {
    url.port().or_else(|| {
        crate::hops::KindInfo::of_scheme(url.scheme()).and_then(|kind| kind.default_port)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_entries() {
        type Want<'a> = Option<(&'a str, Option<u16>)>;
        let cases: &[(&str, Want)] = &[
            ("sql01", Some(("sql01", None))),
            ("SQL01:1433", Some(("sql01", Some(1433)))),
            ("10.0.0.5:135", Some(("10.0.0.5", Some(135)))),
            ("[2001:db8::1]:135", Some(("2001:db8::1", Some(135)))),
            ("[2001:db8::1]", Some(("2001:db8::1", None))),
            ("2001:db8::1", Some(("2001:db8::1", None))),
            ("", None),
            (":135", None),
            ("host:notaport", None),
            ("host:99999", None),
            ("10.0.0.0/8", None),
            ("[::1]x", None),
        ];
        for (text, want) in cases {
            let got = AllowEntry::parse(text).ok();
            let want = want.map(|(h, p)| AllowEntry {
                host: h.to_string(),
                port: p,
            });
            assert_eq!(got, want, "{text}");
        }
        let e = AllowEntry::parse("sql01:1433").unwrap();
        assert!(e.matches("SQL01", Some(1433)));
        assert!(!e.matches("sql01", Some(1434)));
        assert!(!e.matches("sql01", None));
        assert!(!e.matches("sql011", Some(1433)));
        assert!(AllowEntry::parse("sql01")
            .unwrap()
            .matches("sql01", Some(1)));
    }

    #[test]
    fn config_parses_and_locates_errors() {
        let text = "zone = \"dmz\"\nallow = [\"sql01:1433\", \"dc01\"]\nmax_sessions = 4\nframe_timeout = \"2s\"\n";
        let c = AgentConfig::parse(text, Path::new("a.toml")).unwrap();
        assert_eq!(c.zone.as_deref(), Some("dmz"));
        assert_eq!(c.allow.len(), 2);
        assert_eq!(c.max_sessions, 4);
        assert_eq!(c.frame_timeout, Duration::from_secs(2));
        assert_eq!(c.request_timeout, Duration::from_secs(60));

        let cases: &[(&str, usize, &str)] = &[
            ("bogus = 1\n", 1, "unknown field"),
            (
                "zone = \"a\"\nallow = [\"x:y\"]\n",
                2,
                "invalid allow entry",
            ),
            ("max_sessions = 0\n", 1, "at least 1"),
            ("\n\nframe_timeout = \"soon\"\n", 3, "invalid duration"),
        ];
        for (text, line, needle) in cases {
            let e = AgentConfig::parse(text, Path::new("a.toml")).unwrap_err();
            assert_eq!(e.line, *line, "{text}: {e}");
            assert!(e.to_string().contains(needle), "{text}: {e}");
        }
    }

    #[test]
    fn shipped_example_config_parses() {
        let text = include_str!("../../config/agent.example.toml");
        let c = AgentConfig::parse(text, Path::new("config/agent.example.toml")).unwrap();
        assert_eq!(c.zone.as_deref(), Some("sql"));
        assert_eq!(c.max_sessions, 256);
        assert_eq!(c.log_bytes_per_second, 32 * 1024);
    }

    #[test]
    fn url_ports() {
        let cases = [
            ("tcp://h:22", Some(22)),
            ("epm://h", Some(135)),
            ("mssql://u@h/db", Some(1433)),
            ("dns://h", None),
        ];
        for (u, p) in cases {
            assert_eq!(url_port(&url::Url::parse(u).unwrap()), p, "{u}");
        }
    }
}
