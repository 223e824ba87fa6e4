//! Hop `path` (a shared step, not a kind): after a connect timed out, where do the packets die?
//!
//! A timeout alone sends the sysadmin to "the firewall team", who may answer that their logs are
//! clean. This hop sends TCP SYNs to the same address and port with TTL 1, 2, 3 ... and reads
//! each socket's error queue (`IP_RECVERR`, unprivileged on Linux): every router that answers
//! ICMP time-exceeded is named, and the last one that answered is where the packets die ("at or
//! just after"). All TTLs are probed at once, each bounded by one hop timeout, so the hop takes
//! about one hop timeout (never more than two).
//!
//! On Windows, where Winsock has no error queue for TCP, the trace is an ICMP echo with the same
//! TTL steps through `IcmpSendEcho2` (unprivileged); `data.method` says which trace ran. The
//! interpretation ([`interpret`]) is pure and tested on its own.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde_json::json;

use crate::chain::{Chain, HopOutput, RunContext};
use crate::model::{Cause, HopKind, HopResult, Status};

/// TTLs probed: 1 to this. Zone-to-zone paths inside a datacenter are a handful of hops.
pub const MAX_TTL: u8 = 12;

/// What came back for one TTL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// ICMP time exceeded from this router.
    Router(IpAddr),
    /// The target answered (SYN-ACK or reset): this TTL reached it.
    Reached,
    /// The target answered an ICMP echo (the Windows trace): the route works, which says nothing
    /// about the TCP port.
    EchoReplied,
    /// An ICMP destination unreachable from this device (a reject on the way).
    Rejected(IpAddr),
    /// Nothing before the deadline.
    Silent,
    /// The probe could not be sent (local error).
    Failed,
}

pub const HINT_DIES_AFTER: &str = "the SYN passes every device up to the last one that answered, \
then nothing comes back: the next device drops it. That is the firewall (or the target's own host \
firewall) to look at: check its rules and DROP logs for this port, in this direction";
pub const HINT_NO_ROUTER: &str = "not even the first router answered: the packets die at the first \
device after this host (its gateway or a firewall right after it), or the routers on the way do not \
send ICMP time-exceeded (or it is filtered back to this zone). Check the local gateway's firewall \
first";
pub const HINT_PORT_FILTERED: &str = "ICMP echo gets through to the target, so the route and the \
host are fine: the TCP SYN to this port is dropped by a rule for this port, on the target's own \
firewall (Windows Firewall: `Get-NetFirewallRule -Direction Inbound -Enabled True | \
Get-NetFirewallPortFilter`) or on a firewall in front of it. Check both for this port and \
direction";
pub const HINT_ON_LINK_SILENT: &str = "no router stands between this host and the target, so \
the SYN reached the target's own network and nothing answered: the target's host firewall \
(Windows Firewall, nftables/iptables) drops this port, or no host holds that address right now \
(compare `ip neigh show ADDRESS` / `Get-NetNeighbor` with the target's MAC, and check for an \
address conflict)";

/// How the kernel reaches the target, from a route lookup made for the trace: this decides how
/// "nobody answered" reads. With no router in between, "before the first router" would send the
/// sysadmin to a gateway the packets never cross.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Through a gateway (or not known).
    Routed,
    /// On a directly connected network: TTL 1 already reaches the target.
    OnLink,
}

