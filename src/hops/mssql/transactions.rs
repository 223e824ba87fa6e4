//! Hops `tx_local` and `tx_distributed` on the login's session: a transaction with a #temp table,
//! an insert read back and a rollback, so nothing persists. [`tx_statements`] is shared with
//! `tx_enlist` ([`super::enlist`]), which runs the same work inside this host's MSDTC transaction.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::classify::{failure_from_tiberius, Failure};
use super::driver::{failure_result, guarded, Conn};
use super::server_info;
use crate::chain::HopOutput;
use crate::model::{Cause, HopKind, HopResult};

/// Pure: the statements a transaction hop sends, each with a short name for the report.
pub fn tx_statements(
    kind: HopKind,
    linked_server: Option<&str>,
    marker: &str,
) -> Vec<(&'static str, String)> {
    let mut v = Vec::new();
    if kind == HopKind::TxDistributed {
        v.push(("set xact_abort", "SET XACT_ABORT ON".to_string()));
        v.push((
            "begin distributed transaction",
            "BEGIN DISTRIBUTED TRANSACTION".to_string(),
        ));
    } else {
        v.push(("begin transaction", "BEGIN TRANSACTION".to_string()));
    }
    v.push((
        "create #temp table",
        "CREATE TABLE #dtcprobe (id int NOT NULL PRIMARY KEY, note nvarchar(64) NOT NULL)"
            .to_string(),
    ));
    v.push((
        "insert",
        format!(
            "INSERT INTO #dtcprobe (id, note) VALUES (1, N'{}')",
            marker.replace('\'', "''")
        ),
    ));
    v.push(("read back", "SELECT id, note FROM #dtcprobe".to_string()));
    if let Some(l) = linked_server {
        v.push((
            "query through the linked server",
            format!("SELECT one FROM OPENQUERY([{l}], 'SELECT 1 AS one')"),
        ));
    }
    v.push(("rollback", "ROLLBACK TRANSACTION".to_string()));
    v.push((
        "check @@TRANCOUNT",
        "SELECT @@TRANCOUNT AS trancount".to_string(),
    ));
    v
}

/// What `tx_distributed` exercises: SQL Server begins the transaction, so only its own MSDTC
/// (and, through a linked server, the path from it to the linked server's) takes part.
fn distributed_proves(linked: Option<&str>) -> String {
    match linked {
        Some(l) => format!("the SQL Server host's MSDTC and its path to linked server {l}'s MSDTC"),
        None => "the SQL Server host's MSDTC".into(),
    }
}

/// Where `tx_distributed` stops and `tx_enlist` starts.
const DISTRIBUTED_SCOPE: &str = "applications in this zone that enlist SQL Server in their own \
transactions (TransactionScope, COM+, ODBC/OLE DB enlistment) need THIS host's MSDTC to reach the \
SQL host's MSDTC both ways: run the check with tx=enlist (Windows build) from this host to test \
that path";

