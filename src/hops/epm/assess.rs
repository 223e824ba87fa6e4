//! What the mapper's answers mean: the verdicts of the `epm` and `rpc_port` hops, the cause and
//! hint for a broken conversation, and the cross-check of MSDTC CIDs over a whole run. All pure
//! functions over decoded answers and results, so every verdict has a table test and none needs
//! a mapper on the network.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::{IpAddr, SocketAddr};

use serde_json::{json, Value};

use super::client::{BindOutcome, EpmError};
use super::target::Interface;
use crate::dcerpc::epm::{Entry, Tower, EPT_S_NOT_REGISTERED};
use crate::dcerpc::pdu::{
    bind_nak_reason, context_result_text, is_abstract_syntax_rejection, status_text, BindReply,
};
use crate::dcerpc::SyntaxId;
use crate::model::{Cause, CheckResult, HopKind, HopResult, Status};

pub const HINT_RPC_PORT: &str =
    "allow the RPC dynamic range or pin MSDTC with ServerTcpPort and open that port, in both directions";
pub const HINT_NETWORK_DTC_OFF: &str = "Network DTC Access is off: MSDTC is registered for local (ncalrpc) \
clients only. Enable it in Component Services > Computers > My Computer > Distributed Transaction \
Coordinator > Local DTC > Properties > Security (Network DTC Access, Allow Inbound/Outbound), or \
`Set-DtcNetworkSetting -DtcName Local -InboundTransactionsEnabled $true -OutboundTransactionsEnabled $true`";
pub const HINT_LOCAL_ONLY: &str =
    "the interface is registered for local (ncalrpc / named pipe) clients \
only: the service does not listen on TCP";
pub const HINT_DTC_NOT_REGISTERED: &str = "MSDTC (IXnRemote) is not registered with the endpoint mapper \
on that host: the Distributed Transaction Coordinator service is stopped or not installed, or this is \
not the machine running it (clustered DTC: use the cluster DTC name)";
pub const HINT_NOT_REGISTERED: &str = "nothing is registered for this interface on that host: the \
service providing it is not running there (check the UUID and version)";
pub const HINT_ACCESS_DENIED: &str = "the endpoint mapper refused an unauthenticated query: \
RestrictRemoteClients / EnableAuthEpResolution policy (Computer Configuration > Administrative \
Templates > System > Remote Procedure Call) is set on that host";
pub const HINT_PROTOCOL: &str =
    "something answers on this port but not as a DCE/RPC endpoint mapper: \
another service on TCP 135, a proxy or an IPS rewriting the traffic";
pub const HINT_DUPLICATE_CID: &str =
    "two hosts report the same MSDTC CID, typical of cloned machines \
(sysprep skipped): transactions between them fail. On one of them run `msdtc -uninstall` then \
`msdtc -install` (and restart the service) to get a new CID";

impl EpmError {
    /// The cause and hint for a failed conversation.
    pub fn classify(&self) -> (Cause, &'static str) {
        match self {
            e if e.is_access_denied() => (Cause::EpmAccessDenied, HINT_ACCESS_DENIED),
            e if e.is_not_registered() => (Cause::EpmNotRegistered, HINT_NOT_REGISTERED),
            EpmError::Timeout(_) => (
                Cause::Timeout,
                "TCP 135 accepted the connection but the endpoint mapper did not answer: a hung RPC \
                 service, or a firewall/IPS that lets the handshake through and drops RPC traffic",
            ),
            EpmError::Io(e) if matches!(e.kind(), io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted | io::ErrorKind::BrokenPipe) => {
                (Cause::Reset, "the connection was reset during the RPC conversation: an IPS or firewall doing RPC inspection")
            }
            EpmError::Closed => (Cause::ProtocolError, HINT_PROTOCOL),
            EpmError::Io(_) => (Cause::Internal, "an unexpected error from the operating system; run with -v"),
            _ => (Cause::ProtocolError, HINT_PROTOCOL),
        }
    }
}

/// The tower of a lookup entry, when it decoded.
pub(super) fn decoded_tower(e: &Entry) -> Option<&Tower> {
    e.tower.as_ref().and_then(|t| t.as_ref().ok())
}

/// Whether a lookup entry registers `iface` (its tower decoded and names that interface).
pub(super) fn registers(e: &Entry, iface: &Interface) -> bool {
    decoded_tower(e)
        .and_then(Tower::interface)
        .is_some_and(|s| iface.matches(&s))
}

/// What `epm` hands to `rpc_port` and `rpc_bind`.
#[derive(Debug, Clone, PartialEq)]
pub struct EpmFound {
    /// The address the mapper answered on: the RPC ports are tried there.
    pub ip: IpAddr,
    pub ports: Vec<u16>,
    /// The interface and version to bind to (the one asked for, or the version registered).
    pub iface: SyntaxId,
    /// Per port, every network address the towers advertised for it (those naming one other
    /// than 0.0.0.0): a multi-homed server registers one tower per NIC.
    pub advertised: BTreeMap<u16, BTreeSet<IpAddr>>,
}

impl EpmFound {
    /// The advertised address to compare with the one reached on `port`: the reached address
    /// itself when any tower advertised it (no mismatch), else the first advertised. Comparing
    /// with the first tower only (before issue 23) flagged `address_mismatch` on a server that
    /// also advertised the address reached.
    pub fn tower_address(&self, port: u16) -> Option<IpAddr> {
        let set = self.advertised.get(&port)?;
        if set.contains(&self.ip) {
            Some(self.ip)
        } else {
            set.iter().next().copied()
        }
    }
}

