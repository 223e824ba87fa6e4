//! Hop `spn` (mssql with `auth=kerberos`, docs/kerberos.md): asks the KDC for a service ticket
//! for the SQL Server's SPN, as the drivers do: `MSSQLSvc/<fqdn>:<port>`, then, for a named
//! instance, `MSSQLSvc/<fqdn>:<instance>`. A ticket is a `pass` naming the SPN and the ticket's
//! encryption type (read from the AP-REQ the library built: the ticket carries it in clear).
//! Failures are the KDC's own errors: `spn_missing` (KDC_ERR_S_PRINCIPAL_UNKNOWN), `clock_skew`
//! (KRB_AP_ERR_SKEW, or a KDC clock more than 5 minutes off, measured by hop `kdc`), `auth_failed`
//! (the client's own credentials), `kdc_error` (any other, named).
//!
//! The ticket comes from MIT krb5 through GSS-API ([`gssapi`], Unix builds with the cargo feature
//! `kerberos`), or from Windows' SSPI Kerberos package ([`sspi`], the Windows build: the
//! logged-on user, or the given user and password; its `SEC_E_*` statuses map to the same causes,
//! [`sspi_status`]). A Unix build without the feature requests none (the hop is `skip` with
//! cause `unsupported` there, docs/kerberos.md). The Windows side is confirmed only on a real
//! Windows host (docs/kerberos.md says what ran under wine).

#[cfg(all(unix, feature = "kerberos"))]
mod gssapi;
#[cfg(all(unix, feature = "kerberos"))]
mod ldap_search;
mod request;
#[cfg(windows)]
pub mod sspi;
pub mod sspi_status;

use std::time::Duration;

use serde_json::json;

use crate::chain::HopOutput;
use crate::hops::kdc::KdcFindings;
use crate::model::{Cause, HopKind, HopResult};
use dtcprobe_wire::kerberos as krb;

/// Kerberos' default tolerance between two clocks (Windows: "Maximum tolerance for computer
/// clock synchronization", 5 minutes).
pub const MAX_SKEW_SECONDS: i64 = 300;

/// Why this build asks for no ticket: a Unix build has Kerberos only with the cargo feature
/// `kerberos` (it links MIT krb5; the release binaries of `scripts/dist` and the test build have
/// it, a plain `cargo build` does not). The Windows build always has SSPI.
pub const NO_KERBEROS: &str = "this build has no Kerberos: build with `--features kerberos` (it \
     links MIT krb5; docs/kerberos.md), or use the release binary from scripts/dist";

/// Whether this build can ask for tickets: SSPI on Windows, MIT krb5 with the feature on Unix.
pub const HAS_KERBEROS: bool = cfg!(any(windows, all(unix, feature = "kerberos")));

pub use request::{SpnRequest, Ticket, TicketError};

