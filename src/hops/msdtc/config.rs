//! One host's MSDTC configuration as read, and what it means. Pure: the Windows reader
//! (`read_windows`) fills an [`MsdtcConfig`] from the registry and the service control manager;
//! [`judge`] turns it into findings, [`compare_pair`] judges two hosts' configurations against
//! each other (a `peer` run). Split this way so every rule has a table test on any platform and the
//! reader stays a thin, Windows-only layer.
//!
//! Every value is an `Option`: a registry value that is absent is not a value of zero, and MSDTC
//! treats some absent values differently from 0 (`AllowOnlySecureRpcCalls`, below). The struct
//! serializes to the hop's `data` with the documented keys (docs/msdtc.md), and back: the near side
//! of a `peer` run rebuilds the agent's configuration from its reverse `dtc_config` hop.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use super::auth_path::AuthLevel;
use super::auth_path::{self, AuthFinding, AuthSide, KdcReach};
use crate::hops::kdc::reach::{KdcReachability, Reachable};
use crate::model::{Cause, HopKind, HopResult, Status};

/// The state the service control manager reports for the `MSDTC` service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceState {
    Running,
    Stopped,
    StartPending,
    StopPending,
    Paused,
    PausePending,
    ContinuePending,
    /// The SCM has no service named MSDTC (ERROR_SERVICE_DOES_NOT_EXIST).
    NotInstalled,
}

impl ServiceState {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceState::Running => "running",
            ServiceState::Stopped => "stopped",
            ServiceState::StartPending => "start_pending",
            ServiceState::StopPending => "stop_pending",
            ServiceState::Paused => "paused",
            ServiceState::PausePending => "pause_pending",
            ServiceState::ContinuePending => "continue_pending",
            ServiceState::NotInstalled => "not_installed",
        }
    }
}

/// The MSDTC service's start type (QueryServiceConfig's dwStartType). A stopped MSDTC is a
/// failure only when nothing will start it: Disabled. Manual ("demand start") is how Windows
/// installs it on many versions; it starts when a local program asks for a transaction manager
/// (DtcGetTransactionManager: SQL Server on a TM request, System.Transactions on promotion).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceStartType {
    /// SERVICE_AUTO_START (also "Automatic (Delayed Start)").
    Automatic,
    /// SERVICE_DEMAND_START.
    Manual,
    /// SERVICE_DISABLED.
    Disabled,
    /// SERVICE_BOOT_START / SERVICE_SYSTEM_START: driver start types, not an MSDTC setting;
    /// judged as Automatic.
    Boot,
}

impl ServiceStartType {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceStartType::Automatic => "automatic",
            ServiceStartType::Manual => "manual",
            ServiceStartType::Disabled => "disabled",
            ServiceStartType::Boot => "boot",
        }
    }
}

/// Which way this host's MSDTC must carry transactions: a client (web/app server) flows them
/// out (Allow Outbound), the SQL Server side receives them (Allow Inbound).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Client,
    Server,
    #[default]
    Both,
}

impl Role {
    pub fn parse(text: &str) -> Option<Role> {
        match text.to_ascii_lowercase().as_str() {
            "client" => Some(Role::Client),
            "server" => Some(Role::Server),
            "both" => Some(Role::Both),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Client => "client",
            Role::Server => "server",
            Role::Both => "both",
        }
    }

    fn needs_outbound(self) -> bool {
        matches!(self, Role::Client | Role::Both)
    }

    fn needs_inbound(self) -> bool {
        matches!(self, Role::Server | Role::Both)
    }
}

/// Everything read from one host. Field names are the `data` keys of hop `dtc_config`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MsdtcConfig {
    /// `None` when the SCM could not be asked (see `service_error`).
    pub service_state: Option<ServiceState>,
    pub service_error: Option<String>,
    /// `None` when the SCM's configuration could not be read (not installed, or access).
    pub service_start_type: Option<ServiceStartType>,
    // HKLM\SOFTWARE\Microsoft\MSDTC\Security
    pub network_dtc_access: Option<u32>,
    pub network_dtc_access_transactions: Option<u32>,
    pub network_dtc_access_inbound: Option<u32>,
    pub network_dtc_access_outbound: Option<u32>,
    pub network_dtc_access_clients: Option<u32>,
    pub network_dtc_access_admin: Option<u32>,
    pub xa_transactions: Option<u32>,
    pub lu_transactions: Option<u32>,
    // HKLM\SOFTWARE\Microsoft\MSDTC
    pub allow_only_secure_rpc_calls: Option<u32>,
    pub fallback_to_unsecure_rpc_if_necessary: Option<u32>,
    pub turn_off_rpc_security: Option<u32>,
    pub server_tcp_port: Option<u32>,
    // HKLM\SOFTWARE\Microsoft\Rpc\Internet
    pub rpc_ports: Option<Vec<String>>,
    pub rpc_ports_internet_available: Option<String>,
    pub rpc_use_internet_ports: Option<String>,
    // HKLM\SOFTWARE\Policies\Microsoft\Windows NT\Rpc
    pub restrict_remote_clients: Option<u32>,
    // HKLM\SYSTEM\CurrentControlSet\Services\Tcpip\Parameters: the primary DNS suffix in
    // effect (`Domain`) and as configured for the next start (`NV Domain`); empty on a
    // workgroup machine. Judged as the machine's domain (src/hops/msdtc/auth_path.rs).
    pub domain: Option<String>,
    pub nv_domain: Option<String>,
    // HKLM\SYSTEM\CurrentControlSet\Control\Lsa and its MSV1_0 subkey: the NTLM policy.
    pub lm_compatibility_level: Option<u32>,
    pub restrict_sending_ntlm_traffic: Option<u32>,
    pub restrict_receiving_ntlm_traffic: Option<u32>,
    /// HKCR\CID\<GUID> whose description is "MSDTC" (lower case, no braces).
    pub cid: Option<String>,
    /// The clustered DTC resources of this node (HKLM\Cluster\Resources\<id> with an
    /// MSDTCPRIVATE key): on a failover cluster instance SQL Server may use one of them instead
    /// of the local DTC, so their network settings are judged too. Empty off a cluster.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub clustered_dtcs: Vec<ClusteredDtc>,
    /// Values that exist but could not be read as expected (wrong type, access denied):
    /// registry value name -> why. Never judged as absent.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub read_errors: BTreeMap<String, String>,
    /// Measured, not read: whether this host reaches a KDC of its domain on TCP 88 (data keys
    /// `kdc_reachable`, `kdc_detail`, `kdcs`). `not_checked` until `dtc_config` measures it,
    /// and in data from an agent that predates it.
    #[serde(flatten)]
    pub kerberos: KdcReachability,
}

/// A clustered DTC resource's settings, read from HKLM\Cluster\Resources\<id>: `Name`, and
/// below MSDTCPRIVATE\MSDTC the RPC security values (MS-CMOM 2.2.1.2.2.3, registry versions 7
/// and 9) and, in its Security subkey, the security access values (the same layout as the local
/// DTC's SOFTWARE\Microsoft\MSDTC\Security; confirmed only on a real cluster).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClusteredDtc {
    pub resource_id: String,
    /// The cluster resource's name (what `-DtcName` takes).
    pub name: Option<String>,
    pub network_dtc_access: Option<u32>,
    pub network_dtc_access_transactions: Option<u32>,
    pub network_dtc_access_inbound: Option<u32>,
    pub network_dtc_access_outbound: Option<u32>,
    pub allow_only_secure_rpc_calls: Option<u32>,
    pub fallback_to_unsecure_rpc_if_necessary: Option<u32>,
    pub turn_off_rpc_security: Option<u32>,
}

