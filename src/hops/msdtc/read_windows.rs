//! The Windows reader: this host's MSDTC registry values (through Microsoft's `windows-registry`
//! crate, RegOpenKeyExW/RegQueryValueExW underneath) and the MSDTC service's state (through the
//! service control manager, `windows-service`). It only reads and records: an absent key or
//! value stays `None`, a value of the wrong type or an access error goes to `read_errors` under
//! its name, so the judge never mistakes "could not read" for "not set". All judging is in
//! `config`.
//!
//! Only a real Windows host (and, for the registry and the SCM, wine in the tests) confirms this
//! layer: see tests/windows_wine.rs.

use std::collections::BTreeMap;

use windows_registry::{Key, Type, Value, CLASSES_ROOT, LOCAL_MACHINE};

use super::config::{ClusteredDtc, MsdtcConfig, ServiceStartType, ServiceState};

const MSDTC: &str = r"SOFTWARE\Microsoft\MSDTC";
const MSDTC_SECURITY: &str = r"SOFTWARE\Microsoft\MSDTC\Security";
const RPC_INTERNET: &str = r"SOFTWARE\Microsoft\Rpc\Internet";
const RPC_POLICY: &str = r"SOFTWARE\Policies\Microsoft\Windows NT\Rpc";
/// The machine's primary DNS suffix (its domain, for the authentication path).
const TCPIP_PARAMETERS: &str = r"SYSTEM\CurrentControlSet\Services\Tcpip\Parameters";
/// The NTLM policy: LmCompatibilityLevel here, the Restrict NTLM values in its MSV1_0 subkey.
const LSA: &str = r"SYSTEM\CurrentControlSet\Control\Lsa";
const LSA_MSV1_0: &str = r"SYSTEM\CurrentControlSet\Control\Lsa\MSV1_0";
/// A failover cluster node's resources (the hive is loaded on cluster nodes only).
const CLUSTER_RESOURCES: &str = r"Cluster\Resources";

/// HRESULT_FROM_WIN32(ERROR_FILE_NOT_FOUND): the key or value does not exist.
const NOT_FOUND: i32 = 0x8007_0002_u32 as i32;
/// ERROR_SERVICE_DOES_NOT_EXIST.
const SERVICE_DOES_NOT_EXIST: i32 = 1060;

/// Reads everything; never fails as a whole (each failure is recorded where it happened).
pub fn read() -> MsdtcConfig {
    let mut errors = BTreeMap::new();
    let mut c = MsdtcConfig::default();
    if let Some(k) = open(LOCAL_MACHINE, MSDTC_SECURITY, &mut errors) {
        let mut dword = |name: &str| read_u32(&k, name, &mut errors);
        c.network_dtc_access = dword("NetworkDtcAccess");
        c.network_dtc_access_transactions = dword("NetworkDtcAccessTransactions");
        c.network_dtc_access_inbound = dword("NetworkDtcAccessInbound");
        c.network_dtc_access_outbound = dword("NetworkDtcAccessOutbound");
        c.network_dtc_access_clients = dword("NetworkDtcAccessClients");
        c.network_dtc_access_admin = dword("NetworkDtcAccessAdmin");
        c.xa_transactions = dword("XaTransactions");
        c.lu_transactions = dword("LuTransactions");
    }
    if let Some(k) = open(LOCAL_MACHINE, MSDTC, &mut errors) {
        let mut dword = |name: &str| read_u32(&k, name, &mut errors);
        c.allow_only_secure_rpc_calls = dword("AllowOnlySecureRpcCalls");
        c.fallback_to_unsecure_rpc_if_necessary = dword("FallbackToUnsecureRPCIfNecessary");
        c.turn_off_rpc_security = dword("TurnOffRpcSecurity");
        c.server_tcp_port = dword("ServerTcpPort");
    }
    if let Some(k) = open(LOCAL_MACHINE, RPC_INTERNET, &mut errors) {
        c.rpc_ports = read_multi(&k, "Ports", &mut errors);
        c.rpc_ports_internet_available = read_string(&k, "PortsInternetAvailable", &mut errors);
        c.rpc_use_internet_ports = read_string(&k, "UseInternetPorts", &mut errors);
    }
    if let Some(k) = open(LOCAL_MACHINE, RPC_POLICY, &mut errors) {
        c.restrict_remote_clients = read_u32(&k, "RestrictRemoteClients", &mut errors);
    }
    if let Some(k) = open(LOCAL_MACHINE, TCPIP_PARAMETERS, &mut errors) {
        c.domain = read_string(&k, "Domain", &mut errors);
        c.nv_domain = read_string(&k, "NV Domain", &mut errors);
    }
    if let Some(k) = open(LOCAL_MACHINE, LSA, &mut errors) {
        c.lm_compatibility_level = read_u32(&k, "LmCompatibilityLevel", &mut errors);
    }
    if let Some(k) = open(LOCAL_MACHINE, LSA_MSV1_0, &mut errors) {
        let mut dword = |name: &str| read_u32(&k, name, &mut errors);
        c.restrict_sending_ntlm_traffic = dword("RestrictSendingNTLMTraffic");
        c.restrict_receiving_ntlm_traffic = dword("RestrictReceivingNTLMTraffic");
    }
    c.cid = msdtc_cid(&mut errors);
    c.clustered_dtcs = clustered_dtcs(&mut errors);
    match service_state() {
        Ok((state, start)) => {
            c.service_state = Some(state);
            c.service_start_type = start;
        }
        Err(e) => c.service_error = Some(e),
    }
    c.read_errors = errors;
    c
}