/// Hop `spn`.
pub async fn spn_hop(
    req: &SpnRequest,
    kdc: Option<&KdcFindings>,
    limit: Duration,
) -> HopOutput<Ticket> {
    if !HAS_KERBEROS {
        return HopOutput::stop(HopResult::unsupported(HopKind::Spn, NO_KERBEROS));
    }
    let offset = kdc.and_then(|k| k.clock_offset_seconds);
    let mut tried = Vec::new();
    let mut first_error: Option<(String, TicketError)> = None;
    let mut ticket = None;
    let mut searched = Vec::new();
    for spn in req.spns() {
        searched.push(spn.clone());
        match request_ticket(req, &spn, limit).await {
            Ok(t) => {
                ticket = Some(t);
                break;
            }
            Err(e) => {
                tried.push(format!("{spn}: {}", e.message));
                if first_error.is_none() {
                    first_error = Some((spn, e));
                }
            }
        }
    }
    // Where LDAP answers, who holds each SPN tried: two accounts is the finding, whatever the
    // KDC said (Samba answers "not found" for such an SPN; Windows issues a ticket one of the
    // two services cannot decrypt).
    let holders = match &req.ldap {
        Some(dc) => Some(spn_holders(req, dc, &searched, limit).await),
        None => None,
    };
    let duplicate = holders.as_ref().and_then(|h| {
        h.iter().find_map(|(spn, found)| match found {
            Ok(dns) if dns.len() > 1 => Some((spn.clone(), dns.clone())),
            _ => None,
        })
    });
    let result = match (duplicate, &ticket, &first_error) {
        (Some((spn, dns)), _, _) => HopResult::fail(
            HopKind::Spn,
            Cause::SpnDuplicate,
            format!(
                "SPN {spn} is registered on {} accounts: {}",
                dns.len(),
                dns.join("; ")
            ),
        )
        .with_hint(format!(
            "an SPN must be on exactly one account (setspn -X lists duplicates): remove it from \
             every account but the SQL Server's service account (setspn -D {spn} DOMAIN\\account)"
        ))
        .with_data("spn", spn),
        (None, Some(t), _) => pass(t, &tried, offset),
        (None, None, Some((spn, e))) => fail(req, spn, e, &tried, offset),
        (None, None, None) => HopResult::fail(HopKind::Spn, Cause::Internal, "no SPN to try"),
    };
    let result = match holders {
        Some(h) => result.with_data("spn_accounts", holders_data(&h)),
        None => result,
    };
    let result = with_offset(result, offset);
    match ticket {
        Some(t) if result.lets_chain_continue() => HopOutput::ok(result, t),
        _ => HopOutput::stop(result),
    }
}

/// Per SPN: the accounts holding it, or why LDAP could not tell.
async fn spn_holders(
    req: &SpnRequest,
    dc: &(String, std::net::IpAddr),
    spns: &[String],
    limit: Duration,
) -> Vec<(String, Result<Vec<String>, String>)> {
    let mut out = Vec::new();
    for spn in spns {
        #[cfg(all(unix, feature = "kerberos"))]
        let found = {
            let (req, dc, spn) = (req.clone(), dc.clone(), spn.clone());
            let work =
                tokio::task::spawn_blocking(move || gssapi::spn_accounts(&req, &dc, &spn, limit));
            match tokio::time::timeout(limit, work).await {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => Err(format!("the LDAP search failed: {e}")),
                Err(_) => Err(format!("no LDAP answer within {limit:?}")),
            }
        };
        #[cfg(not(all(unix, feature = "kerberos")))]
        let found: Result<Vec<String>, String> = {
            let _ = (req, dc, limit);
            Err("not searched in this build".into())
        };
        out.push((spn.clone(), found));
    }
    out
}

fn holders_data(h: &[(String, Result<Vec<String>, String>)]) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    for (spn, found) in h {
        map.insert(
            spn.clone(),
            match found {
                Ok(dns) => json!(dns),
                Err(why) => json!(format!("not searched: {why}")),
            },
        );
    }
    serde_json::Value::Object(map)
}

fn with_offset(r: HopResult, offset: Option<i64>) -> HopResult {
    match offset {
        Some(o) => r.with_data("clock_offset_seconds", o),
        None => r,
    }
}

async fn request_ticket(
    req: &SpnRequest,
    spn: &str,
    limit: Duration,
) -> Result<Ticket, TicketError> {
    // The library's calls block (they talk to the KDC): a blocking thread, bounded by `limit`.
    #[cfg(any(windows, all(unix, feature = "kerberos")))]
    {
        #[cfg(all(unix, feature = "kerberos"))]
        let (library, ask) = ("Kerberos library", gssapi::ticket);
        #[cfg(windows)]
        let (library, ask) = ("SSPI", sspi::ticket);
        let (req, spn_owned) = (req.clone(), spn.to_string());
        let work = tokio::task::spawn_blocking(move || ask(&req, &spn_owned));
        match tokio::time::timeout(limit, work).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(TicketError {
                krb_code: None,
                message: format!("the {library} call failed: {e}"),
                credentials: false,
            }),
            Err(_) => Err(TicketError {
                krb_code: None,
                message: format!("no ticket within {limit:?} (the KDCs did not answer in time)"),
                credentials: false,
            }),
        }
    }
    #[cfg(not(any(windows, all(unix, feature = "kerberos"))))]
    {
        let _ = (req, spn, limit);
        Err(TicketError {
            krb_code: None,
            message: NO_KERBEROS.into(),
            credentials: false,
        })
    }
}

