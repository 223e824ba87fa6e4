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
//!   A refused attempt of `tcp` and `rpc_port` also says who sent the reset
//!   ([`crate::hops::reset_origin`]): the target, or a firewall on the path (`reset_by_path`).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use futures::future::join_all;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::chain::{Chain, HopOutput, RunContext};
use crate::classify::{classify_connect, ConnectOutcome, Verdict};
use crate::hops::reset_origin::{self, Answer, ResetOrigin, ResetProbe};
use crate::hops::route::RouteCache;
use crate::model::{Fact, HopKind, HopResult, Status};

/// One connect attempt and what came of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    pub addr: SocketAddr,
    pub outcome: ConnectOutcome,
    pub elapsed: Duration,
    /// The local address the connection used (connected) or would use (the route's source
    /// address): the `source` of a firewall rule that has to let this flow through.
    pub source: Option<IpAddr>,
    /// Who sent the reset, for a refused attempt whose origin was looked at (hops `tcp` and
    /// `rpc_port`); `None` everywhere else.
    pub reset_origin: Option<ResetOrigin>,
}

impl Attempt {
    /// What went wrong, or `None` when it connected.
    pub fn verdict(&self) -> Option<Verdict> {
        match &self.reset_origin {
            // Built directly: a run of 10,000 refused loopback ports pays nothing for origins.
            Some(ResetOrigin::ThisHost) => Some(reset_origin::this_host_verdict()),
            Some(origin) => {
                classify_connect(self.outcome).map(|v| reset_origin::verdict(v, origin))
            }
            None => classify_connect(self.outcome),
        }
    }
}

/// Connects once, bounded by `limit`. Returns the attempt, and the stream when it connected.
pub async fn connect(addr: SocketAddr, limit: Duration) -> (Attempt, Option<TcpStream>) {
    connect_routed(addr, limit, None, None).await
}

/// The part of a hop timeout a refused attempt may spend on finding out who sent the reset (a
/// second connect, and the target's own TTL when not read yet): an ICMP echo that is dropped
/// waits this long. A third keeps the hop well inside its bound, and the early path trace (half
/// a timeout in, see [`crate::hops::path::connect_with_early_trace`]) from starting for nothing.
fn origin_budget(limit: Duration) -> Duration {
    limit / 3
}

/// As [`connect`]; a failed attempt's source address comes from the run's route cache when
/// given (hop `route` has already asked the kernel for this address), else from a UDP socket
/// of its own ([`route_source`]: four more system calls per failed attempt, a tenth of the CPU
/// time of a run of 10,000 refused ports). With the run's reset probe, a refused attempt says
/// who sent the reset, and a connected one is noted (its host's SYN-ACK gives that host's TTL).
async fn connect_routed(
    addr: SocketAddr,
    limit: Duration,
    routes: Option<&RouteCache>,
    resets: Option<&ResetProbe>,
) -> (Attempt, Option<TcpStream>) {
    let started = Instant::now();
    let (outcome, stream, answer) = connect_classified(addr, limit, resets).await;
    let elapsed = started.elapsed();
    let reset_origin = match (resets, outcome) {
        (Some(resets), ConnectOutcome::Connected) => {
            drop(answer);
            resets.saw_open(addr);
            None
        }
        // On Windows a loopback refusal keeps Winsock's own words (WSAECONNREFUSED, which
        // Windows also gives for an ICMP reject): "a reset from this host" would claim more.
        (Some(_), ConnectOutcome::Error(std::io::ErrorKind::ConnectionRefused, _))
            if cfg!(windows) && addr.ip().is_loopback() =>
        {
            None
        }
        // A loopback refusal is answered without the probe; any other, by the probe's future
        // on the heap: in this future's state its 2 KB were copied with every check's future.
        (Some(_), ConnectOutcome::Error(std::io::ErrorKind::ConnectionRefused, _))
            if addr.ip().is_loopback() =>
        {
            Some(ResetOrigin::ThisHost)
        }
        (Some(resets), ConnectOutcome::Error(std::io::ErrorKind::ConnectionRefused, _)) => {
            Some(Box::pin(resets.origin(addr, origin_budget(limit), answer)).await)
        }
        _ => None,
    };
    let source = match (&stream, routes) {
        (Some(s), _) => s.local_addr().ok().map(|a| a.ip()),
        (None, Some(routes)) => match routes.source(addr.ip()) {
            Some(source) => Some(source),
            None => route_source(addr),
        },
        (None, None) => route_source(addr),
    };
    (
        Attempt {
            addr,
            outcome,
            elapsed,
            source,
            reset_origin,
        },
        stream,
    )
}

