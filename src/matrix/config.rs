//! `matrix.toml`: the zones, the agent in each, and what each zone must reach in the others.
//! Pure apart from reading the file and the key files: text in, a [`MatrixPlan`] out, with every
//! check URL built and every key loaded, so that nothing is left to fail once probing starts.
//! Errors carry file, line and column (exit 78, like every other config error).
//!
//! The checks of a cell are what the source zone's agent can run on request: `tcp`, `dns`,
//! `epm`, `kdc` (rule `kerberos`, towards the zone's `dcs`: [`super::dcs`]) and `mssql` as the
//! credential-free login (the agent holds no database credentials: a random user, whose "login
//! failed" proves the TDS path). See docs/matrix.md.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

use crate::agent::protocol::{AgentPublicKey, Key, ReverseTarget};
use crate::config::{from_toml, line_column, positive_duration};
use crate::target::Target;

/// Per-hop timeout when neither the file nor `--timeout` gives one (as `check`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);
/// The agent's default `max_reverse_checks`: a row with more checks is split over several
/// requests of at most this many.
pub const DEFAULT_MAX_CHECKS_PER_REQUEST: usize = 32;
/// The SQL Server default instance's port.
pub const DEFAULT_MSSQL_PORT: u16 = 1433;

/// A matrix config problem, located in the file. Exit code 78.
#[derive(Debug, Error)]
#[error("{path}:{line}:{column}: {message}")]
pub struct MatrixConfigError {
    pub path: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMatrix {
    timeout: Option<toml::Spanned<String>>,
    session_timeout: Option<toml::Spanned<String>>,
    key_file: Option<toml::Spanned<String>>,
    max_checks_per_request: Option<toml::Spanned<usize>>,
    #[serde(default)]
    zone: Vec<toml::Spanned<RawZone>>,
    #[serde(default)]
    reach: Vec<toml::Spanned<RawReach>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawZone {
    name: toml::Spanned<String>,
    agent: Option<toml::Spanned<String>>,
    key_file: Option<toml::Spanned<String>>,
    /// The zone agent's public key (its identity), pinned.
    agent_pubkey: Option<toml::Spanned<String>>,
    #[serde(default)]
    hosts: Vec<toml::Spanned<String>>,
    /// The zone's `dtcprobe watch --metrics-listen` instance as Prometheus reaches it.
    watch: Option<toml::Spanned<String>>,
    /// The zone's domain controllers: a list, or "srv:DOMAIN" (see [`super::dcs`]).
    dcs: Option<toml::Spanned<toml::Value>>,
    realm: Option<toml::Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReach {
    from: toml::Spanned<String>,
    to: toml::Spanned<String>,
    #[serde(default)]
    tcp: Vec<toml::Spanned<u16>>,
    #[serde(default)]
    epm: bool,
    #[serde(default)]
    mssql: bool,
    mssql_port: Option<toml::Spanned<u16>>,
    #[serde(default)]
    dns: bool,
    #[serde(default)]
    callback: bool,
    #[serde(default)]
    callback_tcp: Vec<toml::Spanned<u16>>,
    /// Kerberos and LDAP to the destination zone's `dcs` (hop `kdc`).
    #[serde(default)]
    kerberos: bool,
}

/// A zone's agent, resolved: its address (`host:port`) and the key it shares with this host.
#[derive(Debug, Clone)]
pub struct AgentRef {
    pub address: String,
    /// `None` only in a plan read by [`load_layout`] (zone configs, Prometheus configs), which
    /// never contacts an agent and so needs none of the secrets.
    pub key: Option<Key>,
    pub key_file: PathBuf,
    /// `agent_pubkey`: the agent's identity, pinned (another agent answering fails the row).
    pub pubkey: Option<AgentPublicKey>,
}

#[derive(Debug, Clone)]
pub struct Zone {
    pub name: String,
    /// `None`: the zone's row is not run (and says so).
    pub agent: Option<AgentRef>,
    pub hosts: Vec<String>,
    /// `HOST:PORT` of the zone's `dtcprobe watch --metrics-listen` as Prometheus reaches it
    /// (`prometheus-config --matrix`); `None`: the zone's row is not scraped.
    pub watch: Option<String>,
    /// The zone's domain controllers as `kdc` checks (rules with `kerberos = true` run them).
    pub dcs: Vec<super::dcs::DcTarget>,
}

/// Why a check is in a cell: what the grid and the firewall request say about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Tcp,
    /// SQL Server: the credential-free login (a random user; the server's 18456 is the pass),
    /// so the TDS path and the login stage are tested with no credential on the agent.
    Mssql,
    Epm,
    Dns,
    /// MSDTC's callback: the far zone connecting back (checked from the far zone's agent).
    Callback,
    /// Kerberos and LDAP to the destination zone's domain controllers (kind `kdc`).
    Kerberos,
}

/// One check of a cell, as the source zone's agent is asked to run it.
#[derive(Debug, Clone, PartialEq)]
pub struct CellCheck {
    /// Unique within the source zone's row (the agent's answer is matched on it).
    pub name: String,
    pub url: String,
    pub purpose: Purpose,
}

impl CellCheck {
    pub fn reverse_target(&self) -> ReverseTarget {
        ReverseTarget {
            name: self.name.clone(),
            url: self.url.clone(),
            to_caller: false,
        }
    }
}

/// Everything zone `from` must reach in zone `to`, run by `from`'s agent.
#[derive(Debug, Clone)]
pub struct CellPlan {
    pub from: String,
    pub to: String,
    pub checks: Vec<CellCheck>,
}

/// The resolved matrix: nothing in it can fail to parse or load once probing starts.
#[derive(Debug, Clone)]
pub struct MatrixPlan {
    pub path: PathBuf,
    pub timeout: Duration,
    /// Bound on one agent's answer once it accepted the request.
    pub session_timeout: Duration,
    pub max_checks_per_request: usize,
    pub zones: Vec<Zone>,
    /// Every (from, to) pair that has at least one check, in zone order.
    pub cells: Vec<CellPlan>,
    /// The agents trace the path after a timeout (hop `path`; off with `--no-trace`).
    pub trace: bool,
}

impl MatrixPlan {
    pub fn zone(&self, name: &str) -> Option<&Zone> {
        self.zones.iter().find(|z| z.name == name)
    }

    pub fn cells_from<'a>(&'a self, zone: &'a str) -> impl Iterator<Item = &'a CellPlan> + 'a {
        self.cells.iter().filter(move |c| c.from == zone)
    }

    /// The `allow` entries the agent of `zone` needs so that it runs every check of its row
    /// (the agent matches them as written, without resolving names). `dns` checks have no port,
    /// so their host needs a bare entry.
    pub fn required_allow(&self, zone: &str) -> Vec<String> {
        let mut entries = BTreeSet::new();
        for cell in self.cells_from(zone) {
            for check in &cell.checks {
                let Ok(url) = url::Url::parse(&check.url) else {
                    continue;
                };
                let host = url.host_str().unwrap_or_default().to_string();
                match crate::agent::url_port(&url) {
                    Some(port) => entries.insert(format!("{host}:{port}")),
                    None => entries.insert(host),
                };
            }
        }
        entries.into_iter().collect()
    }
}

/// Reads and resolves a matrix file (key files included, relative to the file's directory);
/// `trace` is `--no-trace`'s opposite. The plan is final: nothing edits it afterwards.
pub fn load(
    path: &Path,
    timeout_override: Option<Duration>,
    trace: bool,
) -> Result<MatrixPlan, MatrixConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| MatrixConfigError {
        path: path.to_path_buf(),
        line: 0,
        column: 0,
        message: format!("cannot read matrix config: {e}"),
    })?;
    let plan = parse(&text, path, timeout_override, &|p| {
        Key::load(p).map_err(|e| e.to_string())
    })?;
    Ok(MatrixPlan { trace, ..plan })
}

