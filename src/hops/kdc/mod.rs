//! Hop `kdc` (mssql with `auth=kerberos`, docs/kerberos.md): can this zone reach the realm's
//! domain controllers the way Kerberos needs? The KDCs come from DNS SRV or krb5.conf
//! ([`discover`]); to each address it sends a Kerberos AS-REQ over TCP 88 and over UDP 88 (an
//! answer, any KRB-ERROR, proves the KDC service is reached, not just a port), and connects to
//! TCP 464 (password change) and TCP 389 (LDAP: the DC locator, SPN lookups). Each flow that a
//! firewall drops or rejects is an attempt in `data.attempts` with its `protocol` and `service`,
//! so it becomes a firewall request row.
//!
//! The KDC's KRB-ERROR carries its clock (`stime`): `data.clock_offset_seconds` is how far this
//! host's clock is from the KDC's, which hop `spn` judges (MIT krb5 compensates silently, so a
//! Linux client works where Windows and SQL Server refuse).

pub mod discover;
pub mod reach;
pub mod target;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::join_all;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::chain::{HopOutput, RunContext};
use crate::classify::{ConnectOutcome, Verdict, HINT_TIMEOUT};
use crate::hops::connect;
use crate::model::{Cause, HopKind, HopResult, Status};
use dtcprobe_wire::kerberos::{self as krb, KdcAnswer};

/// What later hops (`spn`) build on.
#[derive(Debug, Clone, Default)]
pub struct KdcFindings {
    /// KDC addresses that answered on TCP or UDP 88.
    pub answering: Vec<IpAddr>,
    /// This host's clock minus the KDC's, in seconds (from the first KRB-ERROR read).
    pub clock_offset_seconds: Option<i64>,
    /// Domain controllers whose TCP 389 (LDAP) connected: (host name, address).
    pub ldap: Vec<(String, IpAddr)>,
}

/// One flow probed: protocol, port, service name for the firewall request.
#[derive(Debug, Clone, Copy)]
struct Flow {
    protocol: &'static str,
    port: u16,
    service: &'static str,
}

const FLOWS: [Flow; 4] = [
    Flow {
        protocol: "tcp",
        port: 88,
        service: "Kerberos",
    },
    Flow {
        protocol: "udp",
        port: 88,
        service: "Kerberos",
    },
    Flow {
        protocol: "tcp",
        port: 464,
        service: "Kerberos",
    },
    Flow {
        protocol: "tcp",
        port: 389,
        service: "LDAP",
    },
];

/// One probe of one flow at one address.
#[derive(Debug, Clone)]
struct Probe {
    flow: Flow,
    /// The KDC's host name (as found).
    host: String,
    addr: SocketAddr,
    source: Option<IpAddr>,
    /// `None`: it worked.
    failure: Option<Verdict>,
    /// The KDC's answer (88 only).
    answer: Option<KdcAnswer>,
    /// When the answer arrived (this host's clock, seconds since the epoch).
    answered_at: Option<f64>,
}

pub const HINT_OPEN_PORTS: &str =
    "Kerberos from this zone needs TCP and UDP 88 (Kerberos), TCP 464 \
(Kerberos password change) and TCP 389 (LDAP: the DC locator and SPN lookups) to every domain \
controller of the realm: ask for the rows of the firewall request (--firewall-request); without \
them Windows logins silently fall back to NTLM or fail with \"Cannot generate SSPI context\"";

/// Hop `kdc` for `realm`; `client` is the user name the AS-REQ probe asks for (its KDC answers
/// "pre-authentication required", which locks no account), else a name no KDC knows.
pub async fn kdc_hop(
    realm: &str,
    client: Option<&str>,
    ctx: &RunContext,
) -> HopOutput<KdcFindings> {
    let limit = ctx.hop_timeout;
    let kdcs = match discover::find_kdcs(&ctx.resolver, realm, limit).await {
        Ok(k) => k,
        Err(why) => {
            return HopOutput::stop(
                HopResult::fail(
                    HopKind::Kdc,
                    Cause::DnsNxdomain,
                    format!("no KDC found for realm {realm}: {why}"),
                )
                .with_hint(
                    "a domain client finds its domain controllers through DNS SRV records \
                     (_kerberos._tcp.REALM, _ldap._tcp.dc._msdcs.DOMAIN): point this host at the \
                     domain's DNS servers, or name the KDCs in krb5.conf [realms]",
                )
                .with_data("realm", realm),
            )
        }
    };
    probe_kdcs(realm, &kdcs, client, ctx).await
}

