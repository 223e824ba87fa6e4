//! The `mssql` hop chain: resolve -> (sqlbrowser for a named instance) -> tcp -> login ->
//! tx_local -> tx_distributed (-> idle with `hold=DUR`), over TDS with tiberius. Every network step runs in its own task
//! under a timeout, so neither a hung server nor a driver panic on hostile bytes can hang the tool.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Map, Value};
use tiberius::{AuthMethod, Client, Config, EncryptionLevel};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::compat::{Compat, TokioAsyncWriteCompatExt};

use super::classify::{classify_failure, failure_from_tiberius, tds_version_name, Failure};
use super::enlist;
use super::kerberos;
use super::server_info;
use super::sniff::{self, Observed, Sniffer};
use super::spec::{self, Auth, Encrypt, MssqlTarget, TxMode};
use super::ssrp;
use crate::chain::{Chain, HopOutput, RunContext};
use crate::hops::connect::{self, connect_step, resolve_step};
use crate::hops::idle::{self, Death};
use crate::model::{Cause, HopKind, HopResult, Status};
use crate::secret::{self, Secret};

type Conn = Client<Compat<Sniffer<TcpStream>>>;

const APP_NAME: &str = "dtcprobe";

/// The hops a target plans, in order.
pub fn planned_hops(t: &MssqlTarget) -> Vec<HopKind> {
    let mut v = vec![HopKind::Resolve, HopKind::Route];
    if t.needs_browser() {
        v.push(HopKind::Sqlbrowser);
    }
    v.push(HopKind::Tcp);
    v.extend(kerberos::planned(t));
    v.push(HopKind::Login);
    if t.tx != TxMode::None {
        v.push(HopKind::TxLocal);
    }
    if t.tx == TxMode::Distributed {
        v.push(HopKind::TxDistributed);
    }
    // After the last hop that uses the login's session (tx_enlist opens its own).
    if t.hold.is_some() {
        v.push(HopKind::Idle);
    }
    if t.tx == TxMode::Enlist {
        v.push(HopKind::TxEnlist);
    }
    v
}

/// Runs the whole chain. Bounded: each hop has its own limit (login and transactions get two hop
/// timeouts, being several round trips), so the chain ends within about 8 hop timeouts.
pub async fn run(t: &MssqlTarget, ctx: &RunContext) -> Vec<HopResult> {
    let limit = ctx.hop_timeout;
    let mut chain = Chain::new(planned_hops(t), limit);

    // Ask for the password first (a prompt should not eat into a hop's time); a missing one is
    // reported on the login hop, after the network hops have said what they can.
    let password = match t.auth {
        Auth::Integrated => Ok(None),
        // Without a user, Kerberos takes the credential cache (kinit).
        Auth::Kerberos if t.user.is_none() => Ok(None),
        _ => secret::obtain(t.password.as_ref(), &t.label())
            .await
            .map(Some),
    };

    let resolve_budget = if t.reverse_dns { limit * 4 } else { limit };
    let Some(addrs) = resolve_step(&mut chain, ctx, &t.host, t.reverse_dns, resolve_budget).await
    else {
        return chain.finish();
    };

    let port = if t.needs_browser() {
        let instance = t.instance.clone().unwrap_or_default();
        match chain
            .step(HopKind::Sqlbrowser, sqlbrowser(&addrs, &instance, limit))
            .await
        {
            Some(p) => p,
            None => return chain.finish(),
        }
    } else {
        t.port.unwrap_or(spec::DEFAULT_PORT)
    };

    let Some(addr) = connect_step(&mut chain, ctx, &addrs, port).await else {
        return chain.finish();
    };

    let password = match password {
        Ok(p) => p,
        Err(e) => {
            chain.record(
                HopResult::fail(HopKind::Login, Cause::Config, e.to_string())
                    .with_hint("dtcprobe takes passwords only from --password-file, a config password_env or password_file, or a prompt on a terminal"),
            );
            return chain.finish();
        }
    };

    let krb_ccache = if t.auth == Auth::Kerberos {
        match kerberos::before_login(&mut chain, ctx, t, addr, password.as_ref()).await {
            Some(ready) => ready.ccache,
            None => return chain.finish(),
        }
    } else {
        None
    };

    // tx_enlist logs in again on its own TDS session.
    let enlist_password = if t.tx == TxMode::Enlist {
        password.clone()
    } else {
        None
    };
    let Some(mut conn) = chain
        .step_with_timeout(
            HopKind::Login,
            limit * 2,
            kerberos::with_ccache(krb_ccache, login_hop(t, addr, password, limit * 2)),
        )
        .await
    else {
        return chain.finish();
    };

    if t.tx != TxMode::None {
        let marker = marker();
        let out = chain
            .step_with_timeout(
                HopKind::TxLocal,
                limit * 2,
                tx_hop(HopKind::TxLocal, conn, None, marker, limit * 2),
            )
            .await;
        match out {
            Some(c) => conn = c,
            None => return chain.finish(),
        }
    }
    if t.tx == TxMode::Distributed {
        let marker = marker();
        let out = chain
            .step_with_timeout(
                HopKind::TxDistributed,
                limit * 2,
                tx_hop(
                    HopKind::TxDistributed,
                    conn,
                    t.linked_server.clone(),
                    marker,
                    limit * 2,
                ),
            )
            .await;
        match out {
            Some(c) => conn = c,
            None => return chain.finish(),
        }
    }
    let conn = match t.hold {
        // Bounded: the hold, then one round trip. Whatever it finds, tx_enlist below still runs:
        // it opens a session of its own.
        Some(hold) => {
            chain
                .step_with_timeout(
                    HopKind::Idle,
                    hold + limit,
                    idle_hop(conn, addr, hold, limit),
                )
                .await
        }
        None => Some(conn),
    };
    if let Some(conn) = conn {
        // A polite goodbye, bounded; the server cleans up on disconnect anyway.
        let _ = tokio::time::timeout(Duration::from_millis(500), conn.close()).await;
    }
    if t.tx == TxMode::Enlist {
        // Four hop timeouts: two logins' worth of round trips plus MSDTC's export and import.
        let budget = limit * 4;
        let result = match enlist::this_host_dtc() {
            Err(reason) => HopResult::unsupported(HopKind::TxEnlist, reason)
                .with_hint(enlist::HINT_RUN_ON_WINDOWS),
            Ok(dtc) => enlist::run_enlist(t, addr, enlist_password, dtc, &marker(), budget).await,
        };
        chain.record(result);
    }
    chain.finish()
}

