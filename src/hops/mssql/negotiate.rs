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
//!
//! The Windows build logs in on the same session for `auth=kerberos` and `auth=negotiate`
//! whether or not hop `spn` got a ticket (tiberius's Windows authentication is SSPI's NTLM
//! package only): SSPI's Kerberos or Negotiate package does the exchange, and the login reports
//! the package it ended on (SECPKG_ATTR_NEGOTIATION_INFO), `warn ntlm_fallback` when Negotiate
//! chose NTLM. Confirmed only on a real Windows host (docs/kerberos.md).

use std::net::SocketAddr;
use std::time::Duration;

use super::driver::failure_result;
use super::enlist::session::Session;
use super::kerberos::NoTicket;
use super::spec::MssqlTarget;
use crate::chain::HopOutput;
use crate::hops::spn::sspi_status;
use crate::model::{Cause, HopKind, HopResult};
use crate::secret::Secret;

/// The detail of the hops after a login on dtcprobe's own session that need tiberius's session.
pub const NOT_AFTER_FALLBACK: &str = "not run after the NTLM fallback login (or the Windows \
build's SSPI Kerberos/Negotiate login): that login runs on dtcprobe's own TDS session, which \
carries no transactions of this hop yet (docs/kerberos.md)";

/// Hop `login` on dtcprobe's own session: by NTLM after Kerberos could not be had (`why`), or,
/// in the Windows build, through SSPI's Kerberos / Negotiate package after hop `spn` got a
/// ticket (`why` none).
pub(super) async fn own_session_login_hop(
    t: &MssqlTarget,
    addr: SocketAddr,
    password: Option<&Secret>,
    why: Option<&NoTicket>,
    limit: Duration,
) -> HopOutput<()> {
    let pw = password.map(Secret::expose).unwrap_or("");
    let started = std::time::Instant::now();
    let opened = tokio::time::timeout(limit, Session::open(addr, t, pw, limit)).await;
    let reason = why.map(|w| w.reason.clone());
    let kerberos_not_had = || match &reason {
        Some(r) => format!("Kerberos could not be had: {r}"),
        None => "hop `spn` got a ticket, so the domain's Kerberos works for this SPN".into(),
    };
    let mut scheme = "ntlm".to_string();
    let result = match opened {
        Ok(Ok((session, info))) => {
            session.close().await;
            scheme = info
                .auth_package
                .as_deref()
                .map(sspi_status::scheme_of_package)
                .unwrap_or_else(|| "ntlm".into());
            login_verdict(t, &scheme, &info, reason.as_deref())
                .with_data("encryption", encryption_name(info.encryption))
        }
        Ok(Err(f)) => {
            let mut r = failure_result(HopKind::Login, &f);
            r.detail = match &reason {
                Some(_) => format!(
                    "the NTLM fallback login failed ({}): {}",
                    kerberos_not_had(),
                    r.detail
                ),
                None => format!("the SSPI login failed: {}", r.detail),
            };
            r
        }
        Err(_) => HopResult::fail(
            HopKind::Login,
            Cause::Timeout,
            format!(
                "the login on dtcprobe's own session did not finish within {} ({})",
                humantime::format_duration(limit),
                kerberos_not_had()
            ),
        ),
    };
    let mut r = result
        .with_data("address", addr.to_string())
        .with_data("auth", t.auth.as_str())
        .with_data("auth_scheme", scheme)
        .with_data("login_seconds", started.elapsed().as_secs_f64());
    if let Some(reason) = reason {
        r = r.with_data("fallback_reason", reason);
    }
    r.duration_seconds = started.elapsed();
    if r.lets_chain_continue() {
        HopOutput::ok(r, ())
    } else {
        HopOutput::stop(r)
    }
}

/// Pure: a login that went through, judged by the scheme it used. NTLM under `auth=negotiate`
/// is the fallback the issue is about (`warn ntlm_fallback`, with Kerberos's reason when hop
/// `kdc` / `spn` found one, else SSPI's own choice); Kerberos is a pass.
fn login_verdict(
    t: &MssqlTarget,
    scheme: &str,
    info: &super::enlist::session::LoginInfo,
    reason: Option<&str>,
) -> HopResult {
    let server = format!(
        "server {}, TDS 0x{:08X}",
        info.server_program, info.tds_version
    );
    if scheme == "ntlm" && t.auth == super::spec::Auth::Negotiate {
        let why = match reason {
            Some(r) => format!("Kerberos could not be had ({r})"),
            None => "Windows' Negotiate package chose NTLM although hop `spn` got a Kerberos \
                     ticket (the server may have offered NTLM only, or policy restricts \
                     Kerberos)"
                .to_string(),
        };
        return HopResult::warn(
            HopKind::Login,
            Cause::NtlmFallback,
            format!("logged in with NTLM, not Kerberos: the Negotiate login fell back because {why}; {server}"),
        )
        .with_hint(
            "Negotiate used NTLM: the login works, but delegation (linked servers, double \
             hops) and policies that refuse NTLM break. Fix what hop `kdc` or `spn` reports \
             (the SPN, the firewall to the domain controllers on 88/464/389, the clock) so \
             that Kerberos is used",
        );
    }
    HopResult::pass(
        HopKind::Login,
        format!("logged in with {scheme} through this host's SSPI; {server}"),
    )
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hops::mssql::enlist::session::{LoginInfo, Negotiated};

    fn info(package: &str) -> LoginInfo {
        LoginInfo {
            encryption: Negotiated::Full,
            tds_version: 0x7400_0004,
            server_program: "Microsoft SQL Server".into(),
            auth_package: Some(package.into()),
        }
    }

    fn target(auth: &str) -> MssqlTarget {
        MssqlTarget::from_url(&format!("mssql://probe@sql01.corp.example/?auth={auth}"))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn negotiate_on_ntlm_warns_kerberos_passes() {
        let t = target("negotiate");
        let kerberos = login_verdict(&t, "kerberos", &info("Kerberos"), None);
        assert_eq!(
            (kerberos.cause, kerberos.detail.contains("kerberos")),
            (None, true)
        );
        // SSPI's own choice of NTLM although the ticket was had.
        let chose = login_verdict(&t, "ntlm", &info("NTLM"), None);
        assert_eq!(chose.cause, Some(Cause::NtlmFallback));
        assert!(chose.detail.contains("chose NTLM"), "{}", chose.detail);
        // The fallback after hop `spn` failed names that reason.
        let fell = login_verdict(&t, "ntlm", &info("NTLM"), Some("hop `spn`: spn_missing: x"));
        assert_eq!(fell.cause, Some(Cause::NtlmFallback));
        assert!(fell.detail.contains("spn_missing"), "{}", fell.detail);
    }
}
