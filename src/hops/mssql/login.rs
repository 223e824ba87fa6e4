//! Hop `login`: PRELOGIN, TLS, LOGIN7 and LOGINACK over TDS with tiberius, then what the server
//! says about itself; the byte stream ([`super::sniff`]) explains failures the driver reports in
//! its own terms. Which credential the LOGIN7 carries is decided in [`super::auth`].

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Map};
use tiberius::{Client, Config, EncryptionLevel};
use tokio::time::Instant;
use tokio_util::compat::TokioAsyncWriteCompatExt;

use super::auth;
use super::classify::{failure_from_tiberius, tds_version_name, Failure};
use super::driver::{failure_result, guarded, Conn};
use super::phases::{self, Breakdown};
use super::sniff::{self, Observed, ServerBytes, Sniffer, Timeline};
use super::spec::{Auth, Encrypt, MssqlTarget};
use crate::chain::HopOutput;
use crate::hops::connect;
use crate::model::{Cause, HopKind, HopResult};
use crate::secret::Secret;

const APP_NAME: &str = "dtcprobe";

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

fn build_config(
    t: &MssqlTarget,
    port: u16,
    password: Option<&Secret>,
    probe: Option<&crate::secret::ProbeLogin>,
) -> Result<Config, Failure> {
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
    c.authentication(auth::method(t, password, probe)?);
    // Every hop is bounded by dtcprobe's own (tokio) timeout, well under tiberius's defaults
    // (15 s handshake, 30 s per round trip), and a hop that times out drops its connection.
    // tiberius's own timers run on futures-timer's thread, which every round trip woke twice:
    // a thread started and ~20 cross-thread wake-ups in a login and local transaction.
    c.handshake_timeout(None);
    c.command_timeout(None);
    Ok(c)
}