/// Pure: the pass result for a ticket, a `warn clock_skew` when hop `kdc` measured this host's
/// clock more than 5 minutes off the KDC's (MIT krb5 compensated for this ticket; Windows clients
/// and SQL Server's own checks do not).
fn pass(ticket: &Ticket, tried: &[String], offset: Option<i64>) -> HopResult {
    let enctype = ticket.enctype.map(krb::enctype_name);
    let detail = format!(
        "service ticket for {} ({})",
        ticket.spn,
        enctype.as_deref().unwrap_or("encryption type not read")
    );
    let r = match offset {
        Some(o) if o.abs() > MAX_SKEW_SECONDS => HopResult::warn(
            HopKind::Spn,
            Cause::ClockSkew,
            format!("{detail}, but this host's clock is {o} s off the KDC's"),
        )
        .with_hint(HINT_SKEW),
        _ => HopResult::pass(HopKind::Spn, detail),
    };
    let r = r.with_data("spn", ticket.spn.clone());
    let r = match ticket.enctype {
        Some(e) => r
            .with_data("enctype", krb::enctype_name(e))
            .with_data("enctype_number", e),
        None => r,
    };
    if tried.is_empty() {
        r
    } else {
        r.with_data("spns_failed", json!(tried))
    }
}

pub const HINT_SKEW: &str = "Kerberos refuses clocks more than 5 minutes apart (KRB_AP_ERR_SKEW): \
sync this host and the SQL Server with the domain's time (w32tm /resync on Windows, NTP/chrony \
pointed at the domain controllers elsewhere)";

