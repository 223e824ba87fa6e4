//! Command line (clap derive). Thin: parsing, and converting the arguments into the plain inputs
//! of the modules below (`plan::PlanInput`, `watch::WatchOptions`, `agent::cmd::PeerInput`), so
//! that nothing below the command line depends on it; `app` does the work.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::agent::cmd::{AgentInput, PeerInput};
use crate::config::positive_duration;
use crate::exit::FailOn;
use crate::plan::PlanInput;
use crate::report::outputs::OutputRequest;
use crate::report::Format;
use crate::watch::WatchOptions;

#[derive(Debug, Parser)]
#[command(
    name = "dtcprobe",
    version,
    about = "Zone-to-zone probe for SQL Server and MSDTC: DNS, TCP, TDS login, transactions, RPC endpoint mapper, both directions",
    propagate_version = true
)]
pub struct Cli {
    /// More logging on stderr (-v info, -vv debug, -vvv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run checks once and report pass/fail per hop.
    Check(CheckArgs),
    /// Write an example config file.
    Init(InitArgs),
    /// Run the agent on the far side (a long-running service) that `peer` talks to.
    Agent(AgentArgs),
    /// Check both directions in one invocation, with an agent on the far side.
    Peer(Box<PeerArgs>),
    /// Generate a pre-shared key for `agent` and `peer` (no openssl needed).
    Keygen(KeygenArgs),
    /// Run the checks repeatedly; print only transitions and flapping checks; optionally serve
    /// /metrics, /healthz and /probe for Prometheus.
    Watch(Box<WatchArgs>),
}

/// `dtcprobe keygen`.
#[derive(Debug, Clone, Args)]
pub struct KeygenArgs {
    /// Write the key to FILE (created new, owner-only: 0600 on Unix, an owner-only ACL on
    /// Windows; never overwritten) instead of standard output.
    #[arg(long, value_name = "FILE")]
    pub out: Option<std::path::PathBuf>,
}

/// `dtcprobe watch`: the check options plus the schedule.
#[derive(Debug, Clone, Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub check: CheckArgs,

    /// Time between the starts of two rounds.
    #[arg(long, value_name = "DUR", value_parser = positive_duration)]
    pub interval: Duration,

    /// Stop after N rounds (default: until interrupted).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,

    /// Window over which status changes are counted for flap detection.
    #[arg(long, value_name = "DUR", value_parser = positive_duration, default_value = "1h")]
    pub flap_window: Duration,

    /// A check with at least this many status changes within the window is flapping (min 2).
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(2..=1000))]
    pub flap_threshold: usize,

    /// Serve /metrics, /healthz and /probe?module=CHECK&target=HOST on ADDR (e.g. 0.0.0.0:9715).
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<std::net::SocketAddr>,

    /// How long a /probe result is reused for the same module and target.
    #[arg(long, value_name = "DUR", value_parser = positive_duration, default_value = "5s")]
    pub probe_cache: Duration,
}

/// What to check and how to report it; shared by `check`, `peer` and `watch`.
#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// Ad-hoc targets: tcp://host:port, dns://host, mssql://user@host[:port|\instance]/db?tx=local|distributed,
    /// epm://host[:135]?iface=UUID[/vMAJ.MIN]
    #[arg(value_name = "TARGET")]
    pub targets: Vec<String>,

    /// Config file with [[check]] tables (see `dtcprobe init`).
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Run only the named checks from the config (repeatable).
    #[arg(long = "only", value_name = "NAME")]
    pub only: Vec<String>,

    /// Output format on stdout.
    #[arg(short = 'f', long = "format", value_enum, default_value = "human")]
    pub format: Format,

    /// Timeout for each hop [default: 3s, or the config's defaults.timeout].
    #[arg(long, value_name = "DUR", value_parser = positive_duration)]
    pub timeout: Option<Duration>,

    /// Checks run at the same time [default: 64, or the config's defaults.concurrency].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub concurrency: Option<u32>,

    /// What makes the exit code non-zero.
    #[arg(long, value_enum, default_value = "failure")]
    pub fail_on: FailOn,

    /// Also write the report in FORMAT to PATH (repeatable: junit=report.xml, prometheus=run.prom;
    /// PATH `-` is stdout). Files are replaced atomically.
    #[arg(long = "output", value_name = "FORMAT=PATH")]
    pub outputs: Vec<crate::report::outputs::OutputSpec>,

    /// Write dtcprobe.prom atomically into DIR (node_exporter / windows_exporter textfile collector).
    #[arg(long, value_name = "DIR")]
    pub textfile_dir: Option<PathBuf>,

    /// Compare with an earlier JSON report (-f json): regressions fail the run; changed addresses
    /// and RPC ports are listed.
    #[arg(long, value_name = "FILE")]
    pub baseline: Option<PathBuf>,

    /// Password for mssql:// checks (and config checks without password_env/password_file):
    /// the file's content, one trailing newline removed. Without it, a terminal prompt.
    #[arg(long, value_name = "FILE", value_parser = crate::secret::password_file_arg)]
    pub password_file: Option<PathBuf>,

    /// For epm:// checks: also list every endpoint mapper entry (UUID, version, annotation,
    /// binding), like rpcdump / PortQry -e 135.
    #[arg(long)]
    pub list_endpoints: bool,
}