/// A value unique to this probe, inserted and read back by the transaction hops.
fn marker() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("dtcprobe-{}-{nanos}", std::process::id())
}

/// Runs `fut` in its own task under `limit`: a timeout aborts it, a panic inside the driver
/// (hostile bytes) becomes a protocol error instead of taking the tool down.
async fn guarded<T, F>(limit: Duration, what: &str, fut: F) -> Result<T, Failure>
where
    T: Send + 'static,
    F: Future<Output = Result<T, Failure>> + Send + 'static,
{
    /// Aborts the task if this future is dropped (e.g. cut off by the chain's own timeout).
    struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);
    impl<T> Drop for AbortOnDrop<T> {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let mut handle = AbortOnDrop(tokio::spawn(kerberos::carry_ccache(fut)));
    match tokio::time::timeout(limit, &mut handle.0).await {
        Ok(Ok(r)) => r,
        Ok(Err(join)) => Err(Failure::Protocol(format!(
            "the TDS driver {} while {what}",
            if join.is_panic() {
                "panicked on the server's data"
            } else {
                "was cancelled"
            }
        ))),
        Err(_) => {
            handle.0.abort();
            Err(Failure::Timeout(format!(
                "no answer within {} while {what}",
                humantime::format_duration(limit)
            )))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// sqlbrowser

async fn sqlbrowser(addrs: &[IpAddr], instance: &str, limit: Duration) -> HopOutput<u16> {
    let Some(ip) = addrs.first() else {
        return HopOutput::stop(HopResult::fail(
            HopKind::Sqlbrowser,
            Cause::Internal,
            "no address to ask",
        ));
    };
    let to = SocketAddr::new(*ip, ssrp::BROWSER_PORT);
    let base = |r: HopResult| {
        r.with_data("address", to.to_string())
            .with_data("instance", instance)
    };
    match ssrp::query(to, instance, limit).await {
        ssrp::QueryOutcome::Answer(d) => {
            let r = base(browser_answer(&d, instance));
            match (r.status, r.data.get("tcp_port").and_then(Value::as_u64)) {
                (Status::Pass, Some(p)) => HopOutput::ok(r, p as u16),
                _ => HopOutput::stop(r),
            }
        }
        ssrp::QueryOutcome::Refused => HopOutput::stop(base(
            HopResult::fail(
                HopKind::Sqlbrowser,
                Cause::Refused,
                format!("{to}: UDP port unreachable"),
            )
            .with_hint(
                "nothing listens on UDP 1434 there: the SQL Server Browser service is stopped. \
                     Start it, or put the instance's static TCP port in the target \
                     (mssql://user@host:PORT/db)",
            ),
        )),
        ssrp::QueryOutcome::NoAnswer => HopOutput::stop(base(
            HopResult::fail(
                HopKind::Sqlbrowser,
                Cause::Timeout,
                format!(
                    "{to}: no answer to 3 requests within {}",
                    humantime::format_duration(limit)
                ),
            )
            .with_hint(
                "UDP 1434 is blocked between the zones (firewalls often open only TCP), the SQL \
                 Server Browser is not running, or the instance name is wrong (the Browser stays \
                 silent for unknown instances). Opening UDP 1434, or using the instance's static \
                 port in the target, avoids the lookup",
            ),
        )),
        ssrp::QueryOutcome::Error(e) => {
            let cause = match e.kind() {
                std::io::ErrorKind::PermissionDenied => Cause::Prohibited,
                std::io::ErrorKind::NetworkUnreachable | std::io::ErrorKind::HostUnreachable => {
                    Cause::Unreachable
                }
                _ => Cause::Internal,
            };
            HopOutput::stop(base(HopResult::fail(
                HopKind::Sqlbrowser,
                cause,
                format!("{to}: {e}"),
            )))
        }
    }
}

/// Pure: the hop result for a Browser answer.
pub fn browser_answer(datagram: &[u8], instance: &str) -> HopResult {
    let list = match ssrp::parse_response(datagram) {
        Ok(l) => l,
        Err(e) => {
            return HopResult::fail(
                HopKind::Sqlbrowser,
                Cause::ProtocolError,
                format!("bad SQL Browser answer: {e}"),
            )
            .with_hint("something other than the SQL Server Browser answers on UDP 1434")
        }
    };
    let names: Vec<&str> = list.iter().map(|i| i.instance_name.as_str()).collect();
    let Some(info) = ssrp::find_instance(&list, instance) else {
        return HopResult::fail(
            HopKind::Sqlbrowser,
            Cause::Config,
            format!(
                "instance `{instance}` is not among the instances the Browser lists: {}",
                names.join(", ")
            ),
        )
        .with_hint("check the instance name in the target")
        .with_data("instances", names);
    };
    let r = match info.tcp_port {
        Some(p) => HopResult::pass(
            HopKind::Sqlbrowser,
            format!("instance {} of {} listens on TCP {p}", info.instance_name, info.server_name),
        )
        .with_data("tcp_port", p),
        None => HopResult::fail(
            HopKind::Sqlbrowser,
            Cause::Refused,
            format!("instance {} does not listen on TCP (the Browser lists no tcp port)", info.instance_name),
        )
        .with_hint(
            "the TCP/IP protocol is disabled for this instance: enable it in SQL Server Configuration \
             Manager > Network Configuration > Protocols, and restart the instance",
        ),
    };
    r.with_data("server_name", info.server_name.clone())
        .with_data("version", info.version.clone())
        .with_data("clustered", info.is_clustered)
}

// ---------------------------------------------------------------------------------------------
// login

/// What the login learned, for the hop data.
#[derive(Debug, Default)]
struct LoginFacts {
    login_time: Duration,
    product_version: Option<String>,
    edition: Option<String>,
    server_name: Option<String>,
    database: Option<String>,
    queried_tds_version: Option<u32>,
}

fn encryption_level(e: Encrypt) -> EncryptionLevel {
    match e {
        Encrypt::None => EncryptionLevel::NotSupported,
        Encrypt::Off => EncryptionLevel::Off,
        Encrypt::On => EncryptionLevel::On,
        Encrypt::Required => EncryptionLevel::Required,
        Encrypt::Strict => EncryptionLevel::Strict,
    }
}

/// The byte a client sends in PRELOGIN for this setting (for the negotiation table).
fn encryption_byte(e: Encrypt) -> u8 {
    match e {
        Encrypt::None => 2,
        Encrypt::Off => 0,
        Encrypt::On => 1,
        Encrypt::Required => 3,
        Encrypt::Strict => 1,
    }
}

fn build_config(t: &MssqlTarget, port: u16, password: Option<&Secret>) -> Result<Config, Failure> {
    let mut c = Config::new();
    c.host(&t.host);
    c.port(port);
    if let Some(db) = &t.database {
        c.database(db);
    }
    if let Some(i) = &t.instance {
        c.instance_name(i);
    }
    c.application_name(APP_NAME);
    c.encryption(encryption_level(t.encrypt));
    // As in Microsoft's drivers (ODBC 18, Microsoft.Data.SqlClient, tedious), strict mode ignores
    // TrustServerCertificate: TDS 8 always validates the server's certificate.
    if t.trust_server_certificate && t.encrypt != Encrypt::Strict {
        c.trust_cert();
    }
    let user = t.user.clone().unwrap_or_default();
    let auth = match t.auth {
        Auth::Sql => AuthMethod::sql_server(user, password.map(Secret::expose).unwrap_or("")),
        #[cfg(windows)]
        Auth::Windows => AuthMethod::windows(user, password.map(Secret::expose).unwrap_or("")),
        #[cfg(windows)]
        Auth::Integrated => AuthMethod::Integrated,
        Auth::Kerberos => kerberos::auth_method()?,
        #[cfg(not(windows))]
        Auth::Windows | Auth::Integrated => {
            return Err(Failure::Protocol(
                "Windows authentication is only available in the Windows build".into(),
            ))
        }
    };
    c.authentication(auth);
    Ok(c)
}

/// The login, with what MS-TDS and Microsoft's drivers do that tiberius does not:
/// - `encrypt=off` against a server without TLS (PRELOGIN answer ENCRYPT_NOT_SUP) logs in
///   unencrypted (MS-TDS 2.2.6.5: client OFF + server NOT_SUP = no encryption); tiberius 0.13
///   negotiates TLS there instead (its `negotiated_encryption` maps that pair to On), so the
///   attempt fails before LOGIN7 is sent and is repeated once as `EncryptionLevel::NotSupported`.
/// - a routing ENVCHANGE (Azure SQL "redirect" policy, availability-group read-only routing) is
///   followed once, to the host and port the server names, as Microsoft's drivers do.
async fn login_hop(
    t: &MssqlTarget,
    addr: SocketAddr,
    password: Option<Secret>,
    limit: Duration,
) -> HopOutput<Conn> {
    let started = Instant::now();
    let mut target = t.clone();
    let mut addr = addr;
    let mut note: Option<String> = None;
    for _attempt in 0..3 {
        let remaining = limit.saturating_sub(started.elapsed());
        let config = match build_config(&target, addr.port(), password.as_ref()) {
            Ok(c) => c,
            Err(f) => return HopOutput::stop(failure_result(HopKind::Login, &f)),
        };
        let (observed, outcome) = login_attempt(&target, addr, config, remaining).await;
        match outcome {
            Err(AttemptFailure::Failed(Failure::Routing { host, port }))
                if note.as_deref().is_none_or(|n| !n.contains("redirected")) =>
            {
                let to = match resolve_redirect(&host, port, remaining).await {
                    Ok(a) => a,
                    Err(f) => {
                        let mut r = login_fail(t, addr, &observed, &f);
                        r.detail = format!(
                            "the server redirected the login to {host}:{port}, which could not be \
                             reached: {}",
                            r.detail
                        );
                        return HopOutput::stop(
                            r.with_data("redirected_to", format!("{host}:{port}")),
                        );
                    }
                };
                note = Some(format!("redirected by {addr} to {host}:{port} ({to})"));
                target.host = host;
                addr = to;
            }
            Err(AttemptFailure::Failed(ref f))
                if t.encrypt == Encrypt::Off
                    && target.encrypt == Encrypt::Off
                    && observed.prelogin.as_ref().and_then(|p| p.encryption) == Some(2)
                    && !matches!(f, Failure::Server { .. }) =>
            {
                // The server has no TLS: what MS-TDS prescribes for encrypt=off is no encryption.
                target.encrypt = Encrypt::None;
            }
            other => {
                let mut out = finish_login(t, addr, &observed, other);
                if let Some(n) = &note {
                    out.result.detail = format!("{}; {n}", out.result.detail);
                    out.result = out
                        .result
                        .clone()
                        .with_data("redirected_to", format!("{}:{}", target.host, addr.port()));
                }
                return out;
            }
        }
    }
    HopOutput::stop(
        HopResult::fail(
            HopKind::Login,
            Cause::ProtocolError,
            "the server redirected the login more than once",
        )
        .with_hint("a redirect loop between gateways: check the server's routing configuration"),
    )
}

/// Resolves a redirect target (bounded by the hop's remaining time) to its first address.
async fn resolve_redirect(host: &str, port: u16, limit: Duration) -> Result<SocketAddr, Failure> {
    match tokio::time::timeout(limit, tokio::net::lookup_host((host, port))).await {
        Ok(Ok(mut addrs)) => addrs
            .next()
            .ok_or_else(|| Failure::Closed(format!("{host} has no address"))),
        Ok(Err(e)) => Err(Failure::Closed(format!("resolving {host}: {e}"))),
        Err(_) => Err(Failure::Timeout(format!("resolving {host} took too long"))),
    }
}

enum AttemptFailure {
    /// The login failed.
    Failed(Failure),
    /// LOGINACK arrived, then the first query failed.
    AfterLogin(Failure),
}

async fn login_attempt(
    t: &MssqlTarget,
    addr: SocketAddr,
    config: Config,
    limit: Duration,
) -> (Observed, Result<(Conn, LoginFacts), AttemptFailure>) {
    let seen: Arc<Mutex<Vec<u8>>> = Arc::new(Mutex::new(Vec::new()));
    let seen_task = seen.clone();
    // Set once LOGINACK arrived, so a hang afterwards is told apart from a hang in the login.
    let logged_in = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let logged_in_task = logged_in.clone();
    let connect_limit = limit;
    let hold = t.hold.is_some();
    let outcome = guarded(limit, "logging in", async move {
        let started = Instant::now();
        let tcp = connect::open(addr, connect_limit)
            .await
            .map_err(|attempt| match attempt.verdict() {
                Some(v) => Failure::Connect(v),
                None => Failure::Closed(format!("TCP connect to {addr} failed")),
            })?;
        let _ = tcp.set_nodelay(true);
        if hold {
            // Off, whatever the system default: a keepalive during the hold would refresh the
            // firewall's idle timer and hide the expiry hop `idle` looks for.
            socket2::SockRef::from(&tcp)
                .set_keepalive(false)
                .map_err(|e| Failure::Closed(format!("cannot turn TCP keepalive off: {e}")))?;
        }
        let sniffer = Sniffer::new(tcp, seen_task);
        let mut client = Client::connect(config, sniffer.compat_write())
            .await
            .map_err(|e| failure_from_tiberius(&e))?;
        logged_in_task.store(true, std::sync::atomic::Ordering::SeqCst);
        let mut facts = LoginFacts {
            login_time: started.elapsed(),
            ..Default::default()
        };
        server_facts(&mut client, &mut facts).await?;
        Ok((client, facts))
    })
    .await;

    let observed = seen.lock().map(|b| sniff::analyze(&b)).unwrap_or_default();
    let outcome = match outcome {
        Ok(v) => Ok(v),
        Err(f) if logged_in.load(std::sync::atomic::Ordering::SeqCst) => {
            Err(AttemptFailure::AfterLogin(f))
        }
        Err(f) => Err(AttemptFailure::Failed(refine_failure(
            t, addr, &observed, f,
        ))),
    };
    (observed, outcome)
}

/// Pure: what the byte stream says about a failure tiberius reported in its own terms.
fn refine_failure(t: &MssqlTarget, addr: SocketAddr, observed: &Observed, f: Failure) -> Failure {
    if let Some(m) = no_tls_first(t, observed, &f) {
        return Failure::NoTlsFirst(m.into());
    }
    match f {
        Failure::InstanceMismatch { instance, .. } => Failure::InstanceMismatch {
            instance: t.instance.clone().unwrap_or(instance),
            port: addr.port(),
        },
        // Closed (or reset) after a PRELOGIN answer that agreed on TLS, before the server
        // finished its side of the handshake: the server dropped the TLS handshake.
        Failure::Closed(m) if tls_was_agreed(t, observed) && !observed.tls_server_finished => {
            Failure::TlsReset(m)
        }
        other => other,
    }
}

/// Under `encrypt=strict` the ClientHello goes first: a TDS packet back (the bytes then read as
/// a PRELOGIN answer), or a hang-up before the server sent a byte, is a server without TDS 8,
/// whatever rustls made of it ("corrupt message", "handshake eof"). The same reading as
/// `tx_enlist`'s own session. Pure.
fn no_tls_first(t: &MssqlTarget, observed: &Observed, f: &Failure) -> Option<&'static str> {
    if t.encrypt != Encrypt::Strict {
        return None;
    }
    let transport = matches!(
        f,
        Failure::Tls(_) | Failure::TlsReset(_) | Failure::Closed(_) | Failure::Protocol(_)
    );
    if !transport {
        return None;
    }
    if observed.prelogin.is_some() {
        Some("the server answered the TLS ClientHello with a TDS 7 reply packet (a PRELOGIN answer in the clear)")
    } else if observed.bytes == 0 && !matches!(f, Failure::Protocol(_)) {
        Some("the server closed the connection before answering the TLS ClientHello")
    } else {
        None
    }
}

/// Whether the PRELOGIN exchange agreed on a TLS handshake (TDS 7.x), or the client started
/// one first (strict).
fn tls_was_agreed(t: &MssqlTarget, observed: &Observed) -> bool {
    if t.encrypt == Encrypt::Strict {
        return observed.prelogin.is_none();
    }
    match observed.prelogin.as_ref().and_then(|p| p.encryption) {
        Some(server) => sniff::negotiated(encryption_byte(t.encrypt), server) != "none",
        None => false,
    }
}

fn finish_login(
    t: &MssqlTarget,
    addr: SocketAddr,
    observed: &Observed,
    outcome: Result<(Conn, LoginFacts), AttemptFailure>,
) -> HopOutput<Conn> {
    match outcome {
        Ok((client, facts)) => HopOutput::ok(login_pass(t, addr, observed, &facts), client),
        Err(AttemptFailure::Failed(_)) if observed.tds_version.is_some_and(older_than_tds72) => {
            HopOutput::stop(login_unsupported(t, addr, observed))
        }
        Err(AttemptFailure::Failed(f)) => HopOutput::stop(login_fail(t, addr, observed, &f)),
        Err(AttemptFailure::AfterLogin(f)) => {
            let mut r = login_fail(t, addr, observed, &f);
            // The LOGINACK was read: its TDS version is known even though no query answered
            // (a real SQL Server 2008 / 2017 login reply replayed alone shows it).
            if let Some(v) = observed.tds_version {
                r = r.with_data("tds_version", tds_version_name(v));
            }
            {
                r.detail = format!(
                    "the login succeeded (LOGINACK received), then the first query failed: {}",
                    r.detail
                );
                if r.cause == Some(Cause::Timeout) {
                    r.hint = Some(
                        "the server accepted the login but does not answer queries: a hung or \
                         overloaded SQL Server (worker threads exhausted, blocking), or a device \
                         between the zones that stalls the session after the login"
                            .into(),
                    );
                }
            }
            HopOutput::stop(r)
        }
    }
}

/// TDS 7.2 (SQL Server 2005): the oldest version the TDS driver (tiberius) reads. Older
/// servers' replies (SQL Server 2000's TDS 7.1) make it fail inside its own token parser, which
/// it reports as a closed connection.
const TDS_72: u32 = 0x7209_0002;

/// Whether a LOGINACK's TDS version predates 7.2. The version is big-endian on the wire with the
/// major version in the top byte; TDS 7.0 and 7.1 were also sent as 0x07000000 / 0x07000001.
fn older_than_tds72(v: u32) -> bool {
    v >> 24 == 0x07 || (v >> 24 >= 0x70 && v < TDS_72)
}

/// The server acknowledged the login with a TDS version older than 7.2, and the driver gave up
/// reading its reply: say so (a `skip` with cause `unsupported`, a tool fault: the run is
/// inconclusive), naming the version and the product, instead of the `reset` the driver's
/// "connection closed" would read as, which blames the server or a firewall for dtcprobe's own
/// hang-up (issue 23: SQL Server 2000's real login reply).
fn login_unsupported(t: &MssqlTarget, addr: SocketAddr, observed: &Observed) -> HopResult {
    let version = observed
        .tds_version
        .map(tds_version_name)
        .unwrap_or_default();
    let product = observed
        .server_program
        .as_deref()
        .map(|p| p.trim_end_matches('\0').trim().to_string())
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "an unnamed server".into());
    let build = observed
        .prelogin
        .as_ref()
        .and_then(|p| p.version.clone())
        .map(|v| format!(" {v}"))
        .unwrap_or_default();
    let mut r = HopResult::unsupported(
        HopKind::Login,
        format!(
            "the server acknowledged the login with TDS {version} ({product}{build}): dtcprobe's \
             TDS driver reads TDS 7.2 (SQL Server 2005) and later, so the login was not \
             completed here; the server and the network answered"
        ),
    )
    .with_hint(
        "this server predates SQL Server 2005; check the login with FreeTDS (`tsql -H host -p \
         port -U user`, TDS version 7.1) or an old Microsoft client from this zone; the \
         resolve/tcp hops above still tell whether the path is open",
    );
    r = common_login_data(r, t, addr, observed)
        .with_data("tds_version", observed.tds_version.map(tds_version_name))
        .with_data("server_version", format!("{product}{build}"));
    r
}

/// Queries what the server says about itself (one round trip; a second, tolerated to fail, for
/// the TDS version when the login response was encrypted).
async fn server_facts(client: &mut Conn, facts: &mut LoginFacts) -> Result<(), Failure> {
    let row = client
        .simple_query(
            "SELECT CAST(SERVERPROPERTY('ProductVersion') AS nvarchar(128)) AS product_version, \
             CAST(SERVERPROPERTY('Edition') AS nvarchar(128)) AS edition, \
             CAST(@@SERVERNAME AS nvarchar(128)) AS server_name, DB_NAME() AS database_name",
        )
        .await
        .map_err(|e| failure_from_tiberius(&e))?
        .into_row()
        .await
        .map_err(|e| failure_from_tiberius(&e))?;
    if let Some(row) = row {
        let text = |i: usize| row.try_get::<&str, _>(i).ok().flatten().map(str::to_string);
        facts.product_version = text(0);
        facts.edition = text(1);
        facts.server_name = text(2);
        facts.database = text(3);
    }
    let q = client
        .simple_query(
            "SELECT protocol_version FROM sys.dm_exec_connections WHERE session_id = @@SPID",
        )
        .await;
    if let Ok(stream) = q {
        if let Ok(Some(row)) = stream.into_row().await {
            facts.queried_tds_version = row.try_get::<i32, _>(0).ok().flatten().map(|v| v as u32);
        }
    }
    Ok(())
}

fn negotiated_encryption(t: &MssqlTarget, observed: &Observed) -> Option<&'static str> {
    if t.encrypt == Encrypt::Strict {
        return Some("strict");
    }
    let server = observed.prelogin.as_ref()?.encryption?;
    Some(sniff::negotiated(encryption_byte(t.encrypt), server))
}