/// Pure: the failed result for the first SPN's error.
fn fail(
    req: &SpnRequest,
    spn: &str,
    e: &TicketError,
    tried: &[String],
    offset: Option<i64>,
) -> HopResult {
    let all = tried.join("; ");
    let r = match e.krb_code {
        Some(7) => HopResult::fail(
            HopKind::Spn,
            Cause::SpnMissing,
            format!("the KDC knows no account with SPN {spn} (KDC_ERR_S_PRINCIPAL_UNKNOWN); tried {all}"),
        )
        .with_hint(format!(
            "register the SPN on the SQL Server's service account: setspn -S {spn} DOMAIN\\account \
             (a domain admin, or the account itself with 'Write servicePrincipalName'); until \
             then drivers fall back to NTLM, and linked servers / double hops fail"
        )),
        Some(37) => HopResult::fail(
            HopKind::Spn,
            Cause::ClockSkew,
            format!(
                "KRB_AP_ERR_SKEW for {spn}{}",
                offset.map(|o| format!(": this host's clock is {o} s off the KDC's")).unwrap_or_default()
            ),
        )
        .with_hint(HINT_SKEW),
        _ if e.credentials => HopResult::fail(
            HopKind::Spn,
            Cause::AuthFailed,
            format!(
                "no Kerberos credentials for {}: {}",
                req.client_principal().unwrap_or_else(|| "the credential cache".into()),
                e.message
            ),
        )
        .with_hint(
            "check the user name (user@REALM), the password source, or the credential cache \
             (KRB5CCNAME, klist)",
        ),
        Some(code) => HopResult::fail(
            HopKind::Spn,
            Cause::KdcError,
            format!("{} for {spn}: {}", krb::error_name(code), e.message),
        )
        .with_data("kdc_error", krb::error_name(code)),
        None => HopResult::fail(
            HopKind::Spn,
            Cause::KdcError,
            format!("no ticket for {spn}: {}", e.message),
        ),
    };
    r.with_data("spn", spn.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(instance: Option<&str>) -> SpnRequest {
        SpnRequest {
            host: "sql01.corp.example".into(),
            port: 1433,
            instance: instance.map(str::to_string),
            realm: "CORP.EXAMPLE".into(),
            user: Some("CORP\\probe".into()),
            password: None,
            keep_in: None,
            ldap: None,
        }
    }

    #[test]
    fn spns_as_the_drivers_try_them() {
        assert_eq!(req(None).spns(), vec!["MSSQLSvc/sql01.corp.example:1433"]);
        assert_eq!(
            req(Some("SQLEXPRESS")).spns()[1],
            "MSSQLSvc/sql01.corp.example:SQLEXPRESS"
        );
        assert_eq!(
            req(None).client_principal().as_deref(),
            Some("probe@CORP.EXAMPLE")
        );
    }

    #[test]
    fn kerberos_errors_become_causes() {
        let e = |code| TicketError {
            krb_code: Some(code),
            message: "m".into(),
            credentials: false,
        };
        let spn = "MSSQLSvc/sql01.corp.example:1433";
        assert_eq!(
            fail(&req(None), spn, &e(7), &[], None).cause,
            Some(Cause::SpnMissing)
        );
        let skew = fail(&req(None), spn, &e(37), &[], Some(-900));
        assert_eq!(skew.cause, Some(Cause::ClockSkew));
        assert!(skew.detail.contains("-900 s"), "{}", skew.detail);
        let other = fail(&req(None), spn, &e(14), &[], None);
        assert_eq!(other.cause, Some(Cause::KdcError));
        assert_eq!(other.data["kdc_error"], "KDC_ERR_ETYPE_NOSUPP");
    }

    #[test]
    fn a_ticket_with_a_skewed_clock_warns() {
        let t = Ticket {
            spn: "MSSQLSvc/h:1433".into(),
            enctype: Some(18),
            token: vec![],
            ccache: None,
        };
        assert_eq!(pass(&t, &[], Some(12)).cause, None);
        let r = pass(&t, &[], Some(1200));
        assert_eq!(r.cause, Some(Cause::ClockSkew));
        assert_eq!(r.data["enctype"], "aes256-cts-hmac-sha1-96");
    }
}

/// Opt-in tests of the SSPI side against a real KDC: a Windows host in a domain, or wine in the
/// client namespace of tests/kerberos_samba.rs (which runs this test itself, docs/kerberos.md).
#[cfg(all(test, windows))]
mod sspi_host_tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }

    /// DTCPROBE_SSPI_SPN: the SPN to ask for; DTCPROBE_SSPI_EXPECT: `pass` or a cause
    /// (`spn_missing`...); DTCPROBE_SSPI_USER / _PASSWORD / _REALM: explicit credentials (else
    /// the logged-on user).
    #[test]
    #[ignore = "needs a domain's KDC: set DTCPROBE_SSPI_SPN and DTCPROBE_SSPI_EXPECT (docs/kerberos.md)"]
    fn sspi_ticket_against_a_real_kdc() {
        let spn = env("DTCPROBE_SSPI_SPN").expect("DTCPROBE_SSPI_SPN");
        let expect = env("DTCPROBE_SSPI_EXPECT").expect("DTCPROBE_SSPI_EXPECT");
        let realm = env("DTCPROBE_SSPI_REALM").unwrap_or_default();
        let user = env("DTCPROBE_SSPI_USER");
        let password = env("DTCPROBE_SSPI_PASSWORD");
        let got = sspi::ticket_for_test(user.as_deref(), &realm, password.as_deref(), &spn);
        let req = SpnRequest {
            host: String::new(),
            port: 0,
            instance: None,
            realm,
            user,
            password: None,
            ldap: None,
            keep_in: None,
        };
        let result = match &got {
            Ok(t) => pass(t, &[], None),
            Err(e) => fail(&req, &spn, e, &[], None),
        };
        println!("SSPI-RESULT {}", serde_json::to_string(&result).unwrap());
        let cause = result.cause.map(|c| c.as_str()).unwrap_or("pass");
        assert_eq!(cause, expect, "{}", result.detail);
        if let Ok(t) = got {
            assert!(
                t.enctype.is_some(),
                "no encryption type read from the AP-REQ"
            );
        }
    }
}