/// Pure: the hop result for the probes, index 0 being TTL 1.
pub fn interpret(target: SocketAddr, probes: &[Probe], reach: Reach) -> HopResult {
    let routers: Vec<serde_json::Value> = probes
        .iter()
        .enumerate()
        .filter_map(|(i, p)| match p {
            Probe::Router(ip) | Probe::Rejected(ip) => Some(json!({
                "ttl": i + 1,
                "address": ip.to_string(),
            })),
            _ => None,
        })
        .collect();
    let reached = probes.iter().position(|p| *p == Probe::Reached);
    let echoed = probes.iter().position(|p| *p == Probe::EchoReplied);
    let rejected = probes.iter().enumerate().find_map(|(i, p)| match p {
        Probe::Rejected(ip) => Some((i + 1, *ip)),
        _ => None,
    });
    let last = probes
        .iter()
        .enumerate()
        .filter_map(|(i, p)| match p {
            Probe::Router(ip) => Some((i + 1, *ip)),
            _ => None,
        })
        .next_back();
    let base = |r: HopResult| {
        let r = r
            .with_data("target", target.to_string())
            .with_data("max_ttl", probes.len())
            .with_data("routers", routers.clone());
        match last {
            Some((ttl, ip)) => r
                .with_data("last_responder", ip.to_string())
                .with_data("last_ttl", ttl),
            None => r,
        }
    };
    if let Some(i) = reached {
        return base(
            HopResult::new(
                HopKind::Path,
                Status::Warn,
                format!(
                    "the trace reached {target} at hop {} this time: the timeout before was \
                     intermittent (overload, a rate limit, or a stateful device that drops only \
                     some connections)",
                    i + 1
                ),
            )
            .with_cause(Cause::Timeout)
            .with_hint("run the check again; compare with the firewall's connection logs"),
        );
    }
    if let Some(i) = echoed {
        return base(
            HopResult::fail(
                HopKind::Path,
                Cause::Timeout,
                format!(
                    "ICMP echo reaches {} at hop {} while the SYN to port {} gets no answer: \
                     the port is dropped by a filter for it, at the target or just in front of it",
                    target.ip(),
                    i + 1,
                    target.port()
                ),
            )
            .with_data("echo_ttl", i + 1)
            .with_hint(HINT_PORT_FILTERED),
        );
    }
    if let Some((ttl, ip)) = rejected {
        return base(
            HopResult::fail(
                HopKind::Path,
                Cause::Prohibited,
                format!("a SYN with TTL {ttl} was rejected by {ip} (ICMP destination unreachable)"),
            )
            .with_hint(crate::classify::HINT_PROHIBITED),
        );
    }
    match last {
        Some((ttl, ip)) => base(
            HopResult::fail(
                HopKind::Path,
                Cause::Timeout,
                format!(
                    "packets die at or just after {ip} (hop {ttl}); {} of {} hops answered",
                    routers.len(),
                    probes.len()
                ),
            )
            .with_hint(HINT_DIES_AFTER),
        ),
        None if probes.iter().all(|p| *p == Probe::Failed) => base(HopResult::skip(
            HopKind::Path,
            "the trace probes could not be sent (see -v)",
        )),
        None if reach == Reach::OnLink => base(
            HopResult::fail(
                HopKind::Path,
                Cause::Timeout,
                format!(
                    "{} is on a directly connected network (no router between) and did not \
                     answer any of {} SYNs: it is dropped at the target itself",
                    target.ip(),
                    probes.len()
                ),
            )
            .with_data("on_link", true)
            .with_hint(HINT_ON_LINK_SILENT),
        ),
        None => base(
            HopResult::fail(
                HopKind::Path,
                Cause::Timeout,
                format!(
                    "no router answered any TTL from 1 to {}: packets die before the first router",
                    probes.len()
                ),
            )
            .with_hint(HINT_NO_ROUTER),
        ),
    }
}

/// Runs the trace to `target`: every TTL at once, each bounded by `limit`. `reach` decides how
/// silence reads (see [`Reach`]).
pub async fn trace(target: SocketAddr, limit: Duration, reach: Reach) -> HopOutput<()> {
    #[cfg(target_os = "linux")]
    {
        let probes =
            futures::future::join_all((1..=MAX_TTL).map(|ttl| linux::probe(target, ttl, limit)))
                .await;
        HopOutput::stop(interpret(target, &probes, reach).with_data("method", "tcp_syn"))
    }
    #[cfg(windows)]
    {
        if target.is_ipv6() {
            return HopOutput::stop(HopResult::skip(
                HopKind::Path,
                format!(
                    "path trace to {target}: the Windows trace (IcmpSendEcho2) is IPv4 only \
                     here: where the packets die is not known"
                ),
            ));
        }
        let probes =
            futures::future::join_all((1..=MAX_TTL).map(|ttl| windows::probe(target, ttl, limit)))
                .await;
        HopOutput::stop(interpret(target, &probes, reach).with_data("method", "icmp_echo"))
    }
    #[cfg(not(any(target_os = "linux", windows)))]
    {
        let _ = (limit, reach);
        HopOutput::stop(HopResult::skip(
            HopKind::Path,
            format!(
                "path trace to {target} is not implemented on this platform: where the packets \
                 die is not known"
            ),
        ))
    }
}

