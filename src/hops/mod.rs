//! The check kinds, and the shared steps they are built from.
//!
//! A kind is one folder, `hops/<kind>/`, that owns everything about it: its target type (parsed
//! from a URL and from a config table), the config keys it accepts, the hop chain it runs and the
//! hints it gives. It says so by implementing [`Kind`] (in [`kind`], below the registry, so a
//! kind never imports the module that lists it); the one registry below (`kinds!`) turns
//! the list of kinds into the [`Target`] enum, the scheme list, the key table and every dispatch.
//! Adding a kind is one folder plus its `pub mod` line and one registry line.
//!
//! Shared steps, not kinds: [`resolve`] (hop `resolve`), [`connect`] (TCP connect, its
//! classification, and the resolve-then-connect step every TCP kind starts with), [`idle`]
//! (hop `idle`: does the working session survive `hold=DUR` idle) and [`reset_origin`] (who sent
//! the reset that refused a connect).

pub mod certificate;
pub mod connect;
#[cfg(target_os = "linux")]
pub mod errqueue;
pub mod idle;
pub mod kdc;
pub mod kind;
pub mod path;
pub mod reset_origin;
pub mod resolve;
pub mod revocation;
pub mod route;
pub mod route_info;
#[cfg(windows)]
mod route_windows;
pub mod spn;
pub mod traced_connect;

pub use kind::{Kind, Retarget};

use crate::chain::RunContext;
use crate::check_table::{RawCheck, TargetError};
use crate::hostport::TargetUrl;
use crate::model::HopResult;
use crate::secret::PasswordSource;

/// What the registry knows of a kind without a target at hand.
#[derive(Debug, Clone, Copy)]
pub struct KindInfo {
    pub name: &'static str,
    pub aliases: &'static [&'static str],
    pub keys: &'static [&'static str],
    pub login: bool,
    pub service: Option<&'static str>,
    pub default_port: Option<u16>,
    pub agent_runs: bool,
    pub far_side_probed: bool,
    pub retarget: Retarget,
}

impl KindInfo {
    const fn of<K: Kind>() -> KindInfo {
        KindInfo {
            name: K::NAME,
            aliases: K::ALIASES,
            keys: K::KEYS,
            login: K::LOGIN,
            service: K::SERVICE,
            default_port: K::DEFAULT_PORT,
            agent_runs: K::AGENT_RUNS,
            far_side_probed: K::FAR_SIDE_PROBED,
            retarget: K::RETARGET,
        }
    }

    fn has_scheme(&self, scheme: &str) -> bool {
        self.name == scheme || self.aliases.contains(&scheme)
    }

    /// The kind named `name` (as in configs and reports).
    pub fn named(name: &str) -> Option<&'static KindInfo> {
        KINDS.iter().find(|k| k.name == name)
    }

    /// The kind whose URL scheme (name or alias) is `scheme`.
    pub fn of_scheme(scheme: &str) -> Option<&'static KindInfo> {
        KINDS.iter().find(|k| k.has_scheme(scheme))
    }
}

/// The kinds an agent runs for a peer ([`Kind::AGENT_RUNS`]), in registry order.
pub fn agent_kinds() -> impl Iterator<Item = &'static str> {
    KINDS.iter().filter(|k| k.agent_runs).map(|k| k.name)
}

// The kinds' folders. Declared here, outside the registry macro, because rustfmt (and so
// `cargo fmt --check` in CI) does not follow modules declared inside a macro call: declared in
// `kinds!`, none of the kinds' files was ever formatted or checked.
pub mod dns;
#[cfg(test)]
pub mod dummy;
pub mod epm;
pub mod msdtc;
pub mod mssql;
pub mod postgres;
pub mod tcp;

