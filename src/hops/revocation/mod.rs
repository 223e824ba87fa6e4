//! Hop `revocation`: the CRL distribution points and the OCSP and CA-issuer URLs of the
//! server's certificate chain, fetched from this zone. A client that checks revocation
//! (Schannel with SqlClient, ODBC Driver 18, libpq with a CRL, Java's PKIX) fetches them during
//! the TLS handshake; blocked at the zone's firewall, the handshake hangs for the fetch's own
//! timeout (15 s and more), even with TrustServerCertificate on some drivers: a firewall rule
//! nobody thinks to ask for. Each URL is fetched within the hop timeout, all at once:
//! - `http://`: a GET of the CRL or CA certificate, or an OCSP request (POST
//!   `application/ocsp-request`, [`dtcprobe_wire::ocsp`]) for the certificate that names it;
//! - `https://`: the TCP connect only (the URL is reachable; what TLS to the CA finds is not
//!   judged); `ldap://HOST`: the TCP connect to its port; `ldap:///CN=...` (no host, Active
//!   Directory Certificate Services' default) is answered by the client's domain controllers
//!   and is skipped (hop `kdc` checks LDAP to them).
//!
//! A URL that cannot be connected to fails with the tcp hop's causes and becomes a firewall
//! request row (tcp, its port, service "certificate revocation"); one that answers with an
//! HTTP error or an OCSP error status warns (`protocol_error`: reachable, but the CA's
//! service is broken). `revocation=off` leaves the hop out; a chain without such URLs (a
//! self-signed certificate) is a `skip` with that reason.

mod fetch;
mod outcome;

use serde_json::{json, Value};

use crate::chain::{HopOutput, RunContext};
use crate::hops::certificate::revocation_urls;
use crate::model::{Cause, HopKind, HopResult, Status};
use crate::tls::SeenChain;
use outcome::Outcome;

/// The service a firewall request names for a blocked URL.
pub const SERVICE: &str = "certificate revocation";

/// The hop, for the chain a login's TLS showed (`None`: no TLS, or the chain could not be read:
/// `why_none` says which).
pub async fn revocation_hop(
    seen: Option<&SeenChain>,
    why_none: &str,
    ctx: &RunContext,
) -> HopOutput<()> {
    let Some(seen) = seen else {
        return HopOutput::ok(
            HopResult::skip(
                HopKind::Revocation,
                format!("no server certificate to check: {why_none}"),
            ),
            (),
        );
    };
    let urls = revocation_urls(seen);
    if urls.is_empty() {
        return HopOutput::ok(
            HopResult::skip(
                HopKind::Revocation,
                "the server's certificate chain names no CRL, OCSP or CA-issuer URL (a \
                 self-signed certificate, or a CA that publishes none): nothing for a client to \
                 fetch",
            ),
            (),
        );
    }
    let limit = ctx.hop_timeout;
    let outcomes =
        futures::future::join_all(urls.into_iter().map(|u| fetch::one(u, ctx, limit))).await;
    HopOutput::ok(judge(&outcomes), ())
}

