//! Hop `dtc_name` (`tx=enlist`, `tx=distributed`): the name the SQL host's MSDTC goes by, as
//! its whereabouts say, checked from this zone the way this host's MSDTC will use it.
//!
//! SQL Server answers TM_GET_DTC_ADDRESS with its MSDTC's whereabouts (MS-DTCO 2.2.5.11). An
//! application's MSDTC hands them to ITransactionExportFactory::Create and contacts that host BY
//! THE NAME INSIDE (a NetBIOS-style name such as `SQL01`, or a clustered DTC's network name),
//! not by the address the application used for SQL Server: a name this zone cannot resolve, a
//! PTR that names another host, or TCP 135 blocked to that name's address fails every
//! enlistment while the SQL login works. DTCPing checks exactly this; here it runs on any
//! platform (no local MSDTC is needed to ask SQL Server and to resolve a name).
//!
//! Steps: a TDS session of our own ([`super::session::Session`]), TM_GET_DTC_ADDRESS, the
//! whereabouts decoded (`dtcprobe_wire::dtco`), then the shared steps every kind uses: hop
//! `resolve`'s lookup forward and reverse ([`crate::hops::resolve::resolve`]) and hop `tcp`'s
//! connect and verdict to port 135 ([`crate::hops::connect`]), reported under this hop.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use dtcprobe_wire::dtco::{com_protocol_names, decode_whereabouts, Whereabouts};
use dtcprobe_wire::tds::tm::TmRequest;
use serde_json::{json, Value as Json};
use tokio::time::Instant;

use super::classify::server_refusal;
use super::session::{self, dtc_address, first_error, Session};
use crate::chain::RunContext;
use crate::hops::connect::{hop_result, probe_all_routed};
use crate::hops::mssql::classify::{classify_failure, Failure};
use crate::hops::mssql::spec::MssqlTarget;
use crate::model::{Cause, HopKind, HopResult, Status};
use crate::secret::Secret;

const KIND: HopKind = HopKind::DtcName;

/// The RPC endpoint mapper's port: MSDTC's first contact with another MSDTC.
pub const EPM_PORT: u16 = 135;

/// What every hint of this hop starts from.
const WHY: &str = "this host's MSDTC contacts the SQL host's MSDTC by the name in the address \
SQL Server gives out (TM_GET_DTC_ADDRESS), not by the name or address the application uses for \
SQL Server";

pub const HINT_NAME_NOT_RESOLVED: &str = "make that name resolve from this zone: add the DNS \
suffix of the SQL host's domain to this host's suffix search list, or put the name with the SQL \
host's (or the clustered DTC's) address in this host's hosts file; on a failover cluster the name \
is the clustered DTC resource's network name, which needs its own DNS record";

pub const HINT_PTR: &str = "MSDTC also checks the name the other side's address maps back to: \
the reverse (PTR) record of that address must name the same host. Fix the PTR record, or put the \
name in the hosts file on both sides";

pub const HINT_EPM: &str = "MSDTC's first contact is the RPC endpoint mapper on TCP 135 of that \
name's address, then the dynamic port MSDTC registered there: allow both from this zone (check \
them with an epm:// check to the same name), and the same from the SQL host back to this one";

/// Pure: what the hop concludes from the name's lookup (`resolved`: hop `resolve`'s own
/// result for it, and the addresses when there are any) and the connects to TCP 135. The worst
/// of the two sets the status; the cause is the connect's when it did worse, else the lookup's.
pub fn judge(
    host: &str,
    sql_address: IpAddr,
    resolved: &HopResult,
    addrs: Option<&[IpAddr]>,
    epm: Option<&HopResult>,
) -> HopResult {
    let said = format!("the SQL host's MSDTC names itself {host}");
    let (Some(addrs), Some(epm)) = (addrs, epm) else {
        // The name does not resolve here: nothing to connect to.
        let mut r = HopResult::new(
            KIND,
            resolved.status,
            format!("{said}; {}", resolved.detail),
        );
        r.cause = resolved.cause;
        r.hint = Some(format!("{WHY}: {HINT_NAME_NOT_RESOLVED}").into());
        return r;
    };
    let other_address = if addrs.contains(&sql_address) {
        String::new()
    } else {
        format!(
            " (not the address SQL Server answered on, {sql_address}: a clustered DTC, another \
             NIC, or a stale record)"
        )
    };
    let detail = format!(
        "{said}; {}{other_address}; TCP {EPM_PORT}: {}",
        resolved.detail, epm.detail
    );
    let (status, cause, hint) =
        if severity(epm.status) >= severity(resolved.status) && epm.status != Status::Pass {
            (
                epm.status,
                epm.cause,
                Some(format!(
                    "{WHY}: {HINT_EPM}. {}",
                    epm.hint.clone().unwrap_or_default()
                )),
            )
        } else if resolved.status != Status::Pass {
            let fix = match resolved.cause {
                Some(Cause::DnsMismatch) => HINT_PTR,
                _ => resolved.hint.as_deref().unwrap_or(HINT_NAME_NOT_RESOLVED),
            };
            (
                resolved.status,
                resolved.cause,
                Some(format!("{WHY}: {fix}")),
            )
        } else {
            (Status::Pass, None, None)
        };
    let mut r = HopResult::new(KIND, status, detail);
    r.cause = cause;
    r.hint = hint.map(Into::into);
    r
}