/// Hop `kdc` towards KDCs already known (found by [`discover`], or named by the check: kind
/// `kdc`, the matrix's `dcs`): every flow to every IPv4 address of each.
pub async fn probe_kdcs(
    realm: &str,
    kdcs: &[discover::KdcHost],
    client: Option<&str>,
    ctx: &RunContext,
) -> HopOutput<KdcFindings> {
    let limit = ctx.hop_timeout;
    let found = discover::resolve_kdcs(kdcs, &ctx.resolver, limit).await;
    let hosts: Vec<Value> = found
        .lookups
        .iter()
        .map(|(kdc, lookup)| match lookup {
            Ok(addrs) => json!({
                "host": kdc.host,
                "found_by": kdc.found_by,
                "addresses": addrs.iter().map(IpAddr::to_string).collect::<Vec<_>>(),
            }),
            Err(e) => json!({"host": kdc.host, "found_by": kdc.found_by, "error": e}),
        })
        .collect();
    let addrs: Vec<(IpAddr, String)> = found
        .targets
        .iter()
        .map(|(kdc, ip)| (*ip, kdc.host.clone()))
        .collect();
    let base = |r: HopResult| r.with_data("realm", realm).with_data("kdcs", hosts.clone());
    if addrs.is_empty() {
        return HopOutput::stop(base(HopResult::fail(
            HopKind::Kdc,
            Cause::DnsNxdomain,
            format!("the KDCs of {realm} have no IPv4 address this host can resolve"),
        )));
    }
    let principal = client
        .map(|c| c.split(['@', '\\']).next_back().unwrap_or(c))
        .map(|c| c.split('@').next().unwrap_or(c).to_string())
        .unwrap_or_else(|| "dtcprobe-kdc-probe".to_string());
    let probes = join_all(addrs.iter().flat_map(|(ip, host)| {
        let principal = principal.clone();
        FLOWS.iter().map(move |flow| {
            let principal = principal.clone();
            async move {
                let to = SocketAddr::new(*ip, flow.port);
                probe(*flow, host, to, &principal, realm, limit).await
            }
        })
    }))
    .await;
    base(judge(realm, &probes)).into_output(findings(&probes))
}

trait IntoOutput {
    fn into_output(self, findings: KdcFindings) -> HopOutput<KdcFindings>;
}

impl IntoOutput for HopResult {
    fn into_output(self, findings: KdcFindings) -> HopOutput<KdcFindings> {
        if self.status == Status::Fail {
            HopOutput::stop(self)
        } else {
            HopOutput::ok(self, findings)
        }
    }
}

fn now_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

async fn probe(
    flow: Flow,
    host: &str,
    addr: SocketAddr,
    client: &str,
    realm: &str,
    limit: Duration,
) -> Probe {
    let mut p = Probe {
        flow,
        host: host.to_string(),
        addr,
        source: connect::route_source(addr),
        failure: None,
        answer: None,
        answered_at: None,
    };
    let nonce = (now_seconds() as u32) ^ u32::from(addr.port()) << 16;
    let request = krb::as_req(client, realm, nonce & 0x7fff_ffff);
    match flow.protocol {
        "udp" => match udp_exchange(addr, &request, limit).await {
            Ok(bytes) => read_answer(&mut p, &bytes),
            Err(failure) => p.failure = Some(failure),
        },
        _ => {
            let (attempt, stream) = connect::connect(addr, limit).await;
            if attempt.source.is_some() {
                p.source = attempt.source;
            }
            let Some(mut stream) = stream else {
                p.failure = attempt.verdict();
                return p;
            };
            if flow.port == 88 {
                match tcp_exchange(&mut stream, &request, limit).await {
                    Ok(bytes) => read_answer(&mut p, &bytes),
                    Err(failure) => p.failure = Some(failure),
                }
            }
        }
    }
    p
}

fn read_answer(p: &mut Probe, bytes: &[u8]) {
    p.answered_at = Some(now_seconds());
    match krb::parse_answer(bytes) {
        Some(answer) => p.answer = Some(answer),
        None => {
            p.failure = Some(Verdict::new(
                Cause::ProtocolError,
                format!(
                    "{} {} answered, but not with Kerberos",
                    p.flow.protocol, p.addr
                ),
                "something other than a KDC listens on this port, or a proxy rewrote the answer",
            ))
        }
    }
}