impl ClusteredDtc {
    /// How the PowerShell DTC cmdlets name it: the resource's name, else its ID.
    pub fn dtc_name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.resource_id)
    }

    fn label(&self) -> String {
        match &self.name {
            Some(n) => format!("`{n}` ({})", self.resource_id),
            None => format!("`{}`", self.resource_id),
        }
    }

    /// The network access rules on this DTC's own values, worded for it: the detail names the
    /// clustered DTC, the hint its own `-DtcName` and dialog node instead of the local DTC's.
    fn findings(&self, role: Role) -> Vec<Finding> {
        let as_config = MsdtcConfig {
            network_dtc_access: self.network_dtc_access,
            network_dtc_access_transactions: self.network_dtc_access_transactions,
            network_dtc_access_inbound: self.network_dtc_access_inbound,
            network_dtc_access_outbound: self.network_dtc_access_outbound,
            ..MsdtcConfig::default()
        };
        let name = self.dtc_name();
        network_findings(&as_config, role)
            .into_iter()
            .map(|mut f| {
                f.detail = format!("clustered DTC {}: {}", self.label(), f.detail);
                f.hint = f
                    .hint
                    .replace("-DtcName Local", &format!("-DtcName '{name}'"))
                    .replace(
                        "Distributed Transaction Coordinator > Local DTC",
                        &format!("Distributed Transaction Coordinator > Clustered DTCs > {name}"),
                    )
                    .replace(
                        "then restart MSDTC",
                        "then take the DTC resource offline and online in Failover Cluster Manager",
                    );
                f
            })
            .collect()
    }
}

fn on(v: Option<u32>) -> bool {
    matches!(v, Some(n) if n != 0)
}

/// "Y"/"N" registry strings (case-insensitive, surrounding blanks ignored).
fn yes(v: &Option<String>) -> Option<bool> {
    match v.as_deref().map(str::trim) {
        Some(s) if s.eq_ignore_ascii_case("y") => Some(true),
        Some(s) if s.eq_ignore_ascii_case("n") => Some(false),
        _ => None,
    }
}

/// The RPC dynamic port restriction as far as it can be told from the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RpcPortRange {
    /// No `Ports` value: RPC uses the operating system's default dynamic range.
    NotRestricted,
    /// `Ports` with `PortsInternetAvailable=Y` and `UseInternetPorts=Y` (the documented way to
    /// restrict RPC): dynamic endpoints come from these inclusive ranges.
    Restricted(Vec<(u16, u16)>),
    /// `Ports` is set, but with the other two values absent or not both `Y`: the effective range
    /// is not judged (the meaning of the other combinations is not confirmed here).
    NotJudged,
    /// A `Ports` entry that is not `N` or `N-M` with 1 <= N <= M <= 65535.
    Invalid(String),
}

/// Parses the `Ports` REG_MULTI_SZ entries (`5000-5100`, `5200`, blanks allowed).
pub fn parse_port_ranges(entries: &[String]) -> Result<Vec<(u16, u16)>, String> {
    let port = |s: &str, entry: &str| -> Result<u16, String> {
        s.trim()
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("`{entry}` is not a port or a port range (N or N-M)"))
    };
    let mut ranges = Vec::new();
    for entry in entries.iter().filter(|e| !e.trim().is_empty()) {
        let (lo, hi) = match entry.split_once('-') {
            Some((a, b)) => (port(a, entry)?, port(b, entry)?),
            None => {
                let p = port(entry, entry)?;
                (p, p)
            }
        };
        if lo > hi {
            return Err(format!("`{entry}`: the range runs backwards"));
        }
        ranges.push((lo, hi));
    }
    if ranges.is_empty() {
        return Err("`Ports` is set but lists no port".into());
    }
    Ok(ranges)
}

fn in_ranges(ranges: &[(u16, u16)], port: u32) -> bool {
    ranges
        .iter()
        .any(|(lo, hi)| (u32::from(*lo)..=u32::from(*hi)).contains(&port))
}

fn ranges_text(ranges: &[(u16, u16)]) -> String {
    ranges
        .iter()
        .map(|(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

impl MsdtcConfig {
    /// The security level per MS-CMOM 3.3.1.2.3: `AllowOnlySecureRpcCalls` missing or non-zero
    /// means mutual; else `FallbackToUnsecureRPCIfNecessary` non-zero means incoming; else
    /// `TurnOffRpcSecurity` non-zero means none; else the implementation's default (`None`).
    pub fn authentication(&self) -> Option<AuthLevel> {
        if self.allow_only_secure_rpc_calls.is_none_or(|v| v != 0) {
            Some(AuthLevel::Mutual)
        } else if on(self.fallback_to_unsecure_rpc_if_necessary) {
            Some(AuthLevel::Incoming)
        } else if on(self.turn_off_rpc_security) {
            Some(AuthLevel::None)
        } else {
            None
        }
    }

    /// What decides this host's MSDTC authentication ([`auth_path`]): the level, the machine's
    /// domain (`Domain`, else `NV Domain`), the NTLM policy.
    pub fn auth_side(&self) -> AuthSide<'_> {
        AuthSide {
            level: self.authentication(),
            domain: self.machine_domain(),
            lm_compatibility_level: self.lm_compatibility_level,
            restrict_sending_ntlm: self.restrict_sending_ntlm_traffic,
            restrict_receiving_ntlm: self.restrict_receiving_ntlm_traffic,
            kdc: match self.kerberos.kdc_reachable {
                Reachable::Yes => KdcReach::Reachable,
                Reachable::No => KdcReach::Unreachable(&self.kerberos.kdc_detail),
                Reachable::NotChecked => KdcReach::Unknown,
            },
        }
    }

    /// The machine's domain as judged (`Domain`, else `NV Domain`): `Some("")` a workgroup
    /// machine, `None` not read.
    pub fn machine_domain(&self) -> Option<&str> {
        self.domain.as_deref().or(self.nv_domain.as_deref())
    }

    pub fn rpc_port_range(&self) -> RpcPortRange {
        let Some(entries) = &self.rpc_ports else {
            return RpcPortRange::NotRestricted;
        };
        let ranges = match parse_port_ranges(entries) {
            Ok(r) => r,
            Err(e) => return RpcPortRange::Invalid(e),
        };
        match (
            yes(&self.rpc_ports_internet_available),
            yes(&self.rpc_use_internet_ports),
        ) {
            (Some(true), Some(true)) => RpcPortRange::Restricted(ranges),
            _ => RpcPortRange::NotJudged,
        }
    }

    /// The hop's `data`: every value read (null when absent) plus what was derived from them.
    pub fn to_data(&self, role: Role, findings: &[Finding]) -> Map<String, Value> {
        let mut data = match serde_json::to_value(self) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        };
        data.insert("role".into(), role.as_str().into());
        data.insert(
            "authentication".into(),
            self.authentication()
                .map_or(Value::Null, |a| a.as_str().into()),
        );
        let range = match self.rpc_port_range() {
            RpcPortRange::Restricted(r) => {
                Value::Array(r.iter().map(|(a, b)| format!("{a}-{b}").into()).collect())
            }
            _ => Value::Null,
        };
        data.insert("rpc_port_ranges".into(), range);
        data.insert(
            "findings".into(),
            Value::Array(findings.iter().map(Finding::to_json).collect()),
        );
        // The KDC flows found blocked, as hop `kdc` reports them: firewall request rows
        // (service "Kerberos") when the hop warns or fails.
        let blocked = self.kerberos.blocked_attempts();
        if !blocked.is_empty() {
            data.insert("attempts".into(), Value::Array(blocked));
        }
        data
    }

    /// Back from a `dtc_config` hop's `data` (the agent's side of a `peer` run). `None` when the
    /// data holds no configuration (a skipped hop, or data the agent had to drop).
    pub fn from_data(data: &Map<String, Value>) -> Option<MsdtcConfig> {
        if !data.contains_key("network_dtc_access") {
            return None;
        }
        serde_json::from_value(Value::Object(data.clone())).ok()
    }
}

/// One rule that did not pass.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub status: Status,
    pub cause: Cause,
    /// The setting it is about (registry value or service name).
    pub setting: &'static str,
    pub detail: String,
    pub hint: String,
}

