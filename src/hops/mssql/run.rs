//! The `mssql` hop chain: resolve -> (sqlbrowser for a named instance) -> tcp -> login
//! (with the server certificate, [`super::certificate`]) -> revocation -> tx_local -> tx_distributed (-> idle with `hold=DUR`) -> dtc_name -> tx_enlist. Each hop lives in its own
//! file ([`super::browser`], [`super::login`], [`super::transactions`], [`super::idle`],
//! [`super::enlist`]); this one orders them and gives each its time. Every network step runs in
//! its own task under a timeout ([`super::driver::guarded`]).

use std::time::Duration;

use super::auth;
use super::browser::sqlbrowser;
use super::certificate::{server_chain, ChainError};
use super::enlist;
use super::idle::idle_hop;
use super::kerberos;
use super::login::login_hop;
use super::negotiate;
use super::spec::{self, Encrypt, MssqlTarget, TxMode};
use super::transactions::tx_hop;
use crate::chain::{Chain, RunContext};
use crate::hops::connect::{connect_step, resolve_step};
use crate::model::{Cause, HopKind, HopResult};

/// The hops a target plans, in order.
pub fn planned_hops(t: &MssqlTarget) -> Vec<HopKind> {
    let mut v = vec![HopKind::Resolve, HopKind::Route];
    if t.needs_browser() {
        v.push(HopKind::Sqlbrowser);
    }
    v.push(HopKind::Tcp);
    v.extend(kerberos::planned(t));
    v.push(HopKind::Login);
    if revocation_planned(t) {
        v.push(HopKind::Revocation);
    }
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
    // Sessions of their own: the SQL host's DTC host name, then the enlistment.
    if matches!(t.tx, TxMode::Distributed | TxMode::Enlist) {
        v.push(HopKind::DtcName);
    }
    if t.tx == TxMode::Enlist {
        v.push(HopKind::TxEnlist);
    }
    v
}

/// Hop `revocation` runs for a TLS login unless `revocation=off`.
fn revocation_planned(t: &MssqlTarget) -> bool {
    t.cert.revocation && t.encrypt != Encrypt::None
}

