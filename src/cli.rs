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
    propagate_version = true,
    after_help = EXAMPLES_TOP
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
    #[command(after_help = EXAMPLES_CHECK)]
    Check(CheckArgs),
    /// Write an example config file.
    #[command(after_help = EXAMPLES_INIT)]
    Init(InitArgs),
    /// Run the agent on the far side (a long-running service) that `peer` talks to.
    #[command(after_help = EXAMPLES_AGENT)]
    Agent(AgentArgs),
    /// Check both directions in one invocation, with an agent on the far side.
    #[command(after_help = EXAMPLES_PEER)]
    Peer(Box<PeerArgs>),
    /// Generate a pre-shared key for `agent` and `peer` (no openssl needed).
    Keygen(KeygenArgs),
    /// Run the checks repeatedly; print only transitions and flapping checks; optionally serve
    /// /metrics, /healthz and /probe for Prometheus.
    #[command(after_help = EXAMPLES_WATCH)]
    Watch(Box<WatchArgs>),
    /// Print Prometheus scrape configs (YAML) for a `watch --metrics-listen` instance (or each
    /// zone's, from a matrix): its /metrics, and /probe per check, relabelled as
    /// blackbox_exporter documents.
    #[command(after_help = EXAMPLES_PROMETHEUS_CONFIG)]
    PrometheusConfig(PrometheusConfigArgs),
    /// Which zone can reach which: every zone's agent runs its row at once; a from x to grid.
    #[command(after_help = EXAMPLES_MATRIX)]
    Matrix(Box<MatrixArgs>),
    /// Print a shell completion script (bash, zsh, fish, powershell, elvish) on stdout.
    #[command(hide = true, after_help = EXAMPLES_COMPLETIONS)]
    Completions(CompletionsArgs),
    /// Print the man page (roff) on stdout.
    #[command(
        hide = true,
        after_help = "Example:\n  dtcprobe man > /usr/local/share/man/man1/dtcprobe.1"
    )]
    Man,
}

/// `dtcprobe keygen`.
#[derive(Debug, Clone, Args)]
pub struct KeygenArgs {
    /// Write the key to FILE (created new, owner-only: 0600 on Unix, an owner-only ACL on
    /// Windows; never overwritten) instead of standard output.
    #[arg(long, value_name = "FILE")]
    pub out: Option<std::path::PathBuf>,

    /// Make an agent's identity (its own key pair) instead of a pre-shared key: the private key
    /// goes to FILE (or standard output), the public key and fingerprint peers pin are printed.
    #[arg(long)]
    pub identity: bool,
}

