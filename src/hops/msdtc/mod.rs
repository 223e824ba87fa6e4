//! Kind `msdtc`, hop `dtc_config`: this host's MSDTC configuration (the registry values behind
//! the Local DTC security dialog, the RPC port settings, the MSDTC CID) and the MSDTC service's
//! state, judged against the role the host plays (`msdtc://localhost?role=client|server|both`).
//! Through the agent (`peer --reverse msdtc://localhost`) the same hop runs on the far side and
//! the near side compares the two ([`compare_pair`]).
//!
//! Why only `localhost`: the values live in this host's registry and service control manager;
//! reading another host's would need remote registry access and administrator rights there,
//! which a zone probe neither has nor should ask for. The far side is read by the agent there.
//!
//! - `config`: the pure model ([`MsdtcConfig`]) and every rule ([`judge`], [`compare_pair`]);
//! - `read_windows`: the Windows reader (registry, SCM); other platforms skip the hop;
//! - `auth_path`: whether two MSDTCs can authenticate each other at their levels (domains,
//!   NTLM policy), cause `dtc_auth`;
//! - `cid`: hop `dtc_cid`, two hosts' MSDTC CIDs compared ([`compare_cids`]).

mod auth_path;
mod cid;
mod config;
#[cfg(windows)]
mod read_windows;

pub use cid::compare_cids;
pub use config::{
    compare_pair, config_hop, judge, parse_port_ranges, AuthLevel, Finding, MsdtcConfig, Role,
    RpcPortRange, ServiceStartType, ServiceState,
};

use crate::chain::RunContext;
use crate::check_table::{RawCheck, TargetError};
use crate::hops::kind::Kind;
use crate::hostport::TargetUrl;
use crate::model::{HopKind, HopResult};

/// Why the hop does not run on this build.
pub const SKIP_NOT_WINDOWS: &str = "needs the Windows build: reads this host's registry and \
the MSDTC service state (on Windows: dtcprobe.exe check msdtc://localhost)";

/// An `msdtc` check: `msdtc://localhost[?role=client|server|both]`, or config kind `msdtc` with
/// `host = "localhost"` and `role`.
#[derive(Debug, Clone, PartialEq)]
pub struct MsdtcTarget {
    pub role: Role,
}

const ONLY_LOCALHOST: &str = "an msdtc check reads this host's own registry and MSDTC service: \
use msdtc://localhost (for another host run `dtcprobe peer` with an agent there and \
`--reverse msdtc://localhost`)";

fn is_localhost(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
}

fn parse_role(text: &str) -> Result<Role, String> {
    Role::parse(text).ok_or_else(|| format!("role={text}: expected client, server or both"))
}

impl Kind for MsdtcTarget {
    const NAME: &'static str = "msdtc";
    const KEYS: &'static [&'static str] = &["role"];
    const AGENT_RUNS: bool = true;

    fn from_url(url: &TargetUrl) -> Result<Self, TargetError> {
        let parsed = url.url()?;
        let host = crate::hostport::url_host(&parsed).ok_or_else(|| url.invalid("no host"))?;
        if !is_localhost(&host) {
            return Err(url.invalid(format!("`{host}` is not this host: {ONLY_LOCALHOST}")));
        }
        if parsed.port().is_some() {
            return Err(url.invalid("an msdtc check has no port (msdtc://localhost?role=...)"));
        }
        if !matches!(parsed.path(), "" | "/") {
            return Err(url.invalid(format!(
                "unexpected path `{}` (msdtc://localhost?role=client|server|both)",
                parsed.path()
            )));
        }
        let mut role = Role::default();
        for (key, value) in parsed.query_pairs() {
            match key.as_ref() {
                "role" => role = parse_role(&value).map_err(|m| url.invalid(m))?,
                other => return Err(url.invalid(format!("unknown option `{other}` (known: role)"))),
            }
        }
        Ok(MsdtcTarget { role })
    }

    fn from_config(raw: &RawCheck, host: String) -> Result<Self, TargetError> {
        if !is_localhost(&host) {
            let offset = raw.host.as_ref().map_or(0, |h| h.span().start);
            return Err(TargetError::At {
                offset,
                message: format!("`{host}` is not this host: {ONLY_LOCALHOST}"),
            });
        }
        let role = match &raw.role {
            Some(r) => parse_role(r.get_ref()).map_err(|message| TargetError::At {
                offset: r.span().start,
                message,
            })?,
            None => Role::default(),
        };
        Ok(MsdtcTarget { role })
    }

    fn display(&self) -> String {
        match self.role {
            Role::Both => "msdtc://localhost".to_string(),
            role => format!("msdtc://localhost?role={}", role.as_str()),
        }
    }

    fn host(&self) -> &str {
        "localhost"
    }

    async fn run(&self, ctx: &RunContext) -> Vec<HopResult> {
        vec![dtc_config(self.role, ctx).await]
    }
}

#[cfg(not(windows))]
async fn dtc_config(_role: Role, _ctx: &RunContext) -> HopResult {
    HopResult::unsupported(HopKind::DtcConfig, SKIP_NOT_WINDOWS)
}