/// Pure verdict of the `epm` hop from what the mapper said.
/// `lookup`: entries of `ept_lookup` by interface (may be partial); `mapped`: towers from `ept_map`.
pub fn assess(
    iface: &Interface,
    bind_as: SyntaxId,
    mapper: SocketAddr,
    lookup: &[Entry],
    mapped: &[Tower],
) -> (HopResult, Option<EpmFound>) {
    let matching: Vec<&Tower> = lookup
        .iter()
        .filter_map(decoded_tower)
        .chain(mapped.iter())
        .filter(|t| t.interface().is_some_and(|s| iface.matches(&s)))
        .collect();
    let cids: BTreeSet<String> = lookup
        .iter()
        .filter(|e| !e.object.is_nil())
        .filter(|e| registers(e, iface))
        .map(|e| e.object.to_string())
        .collect();
    let mut ports = BTreeSet::new();
    let mut advertised = BTreeSet::new();
    let mut advertised_by_port = BTreeMap::new();
    let mut endpoints = BTreeSet::new();
    for t in &matching {
        endpoints.insert(t.binding());
        if let Some((ip, port)) = t.tcp_endpoint() {
            if port != 0 {
                ports.insert(port);
            }
            if let Some(ip) = ip.filter(|ip| !ip.is_unspecified()) {
                advertised.insert(ip.to_string());
                if port != 0 {
                    advertised_by_port
                        .entry(port)
                        .or_insert_with(BTreeSet::new)
                        .insert(ip);
                }
            }
        }
    }
    let ports: Vec<u16> = ports.into_iter().collect();
    let name = if iface.is_msdtc() {
        "MSDTC (IXnRemote)".to_string()
    } else {
        iface.text()
    };
    let mut result = if !ports.is_empty() {
        let list: Vec<String> = ports.iter().map(u16::to_string).collect();
        HopResult::pass(
            HopKind::Epm,
            format!("{name} registered on TCP port {}", list.join(", ")),
        )
    } else if !matching.is_empty() {
        let kinds: BTreeSet<&str> = matching.iter().map(|t| t.protseq()).collect();
        let kinds: Vec<&str> = kinds.into_iter().collect();
        // MSDTC on ncalrpc alone is what Network DTC Access off looks like (a Windows 2019 DC's
        // real listing, tests/captures.rs); the detail says so, as the verdict line repeats it.
        let dtc_off = iface.is_msdtc() && kinds == ["ncalrpc"];
        let (hint, meaning) = if dtc_off {
            (HINT_NETWORK_DTC_OFF, ": Network DTC Access is off")
        } else {
            (HINT_LOCAL_ONLY, "")
        };
        HopResult::fail(
            HopKind::Epm,
            Cause::EpmNotRegistered,
            format!(
                "{name} is registered only for {} (no ncacn_ip_tcp endpoint{meaning})",
                kinds.join(", ")
            ),
        )
        .with_hint(hint)
    } else {
        HopResult::fail(
            HopKind::Epm,
            Cause::EpmNotRegistered,
            format!(
                "{name} is not registered with the endpoint mapper ({})",
                status_text(EPT_S_NOT_REGISTERED)
            ),
        )
        .with_hint(if iface.is_msdtc() {
            HINT_DTC_NOT_REGISTERED
        } else {
            HINT_NOT_REGISTERED
        })
    };
    if let Some(cid) = cids.iter().next() {
        result.detail.push_str(&format!("; CID {cid}"));
        result = result.with_data("cid", cid.as_str());
    }
    if cids.len() > 1 {
        result = result.with_data("cids", cids.iter().cloned().collect::<Vec<_>>());
    }
    let result = result
        .with_data("address", mapper.to_string())
        .with_data("iface", iface.text())
        .with_data("endpoints", endpoints.into_iter().collect::<Vec<_>>())
        .with_data("ports", ports.clone());
    let result = if advertised.is_empty() {
        result
    } else {
        result.with_data(
            "advertised_addresses",
            advertised.into_iter().collect::<Vec<_>>(),
        )
    };
    let found = (!ports.is_empty()).then_some(EpmFound {
        ip: mapper.ip(),
        ports,
        iface: bind_as,
        advertised: advertised_by_port,
    });
    (result, found)
}

/// The `epm` hop when the conversation with the mapper broke at `step`.
pub(super) fn conversation_failure(e: &EpmError, mapper: SocketAddr, step: &str) -> HopResult {
    let (cause, hint) = e.classify();
    HopResult::fail(HopKind::Epm, cause, format!("{step}: {e}"))
        .with_hint(hint)
        .with_data("address", mapper.to_string())
}

/// Pure: the `rpc_port` hop from connect attempts to the mapped ports.
pub fn rpc_port_result(attempts: &[crate::hops::connect::Attempt]) -> HopResult {
    let mut r = crate::hops::connect::hop_result(HopKind::RpcPort, attempts);
    if r.status != Status::Pass
        && matches!(
            r.cause,
            Some(
                Cause::Timeout
                    | Cause::Prohibited
                    | Cause::ResetByPath
                    | Cause::Refused
                    | Cause::Reset
            )
        )
    {
        let detail_hint = r.hint.take().unwrap_or_default();
        r = r
            .with_hint(HINT_RPC_PORT)
            .with_data("network_hint", detail_hint);
    }
    let ports: Vec<u16> = attempts.iter().map(|a| a.addr.port()).collect();
    r.with_data("ports", ports)
}