async fn tcp_exchange(
    stream: &mut tokio::net::TcpStream,
    request: &[u8],
    limit: Duration,
) -> Result<Vec<u8>, Verdict> {
    let exchange = async {
        stream.write_all(&krb::tcp_frame(request)).await?;
        let mut prefix = [0u8; 4];
        stream.read_exact(&mut prefix).await?;
        let len = krb::tcp_frame_len(prefix).min(64 * 1024);
        let mut body = vec![0u8; len];
        stream.read_exact(&mut body).await?;
        Ok::<_, std::io::Error>(body)
    };
    match tokio::time::timeout(limit, exchange).await {
        Ok(Ok(body)) => Ok(body),
        Ok(Err(e)) => Err(Verdict::new(
            Cause::Reset,
            format!("TCP 88 connected, then the KDC exchange failed: {e}"),
            "a firewall that inspects Kerberos, or a KDC that closes connections: check the DC's \
             KDC service",
        )),
        Err(_) => Err(Verdict::new(
            Cause::Timeout,
            format!("TCP 88 connected, but no Kerberos answer within {limit:?}"),
            "the port is open but no KDC answers: an application firewall, or the KDC service \
             is hung",
        )),
    }
}

async fn udp_exchange(
    addr: SocketAddr,
    request: &[u8],
    limit: Duration,
) -> Result<Vec<u8>, Verdict> {
    let exchange = async {
        let socket = tokio::net::UdpSocket::bind(("0.0.0.0", 0)).await?;
        socket.connect(addr).await?;
        socket.send(request).await?;
        let mut buf = vec![0u8; 64 * 1024];
        let n = socket.recv(&mut buf).await?;
        buf.truncate(n);
        Ok::<_, std::io::Error>(buf)
    };
    match tokio::time::timeout(limit, exchange).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) => {
            let outcome = ConnectOutcome::from_io_error(&e);
            Err(match crate::classify::classify_connect(outcome) {
                // An ICMP port unreachable for a datagram: nothing listens (or a plain reject).
                Some(v) if v.cause == Cause::Refused => Verdict::new(
                    Cause::Refused,
                    format!("UDP {addr}: ICMP port unreachable: no KDC listens on UDP 88"),
                    "the DC's KDC does not serve UDP, or a firewall rejects it (Windows clients \
                     use UDP first for small tickets)",
                ),
                Some(v) => Verdict::new(v.cause, format!("UDP {addr}: {}", v.detail), v.hint),
                None => Verdict::new(Cause::Internal, format!("UDP {addr}: {e}"), ""),
            })
        }
        Err(_) => Err(Verdict::new(
            Cause::Timeout,
            format!("UDP {addr}: no Kerberos answer within {limit:?}"),
            HINT_TIMEOUT,
        )),
    }
}

/// Pure: this host's clock minus the KDC's, from an answer read at `answered_at`.
fn clock_offset(answer: &KdcAnswer, answered_at: f64) -> Option<i64> {
    match answer {
        KdcAnswer::Error { stime, susec, .. } => {
            let kdc = *stime as f64 + f64::from(*susec) / 1e6;
            Some((answered_at - kdc).round() as i64)
        }
        KdcAnswer::AsRep => None,
    }
}

fn findings(probes: &[Probe]) -> KdcFindings {
    let mut f = KdcFindings::default();
    for p in probes {
        let ok = p.failure.is_none();
        if ok && p.flow.port == 88 && !f.answering.contains(&p.addr.ip()) {
            f.answering.push(p.addr.ip());
        }
        if ok && p.flow.port == 389 && !f.ldap.iter().any(|(_, a)| *a == p.addr.ip()) {
            f.ldap.push((p.host.clone(), p.addr.ip()));
        }
        if f.clock_offset_seconds.is_none() {
            if let (Some(a), Some(at)) = (&p.answer, p.answered_at) {
                f.clock_offset_seconds = clock_offset(a, at);
            }
        }
    }
    f
}

