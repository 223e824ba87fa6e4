//! Kind `postgres`: resolve -> tcp -> login -> tx_local | twophase.
//!
//! `twophase` is what a distributed transaction manager (XA, MSDTC via an ODBC driver, a Java EE
//! or .NET coordinator) needs from PostgreSQL: `PREPARE TRANSACTION` then `ROLLBACK PREPARED`.
//! It fails on a server with `max_prepared_transactions = 0`, the default, which is the usual
//! reason distributed transactions break after a database move.

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio_postgres::{Client, NoTls};
use url::Url;

use crate::chain::{Chain, HopOutput, RunContext};
use crate::hops;
use crate::model::{Cause, HopKind, HopResult};
use crate::secret::{self, PasswordSource};
use crate::target::{url_host, TargetError};

pub const DEFAULT_PORT: u16 = 5432;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgTx {
    None,
    /// BEGIN, a temp table, insert, read back, ROLLBACK.
    Local,
    /// BEGIN, PREPARE TRANSACTION, ROLLBACK PREPARED.
    Twophase,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PgTarget {
    pub host: String,
    pub port: u16,
    pub database: String,
    pub user: String,
    pub password: Option<PasswordSource>,
    pub tx: PgTx,
}

impl PgTarget {
    pub fn display(&self) -> String {
        let tx = match self.tx {
            PgTx::None => "",
            PgTx::Local => "?tx=local",
            PgTx::Twophase => "?tx=twophase",
        };
        format!(
            "postgres://{}@{}:{}/{}{tx}",
            self.user,
            crate::target::bracket_v6(&self.host),
            self.port,
            self.database
        )
    }

    /// `postgres://user@host[:port]/db?tx=local|twophase`. A password in the URL is refused:
    /// command lines end up in shell history and process lists.
    pub fn from_url(text: &str) -> Result<PgTarget, TargetError> {
        let invalid = |message: String| TargetError::InvalidUrl {
            url: text.to_string(),
            message,
        };
        let url = Url::parse(text).map_err(|e| invalid(e.to_string()))?;
        if url.password().is_some() {
            return Err(invalid(
                "passwords are never given on the command line: use --password-file, or \
                 password_env/password_file in a config"
                    .into(),
            ));
        }
        let host = url_host(&url).ok_or_else(|| invalid("no host".into()))?;
        if url.username().is_empty() {
            return Err(invalid("no user (postgres://USER@HOST/DB)".into()));
        }
        let database = url.path().trim_start_matches('/').to_string();
        let mut tx = PgTx::None;
        for (k, v) in url.query_pairs() {
            match (k.as_ref(), v.as_ref()) {
                ("tx", v) => tx = parse_tx(v).map_err(invalid)?,
                (k, _) => return Err(invalid(format!("unknown option `{k}` (known: tx)"))),
            }
        }
        Ok(PgTarget {
            host,
            port: url.port().unwrap_or(DEFAULT_PORT),
            database: if database.is_empty() {
                url.username().to_string()
            } else {
                database
            },
            user: url.username().to_string(),
            password: None,
            tx,
        })
    }

    pub fn from_config(
        raw: &crate::config::RawCheck,
        kind_offset: usize,
    ) -> Result<PgTarget, TargetError> {
        let at = |offset: usize, message: String| TargetError::At { offset, message };
        let host = raw
            .host
            .as_ref()
            .ok_or_else(|| at(kind_offset, "kind `postgres` needs a `host`".into()))?;
        let user = raw
            .user
            .as_ref()
            .ok_or_else(|| at(kind_offset, "kind `postgres` needs a `user`".into()))?;
        let password = raw.password_source().map_err(|(o, m)| at(o, m))?;
        let tx = match &raw.tx {
            Some(t) => parse_tx(t.get_ref()).map_err(|m| at(t.span().start, m))?,
            None => PgTx::None,
        };
        Ok(PgTarget {
            host: host.get_ref().clone(),
            port: raw
                .port
                .as_ref()
                .map(|p| *p.get_ref())
                .unwrap_or(DEFAULT_PORT),
            database: raw
                .database
                .as_ref()
                .map(|d| d.get_ref().clone())
                .unwrap_or_else(|| user.get_ref().clone()),
            user: user.get_ref().clone(),
            password,
            tx,
        })
    }
}

fn parse_tx(v: &str) -> Result<PgTx, String> {
    match v {
        "none" => Ok(PgTx::None),
        "local" => Ok(PgTx::Local),
        "twophase" => Ok(PgTx::Twophase),
        other => Err(format!(
            "unknown tx `{other}` for postgres (expected local or twophase)"
        )),
    }
}

pub const HINT_AUTH: &str = "the server refused the login: wrong password, unknown role, or no \
pg_hba.conf line allows this user from this address (the server log names which)";
pub const HINT_DB: &str = "the login worked but the database cannot be used: it does not exist, \
the server is starting up or shutting down, or all connection slots are taken";
pub const HINT_TWOPHASE: &str = "the server does not allow prepared transactions: set \
max_prepared_transactions > 0 in postgresql.conf (it needs a restart); a distributed transaction \
manager (XA, MSDTC through ODBC) cannot commit here until it does";
pub const HINT_PROTOCOL: &str = "the peer does not speak the PostgreSQL protocol as expected: a \
different service on this port, a proxy, or TLS required by a pooler";

/// Pure: a PostgreSQL error, by SQLSTATE, to a cause and hint. `None` code: not a server error.
pub fn classify_sqlstate(code: Option<&str>) -> (Cause, &'static str) {
    match code {
        Some("28P01" | "28000") => (Cause::AuthFailed, HINT_AUTH),
        Some("3D000" | "57P03" | "53300" | "57P01") => (Cause::DbUnavailable, HINT_DB),
        Some(_) => (
            Cause::SqlError,
            "the server rejected a statement; see the detail",
        ),
        None => (Cause::ProtocolError, HINT_PROTOCOL),
    }
}

/// Pure: a failure of PREPARE TRANSACTION. SQLSTATE 55000 with max_prepared_transactions = 0.
pub fn classify_twophase(code: Option<&str>, message: &str) -> (Cause, &'static str) {
    if code == Some("55000") || message.contains("prepared transactions are disabled") {
        (Cause::DtcUnavailable, HINT_TWOPHASE)
    } else {
        classify_sqlstate(code)
    }
}

fn error_detail(e: &tokio_postgres::Error) -> (Option<String>, String) {
    match e.as_db_error() {
        Some(db) => (
            Some(db.code().code().to_string()),
            format!("{} {}: {}", db.severity(), db.code().code(), db.message()),
        ),
        None => (None, e.to_string()),
    }
}

pub async fn run(t: &PgTarget, ctx: &RunContext) -> Vec<crate::model::HopResult> {
    let mut planned = vec![HopKind::Resolve, HopKind::Tcp, HopKind::Login];
    match t.tx {
        PgTx::Local => planned.push(HopKind::TxLocal),
        PgTx::Twophase => planned.push(HopKind::Twophase),
        PgTx::None => {}
    }
    let mut chain = Chain::new(planned, ctx.hop_timeout);
    let Some(addrs) = chain
        .step(
            HopKind::Resolve,
            hops::resolve::resolve(&ctx.resolver, &t.host, false, ctx.hop_timeout),
        )
        .await
    else {
        return chain.finish();
    };
    let Some(reachable) = chain
        .step(
            HopKind::Tcp,
            hops::tcp::tcp(&addrs, t.port, ctx.hop_timeout),
        )
        .await
    else {
        return chain.finish();
    };
    let Some(&addr) = reachable.first() else {
        return chain.finish();
    };
    let Some(client) = chain.step(HopKind::Login, login(t, addr, ctx)).await else {
        return chain.finish();
    };
    match t.tx {
        PgTx::Local => {
            chain.step(HopKind::TxLocal, tx_local(&client)).await;
        }
        PgTx::Twophase => {
            chain.step(HopKind::Twophase, twophase(&client)).await;
        }
        PgTx::None => {}
    }
    chain.finish()
}

async fn login(t: &PgTarget, addr: SocketAddr, ctx: &RunContext) -> HopOutput<Client> {
    let label = format!("{}@{}", t.user, t.host);
    let password = match secret::obtain(t.password.as_ref(), &label).await {
        Ok(p) => p,
        Err(e) => {
            return HopOutput::stop(
                HopResult::fail(HopKind::Login, Cause::Config, e.to_string())
                    .with_hint("give the password with --password-file, or password_env/password_file in the config"),
            )
        }
    };
    let (attempt, stream) = hops::tcp::connect(addr, ctx.hop_timeout).await;
    let Some(stream) = stream else {
        // The path broke after the tcp hop: the same classification, on this hop.
        return HopOutput::stop(hops::tcp::hop_result(HopKind::Login, &[attempt]));
    };
    let mut config = tokio_postgres::Config::new();
    config
        .user(&t.user)
        .dbname(&t.database)
        .password(password.expose())
        .application_name("dtcprobe");
    match config.connect_raw(stream, NoTls).await {
        Ok((client, connection)) => {
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!("postgres connection ended: {e}");
                }
            });
            let version = client
                .query_one("SHOW server_version", &[])
                .await
                .ok()
                .and_then(|row| row.try_get::<_, String>(0).ok())
                .unwrap_or_default();
            let result = HopResult::pass(
                HopKind::Login,
                format!(
                    "logged in as {} to database {} on {addr} (PostgreSQL {version})",
                    t.user, t.database
                ),
            )
            .with_data("server_version", version)
            .with_data("address", addr.to_string());
            HopOutput::ok(result, client)
        }
        Err(e) => {
            let (code, detail) = error_detail(&e);
            let (cause, hint) = classify_sqlstate(code.as_deref());
            HopOutput::stop(HopResult::fail(HopKind::Login, cause, detail).with_hint(hint))
        }
    }
}

