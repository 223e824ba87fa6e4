//! Hops `epm` and `rpc_port`: ask the RPC endpoint mapper (TCP 135) where an interface (by default
//! MSDTC's IXnRemote) listens, then open TCP to each port it returned. The classic zone failure is
//! "135 passes the firewall, the dynamic RPC port does not": `epm` pass, `rpc_port` fail/timeout.
//!
//! I/O lives here; the codec is [`crate::dcerpc`] and the verdicts are pure functions
//! ([`assess`], [`rpc_port_result`], [`mark_duplicate_cids`]) with table tests.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde_json::{json, Value};
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::chain::HopOutput;
use crate::classify::{classify_connect, ConnectOutcome};
use crate::dcerpc::epm::{
    decode_lookup_response, decode_map_response, encode_map_request, Entry, LookupRequest, Tower,
    EPT_S_NOT_REGISTERED, OPNUM_LOOKUP, OPNUM_MAP,
};
use crate::dcerpc::pdu::{
    self, bind_nak_reason, decode_bind_reply, encode_bind, encode_request, is_access_denied,
    status_text, BindReply, CallError, ResponseAssembler, Step, HEADER_LEN,
};
use crate::dcerpc::{DecodeError, SyntaxId, Uuid, EPM_INTERFACE, IXNREMOTE};
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

/// Endpoint-mapper answers we read before giving up (500 entries each).
const MAX_LOOKUP_CALLS: usize = 64;
const MAX_ENTRIES: usize = 20_000;

