//! The two entry points of `dtcprobe agent` and `dtcprobe peer` that `app` dispatches to, and
//! the step before each that loads what they need (key, agent config, plan): every input error
//! is found before the agent listens or the peer run starts. The clap definitions live in `cli`,
//! which converts its arguments into [`AgentInput`] and [`PeerInput`].

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

use super::client::{run_peer_until, PeerOptions};
use super::keygen::KeygenError;
use super::protocol::{AgentIdentity, AgentPublicKey, Key, KeyError, ReverseTarget};
use super::{AgentConfig, AgentConfigError};
use crate::exit;
use crate::plan::{self, Plan, PlanError, PlanInput};
use crate::report::outputs;
use crate::target::Target;

/// Why the agent or the peer run could not start.
#[derive(Debug, Error)]
pub enum SetupError {
    #[error("{0}")]
    Key(#[from] KeyError),
    #[error("{0}")]
    AgentConfig(#[from] AgentConfigError),
    /// The agent's identity file was missing and could not be made.
    #[error("cannot make the agent's identity file: {0}")]
    Identity(#[from] KeygenError),
    /// A `--reverse` URL that does not parse or names a kind the agent never runs, or an
    /// AGENT_ADDR that is not HOST[:PORT]: usage errors.
    #[error("{0}")]
    Reverse(String),
    #[error("{0}")]
    Plan(#[from] PlanError),
}

impl SetupError {
    pub fn exit_code(&self) -> u8 {
        match self {
            SetupError::Key(_) | SetupError::AgentConfig(_) | SetupError::Identity(_) => {
                exit::CONFIG
            }
            SetupError::Reverse(_) => exit::USAGE,
            SetupError::Plan(e) => e.exit_code(),
        }
    }
}

/// What `dtcprobe agent` was asked for (plain values).
#[derive(Debug, Clone)]
pub struct AgentInput {
    pub listen: Option<String>,
    pub key_file: PathBuf,
    /// The agent's identity file [default: the key file's path with `.id` added].
    pub identity_file: Option<PathBuf>,
    pub config: Option<PathBuf>,
    /// Overrides the agent config's `metrics_listen`.
    pub metrics_listen: Option<String>,
    /// Run under the Windows service control manager.
    pub service: bool,
}

/// The agent, ready to run: key and config loaded.
pub struct AgentSetup {
    pub listen: Option<String>,
    /// Where the key came from (named in the start line, never the key itself).
    pub key_file: PathBuf,
    pub key: Key,
    pub identity: AgentIdentity,
    /// Where the identity came from, and whether it was made just now.
    pub identity_file: PathBuf,
    pub identity_created: bool,
    pub config: AgentConfig,
    pub service: bool,
}

/// Pure: where the agent's identity file is: as given, else beside the key file (`.id` added).
pub fn identity_path(key_file: &std::path::Path, given: Option<&std::path::Path>) -> PathBuf {
    match given {
        Some(p) => p.to_path_buf(),
        None => {
            let mut name = key_file.as_os_str().to_owned();
            name.push(".id");
            PathBuf::from(name)
        }
    }
}

/// Loads the agent's identity; a missing file is made (owner-only, as `keygen --identity`
/// would), so that an agent upgraded from a release without identities starts as before.
fn load_or_make_identity(path: &std::path::Path) -> Result<(AgentIdentity, bool), SetupError> {
    match AgentIdentity::load(path) {
        Ok(identity) => Ok((identity, false)),
        Err(KeyError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            match super::keygen::write_identity_file(path) {
                Ok(identity) => Ok((identity, true)),
                // Another agent sharing this key file's folder made it this instant: use it.
                Err(KeygenError::Exists { .. }) => {
                    std::thread::sleep(std::time::Duration::from_millis(200));
                    Ok((AgentIdentity::load(path)?, false))
                }
                Err(e) => Err(e.into()),
            }
        }
        Err(e) => Err(e.into()),
    }
}

impl AgentSetup {
    pub fn load(input: AgentInput) -> Result<AgentSetup, SetupError> {
        let key = Key::load(&input.key_file)?;
        let identity_file = identity_path(&input.key_file, input.identity_file.as_deref());
        let (identity, identity_created) = load_or_make_identity(&identity_file)?;
        let mut config = match &input.config {
            Some(p) => AgentConfig::load(p)?,
            None => AgentConfig::default(),
        };
        if input.metrics_listen.is_some() {
            config.metrics_listen = input.metrics_listen;
        }
        Ok(AgentSetup {
            listen: input.listen,
            key_file: input.key_file,
            key,
            identity,
            identity_file,
            identity_created,
            config,
            service: input.service,
        })
    }
}

pub async fn agent_main(setup: AgentSetup) -> u8 {
    let AgentSetup {
        listen,
        key_file,
        key,
        identity,
        identity_file,
        identity_created,
        config,
        service,
    } = setup;
    super::log_budget::AGENT_LOG.set_per_second(config.log_bytes_per_second);
    let line = start_line(
        listen.as_deref().or(config.listen.as_deref()),
        &key_file,
        &config,
        service,
    );
    eprintln!("dtcprobe agent: {line}");
    let made = if identity_created {
        "made just now, "
    } else {
        ""
    };
    let public = identity.public();
    let identity_line = format!(
        "identity {} ({made}{}): public key {public}; peers pin it with --agent-pubkey {public}",
        public.fingerprint(),
        identity_file.display()
    );
    eprintln!("dtcprobe agent: {identity_line}");
    let line = format!("{line}; {identity_line}");
    if service {
        return run_service(listen, key, identity, config, line).await;
    }
    match super::server::run(listen.as_deref(), key, identity, config).await {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("dtcprobe agent: {e:#}");
            exit::INCONCLUSIVE
        }
    }
}
#[cfg(windows)]
async fn run_service(
    listen: Option<String>,
    key: Key,
    identity: AgentIdentity,
    config: super::AgentConfig,
    start_line: String,
) -> u8 {
    let runtime = tokio::runtime::Handle::current();
    let dispatched = tokio::task::spawn_blocking(move || {
        super::winsvc::dispatch(listen, key, identity, config, runtime, start_line)
    })
    .await;
    match dispatched {
        Ok(Ok(())) => exit::OK,
        // Started from a console, not by the SCM: a usage error.
        Ok(Err(e)) => {
            eprintln!("dtcprobe agent: {e}");
            exit::USAGE
        }
        Err(e) => {
            eprintln!("dtcprobe agent: service thread failed: {e}");
            exit::INCONCLUSIVE
        }
    }
}

#[cfg(not(windows))]
async fn run_service(
    _listen: Option<String>,
    _key: Key,
    _identity: AgentIdentity,
    _config: super::AgentConfig,
    _start_line: String,
) -> u8 {
    eprintln!(
        "dtcprobe agent: --service is for the Windows service control manager; \
         on Linux run it under systemd (config/dtcprobe-agent.service)"
    );
    exit::USAGE
}

/// Pure: the one line the agent logs when it starts, whatever the log level: what it will listen
/// on, which key file (never the key) and which reverse targets it allows.
pub fn start_line(
    listen: Option<&str>,
    key_file: &std::path::Path,
    config: &AgentConfig,
    service: bool,
) -> String {
    let allow = if config.allow.is_empty() {
        "the caller only".to_string()
    } else {
        config
            .allow
            .iter()
            .map(|a| match a.port {
                Some(port) => format!("{}:{port}", a.host),
                None => a.host.clone(),
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "starting{}: listen {}, key file {}, reverse checks allowed to {allow}",
        if service { " as a Windows service" } else { "" },
        listen.unwrap_or("(none)"),
        key_file.display()
    )
}

/// The port `dtcprobe peer HOST` uses when AGENT_ADDR has none (the port the docs and examples
/// give `dtcprobe agent --listen`).
pub const DEFAULT_AGENT_PORT: u16 = 7135;

/// AGENT_ADDR as `host:port`: `HOST`, `[IPv6]` and a bare IPv6 address get
/// [`DEFAULT_AGENT_PORT`]; a port that is not a number is a usage error (before, `peer
/// 127.0.0.1` reported `dns_nxdomain`, as if the network had failed).
pub fn agent_address(text: &str) -> Result<String, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("AGENT_ADDR is empty (expected HOST[:PORT])".into());
    }
    if text.parse::<std::net::Ipv6Addr>().is_ok() {
        return Ok(format!("[{text}]:{DEFAULT_AGENT_PORT}"));
    }
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return Err(format!("AGENT_ADDR {text:?}: `[` without `]`"));
        };
        match after.strip_prefix(':') {
            Some(p) => (format!("[{v6}]"), Some(p)),
            None if after.is_empty() => (format!("[{v6}]"), None),
            None => return Err(format!("AGENT_ADDR {text:?}: expected [IPv6]:PORT")),
        }
    } else {
        match text.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (text.to_string(), None),
        }
    };
    if host.is_empty() || host.contains("://") || host.contains('/') {
        return Err(format!(
            "AGENT_ADDR {text:?}: expected HOST[:PORT], e.g. sql01:7135"
        ));
    }
    match port {
        None => Ok(format!("{host}:{DEFAULT_AGENT_PORT}")),
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => Ok(format!("{host}:{n}")),
            _ => Err(format!(
                "AGENT_ADDR {text:?}: port {p:?} is not a number from 1 to 65535"
            )),
        },
    }
}