/// Pure: the hop's verdict from every URL's outcome.
fn judge(outcomes: &[Outcome]) -> HopResult {
    let urls: Vec<Value> = outcomes.iter().map(Outcome::to_json).collect();
    // Failed connects, in the shape the firewall requests read (crate::verdict).
    let attempts: Vec<Value> = outcomes
        .iter()
        .filter(|o| o.status == Status::Fail)
        .filter_map(|o| {
            Some(json!({
                "address": o.address?.to_string(),
                "source": o.source.map(|s| s.to_string()),
                "status": "fail",
                "cause": o.cause?.as_str(),
                "service": SERVICE,
                "url": o.url.url,
            }))
        })
        .collect();
    let summary = |wanted: Status| -> Vec<String> {
        outcomes
            .iter()
            .filter(|o| o.status == wanted)
            .map(|o| format!("{} ({})", o.url.url, o.detail))
            .collect()
    };
    let failed = summary(Status::Fail);
    let warned = summary(Status::Warn);
    let fetched = outcomes.iter().filter(|o| o.status == Status::Pass).count();
    let total = outcomes.len();
    let r = if let Some(first) = outcomes.iter().find(|o| o.status == Status::Fail) {
        HopResult::fail(
            HopKind::Revocation,
            first.cause.unwrap_or(Cause::Timeout),
            format!(
                "{} of {total} revocation URLs of the server's certificate chain cannot be \
                 reached from this zone: {}",
                failed.len(),
                failed.join("; ")
            ),
        )
        .with_hint(
            "clients that check revocation fetch these URLs during the TLS handshake; blocked, \
             the login waits for the fetch to time out (15 s and more) or fails: allow this \
             zone to reach them (tcp/80, the firewall requests below), or through the proxy \
             clients use (WinHTTP: netsh winhttp show proxy)",
        )
    } else if let Some(first) = outcomes.iter().find(|o| o.status == Status::Warn) {
        HopResult::warn(
            HopKind::Revocation,
            first.cause.unwrap_or(Cause::ProtocolError),
            format!(
                "every revocation URL is reachable, but {} answered wrongly: {}",
                warned.len(),
                warned.join("; ")
            ),
        )
        .with_hint(
            "the CA's CRL or OCSP service answers with an error: clients that check revocation \
             treat the certificate's status as unknown (Schannel: the login fails with \"The \
             revocation function was unable to check revocation\"); tell the CA's owners",
        )
    } else if fetched == 0 {
        HopResult::skip(
            HopKind::Revocation,
            format!(
                "no revocation URL could be fetched from here: {}",
                summary(Status::Skip).join("; ")
            ),
        )
    } else {
        HopResult::pass(
            HopKind::Revocation,
            format!(
                "{fetched} of {total} revocation URLs fetched from this zone: {}",
                outcomes
                    .iter()
                    .filter(|o| o.status == Status::Pass)
                    .map(|o| format!("{} ({})", o.url.url, o.detail))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        )
    };
    let mut r = r.with_data("urls", urls);
    if !attempts.is_empty() {
        r = r.with_data("attempts", attempts);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::outcome::outcome;
    use super::*;
    use crate::hops::certificate::{RevocationUrl, UrlKind};

    fn url(kind: UrlKind, url: &str) -> RevocationUrl {
        RevocationUrl {
            kind,
            url: url.into(),
            cert_index: 0,
            ocsp_request: None,
        }
    }

    #[test]
    fn a_blocked_url_fails_with_its_attempt_and_a_broken_one_warns() {
        let mut ok = outcome(url(UrlKind::Crl, "http://198.18.0.1/ca.crl"));
        ok.status = Status::Pass;
        ok.detail = "HTTP 200, 412 bytes".into();
        let mut dropped = outcome(url(UrlKind::Ocsp, "http://198.18.9.9/"));
        dropped.status = Status::Fail;
        dropped.cause = Some(Cause::Timeout);
        dropped.address = Some("198.18.9.9:80".parse().unwrap());
        dropped.detail = "no answer".into();
        let r = judge(&[ok.clone(), dropped]);
        assert_eq!((r.status, r.cause), (Status::Fail, Some(Cause::Timeout)));
        assert!(r.detail.contains("1 of 2"), "{}", r.detail);
        let attempts = r.data["attempts"].as_array().unwrap();
        assert_eq!(attempts.len(), 1);
        assert_eq!(attempts[0]["address"], "198.18.9.9:80");
        assert_eq!(attempts[0]["service"], SERVICE);
        let mut broken = outcome(url(UrlKind::Ocsp, "http://198.18.0.1:8080/"));
        broken.status = Status::Warn;
        broken.cause = Some(Cause::ProtocolError);
        broken.detail = "OCSP unauthorized".into();
        let r = judge(&[ok.clone(), broken]);
        assert_eq!(
            (r.status, r.cause),
            (Status::Warn, Some(Cause::ProtocolError))
        );
        let r = judge(&[ok]);
        assert_eq!(r.status, Status::Pass);
        assert!(r.data.get("attempts").is_none());
    }
}