/// What could go wrong talking to the endpoint mapper.
#[derive(Debug, Error)]
pub enum EpmError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("no answer within {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    #[error("the server closed the connection")]
    Closed,
    #[error("bind rejected (bind_nak: {})", bind_nak_reason(*reason))]
    BindNak { reason: u16 },
    #[error("bind accepted but the endpoint mapper interface was rejected (result {result}, reason {reason})")]
    ContextRejected { result: u16, reason: u16 },
    #[error("fault {}", status_text(*status))]
    Fault { status: u32 },
    #[error("status {}", status_text(*status))]
    Status { status: u32 },
    #[error("malformed answer: {0}")]
    Decode(#[from] DecodeError),
}

impl From<CallError> for EpmError {
    fn from(e: CallError) -> Self {
        match e {
            CallError::Fault { status } => EpmError::Fault { status },
            CallError::Decode(d) => EpmError::Decode(d),
        }
    }
}

impl EpmError {
    fn is_access_denied(&self) -> bool {
        matches!(self, EpmError::Fault { status } | EpmError::Status { status } if is_access_denied(*status))
    }

    fn is_not_registered(&self) -> bool {
        matches!(self, EpmError::Fault { status } | EpmError::Status { status } if *status == EPT_S_NOT_REGISTERED)
    }

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

/// A DCE/RPC connection to an endpoint mapper, bound to the EPM interface.
pub struct EpmClient {
    stream: TcpStream,
    call_id: u32,
    limit: Duration,
}

async fn bounded<T, F: std::future::Future<Output = Result<T, EpmError>>>(
    limit: Duration,
    f: F,
) -> Result<T, EpmError> {
    tokio::time::timeout(limit, f)
        .await
        .unwrap_or(Err(EpmError::Timeout(limit)))
}

impl EpmClient {
    /// Binds to the endpoint mapper on an already connected stream; `limit` bounds each exchange.
    pub async fn bind(stream: TcpStream, limit: Duration) -> Result<EpmClient, EpmError> {
        let mut c = EpmClient {
            stream,
            call_id: 1,
            limit,
        };
        let bind = encode_bind(c.call_id, &EPM_INTERFACE);
        let reply = bounded(limit, async {
            c.stream.write_all(&bind).await?;
            let pdu = read_pdu(&mut c.stream).await?;
            Ok(decode_bind_reply(&pdu)?)
        })
        .await?;
        match reply {
            BindReply::Accepted { .. } => Ok(c),
            BindReply::Nak { reason } => Err(EpmError::BindNak { reason }),
            BindReply::ContextRejected { result, reason } => {
                Err(EpmError::ContextRejected { result, reason })
            }
        }
    }

    /// One call: request out, response fragments reassembled.
    pub async fn call(&mut self, opnum: u16, stub: &[u8]) -> Result<Vec<u8>, EpmError> {
        self.call_id = self.call_id.wrapping_add(1);
        let call_id = self.call_id;
        let req = encode_request(call_id, opnum, None, stub);
        let limit = self.limit;
        let stream = &mut self.stream;
        bounded(limit, async move {
            stream.write_all(&req).await?;
            let mut asm = ResponseAssembler::new(call_id);
            // The assembler bounds the number of fragments; this loop ends with it.
            loop {
                let pdu = read_pdu(stream).await?;
                if let Step::Done(stub) = asm.push(&pdu)? {
                    return Ok(stub);
                }
            }
        })
        .await
    }

    /// `ept_lookup` until the mapper says there is no more. An empty list means "not registered".
    pub async fn lookup(&mut self, mut req: LookupRequest) -> Result<Vec<Entry>, EpmError> {
        let mut entries = Vec::new();
        for _ in 0..MAX_LOOKUP_CALLS {
            let stub = self.call(OPNUM_LOOKUP, &req.encode()).await?;
            let resp = decode_lookup_response(&stub)?;
            let got = resp.entries.len();
            entries.extend(resp.entries);
            match resp.status {
                // Samba returns the last batch together with "not registered" (= no more entries).
                EPT_S_NOT_REGISTERED => break,
                0 => {}
                status => return Err(EpmError::Status { status }),
            }
            if resp.handle == [0; 20] || got == 0 || entries.len() >= MAX_ENTRIES {
                break;
            }
            req.handle = resp.handle;
        }
        Ok(entries)
    }

    /// `ept_map` for an ncacn_ip_tcp tower of `iface`, under `object`.
    pub async fn map(&mut self, object: &Uuid, iface: &SyntaxId) -> Result<Vec<Tower>, EpmError> {
        let tower = Tower::tcp(iface, Ipv4Addr::UNSPECIFIED, 0);
        let stub = self
            .call(OPNUM_MAP, &encode_map_request(object, &tower, &[0; 20], 4))
            .await?;
        let resp = decode_map_response(&stub)?;
        match resp.status {
            0 | EPT_S_NOT_REGISTERED => {
                Ok(resp.towers.into_iter().filter_map(Result::ok).collect())
            }
            status => Err(EpmError::Status { status }),
        }
    }
}

/// Reads one PDU (header, then the rest of its fragment length).
async fn read_pdu(stream: &mut TcpStream) -> Result<Vec<u8>, EpmError> {
    let mut header = [0u8; HEADER_LEN];
    match stream.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(EpmError::Closed),
        Err(e) => return Err(e.into()),
    }
    let h = pdu::parse_header(&header)?;
    let mut buf = vec![0u8; h.frag_len as usize];
    buf[..HEADER_LEN].copy_from_slice(&header);
    match stream.read_exact(&mut buf[HEADER_LEN..]).await {
        Ok(_) => Ok(buf),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(EpmError::Closed),
        Err(e) => Err(e.into()),
    }
}

/// The interface a check asks about: a UUID and optionally a version (any version if none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interface {
    pub uuid: Uuid,
    pub version: Option<(u16, u16)>,
}

impl Interface {
    pub const IXNREMOTE: Interface = Interface {
        uuid: IXNREMOTE.uuid,
        version: Some((IXNREMOTE.major, IXNREMOTE.minor)),
    };

    pub fn is_msdtc(&self) -> bool {
        self.uuid == IXNREMOTE.uuid
    }

    fn matches(&self, s: &SyntaxId) -> bool {
        s.uuid == self.uuid && self.version.is_none_or(|(major, _)| major == s.major)
    }

    fn text(&self) -> String {
        match self.version {
            Some((a, b)) => format!("{} v{a}.{b}", self.uuid),
            None => self.uuid.to_string(),
        }
    }
}

