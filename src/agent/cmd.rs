//! Command-line surface of `dtcprobe agent` and `dtcprobe peer` (clap args and the two entry
//! points `app` dispatches to).

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::client::{run_peer, PeerOptions};
use super::protocol::{Key, ReverseTarget};
use crate::cli::CheckArgs;
use crate::config::positive_duration;
use crate::exit;
use crate::plan;
use crate::report::{self, RenderOptions};
use crate::runner::RunOptions;
use crate::target::Target;

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

pub async fn agent_main(args: AgentArgs) -> u8 {
    let key = match Key::load(&args.key_file) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("dtcprobe agent: {e}");
            return exit::CONFIG;
        }
    };
    let config = match &args.config {
        Some(p) => match super::AgentConfig::load(p) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("dtcprobe agent: {e}");
                return exit::CONFIG;
            }
        },
        None => super::AgentConfig::default(),
    };
    let mut config = config;
    if args.metrics_listen.is_some() {
        config.metrics_listen = args.metrics_listen.clone();
    }
    if args.service {
        return run_service(args.listen.clone(), key, config).await;
    }
    match super::server::run(args.listen.as_deref(), key, config).await {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("dtcprobe agent: {e:#}");
            exit::INCONCLUSIVE
        }
    }
}

#[cfg(windows)]
async fn run_service(listen: Option<String>, key: Key, config: super::AgentConfig) -> u8 {
    let runtime = tokio::runtime::Handle::current();
    let dispatched =
        tokio::task::spawn_blocking(move || super::winsvc::dispatch(listen, key, config, runtime))
            .await;
    match dispatched {
        Ok(Ok(())) => exit::OK,
        Ok(Err(e)) => {
            eprintln!("dtcprobe agent: {e}");
            exit::INCONCLUSIVE
        }
        Err(e) => {
            eprintln!("dtcprobe agent: service thread failed: {e}");
            exit::INCONCLUSIVE
        }
    }
}

#[cfg(not(windows))]
async fn run_service(_listen: Option<String>, _key: Key, _config: super::AgentConfig) -> u8 {
    eprintln!(
        "dtcprobe agent: --service is for the Windows service control manager; \
         on Linux run it under systemd (config/dtcprobe-agent.service)"
    );
    exit::USAGE
}

/// Parses `--reverse` URLs: host `caller` means "the caller's address as the agent sees it".
pub fn parse_reverse(urls: &[String]) -> Result<Vec<ReverseTarget>, String> {
    urls.iter()
        .map(|text| {
            let target = Target::from_url(text).map_err(|e| format!("--reverse {text}: {e}"))?;
            let to_caller = target.host().eq_ignore_ascii_case("caller");
            Ok(ReverseTarget {
                name: format!("reverse {text}"),
                url: text.clone(),
                to_caller,
            })
        })
        .collect()
}

pub async fn peer_main(args: PeerArgs) -> u8 {
    let key = match Key::load(&args.key_file) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("dtcprobe peer: {e}");
            return exit::CONFIG;
        }
    };
    let reverse = match parse_reverse(&args.reverse) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("dtcprobe peer: {e}");
            return exit::USAGE;
        }
    };
    let plan = match plan::build_allowing_empty(&args.check) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("dtcprobe peer: {e}");
            return e.exit_code();
        }
    };
    let opts = PeerOptions {
        agent: args.agent.clone(),
        key,
        callback_bind: args.callback_bind,
        callback_port: args.callback_port,
        caller_name: Some(
            args.caller_name
                .clone()
                .unwrap_or_else(crate::runner::local_host_name),
        ),
        // This host's zone: the flag, else the config's `[defaults] zone`.
        zone: args.zone.clone().or_else(|| plan.zone.clone()),
        reverse,
        hop_timeout: plan.timeout,
        session_timeout: args
            .session_timeout
            .unwrap_or(PeerOptions::default_session_timeout(plan.timeout)),
        cid: args.cid.clone(),
    };
    let run = RunOptions {
        timeout: plan.timeout,
        concurrency: plan.concurrency,
        progress: None,
    };
    let interrupted = crate::signals::shutdown_signal();
    let report = tokio::select! {
        r = run_peer(&opts, &plan.checks, &run) => r,
        _ = interrupted => {
            eprintln!("dtcprobe: interrupted");
            return exit::INTERRUPTED;
        }
    };
    report::outputs::emit(&report, &args.check, RenderOptions::for_stdout())
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
