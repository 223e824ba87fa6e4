//! Kind `kdc`: hop `kdc` on its own, towards named domain controllers or the ones a domain's DNS
//! SRV records give. It exists for checks run from a zone without any credential (a matrix rule
//! `kerberos = true`, run by the source zone's agent, and that zone's `watch`): TCP 88, UDP 88,
//! TCP 464 and TCP 389 to each DC, judged exactly as hop `kdc` of an `auth=kerberos` login
//! judges them ([`super::probe_kdcs`]). The AS-REQ asks for a principal no directory holds
//! (`dtcprobe-kdc-probe`), so it carries no credential and locks no account.
//!
//! - `kdc://DC[?realm=REALM]`: that domain controller (a name or an address). The realm (only
//!   the AS-REQ's realm field: any KRB-ERROR proves a KDC answers) defaults to the DC name's DNS
//!   domain in capitals; an address needs `realm=`.
//! - `kdc://DOMAIN?find=srv`: the DCs this host finds for DOMAIN as a domain client does
//!   ([`super::discover::find_kdcs`]: SRV `_kerberos._tcp.DOMAIN`, then
//!   `_ldap._tcp.dc._msdcs.DOMAIN`, then krb5.conf); the realm is DOMAIN in capitals.

use crate::chain::{Chain, RunContext};
use crate::check_table::{RawCheck, TargetError};
use crate::hops::kind::{Kind, Retarget};
use crate::hostport::{bracket_v6, url_host, TargetUrl};
use crate::model::{HopKind, HopResult};

use super::discover::KdcHost;

/// How a `kdc` check finds its domain controllers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Find {
    /// The host is the domain controller.
    Named,
    /// The host is a DNS domain; its DCs come from DNS SRV (then krb5.conf).
    Srv,
}

#[derive(Debug, Clone, PartialEq)]
pub struct KdcTarget {
    /// A domain controller ([`Find::Named`]) or a DNS domain ([`Find::Srv`]).
    pub host: String,
    pub realm: String,
    pub find: Find,
}

/// `found_by` in `data.kdcs` for a DC the check names.
pub const FOUND_BY_TARGET: &str = "target";

impl KdcTarget {
    /// The realm a DC name or a domain implies: its DNS domain in capitals (`dc1.corp.example`
    /// -> `CORP.EXAMPLE`; a domain is its own). `None` for an address or a single-label name.
    pub fn default_realm(host: &str, find: Find) -> Option<String> {
        if host.parse::<std::net::IpAddr>().is_ok() {
            return None;
        }
        let domain = match find {
            Find::Srv => host,
            Find::Named => host.split_once('.').map(|(_, d)| d)?,
        };
        (!domain.is_empty()).then(|| domain.trim_end_matches('.').to_ascii_uppercase())
    }

    fn new(host: String, realm: Option<String>, find: Find) -> Result<KdcTarget, String> {
        let realm = realm.filter(|r| !r.trim().is_empty());
        if find == Find::Srv && host.parse::<std::net::IpAddr>().is_ok() {
            return Err(format!(
                "find=srv needs a DNS domain, not the address `{host}`"
            ));
        }
        if find == Find::Srv && realm.is_some() {
            // Active Directory's realm is its DNS domain in capitals, and the SRV names are
            // built from it: a second name would only disagree.
            return Err("find=srv takes no realm: the realm is the domain in capitals".into());
        }
        let realm = match realm {
            Some(r) => r.trim().to_ascii_uppercase(),
            None => Self::default_realm(&host, find).ok_or_else(|| {
                format!(
                    "no realm for `{host}`: give realm=REALM (the Kerberos realm, e.g. \
                     CORP.EXAMPLE), or name the DC by its fully qualified name"
                )
            })?,
        };
        Ok(KdcTarget { host, realm, find })
    }
}