/// The registry: `module => Variant(target type)`, one line per kind (its folder is declared
/// above). It generates [`Target`], [`KINDS`] and the dispatch of every per-kind operation.
macro_rules! kinds {
    ($($(#[$only:meta])* $module:ident => $variant:ident($target:ty)),+ $(,)?) => {

        /// What a check points at: one variant per kind.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Target {
            $($(#[$only])* $variant($target),)+
        }

        /// Every kind, in registry order.
        pub const KINDS: &[KindInfo] = &[$($(#[$only])* KindInfo::of::<$target>(),)+];

        impl Target {
            /// The `kind` string in configs and reports.
            pub fn kind(&self) -> &'static str {
                match self {
                    $($(#[$only])* Target::$variant(_) => <$target as Kind>::NAME,)+
                }
            }

            /// A canonical, secret-free rendering for reports (`tcp://host:port`).
            pub fn display(&self) -> String {
                match self {
                    $($(#[$only])* Target::$variant(t) => Kind::display(t),)+
                }
            }

            pub fn host(&self) -> &str {
                match self {
                    $($(#[$only])* Target::$variant(t) => Kind::host(t),)+
                }
            }

            /// The kind's facts ([`KindInfo`]).
            pub fn info(&self) -> KindInfo {
                match self {
                    $($(#[$only])* Target::$variant(_) => KindInfo::of::<$target>(),)+
                }
            }

            /// Whether an agent runs this target for a peer ([`Kind::agent_runs`]).
            pub fn agent_runs(&self) -> bool {
                match self {
                    $($(#[$only])* Target::$variant(t) => Kind::agent_runs(t),)+
                }
            }

            /// The port the check connects to, if it has one.
            pub fn port(&self) -> Option<u16> {
                match self {
                    $($(#[$only])* Target::$variant(t) => Kind::port(t),)+
                }
            }

            /// Points the check at `host` (and `port`); only as its kind's [`Retarget`] allows.
            pub fn set_host(&mut self, host: String, port: Option<u16>) {
                match self {
                    $($(#[$only])* Target::$variant(t) => Kind::set_host(t, host, port),)+
                }
            }

            /// Runs the check's hop chain. Boxed: each kind's chain future is large (tiberius,
            /// DCE/RPC state), and a run keeps `--concurrency` of them alive at once; inline
            /// they would cost the largest one's size per check.
            pub async fn run(&self, ctx: &RunContext) -> Vec<HopResult> {
                match self {
                    $($(#[$only])* Target::$variant(t) => Box::pin(Kind::run(t, ctx)).await,)+
                }
            }

            fn set_password(&mut self, password: Option<PasswordSource>) {
                match self {
                    $($(#[$only])* Target::$variant(t) => Kind::set_password(t, password),)+
                }
            }

            fn from_url_of(kind: &str, url: &TargetUrl) -> Result<Target, TargetError> {
                $($(#[$only])* if kind == <$target as Kind>::NAME {
                    return <$target as Kind>::from_url(url).map(Target::$variant);
                })+
                unreachable!("`{kind}` comes from KINDS")
            }

            fn from_config_of(kind: &str, raw: &RawCheck, host: String) -> Result<Target, TargetError> {
                $($(#[$only])* if kind == <$target as Kind>::NAME {
                    return <$target as Kind>::from_config(raw, host).map(Target::$variant);
                })+
                unreachable!("`{kind}` comes from KINDS")
            }
        }
    };
}

kinds! {
    tcp => Tcp(tcp::TcpTarget),
    dns => Dns(dns::DnsTarget),
    mssql => Mssql(mssql::MssqlTarget),
    postgres => Postgres(postgres::PgTarget),
    epm => Epm(epm::EpmTarget),
    msdtc => Msdtc(msdtc::MsdtcTarget),
    kdc => Kdc(kdc::target::KdcTarget),
    // A kind for tests only (its folder is the whole of it): see `dummy/mod.rs`.
    #[cfg(test)]
    dummy => Dummy(dummy::DummyTarget),
}

/// The schemes this build understands, for messages: `tcp://, dns://, ...`.
pub fn schemes() -> String {
    KINDS
        .iter()
        .flat_map(|k| std::iter::once(k.name).chain(k.aliases.iter().copied()))
        .map(|s| format!("{s}://"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn kind_names() -> String {
    KINDS.iter().map(|k| k.name).collect::<Vec<_>>().join(", ")
}

/// The URL inside quotes a shell did not remove: cmd.exe treats `'` as an ordinary character, so
/// `'tcp://h:1'` (right in PowerShell and sh) reaches the program with its quotes.
fn shell_quoted(text: &str) -> Option<&str> {
    let inner = text.strip_prefix('\'')?;
    Some(inner.strip_suffix('\'').unwrap_or(inner))
}

impl Target {
    /// From an ad-hoc URL (`tcp://host:port`). Every scheme goes through the one
    /// [`TargetUrl`] parser: a password anywhere in it is refused, and the URL in any error is
    /// shown with the password masked.
    pub fn from_url(text: &str) -> Result<Target, TargetError> {
        if let Some(inner) = shell_quoted(text) {
            return Err(TargetError::InvalidUrl {
                url: crate::hostport::mask_url(text),
                message: format!(
                    "the quotes are part of the argument: remove the quotes (cmd.exe passes \
                     single quotes through; there type {inner} or \"{inner}\")",
                    inner = crate::hostport::mask_url(inner)
                ),
            });
        }
        let schemes = schemes();
        let url = TargetUrl::parse(text, &schemes)?;
        let Some(kind) = KindInfo::of_scheme(url.scheme()) else {
            return Err(TargetError::UnknownScheme {
                scheme: url.scheme().to_string(),
                url: crate::hostport::mask_url(text),
                expected: schemes,
            });
        };
        if let (Some(user), false) = (url.user(), kind.login) {
            return Err(url.invalid(format!(
                "a {} target has no user: remove `{user}@`",
                kind.name
            )));
        }
        Target::from_url_of(kind.name, &url)
    }

    /// From a config `[[check]]` table: `target = URL`, or `kind` with its keys.
    pub fn from_config(raw: &RawCheck) -> Result<Target, TargetError> {
        if let Some(url) = &raw.target {
            return from_config_url(raw, url);
        }
        let kind = raw.kind.as_ref().ok_or_else(|| TargetError::At {
            offset: 0,
            message: "check has neither `kind` nor `target`".into(),
        })?;
        let kind_offset = kind.span().start;
        let info = KindInfo::named(kind.get_ref()).ok_or_else(|| TargetError::At {
            offset: kind_offset,
            message: format!(
                "unknown kind `{}`, expected one of: {}",
                kind.get_ref(),
                kind_names()
            ),
        })?;
        // A key another kind uses is an error here rather than silently ignored: a `database`
        // on a `tcp` check is a mistake the user wants to hear about.
        if let Some((key, offset)) = raw
            .kind_specific_keys()
            .into_iter()
            .find(|(key, _)| !info.keys.contains(key))
        {
            return Err(TargetError::At {
                offset: offset.unwrap_or(kind_offset),
                message: format!("`{key}` does not apply to kind `{}`", info.name),
            });
        }
        let host = raw.host.as_ref().ok_or_else(|| TargetError::At {
            offset: kind_offset,
            message: "check has no `host`".into(),
        })?;
        if host.get_ref().trim().is_empty() {
            return Err(TargetError::At {
                offset: host.span().start,
                message: "`host` is empty".into(),
            });
        }
        Target::from_config_of(info.name, raw, host.get_ref().trim().to_string())
    }
}

/// `target = URL` in a config: everything but the password is in the URL, so the only keys
/// allowed beside it are the password sources, for kinds that log in.
fn from_config_url(raw: &RawCheck, url: &toml::Spanned<String>) -> Result<Target, TargetError> {
    let url_offset = url.span().start;
    if raw.kind.is_some() || raw.host.is_some() || raw.port.is_some() {
        return Err(TargetError::At {
            offset: url_offset,
            message: "use either `target = URL` or `kind`/`host`/`port`, not both".into(),
        });
    }
    let mut target = Target::from_url(url.get_ref()).map_err(|e| TargetError::At {
        offset: url_offset,
        message: e.to_string(),
    })?;
    let login = target.info().login;
    let beside_url: &[&str] = if login {
        &["password_env", "password_file"]
    } else {
        &[]
    };
    if let Some((key, offset)) = raw
        .kind_specific_keys()
        .into_iter()
        .find(|(key, _)| !beside_url.contains(key))
    {
        return Err(TargetError::At {
            offset: offset.unwrap_or(url_offset),
            message: format!(
                "`{key}` does not go with `target = URL`: put it in the URL, or use `kind`/`host` instead"
            ),
        });
    }
    let password = raw
        .password_source()
        .map_err(|(offset, message)| TargetError::At { offset, message })?;
    if login {
        target.set_password(password);
    }
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_config_key_belongs_to_some_kind() {
        // Each key RawCheck knows must be accepted by at least one kind, else it could never be
        // used; and every key a kind claims must be one RawCheck reads.
        let all = RawCheck {
            port: Some(toml::Spanned::new(0..0, 1)),
            reverse_dns: Some(true),
            hold: Some(toml::Spanned::new(0..0, String::new())),
            instance: Some(toml::Spanned::new(0..0, String::new())),
            database: Some(toml::Spanned::new(0..0, String::new())),
            user: Some(toml::Spanned::new(0..0, String::new())),
            password_env: Some(toml::Spanned::new(0..0, String::new())),
            password_file: Some(toml::Spanned::new(0..0, String::new())),
            auth: Some(toml::Spanned::new(0..0, String::new())),
            encrypt: Some(toml::Spanned::new(0..0, String::new())),
            trust_server_certificate: Some(true),
            tx: Some(toml::Spanned::new(0..0, String::new())),
            linked_server: Some(toml::Spanned::new(0..0, String::new())),
            sslmode: Some(toml::Spanned::new(0..0, String::new())),
            sslrootcert: Some(toml::Spanned::new(0..0, String::new())),
            iface: Some(toml::Spanned::new(0..0, String::new())),
            list_endpoints: Some(true),
            role: Some(toml::Spanned::new(0..0, String::new())),
            revocation: Some(true),
            cert_warn_days: Some(30),
            ..RawCheck::default()
        };
        let known: Vec<&str> = all.kind_specific_keys().map(|(k, _)| k).collect();
        for key in &known {
            assert!(
                KINDS.iter().any(|k| k.keys.contains(key)),
                "no kind accepts `{key}`"
            );
        }
        for kind in KINDS {
            for key in kind.keys {
                assert!(
                    known.contains(key),
                    "{} claims unknown key `{key}`",
                    kind.name
                );
            }
        }
    }

    #[test]
    fn registry_names_and_schemes() {
        // `dummy` is the test-only kind (dummy/mod.rs); a release build has the first seven.
        let names: Vec<&str> = KINDS.iter().map(|k| k.name).collect();
        assert_eq!(
            names,
            ["tcp", "dns", "mssql", "postgres", "epm", "msdtc", "kdc", "dummy"]
        );
        assert_eq!(
            schemes(),
            "tcp://, dns://, mssql://, postgres://, postgresql://, epm://, msdtc://, kdc://, dummy://"
        );
    }

    /// The facts the rest of the program reads from the registry, as they were when each place
    /// held its own copy (verdict.rs's services, the agent's default ports and REVERSE_KINDS,
    /// /probe's retargeting).
    #[test]
    fn the_kinds_facts() {
        let fact = |name: &str| {
            let k = KindInfo::named(name).unwrap();
            (k.service, k.default_port, k.agent_runs, k.retarget)
        };
        assert_eq!(fact("tcp"), (None, None, true, Retarget::HostPort));
        assert_eq!(fact("dns"), (None, None, true, Retarget::Host));
        assert_eq!(
            fact("mssql"),
            (Some("SQL Server"), Some(1433), false, Retarget::Never)
        );
        assert_eq!(
            fact("postgres"),
            (Some("PostgreSQL"), Some(5432), false, Retarget::Url)
        );
        assert_eq!(
            fact("epm"),
            (
                Some("RPC endpoint mapper"),
                Some(135),
                true,
                Retarget::HostPort
            )
        );
        assert_eq!(fact("msdtc"), (None, None, true, Retarget::Url));
        assert_eq!(
            fact("kdc"),
            (Some("Kerberos"), Some(88), true, Retarget::Url)
        );
        assert_eq!(
            KindInfo::of_scheme("postgresql").map(|k| k.name),
            Some("postgres")
        );
    }

    #[test]
    fn quotes_left_by_cmd_exe_are_named() {
        for text in [
            "'tcp://sql01:1433'",
            "'mssql://probe@sql01/app?tx=local'",
            "'dns://h",
        ] {
            let e = Target::from_url(text).expect_err(text);
            assert!(matches!(e, TargetError::InvalidUrl { .. }), "{text}: {e:?}");
            let shown = e.to_string();
            assert!(shown.contains("remove the quotes"), "{shown}");
            assert!(shown.contains("cmd.exe"), "{shown}");
            assert!(!shown.contains("unknown target scheme"), "{shown}");
        }
        let shown = Target::from_url("'tcp://sql01:1433'")
            .unwrap_err()
            .to_string();
        assert!(
            shown.contains("type tcp://sql01:1433 or \"tcp://sql01:1433\""),
            "{shown}"
        );
    }

    #[test]
    fn a_user_is_refused_by_kinds_without_a_login() {
        for text in ["tcp://u@h:1", "dns://u@h", "epm://u@h"] {
            let e = Target::from_url(text).expect_err(text).to_string();
            assert!(e.contains("has no user"), "{e}");
        }
        for text in ["mssql://u@h/db", "postgres://u@h/db", "postgresql://u@h/db"] {
            assert!(Target::from_url(text).is_ok(), "{text}");
        }
    }

    #[test]
    fn a_password_is_refused_by_every_kind_and_masked() {
        for text in [
            "tcp://u:secret@h:1",
            "dns://u:secret@h",
            "epm://u:secret@h",
            "mssql://u:secret@h/db",
            "postgres://u:secret@127.0.0.1/db",
            "postgres://u@h/db?password=secret",
            "ftp://u:secret@h",
        ] {
            let e = Target::from_url(text).expect_err(text);
            assert!(matches!(e, TargetError::InvalidUrl { .. }), "{text}: {e:?}");
            let shown = e.to_string();
            assert!(!shown.contains("secret"), "{shown}");
            assert!(shown.contains("***"), "{shown}");
        }
    }
}