pub(super) async fn tx_hop(
    kind: HopKind,
    conn: Conn,
    linked: Option<String>,
    marker: String,
    limit: Duration,
) -> HopOutput<Conn> {
    let statements = tx_statements(kind, linked.as_deref(), &marker);
    let names: Vec<&'static str> = statements.iter().map(|(n, _)| *n).collect();
    let total = statements.len();
    let reached = Arc::new(Mutex::new(0usize));
    let reached_task = reached.clone();
    let marker_task = marker.clone();
    let (server_messages, work) = server_info::capture(async move {
        let mut conn = conn;
        for (i, (name, sql)) in statements.into_iter().enumerate() {
            if let Ok(mut r) = reached_task.lock() {
                *r = i;
            }
            let stream = conn
                .simple_query(sql)
                .await
                .map_err(|e| failure_from_tiberius(&e))?;
            let rows = stream
                .into_first_result()
                .await
                .map_err(|e| failure_from_tiberius(&e))?;
            match name {
                "read back" => {
                    let got = rows.first().and_then(|r| {
                        let id = r.try_get::<i32, _>(0).ok().flatten()?;
                        let note = r.try_get::<&str, _>(1).ok().flatten()?.to_string();
                        Some((id, note))
                    });
                    if got.as_ref() != Some(&(1, marker_task.clone())) {
                        return Err(Failure::Unexpected(format!(
                            "read back {got:?} instead of the row just inserted"
                        )));
                    }
                }
                "check @@TRANCOUNT" => {
                    let n = rows
                        .first()
                        .and_then(|r| r.try_get::<i32, _>(0).ok().flatten());
                    if n != Some(0) {
                        return Err(Failure::Unexpected(format!(
                            "@@TRANCOUNT is {n:?} after ROLLBACK (expected 0)"
                        )));
                    }
                }
                _ => {}
            }
        }
        Ok(conn)
    });
    let outcome = guarded(limit, "running the transaction", work).await;
    let step = reached.lock().map(|r| *r).unwrap_or(0);
    let what = if kind == HopKind::TxDistributed {
        "distributed transaction"
    } else {
        "local transaction"
    };
    match outcome {
        Ok(conn) if kind == HopKind::TxDistributed => HopOutput::ok(
            HopResult::pass(
                kind,
                format!(
                    "{what} begun by SQL Server itself: begin, #temp table, insert, read back, \
                     rollback ({total} round trips); nothing persisted. This proves {}; this \
                     host's MSDTC took no part",
                    distributed_proves(linked.as_deref())
                ),
            )
            .with_hint(DISTRIBUTED_SCOPE)
            .with_data("statements", total)
            .with_data("linked_server", linked.clone()),
            conn,
        ),
        Ok(conn) => HopOutput::ok(
            HopResult::pass(
                kind,
                format!("{what}: begin, #temp table, insert, read back, rollback ({total} round trips); nothing persisted"),
            )
            .with_data("statements", total)
            .with_data("linked_server", linked.clone()),
            conn,
        ),
        Err(f) => {
            let mut r = failure_result(kind, &f);
            let failed = names.get(step).copied().unwrap_or("?");
            r.detail = format!("{what}, step `{failed}`: {}", r.detail);
            // What the server said just before the error (e.g. the partner MSDTC's reason
            // relayed before 7391) often names the setting to change.
            let said = server_messages.take();
            if !said.is_empty() {
                r.detail = format!("{}; the server said before the error: \"{}\"", r.detail, said.join("\" / \""));
                r = r.with_data("server_messages", said);
            }
            if kind == HopKind::TxDistributed && r.cause == Some(Cause::DtcUnavailable) {
                r.hint = Some(format!(
                    "{} Note: BEGIN DISTRIBUTED TRANSACTION runs on the SQL Server, so the MSDTC \
                     that failed here is {}, not this host's. {DISTRIBUTED_SCOPE}",
                    r.hint.unwrap_or_default(),
                    distributed_proves(linked.as_deref()),
                ).into());
            }
            if kind == HopKind::TxDistributed && r.cause == Some(Cause::SqlError) && failed.contains("distributed") {
                r.hint = Some(format!(
                    "{} The failure is at BEGIN DISTRIBUTED TRANSACTION, which is where SQL Server \
                     contacts MSDTC.",
                    r.hint.unwrap_or_default()
                ).into());
            }
            HopOutput::stop(r.with_data("failed_step", failed))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tx_statements_roll_back_and_escape() {
        let s = tx_statements(HopKind::TxLocal, None, "a'b");
        assert!(s.iter().any(|(_, q)| q.contains("N'a''b'")));
        assert!(s.iter().any(|(_, q)| q == "ROLLBACK TRANSACTION"));
        assert!(!s.iter().any(|(_, q)| q.contains("COMMIT")));
        let d = tx_statements(HopKind::TxDistributed, Some("L2"), "m");
        assert!(d.iter().any(|(_, q)| q == "BEGIN DISTRIBUTED TRANSACTION"));
        assert!(d.iter().any(|(_, q)| q.contains("OPENQUERY([L2]")));
    }
}