fn common_login_data(
    mut r: HopResult,
    t: &MssqlTarget,
    addr: SocketAddr,
    observed: &Observed,
) -> HopResult {
    r = r
        .with_data("address", addr.to_string())
        .with_data("auth", t.auth.as_str())
        .with_data("auth_scheme", kerberos::auth_scheme(t.auth))
        .with_data("encryption_requested", t.encrypt.as_str())
        .with_data("trust_server_certificate", t.trust_server_certificate);
    if let Some(p) = &observed.prelogin {
        if let Some(v) = &p.version {
            r = r.with_data("prelogin_version", v.clone());
        }
        if let Some(e) = p.encryption {
            r = r.with_data("server_encryption", sniff::encryption_name(e));
        }
    }
    if let Some(n) = negotiated_encryption(t, observed) {
        r = r.with_data("encryption", n);
    }
    r
}

fn login_pass(
    t: &MssqlTarget,
    addr: SocketAddr,
    observed: &Observed,
    facts: &LoginFacts,
) -> HopResult {
    let tds = observed.tds_version.or(facts.queried_tds_version);
    let version = facts
        .product_version
        .clone()
        .or_else(|| observed.prelogin.as_ref().and_then(|p| p.version.clone()));
    let enc = negotiated_encryption(t, observed).unwrap_or("unknown");
    let detail = format!(
        "logged in as {} to {} (SQL Server {}, TDS {}, encryption {enc}) in {} ms",
        t.user.as_deref().unwrap_or("(current Windows user)"),
        facts
            .database
            .as_deref()
            .or(t.database.as_deref())
            .unwrap_or("the default database"),
        version.as_deref().unwrap_or("?"),
        tds.map(tds_version_name).unwrap_or_else(|| "?".into()),
        facts.login_time.as_millis(),
    );
    let mut r = common_login_data(HopResult::pass(HopKind::Login, detail), t, addr, observed)
        .with_data("login_seconds", round6(facts.login_time));
    let mut extra = Map::new();
    extra.insert("server_version".into(), json!(version));
    extra.insert("tds_version".into(), json!(tds.map(tds_version_name)));
    extra.insert("server_edition".into(), json!(facts.edition));
    extra.insert("server_name".into(), json!(facts.server_name));
    extra.insert("database".into(), json!(facts.database));
    for (k, v) in extra {
        r = r.with_data(&k, v);
    }
    if enc == "none" || enc == "login_only" {
        r = r.with_hint(if enc == "none" {
            "no TLS at all: the password crossed the network readable. Prefer encrypt=on"
        } else {
            "only the login packet was encrypted; queries and results travel in the clear"
        });
    }
    r
}

