//! `auth=kerberos` on mssql (docs/kerberos.md): hops `kdc` and `spn` between `tcp` and `login`,
//! and the credentials the login uses.
//!
//! The realm is the user's (`user@REALM`), else the SQL Server's DNS domain in capitals (what a
//! domain member's Kerberos maps a host to). On Unix the login authenticates through MIT krb5's
//! GSS-API (tiberius's integrated authentication) with the same credentials hop `spn` used: from
//! a password, those are kept in a credential cache in this process's memory, named for the
//! check, and handed to the library for the login's calls only ([`WithCcache`]); without a
//! password, the user's own cache (`KRB5CCNAME`, kinit).

use std::net::SocketAddr;

use crate::chain::{Chain, RunContext};
use crate::hops::kdc;
use crate::hops::spn::{self, SpnRequest, Ticket};
use crate::model::HopKind;
use crate::secret::Secret;

use super::spec::{Auth, MssqlTarget};

/// The hops `auth=kerberos` adds before `login`.
pub fn planned(t: &MssqlTarget) -> Vec<HopKind> {
    if matches!(t.auth, Auth::Kerberos | Auth::Negotiate) {
        vec![HopKind::Kdc, HopKind::Spn]
    } else {
        Vec::new()
    }
}

/// The realm for `t`: the user's, else the server's DNS domain in capitals.
pub fn realm(t: &MssqlTarget) -> Option<String> {
    if let Some((_, realm)) = t.user.as_deref().and_then(|u| u.rsplit_once('@')) {
        return Some(realm.to_ascii_uppercase());
    }
    t.host
        .split_once('.')
        .map(|(_, domain)| domain.to_ascii_uppercase())
        .filter(|d| !d.is_empty() && d.parse::<std::net::Ipv4Addr>().is_err())
}

/// What the Kerberos hops found, for the login.
pub struct KerberosReady {
    pub ticket: Ticket,
    /// The credential cache holding the password's credentials (`None`: the user's own cache).
    pub ccache: Option<String>,
}

/// Why the login cannot use Kerberos: the hop that did not pass, as a Negotiate login's NTLM
/// fallback reports it.
#[derive(Debug, Clone)]
pub struct NoTicket {
    /// `hop `spn`: spn_missing: ...`.
    pub reason: String,
    pub cause: Option<crate::model::Cause>,
}

impl NoTicket {
    /// Whether Negotiate falls back to NTLM after this: yes when Kerberos could not be had (no
    /// KDC, no SPN, a skewed clock, a Kerberos error, a build without Kerberos), not when the
    /// client's own credentials were refused (NTLM would refuse them too, and Windows' Negotiate
    /// does not fall back then).
    pub fn falls_back(&self) -> bool {
        self.cause != Some(crate::model::Cause::AuthFailed)
    }

    fn from_last(chain: &Chain) -> NoTicket {
        chain
            .with_last(|r| {
                Some(NoTicket {
                    reason: format!(
                        "hop `{}`: {}{}",
                        r.hop.as_str(),
                        r.cause
                            .map(|c| format!("{}: ", c.as_str()))
                            .unwrap_or_default(),
                        r.detail
                    ),
                    cause: r.cause,
                })
            })
            .unwrap_or(NoTicket {
                reason: "no Kerberos ticket".into(),
                cause: None,
            })
    }
}

/// Hops `kdc` and `spn`. `Err`: a hop did not pass, and the login cannot use Kerberos (for
/// `auth=kerberos` the chain stops there, `skip` naming the hop; `auth=negotiate` may fall back).
pub async fn before_login(
    chain: &mut Chain,
    ctx: &RunContext,
    t: &MssqlTarget,
    addr: SocketAddr,
    password: Option<&Secret>,
) -> Result<KerberosReady, NoTicket> {
    let no_spn_hop = |chain: &mut Chain| {
        // The login goes on after a fallback: `spn` is not left for the chain's end to skip.
        if t.auth == Auth::Negotiate {
            chain.record(crate::model::HopResult::skip(
                HopKind::Spn,
                "not run: depends on `kdc`, which did not pass",
            ));
        }
    };
    let Some(realm) = realm(t) else {
        chain.record(
            crate::model::HopResult::fail(
                HopKind::Kdc,
                crate::model::Cause::Config,
                format!(
                    "no Kerberos realm: give the user as user@REALM, or the SQL Server by its \
                     fully qualified name (not {})",
                    t.host
                ),
            )
            .with_hint("Kerberos names the SQL Server by its FQDN: MSSQLSvc/<fqdn>:<port>"),
        );
        let why = NoTicket::from_last(chain);
        no_spn_hop(chain);
        return Err(why);
    };
    let client = t.user.as_deref();
    let Some(findings) = chain
        .step(HopKind::Kdc, kdc::kdc_hop(&realm, client, ctx))
        .await
    else {
        let why = NoTicket::from_last(chain);
        no_spn_hop(chain);
        return Err(why);
    };
    let req = SpnRequest {
        host: t.host.clone(),
        port: addr.port(),
        instance: t.instance.clone(),
        realm,
        user: t.user.clone(),
        password: password.cloned(),
        keep_in: Some(format!("MEMORY:dtcprobe-{}", ctx.check)),
        ldap: findings.ldap.first().cloned(),
    };
    // A ticket request, then an LDAP search per SPN tried (two at most): each bounded by the hop
    // timeout.
    let Some(ticket) = chain
        .step_with_timeout(
            HopKind::Spn,
            ctx.hop_timeout * 3,
            spn::spn_hop(&req, Some(&findings), ctx.hop_timeout),
        )
        .await
    else {
        return Err(NoTicket::from_last(chain));
    };
    Ok(KerberosReady {
        ccache: ticket.ccache.clone(),
        ticket,
    })
}