impl Finding {
    fn fail(cause: Cause, setting: &'static str, detail: String, hint: &str) -> Finding {
        Finding {
            status: Status::Fail,
            cause,
            setting,
            detail,
            hint: hint.to_string(),
        }
    }

    fn warn(cause: Cause, setting: &'static str, detail: String, hint: &str) -> Finding {
        Finding {
            status: Status::Warn,
            ..Finding::fail(cause, setting, detail, hint)
        }
    }

    fn to_json(&self) -> Value {
        serde_json::json!({
            "status": self.status.as_str(),
            "cause": self.cause.as_str(),
            "setting": self.setting,
            "detail": self.detail,
            "hint": self.hint,
        })
    }
}

pub const HINT_SERVICE: &str = "start the Distributed Transaction Coordinator on this host: \
PowerShell `Start-Service MSDTC` and `Set-Service MSDTC -StartupType Automatic` (cmd: `net start \
msdtc`); if it is not installed, `msdtc -install` as administrator";

pub const HINT_SERVICE_DISABLED: &str = "the MSDTC service is Disabled, so nothing can start it \
(not SQL Server, not System.Transactions): PowerShell `Set-Service MSDTC -StartupType Automatic` \
then `Start-Service MSDTC` (cmd: `sc config msdtc start= auto` and `net start msdtc`)";

pub const HINT_SERVICE_MANUAL: &str = "MSDTC's start type is Manual: it starts on demand when a \
program on this host asks for a transaction manager (SQL Server on a distributed transaction, \
System.Transactions on promotion), so a stopped MSDTC is normal until then. While it is stopped \
its RPC interface is not registered, so an epm check from another zone reports it missing: run \
that check after a transaction, or `Set-Service MSDTC -StartupType Automatic` and \
`Start-Service MSDTC` for a service that answers at all times";

pub const HINT_NETWORK_ACCESS: &str = "on this host open Component Services (dcomcnfg) > \
Computers > My Computer > Distributed Transaction Coordinator > Local DTC > Properties > Security \
and check `Network DTC Access` and, under Transaction Manager Communication, `Allow Inbound` \
and `Allow Outbound`; or PowerShell `Set-DtcNetworkSetting -DtcName Local \
-InboundTransactionsEnabled $true -OutboundTransactionsEnabled $true` (see the result with \
`Get-DtcNetworkSetting -DtcName Local`), then restart MSDTC";

pub const HINT_OUTBOUND: &str = "this host starts the transactions (client role), so its \
MSDTC must send them: Component Services (dcomcnfg) > Computers > My Computer > Distributed \
Transaction Coordinator > Local DTC > Properties > Security > `Allow Outbound`; or PowerShell \
`Set-DtcNetworkSetting -DtcName Local -OutboundTransactionsEnabled $true`, then restart MSDTC";

pub const HINT_INBOUND: &str = "this host receives the transactions (SQL Server side, server \
role), so its MSDTC must accept them: Component Services (dcomcnfg) > Computers > My Computer > \
Distributed Transaction Coordinator > Local DTC > Properties > Security > `Allow Inbound`; or \
PowerShell `Set-DtcNetworkSetting -DtcName Local -InboundTransactionsEnabled $true`, then restart \
MSDTC";

pub const HINT_PORT_RANGE: &str = "MSDTC's fixed port (HKLM\\SOFTWARE\\Microsoft\\MSDTC \
ServerTcpPort) lies inside the restricted RPC dynamic range (HKLM\\SOFTWARE\\Microsoft\\Rpc\\Internet \
Ports), from which the RPC runtime hands ports to every dynamic server: Microsoft's guidance for a \
fixed server port (KB 154596, \"How to configure RPC dynamic port allocation to work with \
firewalls\") is a port outside that range. Move ServerTcpPort out of the range, allow TCP 135 and \
that port in both directions, and restart MSDTC";

pub const HINT_SERVER_PORT_INVALID: &str = "set HKLM\\SOFTWARE\\Microsoft\\MSDTC ServerTcpPort \
(REG_DWORD) to a TCP port from 1 to 65535, or delete it to use the RPC dynamic range, and restart \
MSDTC";

pub const HINT_PORTS_INVALID: &str = "fix HKLM\\SOFTWARE\\Microsoft\\Rpc\\Internet `Ports` \
(REG_MULTI_SZ, one `N` or `N-M` per line) or delete it: a malformed value can keep RPC servers \
from listening (restart the host after changing it)";

pub const HINT_RESTRICT_REMOTE_CLIENTS: &str = "RestrictRemoteClients = 2 (`Authenticated \
without exceptions`, Computer Configuration > Administrative Templates > System > Remote \
Procedure Call > Restrict Unauthenticated RPC clients) refuses every unauthenticated RPC call to \
this host, including endpoint mapper lookups and MSDTC partners set to `No Authentication \
Required`: set the policy to `Authenticated` or `None`";

pub const HINT_AUTH_MISMATCH: &str = "one MSDTC requires mutual authentication and the other \
uses none: they cannot talk. Set both to the same level (Incoming Caller Authentication works \
with either) in Component Services (dcomcnfg) > Computers > My Computer > Distributed Transaction \
Coordinator > Local DTC > Properties > Security, or PowerShell `Set-DtcNetworkSetting -DtcName \
Local -AuthenticationLevel Mutual|Incoming|NoAuth`, then restart MSDTC on that host";

/// A stopped MSDTC, judged by who can start it: Disabled fails (nothing can); Manual warns
/// (it starts on demand; Windows' own default on many versions); Automatic (it should be running:
/// stopped by hand or crashed) and an unknown start type fail.
fn stopped_finding(start: Option<ServiceStartType>) -> Finding {
    match start {
        Some(ServiceStartType::Disabled) => Finding::fail(
            Cause::DtcUnavailable,
            "MSDTC service",
            "the MSDTC service is stopped and Disabled: nothing can start it".into(),
            HINT_SERVICE_DISABLED,
        ),
        Some(ServiceStartType::Manual) => Finding::warn(
            Cause::DtcUnavailable,
            "MSDTC service",
            "the MSDTC service is stopped; start type Manual: it starts on demand when a program \
             here asks for a transaction manager"
                .into(),
            HINT_SERVICE_MANUAL,
        ),
        Some(t @ (ServiceStartType::Automatic | ServiceStartType::Boot)) => Finding::fail(
            Cause::DtcUnavailable,
            "MSDTC service",
            format!(
                "the MSDTC service is stopped although its start type is {} (stopped by hand, \
                 or it failed: see the System event log)",
                t.as_str()
            ),
            HINT_SERVICE,
        ),
        None => Finding::fail(
            Cause::DtcUnavailable,
            "MSDTC service",
            "the MSDTC service is not running (stopped); its start type could not be read".into(),
            HINT_SERVICE,
        ),
    }
}