/// `dtcprobe completions SHELL`.
#[derive(Debug, Clone, Args)]
pub struct CompletionsArgs {
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

// Examples shown after `--help` (clig.dev: lead with examples). Every command here is one a user
// can paste; tests/ux.rs runs `--help` for each subcommand and checks that an example is there.
const EXAMPLES_TOP: &str = "\
Examples:
  dtcprobe init && dtcprobe check            write ./dtcprobe.toml, then run it
  dtcprobe check tcp://sql01:1433 dns://sql01
  dtcprobe check sql=tcp://sql01:1433        name an ad-hoc check `sql`
  dtcprobe peer sql01 --key-file agent.key   both directions, agent on sql01 (port 7135)
  dtcprobe help check                        more examples per command";

const EXAMPLES_CHECK: &str = "\
Examples:
  dtcprobe check                                  ./dtcprobe.toml (else $DTCPROBE_CONFIG)
  dtcprobe check -c dtcprobe.toml --only localhost-dns
  dtcprobe check tcp://sql01:1433 epm://sql01 'lsa=epm://sql01?iface=12345778-1234-abcd-ef00-0123456789ab/v0.0'
  dtcprobe check tds=mssql://probe@sql01/master?tx=distributed --password-file pw.txt
  dtcprobe check postgres://app@db01:5432/orders?tx=twophase --password-file pw.txt
  dtcprobe check -c dtcprobe.toml -f json --output junit=report.xml
  dtcprobe check -c dtcprobe.toml --quiet --color never
  dtcprobe check -c dtcprobe.toml --hold 35m      sessions idle 35 min, then used (hop idle)

Exit codes: 0 all passed, 1 a check failed, 2 usage error, 3 inconclusive (tool fault),
78 config error, 130 interrupted.";

const EXAMPLES_INIT: &str = "\
Examples:
  dtcprobe init                 write ./dtcprobe.toml
  dtcprobe init /etc/dtcprobe   write /etc/dtcprobe/dtcprobe.toml
then run it with `dtcprobe check` (in that directory) or `dtcprobe check -c FILE`.";

const EXAMPLES_AGENT: &str = "\
Examples:
  dtcprobe agent --listen 0.0.0.0:7135 --key-file agent.key -c agent.toml
  dtcprobe agent --listen [::]:7135 --key-file agent.key --metrics-listen 127.0.0.1:9716
See config/agent.example.toml for the allow list and docs/agent.md for the Windows service.";

const EXAMPLES_PEER: &str = "\
Examples:
  dtcprobe peer sql01 --key-file agent.key --zone web          agent on the default port 7135
  dtcprobe peer sql01:7135 --key-file agent.key --reverse tcp://caller:135
  dtcprobe peer sql01 --key-file agent.key -c dtcprobe.toml --callback-port 5001
  dtcprobe peer sql01 --key-file agent.key msdtc://localhost --reverse msdtc://localhost
Reverse checks run on the agent: tcp, dns, epm, msdtc and kdc, and mssql/postgres only with no
user (the credential-free login: the agent holds no credentials).";

const EXAMPLES_WATCH: &str = "\
Examples:
  dtcprobe watch -c dtcprobe.toml --interval 30s
  dtcprobe watch -c dtcprobe.toml --interval 1m --metrics-listen 0.0.0.0:9715
  dtcprobe watch -c dtcprobe.toml --interval 5m --textfile-dir /var/lib/node_exporter \\
      --textfile-name dtcprobe-web.prom
`-f` takes human, plain or json here: Nagios, JUnit and Prometheus describe one run; use
`dtcprobe check` for those (or --metrics-listen / --textfile-dir for Prometheus).";

const EXAMPLES_PROMETHEUS_CONFIG: &str = "\
Examples:
  dtcprobe prometheus-config -c dtcprobe.toml --listen-address probe-web01:9715 > prometheus.yml
  dtcprobe prometheus-config -c web.toml --listen-address probe-web01:9715 --job web --jobs-only
  dtcprobe prometheus-config -c web.toml --listen-address probe-web01:9715 \\
      --scrape-interval 30s --rule-file /etc/prometheus/dtcprobe-alerts.yml
  dtcprobe prometheus-config --matrix matrix.toml --scrape-interval 30s > prometheus.yml
The instance runs `dtcprobe watch -c dtcprobe.toml --interval 1m --metrics-listen 0.0.0.0:9715`.
With --matrix, each zone with `watch = \"HOST:PORT\"` in the matrix runs
`dtcprobe watch -c ZONE.toml ...` with the config `dtcprobe matrix -c matrix.toml --zone-config ZONE`
prints (docs/matrix.md).
SQL Server and PostgreSQL checks are probed without `target`: their credentials go only to the
configured server. Alert rules: config/dtcprobe-alerts.yml (docs/monitoring.md).";

const EXAMPLES_MATRIX: &str = "\
Examples:
  dtcprobe matrix -c matrix.toml                       the from x to grid
  dtcprobe matrix -c matrix.toml --print-allow         the allow entries each zone's agent needs
  dtcprobe matrix -c matrix.toml --zone-config web > web.toml   zone web's config for `watch`
  dtcprobe matrix -c matrix.toml -f json --output markdown=matrix.md --firewall-request csv=fw.csv
See config/matrix.example.toml and docs/matrix.md. Exit codes: 0 every cell passed, 1 a cell
failed, 3 inconclusive (an agent unreachable or lost, a check refused by an allow list),
78 config error.";

const EXAMPLES_COMPLETIONS: &str = "\
Examples:
  dtcprobe completions bash > /etc/bash_completion.d/dtcprobe
  dtcprobe completions zsh > \"${fpath[1]}/_dtcprobe\"
  dtcprobe completions powershell >> $PROFILE";

/// `dtcprobe watch`: the check options plus the schedule. `--baseline` (a one-run comparison) is
/// hidden here and refused if given.
#[derive(Debug, Clone, Args)]
#[command(mut_arg("baseline", |a| a.hide(true)))]
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
    /// Ad-hoc targets, optionally named NAME=URL: tcp://host:port[?hold=DUR], dns://host,
    /// mssql://user@host[:port|\instance]/db?tx=local|distributed,
    /// postgres://user@host[:5432]/db?tx=local|twophase, epm://host[:135]?iface=UUID[/vMAJ.MIN],
    /// msdtc://localhost?role=client|server|both (Windows: this host's MSDTC settings).
    /// Without TARGETs and -c: ./dtcprobe.toml, else $DTCPROBE_CONFIG.
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