/// The source address the kernel picks for `to`: a UDP socket's `connect` only looks the route
/// up (no packet is sent), on every OS. Used when the TCP connection itself failed, so that a
/// dropped flow still names the address a firewall rule must allow.
pub fn route_source(to: SocketAddr) -> Option<IpAddr> {
    let any: SocketAddr = if to.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = std::net::UdpSocket::bind(any).ok()?;
    socket.connect(to).ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then_some(ip)
}

/// How a connect ended, its stream when it connected, and the watch for its answer that
/// `resets` set up (never outside Linux).
type Classified = (ConnectOutcome, Option<TcpStream>, Option<Answer>);

#[cfg(not(target_os = "linux"))]
async fn connect_classified(
    addr: SocketAddr,
    limit: Duration,
    _resets: Option<&ResetProbe>,
) -> Classified {
    match tokio::time::timeout(limit, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => (ConnectOutcome::Connected, Some(stream), None),
        Ok(Err(e)) => (ConnectOutcome::from_io_error(&e), None, None),
        Err(_) => (ConnectOutcome::NoReply(limit), None, None),
    }
}

/// On Linux the socket asks for ICMP errors to be queued (`IP_RECVERR`), and a failed connect
/// reads the ICMP type and code that caused it: errno alone folds "administratively prohibited"
/// into "host unreachable".
///
/// The connect is issued on the socket directly rather than through tokio's `TcpSocket::connect`,
/// which would consume the socket (the error queue then had to be read through a `dup` of it)
/// and always register it with epoll. Here the socket stays ours until it connects, and an
/// answer the kernel already has when `connect` returns (a peer on this host refuses within the
/// call) is read straight away: no epoll registration, no wake-up, four system calls fewer per
/// refused port (10,000 refused loopback ports: a quarter of the run's CPU time was epoll and
/// descriptor bookkeeping).
#[cfg(target_os = "linux")]
async fn connect_classified(
    addr: SocketAddr,
    limit: Duration,
    resets: Option<&ResetProbe>,
) -> Classified {
    use std::os::fd::{FromRawFd, IntoRawFd};

    let socket = match if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    } {
        Ok(s) => s,
        Err(e) => return (ConnectOutcome::from_io_error(&e), None, None),
    };
    let answer = resets.and_then(|r| r.expect_answer(&socket, addr));
    let errqueue = crate::hops::errqueue::set_recverr(&socket, addr.is_ipv6());
    // What a failed attempt says: the queued ICMP error if there is one, else errno.
    let failed = |fd: &dyn std::os::fd::AsRawFd, e: &std::io::Error| {
        errqueue
            .then(|| crate::hops::errqueue::read(&fd.as_raw_fd(), addr.ip()))
            .flatten()
            .unwrap_or_else(|| ConnectOutcome::from_io_error(e))
    };
    let sock = socket2::SockRef::from(&socket);
    match sock.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {
            // Already answered (a refusal from this host arrives within the call)?
            match sock.take_error() {
                Ok(None) => {}
                Ok(Some(e)) | Err(e) => return (failed(&socket, &e), None, answer),
            }
        }
        Err(e) => return (failed(&socket, &e), None, answer),
    }
    // SAFETY: the descriptor comes from `into_raw_fd`, so it is a valid, open TCP socket owned
    // by nothing else; it is non-blocking (tokio made it so).
    let std_stream = unsafe { std::net::TcpStream::from_raw_fd(socket.into_raw_fd()) };
    let stream = match TcpStream::from_std(std_stream) {
        Ok(s) => s,
        Err(e) => return (ConnectOutcome::from_io_error(&e), None, answer),
    };
    // Writable means the handshake ended; SO_ERROR says how (what tokio's own connect does).
    match tokio::time::timeout(limit, stream.writable()).await {
        Err(_) => (ConnectOutcome::NoReply(limit), None, None),
        Ok(Err(e)) => (failed(&stream, &e), None, answer),
        Ok(Ok(())) => match stream.take_error() {
            Ok(None) => (ConnectOutcome::Connected, Some(stream), None),
            Ok(Some(e)) | Err(e) => (failed(&stream, &e), None, answer),
        },
    }
}