/// Reads a matrix file for what it says about zones, hosts and checks, without reading any key
/// file: for `matrix --zone-config` and `prometheus-config --matrix`, which contact no agent
/// (the monitoring host or a zone's host need not hold the other zones' agent keys). The plan's
/// agents have no key; [`run`](super::run::run) refuses to ask them.
pub fn load_layout(
    path: &Path,
    timeout_override: Option<Duration>,
) -> Result<MatrixPlan, MatrixConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| MatrixConfigError {
        path: path.to_path_buf(),
        line: 0,
        column: 0,
        message: format!("cannot read matrix config: {e}"),
    })?;
    parse_with(&text, path, timeout_override, None)
}

/// Loads one key file (injected, so that the parsing tests need no key files).
pub type KeyLoader<'a> = dyn Fn(&Path) -> Result<Key, String> + 'a;

pub fn parse(
    text: &str,
    path: &Path,
    timeout_override: Option<Duration>,
    load_key: &KeyLoader<'_>,
) -> Result<MatrixPlan, MatrixConfigError> {
    parse_with(text, path, timeout_override, Some(load_key))
}

/// `load_key` `None`: key files are named but not read (see [`load_layout`]).
fn parse_with(
    text: &str,
    path: &Path,
    timeout_override: Option<Duration>,
    load_key: Option<&KeyLoader<'_>>,
) -> Result<MatrixPlan, MatrixConfigError> {
    let at = |offset: usize, message: String| {
        let (line, column) = line_column(text, offset);
        MatrixConfigError {
            path: path.to_path_buf(),
            line,
            column,
            message,
        }
    };
    let raw: RawMatrix = from_toml(text).map_err(|(offset, message)| at(offset, message))?;
    let duration =
        |v: &Option<toml::Spanned<String>>| -> Result<Option<Duration>, MatrixConfigError> {
            v.as_ref()
                .map(|s| {
                    positive_duration(s.get_ref()).map_err(|e| at(s.span().start, e.to_string()))
                })
                .transpose()
        };
    let timeout = match timeout_override {
        Some(t) => t,
        None => duration(&raw.timeout)?.unwrap_or(DEFAULT_TIMEOUT),
    };
    let session_timeout = duration(&raw.session_timeout)?
        .unwrap_or_else(|| crate::agent::client::PeerOptions::default_session_timeout(timeout));
    let max_checks_per_request = match &raw.max_checks_per_request {
        Some(s) if *s.get_ref() == 0 => {
            return Err(at(
                s.span().start,
                "`max_checks_per_request` must be at least 1".into(),
            ))
        }
        Some(s) => *s.get_ref(),
        None => DEFAULT_MAX_CHECKS_PER_REQUEST,
    };
    let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let key_path = |s: &str| {
        let p = PathBuf::from(s);
        if p.is_relative() {
            base_dir.join(p)
        } else {
            p
        }
    };
    // One load per key file: the same file shared by every zone is read once.
    let mut keys: HashMap<PathBuf, Key> = HashMap::new();

    if raw.zone.is_empty() {
        return Err(at(
            0,
            "no [[zone]] tables: a matrix needs at least two zones".into(),
        ));
    }
    let mut zones: Vec<Zone> = Vec::new();
    // Each zone's `watch` and where it is written, checked against its row once cells are known.
    let mut watches: Vec<Option<(String, usize)>> = Vec::new();
    for z in &raw.zone {
        let zr = z.get_ref();
        let name = zr.name.get_ref().trim().to_string();
        validate_zone_name(&name).map_err(|e| at(zr.name.span().start, e.to_string()))?;
        if zones.iter().any(|other| other.name == name) {
            return Err(at(
                zr.name.span().start,
                format!("zone `{name}` is defined twice"),
            ));
        }
        let mut hosts: Vec<String> = Vec::new();
        for h in &zr.hosts {
            let host = h.get_ref().trim().to_string();
            validate_host(&host).map_err(|e| at(h.span().start, e.to_string()))?;
            if !hosts.contains(&host) {
                hosts.push(host);
            }
        }
        let agent = match &zr.agent {
            None => {
                if let Some(k) = &zr.key_file {
                    return Err(at(
                        k.span().start,
                        format!("zone `{name}` has a key_file but no agent"),
                    ));
                }
                if let Some(k) = &zr.agent_pubkey {
                    return Err(at(
                        k.span().start,
                        format!("zone `{name}` has an agent_pubkey but no agent"),
                    ));
                }
                None
            }
            Some(a) => {
                let address = crate::agent::cmd::agent_address(a.get_ref())
                    .map_err(|m| at(a.span().start, m.replace("AGENT_ADDR", "agent")))?;
                let (file, span) = match (&zr.key_file, &raw.key_file) {
                    (Some(k), _) | (None, Some(k)) => (key_path(k.get_ref()), k.span().start),
                    (None, None) => {
                        return Err(at(
                            a.span().start,
                            format!(
                                "zone `{name}` has an agent but no key file: set `key_file` in the zone \
                                 or at the top of the file"
                            ),
                        ))
                    }
                };
                let key = match (keys.get(&file), load_key) {
                    (_, None) => None,
                    (Some(k), Some(_)) => Some(k.clone()),
                    (None, Some(load_key)) => {
                        let k = load_key(&file).map_err(|m| at(span, m))?;
                        keys.insert(file.clone(), k.clone());
                        Some(k)
                    }
                };
                let pubkey = match &zr.agent_pubkey {
                    None => None,
                    Some(p) => Some(
                        AgentPublicKey::parse(p.get_ref())
                            .map_err(|e| at(p.span().start, format!("agent_pubkey: {e}")))?,
                    ),
                };
                Some(AgentRef {
                    address,
                    key,
                    key_file: file,
                    pubkey,
                })
            }
        };
        let watch = match &zr.watch {
            None => None,
            Some(w) => {
                let address = w.get_ref().trim().to_string();
                crate::prometheus_config::validate_listen_address(&address).map_err(|_| {
                    at(
                        w.span().start,
                        format!(
                            "zone `{name}`: watch = {address:?}: expected HOST:PORT (the zone's \
                             `dtcprobe watch --metrics-listen` as Prometheus reaches it, e.g. \
                             probe-web01:9715)"
                        ),
                    )
                })?;
                Some((address, w.span().start))
            }
        };
        watches.push(watch);
        let dcs = super::dcs::dc_targets(&name, zr.dcs.as_ref(), zr.realm.as_ref(), &|h| {
            validate_host(h).is_ok()
        })
        .map_err(|(offset, m)| at(offset, m))?;
        zones.push(Zone {
            name,
            agent,
            hosts,
            watch: None,
            dcs,
        });
    }
    if zones.len() < 2 {
        return Err(at(
            raw.zone[0].span().start,
            "a matrix needs at least two zones".into(),
        ));
    }

    // (from, to) -> checks, in the order the rules give them; duplicates dropped.
    let mut cells: HashMap<(usize, usize), Vec<CellCheck>> = HashMap::new();
    if raw.reach.is_empty() {
        return Err(at(
            text.len(),
            "no [[reach]] tables: nothing to check (see docs/matrix.md)".into(),
        ));
    }
    for r in &raw.reach {
        let rr = r.get_ref();
        let from = zone_selector(&zones, &rr.from).map_err(|m| at(rr.from.span().start, m))?;
        let to = zone_selector(&zones, &rr.to).map_err(|m| at(rr.to.span().start, m))?;
        let explicit_pair = rr.from.get_ref() != "*" && rr.to.get_ref() != "*";
        if explicit_pair && from == to {
            return Err(at(
                rr.to.span().start,
                format!(
                    "a zone does not reach itself: from and to are both `{}`",
                    rr.from.get_ref()
                ),
            ));
        }
        for (list, _) in [(&rr.tcp, "tcp"), (&rr.callback_tcp, "callback_tcp")] {
            if let Some(p) = list.iter().find(|p| *p.get_ref() == 0) {
                return Err(at(p.span().start, "port 0 is not a port".into()));
            }
        }
        if let Some(p) = rr.mssql_port.as_ref().filter(|p| *p.get_ref() == 0) {
            return Err(at(p.span().start, "port 0 is not a port".into()));
        }
        if let (Some(p), false) = (&rr.mssql_port, rr.mssql) {
            return Err(at(
                p.span().start,
                "`mssql_port` without `mssql = true`".into(),
            ));
        }
        if !rr.callback_tcp.is_empty() && !rr.callback {
            return Err(at(
                rr.callback_tcp[0].span().start,
                "`callback_tcp` without `callback = true`".into(),
            ));
        }
        let host_checks = !rr.tcp.is_empty() || rr.epm || rr.mssql || rr.dns;
        if !host_checks && !rr.callback && !rr.kerberos {
            return Err(at(
                r.span().start,
                "this [[reach]] asks for nothing: give tcp = [PORT, ...], epm, mssql, dns, \
                 callback or kerberos"
                    .into(),
            ));
        }
        let mssql_port = rr
            .mssql_port
            .as_ref()
            .map(|p| *p.get_ref())
            .unwrap_or(DEFAULT_MSSQL_PORT);
        for &f in &from {
            for &t in &to {
                if f == t {
                    continue;
                }
                let (src, dst) = (&zones[f], &zones[t]);
                if dst.hosts.is_empty() && (host_checks || rr.callback) {
                    return Err(at(
                        rr.to.span().start,
                        format!(
                            "zone `{}` has no hosts to reach (give it `hosts = [...]`)",
                            dst.name
                        ),
                    ));
                }
                let forward = cells.entry((f, t)).or_default();
                for host in &dst.hosts {
                    let h = crate::hostport::bracket_v6(host);
                    for port in rr.tcp.iter().map(|p| *p.get_ref()) {
                        push(
                            forward,
                            &dst.name,
                            "tcp",
                            format!("tcp://{h}:{port}"),
                            Purpose::Tcp,
                        );
                    }
                    if rr.mssql {
                        push(
                            forward,
                            &dst.name,
                            "mssql",
                            mssql_url(&h, mssql_port),
                            Purpose::Mssql,
                        );
                    }
                    if rr.epm {
                        push(
                            forward,
                            &dst.name,
                            "epm",
                            format!("epm://{h}"),
                            Purpose::Epm,
                        );
                    }
                    if rr.dns {
                        push(
                            forward,
                            &dst.name,
                            "dns",
                            format!("dns://{h}"),
                            Purpose::Dns,
                        );
                    }
                }
                if rr.kerberos {
                    if dst.dcs.is_empty() {
                        return Err(at(
                            rr.to.span().start,
                            format!(
                                "`kerberos` needs the domain controllers of zone `{}` (give it \
                                 `dcs = [\"dc1.corp.example\", ...]` or `dcs = \"srv:DOMAIN\"`)",
                                dst.name
                            ),
                        ));
                    }
                    for dc in &dst.dcs {
                        push_named(
                            forward,
                            format!("{}: kerberos {}", dst.name, dc.shown),
                            dc.url.clone(),
                            Purpose::Kerberos,
                        );
                    }
                }
                if rr.callback {
                    if src.hosts.is_empty() {
                        return Err(at(
                            rr.from.span().start,
                            format!(
                                "`callback` needs the hosts of zone `{}` (the far side calls them back)",
                                src.name
                            ),
                        ));
                    }
                    let back = cells.entry((t, f)).or_default();
                    for host in &src.hosts {
                        let h = crate::hostport::bracket_v6(host);
                        push(
                            back,
                            &src.name,
                            "callback epm",
                            format!("epm://{h}"),
                            Purpose::Callback,
                        );
                        for port in rr.callback_tcp.iter().map(|p| *p.get_ref()) {
                            push(
                                back,
                                &src.name,
                                "callback tcp",
                                format!("tcp://{h}:{port}"),
                                Purpose::Callback,
                            );
                        }
                    }
                }
            }
        }
    }
    // Every URL must be one the tool parses (a host that slipped through would fail mid-run).
    for checks in cells.values() {
        for c in checks {
            Target::from_url(&c.url).map_err(|e| at(0, format!("{}: {e}", c.url)))?;
        }
    }
    // A `watch` serves its zone's row: a zone that checks nothing has nothing to serve, and a
    // scrape config for it would be a prober with no modules.
    for (i, watch) in watches.into_iter().enumerate() {
        if let Some((address, offset)) = watch {
            if !cells
                .iter()
                .any(|((f, _), checks)| *f == i && !checks.is_empty())
            {
                return Err(at(
                    offset,
                    format!(
                        "zone `{}` has a `watch` but checks nothing (no [[reach]] from it, nor a \
                         callback to it): its watch would serve no module",
                        zones[i].name
                    ),
                ));
            }
            zones[i].watch = Some(address);
        }
    }
    let mut keys: Vec<(usize, usize)> = cells.keys().copied().collect();
    keys.sort();
    let cells = keys
        .into_iter()
        .map(|(f, t)| CellPlan {
            from: zones[f].name.clone(),
            to: zones[t].name.clone(),
            checks: cells.remove(&(f, t)).unwrap_or_default(),
        })
        .collect();
    Ok(MatrixPlan {
        path: path.to_path_buf(),
        timeout,
        session_timeout,
        max_checks_per_request,
        zones,
        cells,
        trace: true,
    })
}

