//! Hop `idle` (`hold=DUR`) on the login's session: the session is left alone for the hold, then
//! one `SELECT 1` says whether it survived and, if not, how it died.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

use super::classify::{failure_from_tiberius, Failure};
use super::driver::{failure_result, guarded, Conn};
use crate::chain::HopOutput;
use crate::hops::idle::{self, Death};
use crate::model::HopKind;

/// Hop `idle`: the session is left alone for `hold` (no keepalive: the login turned it off),
/// then `SELECT 1` runs on it, bounded by `limit`. How it fails says how the session died.
pub(super) async fn idle_hop(
    conn: Conn,
    addr: SocketAddr,
    hold: Duration,
    limit: Duration,
) -> HopOutput<Conn> {
    tokio::time::sleep(hold).await;
    let started = Instant::now();
    let outcome = guarded(limit, "running SELECT 1 after the hold", async move {
        let mut conn = conn;
        let answer = select_one(&mut conn).await;
        Ok(answer.map(|one| (conn, one)))
    })
    .await;
    let took = started.elapsed();
    let result = match outcome {
        Ok(Ok((conn, Some(1)))) => {
            return HopOutput::ok(
                idle::survived(
                    hold,
                    &format!(
                        "SELECT 1 on the same session answered in {} ms",
                        took.as_millis()
                    ),
                )
                .with_data("address", addr.to_string()),
                conn,
            )
        }
        Ok(Ok((_, other))) => failure_result(
            HopKind::Idle,
            &Failure::Unexpected(format!("SELECT 1 after the hold returned {other:?}")),
        ),
        Ok(Err(e)) => match idle_death(&e) {
            Some(death) => idle::expired(
                hold,
                death,
                addr.port(),
                &format!("{addr}: SELECT 1 on the same session failed: {e}"),
            ),
            // The server answered with an error: the session is alive, the statement is not.
            None => failure_result(HopKind::Idle, &failure_from_tiberius(&e)),
        },
        Err(Failure::Timeout(_)) => idle::expired(
            hold,
            Death::Silence,
            addr.port(),
            &format!(
                "{addr}: SELECT 1 on the same session got no answer within {}",
                humantime::format_duration(limit)
            ),
        ),
        Err(f) => failure_result(HopKind::Idle, &f),
    };
    HopOutput::stop(
        result
            .with_data("address", addr.to_string())
            .with_data("hold_seconds", hold.as_secs_f64()),
    )
}

/// `SELECT 1`'s value, or the driver's error (kept whole: its I/O kind says how the session died).
async fn select_one(conn: &mut Conn) -> Result<Option<i32>, tiberius::error::Error> {
    let row = conn.simple_query("SELECT 1").await?.into_row().await?;
    Ok(row.and_then(|r| r.try_get::<i32, _>(0).ok().flatten()))
}

/// Pure: how the session died, from the driver's error; `None` when the error is the server's
/// answer (a live session).
fn idle_death(e: &tiberius::error::Error) -> Option<Death> {
    match e {
        tiberius::error::Error::Io { kind, .. } => Death::from_io(*kind),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_io_errors_say_how_an_idle_session_died() {
        let io = |kind| tiberius::error::Error::Io {
            kind,
            message: String::new(),
        };
        assert_eq!(
            idle_death(&io(std::io::ErrorKind::ConnectionReset)),
            Some(Death::Reset)
        );
        assert_eq!(
            idle_death(&io(std::io::ErrorKind::UnexpectedEof)),
            Some(Death::Closed)
        );
        assert_eq!(
            idle_death(&tiberius::error::Error::Protocol("x".into())),
            None
        );
    }
}