pub const HINT_BIND_OTHER_SERVER: &str = "the port the endpoint mapper returned is answered by an \
RPC server that does not offer this interface: a stale registration (the service restarted and another \
program now holds the port), or a port forward / NAT that leads to another host. Restart the service \
(MSDTC: pin it with ServerTcpPort) and compare with rpcdump / `PortQry -e 135` on the server itself";
/// bind_nak reasons 1 (temporary congestion) and 2 (local limit exceeded): the RPC server is
/// the right one but out of capacity, not another program on the port.
pub const HINT_BIND_BUSY: &str = "the RPC server on this port refused the bind for lack of \
capacity (bind_nak: temporary congestion or local limit exceeded), not because it is another \
server: it is overloaded or at its connection limit. Run the check again; if it persists, look at \
the server's load and the RPC/MSDTC event logs there";
pub const HINT_BIND_NOT_RPC: &str = "the port the endpoint mapper returned is answered by a program \
that does not speak DCE/RPC: a stale registration (another program took the port), a port forward to \
another service, or a proxy in the path";
pub const HINT_RPC_FILTERED: &str = "the TCP handshake to the RPC port passed but the RPC bind inside \
the connection was dropped: an RPC-aware firewall or IPS (DCE/RPC application inspection, an RPC \
UUID filter such as Windows Firewall RPC filters, `netsh rpc filter`, or a next-generation firewall's \
msrpc application) allows the port and discards the RPC. Such drops often leave no deny in the \
firewall log. Allow this interface UUID in the RPC/DCE-RPC inspection policy, in both directions";
pub const HINT_TOWER_ADDRESS: &str = "the endpoint mapper advertises another network address for \
this port than the one reached: NAT between the zones, or a multi-homed server registering the \
interface on another NIC. Clients that use the advertised address (and the far side calling back by \
name) go to that other interface: give the server a NIC (or an address) in the zone its partners \
reach, or make name resolution and the advertised address agree";

/// One `rpc_bind` attempt: the port tried (on the mapper's address), the address the mapper's
/// tower advertised for it, and what the bind came to.
#[derive(Debug)]
pub struct BindAttempt {
    pub addr: SocketAddr,
    pub tower_address: Option<IpAddr>,
    pub outcome: BindOutcome,
    pub elapsed: std::time::Duration,
}

/// The verdict of one bind: `Ok(answer)` when the server accepted the interface, or the
/// failure's cause, short answer name, detail and hint.
fn bind_verdict(
    outcome: &BindOutcome,
) -> Result<&'static str, (Cause, &'static str, String, &'static str)> {
    match outcome {
        BindOutcome::Answered(BindReply::Accepted { .. }) => Ok("bind_ack"),
        BindOutcome::Answered(BindReply::ContextRejected { result, reason }) => Err((
            Cause::ProtocolError,
            "context_rejected",
            format!(
                "bind_ack rejected the interface ({}){}",
                context_result_text(*result, *reason),
                if is_abstract_syntax_rejection(*reason) {
                    ": the RPC server on this port does not offer it"
                } else {
                    ""
                }
            ),
            HINT_BIND_OTHER_SERVER,
        )),
        BindOutcome::Answered(BindReply::Nak { reason }) => Err((
            Cause::ProtocolError,
            "bind_nak",
            format!("bind_nak ({})", bind_nak_reason(*reason)),
            // DCE/RPC reasons 1 and 2 say "busy", not "wrong server".
            if matches!(reason, 1 | 2) {
                HINT_BIND_BUSY
            } else {
                HINT_BIND_OTHER_SERVER
            },
        )),
        BindOutcome::NotConnected(a) => match crate::classify::classify_connect(a.outcome) {
            Some(v) => Err((
                v.cause,
                "not_connected",
                format!("TCP {}: {}", a.addr, v.detail),
                HINT_RPC_PORT,
            )),
            None => Err((
                Cause::Internal,
                "not_connected",
                "no connection".into(),
                "run with -v",
            )),
        },
        BindOutcome::Broken(e) => match e {
            EpmError::Timeout(limit) => Err((
                Cause::Timeout,
                "no_answer",
                format!(
                    "TCP connected, but the bind got no answer within {}",
                    humantime::format_duration(*limit)
                ),
                HINT_RPC_FILTERED,
            )),
            EpmError::Closed => Err((
                Cause::Reset,
                "closed",
                "TCP connected, then the connection was closed without an answer to the bind"
                    .into(),
                HINT_RPC_FILTERED,
            )),
            EpmError::Io(io)
                if matches!(
                    io.kind(),
                    io::ErrorKind::ConnectionReset
                        | io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::BrokenPipe
                ) =>
            {
                Err((
                    Cause::Reset,
                    "reset",
                    format!("TCP connected, then the connection was reset during the bind ({io})"),
                    HINT_RPC_FILTERED,
                ))
            }
            EpmError::Io(io) => Err((
                Cause::Internal,
                "error",
                format!("local socket error during the bind: {io}"),
                "an unexpected error from the operating system; run with -v",
            )),
            other => Err((
                Cause::ProtocolError,
                "not_rpc",
                format!("the answer to the bind is not DCE/RPC ({other})"),
                HINT_BIND_NOT_RPC,
            )),
        },
    }
}