fn login_fail(t: &MssqlTarget, addr: SocketAddr, observed: &Observed, f: &Failure) -> HopResult {
    let server_enc = observed.prelogin.as_ref().and_then(|p| p.encryption);
    let refined;
    let f =
        if observed.prelogin.is_none() && observed.not_tds_excerpt.is_some() && !observed.tls_first
        {
            // Whatever the driver made of it (often "connection closed" while it waits for a
            // packet length it read from text), the bytes were not TDS.
            refined = Failure::Protocol("the answer to PRELOGIN is not TDS".into());
            &refined
        } else {
            f
        };
    let mut r = common_login_data(failure_result(HopKind::Login, f), t, addr, observed);
    if t.encrypt == Encrypt::None && server_enc == Some(3) {
        r.cause = Some(Cause::TlsError);
        r.hint = Some(
            "the server requires encryption (Force Encryption is on) and this check asked for none: \
             use encrypt=on (with a trusted certificate, or trust_server_certificate=true)"
                .into(),
        );
    }
    if t.encrypt == Encrypt::Strict
        && t.trust_server_certificate
        && r.cause == Some(Cause::TlsError)
        && !matches!(f, Failure::NoTlsFirst(_))
    {
        r.hint = Some(format!(
            "{} {}",
            super::tls::STRICT_IGNORES_TRUST,
            r.hint.unwrap_or_default()
        ));
    }
    if let Some(x) = &observed.not_tds_excerpt {
        r.detail = format!("{}; the server's first bytes: \"{x}\"", r.detail);
        r = r.with_data("first_bytes", x.clone());
    } else if observed.bytes == 0 && matches!(f, Failure::Timeout(_)) {
        r.detail = format!("{}; not a single byte came back after PRELOGIN", r.detail);
    }
    r
}