/// Parses `--reverse` URLs: host `caller` means "the caller's address as the agent sees it".
/// A check the agent never runs (mssql, postgres with a user: credentials the agent does not hold)
/// is refused here, before the run, rather than sent and refused with a hint that cannot help.
pub fn parse_reverse(urls: &[String]) -> Result<Vec<ReverseTarget>, String> {
    urls.iter()
        .map(|text| {
            let target = Target::from_url(text)
                .map_err(|e| format!("--reverse {}: {e}", crate::hostport::mask_url(text)))?;
            if !target.agent_runs() {
                return Err(format!(
                    "--reverse {}: the agent never runs `{}` checks with a user (they need \
                     credentials, and the agent holds none); reverse checks may be {}, and \
                     mssql/postgres with no user (the credential-free login). To test a login \
                     with credentials from the far side, run `dtcprobe check` there",
                    crate::hostport::mask_url(text),
                    target.kind(),
                    crate::agent::policy::reverse_kinds()
                ));
            }
            if let Target::Tcp(t) = &target {
                if t.hold.is_some() {
                    return Err(format!(
                        "--reverse {}: the agent does not run held sessions (hold=); to test \
                         that a session from the far side survives idle, run `dtcprobe check` \
                         with hold= there",
                        crate::hostport::mask_url(text)
                    ));
                }
            }
            let to_caller = target.host().eq_ignore_ascii_case("caller");
            Ok(ReverseTarget {
                name: format!("reverse {text}"),
                url: text.clone(),
                to_caller,
            })
        })
        .collect()
}