/// Pure: the `rpc_bind` hop from one bind per port. Pass when every port accepted the interface;
/// `warn` when only some did, or when they all did but a tower advertised another address than
/// the one reached (`address_mismatch`); `fail` with the first failure's cause otherwise.
pub fn rpc_bind_result(iface: &SyntaxId, attempts: &[BindAttempt]) -> HopResult {
    let mut binds = Vec::new();
    let mut failures = Vec::new();
    let mut accepted = Vec::new();
    let mut mismatches = Vec::new();
    for a in attempts {
        let verdict = bind_verdict(&a.outcome);
        let tower = a.tower_address.map(|ip| ip.to_string());
        if let Some(t) = a.tower_address.filter(|t| *t != a.addr.ip()) {
            mismatches.push(format!(
                "port {} advertised on {t}, reached on {}",
                a.addr.port(),
                a.addr.ip()
            ));
        }
        let (status, cause, answer) = match &verdict {
            Ok(answer) => ("pass", None, *answer),
            Err((cause, answer, _, _)) => ("fail", Some(cause.as_str()), *answer),
        };
        binds.push(json!({
            "address": a.addr.to_string(),
            "tower_address": tower,
            "status": status,
            "cause": cause,
            "answer": answer,
            "duration_seconds": a.elapsed.as_secs_f64(),
        }));
        match verdict {
            Ok(_) => accepted.push(a.addr.to_string()),
            Err((cause, _, detail, hint)) => failures.push((a.addr, cause, detail, hint)),
        }
    }
    let mut r = if attempts.is_empty() {
        HopResult::skip(HopKind::RpcBind, "no port to bind to")
    } else if failures.is_empty() {
        let detail = format!(
            "bind_ack for {iface} on {}: that port is this interface's RPC server",
            accepted.join(", ")
        );
        if mismatches.is_empty() {
            HopResult::pass(HopKind::RpcBind, detail)
        } else {
            HopResult::warn(
                HopKind::RpcBind,
                Cause::AddressMismatch,
                format!("{detail}; but {}", mismatches.join("; ")),
            )
            .with_hint(HINT_TOWER_ADDRESS)
        }
    } else {
        let (addr, cause, detail, hint) = &failures[0];
        let mut hint = hint.to_string();
        if !mismatches.is_empty() {
            hint.push_str(&format!(
                ". Also: {}; {HINT_TOWER_ADDRESS}",
                mismatches.join("; ")
            ));
        }
        let detail = format!("{addr}: {detail}");
        if accepted.is_empty() {
            HopResult::fail(HopKind::RpcBind, *cause, detail).with_hint(hint)
        } else {
            HopResult::warn(
                HopKind::RpcBind,
                *cause,
                format!("{detail} (bind_ack on {})", accepted.join(", ")),
            )
            .with_hint(hint)
        }
    };
    if !attempts.is_empty() {
        r = r
            .with_data("iface", iface.to_string())
            .with_data("binds", binds);
    }
    r
}

/// Where one server is reached at several addresses (a second NIC, a cluster node and its DTC
/// network name, an availability-group listener): the same MSDTC answers at each, so the CIDs
/// and ports match. Not a clone; nothing to reinstall.
pub const HINT_SAME_HOST: &str = "the same MSDTC (same CIDs, same dynamic ports) answers at \
both addresses: one server reached at two addresses (a second NIC, a cluster node and its DTC \
network name, an availability-group listener), not a cloned machine; do NOT reinstall MSDTC. Make \
sure the name the applications use resolves to the address this zone can reach. If these really \
are two machines (identical dynamic ports are possible on clones), compare their CIDs with \
dtc_config (registry) on each";

/// One `epm` hop's MSDTC identity, for [`mark_duplicate_cids`].
struct Holder {
    host: String,
    check: usize,
    target: String,
    /// Every CID the mapper listed for the interface (`cids`, else `cid`).
    cids: BTreeSet<String>,
    /// The dynamic TCP ports the mapper returned for it.
    ports: BTreeSet<u64>,
}

impl Holder {
    fn of(check: usize, target: &str, h: &HopResult) -> Option<Holder> {
        let host = h.data.get("address").and_then(Value::as_str).map(host_of)?;
        let mut cids: BTreeSet<String> = h
            .data
            .get("cids")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_ascii_lowercase)
                    .collect()
            })
            .unwrap_or_default();
        if let Some(cid) = h.data.get("cid").and_then(Value::as_str) {
            cids.insert(cid.to_ascii_lowercase());
        }
        if cids.is_empty() {
            return None;
        }
        let ports = h
            .data
            .get("ports")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_u64).collect())
            .unwrap_or_default();
        Some(Holder {
            host,
            check,
            target: target.to_string(),
            cids,
            ports,
        })
    }

    /// The same MSDTC: the same CID set and the same (non-empty) dynamic ports. Without ports
    /// there is nothing to tell one host from its clone by.
    fn same_msdtc(&self, other: &Holder) -> bool {
        self.cids == other.cids && !self.ports.is_empty() && self.ports == other.ports
    }

    fn label(&self) -> String {
        format!("{} ({})", self.target, self.host)
    }
}

