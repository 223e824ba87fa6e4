//! The edge: wires the parsed command line to the library, owns the runtime, logging, signals and
//! exit codes. The only place that uses `anyhow`.

use std::io::IsTerminal;
use std::path::Path;

use anyhow::Context;
use tracing_subscriber::EnvFilter;

use crate::agent::cmd::{AgentSetup, PeerSetup};
use crate::cli::{Cli, Command, InitArgs, PeerArgs, WatchArgs};
use crate::exit;
use crate::plan::{self, PlanInput};
use crate::report::{self, outputs};
use crate::runner::{self, RunOptions};

/// The example written by `dtcprobe init` (also shipped as config/example.toml).
pub const EXAMPLE_CONFIG: &str = include_str!("../config/example.toml");

pub fn main(cli: Cli) -> u8 {
    init_logging(cli.verbose);
    raise_open_file_limit();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dtcprobe: cannot start the async runtime: {e}");
            return exit::INCONCLUSIVE;
        }
    };
    match cli.command {
        Command::Check(args) => runtime.block_on(check(args.plan_input())),
        Command::Watch(args) => runtime.block_on(watch(&args)),
        Command::Agent(args) => match AgentSetup::load(args.agent_input()) {
            Ok(setup) => runtime.block_on(crate::agent::cmd::agent_main(setup)),
            Err(e) => {
                eprintln!("dtcprobe agent: {e}");
                e.exit_code()
            }
        },
        Command::Peer(args) => runtime.block_on(peer(&args)),
        Command::Keygen(args) => keygen(&args),
        Command::Init(args) => match init(&args) {
            Ok(path) => {
                println!("wrote {}", path.display());
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
    use crate::agent::keygen::{new_key_text, write_key_file};
    let result = match &args.out {
        Some(path) => write_key_file(path).map(|()| {
            eprintln!(
                "wrote {} (owner-only); copy it to the other host over a safe channel",
                path.display()
            );
        }),
        None => new_key_text().map(|text| print!("{text}")),
    };
    match result {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("dtcprobe keygen: {e}");
            exit::CONFIG
        }
    }
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        // tiberius logs server messages and TLS notes at warn/error: they are already in the report.
        0 => "warn,tiberius=off",
        1 => "dtcprobe=info",
        2 => "dtcprobe=debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(report::colour_for(std::io::stderr().is_terminal()))
        .try_init();
}

/// Large runs hold one socket per concurrent hop; the usual soft limit of 1024 would turn a
/// `--concurrency 1000` run into spurious "too many open files" faults.
fn raise_open_file_limit() {
    #[cfg(unix)]
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max.min(1 << 20);
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// Everything is resolved (config, targets, baseline) before the first check runs; an error
/// there is reported the way the stdout format wants (see `Exporter::tool_error`).
async fn check(input: PlanInput) -> u8 {
    let plan = match plan::build(&input) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("dtcprobe: {e}");
            return outputs::pre_run_exit(input.output.format, e.exit_code(), &e.to_string());
        }
    };
    let bar = crate::progress::Bar::for_run(plan.checks.len());
    if let Some(b) = &bar {
        b.start_timer();
    }
    let opts = RunOptions {
        timeout: plan.timeout,
        concurrency: plan.concurrency,
        progress: bar
            .clone()
            .map(|b| b as std::sync::Arc<dyn runner::Progress>),
    };
    // Installed before the run starts: a Ctrl-C during the run must never kill the process by
    // the default action (exit by signal, no report, no exit code 130).
    let interrupted = crate::signals::shutdown_signal();
    let report = tokio::select! {
        r = runner::run_plan(&plan.checks, &opts) => r,
        _ = interrupted => {
            eprintln!("dtcprobe: interrupted");
            return exit::INTERRUPTED;
        }
    };
    if let Some(b) = &bar {
        b.finish();
    }
    // Stdout report (+ baseline comparison), --output files, --textfile-dir, exit code.
    outputs::emit(&report, &plan.output)
}

async fn watch(args: &WatchArgs) -> u8 {
    let plan = match plan::build(&args.plan_input()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("dtcprobe: {e}");
            return e.exit_code();
        }
    };
    if args.check.baseline.is_some() {
        eprintln!("dtcprobe watch: --baseline is ignored in watch mode (use it with `check`)");
    }
    crate::watch::run(plan, args.watch_options()).await
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