fn hresult_text(e: &windows_registry::Result<Value>) -> String {
    match e {
        Ok(_) => String::new(),
        Err(e) => format!("{} (0x{:08X})", e.message(), e.code().0),
    }
}

/// Opens HKLM\`path` (or HKCR); absent is `None` silently, any other error is recorded.
fn open(root: &Key, path: &str, errors: &mut BTreeMap<String, String>) -> Option<Key> {
    match root.open(path) {
        Ok(k) => Some(k),
        Err(e) if e.code().0 == NOT_FOUND => None,
        Err(e) => {
            errors.insert(path.to_string(), hresult_text(&Err(e)));
            None
        }
    }
}

/// A value, or `None` when absent; other errors recorded under its name.
fn value(key: &Key, name: &str, errors: &mut BTreeMap<String, String>) -> Option<Value> {
    match key.get_value(name) {
        Ok(v) => Some(v),
        Err(e) if e.code().0 == NOT_FOUND => None,
        e => {
            errors.insert(name.to_string(), hresult_text(&e));
            None
        }
    }
}

fn read_u32(key: &Key, name: &str, errors: &mut BTreeMap<String, String>) -> Option<u32> {
    let v = value(key, name, errors)?;
    match v.ty() {
        Type::U32 => u32::try_from(v).ok(),
        // Some tools write numbers as strings; MSDTC reads DWORDs only, so record, do not guess.
        other => {
            errors.insert(
                name.to_string(),
                format!("expected REG_DWORD, found {other:?}"),
            );
            None
        }
    }
}

fn read_string(key: &Key, name: &str, errors: &mut BTreeMap<String, String>) -> Option<String> {
    let v = value(key, name, errors)?;
    match v.ty() {
        Type::String | Type::ExpandString => String::try_from(v).ok(),
        other => {
            errors.insert(
                name.to_string(),
                format!("expected REG_SZ, found {other:?}"),
            );
            None
        }
    }
}

fn read_multi(key: &Key, name: &str, errors: &mut BTreeMap<String, String>) -> Option<Vec<String>> {
    let v = value(key, name, errors)?;
    match v.ty() {
        // REG_SZ is accepted as one entry: regedit users sometimes create it so.
        Type::MultiString | Type::String => Vec::<String>::try_from(v).ok().map(|entries| {
            entries
                .into_iter()
                .map(|e| e.trim_end_matches('\0').to_string())
                .filter(|e| !e.is_empty())
                .collect()
        }),
        other => {
            errors.insert(
                name.to_string(),
                format!("expected REG_MULTI_SZ, found {other:?}"),
            );
            None
        }
    }
}

/// HKCR\CID\<GUID> whose description is "MSDTC": a `Description` subkey whose default value
/// says so (how MSDTC registers it), or a `Description` value.
fn msdtc_cid(errors: &mut BTreeMap<String, String>) -> Option<String> {
    let cids = open(CLASSES_ROOT, "CID", errors)?;
    let names: Vec<String> = match cids.keys() {
        Ok(k) => k.collect(),
        Err(e) => {
            errors.insert(
                "CID".into(),
                format!("{} (0x{:08X})", e.message(), e.code().0),
            );
            return None;
        }
    };
    let is_msdtc = |s: Option<String>| s.is_some_and(|s| s.trim() == "MSDTC");
    names.into_iter().find_map(|guid| {
        let key = cids.open(&guid).ok()?;
        let described = key
            .open("Description")
            .ok()
            .and_then(|d| d.get_string("").ok());
        let found = is_msdtc(described) || is_msdtc(key.get_string("Description").ok());
        found.then(|| {
            guid.trim_matches(|c| c == '{' || c == '}')
                .to_ascii_lowercase()
        })
    })
}