fn push(checks: &mut Vec<CellCheck>, to_zone: &str, what: &str, url: String, purpose: Purpose) {
    let shown = url.split_once("://").map(|(_, rest)| rest).unwrap_or(&url);
    // The host and port only (a query is options, not where the check goes).
    let shown = shown.split(['/', '?']).next().unwrap_or(shown);
    let name = format!("{to_zone}: {what} {shown}");
    push_named(checks, name, url, purpose);
}

fn push_named(checks: &mut Vec<CellCheck>, name: String, url: String, purpose: Purpose) {
    if checks.iter().any(|c| c.url == url && c.purpose == purpose) {
        return;
    }
    checks.push(CellCheck { name, url, purpose });
}

/// A matrix `mssql` check: the credential-free login (no user: LOGIN7 with a random user name
/// and password; the server's 18456 passes), which the agents run since it needs no credential.
/// The certificate is not judged (`trust_server_certificate`): the agent's trust store is not
/// the clients'; `dtcprobe check` from an application host judges it.
pub fn mssql_url(host: &str, port: u16) -> String {
    format!("mssql://{host}:{port}/?login=probe&trust_server_certificate=true")
}

/// `*` is every zone; otherwise one zone by name.
fn zone_selector(zones: &[Zone], sel: &toml::Spanned<String>) -> Result<Vec<usize>, String> {
    let name = sel.get_ref().trim();
    if name == "*" {
        return Ok((0..zones.len()).collect());
    }
    match zones.iter().position(|z| z.name == name) {
        Some(i) => Ok(vec![i]),
        None => {
            let known: Vec<&str> = zones.iter().map(|z| z.name.as_str()).collect();
            Err(format!(
                "unknown zone `{name}` (zones: {}; `*` is every zone)",
                known.join(", ")
            ))
        }
    }
}

