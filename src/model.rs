//! The report model: what every hop produces and every exporter consumes.
//!
//! The serialized form is the JSON contract in docs/report.md and docs/report.schema.json (`format_version` 2.x): field names and
//! enum spellings here are what users script against, so only additive changes are allowed.

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const FORMAT_VERSION: &str = "2.0";

/// Outcome of one hop or one check. Ordered by severity so `max()` gives the worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pass,
    Skip,
    Warn,
    Fail,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Skip => "skip",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }
}

/// The fixed list of failure causes (docs/report.md). Every non-pass hop carries one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    Refused,
    Timeout,
    Unreachable,
    Prohibited,
    Reset,
    /// A TCP reset answered the SYN, but its IP TTL says it was sent from nearer than the
    /// target: a firewall on the path forged it (its "reset" action, `reject with tcp reset`).
    ResetByPath,
    DnsNxdomain,
    DnsTimeout,
    DnsMismatch,
    /// The DNS server answered with an error code (REFUSED, SERVFAIL...).
    DnsError,
    /// The route to the target goes through a local bridge/virtual network, or a target of
    /// another zone is on a directly connected network.
    RouteOverlap,
    TlsError,
    AuthFailed,
    DbUnavailable,
    SqlError,
    DtcUnavailable,
    EpmNotRegistered,
    EpmAccessDenied,
    ProtocolError,
    DuplicateCid,
    /// (A `warn`.) One MSDTC reached at two addresses in the same run: the same CID set and the
    /// same dynamic ports (a second NIC, a cluster node and its DTC network name, an AG
    /// listener), not a clone.
    SameHost,
    /// MSDTC on a host does not accept or send network transactions (Network DTC Access, Allow
    /// Inbound / Allow Outbound off), read from its configuration.
    DtcNetworkDisabled,
    /// The two MSDTCs' RPC authentication settings cannot work together (mutual on one side, no
    /// authentication on the other), or RPC refuses unauthenticated callers outright.
    DtcAuthMismatch,
    /// MSDTC's fixed port (ServerTcpPort) lies inside the restricted RPC dynamic port range (or is
    /// no port), or that range is malformed.
    DtcPortRange,
    AddressMismatch,
    CallbackMismatch,
    /// (A `warn`.) A callback with the right token arrived, but nothing the agent said confirms
    /// it was the agent's: no answer came (the session was lost), or it left the agent from
    /// another source port than the one that arrived here (relayed, or port-translated).
    CallbackUnverified,
    /// `peer`: the agent that answered holds the pre-shared key but proved another identity
    /// than the pinned one (`--agent-pubkey`, a matrix zone's `agent_pubkey`).
    AgentIdentity,
    Config,
    Internal,
    /// The run was stopped (SIGINT/SIGTERM) before this hop finished or started.
    Interrupted,
    /// (On `skip` only.) The check asks for a hop this host or build cannot run (`tx_enlist` or
    /// `dtc_config` outside the Windows build): nothing was tested, so the check must not read
    /// as passed.
    Unsupported,
    /// A session that worked did not survive `hold=DUR` idle (hop `idle`): a firewall expired
    /// it, or the server closed it.
    IdleExpired,
    /// (Hop `spn`.) The KDC knows no account with the SQL Server's SPN
    /// (KDC_ERR_S_PRINCIPAL_UNKNOWN): Kerberos cannot be used, drivers fall back to NTLM.
    SpnMissing,
    /// (Hop `spn`.) The SPN is registered on two or more accounts (found by an LDAP search): the
    /// KDC refuses it or issues a ticket the server cannot decrypt.
    SpnDuplicate,
    /// (Hops `kdc`, `spn`.) This host's clock differs from the KDC's by more than Kerberos
    /// tolerates (5 minutes by default; KRB_AP_ERR_SKEW), `data.clock_offset_seconds` says by how much.
    ClockSkew,
    /// (Hop `spn`.) Another Kerberos error; the detail names it.
    KdcError,
    /// (A `warn` on hop `login`.) A Negotiate login used NTLM where Kerberos was expected.
    NtlmFallback,
    /// (A `warn` on hop `dtc_config`.) MSDTC's authentication level cannot be met between the
    /// two hosts: Mutual without Kerberos (no domain, different domains, no KDC), or NTLM
    /// restricted where Kerberos cannot be had; the finding names the setting and the side.
    DtcAuth,
    /// (A `warn` on hop `login`.) The server's certificate expires within `--cert-warn-days`
    /// (30 by default); `data.certificate.days_left` says when.
    CertExpiring,
}