/// One endpoint-mapper entry, flattened for reports (`--list-endpoints`).
pub fn entry_json(e: &Entry) -> Value {
    let (iface, binding, protseq) = match &e.tower {
        Some(Ok(t)) => (t.interface(), t.binding(), t.protseq()),
        Some(Err(err)) => (None, format!("undecodable tower: {err}"), "unknown"),
        None => (None, String::new(), "unknown"),
    };
    json!({
        "uuid": iface.map(|s| s.uuid.to_string()),
        "version": iface.map(|s| format!("{}.{}", s.major, s.minor)),
        "annotation": e.annotation,
        "binding": binding,
        "protseq": protseq,
        "object": e.object.to_string(),
    })
}

/// Text listing of the `entries` an `epm` hop collected (`--list-endpoints`), grouped like
/// PortQry -e 135 / rpcdump: one `UUID: ... vX.Y  annotation` line, then its bindings. Writes
/// nothing for a check without entries. For the human / plain exporters, after the hop table.
pub fn write_endpoint_listing(
    check: &CheckResult,
    out: &mut dyn std::io::Write,
) -> std::io::Result<()> {
    for hop in check.hops.iter().filter(|h| h.hop == HopKind::Epm) {
        let Some(entries) = hop.data.get("entries").and_then(Value::as_array) else {
            continue;
        };
        let mapper = hop
            .data
            .get("address")
            .and_then(Value::as_str)
            .unwrap_or("?");
        writeln!(
            out,
            "\nEndpoint mapper {mapper} ({}): {} entries",
            check.name,
            entries.len()
        )?;
        // Group in first-seen order.
        let mut groups: Vec<(String, Vec<String>)> = Vec::new();
        for e in entries {
            let text = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            let mut key = format!("UUID: {} v{}", text("uuid"), text("version"));
            if !text("annotation").is_empty() {
                key.push_str("  ");
                key.push_str(&text("annotation"));
            }
            let object = text("object");
            let binding = if object.is_empty() || object == Uuid::NIL.to_string() {
                text("binding")
            } else {
                format!("{}  (object {object})", text("binding"))
            };
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some((_, b)) => b.push(binding),
                None => groups.push((key, vec![binding])),
            }
        }
        for (key, bindings) in groups {
            writeln!(out, "{key}")?;
            for b in bindings {
                writeln!(out, "    {b}")?;
            }
        }
    }
    Ok(())
}

/// What `epm` hands to `rpc_port`.
#[derive(Debug, Clone, PartialEq)]
pub struct EpmFound {
    /// The address the mapper answered on: the RPC ports are tried there.
    pub ip: IpAddr,
    pub ports: Vec<u16>,
}

