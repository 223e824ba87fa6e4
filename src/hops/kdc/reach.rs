//! Whether this host reaches a KDC of a domain, as one fact for other hops to judge by (hop
//! `dtc_config`'s authentication path, issue 28): the domain's KDCs found as hop `kdc` finds
//! them ([`super::discover`]: DNS SRV, else krb5.conf), then a Kerberos AS-REQ over TCP 88 to
//! each of their IPv4 addresses ([`super::probe`]: any Kerberos answer proves the KDC service is
//! reached, not only a port). Not a hop of its own and no UDP, 464 or 389: MSDTC's partners get
//! their tickets over 88, and a domain member falls back from UDP to TCP; hop `kdc` (an `mssql`
//! check with `auth=kerberos`, or kind `kdc`) probes every flow.
//!
//! Platform-independent on purpose: the Windows registry reader gives the domain, this measures
//! from whatever host runs it, so Linux tests run it against a real domain controller.

use std::net::SocketAddr;

use futures::future::join_all;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::discover;
use super::{probe, FLOWS};
use crate::chain::RunContext;

/// Whether a KDC answered: `yes` (at least one on TCP 88), `no` (KDCs found, none answered),
/// `not_checked` (no domain to look up, or no KDC found for it: the detail says why).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reachable {
    Yes,
    No,
    #[default]
    NotChecked,
}

impl Reachable {
    pub fn as_str(self) -> &'static str {
        match self {
            Reachable::Yes => "yes",
            Reachable::No => "no",
            Reachable::NotChecked => "not_checked",
        }
    }
}

/// One KDC address tried (or a KDC host whose name did not resolve: no `address`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct KdcTried {
    pub host: String,
    pub found_by: String,
    /// `IP:88` tried; `None` when the host name did not resolve.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// This host's address towards it (for the firewall request).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// `pass` (a Kerberos answer) or `fail`.
    pub status: String,
    /// The tcp cause of a failure (`timeout`, `refused`, `prohibited`...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl KdcTried {
    /// "dc1.corp.example (198.18.2.10)".
    fn place(&self) -> String {
        match &self.address {
            Some(a) => format!(
                "{} ({})",
                self.host,
                a.rsplit_once(':').map_or(a.as_str(), |(ip, _)| ip)
            ),
            None => format!("{} (no address)", self.host),
        }
    }

    /// "dc1.corp.example (198.18.2.10) TCP 88: timeout", for findings.
    fn describe(&self) -> String {
        let place = format!("{} TCP 88", self.place());
        match (&self.cause, &self.detail) {
            (Some(c), _) => format!("{place}: {c}"),
            (None, Some(d)) => format!("{place}: {d}"),
            (None, None) => place,
        }
    }
}

/// What this host found: the fact, the words for it, every KDC tried. The hop's data keys
/// `kdc_reachable`, `kdc_detail`, `kdcs` (docs/report.md, `dtc_config`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct KdcReachability {
    pub kdc_reachable: Reachable,
    /// Which KDC answered; which were blocked and how; or why it was not checked.
    pub kdc_detail: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub kdcs: Vec<KdcTried>,
}

impl KdcReachability {
    pub fn not_checked(why: impl Into<String>) -> KdcReachability {
        KdcReachability {
            kdc_reachable: Reachable::NotChecked,
            kdc_detail: why.into(),
            kdcs: Vec::new(),
        }
    }

    /// The blocked KDC flows in the shape hop `kdc` reports them (`data.attempts`), so the
    /// firewall request makes a row of each (service "Kerberos").
    pub fn blocked_attempts(&self) -> Vec<Value> {
        self.kdcs
            .iter()
            .filter(|k| k.status == "fail" && k.address.is_some() && k.cause.is_some())
            .map(|k| {
                json!({
                    "address": k.address,
                    "protocol": "tcp",
                    "service": "Kerberos",
                    "source": k.source,
                    "status": "fail",
                    "cause": k.cause,
                })
            })
            .collect()
    }
}

/// Pure: the fact from what was tried. Any answer on 88 is `yes`; none is `no`, naming every
/// KDC and its cause.
pub fn summarize(domain: &str, tried: Vec<KdcTried>) -> KdcReachability {
    let answering: Vec<&KdcTried> = tried.iter().filter(|k| k.status == "pass").collect();
    let (kdc_reachable, kdc_detail) = if let Some(first) = answering.first() {
        (
            Reachable::Yes,
            format!("KDC {} of {domain} answers on TCP 88", first.place()),
        )
    } else {
        let blocked: Vec<String> = tried.iter().map(KdcTried::describe).collect();
        (
            Reachable::No,
            format!(
                "no KDC of {domain} answers on TCP 88 from this host: {}",
                blocked.join(", ")
            ),
        )
    };
    KdcReachability {
        kdc_reachable,
        kdc_detail,
        kdcs: tried,
    }
}