/// A connect hop with its path trace started early, so that a dropped port costs one hop
/// timeout, not two (the trace used to start only after the connect had timed out).
///
/// If the connect to `target` has not ended half a hop timeout in, the TTL-stepped probes go out
/// while it still waits, each given the other half (ICMP answers from routers take milliseconds;
/// silence after half a timeout reads as silence after a whole one). When the connect then
/// times out on `target`, the trace's result is recorded as hop `path` right after it. When it
/// connects or fails otherwise, the trace is dropped, its answers unread. `None` target (several
/// addresses: which one times out is known only at the end) or `--no-trace`: the connect alone,
/// then [`trace_after_timeout`].
pub async fn connect_with_early_trace<T, F>(
    chain: &mut Chain,
    ctx: &RunContext,
    kind: HopKind,
    target: Option<SocketAddr>,
    connect: F,
) -> Option<T>
where
    F: std::future::Future<Output = HopOutput<T>>,
{
    let Some(target) = target.filter(|_| ctx.trace) else {
        let value = chain.step(kind, connect).await;
        if value.is_none() {
            trace_after_timeout(chain, ctx).await;
        }
        return value;
    };
    let head_start = ctx.hop_timeout / 2;
    let probe_limit = ctx.hop_timeout - head_start;
    let early = async {
        tokio::time::sleep(head_start).await;
        let reach = reach_of(ctx, target).await;
        let started = tokio::time::Instant::now();
        let result = match tokio::time::timeout(
            probe_limit + crate::chain::OVERRUN_GRACE,
            trace(target, probe_limit, reach),
        )
        .await
        {
            Ok(output) => output.result,
            Err(_) => crate::chain::overrun(HopKind::Path, probe_limit),
        };
        result.with_duration(started.elapsed())
    };
    let mut early = std::pin::pin!(early);
    let mut traced = None;
    let value = {
        let step = chain.step(kind, connect);
        let mut step = std::pin::pin!(step);
        loop {
            tokio::select! {
                value = &mut step => break value,
                result = &mut early, if traced.is_none() => traced = Some(result),
            }
        }
    };
    if value.is_none() && chain.with_last(timed_out_address) == Some(target) {
        let result = match traced {
            Some(result) => result,
            None => early.await,
        };
        chain.record(result);
    }
    value
}

/// Whether silence towards `target` reads as "at the target" or "on the way". The route hop
/// already asked: the run's cache answers without a second kernel query; a lookup error keeps
/// the routed wording.
async fn reach_of(ctx: &RunContext, target: SocketAddr) -> Reach {
    match ctx.routes.lookup(target.ip()).await {
        Ok(info) if info.gateway.is_none() => Reach::OnLink,
        _ => Reach::Routed,
    }
}

/// Runs hop `path` when the hop just recorded (`tcp` or `rpc_port`) timed out on some address,
/// unless `--no-trace`. Its place in the report: right after that hop.
pub async fn trace_after_timeout(chain: &mut Chain, ctx: &RunContext) {
    if !ctx.trace {
        return;
    }
    let Some(target) = chain.with_last(timed_out_address) else {
        return;
    };
    let reach = reach_of(ctx, target).await;
    // Each probe is bounded by the hop timeout; the chain's bound adds its small grace.
    chain
        .step_with_timeout(
            HopKind::Path,
            ctx.hop_timeout,
            trace(target, ctx.hop_timeout, reach),
        )
        .await;
}

/// Pure: the first address a failed connect hop timed out on, from its `attempts`.
pub fn timed_out_address(hop: &HopResult) -> Option<SocketAddr> {
    if hop.status != Status::Fail || hop.cause != Some(Cause::Timeout) {
        return None;
    }
    hop.data.get("attempts")?.as_array()?.iter().find_map(|a| {
        (a.get("cause")?.as_str()? == "timeout")
            .then(|| a.get("address")?.as_str()?.parse().ok())
            .flatten()
    })
}

#[cfg(target_os = "linux")]
mod linux {
    use std::net::SocketAddr;
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    use super::Probe;

    fn set_ttl(socket: &tokio::net::TcpSocket, v6: bool, ttl: u8) -> std::io::Result<()> {
        let value = libc::c_int::from(ttl);
        let (level, name) = if v6 {
            (libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS)
        } else {
            (libc::IPPROTO_IP, libc::IP_TTL)
        };
        // SAFETY: valid socket fd; the option value is a c_int.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                level,
                name,
                &value as *const _ as *const libc::c_void,
                std::mem::size_of_val(&value) as libc::socklen_t,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }

    /// One SYN with `ttl`, and what answered it.
    pub async fn probe(target: SocketAddr, ttl: u8, limit: Duration) -> Probe {
        let v6 = target.is_ipv6();
        let socket = match if v6 {
            tokio::net::TcpSocket::new_v6()
        } else {
            tokio::net::TcpSocket::new_v4()
        } {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!("path probe socket: {e}");
                return Probe::Failed;
            }
        };
        if let Err(e) = set_ttl(&socket, v6, ttl) {
            tracing::debug!("path probe TTL {ttl}: {e}");
            return Probe::Failed;
        }
        let Some(errqueue) = crate::hops::errqueue::enable(&socket, v6) else {
            return Probe::Failed;
        };
        match tokio::time::timeout(limit, socket.connect(target)).await {
            Ok(Ok(_)) => Probe::Reached,
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => Probe::Reached,
            Ok(Err(e)) => match crate::hops::errqueue::read_queued(&errqueue, v6) {
                // v4 type 11 / v6 type 3: time exceeded in transit.
                Some(icmp) if matches!((icmp.v6, icmp.icmp_type), (false, 11) | (true, 3)) => {
                    icmp.offender.map(Probe::Router).unwrap_or(Probe::Silent)
                }
                Some(icmp) => icmp.offender.map(Probe::Rejected).unwrap_or(Probe::Silent),
                None => {
                    tracing::debug!("path probe TTL {ttl}: {e}");
                    Probe::Failed
                }
            },
            Err(_) => Probe::Silent,
        }
    }
}