    /// Colours in the human report: auto = only on a terminal, without NO_COLOR, and not with
    /// TERM=dumb.
    #[arg(long, value_enum, value_name = "WHEN", default_value = "auto")]
    pub color: crate::report::ColorChoice,

    /// Human and plain reports: only the hops that failed or warned, then the summary.
    #[arg(short = 'q', long)]
    pub quiet: bool,

    /// Timeout for each hop [default: 3s, or the config's defaults.timeout].
    #[arg(long, value_name = "DUR", value_parser = positive_duration)]
    pub timeout: Option<Duration>,

    /// Checks run at the same time [default: 1024, or the config's defaults.concurrency;
    /// lowered, with a note on stderr, if the open-file hard limit is too low].
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

    /// Write the blocked flows (source, destination, port, zones, evidence) as a firewall change
    /// request in FORMAT (csv or markdown) to PATH (repeatable; `-` is stdout; atomic).
    #[arg(long = "firewall-request", value_name = "FORMAT=PATH")]
    pub firewall_requests: Vec<crate::report::firewall_request::FirewallRequestSpec>,
    /// The file name written into --textfile-dir (one per scheduled config, so that two do not
    /// overwrite each other); must end in .prom.
    /// [default: dtcprobe.prom]
    #[arg(long, value_name = "NAME", requires = "textfile_dir", value_parser = crate::report::outputs::textfile_name_arg)]
    pub textfile_name: Option<String>,

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

    /// Do not trace the path (hop `path`: TTL-stepped SYNs) after a connect times out.
    #[arg(long)]
    pub no_trace: bool,

    /// For every tcp and mssql check without a `hold` of its own: after the session works, leave
    /// it idle DUR with TCP keepalives off, then use it (hop `idle`: tcp sends a TCP keepalive
    /// probe, mssql runs SELECT 1 on the same session). Fails with `idle_expired` when a
    /// firewall expired the idle session. Set DUR to the longest idle time the applications'
    /// sessions must survive, e.g. the connection pool's idle lifetime (15s, 30m, 1h; at most
    /// 24h); the check then takes DUR longer.
    #[arg(long, value_name = "DUR", value_parser = hold_arg)]
    pub hold: Option<Duration>,

    /// A TLS login (mssql, postgres) whose server certificate expires in fewer than N days
    /// warns (cause cert_expiring; default 30). A check's `cert_warn_days` overrides it.
    #[arg(long, value_name = "N")]
    pub cert_warn_days: Option<u32>,
}

