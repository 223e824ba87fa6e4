//! Where a realm's KDCs are, as a Kerberos client finds them: DNS SRV records first
//! (`_kerberos._tcp.REALM`, then the domain controllers' `_ldap._tcp.dc._msdcs.DOMAIN`: on
//! Active Directory every DC is a KDC), else the `kdc =` lines of the realm in krb5.conf
//! (`KRB5_CONFIG`, else /etc/krb5.conf).

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::resolver::{DnsError, DnsResolver};

/// One KDC host and how it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KdcHost {
    pub host: String,
    /// `dns_srv` (with the record's name) or `krb5_conf` (with the file).
    pub found_by: String,
}

/// The KDCs' IPv4 addresses as this host resolves them (hop `kdc` and the KDC reachability
/// of MSDTC's authentication path both probe IPv4 only): each KDC looked up in turn, each
/// lookup bounded by `limit`.
pub struct KdcAddresses<'a> {
    /// Every KDC with the outcome of its lookup (its IPv4 addresses, or the error in words).
    pub lookups: Vec<(&'a KdcHost, Result<Vec<IpAddr>, String>)>,
    /// Each address once, with the first KDC that has it.
    pub targets: Vec<(&'a KdcHost, IpAddr)>,
}

pub async fn resolve_kdcs<'a>(
    kdcs: &'a [KdcHost],
    resolver: &DnsResolver,
    limit: Duration,
) -> KdcAddresses<'a> {
    let mut found = KdcAddresses {
        lookups: Vec::with_capacity(kdcs.len()),
        targets: Vec::new(),
    };
    for kdc in kdcs {
        let lookup = match resolver.forward(&kdc.host, limit).await {
            Ok(addrs) => {
                let v4: Vec<IpAddr> = addrs.into_iter().filter(IpAddr::is_ipv4).collect();
                for &a in &v4 {
                    if !found.targets.iter().any(|(_, known)| *known == a) {
                        found.targets.push((kdc, a));
                    }
                }
                Ok(v4)
            }
            Err(e) => Err(e.to_string()),
        };
        found.lookups.push((kdc, lookup));
    }
    found
}

/// The KDCs of `realm`, or why none was found (every source tried, in words).
pub async fn find_kdcs(
    resolver: &DnsResolver,
    realm: &str,
    limit: Duration,
) -> Result<Vec<KdcHost>, String> {
    let domain = realm.to_ascii_lowercase();
    let mut tried = Vec::new();
    for record in [
        format!("_kerberos._tcp.{domain}"),
        format!("_ldap._tcp.dc._msdcs.{domain}"),
    ] {
        match resolver.srv(&record, limit).await {
            Ok(targets) => {
                let mut hosts: Vec<KdcHost> = Vec::new();
                for (host, _port) in targets {
                    if !hosts.iter().any(|h| h.host.eq_ignore_ascii_case(&host)) {
                        hosts.push(KdcHost {
                            host,
                            found_by: format!("dns_srv {record}"),
                        });
                    }
                }
                return Ok(hosts);
            }
            Err(e) => tried.push(format!("SRV {record}: {}", srv_error(&e))),
        }
    }
    for path in krb5_conf_paths() {
        if let Ok(text) = std::fs::read_to_string(&path) {
            let hosts = realm_kdcs(&text, realm);
            if !hosts.is_empty() {
                return Ok(hosts
                    .into_iter()
                    .map(|host| KdcHost {
                        host,
                        found_by: format!("krb5_conf {}", path.display()),
                    })
                    .collect());
            }
            tried.push(format!("{}: no kdc for {realm}", path.display()));
        }
    }
    Err(tried.join("; "))
}

fn srv_error(e: &DnsError) -> String {
    e.to_string()
}

/// The krb5.conf files MIT krb5 reads: `KRB5_CONFIG` (colon-separated), else /etc/krb5.conf.
fn krb5_conf_paths() -> Vec<PathBuf> {
    match std::env::var_os("KRB5_CONFIG") {
        Some(list) => std::env::split_paths(&list).collect(),
        None if cfg!(unix) => vec![PathBuf::from("/etc/krb5.conf")],
        None => Vec::new(),
    }
}

/// Pure: the `kdc = host[:port]` values of `realm` in a krb5.conf's `[realms]` section, hosts
/// only (the probes use the standard ports).
pub fn realm_kdcs(conf: &str, realm: &str) -> Vec<String> {
    let mut in_realms = false;
    let mut in_realm = false;
    let mut kdcs = Vec::new();
    for raw in conf.lines() {
        let line = raw.split(['#', ';']).next().unwrap_or("").trim();
        if line.starts_with('[') {
            in_realms = line.eq_ignore_ascii_case("[realms]");
            in_realm = false;
            continue;
        }
        if !in_realms {
            continue;
        }
        if let Some((key, value)) = line.split_once('=') {
            let (key, value) = (key.trim(), value.trim());
            if value.starts_with('{') {
                in_realm = key.eq_ignore_ascii_case(realm);
                continue;
            }
            if in_realm && key.eq_ignore_ascii_case("kdc") {
                let host = match value.rsplit_once(':') {
                    Some((h, port)) if port.parse::<u16>().is_ok() => h,
                    _ => value,
                };
                let host = host.trim_start_matches('[').trim_end_matches(']');
                if !host.is_empty() {
                    kdcs.push(host.to_string());
                }
            }
        } else if line == "}" {
            in_realm = false;
        }
    }
    kdcs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_realm_s_kdcs_from_krb5_conf() {
        let conf = "[libdefaults]\n default_realm = CORP.EXAMPLE\n\
                    [realms]\n OTHER.EXAMPLE = {\n  kdc = other-dc\n }\n \
                    CORP.EXAMPLE = {\n  kdc = dc1.corp.example:88 # main\n  kdc = dc2.corp.example\n  \
                    admin_server = dc1.corp.example\n }\n[domain_realm]\n kdc = nope\n";
        assert_eq!(
            realm_kdcs(conf, "corp.example"),
            vec!["dc1.corp.example", "dc2.corp.example"]
        );
        assert_eq!(realm_kdcs(conf, "OTHER.EXAMPLE"), vec!["other-dc"]);
        assert!(realm_kdcs(conf, "NONE.EXAMPLE").is_empty());
    }
}
