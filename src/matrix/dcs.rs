//! A zone's domain controllers (`dcs`, `realm` in a `[[zone]]`), turned into the `kdc` checks a
//! rule `kerberos = true` asks of the source zone's agent: TCP 88, UDP 88, TCP 464 and TCP 389 to
//! each DC, judged by hop `kdc` (src/hops/kdc/). Pure: values in, check URLs out, errors as
//! (offset in the file, message) for the caller to place on their line.
//!
//! - `dcs = ["dc1.corp.example", "198.18.4.10"]`: these DCs. The realm (the AS-REQ's realm
//!   field; any KRB-ERROR proves a KDC answers) is the zone's `realm`, else each DC name's DNS
//!   domain in capitals; an address needs `realm`.
//! - `dcs = "srv:corp.example"`: the DCs the *source zone* finds for the domain through DNS SRV
//!   (`_kerberos._tcp`, `_ldap._tcp.dc._msdcs`), as a domain client there does: the agent looks
//!   them up, so the zone's own DNS is tested too. The realm is the domain in capitals.

use crate::hops::kdc::target::{Find, KdcTarget};
use crate::hostport::bracket_v6;

/// One `kdc` check towards a zone's DCs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DcTarget {
    /// What the check's name shows (`dc1.corp.example`, `srv corp.example`).
    pub shown: String,
    pub url: String,
}

/// `dcs = "srv:DOMAIN"`: the prefix that asks for DNS SRV discovery.
const SRV_PREFIX: &str = "srv:";