/// `--hold DUR`: as a check's `hold` (positive, at most 24h).
fn hold_arg(text: &str) -> Result<Duration, crate::hops::idle::HoldError> {
    crate::hops::idle::parse_hold(text)
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
            trace: !self.no_trace,
            hold: self.hold,
            cert_warn_days: self.cert_warn_days,
            output: OutputRequest {
                format: self.format,
                color: crate::report::colour_for_stdout(self.color),
                quiet: self.quiet,
                outputs: self.outputs.clone(),
                textfile_dir: self.textfile_dir.clone(),
                firewall_requests: self.firewall_requests.clone(),
                textfile_name: self
                    .textfile_name
                    .clone()
                    .unwrap_or_else(|| crate::report::outputs::TEXTFILE_NAME.into()),
                fail_on: self.fail_on,
                baseline: self.baseline.clone(),
            },
        }
    }
}

/// An option of `check` that describes one run, refused by `watch` (exit 2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OneRunOption {
    #[error(
        "-f {0} describes one run and is not available in watch mode: use `dtcprobe check -f {0}` \
         for one run, or --metrics-listen ADDR / --textfile-dir DIR for Prometheus \
         (watch prints transitions as human, plain or json)"
    )]
    Format(&'static str),
    #[error("--firewall-request applies to one run (`check` or `peer`), not to watch")]
    FirewallRequest,
    #[error(
        "--baseline compares one run with an earlier report: use it with `dtcprobe check` \
         (watch reports transitions between its own rounds)"
    )]
    Baseline,
}

impl WatchArgs {
    /// The plan's input. `--baseline` does not apply to watch mode (refused by
    /// [`WatchArgs::refuse_one_run_options`]) and is never loaded.
    pub fn plan_input(&self) -> PlanInput {
        let mut input = self.check.plan_input();
        input.output.baseline = None;
        input
    }

    /// Options that describe one run and mean nothing per round: refused (exit 2) rather than
    /// accepted and ignored. A Nagios plugin, a JUnit file or a Prometheus exposition on stdout
    /// per round would be misread by whatever consumes them.
    pub fn refuse_one_run_options(&self) -> Result<(), OneRunOption> {
        match self.check.format {
            Format::Human | Format::Plain | Format::Json => {}
            other => return Err(OneRunOption::Format(other.name())),
        }
        if !self.check.firewall_requests.is_empty() {
            return Err(OneRunOption::FirewallRequest);
        }
        if self.check.baseline.is_some() {
            return Err(OneRunOption::Baseline);
        }
        Ok(())
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

/// `dtcprobe prometheus-config`.
#[derive(Debug, Clone, Args)]
#[command(group(
    clap::ArgGroup::new("input").required(true).args(["config", "matrix"])
))]
pub struct PrometheusConfigArgs {
    /// The config the `watch` instance runs (its checks are the /probe modules).
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// A zone matrix (docs/matrix.md) instead of -c: one instance per zone with a `watch`
    /// address, its modules the checks of `dtcprobe matrix --zone-config ZONE`, job and `prober`
    /// the zone's name, `from`/`to` labels on every probe. No key file is read.
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with_all = ["config", "listen_address", "job"]
    )]
    pub matrix: Option<PathBuf>,

    /// The instance's --metrics-listen address as Prometheus reaches it, HOST:PORT (-c only;
    /// with --matrix each zone's `watch`).
    #[arg(long, value_name = "HOST:PORT", default_value = "localhost:9715")]
    pub listen_address: String,

    /// Job name of the instance's /metrics job and prefix of its probe jobs (`NAME/CHECK`);
    /// also the `prober` label the alert rules select on. One per instance (-c only; with
    /// --matrix each zone's name).
    #[arg(long, value_name = "NAME", default_value = "dtcprobe")]
    pub job: String,

    /// scrape_interval of every job (and evaluation_interval) [default: Prometheus' global].
    #[arg(long, value_name = "DUR", value_parser = positive_duration)]
    pub scrape_interval: Option<Duration>,

    /// A rules file to list under rule_files: (repeatable), e.g. dtcprobe-alerts.yml.
    #[arg(long = "rule-file", value_name = "PATH")]
    pub rule_files: Vec<String>,

    /// Print only the jobs, to paste under the `scrape_configs:` of an existing prometheus.yml
    /// (one block per instance).
    #[arg(long)]
    pub jobs_only: bool,
}