/// What `dtcprobe peer` was asked for (plain values).
#[derive(Debug, Clone)]
pub struct PeerInput {
    /// The agent, `host:port`.
    pub agent: String,
    pub key_file: PathBuf,
    /// `--agent-pubkey`: the agent's identity, pinned.
    pub agent_pubkey: Option<String>,
    pub callback_port: u16,
    pub callback_bind: IpAddr,
    /// This host's name for the agent [default: the host name].
    pub caller_name: Option<String>,
    /// `--reverse` URLs.
    pub reverse: Vec<String>,
    /// This host's zone [default: the config's `[defaults] zone`].
    pub zone: Option<String>,
    pub cid: Option<String>,
    pub session_timeout: Option<Duration>,
    /// The forward checks and how the report is written.
    pub plan: PlanInput,
}

/// The peer run, ready to start: key loaded, reverse checks parsed, plan built (baseline loaded).
pub struct PeerSetup {
    pub plan: Plan,
    pub opts: PeerOptions,
}

impl PeerSetup {
    pub fn resolve(input: PeerInput) -> Result<PeerSetup, SetupError> {
        let key = Key::load(&input.key_file)?;
        let agent = agent_address(&input.agent).map_err(SetupError::Reverse)?;
        let reverse = parse_reverse(&input.reverse).map_err(SetupError::Reverse)?;
        let agent_pubkey = input
            .agent_pubkey
            .as_deref()
            .map(AgentPublicKey::parse)
            .transpose()
            .map_err(|e| SetupError::Reverse(format!("--agent-pubkey: {e}")))?;
        let plan = plan::build_allowing_empty(&input.plan)?;
        let opts = PeerOptions {
            agent,
            key,
            agent_pubkey,
            callback_bind: input.callback_bind,
            callback_port: input.callback_port,
            caller_name: Some(
                input
                    .caller_name
                    .unwrap_or_else(crate::runner::local_host_name),
            ),
            // This host's zone: the flag, else the config's `[defaults] zone`.
            zone: input.zone.or_else(|| plan.zone.clone()),
            reverse,
            hop_timeout: plan.timeout,
            session_timeout: input
                .session_timeout
                .unwrap_or(PeerOptions::default_session_timeout(plan.timeout)),
            cid: input.cid,
            trace: plan.trace,
        };
        Ok(PeerSetup { plan, opts })
    }
}

