//! The shared steps every kind that talks TCP builds on (they are not a kind themselves):
//! resolve the name, connect to every address, then open the connection a login runs over.
//!
//! - [`reach`]: hops `resolve` then `tcp`, recorded on the check's chain; hands back the first
//!   address that connected. [`resolve_step`] and [`connect_step`] are its halves, for a kind
//!   that has a hop between them (mssql asks the SQL Browser for the port).
//! - [`open`]: the login's own connection to that address, whose failure is classified exactly
//!   as the `tcp` hop's would be (the path can break in between).
//! - [`connect`], [`probe_all`], [`hop_result`]: one attempt, many attempts, and their verdict,
//!   for every hop that opens TCP (`tcp`, `rpc_port`, `callback`). A DNS name that
//!   load-balances onto a blocked datacenter shows up as a partial failure (`warn`).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use futures::future::join_all;
use serde_json::json;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::chain::{Chain, HopOutput, RunContext};
use crate::classify::{classify_connect, ConnectOutcome, Verdict};
use crate::model::{HopKind, HopResult, Status};

/// One connect attempt and what came of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    pub addr: SocketAddr,
    pub outcome: ConnectOutcome,
    pub elapsed: Duration,
}

impl Attempt {
    /// What went wrong, or `None` when it connected.
    pub fn verdict(&self) -> Option<Verdict> {
        classify_connect(self.outcome)
    }
}

/// Connects once, bounded by `limit`. Returns the attempt, and the stream when it connected.
pub async fn connect(addr: SocketAddr, limit: Duration) -> (Attempt, Option<TcpStream>) {
    let started = Instant::now();
    let (outcome, stream) = connect_classified(addr, limit).await;
    (
        Attempt {
            addr,
            outcome,
            elapsed: started.elapsed(),
        },
        stream,
    )
}

#[cfg(not(target_os = "linux"))]
async fn connect_classified(
    addr: SocketAddr,
    limit: Duration,
) -> (ConnectOutcome, Option<TcpStream>) {
    match tokio::time::timeout(limit, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => (ConnectOutcome::Connected, Some(stream)),
        Ok(Err(e)) => (ConnectOutcome::from_io_error(&e), None),
        Err(_) => (ConnectOutcome::NoReply(limit), None),
    }
}

/// On Linux the socket asks for ICMP errors to be queued (`IP_RECVERR`), and a failed connect
/// reads the ICMP type and code that caused it: errno alone folds "administratively prohibited"
/// into "host unreachable".
#[cfg(target_os = "linux")]
async fn connect_classified(
    addr: SocketAddr,
    limit: Duration,
) -> (ConnectOutcome, Option<TcpStream>) {
    let socket = match if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    } {
        Ok(s) => s,
        Err(e) => return (ConnectOutcome::from_io_error(&e), None),
    };
    let errqueue = icmp_errqueue::enable(&socket, addr.is_ipv6());
    match tokio::time::timeout(limit, socket.connect(addr)).await {
        Ok(Ok(stream)) => (ConnectOutcome::Connected, Some(stream)),
        Ok(Err(e)) => {
            let icmp = errqueue
                .as_ref()
                .and_then(|fd| icmp_errqueue::read(fd, addr.ip()));
            (
                icmp.unwrap_or_else(|| ConnectOutcome::from_io_error(&e)),
                None,
            )
        }
        Err(_) => (ConnectOutcome::NoReply(limit), None),
    }
}

#[cfg(target_os = "linux")]
mod icmp_errqueue {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    use crate::classify::ConnectOutcome;

    const SO_EE_ORIGIN_ICMP: u8 = 2;
    const SO_EE_ORIGIN_ICMP6: u8 = 3;