/// Pure verdict of the `epm` hop from what the mapper said.
/// `lookup`: entries of `ept_lookup` by interface (may be partial); `mapped`: towers from `ept_map`.
pub fn assess(
    iface: &Interface,
    mapper: SocketAddr,
    lookup: &[Entry],
    mapped: &[Tower],
) -> (HopResult, Option<EpmFound>) {
    let matching: Vec<&Tower> = lookup
        .iter()
        .filter_map(|e| e.tower.as_ref().and_then(|t| t.as_ref().ok()))
        .chain(mapped.iter())
        .filter(|t| t.interface().is_some_and(|s| iface.matches(&s)))
        .collect();
    let cids: BTreeSet<String> = lookup
        .iter()
        .filter(|e| !e.object.is_nil())
        .filter(|e| {
            e.tower
                .as_ref()
                .and_then(|t| t.as_ref().ok())
                .and_then(Tower::interface)
                .is_some_and(|s| iface.matches(&s))
        })
        .map(|e| e.object.to_string())
        .collect();
    let mut ports = BTreeSet::new();
    let mut advertised = BTreeSet::new();
    let mut endpoints = BTreeSet::new();
    for t in &matching {
        endpoints.insert(t.binding());
        if let Some((ip, port)) = t.tcp_endpoint() {
            if port != 0 {
                ports.insert(port);
            }
            if let Some(ip) = ip.filter(|ip| !ip.is_unspecified()) {
                advertised.insert(ip.to_string());
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
        let hint = if iface.is_msdtc() && kinds == ["ncalrpc"] {
            HINT_NETWORK_DTC_OFF
        } else {
            HINT_LOCAL_ONLY
        };
        HopResult::fail(
            HopKind::Epm,
            Cause::EpmNotRegistered,
            format!(
                "{name} is registered only for {} (no ncacn_ip_tcp endpoint)",
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
    });
    (result, found)
}

fn conversation_failure(e: &EpmError, mapper: SocketAddr, step: &str) -> HopResult {
    let (cause, hint) = e.classify();
    HopResult::fail(HopKind::Epm, cause, format!("{step}: {e}"))
        .with_hint(hint)
        .with_data("address", mapper.to_string())
}

/// Options of the `epm` hop.
#[derive(Debug, Clone, Copy)]
pub struct EpmOptions {
    pub port: u16,
    pub iface: Interface,
    pub list_endpoints: bool,
    /// Bounds each connect and each request/answer exchange.
    pub limit: Duration,
}

/// Hop `epm`: connect to the mapper (first address that answers), bind, look up and map the
/// interface, optionally list every entry.
pub async fn epm(addrs: &[IpAddr], opts: EpmOptions) -> HopOutput<EpmFound> {
    // Connect: first address that accepts; failures classified like the tcp hop.
    let mut last_failure = None;
    let mut conn = None;
    for ip in addrs {
        let addr = SocketAddr::new(*ip, opts.port);
        let (attempt, stream) = crate::hops::tcp::connect(addr, opts.limit).await;
        match stream {
            Some(s) => {
                conn = Some((addr, s));
                break;
            }
            None => last_failure = Some(attempt),
        }
    }
    let Some((mapper, stream)) = conn else {
        let result = match last_failure.and_then(|a| classify_connect(a.outcome).map(|c| (a, c))) {
            Some((a, c)) => HopResult::fail(
                HopKind::Epm,
                c.cause,
                format!("TCP {}: {}", a.addr, c.detail),
            )
            .with_hint(c.hint)
            .with_data("address", a.addr.to_string()),
            None => HopResult::fail(HopKind::Epm, Cause::Internal, "no address to connect to"),
        };
        return HopOutput::stop(result);
    };
    let mut client = match EpmClient::bind(stream, opts.limit).await {
        Ok(c) => c,
        Err(e) => {
            return HopOutput::stop(conversation_failure(
                &e,
                mapper,
                "bind to the endpoint mapper",
            ))
        }
    };

    let lookup_req = match opts.iface.version {
        Some((major, minor)) => LookupRequest::by_interface(
            SyntaxId {
                uuid: opts.iface.uuid,
                major,
                minor,
            },
            [0; 20],
        ),
        None => LookupRequest::by_interface(
            SyntaxId {
                uuid: opts.iface.uuid,
                major: 0,
                minor: 0,
            },
            [0; 20],
        ),
    };
    let lookup = client.lookup(lookup_req).await;
    let entries: &[Entry] = lookup.as_ref().map(Vec::as_slice).unwrap_or(&[]);
    // ept_map under the CID (MSDTC registers IXnRemote with its CID as object), at the version seen.
    let object = entries
        .iter()
        .filter(|e| {
            e.tower
                .as_ref()
                .and_then(|t| t.as_ref().ok())
                .and_then(Tower::interface)
                .is_some_and(|s| opts.iface.matches(&s))
        })
        .map(|e| e.object)
        .find(|o| !o.is_nil())
        .unwrap_or(Uuid::NIL);
    let version = opts.iface.version.unwrap_or_else(|| {
        entries
            .iter()
            .filter_map(|e| {
                e.tower
                    .as_ref()
                    .and_then(|t| t.as_ref().ok())
                    .and_then(Tower::interface)
            })
            .find(|s| s.uuid == opts.iface.uuid)
            .map(|s| (s.major, s.minor))
            .unwrap_or((1, 0))
    });
    let map_iface = SyntaxId {
        uuid: opts.iface.uuid,
        major: version.0,
        minor: version.1,
    };
    let map = client.map(&object, &map_iface).await;

    let towers: &[Tower] = map.as_ref().map(Vec::as_slice).unwrap_or(&[]);
    let (mut result, found) = assess(&opts.iface, mapper, entries, towers);
    if found.is_none() {
        // No TCP endpoint: a conversation that broke (rather than the mapper's "not registered")
        // is what to report.
        let broken = match (&lookup, &map) {
            (Err(e), _) if !e.is_not_registered() => Some((e, "ept_lookup")),
            (_, Err(e)) if !e.is_not_registered() => Some((e, "ept_map")),
            _ => None,
        };
        if let Some((e, step)) = broken {
            result = conversation_failure(e, mapper, step);
        }
    }
    for (key, r) in [
        ("lookup_error", lookup.as_ref().err()),
        ("map_error", map.as_ref().err()),
    ] {
        if let Some(e) = r {
            result = result.with_data(key, e.to_string());
        }
    }
    if opts.list_endpoints {
        result = list_into(&mut client, result).await;
    }
    match found {
        Some(f) => HopOutput::ok(result, f),
        None => HopOutput::stop(result),
    }
}

async fn list_into(client: &mut EpmClient, result: HopResult) -> HopResult {
    match client.lookup(LookupRequest::all([0; 20])).await {
        Ok(entries) => {
            let list: Vec<Value> = entries.iter().map(entry_json).collect();
            result.with_data("entries", list)
        }
        Err(e) => result.with_data("entries_error", e.to_string()),
    }
}

/// Pure: the `rpc_port` hop from connect attempts to the mapped ports.
pub fn rpc_port_result(attempts: &[crate::hops::tcp::Attempt]) -> HopResult {
    let mut r = crate::hops::tcp::hop_result(HopKind::RpcPort, attempts);
    if r.status != Status::Pass
        && matches!(
            r.cause,
            Some(Cause::Timeout | Cause::Prohibited | Cause::Refused | Cause::Reset)
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

/// Hop `rpc_port`: TCP to each port the mapper returned, on the mapper's address.
pub async fn rpc_port(found: &EpmFound, limit: Duration) -> HopOutput<()> {
    let targets: Vec<SocketAddr> = found
        .ports
        .iter()
        .map(|p| SocketAddr::new(found.ip, *p))
        .collect();
    let attempts = crate::hops::tcp::probe_all(&targets, limit).await;
    let result = rpc_port_result(&attempts);
    let ok = attempts
        .iter()
        .any(|a| a.outcome == ConnectOutcome::Connected);
    if ok {
        HopOutput::ok(result, ())
    } else {
        HopOutput::stop(result)
    }
}

/// Across all results of a run: when two different hosts report the same MSDTC CID, their `epm`
/// hops fail with `duplicate_cid` (cloned machines). Pure; the runner calls it after all checks.
pub fn mark_duplicate_cids(checks: &mut [CheckResult]) {
    // cid -> (host address, check index, target)
    let mut seen: BTreeMap<String, Vec<(String, usize, String)>> = BTreeMap::new();
    for (i, c) in checks.iter().enumerate() {
        for h in c.hops.iter().filter(|h| h.hop == HopKind::Epm) {
            let cid = h.data.get("cid").and_then(Value::as_str);
            let host = h.data.get("address").and_then(Value::as_str).map(host_of);
            if let (Some(cid), Some(host)) = (cid, host) {
                seen.entry(cid.to_string())
                    .or_default()
                    .push((host, i, c.target.clone()));
            }
        }
    }
    for (cid, holders) in seen {
        let hosts: BTreeSet<&str> = holders.iter().map(|(h, _, _)| h.as_str()).collect();
        if hosts.len() < 2 {
            continue;
        }
        for (host, i, _) in &holders {
            let others: BTreeSet<String> = holders
                .iter()
                .filter(|(h, _, _)| h != host)
                .map(|(h, _, t)| format!("{t} ({h})"))
                .collect();
            let check = &mut checks[*i];
            for h in check.hops.iter_mut().filter(|h| h.hop == HopKind::Epm) {
                h.status = Status::Fail;
                h.cause = Some(Cause::DuplicateCid);
                h.detail = format!(
                    "MSDTC CID {cid} is also used by {}",
                    others.iter().cloned().collect::<Vec<_>>().join(", ")
                );
                h.hint = Some(HINT_DUPLICATE_CID.to_string());
                h.data.insert(
                    "duplicate_of".into(),
                    json!(others.iter().cloned().collect::<Vec<_>>()),
                );
            }
            check.status = CheckResult::status_of(&check.hops);
        }
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
    use super::*;
    use crate::dcerpc::epm::{Floor, PROTO_LRPC};
    use crate::hops::tcp::Attempt;

    fn mapper() -> SocketAddr {
        "198.18.0.2:135".parse().unwrap()
    }

    fn lrpc(iface: &SyntaxId) -> Tower {
        let mut t = Tower::tcp(iface, Ipv4Addr::UNSPECIFIED, 0);
        t.floors.truncate(3);
        t.floors.push(Floor {
            lhs: vec![PROTO_LRPC],
            rhs: b"OLE1\0".to_vec(),
        });
        t
    }

    fn entry(object: Uuid, tower: Tower) -> Entry {
        Entry {
            object,
            tower: Some(Ok(tower)),
            annotation: String::new(),
        }
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
            let (r, found) = assess(&dtc, mapper(), &lookup, &mapped);
            assert_eq!(
                (r.status, r.cause, r.hint.as_deref()),
                (status, cause, hint),
                "row {i}: {r:?}"
            );
            assert_eq!(found.map(|f| f.ports).unwrap_or_default(), ports, "row {i}");
        }
        let (r, _) = assess(&dtc, mapper(), &[entry(cid, tcp.clone())], &[]);
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
            outcome: ConnectOutcome::NoReply(Duration::from_secs(1)),
            elapsed: Duration::from_secs(1),
        };
        let r = rpc_port_result(&[a]);
        assert_eq!(
            (r.hop, r.status, r.cause),
            (HopKind::RpcPort, Status::Fail, Some(Cause::Timeout))
        );
        assert_eq!(r.hint.as_deref(), Some(HINT_RPC_PORT));
        assert_eq!(r.data["ports"][0], 49153);
    }

    #[test]
    fn epm_urls() {
        use crate::target::Target;
        let epm = |u: &str| match Target::from_url(u) {
            Ok(Target::Epm(t)) => Ok(t),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e.to_string()),
        };
        let t = epm("epm://sql01").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.iface, t.list_endpoints),
            ("sql01", 135, Interface::IXNREMOTE, false)
        );
        assert_eq!(t.display(), "epm://sql01:135");
        let t = epm("epm://10.0.0.5:1135?iface=12345778-1234-ABCD-ef00-0123456789ab/v0.0&list_endpoints=true").unwrap();
        assert_eq!(t.port, 1135);
        assert_eq!(t.iface.version, Some((0, 0)));
        assert!(t.list_endpoints);
        assert_eq!(
            t.display(),
            "epm://10.0.0.5:1135?iface=12345778-1234-abcd-ef00-0123456789ab/v0.0"
        );
        let t = epm("epm://[2001:db8::5]?iface=338cd001-2244-31f1-aaaa-900038001003").unwrap();
        assert_eq!(t.iface.version, None);
        assert_eq!(
            t.display(),
            "epm://[2001:db8::5]:135?iface=338cd001-2244-31f1-aaaa-900038001003"
        );
        assert_eq!(Target::from_url(&t.display()).unwrap(), Target::Epm(t));
        for bad in [
            "epm://sql01?iface=nope",
            "epm://sql01?ifac=x",
            "epm://sql01/path",
            "epm://sql01?iface=906b0ce0-c70b-1067-b317-00dd010662da/vx",
        ] {
            assert!(epm(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn epm_config() {
        let text = "[[check]]\nname = \"dtc\"\nkind = \"epm\"\nhost = \"sql01\"\niface = \"12345778-1234-abcd-ef00-0123456789ab/v0.0\"\nlist_endpoints = true\n";
        let cfg = crate::config::parse(text, std::path::Path::new("t.toml")).unwrap();
        match &cfg.checks[0].target {
            crate::target::Target::Epm(t) => {
                assert_eq!(
                    (t.port, t.list_endpoints, t.iface.version),
                    (135, true, Some((0, 0)))
                );
            }
            other => panic!("{other:?}"),
        }
        let bad = "[[check]]\nname = \"dtc\"\nkind = \"epm\"\nhost = \"sql01\"\niface = \"zzz\"\n";
        let e = crate::config::parse(bad, std::path::Path::new("t.toml")).unwrap_err();
        assert_eq!((e.line, e.column), (5, 9), "{e}");
        let bad = "[[check]]\nname = \"dtc\"\nkind = \"epm\"\nhost = \"sql01\"\ndatabase = \"x\"\n";
        let e = crate::config::parse(bad, std::path::Path::new("t.toml")).unwrap_err();
        assert!(e.message.contains("database"), "{e}");
    }

    fn check(target: &str, cid: Option<&str>, address: &str) -> CheckResult {
        let mut hop = HopResult::pass(HopKind::Epm, "ok").with_data("address", address);
        if let Some(c) = cid {
            hop = hop.with_data("cid", c);
        }
        let hops = vec![hop, HopResult::pass(HopKind::RpcPort, "ok")];
        CheckResult {
            name: target.into(),
            kind: "epm".into(),
            target: target.into(),
            from: None,
            to: None,
            direction: Default::default(),
            status: Status::Pass,
            hops,
        }
    }

    #[test]
    fn endpoint_listing_text() {
        let cid = Uuid::parse("11111111-2222-3333-4444-555555555555").unwrap();
        let entries = [
            Entry {
                object: Uuid::NIL,
                tower: Some(Ok(Tower::tcp(&IXNREMOTE, Ipv4Addr::new(10, 0, 0, 1), 5000))),
                annotation: "MSDTC".into(),
            },
            Entry {
                object: cid,
                tower: Some(Ok(lrpc(&IXNREMOTE))),
                annotation: "MSDTC".into(),
            },
        ];
        let list: Vec<Value> = entries.iter().map(entry_json).collect();
        let mut c = check("epm://sql01", None, "10.0.0.1:135");
        c.hops[0] = HopResult::pass(HopKind::Epm, "ok")
            .with_data("address", "10.0.0.1:135")
            .with_data("entries", list);
        let mut out = Vec::new();
        write_endpoint_listing(&c, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "\nEndpoint mapper 10.0.0.1:135 (epm://sql01): 2 entries\n\
             UUID: 906b0ce0-c70b-1067-b317-00dd010662da v1.0  MSDTC\n    ncacn_ip_tcp:10.0.0.1[5000]\n    \
             ncalrpc:[OLE1]  (object 11111111-2222-3333-4444-555555555555)\n"
        );
        let mut out = Vec::new();
        write_endpoint_listing(&check("epm://x", None, "10.0.0.2:135"), &mut out).unwrap();
        assert!(out.is_empty());
    }

    #[test]
    fn duplicate_cids() {
        let mut checks = vec![
            check("epm://a", Some("c1"), "198.18.0.1:135"),
            check("epm://b", Some("c1"), "198.18.0.2:135"),
            check("epm://a-alias", Some("c1"), "198.18.0.1:135"),
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
    }
}

/// An `epm` check: `epm://host[:135]?iface=UUID[/vMAJ.MIN]`, or config kind `epm` with
/// `host`, `port`, `iface`, `list_endpoints`.
#[derive(Debug, Clone, PartialEq)]
pub struct EpmTarget {
    pub host: String,
    pub port: u16,
    pub iface: Interface,
    /// Also dump every endpoint mapper entry into the hop's data (`entries`).
    pub list_endpoints: bool,
    /// Check reverse DNS agreement in the resolve hop.
    pub reverse_dns: bool,
}

pub const EPM_PORT: u16 = 135;

/// Parses an `iface` value: `UUID` (any version) or `UUID/vMAJ.MIN`.
pub fn parse_interface(text: &str) -> Result<Interface, String> {
    let bad = || format!("invalid iface `{text}`: expected UUID or UUID/vMAJ.MIN");
    if text.contains('/') {
        let s = SyntaxId::parse(text, (0, 0)).ok_or_else(bad)?;
        Ok(Interface {
            uuid: s.uuid,
            version: Some((s.major, s.minor)),
        })
    } else {
        Ok(Interface {
            uuid: Uuid::parse(text).ok_or_else(bad)?,
            version: None,
        })
    }
}

fn parse_bool(text: &str) -> Option<bool> {
    match text.to_ascii_lowercase().as_str() {
        "" | "1" | "true" | "yes" => Some(true),
        "0" | "false" | "no" => Some(false),
        _ => None,
    }
}

impl EpmTarget {
    pub fn new(host: String) -> EpmTarget {
        EpmTarget {
            host,
            port: EPM_PORT,
            iface: Interface::IXNREMOTE,
            list_endpoints: false,
            reverse_dns: false,
        }
    }

    /// From a parsed `epm://` URL whose host is `host`. The error is a message for a usage error.
    pub fn from_url(url: &url::Url, host: String) -> Result<EpmTarget, String> {
        let mut t = EpmTarget::new(host);
        t.port = url.port().unwrap_or(EPM_PORT);
        if !matches!(url.path(), "" | "/") {
            return Err(format!(
                "unexpected path `{}` (epm://HOST[:PORT]?iface=UUID[/vMAJ.MIN])",
                url.path()
            ));
        }
        for (key, value) in url.query_pairs() {
            match key.as_ref() {
                "iface" => t.iface = parse_interface(&value)?,
                "list_endpoints" => {
                    t.list_endpoints = parse_bool(&value)
                        .ok_or_else(|| format!("list_endpoints={value}: expected true or false"))?
                }
                other => {
                    return Err(format!(
                        "unknown option `{other}` (known: iface, list_endpoints)"
                    ))
                }
            }
        }
        Ok(t)
    }

    /// From a config `[[check]]` with `kind = "epm"`.
    pub fn from_config(
        raw: &crate::config::RawCheck,
        host: String,
    ) -> Result<EpmTarget, crate::target::TargetError> {
        use crate::target::TargetError;
        let mut t = EpmTarget::new(host);
        if let Some(p) = &raw.port {
            t.port = *p.get_ref();
        }
        if let Some(i) = &raw.iface {
            t.iface = parse_interface(i.get_ref()).map_err(|message| TargetError::At {
                offset: i.span().start,
                message,
            })?;
        }
        t.list_endpoints = raw.list_endpoints.unwrap_or(false);
        t.reverse_dns = raw.reverse_dns.unwrap_or(false);
        Ok(t)
    }

    /// `epm://host:port`, plus `?iface=` when not the default.
    pub fn display(&self) -> String {
        let mut s = format!(
            "epm://{}:{}",
            crate::target::bracket_v6(&self.host),
            self.port
        );
        if self.iface != Interface::IXNREMOTE {
            s.push_str("?iface=");
            s.push_str(&self.iface.uuid.to_string());
            if let Some((a, b)) = self.iface.version {
                s.push_str(&format!("/v{a}.{b}"));
            }
        }
        s
    }
}

/// Runs an `epm` check: `resolve`, `epm`, `rpc_port`.
pub async fn run(t: &EpmTarget, ctx: &crate::chain::RunContext) -> Vec<HopResult> {
    use crate::chain::Chain;
    let limit = ctx.hop_timeout;
    let mut chain = Chain::new(
        vec![HopKind::Resolve, HopKind::Epm, HopKind::RpcPort],
        limit,
    );
    let Some(addrs) = chain
        .step(
            HopKind::Resolve,
            crate::hops::resolve::resolve(&ctx.resolver, &t.host, t.reverse_dns, limit),
        )
        .await
    else {
        return chain.finish();
    };
    let opts = EpmOptions {
        port: t.port,
        iface: t.iface,
        list_endpoints: t.list_endpoints,
        limit,
    };
    // Connect, bind, lookup, map (and the listing): several round trips, each bounded by `limit`.
    let calls = if t.list_endpoints { 8 } else { 5 };
    let budget = limit * (calls + addrs.len().min(4) as u32);
    if let Some(found) = chain
        .step_with_timeout(HopKind::Epm, budget, epm(&addrs, opts))
        .await
    {
        chain.step(HopKind::RpcPort, rpc_port(&found, limit)).await;
    }
    chain.finish()
}
