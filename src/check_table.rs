//! A `[[check]]` table as written, and the error building a target from it (or from a URL)
//! gives. It sits below both the kinds under `hops/` (which read their keys from it) and
//! `config` (which loads it), so neither imports the other.

use serde::Deserialize;
use thiserror::Error;

#[derive(Debug, Error, PartialEq)]
pub enum TargetError {
    /// Unknown URL scheme: a usage error (exit 2).
    #[error("unknown target scheme `{scheme}` in `{url}` (expected one of: {expected})")]
    UnknownScheme {
        scheme: String,
        /// Shown to the user: always masked ([`crate::hostport::mask_url`]).
        url: String,
        expected: String,
    },
    /// A URL that does not parse or lacks a part: a usage error (exit 2).
    #[error("invalid target `{url}`: {message}")]
    InvalidUrl {
        /// Shown to the user: always masked ([`crate::hostport::mask_url`]).
        url: String,
        message: String,
    },
    /// A config problem at a byte offset of the config text (exit 78).
    #[error("{message}")]
    At { offset: usize, message: String },
}

/// One `[[check]]` table, as written. Every key any kind accepts is here, so that unknown keys are
/// rejected by serde with a position; which of them a kind accepts is that kind's own `KEYS`
/// (see [`crate::hops::Kind`]).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCheck {
    pub name: Option<toml::Spanned<String>>,
    /// Checked against the kinds the registry ([`crate::hops`]) knows, with this value's position:
    /// a plain string here keeps this table below the kinds that read it.
    pub kind: Option<toml::Spanned<String>>,
    /// Shorthand: a target URL as on the command line (`tcp://host:port`, `mssql://...`).
    pub target: Option<toml::Spanned<String>>,
    pub host: Option<toml::Spanned<String>>,
    pub port: Option<toml::Spanned<u16>>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub timeout: Option<toml::Spanned<String>>,
    /// Warn instead of pass when reverse DNS does not map back (default true for kinds that need
    /// DTC; set false to skip the reverse lookup entirely).
    pub reverse_dns: Option<bool>,

    /// tcp / mssql: leave the working session idle this long, then use it (hop `idle`).
    pub hold: Option<toml::Spanned<String>>,

    // mssql / postgres
    pub instance: Option<toml::Spanned<String>>,
    pub database: Option<toml::Spanned<String>>,
    pub user: Option<toml::Spanned<String>>,
    pub password_env: Option<toml::Spanned<String>>,
    pub password_file: Option<toml::Spanned<String>>,
    pub auth: Option<toml::Spanned<String>>,
    pub encrypt: Option<toml::Spanned<String>>,
    pub trust_server_certificate: Option<bool>,
    pub tx: Option<toml::Spanned<String>>,
    pub linked_server: Option<toml::Spanned<String>>,
    /// mssql / postgres: run hop `revocation` (default true).
    pub revocation: Option<bool>,
    /// mssql / postgres: a certificate with fewer days left warns (`cert_expiring`).
    pub cert_warn_days: Option<u32>,
    // postgres
    pub sslmode: Option<toml::Spanned<String>>,
    pub sslrootcert: Option<toml::Spanned<String>>,

    // epm
    pub iface: Option<toml::Spanned<String>>,
    pub list_endpoints: Option<bool>,

    // msdtc
    pub role: Option<toml::Spanned<String>>,
}

impl RawCheck {
    /// Where this check's password comes from: `password_env` or `password_file` (never both;
    /// the error carries the offset of `password_env`).
    pub fn password_source(
        &self,
    ) -> Result<Option<crate::secret::PasswordSource>, (usize, String)> {
        use crate::secret::PasswordSource;
        match (&self.password_env, &self.password_file) {
            (Some(e), Some(_)) => Err((
                e.span().start,
                "use either `password_env` or `password_file`, not both".into(),
            )),
            (Some(e), None) => Ok(Some(PasswordSource::Env(e.get_ref().clone()))),
            (None, Some(f)) => Ok(Some(PasswordSource::File(f.get_ref().into()))),
            (None, None) => Ok(None),
        }
    }

    /// The kind-specific keys this table sets, each with where its value starts (`None` for
    /// keys whose value carries no position). Lazy, over a fixed table of keys: every check of a
    /// config asks, and most set one such key or none.
    pub fn kind_specific_keys(&self) -> impl Iterator<Item = (&'static str, Option<usize>)> + '_ {
        KIND_SPECIFIC_KEYS
            .iter()
            .filter_map(move |(key, offset)| offset(self).map(|o| (*key, o)))
    }
}

/// Where a key's value starts: `Some(None)` for a set key whose value carries no position.
type KeyOffset = fn(&RawCheck) -> Option<Option<usize>>;

fn at<T>(v: &Option<toml::Spanned<T>>) -> Option<Option<usize>> {
    v.as_ref().map(|s| Some(s.span().start))
}

fn flag(v: Option<bool>) -> Option<Option<usize>> {
    v.map(|_| None)
}

/// The keys of [`RawCheck`] that only some kinds accept, in the order errors name them.
const KIND_SPECIFIC_KEYS: [(&str, KeyOffset); 20] = [
    ("port", |r| at(&r.port)),
    ("reverse_dns", |r| flag(r.reverse_dns)),
    ("hold", |r| at(&r.hold)),
    ("instance", |r| at(&r.instance)),
    ("database", |r| at(&r.database)),
    ("user", |r| at(&r.user)),
    ("password_env", |r| at(&r.password_env)),
    ("password_file", |r| at(&r.password_file)),
    ("auth", |r| at(&r.auth)),
    ("encrypt", |r| at(&r.encrypt)),
    ("trust_server_certificate", |r| {
        flag(r.trust_server_certificate)
    }),
    ("tx", |r| at(&r.tx)),
    ("linked_server", |r| at(&r.linked_server)),
    ("revocation", |r| flag(r.revocation)),
    ("cert_warn_days", |r| r.cert_warn_days.map(|_| None)),
    ("sslmode", |r| at(&r.sslmode)),
    ("sslrootcert", |r| at(&r.sslrootcert)),
    ("iface", |r| at(&r.iface)),
    ("list_endpoints", |r| flag(r.list_endpoints)),
    ("role", |r| at(&r.role)),
];