/// The device that sent the ICMP error an attempt ended with, if it did.
pub fn icmp_from(outcome: &ConnectOutcome) -> Option<IpAddr> {
    match outcome {
        ConnectOutcome::Icmp { from, .. } => *from,
        _ => None,
    }
}

/// Tries every address concurrently and closes the connections straight away.
pub async fn probe_all(addrs: &[SocketAddr], limit: Duration) -> Vec<Attempt> {
    probe_all_routed(addrs, limit, None, None).await
}

/// As [`probe_all`], with the run's route cache for the source of failed attempts and its
/// reset probe for the origin of refusals.
pub async fn probe_all_routed(
    addrs: &[SocketAddr],
    limit: Duration,
    routes: Option<&RouteCache>,
    resets: Option<&ResetProbe>,
) -> Vec<Attempt> {
    probe_all_keeping(addrs, limit, routes, resets, false)
        .await
        .0
}

/// As [`probe_all_routed`]; with `keep`, the first connection made (in address order) is
/// handed back open instead of closed (hop `idle` holds it).
async fn probe_all_keeping(
    addrs: &[SocketAddr],
    limit: Duration,
    routes: Option<&RouteCache>,
    resets: Option<&ResetProbe>,
    keep: bool,
) -> (Vec<Attempt>, Option<TcpStream>) {
    let results = match addrs {
        // One address (a literal, or a name with one): awaited in place. `join_all` would
        // allocate a list of the (large) connect future and move it there, for every check.
        [only] => vec![connect_routed(*only, limit, routes, resets).await],
        _ => {
            join_all(
                addrs
                    .iter()
                    .map(|a| async move { connect_routed(*a, limit, routes, resets).await }),
            )
            .await
        }
    };
    let mut kept = None;
    let attempts = results
        .into_iter()
        .map(|(attempt, stream)| {
            if keep && kept.is_none() {
                kept = stream;
            }
            attempt
        })
        .collect();
    (attempts, kept)
}

