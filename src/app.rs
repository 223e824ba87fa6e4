//! The edge: wires the parsed command line to the library, owns the runtime, logging, signals and
//! exit codes. The only place that uses `anyhow` (`init`'s errors); everything below it returns
//! typed errors.

use std::io::IsTerminal;
use std::path::Path;

use anyhow::Context;
use tracing_subscriber::EnvFilter;

use crate::agent::cmd::{AgentSetup, PeerSetup};
use crate::cli::{AgentAction, Cli, Command, InitArgs, PeerArgs, WatchArgs};
use crate::exit;
use crate::plan::{self, PlanInput};
use crate::report::{self, outputs};
use crate::runner;

/// The example written by `dtcprobe init` (also shipped as config/example.toml).
pub const EXAMPLE_CONFIG: &str = include_str!("../config/example.toml");

/// A command line clap rejects. Usage errors exit 2, except when the command line asks for
/// `-f nagios`: a Nagios plugin must answer on stdout with a state and exit 0-3, and exit 2 would
/// read CRITICAL (a broken service) for what is a broken command definition: UNKNOWN (3).
/// `--help` and `--version` print and exit 0 as always.
pub fn usage_error(err: clap::Error, args: &[std::ffi::OsString]) -> u8 {
    use clap::error::ErrorKind;
    if matches!(
        err.kind(),
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
    ) || !asks_for_nagios(args)
    {
        err.exit();
    }
    let _ = err.print();
    let message = err.kind().as_str().unwrap_or("invalid command line");
    outputs::pre_run_exit(
        report::Format::Nagios,
        exit::USAGE,
        &format!("dtcprobe: {message}"),
    )
}

/// Whether the raw arguments ask for the Nagios format, in any spelling clap accepts
/// (`-f nagios`, `-fnagios`, `-f=nagios`, `--format nagios`, `--format=nagios`).
fn asks_for_nagios(args: &[std::ffi::OsString]) -> bool {
    let args: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    args.iter().enumerate().any(|(i, a)| {
        let next = || args.get(i + 1).map(String::as_str);
        match a.as_str() {
            "-f" | "--format" => next() == Some("nagios"),
            _ => matches!(a.as_str(), "-fnagios" | "-f=nagios" | "--format=nagios"),
        }
    })
}

pub fn main(cli: Cli) -> u8 {
    // The agent serves the network for weeks: its log has a byte budget at every verbosity.
    let budgeted = matches!(&cli.command, Command::Agent(a) if a.action.is_none());
    init_logging(cli.verbose, budgeted);
    // Before the runtime starts: large runs hold one socket per check in flight.
    crate::fdlimit::raise_open_file_limit();
    // Before any login: no 50 ms entropy start-up on the first TLS handshake (see `tls`).
    crate::tls::install_crypto_provider();
    match cli.command {
        Command::Completions(args) => return completions(args.shell),
        Command::Man => return man_page(),
        // The plan first: how many checks it holds decides the runtime.
        Command::Check(args) => return check(args.plan_input()),
        _ => {}
    }
    let Some(runtime) = start_runtime(Threads::Pool) else {
        return exit::INCONCLUSIVE;
    };
    match cli.command {
        Command::Completions(_) | Command::Man | Command::Check(_) => exit::OK,
        Command::Watch(args) => runtime.block_on(watch(&args)),
        Command::PrometheusConfig(args) => prometheus_config(&args),
        Command::Agent(args) => match &args.action {
            Some(AgentAction::Install(install)) => {
                crate::agent::install::install_main(&install.install_input())
            }
            Some(AgentAction::Uninstall(uninstall)) => {
                crate::agent::install::uninstall_main(&crate::agent::install::UninstallInput {
                    firewall_rule: !uninstall.keep_firewall_rule,
                })
            }
            None => match AgentSetup::load(args.agent_input()) {
                Ok(setup) => runtime.block_on(crate::agent::cmd::agent_main(setup)),
                Err(e) => {
                    eprintln!("dtcprobe agent: {e}");
                    e.exit_code()
                }
            },
        },
        Command::Peer(args) => runtime.block_on(peer(&args)),
        Command::Matrix(args) => runtime.block_on(matrix(&args)),
        Command::Keygen(args) => keygen(&args),
        Command::Init(args) => match init(&args) {
            Ok(path) => {
                println!("wrote {}", path.display());
                println!("{}", init_next_steps(&args.dir));
                exit::OK
            }
            Err(e) => {
                eprintln!("dtcprobe init: {e:#}");
                exit::USAGE
            }
        },
    }
}

