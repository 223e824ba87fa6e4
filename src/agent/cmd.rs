//! The two entry points of `dtcprobe agent` and `dtcprobe peer` that `app` dispatches to, and
//! the step before each that loads what they need (key, agent config, plan): every input error
//! is found before the agent listens or the peer run starts. The clap definitions live in `cli`,
//! which converts its arguments into [`AgentInput`] and [`PeerInput`].

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

use super::client::{run_peer, PeerOptions};
use super::protocol::{Key, KeyError, ReverseTarget};
use super::{AgentConfig, AgentConfigError};
use crate::exit;
use crate::plan::{self, Plan, PlanError, PlanInput};
use crate::report::outputs;
use crate::runner::RunOptions;
use crate::target::Target;

/// Why the agent or the peer run could not start.
#[derive(Debug, Error)]
pub enum SetupError {
    #[error("{0}")]
    Key(#[from] KeyError),
    #[error("{0}")]
    AgentConfig(#[from] AgentConfigError),
    /// A `--reverse` URL that does not parse.
    #[error("{0}")]
    Reverse(String),
    #[error("{0}")]
    Plan(#[from] PlanError),
}

impl SetupError {
    pub fn exit_code(&self) -> u8 {
        match self {
            SetupError::Key(_) | SetupError::AgentConfig(_) => exit::CONFIG,
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
    pub config: Option<PathBuf>,
    /// Overrides the agent config's `metrics_listen`.
    pub metrics_listen: Option<String>,
    /// Run under the Windows service control manager.
    pub service: bool,
}

/// The agent, ready to run: key and config loaded.
pub struct AgentSetup {
    pub listen: Option<String>,
    pub key: Key,
    pub config: AgentConfig,
    pub service: bool,
}

impl AgentSetup {
    pub fn load(input: AgentInput) -> Result<AgentSetup, SetupError> {
        let key = Key::load(&input.key_file)?;
        let mut config = match &input.config {
            Some(p) => AgentConfig::load(p)?,
            None => AgentConfig::default(),
        };
        if input.metrics_listen.is_some() {
            config.metrics_listen = input.metrics_listen;
        }
        Ok(AgentSetup {
            listen: input.listen,
            key,
            config,
            service: input.service,
        })
    }
}

pub async fn agent_main(setup: AgentSetup) -> u8 {
    let AgentSetup {
        listen,
        key,
        config,
        service,
    } = setup;
    if service {
        return run_service(listen, key, config).await;
    }
    match super::server::run(listen.as_deref(), key, config).await {
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

/// What `dtcprobe peer` was asked for (plain values).
#[derive(Debug, Clone)]
pub struct PeerInput {
    /// The agent, `host:port`.
    pub agent: String,
    pub key_file: PathBuf,
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
        let reverse = parse_reverse(&input.reverse).map_err(SetupError::Reverse)?;
        let plan = plan::build_allowing_empty(&input.plan)?;
        let opts = PeerOptions {
            agent: input.agent,
            key,
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
        };
        Ok(PeerSetup { plan, opts })
    }
}

pub async fn peer_main(setup: PeerSetup) -> u8 {
    let PeerSetup { plan, opts } = setup;
    let run = RunOptions {
        timeout: plan.timeout,
        concurrency: plan.concurrency,
        progress: None,
        trace: plan.trace,
    };
    let interrupted = crate::signals::shutdown_signal();
    let report = tokio::select! {
        r = run_peer(&opts, &plan.checks, &run) => r,
        _ = interrupted => {
            eprintln!("dtcprobe: interrupted");
            return exit::INTERRUPTED;
        }
    };
    outputs::emit(&report, &plan.output)
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
