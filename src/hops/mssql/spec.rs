//! What an `mssql` check points at, from a URL or a config table. Pure parsing; no I/O.
//!
//! URL form: `mssql://user@host[:port|\instance]/db?tx=none|local|distributed|enlist&encrypt=..&...`.
//! A password in the URL is refused: passwords stay off the command line.

use crate::check_table::{RawCheck, TargetError};
use crate::hostport::{bracket_v6, mask_url};
use crate::secret::PasswordSource;

pub const DEFAULT_PORT: u16 = 1433;

/// Which transaction hops run after login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxMode {
    /// Login only.
    None,
    /// `tx_local` (the default).
    Local,
    /// `tx_local`, then `tx_distributed` (MSDTC).
    Distributed,
    /// `tx_local`, then `tx_enlist`: THIS host's MSDTC begins the transaction and SQL Server
    /// enlists in it (DTCTester parity).
    Enlist,
}

impl TxMode {
    pub fn parse(s: &str) -> Result<TxMode, String> {
        match s.to_ascii_lowercase().as_str() {
            "none" | "off" => Ok(TxMode::None),
            "local" => Ok(TxMode::Local),
            "distributed" | "dtc" => Ok(TxMode::Distributed),
            "enlist" => Ok(TxMode::Enlist),
            other => Err(format!(
                "unknown tx `{other}` (expected none, local, distributed or enlist)"
            )),
        }
    }

    /// MSDTC takes part (its RPC needs each host's name to resolve both ways).
    pub fn uses_msdtc(self) -> bool {
        matches!(self, TxMode::Distributed | TxMode::Enlist)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TxMode::None => "none",
            TxMode::Local => "local",
            TxMode::Distributed => "distributed",
            TxMode::Enlist => "enlist",
        }
    }
}

/// The client's encryption request (MS-TDS PRELOGIN `ENCRYPTION`, plus TDS 8 strict).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encrypt {
    /// No TLS at all, not even for the login packet (`ENCRYPT_NOT_SUP`). Only for servers
    /// without a certificate; the password then crosses the network readable.
    None,
    /// TLS for the login packet only, unless the server forces encryption (`ENCRYPT_OFF`).
    Off,
    /// TLS for the whole session (`ENCRYPT_ON`); the default.
    On,
    /// As `on`, and fail if the server declines (`ENCRYPT_REQ`).
    Required,
    /// TDS 8.0: TLS first, then TDS inside it (SQL Server 2022+).
    Strict,
}