fn keygen(args: &crate::cli::KeygenArgs) -> u8 {
    crate::agent::keygen::keygen_main(args.out.as_deref(), args.identity)
}

fn init_logging(verbose: u8, budgeted: bool) {
    let default = match verbose {
        // tiberius logs server messages and TLS notes at warn/error: they are already in the report.
        0 => "warn,tiberius=off",
        1 => "dtcprobe=info",
        2 => "dtcprobe=debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let logger = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(report::colour_for(std::io::stderr().is_terminal()));
    let _ = if budgeted {
        logger
            .with_writer(crate::agent::log_budget::BudgetedStderr::agent())
            .try_init()
    } else {
        logger.with_writer(std::io::stderr).try_init()
    };
}

/// Which tokio runtime a command gets.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Threads {
    /// The multi-threaded runtime (one worker per core).
    Pool,
    /// The caller's thread only: a run of one check has nothing to spread over workers, and
    /// starting them (threads, their stacks, the wake-ups between them) was a good part of a
    /// one-port check's whole time next to `nc -z`.
    One,
}

fn start_runtime(threads: Threads) -> Option<tokio::runtime::Runtime> {
    let mut builder = match threads {
        Threads::Pool => tokio::runtime::Builder::new_multi_thread(),
        Threads::One => tokio::runtime::Builder::new_current_thread(),
    };
    match builder.enable_all().build() {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("dtcprobe: cannot start the async runtime: {e}");
            None
        }
    }
}

/// Everything is resolved (config, targets, baseline) before the first check runs; an error
/// there is reported the way the stdout format wants (see `Exporter::tool_error`).
fn check(input: PlanInput) -> u8 {
    let plan = match plan::build(&input) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("dtcprobe: {e}");
            return outputs::pre_run_exit(input.output.format, e.exit_code(), &e.to_string());
        }
    };
    let threads = if plan.checks.len() <= 1 {
        Threads::One
    } else {
        Threads::Pool
    };
    let Some(runtime) = start_runtime(threads) else {
        return exit::INCONCLUSIVE;
    };
    runtime.block_on(run_planned(plan))
}

/// The run of a built plan: progress bar, signals, the report everywhere it goes.
async fn run_planned(plan: plan::Plan) -> u8 {
    say_which_config(&plan);
    let bar = crate::progress::Bar::for_run(plan.checks.len());
    if let Some(b) = &bar {
        b.start_timer();
    }
    let opts = plan.run_options(
        bar.clone()
            .map(|b| b as std::sync::Arc<dyn runner::Progress>),
    );
    // Installed before the run starts: a Ctrl-C during the run must never kill the process by
    // the default action (exit by signal, no report, no exit code 130).
    let interrupted = crate::signals::shutdown_signal();
    let (report, stopped) = runner::run_plan_until(plan.checks.clone(), &opts, interrupted).await;
    if let Some(b) = &bar {
        b.finish();
    }
    // Stdout report (+ baseline comparison), --output files, --textfile-dir, exit code. A
    // stopped run writes its partial report everywhere too, and exits 130 whatever it found.
    let code = outputs::emit(&report, &plan.output);
    // The process exits next: freeing a large report one allocation at a time (10,000 checks:
    // a few hundred thousand) is work the exit does at once. Only the report (no secrets in
    // it, by design) is left to the exit; the plan, whose secrets are wiped when dropped, is
    // dropped as usual.
    std::mem::forget(report);
    if stopped {
        eprintln!("dtcprobe: interrupted: the report above is partial (unfinished hops: cause `interrupted`)");
        return exit::INTERRUPTED;
    }
    code
}

async fn watch(args: &WatchArgs) -> u8 {
    if let Err(message) = args.refuse_one_run_options() {
        eprintln!("dtcprobe watch: {message}");
        return exit::USAGE;
    }
    let plan = match plan::build(&args.plan_input()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("dtcprobe: {e}");
            return e.exit_code();
        }
    };
    say_which_config(&plan);
    crate::watch::run(plan, args.watch_options()).await
}

