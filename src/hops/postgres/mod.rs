//! Kind `postgres`: resolve -> tcp -> login -> revocation (TLS logins) -> tx_local | twophase.
//!
//! `twophase` is what a distributed transaction manager (XA, MSDTC via an ODBC driver, a Java EE
//! or .NET coordinator) needs from PostgreSQL: `PREPARE TRANSACTION` then `ROLLBACK PREPARED`.
//! It fails on a server with `max_prepared_transactions = 0`, the default, which is the usual
//! reason distributed transactions break after a database move.

pub mod classify;
mod phases;
mod run;
mod target;
pub mod tls;

use crate::chain::RunContext;
use crate::check_table::{RawCheck, TargetError};
use crate::hops::kind::Kind;
use crate::hostport::{url_host, TargetUrl};
use crate::model::HopResult;
use crate::secret::PasswordSource;

pub use tls::SslMode;

pub use classify::{classify_sqlstate, classify_twophase};
pub use run::run;
pub use target::{PgTarget, PgTx, DEFAULT_PORT};

use target::parse_tx;

impl PgTarget {
    /// `postgres://user@host[:port]/db?tx=local|twophase`. A password in the URL is refused:
    /// command lines end up in shell history and process lists.
    pub fn from_url(text: &str) -> Result<PgTarget, TargetError> {
        let url = TargetUrl::parse(text, "postgres://")?;
        <PgTarget as Kind>::from_url(&url)
    }
}

impl Kind for PgTarget {
    const NAME: &'static str = "postgres";
    const ALIASES: &'static [&'static str] = &["postgresql"];
    const KEYS: &'static [&'static str] = &[
        "port",
        "database",
        "user",
        "password_env",
        "password_file",
        "tx",
        "sslmode",
        "sslrootcert",
        "revocation",
        "cert_warn_days",
    ];
    const LOGIN: bool = true;
    const SERVICE: Option<&'static str> = Some("PostgreSQL");
    const DEFAULT_PORT: Option<u16> = Some(DEFAULT_PORT);

    /// Agents run only the credential-free login (no user: nothing for them to hold).
    fn agent_runs(&self) -> bool {
        self.credential_free
    }

    fn from_url(url: &TargetUrl) -> Result<PgTarget, TargetError> {
        let parsed = url.url()?;
        let host = url_host(&parsed).ok_or_else(|| url.invalid("no host"))?;
        let database = parsed.path().trim_start_matches('/').to_string();
        let mut credential_free = parsed.username().is_empty();
        let mut tx = PgTx::None;
        let mut sslmode = SslMode::Prefer;
        let mut sslrootcert = None;
        let mut cert = crate::hops::certificate::CertOptions::default();
        for (k, v) in parsed.query_pairs() {
            match (k.as_ref(), v.as_ref()) {
                ("tx", v) => tx = parse_tx(v).map_err(|m| url.invalid(m))?,
                ("sslmode", v) => sslmode = SslMode::parse(v).map_err(|m| url.invalid(m))?,
                ("sslrootcert", v) => sslrootcert = Some(v.into()),
                ("login", "probe") => credential_free = true,
                ("login", v) => {
                    return Err(url.invalid(format!(
                        "unknown login `{v}` (expected probe: a login with a random user, no \
                         credentials)"
                    )))
                }
                (k, v) => match cert.take_url_pair(k, v) {
                    Some(r) => r.map_err(|m| url.invalid(m))?,
                    None => {
                        return Err(url.invalid(format!(
                            "unknown option `{k}` (known: tx, sslmode, sslrootcert, login, {})",
                            crate::hops::certificate::URL_KEYS
                        )))
                    }
                },
            }
        }
        credential_free_allowed(credential_free, parsed.username(), tx, false)
            .map_err(|m| url.invalid(m))?;
        Ok(PgTarget {
            host,
            port: parsed.port().unwrap_or(DEFAULT_PORT),
            database: match (database.is_empty(), credential_free) {
                (false, _) => database,
                (true, false) => parsed.username().to_string(),
                (true, true) => "postgres".to_string(),
            },
            user: parsed.username().to_string(),
            password: None,
            tx,
            sslmode,
            sslrootcert,
            credential_free,
            cert,
        })
    }

    fn from_config(raw: &RawCheck, host: String) -> Result<PgTarget, TargetError> {
        let at = |offset: usize, message: String| TargetError::At { offset, message };
        let kind_offset = raw.kind.as_ref().map(|k| k.span().start).unwrap_or(0);
        let user = raw
            .user
            .as_ref()
            .map(|u| u.get_ref().clone())
            .unwrap_or_default();
        let password = raw.password_source().map_err(|(o, m)| at(o, m))?;
        let tx = match &raw.tx {
            Some(t) => parse_tx(t.get_ref()).map_err(|e| at(t.span().start, e.to_string()))?,
            None => PgTx::None,
        };
        let credential_free = user.is_empty();
        credential_free_allowed(credential_free, &user, tx, password.is_some())
            .map_err(|m| at(kind_offset, m))?;
        let sslmode = match &raw.sslmode {
            Some(m) => SslMode::parse(m.get_ref()).map_err(|e| at(m.span().start, e))?,
            None => SslMode::Prefer,
        };
        Ok(PgTarget {
            host,
            port: raw
                .port
                .as_ref()
                .map(|p| *p.get_ref())
                .unwrap_or(DEFAULT_PORT),
            database: raw
                .database
                .as_ref()
                .map(|d| d.get_ref().clone())
                .unwrap_or_else(|| {
                    if credential_free {
                        "postgres".into()
                    } else {
                        user.clone()
                    }
                }),
            user,
            password,
            tx,
            sslmode,
            sslrootcert: raw.sslrootcert.as_ref().map(|f| f.get_ref().into()),
            credential_free,
            cert: crate::hops::certificate::CertOptions::from_config(raw),
        })
    }

    fn display(&self) -> String {
        PgTarget::display(self)
    }

    fn host(&self) -> &str {
        &self.host
    }

    fn set_password(&mut self, password: Option<PasswordSource>) {
        self.password = password;
    }

    async fn run(&self, ctx: &RunContext) -> Vec<HopResult> {
        run(self, ctx).await
    }
}