impl Cause {
    pub const ALL: &'static [Cause] = &[
        Cause::Refused,
        Cause::Timeout,
        Cause::Unreachable,
        Cause::Prohibited,
        Cause::Reset,
        Cause::ResetByPath,
        Cause::DnsNxdomain,
        Cause::DnsTimeout,
        Cause::DnsMismatch,
        Cause::DnsError,
        Cause::RouteOverlap,
        Cause::TlsError,
        Cause::AuthFailed,
        Cause::DbUnavailable,
        Cause::SqlError,
        Cause::DtcUnavailable,
        Cause::EpmNotRegistered,
        Cause::EpmAccessDenied,
        Cause::ProtocolError,
        Cause::DuplicateCid,
        Cause::SameHost,
        Cause::DtcNetworkDisabled,
        Cause::DtcAuthMismatch,
        Cause::DtcPortRange,
        Cause::AddressMismatch,
        Cause::CallbackMismatch,
        Cause::CallbackUnverified,
        Cause::AgentIdentity,
        Cause::Config,
        Cause::Internal,
        Cause::Interrupted,
        Cause::Unsupported,
        Cause::IdleExpired,
        Cause::SpnMissing,
        Cause::SpnDuplicate,
        Cause::ClockSkew,
        Cause::KdcError,
        Cause::NtlmFallback,
        Cause::DtcAuth,
        Cause::CertExpiring,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Refused => "refused",
            Cause::Timeout => "timeout",
            Cause::Unreachable => "unreachable",
            Cause::Prohibited => "prohibited",
            Cause::Reset => "reset",
            Cause::ResetByPath => "reset_by_path",
            Cause::DnsNxdomain => "dns_nxdomain",
            Cause::DnsTimeout => "dns_timeout",
            Cause::DnsMismatch => "dns_mismatch",
            Cause::DnsError => "dns_error",
            Cause::RouteOverlap => "route_overlap",
            Cause::TlsError => "tls_error",
            Cause::AuthFailed => "auth_failed",
            Cause::DbUnavailable => "db_unavailable",
            Cause::SqlError => "sql_error",
            Cause::DtcUnavailable => "dtc_unavailable",
            Cause::EpmNotRegistered => "epm_not_registered",
            Cause::EpmAccessDenied => "epm_access_denied",
            Cause::ProtocolError => "protocol_error",
            Cause::DuplicateCid => "duplicate_cid",
            Cause::SameHost => "same_host",
            Cause::DtcNetworkDisabled => "dtc_network_disabled",
            Cause::DtcAuthMismatch => "dtc_auth_mismatch",
            Cause::DtcPortRange => "dtc_port_range",
            Cause::AddressMismatch => "address_mismatch",
            Cause::CallbackMismatch => "callback_mismatch",
            Cause::CallbackUnverified => "callback_unverified",
            Cause::AgentIdentity => "agent_identity",
            Cause::Config => "config",
            Cause::Internal => "internal",
            Cause::Interrupted => "interrupted",
            Cause::Unsupported => "unsupported",
            Cause::IdleExpired => "idle_expired",
            Cause::SpnMissing => "spn_missing",
            Cause::SpnDuplicate => "spn_duplicate",
            Cause::ClockSkew => "clock_skew",
            Cause::KdcError => "kdc_error",
            Cause::NtlmFallback => "ntlm_fallback",
            Cause::DtcAuth => "dtc_auth",
            Cause::CertExpiring => "cert_expiring",
        }
    }

    /// Causes that say "the tool could not tell", as opposed to "the network/server said no".
    /// A run whose only non-passes are these exits 3 (inconclusive), not 1.
    pub fn is_tool_fault(self) -> bool {
        matches!(self, Cause::Internal | Cause::Config | Cause::Unsupported)
    }
}