/// `dtcprobe prometheus-config`: reads the config (no password is resolved: nothing runs) and
/// prints the scrape configs on stdout.
fn prometheus_config(args: &crate::cli::PrometheusConfigArgs) -> u8 {
    use crate::prometheus_config::{modules_from_checks, render, ScrapeOptions};
    let config_path = match (&args.config, &args.matrix) {
        (_, Some(matrix)) => return prometheus_config_from_matrix(args, matrix),
        (Some(c), None) => c,
        // clap requires one of the two.
        (None, None) => {
            eprintln!("dtcprobe prometheus-config: give -c FILE or --matrix FILE");
            return exit::USAGE;
        }
    };
    let config = match crate::config::load(config_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("dtcprobe prometheus-config: {e}");
            return exit::CONFIG;
        }
    };
    let opts = ScrapeOptions {
        listen_address: args.listen_address.clone(),
        job: args.job.clone(),
        scrape_interval: args.scrape_interval,
        rule_files: args.rule_files.clone(),
        jobs_only: args.jobs_only,
        source: config_path.display().to_string(),
    };
    match render(&modules_from_checks(&config.checks), &opts) {
        Ok(yaml) => {
            let default_timeout = config.defaults.timeout.unwrap_or(plan::DEFAULT_TIMEOUT);
            for warning in crate::prometheus_config::slow_probe_warnings(
                &config.checks,
                default_timeout,
                args.scrape_interval,
            ) {
                eprintln!("dtcprobe prometheus-config: note: {warning}");
            }
            print!("{yaml}");
            exit::OK
        }
        Err(e) => {
            eprintln!("dtcprobe prometheus-config: {e}");
            match e {
                crate::prometheus_config::ScrapeConfigError::NoModules => exit::CONFIG,
                _ => exit::USAGE,
            }
        }
    }
}

/// `dtcprobe prometheus-config --matrix FILE`: one instance per zone with a `watch`, its modules
/// the zone's derived checks. The file is read without its key files (nothing is contacted).
fn prometheus_config_from_matrix(
    args: &crate::cli::PrometheusConfigArgs,
    matrix: &std::path::Path,
) -> u8 {
    use crate::prometheus_matrix::{instances, render_matrix, MatrixScrapeError};
    let plan = match crate::matrix::config::load_layout(matrix, None) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("dtcprobe prometheus-config: {e}");
            return exit::CONFIG;
        }
    };
    let source = matrix.display().to_string();
    let opts = crate::prometheus_config::ScrapeOptions {
        listen_address: String::new(),
        job: String::new(),
        scrape_interval: args.scrape_interval,
        rule_files: args.rule_files.clone(),
        jobs_only: args.jobs_only,
        source: source.clone(),
    };
    let yaml = instances(&plan, &source, args.scrape_interval).and_then(|scrape| {
        let yaml = render_matrix(&scrape, &opts)?;
        for zone in &scrape.unwatched {
            eprintln!(
                "dtcprobe prometheus-config: note: zone {zone} has checks but no `watch` address in {source}: its row is not scraped"
            );
        }
        for warning in &scrape.warnings {
            eprintln!("dtcprobe prometheus-config: note: {warning}");
        }
        Ok(yaml)
    });
    match yaml {
        Ok(yaml) => {
            print!("{yaml}");
            exit::OK
        }
        Err(e) => {
            eprintln!("dtcprobe prometheus-config: {e}");
            match e {
                MatrixScrapeError::ZoneConfig(
                    crate::matrix::zone_config::ZoneConfigError::Internal { .. },
                ) => exit::INCONCLUSIVE,
                // The file's content (no watch, a zone config or job that cannot be made).
                _ => exit::CONFIG,
            }
        }
    }
}

/// A run that read a config nobody named on the command line says which one, on stderr.
fn say_which_config(plan: &plan::Plan) {
    if let Some((path, why)) = &plan.found_config {
        eprintln!(
            "dtcprobe: reading {} ({why}; -c FILE to choose another)",
            path.display()
        );
    }
}

/// What to do after `init` (printed on stdout after "wrote PATH").
fn init_next_steps(dir: &Path) -> String {
    let here = dir.as_os_str().is_empty() || dir == Path::new(".");
    let run = if here {
        "dtcprobe check".to_string()
    } else {
        format!(
            "dtcprobe check -c {}",
            dir.join(plan::DEFAULT_CONFIG_FILE).display()
        )
    };
    format!(
        "next: run `{run}`: it checks this host only (localhost), so it works as is.\n\
         Then edit the file: uncomment the [[check]] examples and replace every \
         REPLACE-ME value with your own servers."
    )
}

/// `dtcprobe completions SHELL`: generated from the clap definitions, so it never lags behind.
fn completions(shell: clap_complete::Shell) -> u8 {
    use clap::CommandFactory;
    let mut cmd = Cli::command();
    clap_complete::generate(shell, &mut cmd, "dtcprobe", &mut std::io::stdout());
    exit::OK
}