/// A zone's name or host that a matrix file may not use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum NameError {
    #[error("a zone name is empty")]
    EmptyZone,
    #[error("zone name `{0}`: use letters, digits, `-`, `_` and `.` only")]
    ZoneCharacters(String),
    #[error("host `{0}`: expected a host name or an IP address (no port, no URL)")]
    Host(String),
}

fn validate_zone_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::EmptyZone);
    }
    if name == "*"
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(NameError::ZoneCharacters(name.into()));
    }
    Ok(())
}

fn validate_host(host: &str) -> Result<(), NameError> {
    let bad = || NameError::Host(host.into());
    if host.is_empty() || host.contains("://") || host.contains(['/', ' ', '@', '?', '#']) {
        return Err(bad());
    }
    if host.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    if host.contains(':') {
        return Err(bad());
    }
    Target::from_url(&format!("tcp://{host}:1")).map_err(|_| bad())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "600032b5ca8dfac0afac22ea39f1c6a6fa057a3c4e57941d72b406fa9b769148";

    fn keys(_: &Path) -> Result<Key, String> {
        Key::from_bytes(KEY.as_bytes(), "test").map_err(|e| e.to_string())
    }

    fn parse_ok(text: &str) -> MatrixPlan {
        parse(text, Path::new("/etc/m.toml"), None, &keys).unwrap_or_else(|e| panic!("{e}"))
    }

    fn parse_err(text: &str) -> MatrixConfigError {
        parse(text, Path::new("m.toml"), None, &keys).expect_err("should be rejected")
    }

    const THREE: &str = r#"key_file = "agent.key"
timeout = "2s"

[[zone]]
name = "web"
agent = "198.18.1.2"
hosts = ["198.18.1.2"]

[[zone]]
name = "app"
agent = "198.18.2.2:7000"
hosts = ["app01"]

[[zone]]
name = "sql"
hosts = ["198.18.3.2", "sql02"]
"#;

    #[test]
    fn cells_checks_and_allow_entries() {
        let text = format!(
            "{THREE}
[[reach]]
from = \"web\"
to = \"sql\"
mssql = true
epm = true
callback = true
callback_tcp = [445]

[[reach]]
from = \"*\"
to = \"*\"
tcp = [22]
"
        );
        let plan = parse_ok(&text);
        assert_eq!(plan.timeout, Duration::from_secs(2));
        assert_eq!(
            plan.zones[0].agent.as_ref().unwrap().address,
            "198.18.1.2:7135"
        );
        assert_eq!(
            plan.zones[0].agent.as_ref().unwrap().key_file,
            PathBuf::from("/etc/agent.key")
        );
        assert!(plan.zones[2].agent.is_none());
        // 3 zones, every ordered pair reached by `*`.
        assert_eq!(plan.cells.len(), 6);
        let web_sql = plan
            .cells
            .iter()
            .find(|c| c.from == "web" && c.to == "sql")
            .unwrap();
        let urls: Vec<&str> = web_sql.checks.iter().map(|c| c.url.as_str()).collect();
        assert_eq!(
            urls,
            [
                "mssql://198.18.3.2:1433/?login=probe&trust_server_certificate=true",
                "epm://198.18.3.2",
                "mssql://sql02:1433/?login=probe&trust_server_certificate=true",
                "epm://sql02",
                "tcp://198.18.3.2:22",
                "tcp://sql02:22"
            ]
        );
        // The callback is checked from sql towards web's hosts.
        let sql_web = plan
            .cells
            .iter()
            .find(|c| c.from == "sql" && c.to == "web")
            .unwrap();
        assert_eq!(sql_web.checks[0].url, "epm://198.18.1.2");
        assert_eq!(sql_web.checks[0].purpose, Purpose::Callback);
        assert_eq!(sql_web.checks[1].url, "tcp://198.18.1.2:445");
        assert_eq!(sql_web.checks[0].name, "web: callback epm 198.18.1.2");
        // Names are unique within a row.
        for zone in ["web", "app", "sql"] {
            let mut names: Vec<&str> = plan
                .cells_from(zone)
                .flat_map(|c| c.checks.iter().map(|k| k.name.as_str()))
                .collect();
            let n = names.len();
            names.sort();
            names.dedup();
            assert_eq!(names.len(), n, "{zone}");
        }
        assert_eq!(
            plan.required_allow("web"),
            [
                "198.18.3.2:135",
                "198.18.3.2:1433",
                "198.18.3.2:22",
                "app01:22",
                "sql02:135",
                "sql02:1433",
                "sql02:22"
            ]
        );
    }

    #[test]
    fn errors_name_the_line() {
        let cases: &[(&str, usize, &str)] = &[
            ("bogus = 1\n", 1, "unknown field"),
            (
                "[[zone]]\nname = \"a\"\n[[zone]]\nname = \"a\"\n",
                4,
                "defined twice",
            ),
            (
                "[[zone]]\nname = \"a b\"\n",
                2,
                "letters, digits",
            ),
            (
                "[[zone]]\nname = \"a\"\nagent = \"h:99999\"\nkey_file = \"k\"\n",
                3,
                "not a number",
            ),
            (
                "[[zone]]\nname = \"a\"\nagent = \"h\"\n[[zone]]\nname = \"b\"\n",
                3,
                "no key file",
            ),
            (
                "[[zone]]\nname = \"a\"\nhosts = [\"tcp://x\"]\n",
                3,
                "no port, no URL",
            ),
            (
                "[[zone]]\nname = \"a\"\nhosts=[\"x\"]\n[[zone]]\nname = \"b\"\nhosts=[\"y\"]\n[[reach]]\nfrom = \"a\"\nto = \"c\"\ntcp = [1]\n",
                9,
                "unknown zone `c`",
            ),
            (
                "[[zone]]\nname = \"a\"\nhosts=[\"x\"]\n[[zone]]\nname = \"b\"\n[[reach]]\nfrom = \"a\"\nto = \"b\"\ntcp = [1]\n",
                8,
                "has no hosts",
            ),
            (
                "[[zone]]\nname = \"a\"\nhosts=[\"x\"]\n[[zone]]\nname = \"b\"\nhosts=[\"y\"]\n[[reach]]\nfrom = \"a\"\nto = \"a\"\ntcp = [1]\n",
                9,
                "does not reach itself",
            ),
            (
                "[[zone]]\nname = \"a\"\nhosts=[\"x\"]\n[[zone]]\nname = \"b\"\nhosts=[\"y\"]\n[[reach]]\nfrom = \"a\"\nto = \"b\"\ntcp = [0]\n",
                10,
                "port 0",
            ),
            (
                "[[zone]]\nname = \"a\"\nhosts=[\"x\"]\n[[zone]]\nname = \"b\"\nhosts=[\"y\"]\n[[reach]]\nfrom = \"a\"\nto = \"b\"\n",
                7,
                "asks for nothing",
            ),
            ("timeout = \"soon\"\n", 1, "invalid duration"),
        ];
        for (text, line, needle) in cases {
            let e = parse_err(text);
            assert_eq!(e.line, *line, "{text}: {e}");
            assert!(e.to_string().contains(needle), "{text}: {e}");
            assert!(e.to_string().starts_with("m.toml:"), "{e}");
        }
    }

    #[test]
    fn kerberos_rules_check_the_zone_s_dcs() {
        let text = "[[zone]]\nname = \"web\"\nhosts = [\"198.18.1.2\"]\n\
                    [[zone]]\nname = \"ad\"\ndcs = [\"dc1.corp.example\", \"198.18.4.10\"]\n\
                    realm = \"CORP.EXAMPLE\"\n\
                    [[zone]]\nname = \"ad2\"\ndcs = \"srv:ad2.example\"\n\
                    [[reach]]\nfrom = \"web\"\nto = \"ad\"\nkerberos = true\n\
                    [[reach]]\nfrom = \"web\"\nto = \"ad2\"\nkerberos = true\n";
        let plan = parse_ok(text);
        let checks: Vec<(&str, &str, Purpose)> = plan
            .cells_from("web")
            .flat_map(|c| c.checks.iter())
            .map(|c| (c.name.as_str(), c.url.as_str(), c.purpose))
            .collect();
        assert_eq!(
            checks,
            [
                (
                    "ad: kerberos dc1.corp.example",
                    "kdc://dc1.corp.example",
                    Purpose::Kerberos
                ),
                (
                    "ad: kerberos 198.18.4.10",
                    "kdc://198.18.4.10?realm=CORP.EXAMPLE",
                    Purpose::Kerberos
                ),
                (
                    "ad2: kerberos srv ad2.example",
                    "kdc://ad2.example?find=srv",
                    Purpose::Kerberos
                ),
            ]
        );
        // The agent's allow list: each DC (and the SRV domain) on port 88.
        assert_eq!(
            plan.required_allow("web"),
            ["198.18.4.10:88", "ad2.example:88", "dc1.corp.example:88"]
        );
        let errors: &[(&str, usize, &str)] = &[
            (
                "[[zone]]\nname = \"a\"\nhosts=[\"x\"]\n[[zone]]\nname = \"b\"\nhosts=[\"y\"]\n[[reach]]\nfrom = \"a\"\nto = \"b\"\nkerberos = true\n",
                9,
                "domain controllers of zone `b`",
            ),
            (
                "[[zone]]\nname = \"a\"\nhosts=[\"x\"]\n[[zone]]\nname = \"b\"\ndcs = [\"198.18.4.10\"]\n",
                6,
                "realm = ",
            ),
            (
                "[[zone]]\nname = \"a\"\nhosts=[\"x\"]\n[[zone]]\nname = \"b\"\ndcs = \"dc1\"\n",
                6,
                "srv:DOMAIN",
            ),
            (
                "[[zone]]\nname = \"a\"\nhosts=[\"x\"]\nrealm = \"X\"\n",
                4,
                "no `dcs`",
            ),
            // A zone with DCs only: a tcp rule towards it still needs hosts.
            (
                "[[zone]]\nname = \"a\"\nhosts=[\"x\"]\n[[zone]]\nname = \"b\"\ndcs = [\"dc1.b.example\"]\n[[reach]]\nfrom = \"a\"\nto = \"b\"\ntcp = [1]\n",
                9,
                "has no hosts",
            ),
        ];
        for (text, line, needle) in errors {
            let e = parse_err(text);
            assert_eq!(e.line, *line, "{text}: {e}");
            assert!(e.to_string().contains(needle), "{text}: {e}");
        }
    }

    #[test]
    fn a_bad_key_file_is_a_config_error_on_its_line() {
        let text =
            "[[zone]]\nname = \"a\"\nagent = \"h\"\nkey_file = \"missing.key\"\nhosts=[\"x\"]\n";
        let e = parse(text, Path::new("m.toml"), None, &|p| {
            Err(format!("cannot read key file {}", p.display()))
        })
        .unwrap_err();
        assert_eq!(e.line, 4);
        assert!(e.message.contains("missing.key"), "{e}");
    }

    #[test]
    fn shipped_example_parses() {
        let text = include_str!("../../config/matrix.example.toml");
        let plan = parse(text, Path::new("config/matrix.example.toml"), None, &keys)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(plan.zones.len() >= 3);
        assert!(plan.zones.iter().any(|z| z.agent.is_none()));
    }
}