/// The kinds of hop (docs/report.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HopKind {
    Resolve,
    /// The kernel's route to the target (interface, source, gateway).
    Route,
    Tcp,
    /// Where the packets die: TTL-stepped SYNs after a connect timed out.
    Path,
    Tls,
    Sqlbrowser,
    Login,
    TxLocal,
    TxDistributed,
    Epm,
    RpcPort,
    RpcBind,
    Callback,
    Twophase,
    /// This host's MSDTC configuration (registry and service state), or two hosts' compared.
    DtcConfig,
    /// This host's MSDTC begins a transaction and SQL Server enlists in it (`tx=enlist`).
    TxEnlist,
    /// `peer` runs: the agent's own attempt, from the target's zone, at a host and port a forward
    /// check could not connect to (reachable from there: the block is on the path; not: the
    /// service or the host's own firewall).
    FarSide,
    /// The working session left idle for `hold=DUR`, then used: does it survive?
    Idle,
    /// The SQL host's MSDTC host name, from its whereabouts (TM_GET_DTC_ADDRESS): resolved
    /// forward and reverse from this zone, and TCP 135 on it (`tx=enlist`, `tx=distributed`).
    DtcName,
    /// Two hosts' MSDTC CIDs compared (check `msdtc_cid`): equal means cloned machines.
    DtcCid,
    /// The realm's KDCs (DNS SRV or krb5.conf) and Kerberos/LDAP ports to them from this zone.
    Kdc,
    /// A Kerberos service ticket for the SQL Server's SPN.
    Spn,
    /// The CRL, OCSP and CA-issuer URLs of the server's certificate chain, fetched from this
    /// zone (clients that check revocation fetch them during the TLS handshake).
    Revocation,
}

impl HopKind {
    pub fn as_str(self) -> &'static str {
        match self {
            HopKind::Resolve => "resolve",
            HopKind::Route => "route",
            HopKind::Tcp => "tcp",
            HopKind::Path => "path",
            HopKind::Tls => "tls",
            HopKind::Sqlbrowser => "sqlbrowser",
            HopKind::Login => "login",
            HopKind::TxLocal => "tx_local",
            HopKind::TxDistributed => "tx_distributed",
            HopKind::Epm => "epm",
            HopKind::RpcPort => "rpc_port",
            HopKind::RpcBind => "rpc_bind",
            HopKind::Callback => "callback",
            HopKind::Twophase => "twophase",
            HopKind::DtcConfig => "dtc_config",
            HopKind::TxEnlist => "tx_enlist",
            HopKind::FarSide => "far_side",
            HopKind::Idle => "idle",
            HopKind::DtcName => "dtc_name",
            HopKind::DtcCid => "dtc_cid",
            HopKind::Kdc => "kdc",
            HopKind::Spn => "spn",
            HopKind::Revocation => "revocation",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    #[default]
    Forward,
    Reverse,
}

/// The result of one hop. Build with [`HopResult::pass`] / [`HopResult::fail`] etc.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HopResult {
    pub hop: HopKind,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<Cause>,
    #[serde(with = "seconds")]
    pub duration_seconds: Duration,
    #[serde(default)]
    pub detail: String,
    /// Borrowed when it is one of the fixed hints (a run of 10,000 refused ports shares one
    /// text instead of holding 10,000 copies of it); the JSON is the same either way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<Cow<'static, str>>,
    /// Hop-specific facts (addresses, ports, versions...). Keys are snake_case and stable.
    #[serde(default, skip_serializing_if = "HopData::is_empty")]
    pub data: HopData,
}

pub use crate::hop_data::{Datum, Fact, HopData};

impl HopResult {
    pub fn new(hop: HopKind, status: Status, detail: impl Into<String>) -> Self {
        HopResult {
            hop,
            status,
            cause: None,
            duration_seconds: Duration::ZERO,
            detail: detail.into(),
            hint: None,
            data: HopData::default(),
        }
    }

    pub fn pass(hop: HopKind, detail: impl Into<String>) -> Self {
        Self::new(hop, Status::Pass, detail)
    }

    pub fn fail(hop: HopKind, cause: Cause, detail: impl Into<String>) -> Self {
        Self::new(hop, Status::Fail, detail).with_cause(cause)
    }

