//! Command line (clap derive). Thin: parsing only; `app` does the work.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::positive_duration;
use crate::report::Format;

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
    Agent(crate::agent::cmd::AgentArgs),
    /// Check both directions in one invocation, with an agent on the far side.
    Peer(Box<crate::agent::cmd::PeerArgs>),
    /// Run the checks repeatedly; print only transitions and flapping checks; optionally serve
    /// /metrics, /healthz and /probe for Prometheus.
    Watch(Box<WatchArgs>),
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FailOn {
    /// Exit 0 whatever the checks found (tool faults still exit 3).
    Never,
    /// Exit 1 when a check fails or warns.
    Warning,
    /// Exit 1 when a check fails.
    Failure,
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