/// The Windows trace: Winsock has no error queue for TCP, and raw sockets need elevation, so the
/// trace is an ICMP echo with TTL 1, 2, 3 ... through `IcmpSendEcho2` (unprivileged). Routers
/// answer time-exceeded to an echo as to a SYN; what differs is the end: an echo that reaches
/// the target proves the route, not the port ([`Probe::EchoReplied`]).
#[cfg(windows)]
mod windows {
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};
    use std::time::Duration;

    use windows_sys::Win32::Foundation::{GetLastError, INVALID_HANDLE_VALUE};
    use windows_sys::Win32::NetworkManagement::IpHelper::{
        IcmpCloseHandle, IcmpCreateFile, IcmpSendEcho2, ICMP_ECHO_REPLY, IP_DEST_HOST_UNREACHABLE,
        IP_DEST_NET_UNREACHABLE, IP_DEST_PORT_UNREACHABLE, IP_DEST_PROHIBITED,
        IP_OPTION_INFORMATION, IP_REQ_TIMED_OUT, IP_SUCCESS, IP_TTL_EXPIRED_TRANSIT,
    };

    use super::Probe;

    const PAYLOAD: &[u8] = b"dtcprobe path trace";

    pub async fn probe(target: SocketAddr, ttl: u8, limit: Duration) -> Probe {
        let IpAddr::V4(dest) = target.ip() else {
            return Probe::Failed;
        };
        tokio::task::spawn_blocking(move || echo(dest, ttl, limit))
            .await
            .unwrap_or(Probe::Failed)
    }

    fn echo(dest: Ipv4Addr, ttl: u8, limit: Duration) -> Probe {
        // SAFETY: plain Win32 calls; the handle is closed on every path below.
        let handle = unsafe { IcmpCreateFile() };
        if handle == INVALID_HANDLE_VALUE {
            tracing::debug!("path probe TTL {ttl}: IcmpCreateFile failed");
            return Probe::Failed;
        }
        let options = IP_OPTION_INFORMATION {
            Ttl: ttl,
            Tos: 0,
            Flags: 0,
            OptionsSize: 0,
            OptionsData: std::ptr::null_mut(),
        };
        // The reply buffer holds one ICMP_ECHO_REPLY, the echoed data and room for an ICMP error
        // (8 bytes) as the API documents; u64 elements keep the struct aligned.
        let bytes = std::mem::size_of::<ICMP_ECHO_REPLY>() + PAYLOAD.len() + 8 + 64;
        let mut reply = vec![0u64; bytes.div_ceil(8)];
        let timeout_ms = u32::try_from(limit.as_millis()).unwrap_or(u32::MAX).max(1);
        // SAFETY: every pointer is to a live buffer of the size passed; no event or APC, so the
        // call is synchronous (it runs on a blocking thread).
        let (count, last_error) = unsafe {
            let count = IcmpSendEcho2(
                handle,
                std::ptr::null_mut(),
                None,
                std::ptr::null(),
                u32::from_ne_bytes(dest.octets()),
                PAYLOAD.as_ptr().cast(),
                PAYLOAD.len() as u16,
                &options,
                reply.as_mut_ptr().cast(),
                (reply.len() * 8) as u32,
                timeout_ms,
            );
            (count, GetLastError())
        };
        // SAFETY: the buffer starts with an ICMP_ECHO_REPLY written by the call (zeroed if not).
        let first = unsafe { &*(reply.as_ptr() as *const ICMP_ECHO_REPLY) };
        let status = if count == 0 { last_error } else { first.Status };
        let from = IpAddr::V4(Ipv4Addr::from(first.Address.to_ne_bytes()));
        // SAFETY: the handle came from IcmpCreateFile.
        unsafe { IcmpCloseHandle(handle) };
        match status {
            IP_SUCCESS => Probe::EchoReplied,
            IP_TTL_EXPIRED_TRANSIT => Probe::Router(from),
            IP_DEST_NET_UNREACHABLE
            | IP_DEST_HOST_UNREACHABLE
            | IP_DEST_PROHIBITED
            | IP_DEST_PORT_UNREACHABLE
                if !from.is_unspecified() =>
            {
                Probe::Rejected(from)
            }
            IP_REQ_TIMED_OUT => Probe::Silent,
            other => {
                tracing::debug!("path probe TTL {ttl}: IcmpSendEcho2 status {other}");
                Probe::Failed
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn names_the_last_router_that_answered() {
        let target: SocketAddr = "198.18.3.2:1433".parse().unwrap();
        let probes = [
            Probe::Router(ip("198.18.0.254")),
            Probe::Router(ip("198.18.5.1")),
            Probe::Silent,
            Probe::Silent,
        ];
        let r = interpret(target, &probes, Reach::Routed);
        assert_eq!((r.status, r.cause), (Status::Fail, Some(Cause::Timeout)));
        assert!(
            r.detail.contains("at or just after 198.18.5.1 (hop 2)"),
            "{}",
            r.detail
        );
        assert_eq!(r.data["last_responder"], "198.18.5.1");
        assert_eq!(r.data["last_ttl"], 2);
        assert_eq!(r.data["routers"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn silence_on_a_directly_connected_network_names_the_target_not_a_router() {
        let target: SocketAddr = "198.18.3.2:1433".parse().unwrap();
        let r = interpret(target, &[Probe::Silent, Probe::Silent], Reach::OnLink);
        assert_eq!((r.status, r.cause), (Status::Fail, Some(Cause::Timeout)));
        assert!(r.detail.contains("directly connected"), "{}", r.detail);
        assert!(!r.detail.contains("first router"), "{}", r.detail);
        assert_eq!(r.data["on_link"], true);
        assert_eq!(r.hint.as_deref(), Some(HINT_ON_LINK_SILENT));
    }

    #[test]
    fn an_echo_that_reaches_the_target_blames_a_port_filter_not_the_route() {
        let target: SocketAddr = "198.18.3.2:1433".parse().unwrap();
        let probes = [
            Probe::Router(ip("198.18.0.254")),
            Probe::EchoReplied,
            Probe::EchoReplied,
        ];
        let r = interpret(target, &probes, Reach::Routed);
        assert_eq!((r.status, r.cause), (Status::Fail, Some(Cause::Timeout)));
        assert!(
            r.detail.contains("ICMP echo reaches 198.18.3.2 at hop 2") && r.detail.contains("1433"),
            "{}",
            r.detail
        );
        assert_eq!(r.data["echo_ttl"], 2);
        assert_eq!(r.data["last_responder"], "198.18.0.254");
        assert_eq!(r.hint.as_deref(), Some(HINT_PORT_FILTERED));
    }

    #[test]
    fn no_router_reached_and_rejected() {
        let target: SocketAddr = "198.18.3.2:1433".parse().unwrap();
        let r = interpret(target, &[Probe::Silent, Probe::Silent], Reach::Routed);
        assert!(r.detail.contains("before the first router"), "{}", r.detail);
        assert!(!r.data.contains_key("last_responder"));
        let r = interpret(
            target,
            &[Probe::Router(ip("198.18.0.254")), Probe::Reached],
            Reach::Routed,
        );
        assert_eq!(r.status, Status::Warn);
        let r = interpret(
            target,
            &[Probe::Rejected(ip("198.18.0.254")), Probe::Silent],
            Reach::Routed,
        );
        assert_eq!(r.cause, Some(Cause::Prohibited));
        let r = interpret(target, &[Probe::Failed, Probe::Failed], Reach::Routed);
        assert_eq!(r.status, Status::Skip);
    }

    #[test]
    fn finds_the_timed_out_address() {
        let hop = HopResult::fail(HopKind::RpcPort, Cause::Timeout, "x").with_data(
            "attempts",
            json!([
                {"address": "198.18.3.2:49664", "cause": "refused"},
                {"address": "198.18.3.2:49665", "cause": "timeout"},
            ]),
        );
        assert_eq!(
            timed_out_address(&hop),
            Some("198.18.3.2:49665".parse().unwrap())
        );
        let refused = HopResult::fail(HopKind::Tcp, Cause::Refused, "x");
        assert_eq!(timed_out_address(&refused), None);
    }
}
