//! The accept loop: every connection takes a slot of the pre-authentication budget (or is closed
//! at once), each session runs bounded in time, and a shut-down agent lets sessions finish.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tracing::{info, warn};

use super::super::limits::BudgetRefusal;
use super::super::metrics::AgentStats;
use super::session::session;
use super::state::AgentState;

/// How long a shut-down agent lets running sessions finish.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Accepts sessions until `shutdown` completes, then lets running sessions finish for up to
/// [`SHUTDOWN_GRACE`] and aborts the rest.
pub async fn serve<S>(
    listener: TcpListener,
    state: Arc<AgentState>,
    shutdown: S,
) -> std::io::Result<()>
where
    S: Future<Output = ()>,
{
    let mut tasks = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        while tasks.try_join_next().is_some() {}
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let slot = match state.pre_auth.try_take(peer.ip().to_canonical()) {
            Ok(slot) => slot,
            Err(why) => {
                AgentStats::bump(&state.stats.refused_pre_auth);
                if let Some(suppressed) = state.warn_pre_auth.allow() {
                    let limit = match why {
                        BudgetRefusal::Total => "max_pending",
                        BudgetRefusal::Source => "max_pending_per_source",
                    };
                    warn!(%peer, limit, suppressed, "too many unauthenticated connections: closed");
                }
                // Closed without a word: an unauthenticated flood gets nothing to read.
                continue;
            }
        };
        let state = state.clone();
        tasks.spawn(async move {
            let limit = state.config.request_timeout + state.config.frame_timeout * 3;
            if tokio::time::timeout(limit, session(stream, peer, &state, slot))
                .await
                .is_err()
            {
                warn!(%peer, "session exceeded {limit:?}: dropped");
            }
        });
    }
    info!(running = tasks.len(), "shutting down: no new sessions");
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
        warn!("sessions still running after {SHUTDOWN_GRACE:?}: aborted");
        tasks.shutdown().await;
    }
    Ok(())
}
