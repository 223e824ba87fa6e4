//! The `postgres` target: what a check points at (host, port, database, user, the transaction to
//! try, TLS). Its parsing from a URL or a config table is the kind's (`mod.rs`); the hop chain
//! (`run.rs`) reads it from here, so the chain never imports the module that runs it.

use crate::hostport::bracket_v6;
use crate::secret::PasswordSource;

use super::tls::SslMode;

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
    /// libpq's meaning; `prefer` (libpq's default) when not given.
    pub sslmode: SslMode,
    /// CAs (PEM) for `verify-ca` / `verify-full` instead of this host's store.
    pub sslrootcert: Option<std::path::PathBuf>,
    /// The credential-free login (no user, or `login=probe`): a random user and password, so
    /// the server's 28P01/28000 proves the path and its login stage with no credential here.
    /// `user` is empty; no transaction hop runs.
    pub credential_free: bool,
    /// Hop `revocation` and the certificate's expiry warning.
    pub cert: crate::hops::certificate::CertOptions,
}

impl PgTarget {
    pub fn display(&self) -> String {
        let mut query = Vec::new();
        match self.tx {
            PgTx::None => {}
            PgTx::Local => query.push("tx=local".to_string()),
            PgTx::Twophase => query.push("tx=twophase".to_string()),
        }
        if self.sslmode != SslMode::Prefer {
            query.push(format!("sslmode={}", self.sslmode.as_str()));
        }
        if let Some(file) = &self.sslrootcert {
            query.push(format!("sslrootcert={}", file.display()));
        }
        if self.credential_free {
            query.push("login=probe".to_string());
        }
        query.extend(self.cert.query_pairs());
        let query = if query.is_empty() {
            String::new()
        } else {
            format!("?{}", query.join("&"))
        };
        let user = if self.credential_free {
            String::new()
        } else {
            format!("{}@", self.user)
        };
        format!(
            "postgres://{user}{}:{}/{}{query}",
            bracket_v6(&self.host),
            self.port,
            self.database
        )
    }
}

/// A `tx` value postgres does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown tx `{0}` for postgres (expected local or twophase)")]
pub struct UnknownTx(pub String);

pub(super) fn parse_tx(v: &str) -> Result<PgTx, UnknownTx> {
    match v {
        "none" => Ok(PgTx::None),
        "local" => Ok(PgTx::Local),
        "twophase" => Ok(PgTx::Twophase),
        other => Err(UnknownTx(other.into())),
    }
}