async fn tx_local(client: &Client) -> HopOutput<()> {
    let work = async {
        client
            .batch_execute("BEGIN; CREATE TEMP TABLE dtcprobe_tx (n int) ON COMMIT DROP; INSERT INTO dtcprobe_tx VALUES (42);")
            .await?;
        let n: i32 = client
            .query_one("SELECT n FROM dtcprobe_tx", &[])
            .await?
            .try_get(0)?;
        client.batch_execute("ROLLBACK").await?;
        Ok::<i32, tokio_postgres::Error>(n)
    };
    match work.await {
        Ok(42) => HopOutput::ok(
            HopResult::pass(
                HopKind::TxLocal,
                "BEGIN, temp table, insert, read back, ROLLBACK",
            ),
            (),
        ),
        Ok(other) => HopOutput::stop(HopResult::fail(
            HopKind::TxLocal,
            Cause::ProtocolError,
            format!("read back {other}, wrote 42"),
        )),
        Err(e) => {
            let _ = client.batch_execute("ROLLBACK").await;
            let (code, detail) = error_detail(&e);
            let (cause, hint) = classify_sqlstate(code.as_deref());
            HopOutput::stop(HopResult::fail(HopKind::TxLocal, cause, detail).with_hint(hint))
        }
    }
}

/// A global transaction id unique to this run, recognisable in pg_prepared_xacts if the rollback
/// never arrives (a connection cut between the two statements).
fn gid() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("dtcprobe-{}-{nanos}", std::process::id())
}