fn severity(s: Status) -> u8 {
    match s {
        Status::Pass => 0,
        Status::Skip => 1,
        Status::Warn => 2,
        Status::Fail => 3,
    }
}

/// The whereabouts' facts, for `data`.
fn whereabouts_data(w: &Whereabouts) -> Vec<(&'static str, Json)> {
    let mut v = vec![(
        "tm_protocols",
        json!(w.protocols.iter().map(|p| p.name()).collect::<Vec<_>>()),
    )];
    if let Some((bits, id, _)) = w.v1() {
        v.push(("tm_endpoint_id", json!(id.to_string())));
        v.push(("tm_rpc_protocols", json!(com_protocol_names(bits))));
    }
    v
}

/// The hop, bounded by `limit`; never an error, only a hop result. `addr` is where SQL Server
/// answered (hop `tcp`'s address).
pub async fn run_dtc_name(
    t: &MssqlTarget,
    addr: SocketAddr,
    password: Option<Secret>,
    ctx: &RunContext,
    limit: Duration,
) -> HopResult {
    if let Some(r) = session::integrated_unsupported(t, KIND) {
        return r;
    }
    let started = Instant::now();
    let result =
        match tokio::time::timeout(limit, dtc_name_flow(t, addr, password, ctx, limit)).await {
            Ok(r) => r,
            Err(_) => HopResult::fail(
                KIND,
                Cause::Timeout,
                format!(
                    "no answer within {} while asking SQL Server for its MSDTC's address or \
                 checking that name",
                    humantime::format_duration(limit)
                ),
            )
            .with_hint(crate::chain::overrun(KIND, limit).hint.unwrap_or_default()),
        };
    result.with_duration(started.elapsed())
}