    /// Turns on IP(V6)_RECVERR and returns a duplicate of the descriptor, which outlives the
    /// socket that `connect` consumes, so the error queue can still be read after a failure.
    pub fn enable(socket: &tokio::net::TcpSocket, v6: bool) -> Option<OwnedFd> {
        let fd = socket.as_raw_fd();
        let on: libc::c_int = 1;
        let (level, name) = if v6 {
            (libc::SOL_IPV6, libc::IPV6_RECVERR)
        } else {
            (libc::SOL_IP, libc::IP_RECVERR)
        };
        // SAFETY: fd is a valid socket owned by `socket`; the option value is a c_int.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                level,
                name,
                &on as *const _ as *const libc::c_void,
                std::mem::size_of_val(&on) as libc::socklen_t,
            )
        };
        if rc != 0 {
            tracing::debug!(
                "cannot enable the ICMP error queue: {}",
                std::io::Error::last_os_error()
            );
            return None;
        }
        // SAFETY: dup returns a new descriptor we own, or -1.
        let dup = unsafe { libc::dup(fd) };
        (dup >= 0).then(|| unsafe { OwnedFd::from_raw_fd(dup) })
    }

    /// Reads one queued ICMP error, if any, without blocking; `target` is the address the socket
    /// connected to, to tell "the target answered" from "a router answered".
    pub fn read(fd: &OwnedFd, target: std::net::IpAddr) -> Option<ConnectOutcome> {
        let queued = read_queued(fd, target.is_ipv6())?;
        Some(ConnectOutcome::Icmp {
            v6: queued.v6,
            icmp_type: queued.icmp_type,
            code: queued.code,
            from: queued.offender,
            by_target: queued.offender == Some(target),
        })
    }

    /// One ICMP error from a socket's error queue.
    #[derive(Debug, Clone, Copy)]
    pub struct QueuedIcmp {
        pub v6: bool,
        pub icmp_type: u8,
        pub code: u8,
        /// The device that sent it (`SO_EE_OFFENDER`).
        pub offender: Option<std::net::IpAddr>,
    }

    /// Reads one queued ICMP error, if any, without blocking. Shared with the `path` trace,
    /// which reads time-exceeded errors the same way.
    pub fn read_queued(fd: &impl AsRawFd, v6: bool) -> Option<QueuedIcmp> {
        let mut control = [0u8; 512];
        let mut data = [0u8; 64];
        let mut iov = libc::iovec {
            iov_base: data.as_mut_ptr() as *mut libc::c_void,
            iov_len: data.len(),
        };
        // SAFETY: zeroed msghdr is valid; the pointers below outlive the call.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = control.len() as _;
        // SAFETY: valid fd and msghdr.
        let n = unsafe {
            libc::recvmsg(
                fd.as_raw_fd(),
                &mut msg,
                libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            // No ICMP error queued: the failure came from elsewhere (a reset, a local error).
            return None;
        }
        let (level, kind) = if v6 {
            (libc::SOL_IPV6, libc::IPV6_RECVERR)
        } else {
            (libc::SOL_IP, libc::IP_RECVERR)
        };
        // SAFETY: CMSG_* walk the control buffer the kernel just filled, within msg_controllen.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == level && (*cmsg).cmsg_type == kind {
                    let ee = std::ptr::read_unaligned(
                        libc::CMSG_DATA(cmsg) as *const libc::sock_extended_err
                    );
                    if ee.ee_origin == SO_EE_ORIGIN_ICMP || ee.ee_origin == SO_EE_ORIGIN_ICMP6 {
                        // SO_EE_OFFENDER: a sockaddr right after the extended error, in the
                        // same control message.
                        let after = (libc::CMSG_DATA(cmsg) as *const u8)
                            .add(std::mem::size_of::<libc::sock_extended_err>());
                        return Some(QueuedIcmp {
                            v6: ee.ee_origin == SO_EE_ORIGIN_ICMP6,
                            icmp_type: ee.ee_type,
                            code: ee.ee_code,
                            offender: offender(after),
                        });
                    }
                }
                cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
            }
        }
        None
    }

    /// The offender sockaddr the kernel put after `sock_extended_err` (AF_UNSPEC when unknown).
    ///
    /// # Safety
    /// `at` points into a control message the kernel filled for an IP(V6)_RECVERR error, which
    /// always has room for a `sockaddr_in6` there.
    unsafe fn offender(at: *const u8) -> Option<std::net::IpAddr> {
        let family = std::ptr::read_unaligned(at as *const libc::sockaddr).sa_family as i32;
        match family {
            libc::AF_INET => {
                let sin = std::ptr::read_unaligned(at as *const libc::sockaddr_in);
                Some(std::net::IpAddr::from(
                    u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
                ))
            }
            libc::AF_INET6 => {
                let sin6 = std::ptr::read_unaligned(at as *const libc::sockaddr_in6);
                Some(std::net::IpAddr::from(sin6.sin6_addr.s6_addr))
            }
            _ => None,
        }
    }
}

/// For hop `path`: turns on a socket's ICMP error queue (a duplicate descriptor to read it by).
#[cfg(target_os = "linux")]
pub fn errqueue_enable(socket: &tokio::net::TcpSocket, v6: bool) -> Option<std::os::fd::OwnedFd> {
    icmp_errqueue::enable(socket, v6)
}

/// For hop `path`: one queued ICMP error (any type, with its sender), without blocking.
#[cfg(target_os = "linux")]
pub fn errqueue_read(fd: &std::os::fd::OwnedFd, v6: bool) -> Option<icmp_errqueue::QueuedIcmp> {
    icmp_errqueue::read_queued(fd, v6)
}

