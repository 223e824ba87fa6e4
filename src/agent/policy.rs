//! The agent's authorisation policy (pure): which reverse checks (and far-side probes) it runs
//! for an authenticated caller, and against which hosts. Apart from the server so that the
//! far-side probes ([`super::far_side::serve`]) apply the same policy without importing it.

use std::net::IpAddr;

use super::protocol::ReverseTarget;
use super::{url_port, AllowEntry};
use crate::check_table::TargetError;
use crate::target::Target;

/// Why the agent refuses a reverse check or a far-side probe (its text goes into the refused
/// check's hop, and the agent's log).
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("invalid target `{url}`: {source}")]
    InvalidUrl {
        url: String,
        source: url::ParseError,
    },
    #[error("cannot point `{url}` at the caller: {source}")]
    NotPointable {
        url: String,
        source: url::ParseError,
    },
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error(
        "`{kind}` checks with a user are not run by the agent (reverse checks may be: {kinds}; \
         and mssql/postgres with no user, the credential-free login)",
        kinds = reverse_kinds()
    )]
    KindNotRun { kind: &'static str },
    #[error(
        "`{target}`: the agent does not run held sessions (hold=); run `dtcprobe check` with \
         hold= on the far side instead"
    )]
    HeldSession { target: String },
    #[error("`{target}` is neither the caller ({caller}) nor in the agent's allow list")]
    NotAllowed { target: String, caller: IpAddr },
    #[error("a far-side probe never targets the caller")]
    ProbeToCaller,
    #[error("a far-side probe is a `tcp` connect, not `{kind}`")]
    ProbeNotTcp { kind: &'static str },
}

/// The check kinds the agent runs on request, for messages (`tcp, dns, epm, msdtc`): those whose
/// `Kind::AGENT_RUNS` says so in the registry. `msdtc` reads the agent host's own MSDTC
/// configuration (see [`authorize`] for why it needs no allow entry).
pub fn reverse_kinds() -> String {
    crate::hops::agent_kinds().collect::<Vec<_>>().join(", ")
}

