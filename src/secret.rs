//! Passwords: where they may come from, and a type that never shows them.
//!
//! Passwords never on the command line. The sources, in order of precedence for a
//! check: its config `password_file` or `password_env`, else the run's `--password-file`, else an
//! interactive prompt when stdin is a terminal. Anything else is an error naming the sources.
//!
//! [`Secret`] wraps the text: its `Debug` prints `Secret(***)` and it has no `Display`, so a
//! password cannot end up in a report, a log line or a panic message by accident.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use thiserror::Error;

/// A password or other secret. Read it with [`Secret::expose`], only where it is sent.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(text: impl Into<String>) -> Secret {
        Secret(text.into())
    }

    /// The secret text, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        // Best effort: overwrite the bytes before the allocation is freed.
        let mut bytes = std::mem::take(&mut self.0).into_bytes();
        bytes.iter_mut().for_each(|b| *b = 0);
        std::hint::black_box(&bytes);
    }
}

/// Where a check's password comes from, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordSource {
    /// A file whose content (one trailing newline removed) is the password.
    File(PathBuf),
    /// An environment variable holding the password.
    Env(String),
}

#[derive(Debug, Error)]
pub enum SecretError {
    #[error("cannot read password file {}: {source}", path.display())]
    FileUnreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("password file {} is empty", path.display())]
    FileEmpty { path: PathBuf },
    #[error("password file {} is not UTF-8 text", path.display())]
    FileNotText { path: PathBuf },
    #[error("environment variable {name} (password_env) is not set")]
    EnvMissing { name: String },
    #[error("environment variable {name} (password_env) is not valid Unicode")]
    EnvNotUnicode { name: String },
    #[error(
        "no password for {label}: give --password-file, or password_file/password_env in the \
         config (stdin is not a terminal, so there is no prompt)"
    )]
    NoSource { label: String },
    #[error("cannot prompt for the password of {label}: {message}")]
    Prompt { label: String, message: String },
}

/// The run-wide `--password-file`, set once by the CLI before checks run.
static DEFAULT_PASSWORD_FILE: OnceLock<PathBuf> = OnceLock::new();

/// Passwords typed at the prompt this run, by label (`user@host`), so each is asked once.
static PROMPTED: Mutex<Option<HashMap<String, Secret>>> = Mutex::new(None);

/// Serializes prompts, so concurrent checks do not ask at the same time.
static PROMPT_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Records the `--password-file` of this run. Later calls are ignored (first one wins).
pub fn set_default_password_file(path: PathBuf) {
    let _ = DEFAULT_PASSWORD_FILE.set(path);
}

/// clap value parser for `--password-file`: the file must exist; it becomes the run's default
/// password source (read when a check needs it, never echoed).
pub fn password_file_arg(s: &str) -> Result<PathBuf, SecretError> {
    let path = PathBuf::from(s);
    std::fs::metadata(&path).map_err(|source| SecretError::FileUnreadable {
        path: path.clone(),
        source,
    })?;
    set_default_password_file(path.clone());
    Ok(path)
}

pub fn default_password_file() -> Option<&'static Path> {
    DEFAULT_PASSWORD_FILE.get().map(|p| p.as_path())
}

/// Pure: the password held in a password file's text: one trailing line ending is removed
/// (editors add one), everything else is kept as written.
pub fn password_from_file_text(text: &str) -> &str {
    let t = text.strip_suffix('\n').unwrap_or(text);
    t.strip_suffix('\r').unwrap_or(t)
}

pub fn read_password_file(path: &Path) -> Result<Secret, SecretError> {
    let bytes = std::fs::read(path).map_err(|source| SecretError::FileUnreadable {
        path: path.to_path_buf(),
        source,
    })?;
    warn_if_readable_by_others(path);
    let text = String::from_utf8(bytes).map_err(|e| {
        let mut b = e.into_bytes();
        b.iter_mut().for_each(|x| *x = 0);
        SecretError::FileNotText {
            path: path.to_path_buf(),
        }
    })?;
    let secret = Secret::new(password_from_file_text(&text));
    drop(Secret(text));
    if secret.is_empty() {
        return Err(SecretError::FileEmpty {
            path: path.to_path_buf(),
        });
    }
    Ok(secret)
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o044 != 0 {
            tracing::warn!(
                "password file {} is readable by group or others; consider chmod 600",
                path.display()
            );
        }
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &Path) {}

