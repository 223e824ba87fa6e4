//! `auth=negotiate`'s NTLM fallback (docs/kerberos.md): what Windows' Negotiate package does
//! when hops `kdc` and `spn` found no way to a Kerberos ticket for the SQL Server (no KDC, the
//! SPN missing, a skewed clock, a Kerberos error): the login authenticates with NTLM instead,
//! with the same user and password, and hop `login` is `warn ntlm_fallback` naming why Kerberos
//! could not be had. Linked servers and double hops then fail, which is why it is a finding.
//!
//! tiberius speaks NTLM only in the Windows build (its Unix NTLM needs the `sspi` crate), so
//! this login runs on dtcprobe's own TDS session ([`super::enlist::session`]: PRELOGIN, TLS,
//! LOGIN7 with the NTLMv2 exchange of the `winauth` crate) and ends there: the hops that need
//! tiberius's session after the login (`tx_local`, `tx_distributed`, `idle`) are `skip`, saying
//! so. `dtc_name` and `tx_enlist` open sessions of their own and run as usual.

use std::net::SocketAddr;
use std::time::Duration;

use super::driver::failure_result;
use super::enlist::session::Session;
use super::kerberos::NoTicket;
use super::spec::MssqlTarget;
use crate::chain::HopOutput;
use crate::model::{Cause, HopKind, HopResult};
use crate::secret::Secret;

/// The detail of the hops after a fallback login that need tiberius's session.
pub const NOT_AFTER_FALLBACK: &str = "not run after the NTLM fallback login: that login runs on \
dtcprobe's own TDS session, which carries no transactions of this hop yet (docs/kerberos.md)";

/// Hop `login` by NTLM, after Kerberos could not be had (`why`).
pub(super) async fn ntlm_fallback_hop(
    t: &MssqlTarget,
    addr: SocketAddr,
    password: Option<&Secret>,
    why: &NoTicket,
    limit: Duration,
) -> HopOutput<()> {
    let pw = password.map(Secret::expose).unwrap_or("");
    let started = std::time::Instant::now();
    let opened = tokio::time::timeout(limit, Session::open(addr, t, pw, limit)).await;
    let result = match opened {
        Ok(Ok((session, info))) => {
            session.close().await;
            HopResult::warn(
                HopKind::Login,
                Cause::NtlmFallback,
                format!(
                    "logged in with NTLM, not Kerberos: the Negotiate login fell back because \
                     Kerberos could not be had ({}); server {}, TDS 0x{:08X}",
                    why.reason, info.server_program, info.tds_version
                ),
            )
            .with_hint(
                "Negotiate used NTLM: the login works, but delegation (linked servers, double \
                 hops) and policies that refuse NTLM break. Fix what hop `kdc` or `spn` reports \
                 (the SPN, the firewall to the domain controllers on 88/464/389, the clock) so \
                 that Kerberos is used",
            )
            .with_data("encryption", encryption_name(info.encryption))
        }
        Ok(Err(f)) => {
            let mut r = failure_result(HopKind::Login, &f);
            r.detail = format!(
                "the NTLM fallback login failed (Kerberos could not be had: {}): {}",
                why.reason, r.detail
            );
            r
        }
        Err(_) => HopResult::fail(
            HopKind::Login,
            Cause::Timeout,
            format!(
                "the NTLM fallback login did not finish within {} (Kerberos could not be had: {})",
                humantime::format_duration(limit),
                why.reason
            ),
        ),
    };
    let mut r = result
        .with_data("address", addr.to_string())
        .with_data("auth", t.auth.as_str())
        .with_data("auth_scheme", "ntlm")
        .with_data("fallback_reason", why.reason.clone())
        .with_data("login_seconds", started.elapsed().as_secs_f64());
    r.duration_seconds = started.elapsed();
    if r.lets_chain_continue() {
        HopOutput::ok(r, ())
    } else {
        HopOutput::stop(r)
    }
}

/// The login hop's `encryption` values (docs/report.md) for what the session negotiated.
fn encryption_name(n: super::enlist::session::Negotiated) -> &'static str {
    use super::enlist::session::Negotiated;
    match n {
        Negotiated::None => "none",
        Negotiated::LoginOnly => "login_only",
        Negotiated::Full => "full",
        Negotiated::Strict => "strict",
    }
}