/// The login, with what MS-TDS and Microsoft's drivers do that tiberius does not:
/// - `encrypt=off` against a server without TLS (PRELOGIN answer ENCRYPT_NOT_SUP) logs in
///   unencrypted (MS-TDS 2.2.6.5: client OFF + server NOT_SUP = no encryption); tiberius 0.13
///   negotiates TLS there instead (its `negotiated_encryption` maps that pair to On), so the
///   attempt fails before LOGIN7 is sent and is repeated once as `EncryptionLevel::NotSupported`.
/// - a routing ENVCHANGE (Azure SQL "redirect" policy, availability-group read-only routing) is
///   followed once, to the host and port the server names, as Microsoft's drivers do.
pub(super) async fn login_hop(
    t: &MssqlTarget,
    addr: SocketAddr,
    password: Option<Secret>,
    limit: Duration,
) -> HopOutput<Conn> {
    let started = Instant::now();
    let mut target = t.clone();
    let mut addr = addr;
    let mut note: Option<String> = None;
    // One random login for every attempt (a redirect, the retry without TLS).
    let probe = t.credential_free.then(crate::secret::ProbeLogin::random);
    for _attempt in 0..3 {
        let remaining = limit.saturating_sub(started.elapsed());
        let config = match build_config(&target, addr.port(), password.as_ref(), probe.as_ref()) {
            Ok(c) => c,
            Err(f) => return HopOutput::stop(failure_result(HopKind::Login, &f)),
        };
        let (seen, outcome) = login_attempt(&target, addr, config, remaining).await;
        let observed = seen.observed;
        let timed_out = matches!(outcome, Err(AttemptFailure::Failed(Failure::Timeout(_))));
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
                let mut out = match (&probe, other) {
                    (Some(p), Err(AttemptFailure::Failed(f))) => {
                        HopOutput::stop(credential_free_answer(t, addr, &observed, &p.user, f))
                    }
                    (Some(p), Ok((client, facts))) => HopOutput::ok(
                        login_pass(t, addr, &observed, &facts)
                            .with_data("credential_free", true)
                            .with_data("probe_user", p.user.clone())
                            .with_hint(
                                "the server accepted a random user name and password: it \
                                 authenticates nobody (a test server, or not SQL Server)",
                            ),
                        client,
                    ),
                    (_, other) => finish_login(t, addr, &observed, other),
                };
                out.result = with_phases(
                    out.result,
                    &seen.phases,
                    timed_out,
                    target.encrypt == Encrypt::Strict,
                );
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

/// What one login attempt saw: the server's bytes read as TDS, and its phases.
struct Seen {
    observed: Observed,
    phases: Breakdown,
}

async fn login_attempt(
    t: &MssqlTarget,
    addr: SocketAddr,
    config: Config,
    limit: Duration,
) -> (Seen, Result<(Conn, LoginFacts), AttemptFailure>) {
    let seen: Arc<Mutex<Vec<u8>>> = Arc::new(Mutex::new(Vec::new()));
    let seen_task = seen.clone();
    let timeline = Timeline::new(Instant::now());
    let timeline_task = timeline.clone();
    // When the TCP connect finished and when the server's login answer was complete.
    let marks: Arc<Mutex<(Option<Duration>, Option<Duration>)>> = Arc::default();
    let marks_task = marks.clone();
    // Set once LOGINACK arrived, so a hang afterwards is told apart from a hang in the login.
    let logged_in = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let logged_in_task = logged_in.clone();
    let connect_limit = limit;
    let hold = t.hold.is_some();
    let outcome = guarded(limit, "logging in", async move {
        let started = timeline_task.started;
        let tcp = connect::open(addr, connect_limit)
            .await
            .map_err(|attempt| match attempt.verdict() {
                Some(v) => Failure::Connect(v),
                None => Failure::Closed(format!("TCP connect to {addr} failed")),
            })?;
        if let Ok(mut m) = marks_task.lock() {
            m.0 = Some(started.elapsed());
        }
        let _ = tcp.set_nodelay(true);
        if hold {
            // Off, whatever the system default: a keepalive during the hold would refresh the
            // firewall's idle timer and hide the expiry hop `idle` looks for.
            socket2::SockRef::from(&tcp)
                .set_keepalive(false)
                .map_err(|e| Failure::Closed(format!("cannot turn TCP keepalive off: {e}")))?;
        }
        let sniffer = Sniffer::new(tcp, ServerBytes::new(seen_task).timed(timeline_task));
        let connected = Client::connect(config, sniffer.compat_write()).await;
        if let Ok(mut m) = marks_task.lock() {
            m.1 = Some(started.elapsed());
        }
        let mut client = connected.map_err(|e| failure_from_tiberius(&e))?;
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
    let (connected, answered) = marks.lock().map(|m| *m).unwrap_or_default();
    let end = answered.unwrap_or_else(|| timeline.started.elapsed());
    let phases = phases::split(
        connected,
        &timeline.snapshot(),
        end,
        t.encrypt == Encrypt::Strict,
        t.auth != Auth::Sql && !t.credential_free,
    );
    let outcome = match outcome {
        Ok(v) => Ok(v),
        Err(f) if logged_in.load(std::sync::atomic::Ordering::SeqCst) => {
            Err(AttemptFailure::AfterLogin(f))
        }
        Err(f) => Err(AttemptFailure::Failed(refine_failure(
            t, addr, &observed, f,
        ))),
    };
    (Seen { observed, phases }, outcome)
}

/// Adds the phase breakdown; a login that timed out gets the phase it stalled in named, with
/// what usually stalls there.
fn with_phases(mut r: HopResult, phases: &Breakdown, timed_out: bool, strict: bool) -> HopResult {
    if timed_out {
        let (stall, hint) = phases.stall(strict);
        r.detail = format!("{stall}: {}", r.detail);
        r.hint = Some(hint.to_string().into());
        r = r.with_data("stalled_in", phases.last().name());
    }
    r.with_data("phases_ms", phases.to_json())
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

/// The credential-free login's verdict: the server's 18456 ("login failed") for the random
/// user is the answer it exists for, a pass: the path, PRELOGIN, TLS and the server's login
/// stage all worked. Any other failure is judged as for any login.
fn credential_free_answer(
    t: &MssqlTarget,
    addr: SocketAddr,
    observed: &Observed,
    probe_user: &str,
    f: Failure,
) -> HopResult {
    let r = match &f {
        Failure::Server {
            number: 18456,
            state,
            class,
            ..
        } => common_login_data(
            HopResult::pass(
                HopKind::Login,
                format!(
                    "the server refused the random login {probe_user} with error 18456 state \
                     {state}, as it should: the TDS path, the encryption ({}) and the server's \
                     login stage work (no credential used; the server's error log shows this \
                     failed login)",
                    negotiated_encryption(t, observed).unwrap_or("unknown")
                ),
            ),
            t,
            addr,
            observed,
        )
        .with_data(
            "error",
            json!({"number": 18456, "state": state, "class": class}),
        ),
        _ if observed.tds_version.is_some_and(older_than_tds72) => {
            login_unsupported(t, addr, observed)
        }
        _ => login_fail(t, addr, observed, &f),
    };
    r.with_data("credential_free", true)
        .with_data("probe_user", probe_user)
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
        .with_data("auth_scheme", super::auth::scheme(t.auth))
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
        if t.credential_free {
            "a random user"
        } else {
            t.user.as_deref().unwrap_or("(current Windows user)")
        },
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
        r.hint = Some(
            format!(
                "{} {}",
                super::tls::STRICT_IGNORES_TRUST,
                r.hint.unwrap_or_default()
            )
            .into(),
        );
    }
    if let Some(x) = &observed.not_tds_excerpt {
        r.detail = format!("{}; the server's first bytes: \"{x}\"", r.detail);
        r = r.with_data("first_bytes", x.clone());
    } else if observed.bytes == 0 && matches!(f, Failure::Timeout(_)) {
        r.detail = format!("{}; not a single byte came back after PRELOGIN", r.detail);
    }
    r
}

fn round6(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e6
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
}