fn failure_result(kind: HopKind, f: &Failure) -> HopResult {
    let r = classify_failure(f).into_hop(kind);
    match f {
        Failure::Server {
            number,
            state,
            class,
            ..
        } => r.with_data(
            "error",
            json!({"number": number, "state": state, "class": class}),
        ),
        _ => r,
    }
}

fn round6(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e6
}

// ---------------------------------------------------------------------------------------------
// idle

/// Hop `idle`: the session is left alone for `hold` (no keepalive: the login turned it off),
/// then `SELECT 1` runs on it, bounded by `limit`. How it fails says how the session died.
async fn idle_hop(
    conn: Conn,
    addr: SocketAddr,
    hold: Duration,
    limit: Duration,
) -> HopOutput<Conn> {
    tokio::time::sleep(hold).await;
    let started = Instant::now();
    let outcome = guarded(limit, "running SELECT 1 after the hold", async move {
        let mut conn = conn;
        let answer = select_one(&mut conn).await;
        Ok(answer.map(|one| (conn, one)))
    })
    .await;
    let took = started.elapsed();
    let result = match outcome {
        Ok(Ok((conn, Some(1)))) => {
            return HopOutput::ok(
                idle::survived(
                    hold,
                    &format!(
                        "SELECT 1 on the same session answered in {} ms",
                        took.as_millis()
                    ),
                )
                .with_data("address", addr.to_string()),
                conn,
            )
        }
        Ok(Ok((_, other))) => failure_result(
            HopKind::Idle,
            &Failure::Unexpected(format!("SELECT 1 after the hold returned {other:?}")),
        ),
        Ok(Err(e)) => match idle_death(&e) {
            Some(death) => idle::expired(
                hold,
                death,
                addr.port(),
                &format!("{addr}: SELECT 1 on the same session failed: {e}"),
            ),
            // The server answered with an error: the session is alive, the statement is not.
            None => failure_result(HopKind::Idle, &failure_from_tiberius(&e)),
        },
        Err(Failure::Timeout(_)) => idle::expired(
            hold,
            Death::Silence,
            addr.port(),
            &format!(
                "{addr}: SELECT 1 on the same session got no answer within {}",
                humantime::format_duration(limit)
            ),
        ),
        Err(f) => failure_result(HopKind::Idle, &f),
    };
    HopOutput::stop(
        result
            .with_data("address", addr.to_string())
            .with_data("hold_seconds", hold.as_secs_f64()),
    )
}

