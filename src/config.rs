//! Config file loading (TOML). Pure: text in, checks out; errors carry file, line and column.

use rustc_hash::FxHashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use thiserror::Error;

mod plain_toml;
mod raw;

pub use raw::{RawConfig, RawDefaults};

pub use crate::check_table::RawCheck;
use crate::target::{CheckSpec, Target, TargetError};

/// A config problem, located in the file. Exit code 78.
#[derive(Debug, Error)]
#[error("{path}:{line}:{column}: {message}")]
pub struct ConfigError {
    pub path: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Global settings from the file's `[defaults]`.
#[derive(Debug, Clone, Default)]
pub struct Defaults {
    pub timeout: Option<Duration>,
    pub concurrency: Option<usize>,
    pub zone: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Config {
    pub defaults: Defaults,
    pub checks: Vec<CheckSpec>,
}

/// Turns a byte offset into 1-based line and column (columns count characters, as editors do).
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..text.floor_char_boundary_compat(offset)];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

trait FloorCharBoundary {
    fn floor_char_boundary_compat(&self, i: usize) -> usize;
}

impl FloorCharBoundary for str {
    fn floor_char_boundary_compat(&self, mut i: usize) -> usize {
        while i > 0 && !self.is_char_boundary(i) {
            i -= 1;
        }
        i
    }
}

/// Parses TOML text; on failure, the byte offset of the problem and a one-line message (toml's
/// own message repeats the position and a source excerpt, which the callers' file:line:column
/// replaces).
pub fn from_toml<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, (usize, String)> {
    toml::from_str(text).map_err(|e| {
        let offset = e.span().map(|s| s.start).unwrap_or(0);
        let message = e
            .message()
            .lines()
            .next()
            .unwrap_or("invalid TOML")
            .to_string();
        (offset, message)
    })
}

pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        path: path.to_path_buf(),
        line: 0,
        column: 0,
        message: format!("cannot read config: {e}"),
    })?;
    parse(&text, path)
}

pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let at = |offset: usize, message: String| {
        let (line, column) = line_column(text, offset);
        ConfigError {
            path: path.to_path_buf(),
            line,
            column,
            message,
        }
    };

    // The plain subset first (a generated config of thousands of checks is read in a fraction of
    // the time, each check built as soon as its table is read); anything else, and every TOML
    // error, is toml's.
    let mut built = CheckBuilder::new(text);
    let plain = plain_toml::each_check(text, |span, table| {
        // The name as the file spells it: the subset's strings have no escapes, so it is the
        // text between the quotes, and can be kept without a copy for the duplicate check.
        let key = table.name.as_ref().map(|n| {
            let span = n.span();
            &text[span.start + 1..span.end - 1]
        });
        built.add(span.start, table, key, &at);
    });
    let (raw_defaults, from_toml_checks) = match plain {
        Some(defaults) => (defaults, None),
        None => {
            let raw: RawConfig =
                from_toml(text).map_err(|(offset, message)| at(offset, message))?;
            (raw.defaults, Some(raw.check))
        }
    };
    if let Some(tables) = &from_toml_checks {
        built = CheckBuilder::new(text);
        for table in tables {
            let key = table.get_ref().name.as_ref().map(|n| n.get_ref().as_str());
            built.add(table.span().start, &mut table.get_ref().clone(), key, &at);
        }
    }

    let defaults = Defaults {
        timeout: match &raw_defaults.timeout {
            Some(t) => Some(
                positive_duration(t.get_ref()).map_err(|e| at(t.span().start, e.to_string()))?,
            ),
            None => None,
        },
        concurrency: raw_defaults.concurrency,
        zone: raw_defaults.zone,
    };
    if defaults.concurrency == Some(0) {
        return Err(at(0, "defaults.concurrency must be at least 1".into()));
    }
    let mut checks = built.finish()?;
    // `[defaults] zone` may come after the checks in the file: filled in once all are read.
    if let Some(zone) = &defaults.zone {
        for check in checks.iter_mut().filter(|c| c.from.is_none()) {
            check.from = Some(zone.clone());
        }
    }
    Ok(Config { defaults, checks })
}