impl CheckArgs {
    /// The plan's input: these arguments as plain values, colour decided for this stdout.
    pub fn plan_input(&self) -> PlanInput {
        PlanInput {
            targets: self.targets.clone(),
            config: self.config.clone(),
            only: self.only.clone(),
            timeout: self.timeout,
            concurrency: self.concurrency,
            list_endpoints: self.list_endpoints,
            output: OutputRequest {
                format: self.format,
                color: crate::report::colour_for_stdout(),
                outputs: self.outputs.clone(),
                textfile_dir: self.textfile_dir.clone(),
                fail_on: self.fail_on,
                baseline: self.baseline.clone(),
            },
        }
    }
}

impl WatchArgs {
    /// The plan's input. `--baseline` does not apply to watch mode and is left out (not loaded).
    pub fn plan_input(&self) -> PlanInput {
        let mut input = self.check.plan_input();
        input.output.baseline = None;
        input
    }

    pub fn watch_options(&self) -> WatchOptions {
        WatchOptions {
            interval: self.interval,
            count: self.count,
            flap_window: self.flap_window,
            flap_threshold: self.flap_threshold,
            metrics_listen: self.metrics_listen,
            probe_cache: self.probe_cache,
        }
    }
}

/// `dtcprobe agent`: the far side, a long-running service.
#[derive(Debug, Clone, Args)]
pub struct AgentArgs {
    /// Address to listen on, e.g. 0.0.0.0:7135 or [::]:7135 (or `listen` in the agent config).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,

    /// File holding the pre-shared key (at least 32 bytes after trimming whitespace).
    #[arg(long, value_name = "FILE", env = "DTCPROBE_KEY_FILE")]
    pub key_file: PathBuf,

    /// Agent config (allow list, zone, limits): see config/agent.example.toml.
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Serve the agent's own /metrics (sessions, refusals by reason, callbacks, reverse checks)
    /// and /healthz on this address (or `metrics_listen` in the agent config).
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<String>,

    /// Windows only: run under the service control manager (`sc.exe create ... binPath= "...
    /// agent --service ..."`). Elsewhere use the systemd unit in config/.
    #[arg(long)]
    pub service: bool,
}

impl AgentArgs {
    pub fn agent_input(&self) -> AgentInput {
        AgentInput {
            listen: self.listen.clone(),
            key_file: self.key_file.clone(),
            config: self.config.clone(),
            metrics_listen: self.metrics_listen.clone(),
            service: self.service,
        }
    }
}

/// `dtcprobe peer`: forward checks from here plus the reverse direction via the agent.
#[derive(Debug, Clone, Args)]
pub struct PeerArgs {
    /// The agent, HOST:PORT.
    #[arg(value_name = "AGENT_ADDR")]
    pub agent: String,

    /// File holding the pre-shared key (the same as the agent's).
    #[arg(long, value_name = "FILE", env = "DTCPROBE_KEY_FILE")]
    pub key_file: PathBuf,

    /// Port of the callback listener opened here for the run [default: ephemeral].
    #[arg(long, value_name = "PORT", default_value_t = 0)]
    pub callback_port: u16,

    /// Address the callback listener binds to.
    #[arg(long, value_name = "IP", default_value_t = IpAddr::V4(Ipv4Addr::UNSPECIFIED))]
    pub callback_bind: IpAddr,

    /// This host's name for the agent to resolve (forward + reverse) [default: the host name].
    #[arg(long, value_name = "NAME")]
    pub caller_name: Option<String>,

    /// A reverse check for the agent to run (repeatable). The host `caller` stands for this host
    /// as the agent sees it (e.g. tcp://caller:135); other hosts must be in the agent's allow list.
    #[arg(long = "reverse", value_name = "URL")]
    pub reverse: Vec<String>,

    /// This host's zone (reports name it as `from` for forward checks, `to` for reverse ones).
    #[arg(long, value_name = "NAME")]
    pub zone: Option<String>,

    /// This host's MSDTC CID, compared with the agent's (duplicate CIDs break MSDTC).
    #[arg(long, value_name = "GUID")]
    pub cid: Option<String>,

    /// Bound on the agent's answer once it accepted the request [default: 8 x timeout + 5s].
    #[arg(long, value_name = "DUR", value_parser = positive_duration)]
    pub session_timeout: Option<Duration>,

    #[command(flatten)]
    pub check: CheckArgs,
}

impl PeerArgs {
    pub fn peer_input(&self) -> PeerInput {
        PeerInput {
            agent: self.agent.clone(),
            key_file: self.key_file.clone(),
            callback_port: self.callback_port,
            callback_bind: self.callback_bind,
            caller_name: self.caller_name.clone(),
            reverse: self.reverse.clone(),
            zone: self.zone.clone(),
            cid: self.cid.clone(),
            session_timeout: self.session_timeout,
            plan: self.check.plan_input(),
        }
    }
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Directory to write dtcprobe.toml into.
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Overwrite an existing dtcprobe.toml.
    #[arg(long)]
    pub force: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations() {
        assert_eq!(
            positive_duration("500ms").unwrap(),
            Duration::from_millis(500)
        );
        assert!(positive_duration("0s").is_err());
        assert!(positive_duration("soon").is_err());
    }
}
