//! The login's authentication step, kept apart from the TDS exchange in [`super::login`]: which
//! secret the check needs (asked for before the network hops run) and which credential the
//! LOGIN7 carries. A new way to authenticate (Kerberos) is a new arm here and in [`Auth`].
//!
//! The credential-free login ([`crate::secret::ProbeLogin`], a target with no user) carries a random user name
//! and password: the server's "login failed" (18456) is then the expected answer, proof that the
//! TDS path and the server's login stage work, with no credential on this host (issue 24).

use tiberius::AuthMethod;

use super::classify::Failure;
use super::spec::{Auth, MssqlTarget};
use crate::secret::{self, ProbeLogin, Secret, SecretError};

/// The password the login will need, if its way of authenticating needs one. Asked for before
/// the network hops run, so a prompt does not eat into a hop's time.
pub(super) async fn password(t: &MssqlTarget) -> Result<Option<Secret>, SecretError> {
    if t.credential_free {
        return Ok(None);
    }
    match t.auth {
        Auth::Integrated => Ok(None),
        // Without a user, Kerberos takes the credential cache (kinit), and Windows' SSPI the
        // logged-on user (Negotiate too).
        Auth::Kerberos if t.user.is_none() => Ok(None),
        Auth::Negotiate if t.user.is_none() && cfg!(windows) => Ok(None),
        _ => secret::obtain(t.password.as_ref(), &t.label())
            .await
            .map(Some),
    }
}

/// The credential the LOGIN7 carries: the probe's when there is one.
pub(super) fn method(
    t: &MssqlTarget,
    password: Option<&Secret>,
    probe: Option<&ProbeLogin>,
) -> Result<AuthMethod, Failure> {
    if let Some(p) = probe {
        return Ok(AuthMethod::sql_server(&p.user, p.password.expose()));
    }
    let user = t.user.clone().unwrap_or_default();
    match t.auth {
        Auth::Sql => Ok(AuthMethod::sql_server(
            user,
            password.map(Secret::expose).unwrap_or(""),
        )),
        #[cfg(windows)]
        Auth::Windows => Ok(AuthMethod::windows(
            user,
            password.map(Secret::expose).unwrap_or(""),
        )),
        #[cfg(windows)]
        Auth::Integrated => Ok(AuthMethod::Integrated),
        // Negotiate reaches tiberius's login only when Kerberos could be had; its NTLM fallback
        // is a login of its own (super::negotiate).
        Auth::Kerberos | Auth::Negotiate => super::kerberos::auth_method(),
        #[cfg(not(windows))]
        Auth::Windows | Auth::Integrated => Err(Failure::Protocol(
            "Windows authentication is only available in the Windows build".into(),
        )),
    }
}

/// The scheme a login with `auth` authenticates with (`data.auth_scheme`): SQL Server
/// authentication; NTLM for `windows`, and for `integrated` too, which tiberius runs with the
/// SSPI NTLM package; Kerberos for `kerberos` (the Kerberos mechanism only, so a login that passed
/// used it); for `negotiate` too when it went through this login (its NTLM fallback, and every
/// Kerberos / Negotiate login of the Windows build, run on dtcprobe's own session and report the
/// scheme themselves, super::negotiate).
pub(super) fn scheme(auth: Auth) -> &'static str {
    match auth {
        Auth::Sql => "sql",
        Auth::Windows | Auth::Integrated => "ntlm",
        Auth::Kerberos | Auth::Negotiate => "kerberos",
    }
}
