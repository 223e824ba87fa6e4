//! The `postgres` hop chain: resolve -> tcp -> login -> revocation (TLS logins) -> tx_local |
//! twophase.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::time::Instant;
use tokio_postgres::Client;

use super::classify::{classify_error, classify_login_error, classify_twophase, error_detail};
use super::phases::{self, ReadTimes};
use super::target::{PgTarget, PgTx};
use super::tls::{Connector, SslMode};
use crate::chain::{Chain, HopOutput, RunContext};
use crate::hops::connect::{self, reach, Reach};
use crate::model::{Cause, HopKind, HopResult};
use crate::secret::{self, ProbeLogin};

pub async fn run(t: &PgTarget, ctx: &RunContext) -> Vec<HopResult> {
    let mut planned = vec![
        HopKind::Resolve,
        HopKind::Route,
        HopKind::Tcp,
        HopKind::Login,
    ];
    let revocation = t.cert.revocation && t.sslmode != SslMode::Disable;
    if revocation {
        planned.push(HopKind::Revocation);
    }
    match t.tx {
        PgTx::Local => planned.push(HopKind::TxLocal),
        PgTx::Twophase => planned.push(HopKind::Twophase),
        PgTx::None => {}
    }
    let mut chain = Chain::new(planned, ctx.hop_timeout);
    let to = Reach {
        host: &t.host,
        port: t.port,
        reverse_dns: false,
        resolve_budget: ctx.hop_timeout,
    };
    let Some(addr) = reach(&mut chain, ctx, &to).await else {
        return chain.finish();
    };
    let mut seen = None;
    let logged_in = chain
        .step(HopKind::Login, async {
            let (out, chain_read) = login(t, addr, ctx).await;
            seen = chain_read;
            out
        })
        .await;
    // After a pass or a warn (the credential-free login's refusal included), or whenever the
    // server's chain was read (a login refused for its password or certificate showed it).
    let login_ok = chain
        .with_last(|r| Some(r.lets_chain_continue()))
        .unwrap_or(false);
    if revocation && (login_ok || seen.is_some()) {
        chain
            .step(
                HopKind::Revocation,
                crate::hops::revocation::revocation_hop(
                    seen.as_ref(),
                    "the server did not use TLS for this login",
                    ctx,
                ),
            )
            .await;
    }
    let Some(client) = logged_in else {
        return chain.finish();
    };
    match t.tx {
        PgTx::Local => {
            chain.step(HopKind::TxLocal, tx_local(&client)).await;
        }
        PgTx::Twophase => {
            chain.step(HopKind::Twophase, twophase(&client)).await;
        }
        PgTx::None => {}
    }
    chain.finish()
}

/// The login, with the certificate report of its TLS (if any) added; also the chain the
/// server showed, for hop `revocation`.
async fn login(
    t: &PgTarget,
    addr: SocketAddr,
    ctx: &RunContext,
) -> (HopOutput<Client>, Option<crate::tls::SeenChain>) {
    let mut connector = None;
    let mut out = login_judged(t, addr, ctx, &mut connector).await;
    let seen = connector.and_then(|c| c.certificate());
    if let Some(seen) = &seen {
        let warn_days = t.cert.warn_days.unwrap_or(ctx.cert_warn_days);
        out.result = crate::hops::certificate::judge_seen(out.result, seen, &t.host, warn_days);
    }
    (out, seen)
}

