//! Kind `mssql`: SQL Server checks over TDS (resolve -> sqlbrowser -> tcp -> login -> revocation
//! -> tx_local -> tx_distributed).
//!
//! [`spec`] parses targets; [`run()`] orders the chain, one file per hop: [`browser`],
//! [`login`] (with its credential in [`auth`]), [`transactions`], [`idle`], [`enlist`]; they share
//! the driver's guard in [`driver`]. The decisions (what an error number or a driver failure
//! means) are pure and live in [`classify`]; [`sniff`] reads the server's PRELOGIN answer off the
//! wire; [`ssrp`] is the SQL Server Browser protocol.

mod auth;
pub mod browser;
pub mod certificate;
pub mod classify;
mod driver;
pub mod enlist;
mod idle;
pub mod kerberos;
mod login;
mod negotiate;
pub mod phases;
pub mod run;
pub mod server_info;
pub mod sniff;
pub mod spec;
pub mod ssrp;
pub mod tls;
pub mod transactions;
pub mod transport;

use crate::chain::RunContext;
use crate::check_table::{RawCheck, TargetError};
use crate::hops::kind::{Kind, Retarget};
use crate::hostport::TargetUrl;
use crate::model::HopResult;
use crate::secret::PasswordSource;

pub use browser::browser_answer;
pub use run::{planned_hops, run};
pub use spec::{Auth, Encrypt, MssqlTarget, TxMode};
pub use transactions::tx_statements;

impl Kind for MssqlTarget {
    const NAME: &'static str = "mssql";
    const KEYS: &'static [&'static str] = &[
        "port",
        "reverse_dns",
        "instance",
        "database",
        "user",
        "password_env",
        "password_file",
        "auth",
        "encrypt",
        "trust_server_certificate",
        "tx",
        "linked_server",
        "hold",
        "revocation",
        "cert_warn_days",
    ];
    const LOGIN: bool = true;
    const SERVICE: Option<&'static str> = Some("SQL Server");
    const DEFAULT_PORT: Option<u16> = Some(spec::DEFAULT_PORT);
    const FAR_SIDE_PROBED: bool = true;
    const RETARGET: Retarget = Retarget::Never;

    /// Agents run only the credential-free login (no user: nothing for them to hold).
    fn agent_runs(&self) -> bool {
        self.credential_free
    }

    /// Parsed by hand from the text: `host\instance` is not URL syntax.
    fn from_url(url: &TargetUrl) -> Result<Self, TargetError> {
        MssqlTarget::from_url(url.text())
    }

    fn from_config(raw: &RawCheck, host: String) -> Result<Self, TargetError> {
        MssqlTarget::from_config(raw, host)
    }

    fn display(&self) -> String {
        MssqlTarget::display(self)
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
