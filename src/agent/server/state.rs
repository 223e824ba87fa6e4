//! What every session of one agent shares: its key and identity, config, budgets, log limiters
//! and counters.

use std::sync::Arc;

use tokio::sync::Semaphore;

use super::super::fair_share::{FairBudget, Watched};
use super::super::limits::{FirstPerSource, WarnLimiter};
use super::super::metrics::{AgentStats, Snapshot};
use super::super::protocol::{AgentIdentity, Key};
use super::super::AgentConfig;

/// A connection to the agent, watched for its first byte (see [`super::super::fair_share`]).
pub(super) type AgentStream = Watched<tokio::net::TcpStream>;

pub struct AgentState {
    pub(super) key: Key,
    pub(super) identity: AgentIdentity,
    pub(super) config: AgentConfig,
    pub(super) sessions: Arc<Semaphore>,
    pub(super) pre_auth: Arc<FairBudget>,
    /// One limiter per kind of repetitive warning.
    pub(super) warn_busy: WarnLimiter,
    pub(super) warn_pre_auth: WarnLimiter,
    pub(super) warn_refused: WarnLimiter,
    /// The first refusal from each source, logged past `warn_refused`.
    pub(super) first_refusal: FirstPerSource,
    /// Per-connection debug lines (`-vv`).
    pub(super) debug_lines: WarnLimiter,
    pub(super) host: String,
    pub stats: AgentStats,
    started: std::time::SystemTime,
}

impl AgentState {
    /// An agent with a fresh identity of its own, for embedding and tests (the `agent` command
    /// loads its identity file: [`AgentState::with_identity`]).
    pub fn new(key: Key, config: AgentConfig) -> AgentState {
        let identity = AgentIdentity::generate().expect("the OS gives randomness");
        AgentState::with_identity(key, identity, config)
    }

    pub fn with_identity(key: Key, identity: AgentIdentity, config: AgentConfig) -> AgentState {
        let sessions = Arc::new(Semaphore::new(config.max_sessions));
        // No replay cache: a request travels under keys fresh to its own connection (Noise
        // ephemeral keys), so a recorded one never decrypts on any other.
        AgentState {
            key,
            identity,
            sessions,
            pre_auth: Arc::new(FairBudget::new(
                config.max_pending,
                config.max_pending_per_source,
            )),
            warn_busy: WarnLimiter::default(),
            warn_pre_auth: WarnLimiter::default(),
            warn_refused: WarnLimiter::default(),
            first_refusal: FirstPerSource::default(),
            debug_lines: WarnLimiter::new(20, std::time::Duration::from_secs(1)),
            host: crate::runner::local_host_name(),
            config,
            stats: Default::default(),
            started: std::time::SystemTime::now(),
        }
    }

    /// The identity this agent proves in every handshake.
    pub fn identity(&self) -> &AgentIdentity {
        &self.identity
    }

    /// What `/metrics` shows now.
    pub fn snapshot(&self) -> Snapshot {
        let max = self.config.max_sessions;
        let active = max.saturating_sub(self.sessions.available_permits());
        let started = self
            .started
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        self.stats.snapshot(active, max, started)
    }
}