async fn dtc_name_flow(
    t: &MssqlTarget,
    addr: SocketAddr,
    password: Option<Secret>,
    ctx: &RunContext,
    limit: Duration,
) -> HopResult {
    let hop_timeout = ctx.hop_timeout;
    let tds_failure = |f: &Failure, step: &str| {
        let mut r = classify_failure(f).into_hop(KIND);
        r.detail = format!("step `{step}`: {}", r.detail);
        r.with_data("failed_step", step)
    };
    // 1. Our own TDS session, and SQL Server's MSDTC's whereabouts.
    let pw = password.as_ref().map(Secret::expose).unwrap_or("");
    let (mut s, _) = match Session::open(addr, t, pw, hop_timeout.min(limit)).await {
        Ok(s) => s,
        Err(f) => return tds_failure(&f, "login"),
    };
    let tokens = s.tm_request(&TmRequest::GetDtcAddress).await;
    s.close().await;
    let tokens = match tokens {
        Ok(tokens) => tokens,
        Err(f) => return tds_failure(&f, "get DTC address"),
    };
    if let Some(Failure::Server {
        number,
        state,
        class,
        message,
    }) = first_error(&tokens)
    {
        let mut v = server_refusal("get DTC address", number, state);
        v.detail = format!(
            "step `get DTC address`: error {number}, state {state}, class {class}: {message}"
        );
        return v
            .into_hop(KIND)
            .with_data("failed_step", "get DTC address")
            .with_data(
                "error",
                json!({"number": number, "state": state, "class": class}),
            );
    }
    let Some(bytes) = dtc_address(&tokens) else {
        return tds_failure(
            &Failure::Protocol(
                "the answer to TM_GET_DTC_ADDRESS carries no address (no binary row, no \
                 ENVCHANGE 16)"
                    .into(),
            ),
            "get DTC address",
        );
    };
    let prefix: String = bytes.iter().take(16).map(|b| format!("{b:02x}")).collect();
    // 2. The name inside.
    let whereabouts = match decode_whereabouts(&bytes) {
        Ok(w) => w,
        Err(e) => {
            return HopResult::unsupported(
                KIND,
                format!(
                    "SQL Server's MSDTC address ({} bytes) is not an SWhereabouts dtcprobe can \
                     read: {e}; the DTC host name was not checked",
                    bytes.len()
                ),
            )
            .with_data("dtc_address_len", bytes.len())
            .with_data("dtc_address_prefix", prefix)
        }
    };
    let Some(host) = whereabouts.host().map(str::to_string) else {
        return HopResult::unsupported(
            KIND,
            "SQL Server's MSDTC address names no OleTx host (only TIP or an extension \
             protocol): the DTC host name was not checked",
        )
        .with_data(
            "tm_protocols",
            json!(whereabouts
                .protocols
                .iter()
                .map(|p| p.name())
                .collect::<Vec<_>>()),
        );
    };
    let with_facts = |mut r: HopResult| {
        r = r.with_data("tm_host", host.clone());
        for (k, v) in whereabouts_data(&whereabouts) {
            r = r.with_data(k, v);
        }
        r.with_data("sql_address", addr.ip().to_string())
    };
    // 3. Forward and reverse, as hop `resolve` does for a target name.
    let resolved = crate::hops::resolve::resolve(&ctx.resolver, &host, true, hop_timeout).await;
    let mut lookup = resolved.result;
    let addrs = resolved.value;
    // 4. TCP 135 on every address, as hop `tcp` connects and judges.
    let epm = match &addrs {
        Some(addrs) => {
            let targets: Vec<SocketAddr> = addrs
                .iter()
                .map(|ip| SocketAddr::new(*ip, EPM_PORT))
                .collect();
            let attempts =
                probe_all_routed(&targets, hop_timeout, Some(&ctx.routes), Some(&ctx.resets)).await;
            Some(hop_result(KIND, &attempts))
        }
        None => None,
    };
    let mut r = judge(&host, addr.ip(), &lookup, addrs.as_deref(), epm.as_ref());
    // The lookup's and the connects' facts, under the keys their own hops use.
    for key in ["addresses", "ptr"] {
        if let Some(v) = lookup.data.remove(key) {
            r = r.with_data(key, v);
        }
    }
    if let Some(epm) = epm {
        for (k, v) in &epm.data {
            r = r.with_data(k, v.clone());
        }
        r = r.with_data("port", EPM_PORT);
    }
    with_facts(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn judgement_table() {
        let sql = ip("198.18.0.2");
        let resolved_ok = HopResult::pass(HopKind::Resolve, "SQL01 -> 198.18.0.2; reverse agrees");
        let ptr_wrong = HopResult::warn(
            HopKind::Resolve,
            Cause::DnsMismatch,
            "SQL01 -> 198.18.0.2; reverse disagrees",
        );
        let nx = HopResult::fail(HopKind::Resolve, Cause::DnsNxdomain, "SQL01: NXDOMAIN")
            .with_hint("the name does not exist");
        let connected = HopResult::pass(KIND, "connected to 198.18.0.2:135");
        let dropped = HopResult::fail(KIND, Cause::Timeout, "198.18.0.2:135: no reply")
            .with_hint("firewall DROP");
        let here = [sql];

        let r = judge("SQL01", sql, &resolved_ok, Some(&here), Some(&connected));
        assert_eq!(
            (r.status, r.cause, r.hint.as_deref()),
            (Status::Pass, None, None)
        );
        assert!(r.detail.contains("names itself SQL01"), "{}", r.detail);

        let r = judge("SQL01", sql, &nx, None, None);
        assert_eq!(
            (r.status, r.cause),
            (Status::Fail, Some(Cause::DnsNxdomain))
        );
        let hint = r.hint.unwrap();
        assert!(
            hint.contains("TM_GET_DTC_ADDRESS") && hint.contains("hosts file"),
            "{hint}"
        );

        let r = judge("SQL01", sql, &ptr_wrong, Some(&here), Some(&connected));
        assert_eq!(
            (r.status, r.cause),
            (Status::Warn, Some(Cause::DnsMismatch))
        );
        assert!(r.hint.unwrap().contains("PTR"));

        // A blocked 135 outweighs a PTR warning, and its hint names the port and the way back.
        let r = judge("SQL01", sql, &ptr_wrong, Some(&here), Some(&dropped));
        assert_eq!((r.status, r.cause), (Status::Fail, Some(Cause::Timeout)));
        let hint = r.hint.unwrap();
        assert!(
            hint.contains("TCP 135") && hint.contains("firewall DROP"),
            "{hint}"
        );

        // A name that resolves elsewhere than SQL Server's address is said so (a cluster's DTC).
        let r = judge(
            "SQLDTC",
            sql,
            &resolved_ok,
            Some(&[ip("198.18.0.9")]),
            Some(&connected),
        );
        assert_eq!(r.status, Status::Pass);
        assert!(
            r.detail.contains("not the address SQL Server answered on"),
            "{}",
            r.detail
        );
    }
}