/// `dtcprobe agent`: the far side, a long-running service.
#[derive(Debug, Clone, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct AgentArgs {
    /// Windows: register or remove the agent as a service (without one: run the agent here).
    #[command(subcommand)]
    pub action: Option<AgentAction>,

    /// Address to listen on, e.g. 0.0.0.0:7135 or [::]:7135 (or `listen` in the agent config).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,

    /// File holding the pre-shared key (at least 32 bytes after trimming whitespace).
    // An Option only so that `agent install|uninstall` can stand without it: clap requires it
    // whenever the agent itself is run.
    #[arg(long, value_name = "FILE", env = "DTCPROBE_KEY_FILE", required = true)]
    pub key_file: Option<PathBuf>,

    /// The agent's identity file (its own private key, from `dtcprobe keygen --identity`)
    /// [default: the key file's path with `.id` added; made on first start if missing].
    #[arg(long, value_name = "FILE", env = "DTCPROBE_IDENTITY_FILE")]
    pub identity_file: Option<PathBuf>,

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
            // clap makes --key-file required when no subcommand is given.
            key_file: self.key_file.clone().unwrap_or_default(),
            identity_file: self.identity_file.clone(),
            config: self.config.clone(),
            metrics_listen: self.metrics_listen.clone(),
            service: self.service,
        }
    }
}

/// `dtcprobe agent install|uninstall` (Windows).
#[derive(Debug, Clone, Subcommand)]
pub enum AgentAction {
    /// Register the agent as the Windows service `dtcprobe-agent` (auto start, LocalSystem) with
    /// these arguments, add an inbound Windows Firewall rule for its port, and start it. Run it
    /// from an elevated prompt.
    Install(AgentInstallArgs),
    /// Stop and remove the `dtcprobe-agent` service and its firewall rule.
    Uninstall(AgentUninstallArgs),
}

/// `dtcprobe agent install`: the agent's own arguments, stored in the service's command line.
#[derive(Debug, Clone, Args)]
pub struct AgentInstallArgs {
    /// Address the service listens on, IP:PORT, e.g. 0.0.0.0:7135 (or `listen` in the agent
    /// config); its port gets the firewall rule.
    #[arg(long, value_name = "IP:PORT")]
    pub listen: Option<String>,

    /// File holding the pre-shared key (checked now; stored as an absolute path).
    #[arg(long, value_name = "FILE", env = "DTCPROBE_KEY_FILE")]
    pub key_file: PathBuf,

    /// Agent config (checked now; stored as an absolute path).
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Serve the agent's /metrics and /healthz on this address.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<String>,

    /// Do not add the inbound Windows Firewall rule (`netsh advfirewall`).
    #[arg(long)]
    pub no_firewall_rule: bool,

    /// Register the service without starting it.
    #[arg(long)]
    pub no_start: bool,
}

impl AgentInstallArgs {
    pub fn install_input(&self) -> crate::agent::install::InstallInput {
        crate::agent::install::InstallInput {
            listen: self.listen.clone(),
            key_file: self.key_file.clone(),
            config: self.config.clone(),
            metrics_listen: self.metrics_listen.clone(),
            firewall_rule: !self.no_firewall_rule,
            start: !self.no_start,
        }
    }
}

/// `dtcprobe agent uninstall`.
#[derive(Debug, Clone, Args)]
pub struct AgentUninstallArgs {
    /// Leave the inbound firewall rule in place.
    #[arg(long)]
    pub keep_firewall_rule: bool,
}