/// Runs the whole chain. Bounded: each hop has its own limit (login and transactions get two hop
/// timeouts, being several round trips), so the chain ends within about 8 hop timeouts.
pub async fn run(t: &MssqlTarget, ctx: &RunContext) -> Vec<HopResult> {
    let limit = ctx.hop_timeout;
    let mut chain = Chain::new(planned_hops(t), limit);

    // Ask for the password first (a prompt should not eat into a hop's time); a missing one is
    // reported on the login hop, after the network hops have said what they can.
    let password = auth::password(t).await;

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
    // The certificate report's chain check needs this host's trust store: read beside the
    // login and the certificate handshake instead of after them (once per run,
    // super::certificate); not before the server is known to answer, so a run of unreachable
    // servers reads no store.
    if t.encrypt != Encrypt::None {
        ctx.tls.trust_store.prefetch();
    }

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

    let krb_ccache = match t.auth {
        spec::Auth::Kerberos | spec::Auth::Negotiate => {
            match kerberos::before_login(&mut chain, ctx, t, addr, password.as_ref()).await {
                // Windows: tiberius's Windows authentication is SSPI's NTLM package only, so
                // the Kerberos / Negotiate login runs on dtcprobe's own session.
                Ok(_) if cfg!(windows) => {
                    return own_session_login(chain, ctx, t, addr, password, None).await;
                }
                Ok(ready) => ready.ccache,
                Err(why) if t.auth == spec::Auth::Negotiate && why.falls_back() => {
                    return own_session_login(chain, ctx, t, addr, password, Some(&why)).await;
                }
                Err(_) => return chain.finish(),
            }
        }
        _ => None,
    };

    // dtc_name and tx_enlist log in again on TDS sessions of their own.
    let enlist_password = if matches!(t.tx, TxMode::Distributed | TxMode::Enlist) {
        password.clone()
    } else {
        None
    };
    // The certificate comes from a short handshake of its own, alongside the login (tiberius
    // does not show it): see super::certificate.
    let mut seen: Result<crate::tls::SeenChain, ChainError> = Err(ChainError::NoTls);
    let login = async {
        let login = kerberos::with_ccache(krb_ccache, login_hop(t, addr, password, limit * 2));
        let (mut out, chain_read) = if t.encrypt == Encrypt::None {
            (login.await, Err(ChainError::NoTls))
        } else {
            // A task of its own: the login's phases are timed from its own polls.
            let probe = tokio::spawn({
                let t = t.clone();
                let tls = ctx.tls.clone();
                async move { server_chain(&t, addr, limit, &tls).await }
            });
            let (out, probed) = tokio::join!(login, probe);
            (
                out,
                probed.unwrap_or_else(|e| Err(ChainError::Failed(e.to_string()))),
            )
        };
        if let Ok(read) = &chain_read {
            let warn_days = t.cert.warn_days.unwrap_or(ctx.cert_warn_days);
            out.result = crate::hops::certificate::judge_seen(out.result, read, &t.host, warn_days);
        }
        seen = chain_read;
        out
    };
    let logged_in = chain
        .step_with_timeout(HopKind::Login, limit * 2, login)
        .await;
    // After a pass or a warn (the credential-free login's refusal included), or whenever the
    // server's chain was read: a login refused for its password or its certificate still
    // showed the chain whose revocation URLs every checking client fetches.
    let login_ok = chain
        .with_last(|r| Some(r.lets_chain_continue()))
        .unwrap_or(false);
    if revocation_planned(t) && (login_ok || seen.is_ok()) {
        let why = match &seen {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        };
        chain
            .step(
                HopKind::Revocation,
                crate::hops::revocation::revocation_hop(seen.as_ref().ok(), &why, ctx),
            )
            .await;
    }
    let Some(mut conn) = logged_in else {
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
    own_session_hops(&mut chain, ctx, t, addr, enlist_password).await;
    chain.finish()
}

/// Hops `dtc_name` and `tx_enlist`, each on TDS sessions of its own (after the login's).
async fn own_session_hops(
    chain: &mut Chain,
    ctx: &RunContext,
    t: &MssqlTarget,
    addr: std::net::SocketAddr,
    password: Option<crate::secret::Secret>,
) {
    let limit = ctx.hop_timeout;
    if matches!(t.tx, TxMode::Distributed | TxMode::Enlist) {
        // A login, one request, a lookup forward and reverse, a connect. Recorded whatever it
        // finds: a dtc_name failure does not skip tx_enlist.
        let hop = enlist::dtc_name::run_dtc_name(t, addr, password.clone(), ctx, limit * 4);
        chain.record(hop.await);
    }
    if t.tx == TxMode::Enlist {
        // Four hop timeouts: two logins' worth of round trips plus MSDTC's export and import.
        let budget = limit * 4;
        let result = match enlist::this_host_dtc() {
            Err(reason) => HopResult::unsupported(HopKind::TxEnlist, reason)
                .with_hint(enlist::HINT_RUN_ON_WINDOWS),
            Ok(dtc) => enlist::run_enlist(t, addr, password, dtc, &marker(), budget).await,
        };
        chain.record(result);
    }
}

/// The login on dtcprobe's own session ([`negotiate`]): `auth=negotiate` without Kerberos (by
/// NTLM, `why` says why), or the Windows build's SSPI Kerberos / Negotiate login; then the hops
/// that open sessions of their own. Those that need the login's tiberius session are `skip`.
async fn own_session_login(
    mut chain: Chain,
    ctx: &RunContext,
    t: &MssqlTarget,
    addr: std::net::SocketAddr,
    password: Option<crate::secret::Secret>,
    why: Option<&kerberos::NoTicket>,
) -> Vec<HopResult> {
    let limit = ctx.hop_timeout;
    let logged_in = chain
        .step_with_timeout(
            HopKind::Login,
            limit * 2,
            negotiate::own_session_login_hop(t, addr, password.as_ref(), why, limit * 2),
        )
        .await;
    if logged_in.is_none() {
        return chain.finish();
    }
    for kind in [HopKind::TxLocal, HopKind::TxDistributed, HopKind::Idle] {
        if planned_hops(t).contains(&kind) {
            chain.record(HopResult::skip(kind, negotiate::NOT_AFTER_FALLBACK));
        }
    }
    own_session_hops(&mut chain, ctx, t, addr, password).await;
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

#[cfg(test)]
mod tests {
    use super::*;

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
                HopKind::Revocation,
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
                HopKind::Revocation,
                HopKind::TxLocal,
                HopKind::TxDistributed,
                HopKind::DtcName
            ]
        );
        let t = MssqlTarget::from_url("mssql://sa@h:1500/db?tx=none&revocation=off").unwrap();
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
            planned_hops(&t)[5..],
            [
                HopKind::TxLocal,
                HopKind::TxDistributed,
                HopKind::Idle,
                HopKind::DtcName
            ]
        );
        let t = MssqlTarget::from_url("mssql://sa@h/db?tx=enlist&hold=15s").unwrap();
        assert_eq!(
            planned_hops(&t)[5..],
            [
                HopKind::TxLocal,
                HopKind::Idle,
                HopKind::DtcName,
                HopKind::TxEnlist
            ]
        );
    }
}