/// Every clustered DTC resource of this node: a key under HKLM\Cluster\Resources with an
/// MSDTCPRIVATE subkey (MS-CMOM 2.2.1.2.2.3/.5, registry versions 7 and 9). Its RPC security
/// values are in MSDTCPRIVATE\MSDTC, its security access values in MSDTCPRIVATE\MSDTC\Security
/// (as the local DTC's are in SOFTWARE\Microsoft\MSDTC\Security); a value that cannot be read
/// is recorded under its full path, so it never collides with the local DTC's.
fn clustered_dtcs(errors: &mut BTreeMap<String, String>) -> Vec<ClusteredDtc> {
    let Some(resources) = open(LOCAL_MACHINE, CLUSTER_RESOURCES, errors) else {
        return Vec::new();
    };
    let ids: Vec<String> = match resources.keys() {
        Ok(k) => k.collect(),
        Err(e) => {
            errors.insert(
                CLUSTER_RESOURCES.into(),
                format!("{} (0x{:08X})", e.message(), e.code().0),
            );
            return Vec::new();
        }
    };
    let mut found = Vec::new();
    for id in ids {
        let Ok(resource) = resources.open(&id) else {
            continue;
        };
        let Ok(private) = resource.open("MSDTCPRIVATE") else {
            continue;
        };
        let mut own = BTreeMap::new();
        let mut dtc = ClusteredDtc {
            resource_id: id.clone(),
            name: read_string(&resource, "Name", &mut own),
            ..ClusteredDtc::default()
        };
        if let Some(k) = open(&private, r"MSDTC\Security", &mut own) {
            let mut dword = |name: &str| read_u32(&k, name, &mut own);
            dtc.network_dtc_access = dword("NetworkDtcAccess");
            dtc.network_dtc_access_transactions = dword("NetworkDtcAccessTransactions");
            dtc.network_dtc_access_inbound = dword("NetworkDtcAccessInbound");
            dtc.network_dtc_access_outbound = dword("NetworkDtcAccessOutbound");
        }
        if let Some(k) = open(&private, "MSDTC", &mut own) {
            let mut dword = |name: &str| read_u32(&k, name, &mut own);
            dtc.allow_only_secure_rpc_calls = dword("AllowOnlySecureRpcCalls");
            dtc.fallback_to_unsecure_rpc_if_necessary = dword("FallbackToUnsecureRPCIfNecessary");
            dtc.turn_off_rpc_security = dword("TurnOffRpcSecurity");
        }
        for (name, why) in own {
            errors.insert(
                format!(r"{CLUSTER_RESOURCES}\{id}\MSDTCPRIVATE: {name}"),
                why,
            );
        }
        found.push(dtc);
    }
    found
}

/// The service's state and, when the SCM lets this account read its configuration, its start
/// type (a stopped MSDTC is judged by it: Disabled, Manual or Automatic).
fn service_state() -> Result<(ServiceState, Option<ServiceStartType>), String> {
    use windows_service::service::{ServiceAccess, ServiceStartType as T, ServiceState as S};
    use windows_service::service_manager::{ServiceManager, ServiceManagerAccess};
    let manager = ServiceManager::local_computer(None::<&str>, ServiceManagerAccess::CONNECT)
        .map_err(|e| format!("cannot open the service control manager: {}", win_error(&e)))?;
    let access = ServiceAccess::QUERY_STATUS | ServiceAccess::QUERY_CONFIG;
    let service = match manager
        .open_service("MSDTC", access)
        // An account allowed to query the status but not the configuration still gets a state.
        .or_else(|_| manager.open_service("MSDTC", ServiceAccess::QUERY_STATUS))
    {
        Ok(s) => s,
        Err(windows_service::Error::Winapi(e))
            if e.raw_os_error() == Some(SERVICE_DOES_NOT_EXIST) =>
        {
            return Ok((ServiceState::NotInstalled, None))
        }
        Err(e) => return Err(format!("cannot open service MSDTC: {}", win_error(&e))),
    };
    let start = service.query_config().ok().map(|c| match c.start_type {
        T::AutoStart => ServiceStartType::Automatic,
        T::OnDemand => ServiceStartType::Manual,
        T::Disabled => ServiceStartType::Disabled,
        T::SystemStart | T::BootStart => ServiceStartType::Boot,
    });
    let status = service
        .query_status()
        .map_err(|e| format!("cannot query service MSDTC: {}", win_error(&e)))?;
    let state = match status.current_state {
        S::Running => ServiceState::Running,
        S::Stopped => ServiceState::Stopped,
        S::StartPending => ServiceState::StartPending,
        S::StopPending => ServiceState::StopPending,
        S::Paused => ServiceState::Paused,
        S::PausePending => ServiceState::PausePending,
        S::ContinuePending => ServiceState::ContinuePending,
    };
    Ok((state, start))
}

