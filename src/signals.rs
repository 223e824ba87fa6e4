//! Stop requests: Ctrl-C everywhere, and SIGTERM on Unix (systemd's stop, `kill`).

use std::future::Future;

use tracing::info;

/// Completes on Ctrl-C, or SIGTERM on Unix (systemd's stop). The handlers are installed when this
/// is called, not when the future is first polled, so a stop request during startup is not lost
/// (nor does it kill the process with the default action).
pub fn shutdown_signal() -> impl Future<Output = ()> + Send {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, Signal, SignalKind};
        let term = signal(SignalKind::terminate()).ok();
        let int = signal(SignalKind::interrupt()).ok();
        async fn recv(s: Option<Signal>) {
            match s {
                Some(mut s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        async move {
            tokio::select! {
                _ = recv(term) => info!("SIGTERM received"),
                _ = recv(int) => info!("Ctrl-C received"),
            }
        }
    }
    #[cfg(not(unix))]
    {
        let ctrl_c = tokio::signal::windows::ctrl_c().ok();
        async move {
            match ctrl_c {
                Some(mut c) => {
                    c.recv().await;
                }
                None => std::future::pending().await,
            }
            info!("Ctrl-C received");
        }
    }
}
