//! A service ticket through MIT krb5's GSS-API (the `libgssapi` crate): credentials from the
//! password (acquired into a private in-memory cache, never the user's) or from the default
//! credential cache (`KRB5CCNAME`), then the first step of a Kerberos security context towards
//! the SPN, which makes the library fetch the ticket from the KDC. Blocking: called on a
//! blocking thread.

use libgssapi::context::{ClientCtx, CtxFlags};
use libgssapi::credential::{Cred, CredUsage};
use libgssapi::error::Error as GssError;
use libgssapi::name::Name;
use libgssapi::oid::{OidSet, GSS_MECH_KRB5, GSS_NT_KRB5_PRINCIPAL};

use super::request::{SpnRequest, Ticket, TicketError};
use dtcprobe_wire::kerberos as krb;

/// MIT krb5's error table base (`ERROR_TABLE_BASE_krb5`): codes base+0 .. base+127 are the
/// RFC 4120 protocol errors.
const KRB5_ERROR_BASE: i64 = -1_765_328_384;

/// The client's credentials: from the password, else the default credential cache.
fn credentials(req: &SpnRequest) -> Result<Cred, TicketError> {
    let mechs = krb5_mechs().map_err(|e| library(&e, false))?;
    Ok(match (&req.password, req.client_principal()) {
        (Some(password), Some(principal)) => {
            let name = Name::new(principal.as_bytes(), Some(GSS_NT_KRB5_PRINCIPAL))
                .map_err(|e| library(&e, true))?;
            Cred::acquire_with_password(
                Some(&name),
                password.expose(),
                None,
                CredUsage::Initiate,
                Some(&mechs),
            )
            .map_err(|e| library(&e, true))?
        }
        _ => Cred::acquire(None, None, CredUsage::Initiate, Some(&mechs))
            .map_err(|e| library(&e, true))?,
    })
}

/// The accounts holding `spn`, from the DC's LDAP (see [`super::ldap_search`]).
pub fn spn_accounts(
    req: &SpnRequest,
    dc: &(String, std::net::IpAddr),
    spn: &str,
    limit: std::time::Duration,
) -> Result<Vec<String>, String> {
    let cred = credentials(req).map_err(|e| e.message)?;
    super::ldap_search::accounts_with_spn(&dc.0, dc.1, &req.realm, cred, spn, limit)
}

pub fn ticket(req: &SpnRequest, spn: &str) -> Result<Ticket, TicketError> {
    let cred = credentials(req)?;
    let target = format!("{spn}@{}", req.realm);
    let target = Name::new(target.as_bytes(), Some(GSS_NT_KRB5_PRINCIPAL))
        .map_err(|e| library(&e, false))?;
    let kept = cred.clone();
    let mut ctx = ClientCtx::new(
        Some(cred),
        target,
        CtxFlags::GSS_C_MUTUAL_FLAG,
        Some(GSS_MECH_KRB5),
    );
    match ctx.step(None, None) {
        Ok(Some(token)) => {
            let token = token.to_vec();
            // Now that the credentials hold a TGT, keep them for the login (password only:
            // a credential cache's own credentials are already where the library looks).
            let ccache = match (&req.keep_in, &req.password) {
                (Some(name), Some(_)) => kept
                    .store_into(name, true, false, CredUsage::Initiate, Some(GSS_MECH_KRB5))
                    .ok()
                    .map(|_| name.clone()),
                _ => None,
            };
            Ok(Ticket {
                spn: spn.to_string(),
                enctype: krb::ticket_enctype(&token),
                token,
                ccache,
            })
        }
        Ok(None) => Err(TicketError {
            krb_code: None,
            message: "the library produced no token".into(),
            credentials: false,
        }),
        Err(e) => {
            // The password is checked when the first ticket is asked for: a wrong one or an
            // unknown client surfaces here, and is the client's problem, not the SPN's.
            let code = protocol_code(&e);
            let credentials = matches!(code, Some(6 | 18 | 23 | 24));
            Err(TicketError {
                krb_code: code,
                message: e.to_string(),
                credentials,
            })
        }
    }
}

fn krb5_mechs() -> Result<OidSet, GssError> {
    let mut set = OidSet::new();
    set.add(GSS_MECH_KRB5)?;
    Ok(set)
}

fn library(e: &GssError, credentials: bool) -> TicketError {
    TicketError {
        krb_code: protocol_code(e),
        message: e.to_string(),
        credentials: credentials || matches!(protocol_code(e), Some(6 | 18 | 23 | 24)),
    }
}

/// The RFC 4120 error number behind a GSS-API failure, when its minor status is one.
fn protocol_code(e: &GssError) -> Option<i32> {
    let minor = i64::from(e.minor as i32);
    let n = minor - KRB5_ERROR_BASE;
    (0..128).contains(&n).then_some(n as i32)
}