#[cfg(target_os = "linux")]
pub use icmp_errqueue::QueuedIcmp;

/// The device that sent the ICMP error an attempt ended with, if it did.
pub fn icmp_from(outcome: &ConnectOutcome) -> Option<IpAddr> {
    match outcome {
        ConnectOutcome::Icmp { from, .. } => *from,
        _ => None,
    }
}

/// Tries every address concurrently and closes the connections straight away.
pub async fn probe_all(addrs: &[SocketAddr], limit: Duration) -> Vec<Attempt> {
    join_all(
        addrs
            .iter()
            .map(|a| async move { connect(*a, limit).await.0 }),
    )
    .await
}

/// Pure: the hop result for a set of attempts at one logical endpoint.
/// All connected -> pass; some -> warn with the first failure's cause; none -> fail.
pub fn hop_result(kind: HopKind, attempts: &[Attempt]) -> HopResult {
    let ok: Vec<&Attempt> = attempts
        .iter()
        .filter(|a| a.outcome == ConnectOutcome::Connected)
        .collect();
    let failed: Vec<(&Attempt, Verdict)> = attempts
        .iter()
        .filter_map(|a| classify_connect(a.outcome).map(|c| (a, c)))
        .collect();
    let per_address: Vec<serde_json::Value> = attempts
        .iter()
        .map(|a| {
            let c = classify_connect(a.outcome);
            let mut entry = json!({
                "address": a.addr.to_string(),
                "status": if c.is_none() { "pass" } else { "fail" },
                "cause": c.as_ref().map(|c| c.cause.as_str()),
                "duration_seconds": (a.elapsed.as_secs_f64() * 1e6).round() / 1e6,
            });
            if let Some(from) = icmp_from(&a.outcome) {
                entry["icmp_from"] = json!(from.to_string());
            }
            entry
        })
        .collect();

    let result = match (ok.is_empty(), failed.first()) {
        (_, None) if !ok.is_empty() => {
            let addrs: Vec<String> = ok.iter().map(|a| a.addr.to_string()).collect();
            HopResult::pass(kind, format!("connected to {}", addrs.join(", ")))
        }
        (true, Some((a, c))) => {
            let detail = if attempts.len() == 1 {
                format!("{}: {}", a.addr, c.detail)
            } else {
                let all: Vec<String> = failed
                    .iter()
                    .map(|(a, c)| format!("{}: {}", a.addr, c.cause.as_str()))
                    .collect();
                format!(
                    "no address connected ({}); first: {}",
                    all.join(", "),
                    c.detail
                )
            };
            HopResult::fail(kind, c.cause, detail).with_hint(c.hint.clone())
        }
        (false, Some((a, c))) => HopResult::new(
            kind,
            Status::Warn,
            format!(
                "{} of {} addresses connected; {}: {}",
                ok.len(),
                attempts.len(),
                a.addr,
                c.detail
            ),
        )
        .with_cause(c.cause)
        .with_hint(format!(
            "some addresses of this name are reachable and some are not: clients will fail \
             intermittently. For the failing one: {}",
            c.hint
        )),
        _ => HopResult::fail(
            kind,
            crate::model::Cause::Internal,
            "no address to connect to",
        ),
    };
    // The sender of the first ICMP error, at the top for scripts and alerts ("who rejected").
    let first_icmp = failed.iter().find_map(|(a, _)| icmp_from(&a.outcome));
    let result = match first_icmp {
        Some(from) => result.with_data("icmp_from", from.to_string()),
        None => result,
    };
    result.with_data("attempts", per_address)
}

/// Hop `tcp`: `port` on each address; on success the value is the reachable addresses.
pub async fn tcp_hop(addrs: &[IpAddr], port: u16, limit: Duration) -> HopOutput<Vec<SocketAddr>> {
    let targets: Vec<SocketAddr> = addrs.iter().map(|ip| SocketAddr::new(*ip, port)).collect();
    let attempts = probe_all(&targets, limit).await;
    let result = hop_result(HopKind::Tcp, &attempts).with_data("port", port);
    let reachable: Vec<SocketAddr> = attempts
        .iter()
        .filter(|a| a.outcome == ConnectOutcome::Connected)
        .map(|a| a.addr)
        .collect();
    HopOutput::ok(result, reachable)
}