pub fn read_password_env(name: &str) -> Result<Secret, SecretError> {
    match std::env::var(name) {
        Ok(v) => Ok(Secret::new(v)),
        Err(std::env::VarError::NotPresent) => Err(SecretError::EnvMissing {
            name: name.to_string(),
        }),
        Err(std::env::VarError::NotUnicode(_)) => Err(SecretError::EnvNotUnicode {
            name: name.to_string(),
        }),
    }
}

/// Gets the password for a check: its own source if configured, else the run's
/// `--password-file`, else a prompt on the terminal (once per `label` per run).
pub async fn obtain(source: Option<&PasswordSource>, label: &str) -> Result<Secret, SecretError> {
    match source {
        Some(PasswordSource::File(p)) => return read_password_file(p),
        Some(PasswordSource::Env(n)) => return read_password_env(n),
        None => {}
    }
    if let Some(p) = default_password_file() {
        return read_password_file(p);
    }
    if !std::io::stdin().is_terminal() {
        return Err(SecretError::NoSource {
            label: label.to_string(),
        });
    }
    let _guard = PROMPT_LOCK.lock().await;
    if let Some(s) = prompted(label) {
        return Ok(s);
    }
    let prompt = format!("Password for {label}: ");
    let typed = tokio::task::spawn_blocking(move || rpassword::prompt_password(prompt))
        .await
        .map_err(|e| SecretError::Prompt {
            label: label.to_string(),
            message: e.to_string(),
        })?
        .map_err(|e| SecretError::Prompt {
            label: label.to_string(),
            message: e.to_string(),
        })?;
    let secret = Secret::new(typed);
    if let Ok(mut map) = PROMPTED.lock() {
        map.get_or_insert_with(HashMap::new)
            .insert(label.to_string(), secret.clone());
    }
    Ok(secret)
}

fn prompted(label: &str) -> Option<Secret> {
    PROMPTED.lock().ok()?.as_ref()?.get(label).cloned()
}

/// A random login no server has, for the credential-free login tests (mssql, postgres): the
/// server's "login failed" then says its login stage works, and no real credential is needed.
pub struct ProbeLogin {
    pub user: String,
    pub password: Secret,
}

impl ProbeLogin {
    /// A fresh random user name (`dtcprobe-probe-` and 12 hex digits, recognisable in the
    /// server's log) and a random 32-hex-digit password. Without OS randomness the clock's
    /// nanoseconds still make the pair unlikely to exist.
    pub fn random() -> ProbeLogin {
        let mut bytes = [0u8; 22];
        if getrandom::fill(&mut bytes).is_err() {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            for (i, b) in bytes.iter_mut().enumerate() {
                *b = (nanos >> ((i % 16) * 8)) as u8 ^ i as u8;
            }
        }
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        ProbeLogin {
            user: format!("dtcprobe-probe-{}", hex(&bytes[..6])),
            password: Secret::new(hex(&bytes[6..])),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_secret() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert_eq!(format!("{:?}", Some(&s)), "Some(Secret(***))");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn file_text_loses_one_line_ending_only() {
        let cases = [
            ("pw", "pw"),
            ("pw\n", "pw"),
            ("pw\r\n", "pw"),
            ("pw\n\n", "pw\n"),
            (" pw \n", " pw "),
            ("", ""),
        ];
        for (text, want) in cases {
            assert_eq!(password_from_file_text(text), want, "{text:?}");
        }
    }

    #[test]
    fn reads_file_and_reports_missing_and_empty() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "s3cret\n").unwrap();
        assert_eq!(read_password_file(&p).unwrap().expose(), "s3cret");
        std::fs::write(&p, "\n").unwrap();
        assert!(matches!(
            read_password_file(&p),
            Err(SecretError::FileEmpty { .. })
        ));
        let missing = dir.path().join("nope");
        let e = read_password_file(&missing).unwrap_err();
        assert!(matches!(e, SecretError::FileUnreadable { .. }));
        assert!(e.to_string().contains("nope"));
    }

    #[test]
    fn env_source() {
        let e = read_password_env("DTCPROBE_TEST_SURELY_UNSET_VAR").unwrap_err();
        assert!(e.to_string().contains("DTCPROBE_TEST_SURELY_UNSET_VAR"));
    }

    #[test]
    fn probe_logins_are_random_and_named_as_dtcprobe() {
        let (a, b) = (ProbeLogin::random(), ProbeLogin::random());
        assert!(
            a.user.starts_with("dtcprobe-probe-") && a.user.len() == 27,
            "{}",
            a.user
        );
        assert_ne!(a.user, b.user);
        assert_ne!(a.password.expose(), b.password.expose());
        assert_eq!(a.password.expose().len(), 32);
    }
}