/// Whether this host reaches a KDC of `domain` on TCP 88: discovery and the forward lookups
/// each bounded by the hop timeout, then every address at once, each bounded by it.
pub async fn kdc_reachability(domain: &str, ctx: &RunContext) -> KdcReachability {
    let domain = domain.trim().trim_end_matches('.');
    if domain.is_empty() {
        return KdcReachability::not_checked("this host is in no domain");
    }
    let limit = ctx.hop_timeout;
    let kdcs = match discover::find_kdcs(&ctx.resolver, domain, limit).await {
        Ok(k) if !k.is_empty() => k,
        Ok(_) => {
            return KdcReachability::not_checked(format!("the SRV records of {domain} name no KDC"))
        }
        Err(why) => {
            return KdcReachability::not_checked(format!(
                "no KDC found for {domain} (the domain is the primary DNS suffix; in a disjoint \
                 namespace it is not the AD domain): {why}"
            ))
        }
    };
    let found = discover::resolve_kdcs(&kdcs, &ctx.resolver, limit).await;
    let targets = found.targets;
    let mut tried: Vec<KdcTried> = found
        .lookups
        .into_iter()
        .filter_map(|(kdc, lookup)| lookup.err().map(|e| (kdc, e)))
        .map(|(kdc, e)| KdcTried {
            host: kdc.host.clone(),
            found_by: kdc.found_by.clone(),
            status: "fail".into(),
            detail: Some(format!("does not resolve: {e}")),
            ..KdcTried::default()
        })
        .collect();
    if targets.is_empty() && tried.is_empty() {
        // Hop `kdc` probes IPv4 only, and so does this: an IPv6-only KDC is not judged.
        let hosts: Vec<&str> = kdcs.iter().map(|k| k.host.as_str()).collect();
        return KdcReachability::not_checked(format!(
            "the KDCs of {domain} ({}) have no IPv4 address (IPv6 is not probed)",
            hosts.join(", ")
        ));
    }
    let realm = domain.to_ascii_uppercase();
    let tcp88 = FLOWS[0];
    let probes = join_all(targets.iter().map(|(kdc, ip)| {
        let to = SocketAddr::new(*ip, tcp88.port);
        let realm = realm.clone();
        async move {
            let p = probe(tcp88, &kdc.host, to, "dtcprobe-kdc-probe", &realm, limit).await;
            KdcTried {
                host: kdc.host.clone(),
                found_by: kdc.found_by.clone(),
                address: Some(to.to_string()),
                source: p.source.map(|s| s.to_string()),
                status: if p.failure.is_none() { "pass" } else { "fail" }.into(),
                cause: p.failure.as_ref().map(|v| v.cause.as_str().to_string()),
                detail: p.failure.map(|v| v.detail),
            }
        }
    }))
    .await;
    tried.extend(probes);
    summarize(domain, tried)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tried(host: &str, ip: &str, cause: Option<&str>) -> KdcTried {
        KdcTried {
            host: host.into(),
            found_by: "dns_srv _kerberos._tcp.corp.example".into(),
            address: Some(format!("{ip}:88")),
            source: Some("198.18.1.10".into()),
            status: if cause.is_none() { "pass" } else { "fail" }.into(),
            cause: cause.map(str::to_string),
            detail: cause.map(|c| format!("connect {c}")),
        }
    }

    #[test]
    fn one_answer_is_reachable_none_names_every_blocked_kdc() {
        let r = summarize(
            "corp.example",
            vec![
                tried("dc1.corp.example", "198.18.2.10", Some("timeout")),
                tried("dc2.corp.example", "198.18.2.11", None),
            ],
        );
        assert_eq!(r.kdc_reachable, Reachable::Yes);
        assert!(
            r.kdc_detail.contains("dc2.corp.example (198.18.2.11)"),
            "{r:?}"
        );
        let r = summarize(
            "corp.example",
            vec![
                tried("dc1.corp.example", "198.18.2.10", Some("timeout")),
                tried("dc2.corp.example", "198.18.2.11", Some("refused")),
            ],
        );
        assert_eq!(r.kdc_reachable, Reachable::No);
        assert!(
            r.kdc_detail
                .contains("dc1.corp.example (198.18.2.10) TCP 88: timeout")
                && r.kdc_detail
                    .contains("dc2.corp.example (198.18.2.11) TCP 88: refused"),
            "{r:?}"
        );
        let rows = r.blocked_attempts();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0]["address"], "198.18.2.10:88");
        assert_eq!(rows[0]["service"], "Kerberos");
        assert_eq!(rows[1]["cause"], "refused");
    }

    #[test]
    fn round_trips_through_the_hop_data() {
        let r = summarize(
            "corp.example",
            vec![tried("dc1.corp.example", "198.18.2.10", Some("timeout"))],
        );
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["kdc_reachable"], "no");
        assert_eq!(v["kdcs"][0]["cause"], "timeout");
        assert_eq!(serde_json::from_value::<KdcReachability>(v).unwrap(), r);
        // An older agent's data has none of the keys: not checked.
        let old: KdcReachability = serde_json::from_value(json!({})).unwrap();
        assert_eq!(old.kdc_reachable, Reachable::NotChecked);
    }
}