/// The checks of a config, built table by table in file order; the first bad table's error is
/// kept (and the rest not built), to be given once the whole file is known to be valid TOML: a
/// TOML error anywhere comes first, as when the file was read whole before any check was built.
struct CheckBuilder<'a> {
    checks: Vec<CheckSpec>,
    /// Names seen so far, as spelled in `'a` (the file's text, or toml's reading of it): a set,
    /// so a config of n checks is planned in O(n), not O(n^2).
    names: FxHashSet<&'a str>,
    error: Option<ConfigError>,
}

impl<'a> CheckBuilder<'a> {
    fn new(text: &str) -> CheckBuilder<'a> {
        // About one check per 70 bytes of a generated config: room for most without regrowing.
        let guess = text.len() / 70;
        CheckBuilder {
            checks: Vec::with_capacity(guess),
            names: FxHashSet::with_capacity_and_hasher(guess, Default::default()),
            error: None,
        }
    }

    /// One `[[check]]` table, starting at `table_start`; `key` is its name (if any) borrowed
    /// for `'a`. The check takes the table's strings it keeps.
    fn add(
        &mut self,
        table_start: usize,
        table: &mut RawCheck,
        key: Option<&'a str>,
        at: &dyn Fn(usize, String) -> ConfigError,
    ) {
        if self.error.is_none() {
            if let Err(e) = self.build(table_start, table, key, at) {
                self.error = Some(e);
            }
        }
    }

    fn build(
        &mut self,
        table_start: usize,
        rc: &mut RawCheck,
        key: Option<&'a str>,
        at: &dyn Fn(usize, String) -> ConfigError,
    ) -> Result<(), ConfigError> {
        let (Some(name), Some(key)) = (&rc.name, key) else {
            return Err(at(table_start, "check has no `name`".into()));
        };
        if key.trim().is_empty() {
            return Err(at(name.span().start, "check `name` is empty".into()));
        }
        if !self.names.insert(key) {
            return Err(at(
                name.span().start,
                format!("duplicate check name `{key}`: names must be unique"),
            ));
        }
        let timeout = match &rc.timeout {
            Some(t) => Some(
                positive_duration(t.get_ref()).map_err(|e| at(t.span().start, e.to_string()))?,
            ),
            None => None,
        };
        let target = Target::from_config(rc).map_err(|e| match e {
            TargetError::At { offset, message } => at(offset, message),
            other => at(table_start, other.to_string()),
        })?;
        // The table is read: the strings the check keeps move out of it.
        let name = rc
            .name
            .take()
            .map(toml::Spanned::into_inner)
            .unwrap_or_default();
        self.checks.push(CheckSpec {
            name,
            from: rc.from.take(),
            to: rc.to.take(),
            timeout,
            target,
        });
        Ok(())
    }

    fn finish(self) -> Result<Vec<CheckSpec>, ConfigError> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(self.checks),
        }
    }
}

/// A duration as users write it (`500ms`, `3s`, `1m`), greater than zero: the one rule for every
/// timeout and interval, in config files and on the command line.
pub fn positive_duration(text: &str) -> Result<Duration, DurationError> {
    let d = humantime::parse_duration(text).map_err(|reason| DurationError::NotADuration {
        text: text.into(),
        reason,
    })?;
    if d.is_zero() {
        return Err(DurationError::Zero);
    }
    Ok(d)
}