async fn twophase(client: &Client) -> HopOutput<()> {
    let gid = gid();
    // No temporary objects: PostgreSQL refuses to PREPARE a transaction that touched one.
    let prepare = format!("BEGIN; SELECT txid_current(); PREPARE TRANSACTION '{gid}';");
    if let Err(e) = client.batch_execute(&prepare).await {
        let _ = client.batch_execute("ROLLBACK").await;
        let (code, detail) = error_detail(&e);
        let (cause, hint) = classify_twophase(code.as_deref(), &detail);
        return HopOutput::stop(HopResult::fail(HopKind::Twophase, cause, detail).with_hint(hint));
    }
    match client
        .batch_execute(&format!("ROLLBACK PREPARED '{gid}'"))
        .await
    {
        Ok(()) => HopOutput::ok(
            HopResult::pass(
                HopKind::Twophase,
                format!("PREPARE TRANSACTION and ROLLBACK PREPARED '{gid}'"),
            )
            .with_data("gid", gid),
            (),
        ),
        Err(e) => {
            let (code, detail) = error_detail(&e);
            let (cause, _) = classify_sqlstate(code.as_deref());
            HopOutput::stop(HopResult::fail(HopKind::Twophase, cause, detail).with_hint(format!(
                "the prepared transaction '{gid}' may be left behind: check pg_prepared_xacts and run ROLLBACK PREPARED"
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_parsing() {
        let t = PgTarget::from_url("postgres://app@db01:5433/orders?tx=twophase").unwrap();
        assert_eq!(
            (
                t.host.as_str(),
                t.port,
                t.database.as_str(),
                t.user.as_str()
            ),
            ("db01", 5433, "orders", "app")
        );
        assert_eq!(t.tx, PgTx::Twophase);
        assert_eq!(t.display(), "postgres://app@db01:5433/orders?tx=twophase");
        assert_eq!(
            PgTarget::from_url("postgres://app@db01").unwrap().database,
            "app"
        );
        assert!(PgTarget::from_url("postgres://app:secret@db01/x").is_err());
        assert!(PgTarget::from_url("postgres://db01/x").is_err());
        assert!(PgTarget::from_url("postgres://a@db01/x?tx=xa").is_err());
        assert!(PgTarget::from_url("postgres://a@db01/x?sslmode=require").is_err());
    }

    #[test]
    fn sqlstate_table() {
        let rows = [
            (Some("28P01"), Cause::AuthFailed),
            (Some("28000"), Cause::AuthFailed),
            (Some("3D000"), Cause::DbUnavailable),
            (Some("53300"), Cause::DbUnavailable),
            (Some("42601"), Cause::SqlError),
            (None, Cause::ProtocolError),
        ];
        for (code, cause) in rows {
            assert_eq!(classify_sqlstate(code).0, cause, "{code:?}");
        }
        assert_eq!(
            classify_twophase(Some("55000"), "").0,
            Cause::DtcUnavailable
        );
        assert_eq!(
            classify_twophase(None, "prepared transactions are disabled").0,
            Cause::DtcUnavailable
        );
        assert_eq!(classify_twophase(Some("28P01"), "").0, Cause::AuthFailed);
    }
}