/// Pure: the hop result of every probe. No address answering on 88 (TCP or UDP): fail; any
/// other flow blocked: warn (Kerberos works, but not everything that needs it: UDP, password
/// change, the DC locator); all open: pass.
fn judge(realm: &str, probes: &[Probe]) -> HopResult {
    let f = findings(probes);
    let attempts: Vec<Value> = probes
        .iter()
        .map(|p| {
            let mut a = json!({
                "address": p.addr.to_string(),
                "protocol": p.flow.protocol,
                "service": p.flow.service,
                "source": p.source.map(|s| s.to_string()),
                "status": if p.failure.is_none() { "pass" } else { "fail" },
                "cause": p.failure.as_ref().map(|v| v.cause.as_str()),
            });
            if let Some(KdcAnswer::Error { code, .. }) = &p.answer {
                a["kdc_answer"] = json!(krb::error_name(*code));
            }
            a
        })
        .collect();
    let failed: Vec<&Probe> = probes.iter().filter(|p| p.failure.is_some()).collect();
    let flow_name = |p: &Probe| {
        format!(
            "{} {} {} ({})",
            p.flow.protocol.to_ascii_uppercase(),
            p.addr.ip(),
            p.flow.port,
            p.failure.as_ref().map(|v| v.cause.as_str()).unwrap_or("")
        )
    };
    let blocked: Vec<String> = failed.iter().map(|p| flow_name(p)).collect();
    let result = if f.answering.is_empty() {
        let first = failed
            .iter()
            .find(|p| p.flow.port == 88)
            .and_then(|p| p.failure.clone())
            .unwrap_or_else(|| Verdict::new(Cause::Internal, "no KDC probe ran", ""));
        HopResult::fail(
            HopKind::Kdc,
            first.cause,
            format!(
                "no KDC of {realm} answered on TCP or UDP 88 from here; blocked: {}; first: {}",
                blocked.join(", "),
                first.detail
            ),
        )
        .with_hint(format!("{HINT_OPEN_PORTS}. {}", first.hint))
    } else if let Some(first) = failed.first() {
        let v = first.failure.clone().unwrap();
        HopResult::warn(
            HopKind::Kdc,
            v.cause,
            format!(
                "a KDC of {realm} answers, but {} of {} flows are blocked: {}",
                failed.len(),
                probes.len(),
                blocked.join(", ")
            ),
        )
        .with_hint(HINT_OPEN_PORTS)
    } else {
        let answering: Vec<String> = f.answering.iter().map(IpAddr::to_string).collect();
        HopResult::pass(
            HopKind::Kdc,
            format!(
                "KDC {} of {realm} answers on TCP and UDP 88; TCP 464 and 389 open",
                answering.join(", ")
            ),
        )
    };
    let result = match f.clock_offset_seconds {
        Some(offset) => result.with_data("clock_offset_seconds", offset),
        None => result,
    };
    result.with_data("attempts", attempts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(protocol: &'static str, port: u16, failure: Option<Cause>) -> Probe {
        Probe {
            flow: *FLOWS
                .iter()
                .find(|f| f.protocol == protocol && f.port == port)
                .unwrap(),
            host: "dc1.dtc.test".into(),
            addr: SocketAddr::from(([198, 18, 2, 10], port)),
            source: None,
            failure: failure.map(|c| Verdict::new(c, "x", "y")),
            answer: (failure.is_none() && port == 88).then_some(KdcAnswer::Error {
                code: 25,
                stime: 1_000,
                susec: 0,
            }),
            answered_at: Some(1_300.4),
        }
    }

    #[test]
    fn all_open_passes_with_the_clock_offset() {
        let probes = [
            probe("tcp", 88, None),
            probe("udp", 88, None),
            probe("tcp", 464, None),
            probe("tcp", 389, None),
        ];
        let r = judge("DTC.TEST", &probes);
        assert_eq!(r.status, Status::Pass, "{r:?}");
        assert_eq!(r.data["clock_offset_seconds"], 300);
        assert_eq!(
            r.data["attempts"][0]["kdc_answer"],
            "KDC_ERR_PREAUTH_REQUIRED"
        );
    }

    #[test]
    fn blocked_88_fails_and_a_blocked_389_warns() {
        let dropped = [
            probe("tcp", 88, Some(Cause::Timeout)),
            probe("udp", 88, Some(Cause::Timeout)),
            probe("tcp", 464, None),
            probe("tcp", 389, None),
        ];
        let r = judge("DTC.TEST", &dropped);
        assert_eq!((r.status, r.cause), (Status::Fail, Some(Cause::Timeout)));
        let ldap = [
            probe("tcp", 88, None),
            probe("udp", 88, None),
            probe("tcp", 464, None),
            probe("tcp", 389, Some(Cause::Prohibited)),
        ];
        let r = judge("DTC.TEST", &ldap);
        assert_eq!((r.status, r.cause), (Status::Warn, Some(Cause::Prohibited)));
        assert_eq!(r.data["attempts"][3]["service"], "LDAP");
    }
}