impl Encrypt {
    pub fn parse(s: &str) -> Result<Encrypt, String> {
        match s.to_ascii_lowercase().as_str() {
            "none" | "not_supported" => Ok(Encrypt::None),
            "off" | "false" | "no" => Ok(Encrypt::Off),
            "on" | "true" | "yes" => Ok(Encrypt::On),
            "required" | "mandatory" => Ok(Encrypt::Required),
            "strict" => Ok(Encrypt::Strict),
            other => Err(format!(
                "unknown encrypt `{other}` (expected none, off, on, required or strict)"
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Encrypt::None => "none",
            Encrypt::Off => "off",
            Encrypt::On => "on",
            Encrypt::Required => "required",
            Encrypt::Strict => "strict",
        }
    }
}

/// How the login authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// SQL Server authentication: user + password in LOGIN7.
    Sql,
    /// Windows authentication with an explicit `DOMAIN\user` and password (NTLM via SSPI).
    /// Windows builds only.
    Windows,
    /// Windows authentication as the current user (SSPI). Windows builds only.
    Integrated,
    /// Kerberos (docs/kerberos.md): hops `kdc` and `spn` before the login; the user and password
    /// from the usual sources, or (no user) the credential cache.
    Kerberos,
    /// What Windows' Negotiate package (a driver's `Integrated Security=SSPI`) does: Kerberos
    /// when a ticket for the SQL Server's SPN can be had (hops `kdc` and `spn`), else NTLM with
    /// the same user and password, reported as `warn ntlm_fallback` with the reason
    /// (docs/kerberos.md). In the Windows build SSPI's Negotiate package, as the logged-on
    /// user when no user is given.
    Negotiate,
}

impl Auth {
    pub fn parse(s: &str) -> Result<Auth, String> {
        let auth = match s.to_ascii_lowercase().as_str() {
            "sql" | "sql_server" => Auth::Sql,
            "windows" | "ntlm" => Auth::Windows,
            "integrated" | "sspi" => Auth::Integrated,
            "kerberos" | "krb5" => Auth::Kerberos,
            "negotiate" | "spnego" => Auth::Negotiate,
            other => {
                return Err(format!(
                    "unknown auth `{other}` (expected sql, windows, integrated, kerberos or \
                     negotiate)"
                ))
            }
        };
        if matches!(auth, Auth::Windows | Auth::Integrated) && !cfg!(windows) {
            return Err(format!(
                "auth `{}` needs the Windows build of dtcprobe: this build supports SQL Server \
                 authentication only (see docs/mssql.md)",
                auth.as_str()
            ));
        }
        Ok(auth)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Auth::Sql => "sql",
            Auth::Windows => "windows",
            Auth::Integrated => "integrated",
            Auth::Kerberos => "kerberos",
            Auth::Negotiate => "negotiate",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct MssqlTarget {
    pub host: String,
    /// An explicit TCP port; `None` means 1433, or the SQL Browser's answer for a named instance.
    pub port: Option<u16>,
    pub instance: Option<String>,
    pub database: Option<String>,
    pub user: Option<String>,
    pub auth: Auth,
    /// `None`: the run's `--password-file`, else a prompt.
    pub password: Option<PasswordSource>,
    pub encrypt: Encrypt,
    pub trust_server_certificate: bool,
    pub tx: TxMode,
    pub linked_server: Option<String>,
    /// Check reverse DNS in the resolve hop (default: only when `tx = distributed`, since MSDTC
    /// calls back by name).
    pub reverse_dns: bool,
    /// Leave the session idle this long after the last hop that used it, then `SELECT 1` on it
    /// (hop `idle`).
    pub hold: Option<std::time::Duration>,
    /// The credential-free login (no user, or `login=probe`): LOGIN7 with a random user name and
    /// password, so the server's "login failed" (18456) proves the TDS path and its login stage
    /// without any credential on this host. No transaction hops (there is no session).
    pub credential_free: bool,
    /// Hop `revocation` and the certificate's expiry warning.
    pub cert: crate::hops::certificate::CertOptions,
}

impl MssqlTarget {
    fn new(host: String) -> MssqlTarget {
        MssqlTarget {
            host,
            port: None,
            instance: None,
            database: None,
            user: None,
            auth: Auth::Sql,
            password: None,
            encrypt: Encrypt::On,
            trust_server_certificate: false,
            tx: TxMode::Local,
            linked_server: None,
            reverse_dns: false,
            hold: None,
            credential_free: false,
            cert: Default::default(),
        }
    }

    /// Whether the SQL Browser must be asked for the port.
    pub fn needs_browser(&self) -> bool {
        self.instance.is_some() && self.port.is_none()
    }

    /// `user@host` for prompts.
    pub fn label(&self) -> String {
        format!("{}@{}", self.user.as_deref().unwrap_or(""), self.host)
    }

    /// Canonical, secret-free rendering.
    pub fn display(&self) -> String {
        let mut s = String::from("mssql://");
        if let Some(u) = &self.user {
            s.push_str(&escape_user(u));
            s.push('@');
        }
        s.push_str(&bracket_v6(&self.host));
        match (&self.instance, self.port) {
            (_, Some(p)) => s.push_str(&format!(":{p}")),
            (Some(i), None) => {
                s.push('\\');
                s.push_str(i);
            }
            (None, None) => {}
        }
        s.push('/');
        if let Some(db) = &self.database {
            s.push_str(db);
        }
        let mut q = vec![format!("tx={}", self.tx.as_str())];
        if self.encrypt != Encrypt::On {
            q.push(format!("encrypt={}", self.encrypt.as_str()));
        }
        if self.trust_server_certificate {
            q.push("trust_server_certificate=true".into());
        }
        if self.auth != Auth::Sql {
            q.push(format!("auth={}", self.auth.as_str()));
        }
        if let Some(l) = &self.linked_server {
            q.push(format!("linked_server={l}"));
        }
        if let Some(h) = self.hold {
            q.push(format!("hold={}", crate::hops::idle::format_hold(h)));
        }
        if self.credential_free {
            q.push("login=probe".into());
        }
        q.extend(self.cert.query_pairs());
        s.push('?');
        s.push_str(&q.join("&"));
        s
    }

    /// Parses `mssql://user@host[:port|\instance]/db?key=value&...`.
    pub fn from_url(text: &str) -> Result<MssqlTarget, TargetError> {
        let invalid = |message: String| TargetError::InvalidUrl {
            url: mask_url(text),
            message,
        };
        let rest = text
            .split_once("://")
            .map(|(_, r)| r)
            .ok_or_else(|| invalid("expected mssql://user@host[:port|\\instance]/db".into()))?;
        let (authority_path, query) = match rest.split_once('?') {
            Some((a, q)) => (a, Some(q)),
            None => (rest, None),
        };
        let (authority, path) = match authority_path.find('/') {
            Some(i) => (&authority_path[..i], &authority_path[i + 1..]),
            None => (authority_path, ""),
        };
        let (user, hostpart) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        if let Some(u) = user {
            if u.contains(':') {
                return Err(invalid(
                    "a password in the URL is not accepted: use --password-file, a config \
                     password_env/password_file, or the prompt"
                        .into(),
                ));
            }
        }
        let mut t = MssqlTarget::new(String::new());
        t.user = user
            .filter(|u| !u.is_empty())
            .map(percent_decode)
            .transpose()
            .map_err(invalid)?;

        // host, then optional :port or \instance (also %5C).
        let hostpart = hostpart.replace("%5C", "\\").replace("%5c", "\\");
        let (host, tail) = if let Some(stripped) = hostpart.strip_prefix('[') {
            let end = stripped
                .find(']')
                .ok_or_else(|| invalid("unclosed [ in IPv6 address".into()))?;
            (stripped[..end].to_string(), stripped[end + 1..].to_string())
        } else {
            let cut = hostpart.find([':', '\\']).unwrap_or(hostpart.len());
            (hostpart[..cut].to_string(), hostpart[cut..].to_string())
        };
        if host.is_empty() {
            return Err(invalid("no host".into()));
        }
        t.host = host;
        if let Some(p) = tail.strip_prefix(':') {
            t.port = Some(parse_port(p).map_err(invalid)?);
        } else if let Some(i) = tail.strip_prefix('\\') {
            if i.is_empty() {
                return Err(invalid("empty instance name after \\".into()));
            }
            t.instance = Some(i.to_string());
        } else if !tail.is_empty() {
            return Err(invalid(format!("unexpected `{tail}` after the host")));
        }
        let db = percent_decode(path.trim_end_matches('/')).map_err(invalid)?;
        if !db.is_empty() {
            if db.contains('/') {
                return Err(invalid("the path must be a single database name".into()));
            }
            t.database = Some(db);
        }
        let mut reverse_dns: Option<bool> = None;
        let mut tx_given = false;
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = percent_decode(v).map_err(invalid)?;
            match k {
                "tx" => {
                    t.tx = TxMode::parse(&v).map_err(invalid)?;
                    tx_given = true;
                }
                "login" => match v.as_str() {
                    "probe" => t.credential_free = true,
                    other => {
                        return Err(invalid(format!(
                            "unknown login `{other}` (expected probe: a login with a random user, \
                             no credentials)"
                        )))
                    }
                },
                "encrypt" => t.encrypt = Encrypt::parse(&v).map_err(invalid)?,
                "trust_server_certificate" | "trustservercertificate" => {
                    t.trust_server_certificate = parse_bool(&v).map_err(invalid)?
                }
                "auth" => t.auth = Auth::parse(&v).map_err(invalid)?,
                "linked_server" => t.linked_server = Some(v),
                "reverse_dns" => reverse_dns = Some(parse_bool(&v).map_err(invalid)?),
                "hold" => {
                    t.hold = Some(
                        crate::hops::idle::parse_hold(&v).map_err(|e| invalid(e.to_string()))?,
                    )
                }
                "password" | "pwd" => {
                    return Err(invalid(
                        "a password in the URL is not accepted: use --password-file".into(),
                    ))
                }
                other => match t.cert.take_url_pair(other, &v) {
                    Some(r) => r.map_err(invalid)?,
                    None => {
                        return Err(invalid(format!(
                            "unknown parameter `{other}` (known: tx, encrypt, \
                             trust_server_certificate, auth, linked_server, reverse_dns, hold, \
                             login, {})",
                            crate::hops::certificate::URL_KEYS
                        )))
                    }
                },
            }
        }
        t.settle_credential_free(tx_given).map_err(invalid)?;
        t.reverse_dns = reverse_dns.unwrap_or(t.tx.uses_msdtc());
        t.validate().map_err(invalid)?;
        Ok(t)
    }

    /// Builds from a config table of `kind = "mssql"`; `host` is already checked non-empty.
    pub fn from_config(raw: &RawCheck, host: String) -> Result<MssqlTarget, TargetError> {
        let at = |offset: usize, message: String| TargetError::At { offset, message };
        let kind_offset = raw.kind.as_ref().map(|k| k.span().start).unwrap_or(0);
        let mut t = MssqlTarget::new(host);
        t.port = raw.port.as_ref().map(|p| *p.get_ref());
        if let Some(i) = &raw.instance {
            let v = i.get_ref().trim();
            if v.is_empty() {
                return Err(at(i.span().start, "`instance` is empty".into()));
            }
            t.instance = Some(v.to_string());
        }
        t.database = raw
            .database
            .as_ref()
            .map(|d| d.get_ref().clone())
            .filter(|d| !d.is_empty());
        t.user = raw
            .user
            .as_ref()
            .map(|u| u.get_ref().clone())
            .filter(|u| !u.is_empty());
        t.password = raw.password_source().map_err(|(o, m)| at(o, m))?;
        if let Some(a) = &raw.auth {
            t.auth = Auth::parse(a.get_ref()).map_err(|m| at(a.span().start, m))?;
        }
        if let Some(e) = &raw.encrypt {
            t.encrypt = Encrypt::parse(e.get_ref()).map_err(|m| at(e.span().start, m))?;
        }
        t.trust_server_certificate = raw.trust_server_certificate.unwrap_or(false);
        if let Some(x) = &raw.tx {
            t.tx = TxMode::parse(x.get_ref()).map_err(|m| at(x.span().start, m))?;
        }
        t.linked_server = raw.linked_server.as_ref().map(|l| l.get_ref().clone());
        if let Some(h) = &raw.hold {
            t.hold = Some(
                crate::hops::idle::parse_hold(h.get_ref())
                    .map_err(|e| at(h.span().start, e.to_string()))?,
            );
        }
        t.cert = crate::hops::certificate::CertOptions::from_config(raw);
        t.settle_credential_free(raw.tx.is_some())
            .map_err(|m| at(kind_offset, m))?;
        t.reverse_dns = raw.reverse_dns.unwrap_or(t.tx.uses_msdtc());
        t.validate().map_err(|m| at(kind_offset, m))?;
        Ok(t)
    }

    /// SQL Server authentication with no user is the credential-free login; it has no session
    /// for transaction hops, so `tx` defaults to none and an explicit other `tx` is refused.
    fn settle_credential_free(&mut self, tx_given: bool) -> Result<(), String> {
        if self.auth == Auth::Sql && self.user.is_none() {
            self.credential_free = true;
        }
        if !self.credential_free {
            return Ok(());
        }
        if self.user.is_some() {
            return Err("login=probe logs in with a random user: give no user with it".into());
        }
        if self.auth != Auth::Sql {
            return Err("login=probe is a SQL Server login: it takes no `auth`".into());
        }
        if self.password.is_some() {
            return Err("the credential-free login (no user) takes no password".into());
        }
        if self.hold.is_some() {
            return Err(
                "`hold` needs a session: the credential-free login (no user) opens none".into(),
            );
        }
        match (tx_given, self.tx) {
            (_, TxMode::None) => Ok(()),
            (false, _) => {
                self.tx = TxMode::None;
                Ok(())
            }
            (true, _) => Err(
                "a login with no user (the credential-free login) runs no transaction: give a \
                 user, or tx=none"
                    .into(),
            ),
        }
    }

    fn validate(&self) -> Result<(), String> {
        // Windows' Negotiate without a user is the logged-on user.
        let user_optional = matches!(self.auth, Auth::Integrated | Auth::Kerberos)
            || (self.auth == Auth::Negotiate && cfg!(windows));
        if !user_optional && self.user.is_none() && !self.credential_free {
            return Err("no user: write mssql://USER@host/... or set `user`".into());
        }
        if self.linked_server.is_some() && self.tx != TxMode::Distributed {
            return Err("`linked_server` needs tx = distributed".into());
        }
        if let Some(l) = &self.linked_server {
            if l.is_empty() || l.contains(']') {
                return Err("`linked_server` must be a plain server name".into());
            }
        }
        Ok(())
    }
}

fn parse_port(p: &str) -> Result<u16, String> {
    match p.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("invalid port `{p}`")),
        Ok(n) => Ok(n),
    }
}

