//! Process start: the listen address, the open-file limit, the `/metrics` endpoint, and serving
//! until a shutdown signal (or the Windows service being stopped).

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tracing::{info, warn};

use super::super::metrics;
use super::super::protocol::{self, Key};
use super::super::AgentConfig;
use super::admission::serve;
use super::state::AgentState;

/// Binds and serves until SIGTERM or Ctrl-C.
pub async fn run(listen: Option<&str>, key: Key, config: AgentConfig) -> anyhow::Result<()> {
    run_until(listen, key, config, shutdown_signal()).await
}

/// Binds and serves until `shutdown` completes (a signal, or the Windows service being stopped).
pub async fn run_until<S>(
    listen: Option<&str>,
    key: Key,
    config: AgentConfig,
    shutdown: S,
) -> anyhow::Result<()>
where
    S: Future<Output = ()>,
{
    let listen = listen
        .map(str::to_string)
        .or_else(|| config.listen.clone())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no listen address: pass --listen ADDR or set `listen` in the agent config"
            )
        })?;
    let listener = TcpListener::bind(&listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    info!(
        listen = %listener.local_addr()?,
        allow = config.allow.len(),
        max_sessions = config.max_sessions,
        "agent listening (protocol v{})",
        protocol::PROTOCOL_VERSION
    );
    let metrics_listen = config.metrics_listen.clone();
    let metrics_max_connections = config.metrics_max_connections;
    // `max_sessions` sessions (each with a callback and reverse-check sockets) plus the
    // pre-authentication and metrics budgets need more than the usual soft limit of 1024: the
    // one start-up rule for every command raises it to the hard limit.
    crate::fdlimit::raise_open_file_limit();
    let state = Arc::new(AgentState::new(key, config));
    // The metrics endpoint stops with the agent.
    let (stopped_tx, stopped_rx) = tokio::sync::oneshot::channel::<()>();
    if let Some(addr) = metrics_listen {
        let metrics_listener = TcpListener::bind(&addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen for metrics on {addr}: {e}"))?;
        info!(listen = %metrics_listener.local_addr()?, "serving /metrics and /healthz");
        let snapshot_state = state.clone();
        let snapshot: metrics::SnapshotFn = Arc::new(move || snapshot_state.snapshot());
        tokio::spawn(async move {
            let stop = async {
                let _ = stopped_rx.await;
            };
            let limits = metrics::MetricsLimits {
                max_connections: metrics_max_connections,
                ..Default::default()
            };
            if let Err(e) = metrics::serve(metrics_listener, snapshot, limits, stop).await {
                warn!(error = %e, "metrics endpoint failed");
            }
        });
    }
    let shutdown = async move {
        shutdown.await;
        let _ = stopped_tx.send(());
    };
    serve(listener, state, shutdown).await?;
    info!("agent stopped");
    Ok(())
}

pub use crate::signals::shutdown_signal;