/// Applies every rule to one host's configuration. Order: the service, network access, the
/// direction the role needs, ports, RPC policy. Each rule names the setting it is about.
pub fn judge(config: &MsdtcConfig, role: Role) -> Vec<Finding> {
    let mut found = Vec::new();
    match config.service_state {
        Some(ServiceState::Running) => {}
        Some(ServiceState::NotInstalled) => found.push(Finding::fail(
            Cause::DtcUnavailable,
            "MSDTC service",
            "the MSDTC service is not installed".into(),
            HINT_SERVICE,
        )),
        Some(state @ (ServiceState::StartPending | ServiceState::ContinuePending)) => {
            found.push(Finding::warn(
                Cause::DtcUnavailable,
                "MSDTC service",
                format!("the MSDTC service is not running yet ({})", state.as_str()),
                HINT_SERVICE,
            ))
        }
        Some(ServiceState::Stopped) => found.push(stopped_finding(config.service_start_type)),
        Some(state) => found.push(Finding::fail(
            Cause::DtcUnavailable,
            "MSDTC service",
            format!("the MSDTC service is not running ({})", state.as_str()),
            HINT_SERVICE,
        )),
        None => found.push(Finding::warn(
            Cause::Internal,
            "MSDTC service",
            format!(
                "could not ask the service control manager about MSDTC: {}",
                config.service_error.as_deref().unwrap_or("no reason given")
            ),
            "run dtcprobe as a user that may query services (any local user normally can)",
        )),
    }
    found.extend(network_findings(config, role));
    for dtc in &config.clustered_dtcs {
        found.extend(dtc.findings(role));
    }
    judge_ports_and_policy(config, &mut found);
    found.extend(
        auth_path::judge_host(&config.auth_side())
            .into_iter()
            .map(auth_finding),
    );
    found
}

/// A predicted authentication failure as a `warn` of hop `dtc_config`, cause `dtc_auth`.
fn auth_finding(f: AuthFinding) -> Finding {
    Finding::warn(Cause::DtcAuth, f.setting, f.detail, &f.hint)
}

/// The network access rules (Network DTC Access, network transactions, the direction the role
/// needs) on one DTC's security values: the local DTC's, or a clustered DTC's.
fn network_findings(config: &MsdtcConfig, role: Role) -> Vec<Finding> {
    let mut found = Vec::new();
    let network_off = !on(config.network_dtc_access);
    if network_off {
        let detail = match config.network_dtc_access {
            Some(v) => format!("Network DTC Access is off (NetworkDtcAccess = {v})"),
            None => "Network DTC Access is not set (no NetworkDtcAccess value: MSDTC then accepts \
                     local clients only)"
                .to_string(),
        };
        found.push(Finding::fail(
            Cause::DtcNetworkDisabled,
            "NetworkDtcAccess",
            detail,
            HINT_NETWORK_ACCESS,
        ));
    }
    // Judged as NetworkDtcAccess is, absent included: MS-CMOM 3.3.1.2.2 maps the value to the
    // Allow Network Transactions flag (0 off, anything else on), requires it present in the
    // registry versions that use it and gives no default for a missing one; MSDTC has shipped
    // with network communication disabled since Windows Server 2003 SP1 / XP SP2 (KB 899191).
    // Not confirmed on a real host: what MSDTC itself does with the value missing.
    if !on(config.network_dtc_access_transactions) {
        let detail = match config.network_dtc_access_transactions {
            Some(v) => format!("network transactions are off (NetworkDtcAccessTransactions = {v})"),
            None => "network transactions are not enabled (no NetworkDtcAccessTransactions \
                     value: MSDTC's network settings were never written, and network \
                     communication is off by default)"
                .to_string(),
        };
        found.push(Finding::fail(
            Cause::DtcNetworkDisabled,
            "NetworkDtcAccessTransactions",
            detail,
            HINT_NETWORK_ACCESS,
        ));
    }
    let direction = |value: Option<u32>, name: &'static str, checkbox: &str, hint: &str| {
        (!on(value)).then(|| {
            let state = match value {
                Some(v) => format!("{name} = {v}"),
                None => format!("no {name} value"),
            };
            Finding::fail(
                Cause::DtcNetworkDisabled,
                name,
                format!("`{checkbox}` is off ({state})"),
                hint,
            )
        })
    };
    if role.needs_outbound() {
        found.extend(direction(
            config.network_dtc_access_outbound,
            "NetworkDtcAccessOutbound",
            "Allow Outbound",
            HINT_OUTBOUND,
        ));
    }
    if role.needs_inbound() {
        found.extend(direction(
            config.network_dtc_access_inbound,
            "NetworkDtcAccessInbound",
            "Allow Inbound",
            HINT_INBOUND,
        ));
    }
    found
}

/// The port and RPC policy rules (this host's, whichever DTC it runs).
fn judge_ports_and_policy(config: &MsdtcConfig, found: &mut Vec<Finding>) {
    match (config.rpc_port_range(), config.server_tcp_port) {
        (RpcPortRange::Invalid(why), _) => found.push(Finding::warn(
            Cause::DtcPortRange,
            "Ports",
            format!("the RPC port range cannot be read: {why}"),
            HINT_PORTS_INVALID,
        )),
        (_, Some(port)) if port == 0 || port > u32::from(u16::MAX) => found.push(Finding::warn(
            Cause::DtcPortRange,
            "ServerTcpPort",
            format!("ServerTcpPort = {port} is not a TCP port"),
            HINT_SERVER_PORT_INVALID,
        )),
        (RpcPortRange::Restricted(ranges), Some(port)) if in_ranges(&ranges, port) => {
            found.push(Finding::warn(
                Cause::DtcPortRange,
                "ServerTcpPort",
                format!(
                    "ServerTcpPort {port} is inside the RPC dynamic port range ({}): another RPC \
                     server can be handed that port",
                    ranges_text(&ranges)
                ),
                HINT_PORT_RANGE,
            ))
        }
        _ => {}
    }
    if config.restrict_remote_clients == Some(2) {
        found.push(Finding::warn(
            Cause::DtcAuthMismatch,
            "RestrictRemoteClients",
            "RestrictRemoteClients = 2: unauthenticated RPC calls to this host are refused".into(),
            HINT_RESTRICT_REMOTE_CLIENTS,
        ));
    }
}

/// A one-line summary of what was read, for the hop's detail.
fn summary(config: &MsdtcConfig, role: Role) -> String {
    let flag = |v: Option<u32>| match v {
        Some(0) => "off".to_string(),
        Some(_) => "on".to_string(),
        None => "not set".to_string(),
    };
    let mut parts = vec![
        match config.service_start_type {
            Some(t) => format!(
                "service {} (start type {})",
                config.service_state.map_or("unknown", ServiceState::as_str),
                t.as_str()
            ),
            None => format!(
                "service {}",
                config.service_state.map_or("unknown", ServiceState::as_str)
            ),
        },
        format!("network access {}", flag(config.network_dtc_access)),
        format!("inbound {}", flag(config.network_dtc_access_inbound)),
        format!("outbound {}", flag(config.network_dtc_access_outbound)),
        format!(
            "authentication {}",
            config
                .authentication()
                .map_or("implementation default", AuthLevel::as_str)
        ),
    ];
    if let Some(p) = config.server_tcp_port {
        parts.push(format!(
            "ServerTcpPort {p} (the firewall must allow TCP 135 and {p} in both directions)"
        ));
    }
    match config.rpc_port_range() {
        RpcPortRange::Restricted(r) => parts.push(format!("RPC ports {}", ranges_text(&r))),
        RpcPortRange::NotJudged => parts.push(
            "RPC Ports set without PortsInternetAvailable=Y and UseInternetPorts=Y (range not judged)"
                .into(),
        ),
        _ => {}
    }
    if let Some(cid) = &config.cid {
        parts.push(format!("CID {cid}"));
    }
    if !config.kerberos.kdc_detail.is_empty() {
        parts.push(format!("Kerberos: {}", config.kerberos.kdc_detail));
    }
    for dtc in &config.clustered_dtcs {
        parts.push(format!(
            "clustered DTC {} (network access {}, inbound {}, outbound {}; its authentication \
             and ports not audited: Get-DtcNetworkSetting -DtcName {})",
            dtc.label(),
            flag(dtc.network_dtc_access),
            flag(dtc.network_dtc_access_inbound),
            flag(dtc.network_dtc_access_outbound),
            dtc.dtc_name()
        ));
    }
    format!("role {}: {}", role.as_str(), parts.join(", "))
}

