//! Host, port and target-URL text, below every module that parses targets (the kinds under
//! `hops/`, `target`, `config`), so none of them has to import another for it.
//!
//! [`TargetUrl`] is the one entry point for every `scheme://...` a user types: it splits off the
//! scheme and the user name, refuses a password wherever it hides (`user:pw@`, `?password=`,
//! `?pwd=`), and shows any URL it rejects with the password replaced by `***`. Kinds parse the
//! rest of the text themselves (an `mssql://host\instance` is not URL syntax).

use url::Url;

use crate::check_table::TargetError;

/// The host part of a URL, without IPv6 brackets.
pub fn url_host(url: &Url) -> Option<String> {
    match url.host()? {
        url::Host::Domain(d) => Some(d.to_string()),
        url::Host::Ipv4(a) => Some(a.to_string()),
        url::Host::Ipv6(a) => Some(a.to_string()),
    }
}

/// A host as it goes in a URL: IPv6 addresses in brackets.
pub fn bracket_v6(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

/// Query keys that carry a password in the connection strings people paste.
fn is_password_key(key: &str) -> bool {
    key.eq_ignore_ascii_case("password") || key.eq_ignore_ascii_case("pwd")
}

/// The URL as it may be shown anywhere (errors, logs, reports): a `user:password@` part is cut
/// down to `user:***@`, and `password=`/`pwd=` query values become `***`.
pub fn mask_url(text: &str) -> String {
    let Some((scheme, rest)) = text.split_once("://") else {
        return text.to_string();
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => authority.to_string(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) if is_password_key(k) => format!("{k}=***"),
                    _ => kv.to_string(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_string(),
    };
    format!("{scheme}://{authority}{tail}")
}

/// Why a password may not be part of a target.
pub const NO_PASSWORD_IN_URL: &str = "a password in a URL is never accepted (command lines end up \
in shell history, process lists and reports): use --password-file, or password_env/password_file \
in a config";

/// A `scheme://...` target as typed, checked to hold no password. Its text is therefore safe to
/// show, name a check after, or log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetUrl {
    scheme: String,
    user: Option<String>,
    text: String,
}

impl TargetUrl {
    /// Splits `text`; `schemes` (e.g. "tcp://, dns://") goes into the error for text without any.
    pub fn parse(text: &str, schemes: &str) -> Result<TargetUrl, TargetError> {
        let invalid = |message: String| TargetError::InvalidUrl {
            url: mask_url(text),
            message,
        };
        let Some((scheme, rest)) = text.split_once("://") else {
            return Err(invalid(format!(
                "expected SCHEME://HOST..., with a scheme among {schemes}"
            )));
        };
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        let user = match authority.rsplit_once('@') {
            Some((userinfo, _)) if userinfo.contains(':') => {
                return Err(invalid(NO_PASSWORD_IN_URL.into()))
            }
            Some((userinfo, _)) => Some(userinfo.to_string()),
            None => None,
        };
        if let Some((_, query)) = tail.split_once('?') {
            let key = |kv: &str| kv.split_once('=').map(|(k, _)| k).unwrap_or(kv).to_string();
            if query.split('&').any(|kv| is_password_key(&key(kv))) {
                return Err(invalid(NO_PASSWORD_IN_URL.into()));
            }
        }
        Ok(TargetUrl {
            scheme: scheme.to_ascii_lowercase(),
            user,
            text: text.to_string(),
        })
    }

    /// The scheme, lower case.
    pub fn scheme(&self) -> &str {
        &self.scheme
    }

    /// The user name as written (still percent-encoded), if the URL has one.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// The whole text as typed (it holds no password).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// An error about this URL.
    pub fn invalid(&self, message: impl std::fmt::Display) -> TargetError {
        TargetError::InvalidUrl {
            url: mask_url(&self.text),
            message: message.to_string(),
        }
    }

    /// The text as a [`Url`], for kinds whose targets are plain URL syntax.
    pub fn url(&self) -> Result<Url, TargetError> {
        Url::parse(&self.text).map_err(|e| self.invalid(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masking_hides_every_password_form() {
        assert_eq!(
            mask_url("mssql://sa:pw@h/db?password=x&tx=local"),
            "mssql://sa:***@h/db?password=***&tx=local"
        );
        assert_eq!(
            mask_url("postgres://u:secret@[::1]:5432/db?PWD=secret"),
            "postgres://u:***@[::1]:5432/db?PWD=***"
        );
        assert_eq!(mask_url("tcp://h:1"), "tcp://h:1");
        assert_eq!(mask_url("no scheme:secret@"), "no scheme:secret@");
    }

    #[test]
    fn a_password_is_refused_and_never_echoed() {
        for text in [
            "postgres://u:secret@127.0.0.1/db",
            "tcp://u:secret@h:1",
            "mssql://sa:secret@h\\I/db",
            "epm://h?pwd=secret",
            "dns://h?Password=secret",
            "tcp://:secret@h:1",
        ] {
            let e = TargetUrl::parse(text, "tcp://").expect_err(text);
            let shown = e.to_string();
            assert!(!shown.contains("secret"), "{shown}");
            assert!(shown.contains("***"), "{shown}");
            assert!(shown.contains("password"), "{shown}");
        }
    }

    #[test]
    fn splits_scheme_and_user() {
        let u = TargetUrl::parse("Postgres://app@db01/orders", "x").unwrap();
        assert_eq!((u.scheme(), u.user()), ("postgres", Some("app")));
        let u = TargetUrl::parse("tcp://h:1", "x").unwrap();
        assert_eq!((u.scheme(), u.user()), ("tcp", None));
        let u = TargetUrl::parse("mssql://CORP%5Cjoe@h\\I/db", "x").unwrap();
        assert_eq!(u.user(), Some("CORP%5Cjoe"));
        // An `@` in the path is not a user.
        let u = TargetUrl::parse("tcp://h:1/a@b", "x").unwrap();
        assert_eq!(u.user(), None);
        let e = TargetUrl::parse("h:1", "tcp://, dns://").unwrap_err();
        assert!(e.to_string().contains("tcp://, dns://"), "{e}");
    }

    #[test]
    fn bracket_v6_only_brackets_v6() {
        assert_eq!(bracket_v6("::1"), "[::1]");
        assert_eq!(bracket_v6("h"), "h");
    }
}