fn win_error(e: &windows_service::Error) -> String {
    match e {
        windows_service::Error::Winapi(io) => io.to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::config::{AuthLevel, MsdtcConfig};
    use super::*;

    /// What Microsoft's own cmdlets say on this host, as one JSON object.
    const POWERSHELL: &str = "$s = Get-DtcNetworkSetting -DtcName Local; \
        [pscustomobject]@{ inbound = $s.InboundTransactionsEnabled; \
        outbound = $s.OutboundTransactionsEnabled; clients = $s.RemoteClientAccessEnabled; \
        admin = $s.RemoteAdministrationAccessEnabled; xa = $s.XATransactionsEnabled; \
        lu = $s.LUTransactionsEnabled; auth = [string]$s.AuthenticationLevel; \
        service = [string](Get-Service MSDTC).Status } | ConvertTo-Json -Compress";

    fn on(v: Option<u32>) -> bool {
        matches!(v, Some(n) if n != 0)
    }

    /// Opt-in, for a real Windows host only (wine has neither MSDTC nor these cmdlets):
    /// `set DTCPROBE_REAL_WINDOWS_MSDTC=1` then `cargo test --lib hops::msdtc::read_windows`.
    /// Compares what this reader makes of the registry and the SCM with `Get-DtcNetworkSetting`
    /// and `Get-Service MSDTC`: the claim that the registry values mean what docs/msdtc.md says
    /// (Allow Inbound = NetworkDtcAccess and NetworkDtcAccessInbound, the MS-CMOM authentication
    /// mapping ...) is confirmed here or nowhere. Change the settings in the Local DTC dialog and
    /// run it again to cover more than one configuration.
    #[test]
    fn reading_agrees_with_get_dtcnetworksetting_on_a_real_windows_host() {
        if std::env::var("DTCPROBE_REAL_WINDOWS_MSDTC").as_deref() != Ok("1") {
            eprintln!(
                "SKIP reading_agrees_with_get_dtcnetworksetting_on_a_real_windows_host: set \
                 DTCPROBE_REAL_WINDOWS_MSDTC=1 on a real Windows host with MSDTC"
            );
            return;
        }
        let c: MsdtcConfig = read();
        assert!(c.read_errors.is_empty(), "{:?}", c.read_errors);
        let out = std::process::Command::new("powershell")
            .args(["-NoProfile", "-NonInteractive", "-Command", POWERSHELL])
            .output()
            .expect("powershell");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ps: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
        let flag = |k: &str| ps[k].as_bool().unwrap_or_else(|| panic!("{k}: {ps}"));
        let network = on(c.network_dtc_access);
        let context = format!("cmdlets: {ps}\nread: {c:#?}");
        assert_eq!(
            flag("inbound"),
            network && on(c.network_dtc_access_inbound),
            "{context}"
        );
        assert_eq!(
            flag("outbound"),
            network && on(c.network_dtc_access_outbound),
            "{context}"
        );
        assert_eq!(
            flag("clients"),
            network && on(c.network_dtc_access_clients),
            "{context}"
        );
        assert_eq!(
            flag("admin"),
            network && on(c.network_dtc_access_admin),
            "{context}"
        );
        assert_eq!(flag("xa"), on(c.xa_transactions), "{context}");
        assert_eq!(flag("lu"), on(c.lu_transactions), "{context}");
        let auth = match ps["auth"].as_str() {
            Some("Mutual") => Some(AuthLevel::Mutual),
            Some("Incoming") => Some(AuthLevel::Incoming),
            Some("NoAuth") => Some(AuthLevel::None),
            other => panic!("unknown AuthenticationLevel {other:?}: {context}"),
        };
        assert_eq!(auth, c.authentication(), "{context}");
        let service = match ps["service"].as_str() {
            Some("Running") => Some(ServiceState::Running),
            Some("Stopped") => Some(ServiceState::Stopped),
            Some("Paused") => Some(ServiceState::Paused),
            Some("StartPending") => Some(ServiceState::StartPending),
            Some("StopPending") => Some(ServiceState::StopPending),
            other => panic!("service status {other:?}: {context}"),
        };
        assert_eq!(service, c.service_state, "{context}");
    }
}