/// The credential-free login logs in as a random user: it takes no user or password of its own
/// and has no session for a transaction hop.
fn credential_free_allowed(
    credential_free: bool,
    user: &str,
    tx: PgTx,
    password: bool,
) -> Result<(), String> {
    if !credential_free {
        return Ok(());
    }
    if !user.is_empty() {
        return Err("login=probe logs in with a random user: give no user with it".into());
    }
    if password {
        return Err("the credential-free login (no user) takes no password".into());
    }
    if tx != PgTx::None {
        return Err(
            "a login with no user (the credential-free login) runs no transaction: give a user \
             (postgres://USER@HOST/DB), or no tx"
                .into(),
        );
    }
    Ok(())
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
        let t = PgTarget::from_url("postgres://db01").unwrap();
        assert!(t.credential_free);
        assert_eq!(t.display(), "postgres://db01:5432/postgres?login=probe");
        assert_eq!(PgTarget::from_url(&t.display()).unwrap(), t);
        assert!(
            PgTarget::from_url("postgres://db01/x?login=probe")
                .unwrap()
                .credential_free
        );
        assert!(PgTarget::from_url("postgres://db01/x?tx=local").is_err());
        assert!(PgTarget::from_url("postgres://a@db01/x?login=probe").is_err());
        assert!(PgTarget::from_url("postgres://db01/x?login=guest").is_err());
        assert!(PgTarget::from_url("postgres://a@db01/x?tx=xa").is_err());
        assert!(PgTarget::from_url("postgres://a@db01/x?sslmode=allow").is_err());
        assert!(PgTarget::from_url("postgres://a@db01/x?ssl=1").is_err());
        let t = PgTarget::from_url("postgres://a@db01/x?sslmode=verify-full&sslrootcert=/ca.pem")
            .unwrap();
        assert_eq!(
            (t.sslmode, t.sslrootcert.as_deref()),
            (SslMode::VerifyFull, Some(std::path::Path::new("/ca.pem")))
        );
        assert_eq!(
            t.display(),
            "postgres://a@db01:5432/x?sslmode=verify-full&sslrootcert=/ca.pem"
        );
        assert_eq!(
            PgTarget::from_url("postgres://a@db01/x").unwrap().sslmode,
            SslMode::Prefer
        );
    }
}