/// The `dtc_config` hop for one host: the worst finding decides status and cause; the detail
/// names every finding, the data holds every value read.
pub fn config_hop(config: &MsdtcConfig, role: Role) -> HopResult {
    let findings = judge(config, role);
    let data = config.to_data(role, &findings);
    let mut hop = hop_from_findings(&findings, summary(config, role));
    hop.data = data.into();
    hop
}

fn hop_from_findings(findings: &[Finding], summary: String) -> HopResult {
    let worst = findings.iter().map(|f| f.status).max();
    let mut hop = match worst.and_then(|w| findings.iter().find(|f| f.status == w)) {
        None => HopResult::pass(HopKind::DtcConfig, summary),
        Some(first) => {
            let problems: Vec<&str> = findings.iter().map(|f| f.detail.as_str()).collect();
            // One hint per cause among the worst findings: the first names the setting that
            // matters most (Network DTC Access covers Allow Inbound/Outbound too); the others
            // stay in `data.findings` and the detail.
            let mut hints: Vec<&str> = Vec::new();
            let mut causes: Vec<Cause> = Vec::new();
            for f in findings.iter().filter(|f| f.status == first.status) {
                if !causes.contains(&f.cause) {
                    causes.push(f.cause);
                    hints.push(&f.hint);
                }
            }
            HopResult::new(
                HopKind::DtcConfig,
                first.status,
                format!("{}; {summary}", problems.join("; ")),
            )
            .with_cause(first.cause)
            .with_hint(hints.join(" | "))
        }
    };
    hop.data = Map::new().into();
    hop
}