/// `dtcprobe man`: the man page (roff), generated from the clap definitions.
fn man_page() -> u8 {
    use clap::CommandFactory;
    let cmd = Cli::command();
    let mut out = std::io::stdout().lock();
    let written = clap_mangen::Man::new(cmd.clone())
        .render(&mut out)
        .and_then(|_| {
            // One section per subcommand (the top page only lists them).
            for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
                let name = format!("dtcprobe-{}", sub.get_name());
                let sub = sub.clone().display_name(name);
                clap_mangen::Man::new(sub).render(&mut out)?;
            }
            Ok(())
        });
    match written {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("dtcprobe man: cannot write the man page: {e}");
            exit::INCONCLUSIVE
        }
    }
}

/// Key, reverse checks and plan (baseline included) are resolved before the agent is contacted.
async fn peer(args: &PeerArgs) -> u8 {
    match PeerSetup::resolve(args.peer_input()) {
        Ok(setup) => crate::agent::cmd::peer_main(setup).await,
        Err(e) => {
            eprintln!("dtcprobe peer: {e}");
            outputs::pre_run_exit(args.check.format, e.exit_code(), &e.to_string())
        }
    }
}

/// `dtcprobe matrix`: the file (keys included) is resolved before any agent is contacted (exit
/// 78 with file:line); then either the allow lists are printed, or the matrix is run and written.
async fn matrix(args: &crate::cli::MatrixArgs) -> u8 {
    if let Some(zone) = &args.zone_config {
        return matrix_zone_config(args, zone);
    }
    let plan = match crate::matrix::config::load(&args.config, args.timeout, !args.no_trace) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("dtcprobe matrix: {e}");
            return exit::CONFIG;
        }
    };
    if args.print_allow {
        print!("{}", crate::matrix::allow_lists(&plan));
        return exit::OK;
    }
    let report = crate::matrix::run::run(&plan).await;
    crate::report::matrix::outputs::emit(&report, &args.output_plan())
}

/// `dtcprobe matrix --zone-config ZONE`: the zone's row as a config for its `watch`. No key file
/// is read (nothing is contacted): a zone's host need not hold the other zones' keys.
fn matrix_zone_config(args: &crate::cli::MatrixArgs, zone: &str) -> u8 {
    use crate::matrix::zone_config::{zone_checks, zone_config, ZoneConfigError};
    let plan = match crate::matrix::config::load_layout(&args.config, args.timeout) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("dtcprobe matrix: {e}");
            return exit::CONFIG;
        }
    };
    let source = args.config.display().to_string();
    // Parsed back first, as `watch -c` will: only a config that loads is printed.
    match zone_checks(&plan, zone, &source).and_then(|_| zone_config(&plan, zone, &source)) {
        Ok(text) => {
            print!("{text}");
            exit::OK
        }
        Err(e) => {
            eprintln!("dtcprobe matrix: {e}");
            match e {
                ZoneConfigError::UnknownZone { .. } => exit::USAGE,
                ZoneConfigError::NothingToCheck { .. } => exit::CONFIG,
                ZoneConfigError::Internal { .. } => exit::INCONCLUSIVE,
            }
        }
    }
}

fn init(args: &InitArgs) -> anyhow::Result<std::path::PathBuf> {
    let path = args.dir.join("dtcprobe.toml");
    if path.exists() && !args.force {
        anyhow::bail!("{} exists; use --force to overwrite", path.display());
    }
    if !args.dir.as_os_str().is_empty() && !Path::new(&args.dir).exists() {
        std::fs::create_dir_all(&args.dir)
            .with_context(|| format!("cannot create {}", args.dir.display()))?;
    }
    std::fs::write(&path, EXAMPLE_CONFIG)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    #[test]
    fn nagios_is_recognised_in_every_spelling_clap_takes() {
        let yes = [
            &["check", "-f", "nagios", "x"][..],
            &["check", "-fnagios"],
            &["check", "-f=nagios"],
            &["check", "--format", "nagios"],
            &["check", "--format=nagios", "--bogus"],
        ];
        let no = [
            &["check", "-f", "json"][..],
            &["check", "nagios"],
            &["check", "-f"],
            &["check", "--format", "plain", "nagios"],
        ];
        let os = |a: &[&str]| a.iter().map(std::ffi::OsString::from).collect::<Vec<_>>();
        for a in yes {
            assert!(super::asks_for_nagios(&os(a)), "{a:?}");
        }
        for a in no {
            assert!(!super::asks_for_nagios(&os(a)), "{a:?}");
        }
    }
}