/// The login's authentication for `auth=kerberos`: on Unix, tiberius's integrated
/// authentication, which is GSS-API with the Kerberos mechanism only (no NTLM fallback).
pub fn auth_method() -> Result<tiberius::AuthMethod, super::classify::Failure> {
    #[cfg(all(unix, feature = "kerberos"))]
    {
        Ok(tiberius::AuthMethod::Integrated)
    }
    #[cfg(not(all(unix, feature = "kerberos")))]
    {
        // tiberius's integrated authentication on Windows is the NTLM package, never Kerberos:
        // the Windows build logs in on its own session instead (super::negotiate), and a Unix
        // build without the `kerberos` feature has no GSS-API.
        Err(super::classify::Failure::Protocol(
            crate::hops::spn::NO_KERBEROS.into(),
        ))
    }
}

/// Runs `login` with MIT krb5's credential cache set to `ccache` (see [`carry_ccache`]):
/// tiberius's integrated authentication reads the default cache, and this makes that the
/// password's cache for this login only.
pub async fn with_ccache<F: std::future::Future>(ccache: Option<String>, login: F) -> F::Output {
    #[cfg(all(unix, feature = "kerberos"))]
    if let Some(name) = ccache.and_then(|n| std::ffi::CString::new(n).ok()) {
        return LOGIN_CCACHE.scope(name, login).await;
    }
    #[cfg(not(all(unix, feature = "kerberos")))]
    let _ = ccache;
    login.await
}

#[cfg(all(unix, feature = "kerberos"))]
tokio::task_local! {
    /// The credential cache of the login running in this task ([`with_ccache`]).
    static LOGIN_CCACHE: std::ffi::CString;
}

/// `fut`, to be spawned as a task of its own by the login (its driver runs in a guarded task),
/// with the login's credential cache: MIT's `gss_krb5_ccache_name` is per thread and a task moves
/// between threads, so it is set before and cleared after every poll of `fut`.
pub fn carry_ccache<F>(fut: F) -> impl std::future::Future<Output = F::Output> + Send + 'static
where
    F: std::future::Future + Send + 'static,
    F::Output: Send,
{
    #[cfg(all(unix, feature = "kerberos"))]
    let name = LOGIN_CCACHE.try_with(|n| n.clone()).ok();
    #[cfg(not(all(unix, feature = "kerberos")))]
    let name: Option<std::ffi::CString> = None;
    async move {
        match name {
            #[cfg(all(unix, feature = "kerberos"))]
            Some(name) => {
                ThreadCcache {
                    inner: Box::pin(fut),
                    name,
                }
                .await
            }
            _ => fut.await,
        }
    }
}

#[cfg(all(unix, feature = "kerberos"))]
extern "C" {
    // MIT krb5 (libgssapi_krb5, linked through libgssapi): the credential cache GSS-API uses on
    // the calling thread; NULL returns to the default.
    fn gss_krb5_ccache_name(
        minor: *mut u32,
        name: *const std::os::raw::c_char,
        out_name: *mut *const std::os::raw::c_char,
    ) -> u32;
}

#[cfg(all(unix, feature = "kerberos"))]
struct ThreadCcache<F> {
    inner: std::pin::Pin<Box<F>>,
    name: std::ffi::CString,
}

#[cfg(all(unix, feature = "kerberos"))]
impl<F: std::future::Future> std::future::Future for ThreadCcache<F> {
    type Output = F::Output;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        let mut minor = 0u32;
        // SAFETY: a NUL-terminated name that outlives the call (MIT copies it into its
        // thread-specific slot); no previous name is asked for.
        unsafe { gss_krb5_ccache_name(&mut minor, self.name.as_ptr(), std::ptr::null_mut()) };
        let polled = self.inner.as_mut().poll(cx);
        // SAFETY: NULL clears this thread's setting again.
        unsafe { gss_krb5_ccache_name(&mut minor, std::ptr::null(), std::ptr::null_mut()) };
        polled
    }
}