async fn login_judged(
    t: &PgTarget,
    addr: SocketAddr,
    ctx: &RunContext,
    used: &mut Option<Connector>,
) -> HopOutput<Client> {
    // The credential-free login: a random user and password, no secret asked for.
    let probe = t.credential_free.then(ProbeLogin::random);
    let (user, password) = match &probe {
        Some(p) => (p.user.clone(), p.password.clone()),
        None => {
            let label = format!("{}@{}", t.user, t.host);
            match secret::obtain(t.password.as_ref(), &label).await {
                Ok(p) => (t.user.clone(), p),
                Err(e) => {
                    return HopOutput::stop(
                        HopResult::fail(HopKind::Login, Cause::Config, e.to_string())
                            .with_hint("give the password with --password-file, or password_env/password_file in the config"),
                    )
                }
            }
        }
    };
    // Local set-up (the CA file) before the connection it would otherwise waste.
    let connector =
        match Connector::new(&t.host, t.sslmode, t.sslrootcert.as_ref()) {
            Ok(c) => c,
            Err(e) => return HopOutput::stop(
                HopResult::fail(HopKind::Login, Cause::Config, e.to_string()).with_hint(
                    "sslrootcert must name a readable PEM file with the CA certificates to trust",
                ),
            ),
        };
    *used = Some(connector.clone());
    let started = Instant::now();
    let stream = match connect::open(addr, ctx.hop_timeout).await {
        Ok(stream) => stream,
        // The path broke after the tcp hop: the same classification, on this hop.
        Err(attempt) => return HopOutput::stop(connect::hop_result(HopKind::Login, &[attempt])),
    };
    let mut config = tokio_postgres::Config::new();
    config
        .user(&user)
        .dbname(&t.database)
        .password(password.expose())
        .application_name("dtcprobe")
        .ssl_mode(t.sslmode.driver_mode());
    let tcp_done = started.elapsed();
    let reads: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let stream = ReadTimes::stream(stream, started, reads.clone());
    let connected = config.connect_raw(stream, connector.clone()).await;
    let phases = {
        let end = started.elapsed();
        let tls_done = connector
            .handshake_done()
            .map(|d| d.duration_since(started));
        let reads = reads.lock().map(|r| r.clone()).unwrap_or_default();
        let ssl_refused = t.sslmode != SslMode::Disable;
        phases::to_json(&phases::split(tcp_done, tls_done, ssl_refused, &reads, end))
    };
    match connected {
        Ok((client, connection)) => {
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!("postgres connection ended: {e}");
                }
            });
            let version = client
                .query_one("SHOW server_version", &[])
                .await
                .ok()
                .and_then(|row| row.try_get::<_, String>(0).ok())
                .unwrap_or_default();
            let tls = connector.negotiated();
            let over = match &tls {
                Some(n) => format!("{} {}", n.version, n.cipher),
                None => "no TLS".to_string(),
            };
            let mut result = HopResult::pass(
                HopKind::Login,
                format!(
                    "logged in as {} to database {} on {addr} (PostgreSQL {version}, {over}, \
                     sslmode={})",
                    user,
                    t.database,
                    t.sslmode.as_str()
                ),
            )
            .with_data("server_version", version)
            .with_data("address", addr.to_string())
            .with_data("sslmode", t.sslmode.as_str())
            .with_data("tls", tls.is_some());
            if let Some(n) = tls {
                result = result
                    .with_data("tls_version", n.version)
                    .with_data("tls_cipher", n.cipher);
            }
            if let Some(p) = &probe {
                result = result
                    .with_data("credential_free", true)
                    .with_data("probe_user", p.user.clone());
            }
            HopOutput::ok(result.with_data("phases_ms", phases), client)
        }
        Err(e) => {
            let tls = connector.negotiated();
            let refused = probe
                .as_ref()
                .and_then(|p| credential_free_answer(&e, &p.user, tls));
            match refused {
                Some(r) => HopOutput::stop(
                    r.with_data("address", addr.to_string())
                        .with_data("phases_ms", phases),
                ),
                None => {
                    let r = classify_login_error(&e, t.sslmode)
                        .into_hop(HopKind::Login)
                        .with_data("phases_ms", phases);
                    HopOutput::stop(match &probe {
                        Some(p) => r
                            .with_data("credential_free", true)
                            .with_data("probe_user", p.user.clone()),
                        None => r,
                    })
                }
            }
        }
    }
}

