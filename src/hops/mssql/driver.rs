//! The TDS driver (tiberius) as every mssql hop on a session uses it: the connection type, a
//! guard that runs one driver call in its own task under a limit (neither a hung server nor a
//! driver panic on hostile bytes can hang the tool), and a driver failure as a hop result.

use std::future::Future;
use std::time::Duration;

use serde_json::json;
use tiberius::Client;
use tokio::net::TcpStream;
use tokio_util::compat::Compat;

use super::classify::{classify_failure, Failure};
use super::sniff::Sniffer;
use crate::model::{HopKind, HopResult};

/// A logged-in TDS session, its bytes watched by the sniffer.
pub(super) type Conn = Client<Compat<Sniffer<TcpStream>>>;

/// Runs `fut` in its own task under `limit`: a timeout aborts it, a panic inside the driver
/// (hostile bytes) becomes a protocol error instead of taking the tool down.
pub(super) async fn guarded<T, F>(limit: Duration, what: &str, fut: F) -> Result<T, Failure>
where
    T: Send + 'static,
    F: Future<Output = Result<T, Failure>> + Send + 'static,
{
    /// Aborts the task if this future is dropped (e.g. cut off by the chain's own timeout).
    struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);
    impl<T> Drop for AbortOnDrop<T> {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let mut handle = AbortOnDrop(tokio::spawn(super::kerberos::carry_ccache(fut)));
    match tokio::time::timeout(limit, &mut handle.0).await {
        Ok(Ok(r)) => r,
        Ok(Err(join)) => Err(Failure::Protocol(format!(
            "the TDS driver {} while {what}",
            if join.is_panic() {
                "panicked on the server's data"
            } else {
                "was cancelled"
            }
        ))),
        Err(_) => {
            handle.0.abort();
            Err(Failure::Timeout(format!(
                "no answer within {} while {what}",
                humantime::format_duration(limit)
            )))
        }
    }
}

pub(super) fn failure_result(kind: HopKind, f: &Failure) -> HopResult {
    let r = classify_failure(f).into_hop(kind);
    match f {
        Failure::Server {
            number,
            state,
            class,
            ..
        } => r.with_data(
            "error",
            json!({"number": number, "state": state, "class": class}),
        ),
        _ => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Cause;

    #[test]
    fn server_errors_become_hop_results() {
        let r = failure_result(
            HopKind::Login,
            &Failure::Server {
                number: 18456,
                state: 8,
                class: 14,
                message: "Login failed for user 'sa'.".into(),
            },
        );
        assert_eq!(r.cause, Some(Cause::AuthFailed));
        assert_eq!(r.data["error"]["number"], 18456);
        assert!(r.detail.contains("18456"));
    }
}
