//! What every session of one agent shares: its key, config, budgets, log limiters and counters.

use std::sync::Arc;

use tokio::sync::Semaphore;

use super::super::limits::{PreAuthBudget, WarnLimiter};
use super::super::metrics::{AgentStats, Snapshot};
use super::super::protocol::Key;
use super::super::AgentConfig;

pub struct AgentState {
    pub(super) key: Key,
    pub(super) config: AgentConfig,
    pub(super) sessions: Arc<Semaphore>,
    pub(super) pre_auth: Arc<PreAuthBudget>,
    /// One limiter per kind of repetitive warning.
    pub(super) warn_busy: WarnLimiter,
    pub(super) warn_pre_auth: WarnLimiter,
    pub(super) warn_refused: WarnLimiter,
    pub(super) host: String,
    pub stats: AgentStats,
    started: std::time::SystemTime,
}

impl AgentState {
    pub fn new(key: Key, config: AgentConfig) -> AgentState {
        let sessions = Arc::new(Semaphore::new(config.max_sessions));
        // No replay cache: a request travels under keys fresh to its own connection (Noise
        // ephemeral keys), so a recorded one never decrypts on any other.
        AgentState {
            key,
            sessions,
            pre_auth: Arc::new(PreAuthBudget::new(
                config.max_pending,
                config.max_pending_per_source,
            )),
            warn_busy: WarnLimiter::default(),
            warn_pre_auth: WarnLimiter::default(),
            warn_refused: WarnLimiter::default(),
            host: crate::runner::local_host_name(),
            config,
            stats: Default::default(),
            started: std::time::SystemTime::now(),
        }
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