fn parse_bool(v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" | "on" | "" => Ok(true),
        "false" | "no" | "0" | "off" => Ok(false),
        other => Err(format!("expected true or false, got `{other}`")),
    }
}

fn escape_user(u: &str) -> String {
    u.replace('%', "%25")
        .replace('@', "%40")
        .replace('/', "%2F")
        .replace('\\', "%5C")
}

/// Decodes `%XX` escapes (user names like `CORP%5Cjoe`, database names with spaces).
fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .ok_or_else(|| format!("bad % escape in `{s}`"))?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| format!("bad % escape in `{s}`"))?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("`{s}` is not UTF-8 once decoded"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> MssqlTarget {
        MssqlTarget::from_url(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn parses_the_url_forms() {
        let t = url("mssql://sa@sql01/app");
        assert_eq!(
            (t.host.as_str(), t.port, t.instance.as_deref()),
            ("sql01", None, None)
        );
        assert_eq!(
            (t.user.as_deref(), t.database.as_deref(), t.tx),
            (Some("sa"), Some("app"), TxMode::Local)
        );
        assert_eq!(t.encrypt, Encrypt::On);
        assert!(!t.reverse_dns);

        let t = url(
            "mssql://sa@sql01:14330/app?tx=distributed&encrypt=off&trust_server_certificate=true",
        );
        assert_eq!(
            (t.port, t.tx, t.encrypt, t.trust_server_certificate),
            (Some(14330), TxMode::Distributed, Encrypt::Off, true)
        );
        assert!(t.reverse_dns, "distributed checks reverse DNS by default");

        let t = url(r"mssql://sa@sql01\SQLEXPRESS/app");
        assert_eq!(t.instance.as_deref(), Some("SQLEXPRESS"));
        assert!(t.needs_browser());
        let t = url("mssql://sa@sql01%5CSQLEXPRESS/app");
        assert_eq!(t.instance.as_deref(), Some("SQLEXPRESS"));

        let t = url("mssql://sa@[2001:db8::1]:1433/");
        assert_eq!(
            (t.host.as_str(), t.port, t.database),
            ("2001:db8::1", Some(1433), None)
        );

        let t = url("mssql://CORP%5Cjoe@sql01/app%20db?tx=none");
        assert_eq!(
            (t.user.as_deref(), t.database.as_deref(), t.tx),
            (Some(r"CORP\joe"), Some("app db"), TxMode::None)
        );
    }

    #[test]
    fn no_user_is_the_credential_free_login() {
        for ok in [
            "mssql://sql01",
            "mssql://sql01:1500/",
            r"mssql://sql01\INST",
            "mssql://sql01/?login=probe",
            "mssql://sql01/?tx=none&encrypt=strict",
        ] {
            let t = url(ok);
            assert!(t.credential_free, "{ok}");
            assert_eq!((t.tx, t.user.as_deref()), (TxMode::None, None), "{ok}");
            // The rendering parses back to the same check.
            assert_eq!(url(&t.display()), t, "{ok}");
        }
        assert!(!url("mssql://sa@sql01").credential_free);
        for bad in [
            "mssql://sql01/?tx=local",
            "mssql://sa@sql01/?login=probe",
            "mssql://sql01/?login=guest",
            "mssql://sql01/?hold=30s",
        ] {
            assert!(MssqlTarget::from_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rejects_bad_urls_and_never_echoes_a_password() {
        for bad in [
            "mssql://sa:hunter2@sql01/app",
            "mssql://sa@sql01/app?password=hunter2",
            "mssql://sa@/app",
            "mssql://sa@sql01:0/app",
            "mssql://sa@sql01:x/app",
            "mssql://sa@sql01\\/app",
            "mssql://sa@sql01/app?tx=maybe",
            "mssql://sa@sql01/app?encrypt=sometimes",
            "mssql://sa@sql01/app?bogus=1",
            "mssql://sa@sql01/app?linked_server=L2",
            "mssql://sa@sql01/app?hold=0s",
            "mssql://sa@sql01/app?hold=forever",
            "mssql://sa@sql01/a/b",
        ] {
            let e = MssqlTarget::from_url(bad).expect_err(bad).to_string();
            assert!(!e.contains("hunter2"), "{e}");
        }
    }

    #[test]
    fn display_is_canonical_and_reparses() {
        for u in [
            "mssql://sa@sql01/app?tx=local",
            "mssql://sa@sql01:14330/app?tx=distributed&encrypt=strict&trust_server_certificate=true&linked_server=L2",
            r"mssql://sa@sql01\INST/?tx=none",
            "mssql://CORP%5Cjoe@[::1]:1433/db?tx=local&encrypt=none",
            "mssql://sa@sql01/app?tx=local&hold=15m",
        ] {
            let t = url(u);
            assert_eq!(t.display(), u);
            assert_eq!(url(&t.display()), t);
        }
    }

    #[test]
    fn windows_auth_only_on_windows_builds() {
        let r = Auth::parse("windows");
        assert_eq!(r.is_ok(), cfg!(windows), "{r:?}");
        assert_eq!(Auth::parse("sql"), Ok(Auth::Sql));
        assert_eq!(Auth::parse("Kerberos"), Ok(Auth::Kerberos));
        assert_eq!(Auth::parse("negotiate"), Ok(Auth::Negotiate));
        assert!(Auth::parse("digest").is_err());
    }

    fn config(text: &str) -> Result<MssqlTarget, crate::config::ConfigError> {
        let cfg = crate::config::parse(text, std::path::Path::new("t.toml"))?;
        match &cfg.checks[0].target {
            crate::target::Target::Mssql(t) => Ok(t.clone()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn config_tables() {
        let t = config(
            "[[check]]\nname = \"a\"\nkind = \"mssql\"\nhost = \"sql01\"\ninstance = \"INST\"\nuser = \"probe\"\n\
             database = \"app\"\npassword_file = \"/etc/pw\"\nencrypt = \"strict\"\ntx = \"distributed\"\n\
             linked_server = \"L2\"\n",
        )
        .unwrap();
        assert!(t.needs_browser());
        assert_eq!(t.password, Some(PasswordSource::File("/etc/pw".into())));
        assert_eq!(
            (t.encrypt, t.tx, t.reverse_dns),
            (Encrypt::Strict, TxMode::Distributed, true)
        );
        assert_eq!(t.linked_server.as_deref(), Some("L2"));
        assert_eq!(t.cert, crate::hops::certificate::CertOptions::default());

        // The certificate settings (hop revocation, the expiry warning) from a config table,
        // and back out through the canonical URL.
        let t = config("[[check]]\nname = \"a\"\nkind = \"mssql\"\nhost = \"h\"\nuser = \"u\"\nrevocation = false\ncert_warn_days = 14\n").unwrap();
        assert!(!t.cert.revocation);
        assert_eq!(t.cert.warn_days, Some(14));
        assert!(
            t.display().ends_with("&revocation=off&cert_warn_days=14"),
            "{}",
            t.display()
        );
        assert_eq!(MssqlTarget::from_url(&t.display()).unwrap().cert, t.cert);

        let t = config("[[check]]\nname = \"a\"\nkind = \"mssql\"\nhost = \"sql01\"\nport = 14330\ninstance = \"I\"\nuser = \"u\"\n").unwrap();
        assert!(!t.needs_browser(), "an explicit port wins over the Browser");

        // Errors point at the offending value.
        let e = config("[[check]]\nname = \"a\"\nkind = \"mssql\"\nhost = \"h\"\nuser = \"u\"\nencrypt = \"sometimes\"\n").unwrap_err();
        assert_eq!((e.line, e.column), (6, 11), "{e}");
        let e = config(
            "[[check]]\nname = \"a\"\nkind = \"mssql\"\nhost = \"h\"\nuser = \"u\"\npassword_env = \"X\"\npassword_file = \"f\"\n",
        )
        .unwrap_err();
        assert_eq!(e.line, 6, "{e}");
        let t = config("[[check]]\nname = \"a\"\nkind = \"mssql\"\nhost = \"h\"\n").unwrap();
        assert!(t.credential_free && t.tx == TxMode::None, "{t:?}");
        let e = config("[[check]]\nname = \"a\"\nkind = \"mssql\"\nhost = \"h\"\ntx = \"local\"\n")
            .unwrap_err();
        assert!(e.message.contains("no user"), "{e}");
        let e = config("[[check]]\nname = \"a\"\nkind = \"mssql\"\nhost = \"h\"\nuser = \"u\"\niface = \"x\"\n").unwrap_err();
        assert_eq!(e.line, 6, "{e}");
    }
}