/// The zone's DCs as `kdc` checks (empty when the zone has no `dcs`). `valid_host` is the
/// matrix's own host check (no port, no URL).
pub fn dc_targets(
    zone: &str,
    dcs: Option<&toml::Spanned<toml::Value>>,
    realm: Option<&toml::Spanned<String>>,
    valid_host: &dyn Fn(&str) -> bool,
) -> Result<Vec<DcTarget>, (usize, String)> {
    let Some(dcs) = dcs else {
        return match realm {
            Some(r) => Err((
                r.span().start,
                format!("zone `{zone}` has a `realm` but no `dcs`"),
            )),
            None => Ok(Vec::new()),
        };
    };
    let at = dcs.span().start;
    let expected = || {
        (
            at,
            format!(
                "zone `{zone}`: `dcs` is a list of domain controllers ([\"dc1.corp.example\", \
                 \"198.18.4.10\"]) or \"srv:DOMAIN\" (found through DNS SRV from the source zone)"
            ),
        )
    };
    match dcs.get_ref() {
        toml::Value::String(s) => {
            let domain = s
                .trim()
                .strip_prefix(SRV_PREFIX)
                .map(str::trim)
                .ok_or_else(expected)?;
            if let Some(r) = realm {
                return Err((
                    r.span().start,
                    format!(
                        "zone `{zone}`: with dcs = \"srv:{domain}\" the realm is the domain in \
                         capitals; remove `realm`"
                    ),
                ));
            }
            if !valid_host(domain) || domain.parse::<std::net::IpAddr>().is_ok() {
                return Err((
                    at,
                    format!("zone `{zone}`: \"srv:{domain}\": expected a DNS domain after srv:"),
                ));
            }
            Ok(vec![DcTarget {
                shown: format!("srv {domain}"),
                url: format!("kdc://{domain}?find=srv"),
            }])
        }
        toml::Value::Array(items) => {
            if items.is_empty() {
                return Err((
                    at,
                    format!("zone `{zone}`: `dcs` is empty (remove it, or name the DCs)"),
                ));
            }
            let realm = realm.map(|r| r.get_ref().trim().to_ascii_uppercase());
            let mut out: Vec<DcTarget> = Vec::new();
            for item in items {
                let host = item.as_str().ok_or_else(expected)?.trim().to_string();
                if !valid_host(&host) {
                    return Err((
                        at,
                        format!(
                            "zone `{zone}`: DC `{host}`: expected a host name or an IP address \
                             (no port, no URL)"
                        ),
                    ));
                }
                let implied = KdcTarget::default_realm(&host, Find::Named);
                let url = match (&realm, &implied) {
                    (Some(r), Some(i)) if r == i => format!("kdc://{}", bracket_v6(&host)),
                    (Some(r), _) => format!("kdc://{}?realm={r}", bracket_v6(&host)),
                    (None, Some(_)) => format!("kdc://{}", bracket_v6(&host)),
                    (None, None) => {
                        return Err((
                            at,
                            format!(
                                "zone `{zone}`: DC `{host}` has no DNS domain to take the realm \
                                 from: give the zone `realm = \"CORP.EXAMPLE\"`"
                            ),
                        ))
                    }
                };
                if !out.iter().any(|d| d.url == url) {
                    out.push(DcTarget { shown: host, url });
                }
            }
            Ok(out)
        }
        _ => Err(expected()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(toml_text: &str) -> toml::Spanned<toml::Value> {
        #[derive(serde::Deserialize)]
        struct T {
            dcs: toml::Spanned<toml::Value>,
        }
        toml::from_str::<T>(toml_text).unwrap().dcs
    }

    fn any_host(h: &str) -> bool {
        !h.is_empty() && !h.contains([':', '/']) || h.parse::<std::net::IpAddr>().is_ok()
    }

    #[test]
    fn lists_and_srv_become_kdc_urls() {
        let dcs = value(r#"dcs = ["dc1.corp.example", "dc1.corp.example", "dc2.ad.corp"]"#);
        let got = dc_targets("dc", Some(&dcs), None, &any_host).unwrap();
        let urls: Vec<&str> = got.iter().map(|d| d.url.as_str()).collect();
        assert_eq!(urls, ["kdc://dc1.corp.example", "kdc://dc2.ad.corp"]);
        let srv = value(r#"dcs = "srv:corp.example""#);
        let got = dc_targets("dc", Some(&srv), None, &any_host).unwrap();
        assert_eq!(
            got,
            [DcTarget {
                shown: "srv corp.example".into(),
                url: "kdc://corp.example?find=srv".into()
            }]
        );
        // Every URL is one kind `kdc` reads.
        for url in ["kdc://dc1.corp.example", "kdc://corp.example?find=srv"] {
            crate::target::Target::from_url(url).unwrap();
        }
    }

    #[test]
    fn an_address_needs_the_zone_s_realm() {
        let dcs = value(r#"dcs = ["198.18.4.10", "dc1.corp.example"]"#);
        let (_, e) = dc_targets("dc", Some(&dcs), None, &any_host).unwrap_err();
        assert!(e.contains("realm = "), "{e}");
        let realm: toml::Spanned<String> = {
            #[derive(serde::Deserialize)]
            struct T {
                realm: toml::Spanned<String>,
            }
            toml::from_str::<T>("realm = \"corp.example\"")
                .unwrap()
                .realm
        };
        let got = dc_targets("dc", Some(&dcs), Some(&realm), &any_host).unwrap();
        assert_eq!(got[0].url, "kdc://198.18.4.10?realm=CORP.EXAMPLE");
        assert_eq!(got[1].url, "kdc://dc1.corp.example");
        crate::target::Target::from_url(&got[0].url).unwrap();
        // srv: takes no realm; a realm without dcs is an error too.
        let srv = value(r#"dcs = "srv:corp.example""#);
        assert!(dc_targets("dc", Some(&srv), Some(&realm), &any_host)
            .unwrap_err()
            .1
            .contains("remove `realm`"));
        assert!(dc_targets("dc", None, Some(&realm), &any_host)
            .unwrap_err()
            .1
            .contains("no `dcs`"));
        for bad in [
            r#"dcs = "corp.example""#,
            r#"dcs = []"#,
            r#"dcs = [1]"#,
            r#"dcs = "srv:198.18.4.10""#,
            r#"dcs = 5"#,
        ] {
            assert!(
                dc_targets("dc", Some(&value(bad)), None, &any_host).is_err(),
                "{bad}"
            );
        }
    }
}
