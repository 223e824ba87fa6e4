//! DNS lookups through hickory-resolver with the system configuration (resolv.conf / the Windows
//! registry, and the hosts file). Never a hard-coded public server: a probe must see what the
//! applications on this host see.

use std::net::IpAddr;
use std::sync::OnceLock;
use std::time::Duration;

use hickory_resolver::config::ResolveHosts;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::NetError;
use hickory_resolver::proto::op::Query;
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use hickory_resolver::{Hosts, TokioResolver};
use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DnsError {
    #[error("name does not exist (NXDOMAIN)")]
    NxDomain,
    #[error("no {0} records")]
    NoRecords(&'static str),
    #[error("no answer from the DNS servers within {0:?}")]
    Timeout(Duration),
    /// A server answered with an error code (REFUSED, SERVFAIL...): it is reachable, it will
    /// not resolve this name for this host.
    #[error("the DNS server {servers} answered {code}")]
    ServerError { code: String, servers: String },
    #[error("DNS failure: {0}")]
    Other(String),
}

/// The system's DNS configuration, read on the first lookup that needs it: a run whose targets
/// are all literal addresses reads neither resolv.conf nor the hosts file.
pub struct DnsResolver {
    query_timeout: Duration,
    system: OnceLock<SystemDns>,
}

/// What [`DnsResolver`] builds from the system configuration, each file read once.
struct SystemDns {
    /// The resolver, or why the system configuration gave none (every lookup fails with it).
    inner: Result<TokioResolver, DnsError>,
    /// The hosts file, consulted first for both address families and for reverse lookups (see
    /// [`DnsResolver::forward`]); the resolver itself does not read it again.
    hosts: Option<Hosts>,
    /// The configured servers, to name them when one answers with an error code.
    servers: String,
}

impl DnsResolver {
    /// A resolver with the system configuration, read on first use. A broken configuration is
    /// not fatal: every lookup then fails with the reason, so checks that need no DNS still run.
    pub fn from_system(query_timeout: Duration) -> DnsResolver {
        DnsResolver {
            query_timeout,
            system: OnceLock::new(),
        }
    }

    fn system(&self) -> &SystemDns {
        self.system
            .get_or_init(|| SystemDns::read(self.query_timeout))
    }

    /// Addresses the hosts file gives for `host`, both families. Empty when it has none.
    fn hosts_file_addresses(&self, host: &str) -> Vec<IpAddr> {
        let (Some(hosts), Ok(mut name)) = (&self.system().hosts, Name::from_utf8(host)) else {
            return Vec::new();
        };
        name.set_fqdn(true);
        [RecordType::A, RecordType::AAAA]
            .into_iter()
            .filter_map(|rt| hosts.lookup_static_host(&Query::query(name.clone(), rt)))
            .flat_map(|lookup| {
                lookup
                    .answers()
                    .iter()
                    .filter_map(|r| r.data.ip_addr())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    fn resolver(&self) -> Result<&TokioResolver, DnsError> {
        self.system().inner.as_ref().map_err(Clone::clone)
    }

    /// The names the hosts file gives for `addr` (its PTR answer), as the resolver would have
    /// answered from it before asking DNS. Empty when it has none.
    fn hosts_file_names(&self, addr: IpAddr) -> Vec<String> {
        let Some(hosts) = &self.system().hosts else {
            return Vec::new();
        };
        hosts
            .lookup_static_host(&Query::query(Name::from(addr), RecordType::PTR))
            .map(|lookup| {
                lookup
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::PTR(ptr) => Some(ptr.0.to_utf8()),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A and AAAA records of `host`.
    ///
    /// Like the system resolver (NSS `files` before `dns`), a name found in the hosts file is
    /// answered from it alone: otherwise a name listed there with only an IPv4 address would wait
    /// for an AAAA query that only an unreachable DNS server could answer.
    pub async fn forward(&self, host: &str, limit: Duration) -> Result<Vec<IpAddr>, DnsError> {
        let from_hosts = self.hosts_file_addresses(host);
        if !from_hosts.is_empty() {
            return Ok(from_hosts);
        }
        let resolver = self.resolver()?;
        let lookup = tokio::time::timeout(limit, resolver.lookup_ip(host))
            .await
            .map_err(|_| DnsError::Timeout(limit))?
            .map_err(|e| map_error(e, "A/AAAA", limit, &self.system().servers))?;
        let mut addrs: Vec<IpAddr> = lookup.iter().collect();
        addrs.dedup();
        if addrs.is_empty() {
            return Err(DnsError::NoRecords("A/AAAA"));
        }
        Ok(addrs)
    }

    /// PTR names of `addr`, without the trailing dot.
    pub async fn reverse(&self, addr: IpAddr, limit: Duration) -> Result<Vec<String>, DnsError> {
        let mut names = self.hosts_file_names(addr);
        if names.is_empty() {
            let resolver = self.resolver()?;
            let lookup = tokio::time::timeout(limit, resolver.reverse_lookup(Name::from(addr)))
                .await
                .map_err(|_| DnsError::Timeout(limit))?
                .map_err(|e| map_error(e, "PTR", limit, &self.system().servers))?;
            names = lookup
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::PTR(ptr) => Some(ptr.0.to_utf8()),
                    _ => None,
                })
                .collect();
        }
        for name in &mut names {
            name.truncate(name.trim_end_matches('.').len());
        }
        // The server's order varies from query to query: a report must not.
        names.sort_unstable_by_key(|n| n.to_ascii_lowercase());
        names.dedup();
        if names.is_empty() {
            return Err(DnsError::NoRecords("PTR"));
        }
        Ok(names)
    }

    /// SRV records of `name` as (target host without the trailing dot, port), in priority
    /// order (hop `kdc`: `_kerberos._tcp.REALM`, `_ldap._tcp.dc._msdcs.DOMAIN`).
    pub async fn srv(&self, name: &str, limit: Duration) -> Result<Vec<(String, u16)>, DnsError> {
        let resolver = self.resolver()?;
        let lookup = tokio::time::timeout(limit, resolver.lookup(name, RecordType::SRV))
            .await
            .map_err(|_| DnsError::Timeout(limit))?
            .map_err(|e| map_error(e, "SRV", limit, &self.system().servers))?;
        let mut records: Vec<(u16, u16, String, u16)> = lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::SRV(srv) => Some((
                    srv.priority,
                    u16::MAX - srv.weight,
                    srv.target.to_utf8().trim_end_matches('.').to_string(),
                    srv.port,
                )),
                _ => None,
            })
            .collect();
        records.sort();
        records.dedup();
        if records.is_empty() {
            return Err(DnsError::NoRecords("SRV"));
        }
        Ok(records.into_iter().map(|(_, _, t, p)| (t, p)).collect())
    }
}

impl SystemDns {
    /// resolv.conf once (the resolver's servers and options, and the names of the servers), the
    /// hosts file once (ours: the resolver is told not to read it again).
    fn read(query_timeout: Duration) -> SystemDns {
        let conf = hickory_resolver::system_conf::read_system_conf()
            .map_err(|e| DnsError::Other(format!("cannot read the system DNS configuration: {e}")));
        let servers = conf
            .as_ref()
            .map(|(config, _)| {
                let mut ips: Vec<String> = config
                    .name_servers()
                    .iter()
                    .map(|s| s.ip.to_string())
                    .collect();
                ips.dedup();
                ips.join(", ")
            })
            .unwrap_or_default();
        let inner = conf.and_then(|(config, options)| {
            let mut b = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default());
            let opts = b.options_mut();
            *opts = options;
            // One query attempt per server within the hop budget; the hop timeout bounds it.
            opts.timeout = query_timeout;
            opts.attempts = 1;
            // The hosts file is ours, read once and asked first (forward and reverse).
            opts.use_hosts_file = ResolveHosts::Never;
            // A probe must see changes immediately (watch mode re-runs the same names).
            opts.cache_size = 0;
            b.build()
                .map_err(|e| DnsError::Other(format!("cannot build the DNS resolver: {e}")))
        });
        SystemDns {
            inner,
            hosts: Hosts::from_system().ok(),
            servers: if servers.is_empty() {
                "(unknown)".into()
            } else {
                servers
            },
        }
    }
}

fn map_error(e: NetError, record: &'static str, limit: Duration, servers: &str) -> DnsError {
    if let NetError::Dns(hickory_resolver::net::DnsError::ResponseCode(code)) = &e {
        return DnsError::ServerError {
            code: code.to_string(),
            servers: servers.to_string(),
        };
    }
    if e.is_nx_domain() {
        DnsError::NxDomain
    } else if e.is_no_records_found() {
        DnsError::NoRecords(record)
    } else if matches!(e, NetError::Timeout) {
        DnsError::Timeout(limit)
    } else {
        DnsError::Other(e.to_string())
    }
}