    pub fn warn(hop: HopKind, cause: Cause, detail: impl Into<String>) -> Self {
        Self::new(hop, Status::Warn, detail).with_cause(cause)
    }

    pub fn skip(hop: HopKind, detail: impl Into<String>) -> Self {
        Self::new(hop, Status::Skip, detail)
    }

    /// A hop the check asks for that this host or build cannot run: `skip` with cause
    /// `unsupported`, which keeps the check from reading as passed and the run's exit code at 3.
    pub fn unsupported(hop: HopKind, detail: impl Into<String>) -> Self {
        Self::skip(hop, detail).with_cause(Cause::Unsupported)
    }

    /// A hop that was asked for and could not run here (see [`HopResult::unsupported`]).
    pub fn is_unsupported(&self) -> bool {
        self.status == Status::Skip && self.cause == Some(Cause::Unsupported)
    }

    /// A hop a sysadmin must look at: it failed, warned, or was asked for and could not run
    /// here. What `--quiet` keeps, what gets a hint line and a verdict line.
    pub fn needs_attention(&self) -> bool {
        matches!(self.status, Status::Fail | Status::Warn) || self.is_unsupported()
    }

    pub fn with_cause(mut self, cause: Cause) -> Self {
        self.cause = Some(cause);
        self
    }

    pub fn with_hint(mut self, hint: impl Into<Cow<'static, str>>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn with_duration(mut self, duration: Duration) -> Self {
        self.duration_seconds = duration;
        self
    }

    pub fn with_data(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.data.insert(key.to_string(), value.into());
        self
    }

    /// As [`HopResult::with_data`], in the typed form (see [`crate::hop_data`]): for the hops
    /// every check has.
    pub fn with_fact(mut self, key: &'static str, value: impl Into<Fact>) -> Self {
        self.data.insert_fact(key, value.into());
        self
    }

    /// Gives back the spare capacity of its text and `data` (a map built key by key keeps room
    /// for twice its entries, a formatted string for more than its text): a result lives until
    /// the whole report is written, 10,000 of them at once in a large run.
    pub fn compact(&mut self) {
        self.detail.shrink_to_fit();
        if let Some(Cow::Owned(hint)) = &mut self.hint {
            hint.shrink_to_fit();
        }
        self.data.compact();
    }

    /// A hop that did not run does not block; pass and warn let the chain continue.
    pub fn lets_chain_continue(&self) -> bool {
        matches!(self.status, Status::Pass | Status::Warn)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    pub name: String,
    pub kind: String,
    pub target: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    #[serde(default)]
    pub direction: Direction,
    pub status: Status,
    pub hops: Vec<HopResult>,
}

impl CheckResult {
    /// A forward check without zone labels, its status derived from its hops.
    pub fn new(
        name: impl Into<String>,
        kind: impl Into<String>,
        target: impl Into<String>,
        hops: Vec<HopResult>,
    ) -> CheckResult {
        CheckResult {
            name: name.into(),
            kind: kind.into(),
            target: target.into(),
            from: None,
            to: None,
            direction: Direction::Forward,
            status: CheckResult::status_of(&hops),
            hops,
        }
    }

    /// The status of a check is the worst of its hops. Skips after an earlier failure do not
    /// count (that failure does), but a hop the check asks for that could not run here
    /// (`unsupported`) does: a check whose point was not tested must read `skip`, never `pass`.
    pub fn status_of(hops: &[HopResult]) -> Status {
        hops.iter()
            .filter(|h| h.status != Status::Skip || h.is_unsupported())
            .map(|h| h.status)
            .max()
            .unwrap_or(Status::Skip)
    }