/// The credential-free login's verdict: the server's "password authentication failed" (28P01)
/// or "no pg_hba.conf entry / role does not exist" (28000) for the random user is the answer it
/// exists for: the path, the TLS (if any) and the server's login stage work. `None`: any other
/// answer, judged as for any login.
fn credential_free_answer(
    e: &tokio_postgres::Error,
    probe_user: &str,
    tls: Option<super::tls::Negotiated>,
) -> Option<HopResult> {
    let (code, detail) = error_detail(e);
    let code = code.filter(|c| c == "28P01" || c == "28000")?;
    let over = match &tls {
        Some(n) => format!("{} {}", n.version, n.cipher),
        None => "no TLS".to_string(),
    };
    Some(
        HopResult::pass(
            HopKind::Login,
            format!(
                "the server refused the random login {probe_user} ({detail}), \
                 as it should: the path, the encryption ({over}) and the server's login stage \
                 work (no credential used; the server's log shows this failed login)"
            ),
        )
        .with_data("credential_free", true)
        .with_data("probe_user", probe_user)
        .with_data("sqlstate", code)
        .with_data("tls", tls.is_some()),
    )
}

async fn tx_local(client: &Client) -> HopOutput<()> {
    let work = async {
        client
            .batch_execute("BEGIN; CREATE TEMP TABLE dtcprobe_tx (n int) ON COMMIT DROP; INSERT INTO dtcprobe_tx VALUES (42);")
            .await?;
        let n: i32 = client
            .query_one("SELECT n FROM dtcprobe_tx", &[])
            .await?
            .try_get(0)?;
        client.batch_execute("ROLLBACK").await?;
        Ok::<i32, tokio_postgres::Error>(n)
    };
    match work.await {
        Ok(42) => HopOutput::ok(
            HopResult::pass(
                HopKind::TxLocal,
                "BEGIN, temp table, insert, read back, ROLLBACK",
            ),
            (),
        ),
        Ok(other) => HopOutput::stop(HopResult::fail(
            HopKind::TxLocal,
            Cause::ProtocolError,
            format!("read back {other}, wrote 42"),
        )),
        Err(e) => {
            let _ = client.batch_execute("ROLLBACK").await;
            HopOutput::stop(classify_error(&e).into_hop(HopKind::TxLocal))
        }
    }
}

/// A global transaction id unique to this run, recognisable in pg_prepared_xacts if the rollback
/// never arrives (a connection cut between the two statements).
fn gid() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("dtcprobe-{}-{nanos}", std::process::id())
}

async fn twophase(client: &Client) -> HopOutput<()> {
    let gid = gid();
    // No temporary objects: PostgreSQL refuses to PREPARE a transaction that touched one.
    let prepare = format!("BEGIN; SELECT txid_current(); PREPARE TRANSACTION '{gid}';");
    if let Err(e) = client.batch_execute(&prepare).await {
        let _ = client.batch_execute("ROLLBACK").await;
        let (code, detail) = error_detail(&e);
        return HopOutput::stop(
            classify_twophase(code.as_deref(), detail).into_hop(HopKind::Twophase),
        );
    }
    match client
        .batch_execute(&format!("ROLLBACK PREPARED '{gid}'"))
        .await
    {
        Ok(()) => HopOutput::ok(
            HopResult::pass(
                HopKind::Twophase,
                format!("PREPARE TRANSACTION and ROLLBACK PREPARED '{gid}'"),
            )
            .with_data("gid", gid),
            (),
        ),
        Err(e) => {
            let verdict = classify_error(&e);
            HopOutput::stop(HopResult::fail(HopKind::Twophase, verdict.cause, verdict.detail).with_hint(format!(
                "the prepared transaction '{gid}' may be left behind: check pg_prepared_xacts and run ROLLBACK PREPARED"
            )))
        }
    }
}