/// Reads on a blocking thread, bounded by the hop timeout: registry and SCM calls are local but
/// can stall (a hung SCM, a registry hive being loaded).
#[cfg(windows)]
async fn dtc_config(role: Role, ctx: &RunContext) -> HopResult {
    use crate::model::Cause;
    let started = std::time::Instant::now();
    let read = tokio::task::spawn_blocking(read_windows::read);
    let hop = match tokio::time::timeout(ctx.hop_timeout, read).await {
        Ok(Ok(mut config)) => {
            config.kerberos = kerberos_of(&config, ctx).await;
            config_hop(&config, role)
        }
        Ok(Err(e)) => HopResult::fail(
            HopKind::DtcConfig,
            Cause::Internal,
            format!("reading the MSDTC configuration failed: {e}"),
        ),
        Err(_) => HopResult::fail(
            HopKind::DtcConfig,
            Cause::Timeout,
            format!(
                "reading the registry and the service state took longer than {:?}",
                ctx.hop_timeout
            ),
        ),
    };
    hop.with_duration(started.elapsed())
}

/// Whether this host reaches a KDC of the domain its registry names (the authentication
/// path's input, [`auth_path`]): measured from here on TCP 88 ([`crate::hops::kdc::reach`]),
/// or why not.
pub async fn kerberos_of(
    config: &MsdtcConfig,
    ctx: &RunContext,
) -> crate::hops::kdc::reach::KdcReachability {
    use crate::hops::kdc::reach::{kdc_reachability, KdcReachability};
    match config.machine_domain().map(str::trim) {
        None => KdcReachability::not_checked(
            "the registry names no domain (Tcpip\\Parameters Domain and NV Domain absent)",
        ),
        Some("") => KdcReachability::not_checked("this host is in no domain (workgroup)"),
        Some(domain) => kdc_reachability(domain, ctx).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::Target;

    fn msdtc(url: &str) -> Result<MsdtcTarget, String> {
        match Target::from_url(url) {
            Ok(Target::Msdtc(t)) => Ok(t),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e.to_string()),
        }
    }

    #[test]
    fn urls() {
        assert_eq!(msdtc("msdtc://localhost").unwrap().role, Role::Both);
        assert_eq!(msdtc("msdtc://LOCALHOST/").unwrap().role, Role::Both);
        assert_eq!(
            msdtc("msdtc://localhost?role=client").unwrap().role,
            Role::Client
        );
        let t = msdtc("msdtc://localhost?role=Server").unwrap();
        assert_eq!(t.display(), "msdtc://localhost?role=server");
        assert_eq!(msdtc(&t.display()).unwrap(), t);
        for (bad, says) in [
            ("msdtc://sql01", "is not this host"),
            ("msdtc://127.0.0.1", "is not this host"),
            ("msdtc://localhost:135", "no port"),
            (
                "msdtc://localhost?role=web",
                "expected client, server or both",
            ),
            ("msdtc://localhost?rol=client", "unknown option"),
            ("msdtc://localhost/x", "unexpected path"),
            ("msdtc://u@localhost", "has no user"),
        ] {
            let e = msdtc(bad).expect_err(bad);
            assert!(e.contains(says), "{bad}: {e}");
        }
        assert!(msdtc("msdtc://sql01").unwrap_err().contains("--reverse"));
    }

    #[test]
    fn config_tables() {
        let parse = |body: &str| {
            let text = format!("[[check]]\nname = \"dtc\"\nkind = \"msdtc\"\n{body}");
            crate::config::parse(&text, std::path::Path::new("t.toml"))
        };
        let cfg = parse("host = \"localhost\"\nrole = \"client\"\n").unwrap();
        match &cfg.checks[0].target {
            Target::Msdtc(t) => assert_eq!(t.role, Role::Client),
            other => panic!("{other:?}"),
        }
        let e = parse("host = \"sql01\"\n").unwrap_err();
        assert_eq!((e.line, e.column), (4, 8), "{e}");
        assert!(e.message.contains("not this host"), "{e}");
        let e = parse("host = \"localhost\"\nrole = \"nope\"\n").unwrap_err();
        assert_eq!((e.line, e.column), (5, 8), "{e}");
        let e = parse("host = \"localhost\"\nport = 135\n").unwrap_err();
        assert!(e.message.contains("`port` does not apply"), "{e}");
        // `role` belongs to msdtc only.
        let text =
            "[[check]]\nname = \"t\"\nkind = \"tcp\"\nhost = \"h\"\nport = 1\nrole = \"client\"\n";
        let e = crate::config::parse(text, std::path::Path::new("t.toml")).unwrap_err();
        assert!(e.message.contains("`role` does not apply"), "{e}");
    }

    #[cfg(not(windows))]
    #[tokio::test]
    async fn other_platforms_skip_and_say_why() {
        let ctx = RunContext::new(
            std::time::Duration::from_secs(1),
            std::sync::Arc::new(crate::resolver::DnsResolver::from_system(
                std::time::Duration::from_secs(1),
            )),
            false,
        );
        let hops = MsdtcTarget { role: Role::Both }.run(&ctx).await;
        assert_eq!(hops.len(), 1);
        assert_eq!(hops[0].hop, HopKind::DtcConfig);
        assert_eq!(hops[0].status, crate::model::Status::Skip);
        assert!(hops[0].is_unsupported(), "{:?}", hops[0]);
        assert!(hops[0].detail.contains("needs the Windows build"));
    }
}