    /// The first hop that did not pass: the one a sysadmin should look at. Failures and warnings
    /// first; else a hop that was asked for and could not run here.
    pub fn first_problem(&self) -> Option<&HopResult> {
        self.hops
            .iter()
            .find(|h| matches!(h.status, Status::Fail | Status::Warn))
            .or_else(|| self.hops.iter().find(|h| h.is_unsupported()))
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub pass: usize,
    pub warn: usize,
    pub fail: usize,
    pub skip: usize,
}

impl Summary {
    pub fn of(checks: &[CheckResult]) -> Summary {
        let mut s = Summary::default();
        for c in checks {
            match c.status {
                Status::Pass => s.pass += 1,
                Status::Warn => s.warn += 1,
                Status::Fail => s.fail += 1,
                Status::Skip => s.skip += 1,
            }
        }
        s
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub format_version: String,
    pub tool_version: String,
    /// RFC 3339, UTC.
    pub started_at: String,
    #[serde(with = "seconds")]
    pub duration_seconds: Duration,
    pub host: String,
    pub summary: Summary,
    pub checks: Vec<CheckResult>,
}

impl Report {
    pub fn new(
        started: SystemTime,
        duration: Duration,
        host: String,
        checks: Vec<CheckResult>,
    ) -> Report {
        Report {
            format_version: FORMAT_VERSION.to_string(),
            tool_version: env!("CARGO_PKG_VERSION").to_string(),
            started_at: humantime::format_rfc3339_seconds(started).to_string(),
            duration_seconds: duration,
            host,
            summary: Summary::of(&checks),
            checks,
        }
    }

    pub fn started_at_unix_seconds(&self) -> Option<f64> {
        humantime::parse_rfc3339(&self.started_at)
            .ok()
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map(|d| d.as_secs_f64())
    }
}

/// Durations travel as fractional seconds (base unit), rounded to the microsecond.
mod seconds {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        let micros = d.as_micros() as f64;
        s.serialize_f64((micros / 1_000_000.0 * 1e6).round() / 1e6)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_status_is_worst_non_skip_hop() {
        let hops = vec![
            HopResult::pass(HopKind::Resolve, ""),
            HopResult::fail(HopKind::Tcp, Cause::Timeout, ""),
            HopResult::skip(HopKind::Login, ""),
        ];
        assert_eq!(CheckResult::status_of(&hops), Status::Fail);
        let hops = vec![
            HopResult::pass(HopKind::Resolve, ""),
            HopResult::warn(HopKind::Resolve, Cause::DnsMismatch, ""),
        ];
        assert_eq!(CheckResult::status_of(&hops), Status::Warn);
        assert_eq!(CheckResult::status_of(&[]), Status::Skip);
    }

    /// The false assurance this guards against: `tx=enlist` on Linux, tcp and login pass, the
    /// hop the user asked for cannot run; the check must not say pass.
    #[test]
    fn a_hop_that_cannot_run_here_keeps_the_check_from_passing() {
        let hops = vec![
            HopResult::pass(HopKind::Tcp, ""),
            HopResult::pass(HopKind::Login, ""),
            HopResult::unsupported(HopKind::TxEnlist, "needs the Windows build"),
        ];
        assert_eq!(CheckResult::status_of(&hops), Status::Skip);
        let check = CheckResult::new("c", "mssql", "t", hops.clone());
        assert_eq!(
            check.first_problem().map(|h| h.hop),
            Some(HopKind::TxEnlist)
        );
        // A real failure still wins, and is still the first problem.
        let mut failed = hops;
        failed[1] = HopResult::fail(HopKind::Login, Cause::AuthFailed, "");
        assert_eq!(CheckResult::status_of(&failed), Status::Fail);
        let check = CheckResult::new("c", "mssql", "t", failed);
        assert_eq!(check.first_problem().map(|h| h.hop), Some(HopKind::Login));
    }

    #[test]
    fn cause_spellings_match_serde() {
        for &c in Cause::ALL {
            let json = serde_json::to_value(c).unwrap();
            assert_eq!(json, Value::String(c.as_str().to_string()));
        }
    }

    #[test]
    fn hop_serializes_to_design_schema() {
        let hop = HopResult::fail(HopKind::RpcPort, Cause::Timeout, "no reply")
            .with_duration(Duration::from_millis(1500))
            .with_hint("h")
            .with_data("port", 49664);
        let v = serde_json::to_value(&hop).unwrap();
        assert_eq!(v["hop"], "rpc_port");
        assert_eq!(v["status"], "fail");
        assert_eq!(v["cause"], "timeout");
        assert_eq!(v["duration_seconds"], 1.5);
        assert_eq!(v["data"]["port"], 49664);
        let back: HopResult = serde_json::from_value(v).unwrap();
        assert_eq!(back, hop);
    }
}