/// Records hop `resolve` for `host` (with the reverse lookups when `reverse_dns`), bounded by
/// `budget`: a kind that checks reverse DNS gives it room for several lookups; then hop `route`
/// (the kernel's route to each address, before any packet is sent). The value is the
/// addresses that have a route.
pub async fn resolve_step(
    chain: &mut Chain,
    ctx: &RunContext,
    host: &str,
    reverse_dns: bool,
    budget: Duration,
) -> Option<Vec<IpAddr>> {
    let addrs = chain
        .step_with_timeout(
            HopKind::Resolve,
            budget,
            crate::hops::resolve::resolve(&ctx.resolver, host, reverse_dns, ctx.hop_timeout),
        )
        .await?;
    route_step(chain, ctx, &addrs).await
}

/// Records hop `route`. A `skip` (no route lookup on this platform) does not stop the chain:
/// the addresses go on unchecked.
pub async fn route_step(
    chain: &mut Chain,
    ctx: &RunContext,
    addrs: &[IpAddr],
) -> Option<Vec<IpAddr>> {
    let started = Instant::now();
    let output = crate::hops::route::route_hop(addrs, ctx.cross_zone).await;
    let result = output.result.with_duration(started.elapsed());
    if result.status == Status::Skip {
        chain.record(result);
        return Some(addrs.to_vec());
    }
    if chain.record(result) {
        output.value
    } else {
        None
    }
}

/// Records hop `tcp` to `port` on every address; the first one that connected, if any.
pub async fn connect_step(
    chain: &mut Chain,
    ctx: &RunContext,
    addrs: &[IpAddr],
    port: u16,
) -> Option<SocketAddr> {
    let Some(reachable) = chain
        .step(HopKind::Tcp, tcp_hop(addrs, port, ctx.hop_timeout))
        .await
    else {
        crate::hops::path::trace_after_timeout(chain, ctx).await;
        return None;
    };
    reachable.first().copied()
}

/// What [`reach`] needs to know.
pub struct Reach<'a> {
    pub host: &'a str,
    pub port: u16,
    pub reverse_dns: bool,
    /// The `resolve` hop's bound (see [`resolve_step`]).
    pub resolve_budget: Duration,
}

/// Hops `resolve` then `tcp`: the address a login (or anything after) should use.
pub async fn reach(chain: &mut Chain, ctx: &RunContext, to: &Reach<'_>) -> Option<SocketAddr> {
    let addrs = resolve_step(chain, ctx, to.host, to.reverse_dns, to.resolve_budget).await?;
    connect_step(chain, ctx, &addrs, to.port).await
}

/// The connection a login runs over, to the address [`reach`] found. On failure, the attempt:
/// its [`Attempt::verdict`] is what the `tcp` hop would have said.
pub async fn open(addr: SocketAddr, limit: Duration) -> Result<TcpStream, Attempt> {
    match connect(addr, limit).await {
        (_, Some(stream)) => Ok(stream),
        (attempt, None) => Err(attempt),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Cause;
    use std::io::ErrorKind;

    fn attempt(addr: &str, outcome: ConnectOutcome) -> Attempt {
        Attempt {
            addr: addr.parse().unwrap(),
            outcome,
            elapsed: Duration::from_millis(5),
        }
    }

    #[test]
    fn all_ok_partial_and_none() {
        let ok = attempt("198.18.0.1:1433", ConnectOutcome::Connected);
        let dropped = attempt(
            "198.18.0.2:1433",
            ConnectOutcome::NoReply(Duration::from_secs(1)),
        );
        let refused = attempt(
            "198.18.0.3:1433",
            ConnectOutcome::Error(ErrorKind::ConnectionRefused, Some(111)),
        );

        let r = hop_result(HopKind::Tcp, std::slice::from_ref(&ok));
        assert_eq!((r.status, r.cause), (Status::Pass, None));

        let r = hop_result(HopKind::Tcp, &[ok.clone(), dropped.clone()]);
        assert_eq!((r.status, r.cause), (Status::Warn, Some(Cause::Timeout)));
        assert!(r.detail.contains("1 of 2"), "{}", r.detail);

        let r = hop_result(HopKind::RpcPort, &[refused, dropped]);
        assert_eq!(
            (r.hop, r.status, r.cause),
            (HopKind::RpcPort, Status::Fail, Some(Cause::Refused))
        );
        assert_eq!(r.data["attempts"].as_array().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn loopback_listener_and_closed_port() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open = listener.local_addr().unwrap();
        // A port that was just free: bind, note, close.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let attempts = probe_all(&[open, closed], Duration::from_secs(2)).await;
        assert_eq!(attempts[0].outcome, ConnectOutcome::Connected);
        let r = hop_result(HopKind::Tcp, &attempts[1..]);
        assert_eq!(r.cause, Some(Cause::Refused));
    }
}