/// A timeout or interval that is not a positive duration.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DurationError {
    #[error("invalid duration `{text}`: {reason} (examples: 500ms, 3s, 1m)")]
    NotADuration {
        text: String,
        reason: humantime::DurationError,
    },
    #[error("duration must be greater than zero")]
    Zero,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> ConfigError {
        parse(text, Path::new("t.toml")).expect_err("config should be rejected")
    }

    #[test]
    fn line_column_counts_from_one() {
        assert_eq!(line_column("ab\ncd", 0), (1, 1));
        assert_eq!(line_column("ab\ncd", 4), (2, 2));
        assert_eq!(line_column("é\nx", 3), (2, 1));
    }

    #[test]
    fn parses_a_tcp_check() {
        let cfg = parse(
            "[[check]]\nname = \"a\"\nkind = \"tcp\"\nhost = \"db\"\nport = 1433\nfrom = \"web\"\nto = \"sql\"\ntimeout = \"2s\"\n",
            Path::new("t.toml"),
        )
        .unwrap();
        assert_eq!(cfg.checks.len(), 1);
        assert_eq!(cfg.checks[0].timeout, Some(Duration::from_secs(2)));
        assert_eq!(cfg.checks[0].from.as_deref(), Some("web"));
    }

    #[test]
    fn unknown_key_is_located() {
        let e = err("[[check]]\nname = \"a\"\nkind = \"tcp\"\nhots = \"db\"\n");
        assert_eq!((e.line, e.column), (4, 1), "{e}");
        assert!(e.message.contains("hots"), "{e}");
    }

    #[test]
    fn unknown_kind_is_located() {
        let e = err("[[check]]\nname = \"a\"\nkind = \"ftp\"\n");
        assert_eq!(e.line, 3, "{e}");
        assert!(e.message.contains("ftp"), "{e}");
    }

    #[test]
    fn bad_duration_is_located() {
        let e = err("[[check]]\nname = \"a\"\nkind = \"tcp\"\nhost = \"h\"\nport = 1\ntimeout = \"3 parsecs\"\n");
        assert_eq!((e.line, e.column), (6, 11), "{e}");
    }

    #[test]
    fn duplicate_names_are_rejected() {
        let e = err("[[check]]\nname = \"a\"\nkind = \"dns\"\nhost = \"h\"\n[[check]]\nname = \"a\"\nkind = \"dns\"\nhost = \"h\"\n");
        assert_eq!(e.line, 6, "{e}");
        assert!(e.message.contains("duplicate"), "{e}");
    }

    #[test]
    fn missing_port_for_tcp_names_the_check() {
        let e = err("[[check]]\nname = \"a\"\nkind = \"tcp\"\nhost = \"h\"\n");
        assert!(e.message.contains("port"), "{e}");
        assert!(e.line >= 1);
    }

    #[test]
    fn port_out_of_range_is_located() {
        let e = err("[[check]]\nname = \"a\"\nkind = \"tcp\"\nhost = \"h\"\nport = 70000\n");
        assert_eq!(e.line, 5, "{e}");
    }

    #[test]
    fn keys_of_another_kind_are_rejected_where_they_stand() {
        // (kind and its required keys, the foreign key line, the line the error must name)
        let rows = [
            (
                "kind = \"tcp\"\nhost = \"h\"\nport = 1",
                "database = \"app\"",
                6,
            ),
            ("kind = \"dns\"\nhost = \"h\"", "port = 53", 5),
            ("kind = \"epm\"\nhost = \"h\"", "user = \"u\"", 5),
            (
                "kind = \"mssql\"\nhost = \"h\"\nuser = \"u\"",
                "iface = \"x\"",
                6,
            ),
            (
                "kind = \"postgres\"\nhost = \"h\"\nuser = \"u\"",
                "instance = \"I\"",
                6,
            ),
            // A flag has no position of its own: the error names the `kind` line.
            (
                "kind = \"postgres\"\nhost = \"h\"\nuser = \"u\"",
                "trust_server_certificate = true",
                3,
            ),
            ("kind = \"dns\"\nhost = \"h\"", "list_endpoints = true", 3),
        ];
        for (base, foreign, line) in rows {
            let text = format!("[[check]]\nname = \"a\"\n{base}\n{foreign}\n");
            let e = err(&text);
            let key = foreign.split(' ').next().unwrap();
            assert!(
                e.message.contains(&format!("`{key}` does not apply")),
                "{text}: {e}"
            );
            assert_eq!(e.line, line, "{text}: {e}");
        }
    }

    #[test]
    fn every_kind_accepts_its_own_keys() {
        let ok = [
            "kind = \"tcp\"\nhost = \"h\"\nport = 1\nreverse_dns = true",
            "kind = \"epm\"\nhost = \"h\"\nport = 135\niface = \"906b0ce0-c70b-1067-b317-00dd010662da/v1.0\"\nlist_endpoints = true\nreverse_dns = true",
            "kind = \"postgres\"\nhost = \"h\"\nport = 5432\nuser = \"u\"\ndatabase = \"d\"\npassword_env = \"P\"\ntx = \"twophase\"",
        ];
        for base in ok {
            let text = format!("[[check]]\nname = \"a\"\n{base}\n");
            assert!(parse(&text, Path::new("t.toml")).is_ok(), "{text}");
        }
    }

    #[test]
    fn target_url_takes_only_a_password_source_beside_it() {
        // Anything else beside a URL would be silently ignored: an error on its line.
        let e = err("[[check]]\nname = \"a\"\ntarget = \"tcp://h:1\"\ndatabase = \"x\"\n");
        assert_eq!(e.line, 4, "{e}");
        assert!(
            e.message
                .contains("`database` does not go with `target = URL`"),
            "{e}"
        );
        let e = err("[[check]]\nname = \"a\"\ntarget = \"postgres://u@h/d\"\ntx = \"local\"\n");
        assert_eq!(e.line, 4, "{e}");
        let e = err("[[check]]\nname = \"a\"\ntarget = \"tcp://h:1\"\npassword_env = \"P\"\n");
        assert_eq!(e.line, 4, "{e}");

        // The password, which never goes in a URL, is taken from the table.
        let cfg = parse(
            "[[check]]\nname = \"a\"\ntarget = \"postgres://u@h/d?tx=twophase\"\npassword_env = \"PGPW\"\n",
            Path::new("t.toml"),
        )
        .unwrap();
        match &cfg.checks[0].target {
            crate::target::Target::Postgres(t) => {
                assert_eq!(
                    t.password,
                    Some(crate::secret::PasswordSource::Env("PGPW".into()))
                )
            }
            other => panic!("{other:?}"),
        }
        let e = err(
            "[[check]]\nname = \"a\"\ntarget = \"postgres://u@h/d\"\npassword_env = \"P\"\npassword_file = \"f\"\n",
        );
        assert_eq!(e.line, 4, "{e}");
        assert!(e.message.contains("not both"), "{e}");
    }

    #[test]
    fn syntax_error_is_located() {
        let e = err("[[check]]\nname = \"a\nkind = \"tcp\"\n");
        assert_eq!(e.line, 2, "{e}");
    }

    /// The plain subset builds each check as its table is read; a TOML error later in the file
    /// still comes first, as when the file was parsed whole before any check was built.
    #[test]
    fn a_toml_error_after_a_bad_check_is_the_one_reported() {
        let e =
            err("[[check]]\nname = \"a\"\nkind = \"ftp\"\n[[check]]\nname = \"b\nkind = \"tcp\"\n");
        assert_eq!(e.line, 5, "{e}");
        assert!(!e.message.contains("ftp"), "{e}");
        // Without the TOML error, the first bad check's own error; later checks do not matter.
        let e = err(
            "[[check]]\nname = \"a\"\nkind = \"ftp\"\n[[check]]\nname = \"a\"\nkind = \"dns\"\n",
        );
        assert_eq!(e.line, 3, "{e}");
        assert!(e.message.contains("ftp"), "{e}");
        // A name repeated, then a check with another error: the repeat is reported.
        let e = err("[[check]]\nname = \"a\"\nkind = \"dns\"\nhost = \"h\"\n\
                     [[check]]\nname = \"a\"\nkind = \"tcp\"\nhost = \"h\"\n");
        assert_eq!(e.line, 6, "{e}");
        assert!(e.message.contains("duplicate"), "{e}");
    }

    /// `[defaults] zone` applies to every check without a `from`, wherever the table stands; the
    /// plain subset and toml (here made to read the file by a literal string) build the same.
    #[test]
    fn defaults_after_the_checks_apply_to_them_in_both_readers() {
        let body = "[[check]]\nname = \"a\"\nkind = \"dns\"\nhost = \"h\"\n\
                    [[check]]\nname = \"b\"\nkind = \"tcp\"\nhost = \"h\"\nport = 1\nfrom = \"own\"\n\
                    [defaults]\ntimeout = \"2s\"\n";
        let plain = format!("{body}zone = \"web\"\n");
        let by_toml = format!("{body}zone = 'web'\n");
        assert!(
            plain_toml::parse(&by_toml).is_none(),
            "the literal string is outside the subset"
        );
        for text in [&plain, &by_toml] {
            let cfg = parse(text, Path::new("t.toml")).unwrap();
            let from: Vec<Option<&str>> = cfg.checks.iter().map(|c| c.from.as_deref()).collect();
            assert_eq!(from, [Some("web"), Some("own")], "{text}");
            assert_eq!(cfg.defaults.zone.as_deref(), Some("web"));
            assert_eq!(cfg.defaults.timeout, Some(Duration::from_secs(2)));
        }
        let (a, b) = (
            parse(&plain, Path::new("t.toml")).unwrap(),
            parse(&by_toml, Path::new("t.toml")).unwrap(),
        );
        assert_eq!(a.checks, b.checks);
    }
}