/// `SELECT 1`'s value, or the driver's error (kept whole: its I/O kind says how the session died).
async fn select_one(conn: &mut Conn) -> Result<Option<i32>, tiberius::error::Error> {
    let row = conn.simple_query("SELECT 1").await?.into_row().await?;
    Ok(row.and_then(|r| r.try_get::<i32, _>(0).ok().flatten()))
}

/// Pure: how the session died, from the driver's error; `None` when the error is the server's
/// answer (a live session).
fn idle_death(e: &tiberius::error::Error) -> Option<Death> {
    match e {
        tiberius::error::Error::Io { kind, .. } => Death::from_io(*kind),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// transactions

/// Pure: the statements a transaction hop sends, each with a short name for the report.
pub fn tx_statements(
    kind: HopKind,
    linked_server: Option<&str>,
    marker: &str,
) -> Vec<(&'static str, String)> {
    let mut v = Vec::new();
    if kind == HopKind::TxDistributed {
        v.push(("set xact_abort", "SET XACT_ABORT ON".to_string()));
        v.push((
            "begin distributed transaction",
            "BEGIN DISTRIBUTED TRANSACTION".to_string(),
        ));
    } else {
        v.push(("begin transaction", "BEGIN TRANSACTION".to_string()));
    }
    v.push((
        "create #temp table",
        "CREATE TABLE #dtcprobe (id int NOT NULL PRIMARY KEY, note nvarchar(64) NOT NULL)"
            .to_string(),
    ));
    v.push((
        "insert",
        format!(
            "INSERT INTO #dtcprobe (id, note) VALUES (1, N'{}')",
            marker.replace('\'', "''")
        ),
    ));
    v.push(("read back", "SELECT id, note FROM #dtcprobe".to_string()));
    if let Some(l) = linked_server {
        v.push((
            "query through the linked server",
            format!("SELECT one FROM OPENQUERY([{l}], 'SELECT 1 AS one')"),
        ));
    }
    v.push(("rollback", "ROLLBACK TRANSACTION".to_string()));
    v.push((
        "check @@TRANCOUNT",
        "SELECT @@TRANCOUNT AS trancount".to_string(),
    ));
    v
}

/// What `tx_distributed` exercises: SQL Server begins the transaction, so only its own MSDTC
/// (and, through a linked server, the path from it to the linked server's) takes part.
fn distributed_proves(linked: Option<&str>) -> String {
    match linked {
        Some(l) => format!("the SQL Server host's MSDTC and its path to linked server {l}'s MSDTC"),
        None => "the SQL Server host's MSDTC".into(),
    }
}

/// Where `tx_distributed` stops and `tx_enlist` starts.
const DISTRIBUTED_SCOPE: &str = "applications in this zone that enlist SQL Server in their own \
transactions (TransactionScope, COM+, ODBC/OLE DB enlistment) need THIS host's MSDTC to reach the \
SQL host's MSDTC both ways: run the check with tx=enlist (Windows build) from this host to test \
that path";

async fn tx_hop(
    kind: HopKind,
    conn: Conn,
    linked: Option<String>,
    marker: String,
    limit: Duration,
) -> HopOutput<Conn> {
    let statements = tx_statements(kind, linked.as_deref(), &marker);
    let names: Vec<&'static str> = statements.iter().map(|(n, _)| *n).collect();
    let total = statements.len();
    let reached = Arc::new(Mutex::new(0usize));
    let reached_task = reached.clone();
    let marker_task = marker.clone();
    let (server_messages, work) = server_info::capture(async move {
        let mut conn = conn;
        for (i, (name, sql)) in statements.into_iter().enumerate() {
            if let Ok(mut r) = reached_task.lock() {
                *r = i;
            }
            let stream = conn
                .simple_query(sql)
                .await
                .map_err(|e| failure_from_tiberius(&e))?;
            let rows = stream
                .into_first_result()
                .await
                .map_err(|e| failure_from_tiberius(&e))?;
            match name {
                "read back" => {
                    let got = rows.first().and_then(|r| {
                        let id = r.try_get::<i32, _>(0).ok().flatten()?;
                        let note = r.try_get::<&str, _>(1).ok().flatten()?.to_string();
                        Some((id, note))
                    });
                    if got.as_ref() != Some(&(1, marker_task.clone())) {
                        return Err(Failure::Unexpected(format!(
                            "read back {got:?} instead of the row just inserted"
                        )));
                    }
                }
                "check @@TRANCOUNT" => {
                    let n = rows
                        .first()
                        .and_then(|r| r.try_get::<i32, _>(0).ok().flatten());
                    if n != Some(0) {
                        return Err(Failure::Unexpected(format!(
                            "@@TRANCOUNT is {n:?} after ROLLBACK (expected 0)"
                        )));
                    }
                }
                _ => {}
            }
        }
        Ok(conn)
    });
    let outcome = guarded(limit, "running the transaction", work).await;
    let step = reached.lock().map(|r| *r).unwrap_or(0);
    let what = if kind == HopKind::TxDistributed {
        "distributed transaction"
    } else {
        "local transaction"
    };
    match outcome {
        Ok(conn) if kind == HopKind::TxDistributed => HopOutput::ok(
            HopResult::pass(
                kind,
                format!(
                    "{what} begun by SQL Server itself: begin, #temp table, insert, read back, \
                     rollback ({total} round trips); nothing persisted. This proves {}; this \
                     host's MSDTC took no part",
                    distributed_proves(linked.as_deref())
                ),
            )
            .with_hint(DISTRIBUTED_SCOPE)
            .with_data("statements", total)
            .with_data("linked_server", linked.clone()),
            conn,
        ),
        Ok(conn) => HopOutput::ok(
            HopResult::pass(
                kind,
                format!("{what}: begin, #temp table, insert, read back, rollback ({total} round trips); nothing persisted"),
            )
            .with_data("statements", total)
            .with_data("linked_server", linked.clone()),
            conn,
        ),
        Err(f) => {
            let mut r = failure_result(kind, &f);
            let failed = names.get(step).copied().unwrap_or("?");
            r.detail = format!("{what}, step `{failed}`: {}", r.detail);
            // What the server said just before the error (e.g. the partner MSDTC's reason
            // relayed before 7391) often names the setting to change.
            let said = server_messages.take();
            if !said.is_empty() {
                r.detail = format!("{}; the server said before the error: \"{}\"", r.detail, said.join("\" / \""));
                r = r.with_data("server_messages", said);
            }
            if kind == HopKind::TxDistributed && r.cause == Some(Cause::DtcUnavailable) {
                r.hint = Some(format!(
                    "{} Note: BEGIN DISTRIBUTED TRANSACTION runs on the SQL Server, so the MSDTC \
                     that failed here is {}, not this host's. {DISTRIBUTED_SCOPE}",
                    r.hint.unwrap_or_default(),
                    distributed_proves(linked.as_deref()),
                ));
            }
            if kind == HopKind::TxDistributed && r.cause == Some(Cause::SqlError) && failed.contains("distributed") {
                r.hint = Some(format!(
                    "{} The failure is at BEGIN DISTRIBUTED TRANSACTION, which is where SQL Server \
                     contacts MSDTC.",
                    r.hint.unwrap_or_default()
                ));
            }
            HopOutput::stop(r.with_data("failed_step", failed))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_without_tls_first_is_read_from_the_bytes() {
        let strict = MssqlTarget::from_url("mssql://sa@h/db?encrypt=strict").unwrap();
        let on = MssqlTarget::from_url("mssql://sa@h/db?encrypt=on").unwrap();
        let tds_answer = Observed {
            bytes: 30,
            prelogin: Some(dtcprobe_wire::tds::prelogin::PreloginInfo {
                version: Some("15.0.2000".into()),
                encryption: Some(0),
            }),
            ..Default::default()
        };
        let silence = Observed::default();
        let tls_back = Observed {
            bytes: 900,
            tls_first: true,
            ..Default::default()
        };
        let corrupt = Failure::Tls("received corrupt message of type InvalidContentType".into());
        let eof = Failure::Tls("tls handshake eof".into());
        assert!(no_tls_first(&strict, &tds_answer, &corrupt).is_some());
        assert!(no_tls_first(&strict, &silence, &eof).is_some());
        assert!(no_tls_first(&strict, &silence, &Failure::Closed("reset".into())).is_some());
        // TLS came back: a real TLS problem (certificate, versions), not a server without TDS 8.
        assert_eq!(no_tls_first(&strict, &tls_back, &corrupt), None);
        // Not strict, or not a transport failure: nothing to say.
        assert_eq!(no_tls_first(&on, &tds_answer, &corrupt), None);
        let login_failed = Failure::Server {
            number: 18456,
            state: 1,
            class: 14,
            message: String::new(),
        };
        assert_eq!(no_tls_first(&strict, &tds_answer, &login_failed), None);
        assert_eq!(
            no_tls_first(&strict, &silence, &Failure::Timeout("no answer".into())),
            None
        );
    }

    #[test]
    fn tds_versions_older_than_7_2() {
        for old in [0x7100_0001, 0x7100_0000, 0x0700_0001, 0x0700_0000] {
            assert!(older_than_tds72(old), "{old:08X}");
        }
        for new in [
            0x7209_0002,
            0x730A_0003,
            0x730B_0003,
            0x7400_0004,
            0x0800_0000,
        ] {
            assert!(!older_than_tds72(new), "{new:08X}");
        }
    }

    #[test]
    fn planned_hops_follow_the_target() {
        let t = MssqlTarget::from_url("mssql://sa@h/db").unwrap();
        assert_eq!(
            planned_hops(&t),
            vec![
                HopKind::Resolve,
                HopKind::Route,
                HopKind::Tcp,
                HopKind::Login,
                HopKind::TxLocal
            ]
        );
        let t = MssqlTarget::from_url(r"mssql://sa@h\I/db?tx=distributed").unwrap();
        assert_eq!(
            planned_hops(&t),
            vec![
                HopKind::Resolve,
                HopKind::Route,
                HopKind::Sqlbrowser,
                HopKind::Tcp,
                HopKind::Login,
                HopKind::TxLocal,
                HopKind::TxDistributed
            ]
        );
        let t = MssqlTarget::from_url("mssql://sa@h:1500/db?tx=none").unwrap();
        assert_eq!(
            planned_hops(&t),
            vec![
                HopKind::Resolve,
                HopKind::Route,
                HopKind::Tcp,
                HopKind::Login
            ]
        );
        // The hold comes after the last hop on the login's session; tx_enlist opens its own.
        let t = MssqlTarget::from_url("mssql://sa@h/db?tx=distributed&hold=15s").unwrap();
        assert_eq!(
            planned_hops(&t)[4..],
            [HopKind::TxLocal, HopKind::TxDistributed, HopKind::Idle]
        );
        let t = MssqlTarget::from_url("mssql://sa@h/db?tx=enlist&hold=15s").unwrap();
        assert_eq!(
            planned_hops(&t)[4..],
            [HopKind::TxLocal, HopKind::Idle, HopKind::TxEnlist]
        );
    }

    #[test]
    fn tx_statements_roll_back_and_escape() {
        let s = tx_statements(HopKind::TxLocal, None, "a'b");
        assert!(s.iter().any(|(_, q)| q.contains("N'a''b'")));
        assert!(s.iter().any(|(_, q)| q == "ROLLBACK TRANSACTION"));
        assert!(!s.iter().any(|(_, q)| q.contains("COMMIT")));
        let d = tx_statements(HopKind::TxDistributed, Some("L2"), "m");
        assert!(d.iter().any(|(_, q)| q == "BEGIN DISTRIBUTED TRANSACTION"));
        assert!(d.iter().any(|(_, q)| q.contains("OPENQUERY([L2]")));
    }

    #[test]
    fn browser_answers() {
        let ok = ssrp::encode_response(&[ssrp::InstanceInfo {
            server_name: "S".into(),
            instance_name: "INST".into(),
            version: "16.0.1000.6".into(),
            tcp_port: Some(50123),
            ..Default::default()
        }]);
        let r = browser_answer(&ok, "inst");
        assert_eq!(
            (r.status, r.data["tcp_port"].as_u64()),
            (Status::Pass, Some(50123))
        );
        assert_eq!(browser_answer(&ok, "OTHER").cause, Some(Cause::Config));
        let no_tcp = ssrp::encode_response(&[ssrp::InstanceInfo {
            instance_name: "INST".into(),
            ..Default::default()
        }]);
        assert_eq!(browser_answer(&no_tcp, "INST").cause, Some(Cause::Refused));
        assert_eq!(
            browser_answer(b"junk", "INST").cause,
            Some(Cause::ProtocolError)
        );
    }

    #[test]
    fn driver_io_errors_say_how_an_idle_session_died() {
        let io = |kind| tiberius::error::Error::Io {
            kind,
            message: String::new(),
        };
        assert_eq!(
            idle_death(&io(std::io::ErrorKind::ConnectionReset)),
            Some(Death::Reset)
        );
        assert_eq!(
            idle_death(&io(std::io::ErrorKind::UnexpectedEof)),
            Some(Death::Closed)
        );
        assert_eq!(
            idle_death(&tiberius::error::Error::Protocol("x".into())),
            None
        );
    }

    #[test]
    fn server_errors_become_hop_results() {
        let r = failure_result(
            HopKind::Login,
            &Failure::Server {
                number: 18456,
                state: 8,
                class: 14,
                message: "Login failed for user 'sa'.".into(),
            },
        );
        assert_eq!(r.cause, Some(Cause::AuthFailed));
        assert_eq!(r.data["error"]["number"], 18456);
        assert!(r.detail.contains("18456"));
    }
}
