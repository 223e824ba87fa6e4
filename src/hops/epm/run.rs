//! The `epm` check as a chain of hops: `resolve`, `epm` (connect to the mapper, bind, look up and
//! map the interface), `rpc_port` (TCP to each port the mapper returned), `rpc_bind` (a DCE/RPC
//! bind to the interface on each port that connected: is that port really its server, and does
//! the RPC inside the connection get through). This file sequences the client calls and the time
//! budget; what the answers mean is decided in `assess`.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde_json::{json, Value};

use super::assess::{
    assess, conversation_failure, decoded_tower, registers, rpc_bind_result, rpc_port_result,
    BindAttempt, EpmFound,
};
use super::client::{probe_bind, EpmClient};
use super::target::{EpmTarget, Interface};
use crate::chain::HopOutput;
use crate::classify::{classify_connect, ConnectOutcome};
use crate::dcerpc::epm::{Entry, LookupRequest, Tower};
use crate::dcerpc::{SyntaxId, Uuid};
use crate::model::{Cause, HopKind, HopResult};

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
        let (attempt, stream) = crate::hops::connect::connect(addr, opts.limit).await;
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

    // The lookup matches any version of the interface; the version fields only fill the request.
    let (major, minor) = opts.iface.version.unwrap_or((0, 0));
    let lookup_req = LookupRequest::by_interface(
        SyntaxId {
            uuid: opts.iface.uuid,
            major,
            minor,
        },
        [0; 20],
    );
    let lookup = client.lookup(lookup_req).await;
    let entries: &[Entry] = lookup.as_ref().map(Vec::as_slice).unwrap_or(&[]);
    // ept_map under the CID (MSDTC registers IXnRemote with its CID as object), at the version seen.
    let object = entries
        .iter()
        .filter(|e| registers(e, &opts.iface))
        .map(|e| e.object)
        .find(|o| !o.is_nil())
        .unwrap_or(Uuid::NIL);
    let version = opts.iface.version.unwrap_or_else(|| {
        entries
            .iter()
            .filter_map(|e| decoded_tower(e).and_then(Tower::interface))
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
    let (mut result, found) = assess(&opts.iface, map_iface, mapper, entries, towers);
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

/// One endpoint-mapper entry, flattened for the hop's `entries` data (`--list-endpoints`);
/// `report::endpoints` renders these objects as text.
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

async fn list_into(client: &mut EpmClient, result: HopResult) -> HopResult {
    match client.lookup(LookupRequest::all([0; 20])).await {
        Ok(entries) => {
            let list: Vec<Value> = entries.iter().map(entry_json).collect();
            result.with_data("entries", list)
        }
        Err(e) => result.with_data("entries_error", e.to_string()),
    }
}

/// Hop `rpc_port`: TCP to each port the mapper returned, on the mapper's address. Hands the
/// ports that connected to `rpc_bind`. A refused port says who sent the reset (`resets`: the
/// run's probe, see [`crate::hops::reset_origin`]).
pub async fn rpc_port(
    found: &EpmFound,
    limit: Duration,
    resets: &crate::hops::reset_origin::ResetProbe,
) -> HopOutput<Vec<u16>> {
    let targets: Vec<SocketAddr> = found
        .ports
        .iter()
        .map(|p| SocketAddr::new(found.ip, *p))
        .collect();
    let attempts =
        crate::hops::connect::probe_all_routed(&targets, limit, None, Some(resets)).await;
    let result = rpc_port_result(&attempts);
    let connected: Vec<u16> = attempts
        .iter()
        .filter(|a| a.outcome == ConnectOutcome::Connected)
        .map(|a| a.addr.port())
        .collect();
    if connected.is_empty() {
        HopOutput::stop(result)
    } else {
        HopOutput::ok(result, connected)
    }
}

/// Ports `rpc_bind` binds to at most (a mapper returns one to a few per interface).
pub const MAX_BIND_PORTS: usize = 8;

/// Hop `rpc_bind`: on each port that connected (at most [`MAX_BIND_PORTS`], concurrently), a
/// new connection and one unauthenticated bind to the interface; each bounded by `limit` for the
/// connect and `limit` for the answer.
pub async fn rpc_bind(found: &EpmFound, ports: &[u16], limit: Duration) -> HopOutput<()> {
    let probes = ports.iter().take(MAX_BIND_PORTS).map(|port| async move {
        let addr = SocketAddr::new(found.ip, *port);
        let started = tokio::time::Instant::now();
        let outcome = probe_bind(addr, &found.iface, limit).await;
        BindAttempt {
            addr,
            tower_address: found.tower_address(*port),
            outcome,
            elapsed: started.elapsed(),
        }
    });
    let attempts = futures::future::join_all(probes).await;
    let result = rpc_bind_result(&found.iface, &attempts);
    if result.lets_chain_continue() {
        HopOutput::ok(result, ())
    } else {
        HopOutput::stop(result)
    }
}

/// Runs an `epm` check: `resolve`, `epm`, `rpc_port`, `rpc_bind`.
pub async fn run(t: &EpmTarget, ctx: &crate::chain::RunContext) -> Vec<HopResult> {
    use crate::chain::Chain;
    let limit = ctx.hop_timeout;
    let mut chain = Chain::new(
        vec![
            HopKind::Resolve,
            HopKind::Route,
            HopKind::Epm,
            HopKind::RpcPort,
            HopKind::RpcBind,
        ],
        limit,
    );
    let Some(addrs) =
        crate::hops::connect::resolve_step(&mut chain, ctx, &t.host, t.reverse_dns, limit).await
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
        // One dynamic port (the usual answer): its trace can start while the connect waits.
        let target = match found.ports.as_slice() {
            [only] => Some(SocketAddr::new(found.ip, *only)),
            _ => None,
        };
        let ports = crate::hops::traced_connect::connect_with_early_trace(
            &mut chain,
            ctx,
            HopKind::RpcPort,
            target,
            rpc_port(&found, limit, &ctx.resets),
        )
        .await;
        if let Some(ports) = ports {
            // Connect, then the bind's answer: two bounds of `limit`.
            chain
                .step_with_timeout(HopKind::RpcBind, limit * 2, rpc_bind(&found, &ports, limit))
                .await;
        }
    }
    chain.finish()
}
