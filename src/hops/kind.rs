//! The contract every check kind fulfils: how its targets are parsed, shown and run, and every
//! fact about the kind that code outside its folder needs (the service at its port, its default
//! port, whether agents run it, whether a failed connect is probed from the far side, how `/probe` may point it elsewhere). Kinds import it from here,
//! not from the registry in `hops/mod.rs`, so the registry depends on the kinds and never the
//! other way round (scripts/check-module-cycles checks it).

use std::future::Future;

use crate::chain::RunContext;
use crate::check_table::{RawCheck, TargetError};
use crate::hostport::TargetUrl;
use crate::model::HopResult;
use crate::secret::PasswordSource;

/// How `/probe?module=M&target=T` may point a configured check of a kind at another host
/// (src/metrics_server.rs), and what `dtcprobe prometheus-config` offers as the `target` parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retarget {
    /// `HOST[:PORT]` replaces host and port ([`Kind::set_host`]), a URL of the kind the whole
    /// target; the scrape config passes `HOST:PORT` as the parameter.
    HostPort,
    /// `HOST` replaces the host (a port is refused), a URL of the kind the whole target.
    Host,
    /// Only a URL of the kind replaces the target; the scrape config probes it as configured.
    Url,
    /// Never: the check logs in, and its credentials must never go to a host named by whoever
    /// reaches the metrics port.
    Never,
}

/// What a check kind provides. Failure is data: `run` reports every problem as hop results.
pub trait Kind: Sized {
    /// The `kind` in configs and reports, and the URL scheme.
    const NAME: &'static str;
    /// Further URL schemes for this kind (`postgresql`).
    const ALIASES: &'static [&'static str] = &[];
    /// The keys of a `[[check]]` table this kind reads, besides name, kind, host, target, from,
    /// to and timeout. Any other key is an error at its position.
    const KEYS: &'static [&'static str];
    /// Whether the kind logs in: it takes a user name in its URL, and a `password_env` or
    /// `password_file` beside a `target = URL` in a config. Other kinds refuse a user name.
    const LOGIN: bool = false;
    /// What listens at the kind's port, as a firewall request names it (`SQL Server`); `None`
    /// when the port has no fixed service (tcp names any port).
    const SERVICE: Option<&'static str> = None;
    /// The port a URL of this kind reaches when it names none (an agent's `--allow` entry with a
    /// port matches it); `None` when the kind has no single port.
    const DEFAULT_PORT: Option<u16> = None;
    /// Whether an agent runs this kind for a peer (a reverse run, from the agent's zone): only
    /// kinds that carry no credentials, since the agent would have to hold them.
    const AGENT_RUNS: bool = false;
    /// Whether a forward check of this kind whose connect failed is asked about from an agent's
    /// side (src/agent/far_side/probe.rs): only kinds whose `tcp`/`rpc_port` hops carry the
    /// connect attempts, so a failed port can be probed again from the far zone.
    const FAR_SIDE_PROBED: bool = false;
    /// How `/probe` may point a configured check elsewhere.
    const RETARGET: Retarget = Retarget::Url;

    /// From a URL with this kind's scheme (already checked to hold no password).
    fn from_url(url: &TargetUrl) -> Result<Self, TargetError>;
    /// From a config table with `kind = NAME`; `host` is present and not blank.
    fn from_config(raw: &RawCheck, host: String) -> Result<Self, TargetError>;
    /// A canonical, secret-free rendering for reports; parses back to the same target.
    fn display(&self) -> String;
    fn host(&self) -> &str;
    /// The password source given beside a `target = URL` (only called when [`Kind::LOGIN`]).
    fn set_password(&mut self, _password: Option<PasswordSource>) {}
    /// The port the check connects to, if it has one (the `HOST:PORT` of [`Retarget::HostPort`]).
    fn port(&self) -> Option<u16> {
        None
    }
    /// Points the check at `host` (and `port`), keeping its options; only called as
    /// [`Kind::RETARGET`] allows (with no port for [`Retarget::Host`]).
    fn set_host(&mut self, _host: String, _port: Option<u16>) {}
    /// Whether an agent runs this target for a peer: [`Kind::AGENT_RUNS`], unless a kind that
    /// logs in has targets that carry no credential (the credential-free login: a random user
    /// whose "login failed" proves the path; nothing for the agent to hold or prompt for).
    fn agent_runs(&self) -> bool {
        Self::AGENT_RUNS
    }
    /// Runs the check's hop chain.
    fn run(&self, ctx: &RunContext) -> impl Future<Output = Vec<HopResult>> + Send;
}