/// Across all results of a run, `epm` hops at different addresses sharing an MSDTC CID:
/// - with the same CID set and the same dynamic ports, it is one server reached at two
///   addresses: a `warn same_host` naming both, and no reinstall advice;
/// - otherwise two machines with one CID (clones, sysprep skipped): `fail duplicate_cid`.
///
/// Matching by IP address alone called a second NIC, a cluster node and its DTC network name or
/// an AG listener a clone and advised `msdtc -uninstall` (issue 23). Pure; the runner calls it
/// after all checks.
pub fn mark_duplicate_cids(checks: &mut [CheckResult]) {
    let mut holders = Vec::new();
    for (i, c) in checks.iter().enumerate() {
        for h in c.hops.iter().filter(|h| h.hop == HopKind::Epm) {
            holders.extend(Holder::of(i, &c.target, h));
        }
    }
    let mut verdicts: Vec<(usize, HopResult)> = Vec::new();
    for me in &holders {
        let sharing: Vec<&Holder> = holders
            .iter()
            .filter(|o| o.host != me.host && !o.cids.is_disjoint(&me.cids))
            .collect();
        if sharing.is_empty() {
            continue;
        }
        let (same, clones): (Vec<&Holder>, Vec<&Holder>) =
            sharing.into_iter().partition(|o| me.same_msdtc(o));
        let shared: BTreeSet<&String> = clones
            .iter()
            .chain(same.iter())
            .flat_map(|o| o.cids.intersection(&me.cids))
            .collect();
        let cid_text = shared
            .iter()
            .map(|c| c.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let labels = |list: &[&Holder]| -> Vec<String> {
            list.iter()
                .map(|o| o.label())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect()
        };
        let verdict = if !clones.is_empty() {
            let others = labels(&clones);
            let why = if me.ports.is_empty() || clones.iter().any(|o| o.ports.is_empty()) {
                " (no dynamic ports on one side to tell one server at two addresses from a clone)"
            } else {
                " with other dynamic ports: another machine"
            };
            HopResult::fail(
                HopKind::Epm,
                Cause::DuplicateCid,
                format!(
                    "MSDTC CID {cid_text} at {} is also used by {}{why}",
                    me.host,
                    others.join(", ")
                ),
            )
            .with_hint(HINT_DUPLICATE_CID)
            .with_data("duplicate_of", json!(others))
        } else {
            let others = labels(&same);
            let ports: Vec<String> = me.ports.iter().map(u64::to_string).collect();
            HopResult::warn(
                HopKind::Epm,
                Cause::SameHost,
                format!(
                    "one MSDTC at two addresses: {} and {} report the same CID {cid_text} and \
                     the same dynamic port {}",
                    me.label(),
                    others.join(", "),
                    ports.join(", ")
                ),
            )
            .with_hint(HINT_SAME_HOST)
            .with_data("same_host_as", json!(others))
        };
        verdicts.push((me.check, verdict));
    }
    for (i, v) in verdicts {
        let check = &mut checks[i];
        for h in check.hops.iter_mut().filter(|h| h.hop == HopKind::Epm) {
            // A warn never hides a failure the hop already has.
            if v.status == Status::Warn && h.status == Status::Fail {
                continue;
            }
            h.status = v.status;
            h.cause = v.cause;
            h.detail = v.detail.clone();
            h.hint = v.hint.clone();
            for (k, val) in &v.data {
                h.data.insert(k.clone(), val.clone());
            }
        }
        check.status = CheckResult::status_of(&check.hops);
    }
}

/// The host part of `ip:port` / `[v6]:port`.
fn host_of(addr: &str) -> String {
    match addr.parse::<SocketAddr>() {
        Ok(sa) => sa.ip().to_string(),
        Err(_) => addr.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::time::Duration;

    use super::*;
    use crate::classify::ConnectOutcome;
    use crate::dcerpc::{DecodeError, SyntaxId, Uuid, IXNREMOTE};
    use crate::hops::connect::Attempt;
    use crate::hops::epm::fixtures::{entry, epm_check as check, lrpc};

    fn mapper() -> SocketAddr {
        "198.18.0.2:135".parse().unwrap()
    }

    #[test]
    fn verdicts() {
        let cid = Uuid::parse("11111111-2222-3333-4444-555555555555").unwrap();
        let tcp = Tower::tcp(&IXNREMOTE, Ipv4Addr::new(198, 18, 0, 2), 5000);
        let other = SyntaxId::parse("12345778-1234-abcd-ef00-0123456789ab/v0.0", (0, 0)).unwrap();
        let dtc = Interface::IXNREMOTE;
        // (lookup, map) -> (status, cause, hint, ports)
        type Row = (
            Vec<Entry>,
            Vec<Tower>,
            Status,
            Option<Cause>,
            Option<&'static str>,
            Vec<u16>,
        );
        let rows: Vec<Row> = vec![
            (
                vec![entry(cid, tcp.clone())],
                vec![tcp.clone()],
                Status::Pass,
                None,
                None,
                vec![5000],
            ),
            (
                vec![],
                vec![tcp.clone()],
                Status::Pass,
                None,
                None,
                vec![5000],
            ),
            (
                vec![entry(cid, lrpc(&IXNREMOTE))],
                vec![],
                Status::Fail,
                Some(Cause::EpmNotRegistered),
                Some(HINT_NETWORK_DTC_OFF),
                vec![],
            ),
            (
                vec![],
                vec![],
                Status::Fail,
                Some(Cause::EpmNotRegistered),
                Some(HINT_DTC_NOT_REGISTERED),
                vec![],
            ),
            // Another interface's entries do not count.
            (
                vec![entry(
                    Uuid::NIL,
                    Tower::tcp(&other, Ipv4Addr::UNSPECIFIED, 49153),
                )],
                vec![],
                Status::Fail,
                Some(Cause::EpmNotRegistered),
                Some(HINT_DTC_NOT_REGISTERED),
                vec![],
            ),
        ];
        for (i, (lookup, mapped, status, cause, hint, ports)) in rows.into_iter().enumerate() {
            let (r, found) = assess(&dtc, IXNREMOTE, mapper(), &lookup, &mapped);
            assert_eq!(
                (r.status, r.cause, r.hint.as_deref()),
                (status, cause, hint),
                "row {i}: {r:?}"
            );
            assert_eq!(found.map(|f| f.ports).unwrap_or_default(), ports, "row {i}");
        }
        // MSDTC on ncalrpc only: the detail (and so the verdict line) names the setting, not
        // only the hint.
        let (r, _) = assess(
            &dtc,
            IXNREMOTE,
            mapper(),
            &[entry(cid, lrpc(&IXNREMOTE))],
            &[],
        );
        assert!(
            r.detail
                .contains("(no ncacn_ip_tcp endpoint: Network DTC Access is off)"),
            "{r:?}"
        );
        let (r, _) = assess(&dtc, IXNREMOTE, mapper(), &[entry(cid, tcp.clone())], &[]);
        assert_eq!(r.data["cid"], cid.to_string());
        assert_eq!(r.data["endpoints"][0], "ncacn_ip_tcp:198.18.0.2[5000]");
        assert_eq!(r.data["advertised_addresses"][0], "198.18.0.2");
        // Any version when none is given.
        let any = Interface {
            uuid: other.uuid,
            version: None,
        };
        let (r, _) = assess(
            &any,
            other,
            mapper(),
            &[entry(
                Uuid::NIL,
                Tower::tcp(&other, Ipv4Addr::UNSPECIFIED, 49153),
            )],
            &[],
        );
        assert_eq!(r.status, Status::Pass);
        assert!(r.data.get("cid").is_none());
    }

    #[test]
    fn errors_classify() {
        let rows = [
            (EpmError::Fault { status: 5 }, Cause::EpmAccessDenied),
            (EpmError::Status { status: 5 }, Cause::EpmAccessDenied),
            (
                EpmError::Fault {
                    status: EPT_S_NOT_REGISTERED,
                },
                Cause::EpmNotRegistered,
            ),
            (EpmError::Fault { status: 0x1c010003 }, Cause::ProtocolError),
            (EpmError::BindNak { reason: 4 }, Cause::ProtocolError),
            (
                EpmError::Decode(DecodeError::invalid("x", "y")),
                Cause::ProtocolError,
            ),
            (EpmError::Closed, Cause::ProtocolError),
            (EpmError::Timeout(Duration::from_secs(1)), Cause::Timeout),
            (
                EpmError::Io(io::ErrorKind::ConnectionReset.into()),
                Cause::Reset,
            ),
        ];
        for (e, cause) in rows {
            assert_eq!(e.classify().0, cause, "{e}");
        }
        assert_eq!(
            EpmError::Fault { status: 5 }.classify().1,
            HINT_ACCESS_DENIED
        );
    }

    #[test]
    fn rpc_port_hint_on_drop() {
        let a = Attempt {
            addr: "198.18.0.2:49153".parse().unwrap(),
            source: None,
            outcome: ConnectOutcome::NoReply(Duration::from_secs(1)),
            elapsed: Duration::from_secs(1),
            reset_origin: None,
        };
        let r = rpc_port_result(&[a]);
        assert_eq!(
            (r.hop, r.status, r.cause),
            (HopKind::RpcPort, Status::Fail, Some(Cause::Timeout))
        );
        assert_eq!(r.hint.as_deref(), Some(HINT_RPC_PORT));
        assert_eq!(r.data["ports"][0], 49153);
    }

    /// An `epm` check with its MSDTC's dynamic ports.
    fn with_ports(mut c: CheckResult, ports: &[u16]) -> CheckResult {
        c.hops[0] = c.hops[0].clone().with_data("ports", ports.to_vec());
        c
    }

    /// Two towers for one port, one per NIC: the address reached is among them, so no
    /// mismatch; only when none of them is the address reached is the first one reported.
    #[test]
    fn every_advertised_address_counts_not_only_the_first() {
        let mapper: IpAddr = "198.18.0.2".parse().unwrap();
        let mut found = EpmFound {
            ip: mapper,
            ports: vec![49153],
            iface: IXNREMOTE,
            advertised: BTreeMap::new(),
        };
        found.advertised.insert(
            49153,
            ["10.9.9.9", "198.18.0.2"]
                .iter()
                .map(|a| a.parse().unwrap())
                .collect(),
        );
        assert_eq!(found.tower_address(49153), Some(mapper));
        found.advertised.insert(
            49153,
            ["10.9.9.9", "10.9.9.10"]
                .iter()
                .map(|a| a.parse().unwrap())
                .collect(),
        );
        assert_eq!(found.tower_address(49153), "10.9.9.9".parse().ok());
        assert_eq!(found.tower_address(1), None);
        // assess keeps every tower's address for the port.
        let iface = Interface::IXNREMOTE;
        let towers = [
            Tower::tcp(&IXNREMOTE, Ipv4Addr::new(10, 9, 9, 9), 49153),
            Tower::tcp(&IXNREMOTE, Ipv4Addr::new(198, 18, 0, 2), 49153),
        ];
        let (_, found) = assess(
            &iface,
            IXNREMOTE,
            SocketAddr::new(mapper, 135),
            &[],
            &towers,
        );
        let found = found.unwrap();
        assert_eq!(found.advertised[&49153].len(), 2);
        assert_eq!(found.tower_address(49153), Some(mapper));
    }

    #[test]
    fn duplicate_cids() {
        let mut checks = vec![
            with_ports(check("epm://a", Some("c1"), "198.18.0.1:135"), &[49670]),
            with_ports(check("epm://b", Some("c1"), "198.18.0.2:135"), &[49682]),
            with_ports(
                check("epm://a-alias", Some("c1"), "198.18.0.1:135"),
                &[49670],
            ),
            check("epm://c", Some("c2"), "198.18.0.3:135"),
            check("epm://d", None, "198.18.0.4:135"),
        ];
        mark_duplicate_cids(&mut checks);
        let statuses: Vec<Status> = checks.iter().map(|c| c.status).collect();
        assert_eq!(
            statuses,
            [
                Status::Fail,
                Status::Fail,
                Status::Fail,
                Status::Pass,
                Status::Pass
            ]
        );
        assert_eq!(checks[0].hops[0].cause, Some(Cause::DuplicateCid));
        assert!(
            checks[0].hops[0].detail.contains("epm://b"),
            "{}",
            checks[0].hops[0].detail
        );
        assert_eq!(checks[0].hops[0].hint.as_deref(), Some(HINT_DUPLICATE_CID));
        // The same host twice (an alias) is not a duplicate.
        let mut same = vec![
            check("epm://a", Some("c1"), "198.18.0.1:135"),
            check("epm://a2", Some("c1"), "198.18.0.1:135"),
        ];
        mark_duplicate_cids(&mut same);
        assert!(same.iter().all(|c| c.status == Status::Pass));
        // Same CID without ports to compare: still a clone (nothing tells them apart).
        let mut portless = vec![
            check("epm://a", Some("c1"), "198.18.0.1:135"),
            check("epm://b", Some("c1"), "198.18.0.2:135"),
        ];
        mark_duplicate_cids(&mut portless);
        assert_eq!(portless[0].hops[0].cause, Some(Cause::DuplicateCid));
        assert!(portless[0].hops[0].detail.contains("no dynamic ports"));
    }

    /// One server reached at two addresses (a second NIC, a cluster node and its DTC network
    /// name, an AG listener): the same CID set and the same dynamic ports are one MSDTC, a
    /// `warn same_host` naming both addresses, never `duplicate_cid` and `msdtc -uninstall`.
    #[test]
    fn one_server_at_two_addresses_is_same_host_not_a_clone() {
        let both = |c: CheckResult| {
            let mut c = with_ports(c, &[49670, 49671]);
            c.hops[0] = c.hops[0].clone().with_data("cids", vec!["c1", "c9"]);
            c
        };
        let mut checks = vec![
            both(check("epm://sql-node1", Some("c1"), "198.18.0.1:135")),
            both(check("epm://sql-dtc-name", Some("c1"), "198.18.1.7:135")),
        ];
        mark_duplicate_cids(&mut checks);
        for (c, other) in checks.iter().zip(["198.18.1.7", "198.18.0.1"]) {
            let h = &c.hops[0];
            assert_eq!(
                (h.status, h.cause),
                (Status::Warn, Some(Cause::SameHost)),
                "{h:#?}"
            );
            assert_eq!(c.status, Status::Warn);
            assert!(h.detail.contains(other), "{}", h.detail);
            assert!(h.detail.contains("49670, 49671"), "{}", h.detail);
            let hint = h.hint.as_deref().unwrap();
            assert!(!hint.contains("msdtc -uninstall`"), "{hint}");
            assert_eq!(h.data["same_host_as"].as_array().unwrap().len(), 1);
        }
        // The same CID but another CID set (a second DTC registered on one side): a clone.
        let mut differ = vec![
            both(check("epm://a", Some("c1"), "198.18.0.1:135")),
            with_ports(
                check("epm://b", Some("c1"), "198.18.0.2:135"),
                &[49670, 49671],
            ),
        ];
        mark_duplicate_cids(&mut differ);
        assert_eq!(differ[0].hops[0].cause, Some(Cause::DuplicateCid));
        // Three addresses, two of one server and one clone: the clone wins for all three.
        let mut three = vec![
            both(check("epm://n1", Some("c1"), "198.18.0.1:135")),
            both(check("epm://n1-nic2", Some("c1"), "198.18.0.2:135")),
            with_ports(check("epm://clone", Some("c1"), "198.18.0.3:135"), &[49700]),
        ];
        mark_duplicate_cids(&mut three);
        assert!(three
            .iter()
            .all(|c| c.hops[0].cause == Some(Cause::DuplicateCid)));
    }

    fn bind(port: u16, tower: Option<&str>, outcome: BindOutcome) -> BindAttempt {
        BindAttempt {
            addr: SocketAddr::new("198.18.0.2".parse().unwrap(), port),
            tower_address: tower.map(|t| t.parse().unwrap()),
            outcome,
            elapsed: Duration::from_millis(3),
        }
    }

    #[test]
    fn rpc_bind_verdicts() {
        use crate::dcerpc::pdu::BindReply;
        let ack = || {
            BindOutcome::Answered(BindReply::Accepted {
                max_xmit: 4280,
                max_recv: 4280,
                sec_addr: "49153".into(),
            })
        };
        let rejected = || {
            BindOutcome::Answered(BindReply::ContextRejected {
                result: 2,
                reason: 1,
            })
        };
        let closed = || BindOutcome::Broken(EpmError::Closed);
        let silent = || BindOutcome::Broken(EpmError::Timeout(Duration::from_secs(2)));
        let reset = || {
            BindOutcome::Broken(EpmError::Io(io::Error::from(
                io::ErrorKind::ConnectionReset,
            )))
        };
        let garbage = || {
            BindOutcome::Broken(EpmError::Decode(DecodeError::invalid(
                "PDU header",
                "not DCE/RPC",
            )))
        };
        let refused = || {
            BindOutcome::NotConnected(Attempt {
                addr: "198.18.0.2:49153".parse().unwrap(),
                outcome: ConnectOutcome::Error(io::ErrorKind::ConnectionRefused, Some(111)),
                elapsed: Duration::ZERO,
                source: None,
                reset_origin: None,
            })
        };
        // (attempts, status, cause, hint fragment, detail fragment)
        type Row = (
            Vec<BindAttempt>,
            Status,
            Option<Cause>,
            &'static str,
            &'static str,
        );
        let rows: Vec<Row> = vec![
            (
                vec![bind(49153, Some("198.18.0.2"), ack())],
                Status::Pass,
                None,
                "",
                "bind_ack",
            ),
            (
                vec![bind(49153, None, ack())],
                Status::Pass,
                None,
                "",
                "bind_ack",
            ),
            (
                vec![bind(49153, Some("10.9.9.9"), ack())],
                Status::Warn,
                Some(Cause::AddressMismatch),
                "NIC",
                "advertised on 10.9.9.9, reached on 198.18.0.2",
            ),
            (
                vec![bind(49153, None, rejected())],
                Status::Fail,
                Some(Cause::ProtocolError),
                "does not offer this interface",
                "abstract syntax not supported",
            ),
            (
                vec![bind(
                    49153,
                    None,
                    BindOutcome::Answered(BindReply::Nak { reason: 4 }),
                )],
                Status::Fail,
                Some(Cause::ProtocolError),
                "does not offer this interface",
                "bind_nak (protocol version not supported)",
            ),
            (
                vec![bind(
                    49153,
                    None,
                    BindOutcome::Answered(BindReply::Nak { reason: 1 }),
                )],
                Status::Fail,
                Some(Cause::ProtocolError),
                "lack of capacity",
                "bind_nak (temporary congestion)",
            ),
            (
                vec![bind(
                    49153,
                    None,
                    BindOutcome::Answered(BindReply::Nak { reason: 2 }),
                )],
                Status::Fail,
                Some(Cause::ProtocolError),
                "lack of capacity",
                "bind_nak (local limit exceeded)",
            ),
            (
                vec![bind(49153, None, closed())],
                Status::Fail,
                Some(Cause::Reset),
                "RPC-aware firewall",
                "closed",
            ),
            (
                vec![bind(49153, None, reset())],
                Status::Fail,
                Some(Cause::Reset),
                "RPC-aware firewall",
                "reset",
            ),
            (
                vec![bind(49153, None, silent())],
                Status::Fail,
                Some(Cause::Timeout),
                "RPC-aware firewall",
                "no answer within 2s",
            ),
            (
                vec![bind(49153, None, garbage())],
                Status::Fail,
                Some(Cause::ProtocolError),
                "does not speak DCE/RPC",
                "not DCE/RPC",
            ),
            (
                vec![bind(49153, None, refused())],
                Status::Fail,
                Some(Cause::Refused),
                "RPC dynamic range",
                "TCP 198.18.0.2:49153",
            ),
            // One port answers, another is filtered: a partial failure.
            (
                vec![bind(49153, None, ack()), bind(49154, None, silent())],
                Status::Warn,
                Some(Cause::Timeout),
                "RPC-aware firewall",
                "(bind_ack on 198.18.0.2:49153)",
            ),
            // A failure with a mismatch mentions both.
            (
                vec![bind(49153, Some("10.9.9.9"), silent())],
                Status::Fail,
                Some(Cause::Timeout),
                "NIC",
                "no answer",
            ),
            (vec![], Status::Skip, None, "", "no port"),
        ];
        for (i, (attempts, status, cause, hint, detail)) in rows.into_iter().enumerate() {
            let r = rpc_bind_result(&IXNREMOTE, &attempts);
            assert_eq!((r.status, r.cause), (status, cause), "row {i}: {r:#?}");
            assert!(
                r.hint.as_deref().unwrap_or("").contains(hint),
                "row {i}: {r:#?}"
            );
            assert!(r.detail.contains(detail), "row {i}: {r:#?}");
            if !attempts.is_empty() {
                assert_eq!(r.data["binds"].as_array().unwrap().len(), attempts.len());
                assert_eq!(r.data["binds"][0]["address"], attempts[0].addr.to_string());
                assert_eq!(
                    r.data["binds"][0]["tower_address"],
                    json!(attempts[0].tower_address.map(|t| t.to_string()))
                );
            }
        }
    }
}