/// Judges two hosts' configurations against each other: this host (`near`, where `peer` runs,
/// which starts the transactions) and the agent's host (`far`, which receives them). The CID
/// comparison is not here: the existing `msdtc_cid` check does it (hop `dtc_cid`, [`super::compare_cids`]).
pub fn compare_pair(near: &MsdtcConfig, far: &MsdtcConfig) -> HopResult {
    let mut found = Vec::new();
    let (a, b) = (near.authentication(), far.authentication());
    // Incoming works with either; only mutual against none cannot (MS-CMPO 2.1.3: a mutual
    // side makes and accepts authenticated calls only, a none side makes unauthenticated ones).
    if let (Some(a @ (AuthLevel::Mutual | AuthLevel::None)), Some(b)) = (a, b) {
        if a != b && b != AuthLevel::Incoming {
            let detail = format!(
                "this host's MSDTC uses `{}`, the agent's host `{}`: these cannot work together",
                a.dialog_name(),
                b.dialog_name()
            );
            found.push(Finding::fail(
                Cause::DtcAuthMismatch,
                "AllowOnlySecureRpcCalls",
                detail,
                HINT_AUTH_MISMATCH,
            ));
        }
    }
    // Whether the two can authenticate at those levels: domains, NTLM policy, and each side's
    // KDC reachability as that side measured it.
    found.extend(
        auth_path::judge_pair(&near.auth_side(), &far.auth_side())
            .into_iter()
            .map(auth_finding),
    );
    if !on(near.network_dtc_access) || !on(near.network_dtc_access_outbound) {
        found.push(Finding::fail(
            Cause::DtcNetworkDisabled,
            "NetworkDtcAccessOutbound",
            "this host's MSDTC does not send network transactions (Network DTC Access or Allow \
             Outbound off): it cannot flow a transaction to the agent's host"
                .into(),
            HINT_OUTBOUND,
        ));
    }
    if !on(far.network_dtc_access) || !on(far.network_dtc_access_inbound) {
        found.push(Finding::fail(
            Cause::DtcNetworkDisabled,
            "NetworkDtcAccessInbound",
            "the agent host's MSDTC does not accept network transactions (Network DTC Access or \
             Allow Inbound off): transactions from this host are refused there"
                .into(),
            "on the agent's host: Component Services (dcomcnfg) > Computers > My Computer > \
             Distributed Transaction Coordinator > Local DTC > Properties > Security > `Network \
             DTC Access` and `Allow Inbound`; or PowerShell `Set-DtcNetworkSetting -DtcName Local \
             -InboundTransactionsEnabled $true`, then restart MSDTC",
        ));
    }
    let name = |a: Option<AuthLevel>| a.map_or("implementation default", AuthLevel::as_str);
    let summary = format!(
        "authentication: this host {}, the agent's host {}; a KDC reachable: this host {}, \
         the agent's host {}",
        name(a),
        name(b),
        near.kerberos.kdc_reachable.as_str(),
        far.kerberos.kdc_reachable.as_str()
    );
    let mut hop = hop_from_findings(&found, summary);
    hop.data
        .insert("local_authentication".into(), name(a).into());
    hop.data
        .insert("remote_authentication".into(), name(b).into());
    hop.data.insert(
        "local_kdc_reachable".into(),
        near.kerberos.kdc_reachable.as_str().into(),
    );
    hop.data.insert(
        "remote_kdc_reachable".into(),
        far.kerberos.kdc_reachable.as_str().into(),
    );
    hop.data.insert(
        "findings".into(),
        Value::Array(found.iter().map(Finding::to_json).collect()),
    );
    hop
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A host set up as Microsoft's checklist says: running, network access, both directions,
    /// mutual authentication.
    fn good() -> MsdtcConfig {
        MsdtcConfig {
            service_state: Some(ServiceState::Running),
            network_dtc_access: Some(1),
            network_dtc_access_transactions: Some(1),
            network_dtc_access_inbound: Some(1),
            network_dtc_access_outbound: Some(1),
            allow_only_secure_rpc_calls: Some(1),
            fallback_to_unsecure_rpc_if_necessary: Some(0),
            turn_off_rpc_security: Some(0),
            cid: Some("5d1e0000-0000-0000-0000-000000000001".into()),
            ..MsdtcConfig::default()
        }
    }

    fn causes(c: &MsdtcConfig, role: Role) -> Vec<(Status, Cause, &'static str)> {
        judge(c, role)
            .into_iter()
            .map(|f| (f.status, f.cause, f.setting))
            .collect()
    }

    #[test]
    fn a_good_config_passes_in_every_role() {
        for role in [Role::Client, Role::Server, Role::Both] {
            assert_eq!(causes(&good(), role), [], "{role:?}");
            let hop = config_hop(&good(), role);
            assert_eq!(hop.status, Status::Pass, "{hop:?}");
            assert_eq!(hop.hop, HopKind::DtcConfig);
            assert!(
                hop.detail.contains("authentication mutual"),
                "{}",
                hop.detail
            );
            assert_eq!(hop.data["role"], role.as_str());
        }
    }

    #[test]
    fn the_service_state_is_judged() {
        let with = |s: Option<ServiceState>| MsdtcConfig {
            service_state: s,
            service_error: s.is_none().then(|| "access denied".to_string()),
            ..good()
        };
        let table = [
            (
                Some(ServiceState::NotInstalled),
                Status::Fail,
                Cause::DtcUnavailable,
            ),
            (
                Some(ServiceState::Stopped),
                Status::Fail,
                Cause::DtcUnavailable,
            ),
            (
                Some(ServiceState::Paused),
                Status::Fail,
                Cause::DtcUnavailable,
            ),
            (
                Some(ServiceState::StopPending),
                Status::Fail,
                Cause::DtcUnavailable,
            ),
            (
                Some(ServiceState::StartPending),
                Status::Warn,
                Cause::DtcUnavailable,
            ),
            (None, Status::Warn, Cause::Internal),
        ];
        for (state, status, cause) in table {
            assert_eq!(
                causes(&with(state), Role::Both),
                [(status, cause, "MSDTC service")],
                "{state:?}"
            );
        }
        let hop = config_hop(&with(Some(ServiceState::Stopped)), Role::Both);
        assert!(hop.hint.unwrap().contains("Start-Service MSDTC"));
    }

    /// A stopped MSDTC is judged by its start type: Disabled fails (nothing can start it),
    /// Manual warns (it starts on demand), Automatic fails (it should be running).
    #[test]
    fn a_stopped_service_is_judged_by_its_start_type() {
        let stopped = |t: Option<ServiceStartType>| MsdtcConfig {
            service_state: Some(ServiceState::Stopped),
            service_start_type: t,
            ..good()
        };
        for (start, status, hint) in [
            (
                Some(ServiceStartType::Disabled),
                Status::Fail,
                HINT_SERVICE_DISABLED,
            ),
            (
                Some(ServiceStartType::Manual),
                Status::Warn,
                HINT_SERVICE_MANUAL,
            ),
            (
                Some(ServiceStartType::Automatic),
                Status::Fail,
                HINT_SERVICE,
            ),
            (None, Status::Fail, HINT_SERVICE),
        ] {
            let found = judge(&stopped(start), Role::Both);
            assert_eq!(found.len(), 1, "{start:?}: {found:?}");
            assert_eq!(
                (found[0].status, found[0].cause, found[0].hint.as_str()),
                (status, Cause::DtcUnavailable, hint),
                "{start:?}"
            );
            let hop = config_hop(&stopped(start), Role::Both);
            assert_eq!(hop.status, status, "{hop:?}");
            if let Some(t) = start {
                assert!(
                    hop.detail.contains(&format!("start type {}", t.as_str())),
                    "{}",
                    hop.detail
                );
                assert_eq!(hop.data["service_start_type"], t.as_str());
            }
        }
        // A running service with any start type passes.
        let running = MsdtcConfig {
            service_start_type: Some(ServiceStartType::Manual),
            ..good()
        };
        assert_eq!(config_hop(&running, Role::Both).status, Status::Pass);
    }

    #[test]
    fn network_access_off_or_absent_fails_and_absent_is_not_zero_in_the_detail() {
        for value in [Some(0), None] {
            let c = MsdtcConfig {
                network_dtc_access: value,
                ..good()
            };
            let found = judge(&c, Role::Both);
            assert_eq!(found.len(), 1, "{found:?}");
            assert_eq!(found[0].cause, Cause::DtcNetworkDisabled);
            assert_eq!(found[0].setting, "NetworkDtcAccess");
            let expected = if value.is_some() { "= 0" } else { "not set" };
            assert!(found[0].detail.contains(expected), "{}", found[0].detail);
            assert!(found[0].hint.contains("Network DTC Access"));
            assert!(found[0].hint.contains("Set-DtcNetworkSetting"));
        }
        // NetworkDtcAccessTransactions: judged as NetworkDtcAccess is, absent included (issue
        // 23 finding 9), and absent is said to be absent, not zero.
        for (value, expected) in [(Some(0), "= 0"), (None, "no NetworkDtcAccessTransactions")] {
            let c = MsdtcConfig {
                network_dtc_access_transactions: value,
                ..good()
            };
            assert_eq!(
                causes(&c, Role::Both),
                [(
                    Status::Fail,
                    Cause::DtcNetworkDisabled,
                    "NetworkDtcAccessTransactions"
                )]
            );
            let found = judge(&c, Role::Both);
            assert!(found[0].detail.contains(expected), "{}", found[0].detail);
        }
        let c = MsdtcConfig {
            network_dtc_access_transactions: Some(1),
            ..good()
        };
        assert_eq!(causes(&c, Role::Both), []);
    }

    /// Issue 23 finding 3: a failover cluster's clustered DTC is audited with the same network
    /// rules, named in the detail, with its own `-DtcName` in the hint; its values travel in
    /// `data.clustered_dtcs` (and back, for the agent's side of a `peer` run).
    #[test]
    fn a_clustered_dtc_is_audited_under_its_own_name() {
        let clustered = ClusteredDtc {
            resource_id: "7f4d0c1e-0000-4000-8000-00000000c1d7".into(),
            name: Some("SQLDTC".into()),
            network_dtc_access: Some(1),
            network_dtc_access_transactions: Some(1),
            network_dtc_access_inbound: Some(0),
            network_dtc_access_outbound: Some(1),
            ..ClusteredDtc::default()
        };
        let c = MsdtcConfig {
            clustered_dtcs: vec![clustered.clone()],
            ..good()
        };
        let found = judge(&c, Role::Server);
        assert_eq!(found.len(), 1, "{found:?}");
        let f = &found[0];
        assert_eq!(
            (f.cause, f.setting),
            (Cause::DtcNetworkDisabled, "NetworkDtcAccessInbound")
        );
        assert!(
            f.detail.starts_with("clustered DTC `SQLDTC`"),
            "{}",
            f.detail
        );
        assert!(f.hint.contains("-DtcName 'SQLDTC'"), "{}", f.hint);
        assert!(f.hint.contains("Clustered DTCs > SQLDTC"), "{}", f.hint);
        assert!(!f.hint.contains("-DtcName Local"), "{}", f.hint);
        // The client role does not need Inbound: the same cluster passes there.
        assert!(judge(&c, Role::Client).is_empty());
        let hop = config_hop(&c, Role::Server);
        assert_eq!(hop.status, Status::Fail);
        assert!(
            hop.detail.contains("clustered DTC `SQLDTC`"),
            "{}",
            hop.detail
        );
        assert_eq!(hop.data["clustered_dtcs"][0]["name"], "SQLDTC");
        assert_eq!(
            MsdtcConfig::from_data(&hop.data).unwrap().clustered_dtcs,
            [clustered]
        );
        // Off a cluster the key is absent and nothing changes.
        assert!(config_hop(&good(), Role::Both)
            .data
            .get("clustered_dtcs")
            .is_none());
    }

    #[test]
    fn the_direction_the_role_needs() {
        let no_in = MsdtcConfig {
            network_dtc_access_inbound: Some(0),
            ..good()
        };
        let no_out = MsdtcConfig {
            network_dtc_access_outbound: None,
            ..good()
        };
        let inbound = (
            Status::Fail,
            Cause::DtcNetworkDisabled,
            "NetworkDtcAccessInbound",
        );
        let outbound = (
            Status::Fail,
            Cause::DtcNetworkDisabled,
            "NetworkDtcAccessOutbound",
        );
        assert_eq!(causes(&no_in, Role::Client), []);
        assert_eq!(causes(&no_in, Role::Server), [inbound]);
        assert_eq!(causes(&no_in, Role::Both), [inbound]);
        assert_eq!(causes(&no_out, Role::Client), [outbound]);
        assert_eq!(causes(&no_out, Role::Server), []);
        assert_eq!(causes(&no_out, Role::Both), [outbound]);
        let hop = config_hop(&no_out, Role::Client);
        assert!(hop.hint.as_deref().unwrap().contains("Allow Outbound"));
        assert!(
            hop.detail.contains("no NetworkDtcAccessOutbound value"),
            "{}",
            hop.detail
        );
    }

    #[test]
    fn authentication_follows_ms_cmom() {
        let auth = |a: Option<u32>, f: Option<u32>, t: Option<u32>| {
            MsdtcConfig {
                allow_only_secure_rpc_calls: a,
                fallback_to_unsecure_rpc_if_necessary: f,
                turn_off_rpc_security: t,
                ..MsdtcConfig::default()
            }
            .authentication()
        };
        assert_eq!(auth(None, None, None), Some(AuthLevel::Mutual));
        assert_eq!(auth(Some(1), Some(1), Some(1)), Some(AuthLevel::Mutual));
        assert_eq!(auth(Some(0), Some(1), Some(0)), Some(AuthLevel::Incoming));
        assert_eq!(auth(Some(0), Some(1), Some(1)), Some(AuthLevel::Incoming));
        assert_eq!(auth(Some(0), Some(0), Some(1)), Some(AuthLevel::None));
        assert_eq!(auth(Some(0), None, Some(1)), Some(AuthLevel::None));
        assert_eq!(auth(Some(0), Some(0), Some(0)), None);
        assert_eq!(auth(Some(0), None, None), None);
    }

    #[test]
    fn port_ranges_parse() {
        let p =
            |v: &[&str]| parse_port_ranges(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(p(&["5000-5100"]), Ok(vec![(5000, 5100)]));
        assert_eq!(
            p(&[" 5000 - 5100 ", "6000", ""]),
            Ok(vec![(5000, 5100), (6000, 6000)])
        );
        for bad in [
            &["5100-5000"][..],
            &["x"],
            &["0-10"],
            &["5000-70000"],
            &[""],
            &[],
        ] {
            assert!(p(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn server_tcp_port_against_the_rpc_range() {
        let with =
            |port: Option<u32>, ports: Option<&[&str]>, avail: &str, use_inet: &str| MsdtcConfig {
                server_tcp_port: port,
                rpc_ports: ports.map(|p| p.iter().map(|s| s.to_string()).collect()),
                rpc_ports_internet_available: Some(avail.into()),
                rpc_use_internet_ports: Some(use_inet.into()),
                ..good()
            };
        let range: &[&str] = &["5000-5100", "6000"];
        let port_finding = (Status::Warn, Cause::DtcPortRange, "ServerTcpPort");
        // Outside the dynamic range is what Microsoft advises for a fixed server port.
        assert_eq!(
            causes(&with(Some(5101), Some(range), "Y", "Y"), Role::Both),
            []
        );
        assert_eq!(
            causes(&with(Some(135), Some(range), "Y", "Y"), Role::Both),
            []
        );
        assert_eq!(
            causes(&with(Some(5000), Some(range), "Y", "Y"), Role::Both),
            [port_finding]
        );
        assert_eq!(
            causes(&with(Some(5100), Some(range), "Y", "Y"), Role::Both),
            [port_finding]
        );
        assert_eq!(
            causes(&with(Some(6000), Some(range), "y", "Y"), Role::Both),
            [port_finding]
        );
        // No range, or a range whose meaning is not judged: not judged.
        assert_eq!(causes(&with(Some(5050), None, "Y", "Y"), Role::Both), []);
        assert_eq!(
            causes(&with(Some(5050), Some(range), "N", "Y"), Role::Both),
            []
        );
        // Not a port at all.
        let invalid = |p| causes(&with(Some(p), None, "Y", "Y"), Role::Both);
        assert_eq!(invalid(70000), [port_finding]);
        assert_eq!(invalid(0), [port_finding]);
        // A malformed range is named whatever the port.
        assert_eq!(
            causes(&with(None, Some(&["5000-x"]), "Y", "Y"), Role::Both),
            [(Status::Warn, Cause::DtcPortRange, "Ports")]
        );
        let hop = config_hop(&with(Some(5050), Some(range), "Y", "Y"), Role::Both);
        assert_eq!(hop.status, Status::Warn);
        assert!(
            hop.detail
                .contains("inside the RPC dynamic port range (5000-5100, 6000)"),
            "{}",
            hop.detail
        );
        assert!(hop.hint.as_deref().unwrap().contains("KB 154596"));
        assert_eq!(
            hop.data["rpc_port_ranges"],
            serde_json::json!(["5000-5100", "6000-6000"])
        );
        let hop = config_hop(&with(Some(5200), Some(range), "Y", "Y"), Role::Both);
        assert_eq!(hop.status, Status::Pass);
        assert!(
            hop.detail
                .contains("allow TCP 135 and 5200 in both directions"),
            "{}",
            hop.detail
        );
    }

    #[test]
    fn restrict_remote_clients_without_exceptions_warns() {
        for (value, expected) in [(None, 0), (Some(0), 0), (Some(1), 0), (Some(2), 1)] {
            let c = MsdtcConfig {
                restrict_remote_clients: value,
                ..good()
            };
            let found = causes(&c, Role::Both);
            assert_eq!(found.len(), expected, "{value:?}: {found:?}");
        }
    }

    #[test]
    fn the_worst_finding_decides_and_every_finding_is_named() {
        let c = MsdtcConfig {
            service_state: Some(ServiceState::Stopped),
            network_dtc_access_inbound: Some(0),
            restrict_remote_clients: Some(2),
            ..good()
        };
        let hop = config_hop(&c, Role::Both);
        assert_eq!(hop.status, Status::Fail);
        assert_eq!(hop.cause, Some(Cause::DtcUnavailable));
        assert!(
            hop.detail.contains("not running (stopped)"),
            "{}",
            hop.detail
        );
        assert!(hop.detail.contains("Allow Inbound"), "{}", hop.detail);
        assert!(
            hop.detail.contains("RestrictRemoteClients"),
            "{}",
            hop.detail
        );
        let hint = hop.hint.unwrap();
        assert!(
            hint.contains("Start-Service") && hint.contains("Allow Inbound"),
            "{hint}"
        );
        assert!(
            !hint.contains("Restrict Unauthenticated"),
            "warn hints stay in data: {hint}"
        );
        assert_eq!(hop.data["findings"].as_array().unwrap().len(), 3);
    }

    #[test]
    fn data_round_trips_and_absent_values_are_null() {
        let c = MsdtcConfig {
            server_tcp_port: Some(5100),
            rpc_ports: Some(vec!["5000-5200".into()]),
            read_errors: [("Ports".to_string(), "wrong type".to_string())].into(),
            ..good()
        };
        let hop = config_hop(&c, Role::Client);
        assert_eq!(hop.data["xa_transactions"], Value::Null);
        assert_eq!(hop.data["network_dtc_access"], 1);
        assert_eq!(hop.data["service_state"], "running");
        assert_eq!(hop.data["authentication"], "mutual");
        assert_eq!(hop.data["read_errors"]["Ports"], "wrong type");
        assert_eq!(MsdtcConfig::from_data(&hop.data), Some(c));
        assert_eq!(MsdtcConfig::from_data(&Map::new()), None);
    }

    /// What `kdc::reach` measures when the router drops 88 to the domain's only DC.
    fn cut_off(domain: &str) -> KdcReachability {
        use crate::hops::kdc::reach::{summarize, KdcTried};
        summarize(
            domain,
            vec![KdcTried {
                host: format!("dc1.{domain}"),
                found_by: format!("dns_srv _kerberos._tcp.{domain}"),
                address: Some("198.18.2.10:88".into()),
                source: Some("198.18.1.10".into()),
                status: "fail".into(),
                cause: Some("timeout".into()),
                detail: Some("no answer".into()),
            }],
        )
    }

    /// The same KDC answering.
    fn reached(domain: &str) -> KdcReachability {
        let mut tried = cut_off(domain).kdcs;
        tried[0].status = "pass".into();
        (tried[0].cause, tried[0].detail) = (None, None);
        crate::hops::kdc::reach::summarize(domain, tried)
    }

    #[test]
    fn kdc_reachability_decides_with_the_registry() {
        // Mutual, a domain member, outgoing NTLM denied.
        let member = MsdtcConfig {
            domain: Some("dtc.test".into()),
            restrict_sending_ntlm_traffic: Some(2),
            ..good()
        };
        // Not measured: no finding (Kerberos assumed in a domain), said in the detail.
        let hop = config_hop(&member, Role::Both);
        assert_eq!(hop.status, Status::Pass, "{hop:?}");
        assert_eq!(hop.data["kdc_reachable"], "not_checked");
        let cut = MsdtcConfig {
            kerberos: cut_off("dtc.test"),
            ..member.clone()
        };
        let hop = config_hop(&cut, Role::Both);
        assert_eq!(
            (hop.status, hop.cause),
            (Status::Warn, Some(Cause::DtcAuth)),
            "{hop:?}"
        );
        assert!(
            hop.detail
                .contains("dc1.dtc.test (198.18.2.10) TCP 88: timeout"),
            "{}",
            hop.detail
        );
        let settings: Vec<&Value> = hop.data["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| &f["setting"])
            .collect();
        assert_eq!(
            settings,
            ["AllowOnlySecureRpcCalls", "RestrictSendingNTLMTraffic"]
        );
        assert_eq!(hop.data["kdc_reachable"], "no");
        assert_eq!(hop.data["kdcs"][0]["address"], "198.18.2.10:88");
        // The blocked flow as a firewall request row, service Kerberos.
        let mut check =
            crate::model::CheckResult::new("dtc", "msdtc", "msdtc://localhost", vec![hop]);
        check.from = Some("web".into());
        let report = crate::model::Report::new(
            std::time::SystemTime::now(),
            std::time::Duration::ZERO,
            "web01".into(),
            vec![check],
        );
        let rows = crate::verdict::firewall_requests(&report);
        assert_eq!(rows.len(), 1, "{rows:#?}");
        assert_eq!(
            (
                rows[0].destination.as_str(),
                rows[0].ports.as_str(),
                rows[0].protocol,
                rows[0].service.as_deref()
            ),
            ("198.18.2.10", "88", "tcp", Some("Kerberos"))
        );
        // Reachable: the same registry passes, and the detail says who answered.
        let reachable = reached("dtc.test");
        let hop = config_hop(
            &MsdtcConfig {
                kerberos: reachable,
                ..member
            },
            Role::Both,
        );
        assert_eq!(hop.status, Status::Pass, "{hop:?}");
        assert!(
            hop.detail
                .contains("Kerberos: KDC dc1.dtc.test (198.18.2.10) of dtc.test answers"),
            "{}",
            hop.detail
        );
        assert!(hop.data.get("attempts").is_none());
    }

    #[test]
    fn the_agent_s_kdc_fact_reaches_the_pair() {
        // Incoming on both, one domain; the agent's host denies receiving NTLM. This host
        // (agent's data round-tripped as `peer` does) is cut off from its KDC: its calls go
        // by NTLM, which the agent refuses.
        let near = MsdtcConfig {
            domain: Some("dtc.test".into()),
            allow_only_secure_rpc_calls: Some(0),
            fallback_to_unsecure_rpc_if_necessary: Some(1),
            kerberos: cut_off("dtc.test"),
            ..good()
        };
        let far = MsdtcConfig {
            restrict_receiving_ntlm_traffic: Some(2),
            kerberos: crate::hops::kdc::reach::summarize("dtc.test", Vec::new()),
            ..near.clone()
        };
        let far_data = config_hop(&far, Role::Both).data;
        let far_back = MsdtcConfig::from_data(&far_data).unwrap();
        assert_eq!(far_back.kerberos, far.kerberos);
        let h = compare_pair(&near, &far_back);
        assert_eq!(
            (h.status, h.cause),
            (Status::Warn, Some(Cause::DtcAuth)),
            "{h:?}"
        );
        assert_eq!(
            h.data["findings"][0]["setting"],
            "RestrictReceivingNTLMTraffic"
        );
        assert!(h.data["findings"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("198.18.2.10"));
        assert_eq!(h.data["local_kdc_reachable"], "no");
        // Both reach their KDC: nothing.
        let ok = reached("dtc.test");
        let h = compare_pair(
            &MsdtcConfig {
                kerberos: ok.clone(),
                ..near
            },
            &MsdtcConfig {
                kerberos: ok,
                ..far
            },
        );
        assert_eq!(h.status, Status::Pass, "{h:?}");
        assert_eq!(h.data["remote_kdc_reachable"], "yes");
    }

    #[test]
    fn pairs_of_hosts() {
        let level = |a: u32, f: u32, t: u32| MsdtcConfig {
            allow_only_secure_rpc_calls: Some(a),
            fallback_to_unsecure_rpc_if_necessary: Some(f),
            turn_off_rpc_security: Some(t),
            ..good()
        };
        let (mutual, incoming, none) = (level(1, 0, 0), level(0, 1, 0), level(0, 0, 1));
        let pair = |a: &MsdtcConfig, b: &MsdtcConfig| {
            let h = compare_pair(a, b);
            (h.status, h.cause)
        };
        let mismatch = (Status::Fail, Some(Cause::DtcAuthMismatch));
        assert_eq!(pair(&mutual, &none), mismatch);
        assert_eq!(pair(&none, &mutual), mismatch);
        for (a, b) in [
            (&mutual, &mutual),
            (&mutual, &incoming),
            (&incoming, &none),
            (&none, &none),
            (&incoming, &incoming),
        ] {
            assert_eq!(pair(a, b), (Status::Pass, None), "{a:?} / {b:?}");
        }
        let h = compare_pair(&mutual, &none);
        assert!(
            h.detail.contains("Mutual Authentication Required"),
            "{}",
            h.detail
        );
        assert!(
            h.detail.contains("No Authentication Required"),
            "{}",
            h.detail
        );
        assert_eq!(h.data["local_authentication"], "mutual");
        assert_eq!(h.data["remote_authentication"], "none");
        // The authentication path (auth_path.rs): mutual between two different domains is a
        // `warn dtc_auth` naming the setting; in one domain it passes.
        let in_domain = |c: &MsdtcConfig, d: &str| MsdtcConfig {
            domain: Some(d.into()),
            ..c.clone()
        };
        let h = compare_pair(
            &in_domain(&mutual, "corp.example"),
            &in_domain(&incoming, "branch.example"),
        );
        assert_eq!((h.status, h.cause), (Status::Warn, Some(Cause::DtcAuth)));
        assert_eq!(h.data["findings"][0]["setting"], "AllowOnlySecureRpcCalls");
        assert_eq!(
            pair(
                &in_domain(&mutual, "corp.example"),
                &in_domain(&incoming, "corp.example")
            ),
            (Status::Pass, None)
        );
        // One host alone, a workgroup machine set to mutual: `NV Domain` is only read when
        // `Domain` is absent.
        let workgroup = MsdtcConfig {
            nv_domain: Some("corp.example".into()),
            ..in_domain(&mutual, "")
        };
        assert!(causes(&workgroup, Role::Both).contains(&(
            Status::Warn,
            Cause::DtcAuth,
            "AllowOnlySecureRpcCalls"
        )));
        let pending = MsdtcConfig {
            domain: None,
            ..workgroup
        };
        assert!(!causes(&pending, Role::Both)
            .iter()
            .any(|(_, c, _)| *c == Cause::DtcAuth));
        // The direction each side needs: this host out, the agent's host in.
        let far_no_in = MsdtcConfig {
            network_dtc_access_inbound: Some(0),
            ..good()
        };
        let near_no_out = MsdtcConfig {
            network_dtc_access_outbound: Some(0),
            ..good()
        };
        let off = (Status::Fail, Some(Cause::DtcNetworkDisabled));
        assert_eq!(pair(&good(), &far_no_in), off);
        assert_eq!(pair(&near_no_out, &good()), off);
        assert_eq!(pair(&far_no_in, &near_no_out), (Status::Pass, None));
        assert!(compare_pair(&good(), &far_no_in)
            .hint
            .unwrap()
            .starts_with("on the agent's host"));
    }
}