/// Pure: the hop result for a set of attempts at one logical endpoint.
/// All connected -> pass; some -> warn with the first failure's cause; none -> fail.
pub fn hop_result(kind: HopKind, attempts: &[Attempt]) -> HopResult {
    let ok: Vec<&Attempt> = attempts
        .iter()
        .filter(|a| a.outcome == ConnectOutcome::Connected)
        .collect();
    // Each attempt's verdict, once (a reset's origin makes it more than a table lookup).
    let verdicts: Vec<Option<Verdict>> = attempts.iter().map(Attempt::verdict).collect();
    let failed: Vec<(&Attempt, &Verdict)> = attempts
        .iter()
        .zip(&verdicts)
        .filter_map(|(a, v)| v.as_ref().map(|v| (a, v)))
        .collect();
    // Typed facts (see `crate::hop_data`): this runs for every check, and the report holds
    // them all until it is written. Keys and order as the JSON map this once was.
    let per_address: Vec<Fact> = attempts
        .iter()
        .zip(&verdicts)
        .map(|(a, c)| {
            let mut entry = vec![
                ("address", Fact::display(&a.addr)),
                ("source", Fact::display_or_null(a.source.as_ref())),
                (
                    "status",
                    Fact::Static(if c.is_none() { "pass" } else { "fail" }),
                ),
                (
                    "cause",
                    c.as_ref()
                        .map_or(Fact::Null, |c| Fact::Static(c.cause.as_str())),
                ),
                (
                    "duration_seconds",
                    Fact::F64((a.elapsed.as_secs_f64() * 1e6).round() / 1e6),
                ),
            ];
            if let Some(from) = icmp_from(&a.outcome) {
                entry.push(("icmp_from", Fact::display(&from)));
            }
            if let Some(origin) = &a.reset_origin {
                entry.extend(reset_origin::facts(origin));
            }
            Fact::object(entry)
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
    let result = match attempts.iter().find_map(|a| a.source) {
        Some(source) => result.with_fact("source", Fact::display(&source)),
        None => result,
    };
    // The sender of the first ICMP error, at the top for scripts and alerts ("who rejected").
    let first_icmp = failed.iter().find_map(|(a, _)| icmp_from(&a.outcome));
    let mut result = match first_icmp {
        Some(from) => result.with_fact("icmp_from", Fact::display(&from)),
        None => result,
    };
    // Who sent the first failed attempt's reset, at the top too (`reset_by_path` and its TTLs).
    if let Some(origin) = failed.first().and_then(|(a, _)| a.reset_origin.as_ref()) {
        for (key, value) in reset_origin::facts(origin) {
            result = result.with_fact(key, value);
        }
    }
    result.with_fact("attempts", per_address)
}

/// Hop `tcp`: `port` on each address; on success the value is the reachable addresses.
pub async fn tcp_hop(
    addrs: &[IpAddr],
    port: u16,
    limit: Duration,
    ctx: &RunContext,
) -> HopOutput<Vec<SocketAddr>> {
    let out = tcp_hop_keeping(addrs, port, limit, ctx, false).await;
    HopOutput {
        result: out.result,
        value: out.value.map(|(reachable, _)| reachable),
    }
}

/// As [`tcp_hop`]; with `keep`, also the first connection made, still open.
async fn tcp_hop_keeping(
    addrs: &[IpAddr],
    port: u16,
    limit: Duration,
    ctx: &RunContext,
    keep: bool,
) -> HopOutput<(Vec<SocketAddr>, Option<TcpStream>)> {
    let targets: Vec<SocketAddr> = addrs.iter().map(|ip| SocketAddr::new(*ip, port)).collect();
    let (attempts, kept) =
        probe_all_keeping(&targets, limit, Some(&ctx.routes), Some(&ctx.resets), keep).await;
    let result = hop_result(HopKind::Tcp, &attempts).with_fact("port", port);
    let reachable: Vec<SocketAddr> = attempts
        .iter()
        .filter(|a| a.outcome == ConnectOutcome::Connected)
        .map(|a| a.addr)
        .collect();
    HopOutput::ok(result, (reachable, kept))
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
    route_step(chain, ctx, &addrs)
}

/// Runs hop `route` (the judgement is `hops::route`'s): looks up the route to every address
/// (inline: see [`crate::hops::route::RouteCache`]). The value is the addresses that have a
/// route (the ones worth connecting to).
pub fn route_hop(
    addrs: &[IpAddr],
    cross_zone: bool,
    cache: &crate::hops::route::RouteCache,
) -> HopOutput<Vec<IpAddr>> {
    if let [addr] = addrs {
        let (result, routed) = cache.single_address_hop(*addr, cross_zone);
        let routed = if routed { vec![*addr] } else { Vec::new() };
        return HopOutput::ok(result, routed);
    }
    let mut routes = Vec::with_capacity(addrs.len());
    for addr in addrs {
        routes.push((*addr, cache.lookup(*addr)));
    }
    let routed: Vec<IpAddr> = routes
        .iter()
        .filter(|(_, r)| !matches!(r, Err(crate::hops::route::RouteError::NoRoute { .. })))
        .map(|(a, _)| *a)
        .collect();
    HopOutput::ok(crate::hops::route::hop_result(&routes, cross_zone), routed)
}

/// Records hop `route`. A `skip` (no route lookup on this platform) does not stop the chain:
/// the addresses go on unchecked.
pub fn route_step(chain: &mut Chain, ctx: &RunContext, addrs: &[IpAddr]) -> Option<Vec<IpAddr>> {
    let started = Instant::now();
    let output = route_hop(addrs, ctx.cross_zone, &ctx.routes);
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
    // One address: its trace can start while the connect still waits (see the function).
    let target = match addrs {
        [only] => Some(SocketAddr::new(*only, port)),
        _ => None,
    };
    let reachable = crate::hops::traced_connect::connect_with_early_trace(
        chain,
        ctx,
        HopKind::Tcp,
        target,
        // On the heap: each layer it passes through (the early trace, the chain's step, its
        // timeout) keeps a copy of it in its state, all copied with every check's future.
        Box::pin(tcp_hop(addrs, port, ctx.hop_timeout, ctx)),
    )
    .await?;
    reachable.first().copied()
}

/// As [`connect_step`], keeping the first connection made open: the address it went to and
/// the stream (hop `idle` leaves it idle, then uses it).
pub async fn connect_step_keeping(
    chain: &mut Chain,
    ctx: &RunContext,
    addrs: &[IpAddr],
    port: u16,
) -> Option<(SocketAddr, TcpStream)> {
    let target = match addrs {
        [only] => Some(SocketAddr::new(*only, port)),
        _ => None,
    };
    let (_, kept) = crate::hops::traced_connect::connect_with_early_trace(
        chain,
        ctx,
        HopKind::Tcp,
        target,
        // On the heap, as in `connect_step`.
        Box::pin(tcp_hop_keeping(addrs, port, ctx.hop_timeout, ctx, true)),
    )
    .await?;
    let stream = kept?;
    let peer = stream.peer_addr().ok()?;
    Some((peer, stream))
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
            source: None,
            outcome,
            elapsed: Duration::from_millis(5),
            reset_origin: None,
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
        // Both the connection that was made and the one that failed name their source address.
        let loopback: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(attempts[0].source, Some(loopback));
        assert_eq!(attempts[1].source, Some(loopback));
        assert_eq!(r.data["source"], "127.0.0.1");
        assert_eq!(r.data["attempts"][0]["source"], "127.0.0.1");
    }
}
#[cfg(test)]
mod future_size {
    use super::*;

    /// A check's future is moved (copied) several times as it is built and started, and every
    /// layer of `async fn` keeps its own copy of what it awaits: the connect's reset-origin
    /// probe, the early path trace and the DNS lookups, kept inline, made a tcp check's future
    /// some 20 KB, and copying it a quarter of the CPU time of a run of 10,000 refused ports
    /// (issue 26). They are boxed where they are used; this keeps them so.
    #[test]
    fn a_tcp_checks_future_stays_small() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let limit = Duration::from_secs(1);
            let resolver = crate::resolver::DnsResolver::from_system(limit);
            let ctx = RunContext::new(limit, std::sync::Arc::new(resolver), true);
            let mut chain = Chain::new(vec![], limit);
            let to = Reach {
                host: "127.0.0.1",
                port: 1,
                reverse_dns: false,
                resolve_budget: limit,
            };
            let reach_size = std::mem::size_of_val(&reach(&mut chain, &ctx, &to));
            assert!(reach_size < 4096, "reach: {reach_size} bytes");
            let target = crate::hops::tcp::TcpTarget {
                host: "127.0.0.1".into(),
                port: 1,
                reverse_dns: false,
                hold: None,
            };
            let run_size = std::mem::size_of_val(&crate::hops::kind::Kind::run(&target, &ctx));
            assert!(run_size < 4096, "TcpTarget::run: {run_size} bytes");
        });
    }
}