/// Pure policy: may the agent run this reverse check for a caller at `caller`? Returns the target
/// to run (with the caller's address substituted when `to_caller`), or why not.
pub fn authorize(
    t: &ReverseTarget,
    caller: IpAddr,
    allow: &[AllowEntry],
) -> Result<Target, Refusal> {
    let mut url = url::Url::parse(&t.url).map_err(|source| Refusal::InvalidUrl {
        url: t.url.clone(),
        source,
    })?;
    if t.to_caller {
        let host = match caller {
            IpAddr::V4(a) => a.to_string(),
            IpAddr::V6(a) => format!("[{a}]"),
        };
        url.set_host(Some(&host))
            .map_err(|source| Refusal::NotPointable {
                url: t.url.clone(),
                source,
            })?;
    }
    let target = Target::from_url(url.as_str())?;
    // Network-level checks only: the agent never holds or asks for database credentials (and
    // must never wait on a password prompt).
    if !target.agent_runs() {
        return Err(Refusal::KindNotRun {
            kind: target.kind(),
        });
    }
    // A held session (`hold=DUR`, hop `idle`) would tie up the agent, and outlast the peer's
    // session timeout, for as long as the caller asks: not run by the agent (yet).
    if let Target::Tcp(t) = &target {
        if t.hold.is_some() {
            return Err(Refusal::HeldSession {
                target: target.display(),
            });
        }
    }
    // `msdtc://localhost` (its target type refuses every other host) reads this agent host's own
    // registry and MSDTC service state, nothing is written, and the caller chooses only the role
    // the config is judged for. The allow list is about where the caller may make the agent
    // connect; the only packets this check sends go where no caller can point them: DNS SRV
    // lookups of the domain in this host's own registry, through its own resolver, and TCP 88
    // to the KDCs they name (KDC reachability, issue 28: what every domain member does to log
    // on), so it is allowed for every authenticated caller. What it reveals (DTC security
    // settings, RPC ports, the MSDTC CID, the domain's KDCs) is what the caller needs to compare
    // both sides, and only a holder of the key can ask.
    if let Target::Msdtc(_) = &target {
        return Ok(target);
    }
    let host = target.host();
    let is_caller = host
        .parse::<IpAddr>()
        .map(|a| a.to_canonical() == caller)
        .unwrap_or(false);
    if is_caller {
        return Ok(target);
    }
    let port = url_port(&url);
    if allow.iter().any(|e| e.matches(host, port)) {
        return Ok(target);
    }
    Err(Refusal::NotAllowed {
        target: target.display(),
        caller,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt(url: &str, to_caller: bool) -> ReverseTarget {
        ReverseTarget {
            name: "n".into(),
            url: url.into(),
            to_caller,
        }
    }

    #[test]
    fn reverse_policy_table() {
        let caller: IpAddr = "198.18.0.1".parse().unwrap();
        let allow = vec![
            AllowEntry::parse("sql01:1433").unwrap(),
            AllowEntry::parse("dc01").unwrap(),
        ];
        // (target, to_caller, expected host when allowed)
        let cases: &[(&str, bool, Option<&str>)] = &[
            ("tcp://anything:135", true, Some("198.18.0.1")),
            ("tcp://198.18.0.1:22", false, Some("198.18.0.1")),
            ("tcp://198.18.0.2:22", false, None),
            ("tcp://sql01:1433", false, Some("sql01")),
            ("tcp://SQL01:1433", false, Some("sql01")),
            ("tcp://sql01:1434", false, None),
            ("tcp://dc01:389", false, Some("dc01")),
            ("dns://dc01", false, Some("dc01")),
            ("dns://evil", false, None),
            ("ftp://x:1", false, None),
            ("epm://caller", true, Some("198.18.0.1")),
            ("epm://sql01:1433", false, Some("sql01")),
            ("epm://sql01", false, None), // default port 135 is not the allowed 1433
            ("mssql://sa@sql01/master", false, None), // credentialed logins never run
            ("mssql://sa@caller/master", true, None),
            ("postgres://app@sql01:1433/db", false, None),
            // The credential-free login (no user): nothing to hold, run like a tcp check.
            ("mssql://sql01:1433/?login=probe", false, Some("sql01")),
            ("mssql://sql01", false, Some("sql01")), // default port 1433
            ("mssql://sql01:1434", false, None),     // not the allowed port
            ("postgres://sql01:1433", false, Some("sql01")),
            // Kind kdc: port 88 by default, bare entries admit it too.
            ("kdc://dc01?realm=CORP.EXAMPLE", false, Some("dc01")),
            ("kdc://sql01?realm=CORP.EXAMPLE", false, None),
            // Held sessions (hop `idle`) are not run by the agent, even towards an allowed port.
            ("tcp://sql01:1433?hold=15s", false, None),
            ("tcp://caller:135?hold=15s", true, None),
            // The agent's own MSDTC config: no connection anywhere, no allow entry needed.
            ("msdtc://localhost", false, Some("localhost")),
            ("msdtc://localhost?role=server", false, Some("localhost")),
            ("msdtc://caller", true, None), // never another host's, not even the caller's
            ("msdtc://sql01", false, None),
            ("not a url", false, None),
        ];
        for (url, to_caller, want) in cases {
            let got = authorize(&rt(url, *to_caller), caller, &allow);
            match (want, &got) {
                (Some(h), Ok(t)) => assert_eq!(t.host().to_ascii_lowercase(), *h, "{url}"),
                (None, Err(_)) => {}
                _ => panic!("{url} to_caller={to_caller}: want {want:?}, got {got:?}"),
            }
        }
        let v6: IpAddr = "2001:db8::7".parse().unwrap();
        let t = authorize(&rt("tcp://x:135", true), v6, &[]).unwrap();
        assert_eq!(t.host(), "2001:db8::7");
        // An IPv4 caller on a dual-stack socket shows up v4-mapped; the policy normalizes it.
        let mapped: IpAddr = "::ffff:198.18.0.1".parse().unwrap();
        assert!(authorize(&rt("tcp://198.18.0.1:1", false), mapped.to_canonical(), &[]).is_ok());
    }

    #[test]
    fn each_refusal_says_why() {
        let caller: IpAddr = "198.18.0.1".parse().unwrap();
        let refusal = |url: &str| authorize(&rt(url, false), caller, &[]).unwrap_err();
        assert!(matches!(
            refusal("mssql://sa@sql01/master"),
            Refusal::KindNotRun { kind: "mssql" }
        ));
        assert!(matches!(
            refusal("tcp://198.18.0.1:1433?hold=15s"),
            Refusal::HeldSession { .. }
        ));
        assert!(matches!(
            refusal("tcp://198.18.0.2:22"),
            Refusal::NotAllowed { .. }
        ));
        assert!(matches!(refusal("not a url"), Refusal::InvalidUrl { .. }));
        assert!(matches!(refusal("tcp://h1"), Refusal::Target(_)));
        let text = refusal("mssql://sa@sql01/master").to_string();
        assert!(text.contains("reverse checks may be: tcp"), "{text}");
    }
}