pub async fn peer_main(setup: PeerSetup) -> u8 {
    let PeerSetup { plan, opts } = setup;
    let run = plan.run_options(None);
    // Installed before the run starts (see `check` in app.rs): a stop request is never lost.
    let interrupted = crate::signals::shutdown_signal();
    let (report, stopped) = run_peer_until(&opts, plan.checks.clone(), &run, interrupted).await;
    if let Some(note) = unpinned_note(&report) {
        eprintln!("dtcprobe peer: {note}");
    }
    // A stopped run writes its partial report everywhere too, and exits 130 whatever it found.
    let code = outputs::emit(&report, &plan.output);
    if stopped {
        eprintln!("dtcprobe: interrupted: the report above is partial (unfinished hops: cause `interrupted`)");
        return exit::INTERRUPTED;
    }
    code
}

/// Pure: when the agent was reached without a pin, which agent answered and how to pin it (as
/// ssh says on first contact); `None` when it was pinned or not reached.
pub fn unpinned_note(report: &crate::model::Report) -> Option<String> {
    let login = report
        .checks
        .iter()
        .filter(|c| c.kind == "agent")
        .flat_map(|c| c.hops.iter())
        .find(|h| h.hop == crate::model::HopKind::Login)?;
    if login.data.get("agent_pinned").and_then(|v| v.as_bool()) != Some(false) {
        return None;
    }
    let key = login.data.get("agent_pubkey")?.as_str()?;
    let fingerprint = login.data.get("agent_fingerprint")?.as_str()?;
    Some(format!(
        "the agent's identity is not pinned: the agent that answered has identity {fingerprint}. \
         Compare it with the agent's start line (`dtcprobe agent: identity ...`), then pin it: \
         --agent-pubkey {key}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_start_line_names_listen_key_file_and_allow_list() {
        let mut config = AgentConfig::default();
        let key = std::path::Path::new("/etc/dtcprobe/agent.key");
        assert_eq!(
            start_line(Some("0.0.0.0:7135"), key, &config, false),
            "starting: listen 0.0.0.0:7135, key file /etc/dtcprobe/agent.key, reverse checks \
             allowed to the caller only"
        );
        config.allow = vec![
            super::super::AllowEntry::parse("sql01:1433").unwrap(),
            super::super::AllowEntry::parse("198.18.0.9").unwrap(),
        ];
        let line = start_line(None, key, &config, true);
        assert!(
            line.starts_with("starting as a Windows service: listen (none),"),
            "{line}"
        );
        assert!(
            line.ends_with("allowed to sql01:1433, 198.18.0.9"),
            "{line}"
        );
    }

    #[test]
    fn reverse_urls() {
        let r = parse_reverse(&[
            "tcp://caller:135".into(),
            "tcp://sql01:1433".into(),
            "TCP://CALLER:1".into(),
        ])
        .unwrap();
        assert!(r[0].to_caller);
        assert!(!r[1].to_caller);
        assert!(r[2].to_caller);
        assert!(parse_reverse(&["caller:135".into()]).is_err());
        let held = parse_reverse(&["tcp://caller:135?hold=15s".into()]).unwrap_err();
        assert!(held.contains("held sessions"), "{held}");
        let mssql = parse_reverse(&["mssql://sa@caller/master".into()]).unwrap_err();
        assert!(mssql.contains("never runs `mssql`"), "{mssql}");
    }

    #[test]
    fn agent_addresses() {
        let ok = [
            ("sql01", "sql01:7135"),
            ("sql01:7000", "sql01:7000"),
            ("127.0.0.1", "127.0.0.1:7135"),
            ("198.18.0.2:7135", "198.18.0.2:7135"),
            ("::1", "[::1]:7135"),
            ("[::1]", "[::1]:7135"),
            ("[::1]:9", "[::1]:9"),
        ];
        for (text, want) in ok {
            assert_eq!(agent_address(text).unwrap(), want, "{text}");
        }
        for bad in [
            "",
            "sql01:http",
            "sql01:0",
            "[::1",
            "tcp://sql01:7135",
            "sql01:99999",
        ] {
            assert!(agent_address(bad).is_err(), "{bad}");
        }
    }
}