/// `dtcprobe peer`: forward checks from here plus the reverse direction via the agent.
#[derive(Debug, Clone, Args)]
pub struct PeerArgs {
    /// The agent, HOST[:PORT] (default port 7135).
    #[arg(value_name = "AGENT_ADDR")]
    pub agent: String,

    /// File holding the pre-shared key (the same as the agent's).
    #[arg(long, value_name = "FILE", env = "DTCPROBE_KEY_FILE")]
    pub key_file: PathBuf,

    /// The agent's public key (64 hex digits, printed by the agent at start and by `keygen
    /// --identity`): the run fails with `agent_identity` if another agent answers.
    #[arg(long, value_name = "HEX")]
    pub agent_pubkey: Option<String>,

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
    /// msdtc://localhost reads the agent host's own MSDTC settings (no allow entry needed).
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
            agent_pubkey: self.agent_pubkey.clone(),
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

/// `dtcprobe matrix`.
#[derive(Debug, Clone, Args)]
pub struct MatrixArgs {
    /// The matrix file: zones, their agents and hosts, what each must reach (docs/matrix.md).
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: PathBuf,

    /// Output format on stdout.
    #[arg(short = 'f', long = "format", value_enum, default_value = "human")]
    pub format: crate::report::matrix::MatrixFormat,

    /// Colours in the human grid: auto = only on a terminal, without NO_COLOR, and not with
    /// TERM=dumb.
    #[arg(long, value_enum, value_name = "WHEN", default_value = "auto")]
    pub color: crate::report::ColorChoice,

    /// Timeout for each hop, on every agent [default: the file's `timeout`, else 3s].
    #[arg(long, value_name = "DUR", value_parser = positive_duration)]
    pub timeout: Option<Duration>,

    /// What makes the exit code non-zero.
    #[arg(long, value_enum, default_value = "failure")]
    pub fail_on: FailOn,

    /// Also write the matrix in FORMAT (human, markdown, json) to PATH (repeatable; `-` is
    /// stdout; files are replaced atomically).
    #[arg(long = "output", value_name = "FORMAT=PATH")]
    pub outputs: Vec<crate::report::matrix::outputs::MatrixOutputSpec>,

    /// Write the blocked flows of the failing cells as a firewall change request in FORMAT (csv
    /// or markdown) to PATH (repeatable; `-` is stdout; atomic).
    #[arg(long = "firewall-request", value_name = "FORMAT=PATH")]
    pub firewall_requests: Vec<crate::report::firewall_request::FirewallRequestSpec>,

    /// Print the `allow` entries each zone's agent needs for its row, then exit (no probing).
    #[arg(long)]
    pub print_allow: bool,

    /// Print the dtcprobe config for the `dtcprobe watch` of zone ZONE: its row of the matrix as
    /// [[check]] tables (the /probe modules `prometheus-config --matrix` scrapes), then exit
    /// (no probing, no key file read).
    #[arg(long, value_name = "ZONE", conflicts_with = "print_allow")]
    pub zone_config: Option<String>,

    /// Tell the agents not to trace the path (hop `path`) after a dropped connect: a dropped
    /// path then costs one hop timeout instead of two, and says less about where it dies.
    #[arg(long)]
    pub no_trace: bool,
}

impl MatrixArgs {
    /// Where the matrix report goes, colour decided for this stdout.
    pub fn output_plan(&self) -> crate::report::matrix::outputs::MatrixOutputPlan {
        crate::report::matrix::outputs::MatrixOutputPlan {
            format: self.format,
            color: self.format == crate::report::matrix::MatrixFormat::Human
                && crate::report::colour_for_stdout(self.color),
            outputs: self.outputs.clone(),
            firewall_requests: self.firewall_requests.clone(),
            fail_on: self.fail_on,
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
