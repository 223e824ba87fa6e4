//! The contract every check kind fulfils. Kinds import it from here, not from the registry in
//! `hops/mod.rs`, so the registry depends on the kinds and never the other way round.

use std::future::Future;

use crate::chain::RunContext;
use crate::check_table::{RawCheck, TargetError};
use crate::hostport::TargetUrl;
use crate::model::HopResult;
use crate::secret::PasswordSource;

/// What a check kind provides. Failure is data: `run` reports every problem as hop results.
pub trait Kind: Sized {
    /// The `kind` in configs and reports, and the URL scheme.
    const NAME: &'static str;
    /// Further URL schemes for this kind (`postgresql`).
    const ALIASES: &'static [&'static str] = &[];
    /// The keys of a `[[check]]` table this kind reads, besides name, kind, host, target, from,
    /// to and timeout. Any other key is an error at its position.
    const KEYS: &'static [&'static str];
    /// Whether the kind logs in: it takes a user name in its URL, and a `password_env` or
    /// `password_file` beside a `target = URL` in a config. Other kinds refuse a user name.
    const LOGIN: bool = false;

    /// From a URL with this kind's scheme (already checked to hold no password).
    fn from_url(url: &TargetUrl) -> Result<Self, TargetError>;
    /// From a config table with `kind = NAME`; `host` is present and not blank.
    fn from_config(raw: &RawCheck, host: String) -> Result<Self, TargetError>;
    /// A canonical, secret-free rendering for reports; parses back to the same target.
    fn display(&self) -> String;
    fn host(&self) -> &str;
    /// The password source given beside a `target = URL` (only called when [`Kind::LOGIN`]).
    fn set_password(&mut self, _password: Option<PasswordSource>) {}
    /// Runs the check's hop chain.
    fn run(&self, ctx: &RunContext) -> impl Future<Output = Vec<HopResult>> + Send;
}