impl Kind for KdcTarget {
    const NAME: &'static str = "kdc";
    const KEYS: &'static [&'static str] = &[];
    const SERVICE: Option<&'static str> = Some("Kerberos");
    /// The agent's `allow` entry `DC:88` (or a bare `DC`) admits the check; with `find=srv` it
    /// is the domain's name that must be allowed (the DCs are whatever its DNS names).
    const DEFAULT_PORT: Option<u16> = Some(88);
    /// No credential: the probe's AS-REQ names a principal no directory holds.
    const AGENT_RUNS: bool = true;
    const RETARGET: Retarget = Retarget::Url;

    fn from_url(url: &TargetUrl) -> Result<Self, TargetError> {
        let parsed = url.url()?;
        let host = url_host(&parsed).ok_or_else(|| url.invalid("no host"))?;
        if parsed.port().is_some() || !matches!(parsed.path(), "" | "/") {
            return Err(url.invalid(
                "kdc://DC[?realm=REALM] or kdc://DOMAIN?find=srv takes no port or path (the \
                 probes use TCP/UDP 88, TCP 464 and TCP 389)",
            ));
        }
        let (mut realm, mut find) = (None, Find::Named);
        for (key, value) in parsed.query_pairs() {
            match key.as_ref() {
                "realm" => realm = Some(value.into_owned()),
                "find" if value == "srv" => find = Find::Srv,
                "find" => {
                    return Err(url.invalid(format!(
                        "find={value}: the only way to find DCs is find=srv (DNS SRV records)"
                    )))
                }
                other => {
                    return Err(
                        url.invalid(format!("unknown parameter `{other}` (known: realm, find)"))
                    )
                }
            }
        }
        KdcTarget::new(host, realm, find).map_err(|m| url.invalid(m))
    }

    fn from_config(raw: &RawCheck, host: String) -> Result<Self, TargetError> {
        let offset = raw.kind.as_ref().map(|k| k.span().start).unwrap_or(0);
        KdcTarget::new(host, None, Find::Named)
            .map_err(|message| TargetError::At { offset, message })
    }

    fn display(&self) -> String {
        let mut s = format!("kdc://{}", bracket_v6(&self.host));
        let implied = Self::default_realm(&self.host, self.find);
        let mut q = Vec::new();
        if self.find == Find::Srv {
            q.push("find=srv".to_string());
        }
        if implied.as_deref() != Some(self.realm.as_str()) {
            q.push(format!("realm={}", self.realm));
        }
        if !q.is_empty() {
            s.push('?');
            s.push_str(&q.join("&"));
        }
        s
    }

    fn host(&self) -> &str {
        &self.host
    }

    async fn run(&self, ctx: &RunContext) -> Vec<HopResult> {
        let mut chain = Chain::new(vec![HopKind::Kdc], ctx.hop_timeout);
        // Finding the DCs (SRV, then each name's address) comes before the probes, which are
        // bounded by the hop timeout: the hop gets room for both.
        let limit = ctx.hop_timeout * 3;
        let hop = async {
            match self.find {
                Find::Named => {
                    let named = [KdcHost {
                        host: self.host.clone(),
                        found_by: FOUND_BY_TARGET.to_string(),
                    }];
                    super::probe_kdcs(&self.realm, &named, None, ctx).await
                }
                // The realm is the domain in capitals: the login's hop as it is.
                Find::Srv => super::kdc_hop(&self.realm, None, ctx).await,
            }
        };
        chain.step_with_timeout(HopKind::Kdc, limit, hop).await;
        chain.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hops::Target;

    fn kdc(url: &str) -> KdcTarget {
        match Target::from_url(url) {
            Ok(Target::Kdc(t)) => t,
            other => panic!("{url}: {other:?}"),
        }
    }

    #[test]
    fn urls_name_a_dc_or_a_domain_and_the_realm_follows() {
        let t = kdc("kdc://dc1.corp.example");
        assert_eq!((t.realm.as_str(), t.find), ("CORP.EXAMPLE", Find::Named));
        assert_eq!(t.display(), "kdc://dc1.corp.example");
        let t = kdc("kdc://corp.example?find=srv");
        assert_eq!((t.realm.as_str(), t.find), ("CORP.EXAMPLE", Find::Srv));
        assert_eq!(t.display(), "kdc://corp.example?find=srv");
        let t = kdc("kdc://198.18.2.10?realm=corp.example");
        assert_eq!(t.realm, "CORP.EXAMPLE");
        assert_eq!(t.display(), "kdc://198.18.2.10?realm=CORP.EXAMPLE");
        // Every rendering parses back to the same target.
        for url in [
            "kdc://dc1.corp.example?realm=OTHER.EXAMPLE",
            "kdc://[2001:db8::1]?realm=X.TEST",
        ] {
            let t = kdc(url);
            assert_eq!(kdc(&t.display()), t, "{url}");
        }
        for (bad, needle) in [
            ("kdc://198.18.2.10", "realm=REALM"),
            ("kdc://dc1", "realm=REALM"),
            ("kdc://dc1.corp.example:88", "no port"),
            ("kdc://dc1.corp.example?find=dns", "find=srv"),
            ("kdc://198.18.2.10?find=srv", "DNS domain"),
            (
                "kdc://corp.example?find=srv&realm=AD.CORP",
                "takes no realm",
            ),
            ("kdc://dc1.corp.example?port=88", "unknown parameter"),
            ("kdc://u@dc1.corp.example", "no user"),
        ] {
            let e = Target::from_url(bad).expect_err(bad).to_string();
            assert!(e.contains(needle), "{bad}: {e}");
        }
    }
}
