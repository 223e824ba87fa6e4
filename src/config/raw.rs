//! The config file as TOML gives it, before any check is built: read by serde (config.rs) and by
//! the plain-TOML fast path (plain_toml.rs), which config.rs runs; so it lives apart from both.

use serde::Deserialize;

use crate::check_table::RawCheck;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub defaults: RawDefaults,
    #[serde(default)]
    pub check: Vec<toml::Spanned<RawCheck>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDefaults {
    pub timeout: Option<toml::Spanned<String>>,
    pub concurrency: Option<usize>,
    /// Zone this host is in; used when a check has no `from`.
    pub zone: Option<String>,
}
