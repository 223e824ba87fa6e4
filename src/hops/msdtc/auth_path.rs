//! MSDTC's authentication path (issue 28, `dtc_auth`): from what the registry says, can two
//! MSDTCs authenticate each other at the level they are set to? Pure, so every combination has a
//! table test on any platform; [`super::config`] feeds it from the values the Windows reader read
//! and turns its answers into findings of hop `dtc_config`.
//!
//! What decides it (docs/msdtc.md, "Authentication path"):
//! - the level (MS-CMOM 3.3.1.2.3, read from AllowOnlySecureRpcCalls,
//!   FallbackToUnsecureRPCIfNecessary, TurnOffRpcSecurity): `Mutual` authenticates both ends,
//!   which needs Kerberos (both machines in one domain, or in domains that trust each other, and
//!   a KDC reachable); `Incoming` authenticates the caller, through Kerberos or else NTLM;
//!   `None` authenticates nobody (KB 899191 recommends it between untrusted domains and
//!   workgroups). MSDTC calls in both directions (the receiving side calls back), so both
//!   directions must authenticate.
//! - the machine's domain (Tcpip\Parameters `Domain`, else `NV Domain`: the primary DNS suffix;
//!   an empty value is a workgroup machine, an absent one is not judged);
//! - the NTLM restriction policy: Lsa\MSV1_0 `RestrictSendingNTLMTraffic` = 2 (deny all outgoing
//!   NTLM), `RestrictReceivingNTLMTraffic` = 2 (deny all incoming) or 1 (deny domain accounts,
//!   which MSDTC's machine account is on a domain member), and Lsa `LmCompatibilityLevel`: a
//!   sender at 0 to 2 answers with LM/NTLMv1, which a receiver at 5 refuses.
//!
//! Trusts between domains are not in either host's registry: two different domains are judged
//! as "Kerberos only across a trust", and the finding says so rather than guessing.

use serde::{Deserialize, Serialize};

/// MSDTC's RPC security level (MS-DTCO 3.2.1), as MS-CMOM 3.3.1.2.3 derives it from the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthLevel {
    /// "Mutual Authentication Required".
    Mutual,
    /// "Incoming Caller Authentication Required".
    Incoming,
    /// "No Authentication Required".
    None,
}

impl AuthLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthLevel::Mutual => "mutual",
            AuthLevel::Incoming => "incoming",
            AuthLevel::None => "none",
        }
    }

    /// The radio button in the Local DTC security dialog.
    pub(super) fn dialog_name(self) -> &'static str {
        match self {
            AuthLevel::Mutual => "Mutual Authentication Required",
            AuthLevel::Incoming => "Incoming Caller Authentication Required",
            AuthLevel::None => "No Authentication Required",
        }
    }

    fn authenticates(self) -> bool {
        matches!(self, AuthLevel::Mutual | AuthLevel::Incoming)
    }
}

/// One host's facts that decide its MSDTC's authentication, as read from its registry.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct AuthSide<'a> {
    pub level: Option<AuthLevel>,
    /// The machine's domain: `Some("")` a workgroup machine, `None` not read (not judged).
    pub domain: Option<&'a str>,
    pub lm_compatibility_level: Option<u32>,
    pub restrict_sending_ntlm: Option<u32>,
    pub restrict_receiving_ntlm: Option<u32>,
}

/// Whether this zone reaches a KDC of the domain (hop `kdc` of an `auth=kerberos` check
/// measures it; the registry audit alone does not know, and passes `Unknown`: a KDC answering
/// changes nothing the rules would say without one known to be cut off).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KdcReach {
    Unreachable,
    Unknown,
}

/// Which host a finding is about, for its wording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    ThisHost,
    AgentHost,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::ThisHost => "this host",
            Side::AgentHost => "the agent's host",
        }
    }

    fn other(self) -> Side {
        match self {
            Side::ThisHost => Side::AgentHost,
            Side::AgentHost => Side::ThisHost,
        }
    }
}

/// A predicted authentication failure: the setting to change, on which side, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthFinding {
    pub setting: &'static str,
    pub side: Side,
    pub detail: String,
    pub hint: String,
}

/// Whether the two hosts can use Kerberos between them.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kerberos {
    /// Both in the same domain, and no sign the KDC is out of reach.
    Yes,
    /// Different domains: only across a trust, which the registry does not show.
    AcrossTrust(String, String),
    /// A side in no domain (workgroup).
    NoDomain(Side),
    /// No KDC reachable from this zone.
    NoKdc,
    /// A domain was not read: not judged.
    Unknown,
}

fn normalize(domain: &str) -> String {
    domain.trim().trim_end_matches('.').to_ascii_lowercase()
}

fn kerberos(near: &AuthSide, far: &AuthSide, kdc: KdcReach) -> Kerberos {
    let (Some(a), Some(b)) = (near.domain, far.domain) else {
        return Kerberos::Unknown;
    };
    let (a, b) = (normalize(a), normalize(b));
    if a.is_empty() {
        return Kerberos::NoDomain(Side::ThisHost);
    }
    if b.is_empty() {
        return Kerberos::NoDomain(Side::AgentHost);
    }
    if kdc == KdcReach::Unreachable {
        return Kerberos::NoKdc;
    }
    if a == b {
        Kerberos::Yes
    } else {
        Kerberos::AcrossTrust(a, b)
    }
}

/// Why NTLM from `sender` to `receiver` is refused, as (setting, side it is on, why); `None`
/// when nothing read refuses it.
fn ntlm_blocked(
    sender: (&AuthSide, Side),
    receiver: (&AuthSide, Side),
) -> Option<(&'static str, Side, String)> {
    let (s, s_side) = sender;
    let (r, r_side) = receiver;
    if s.restrict_sending_ntlm == Some(2) {
        return Some((
            "RestrictSendingNTLMTraffic",
            s_side,
            format!(
                "{} denies all outgoing NTLM (RestrictSendingNTLMTraffic = 2)",
                s_side.name()
            ),
        ));
    }
    if r.restrict_receiving_ntlm == Some(2) {
        return Some((
            "RestrictReceivingNTLMTraffic",
            r_side,
            format!(
                "{} denies all incoming NTLM (RestrictReceivingNTLMTraffic = 2)",
                r_side.name()
            ),
        ));
    }
    let sender_in_domain = s.domain.is_some_and(|d| !normalize(d).is_empty());
    if r.restrict_receiving_ntlm == Some(1) && sender_in_domain {
        return Some((
            "RestrictReceivingNTLMTraffic",
            r_side,
            format!(
                "{} denies incoming NTLM from domain accounts (RestrictReceivingNTLMTraffic = 1), \
                 and MSDTC on {} calls as its domain machine account",
                r_side.name(),
                s_side.name()
            ),
        ));
    }
    if matches!(s.lm_compatibility_level, Some(0..=2)) && r.lm_compatibility_level == Some(5) {
        return Some((
            "LmCompatibilityLevel",
            s_side,
            format!(
                "{} answers NTLM with LM/NTLMv1 (LmCompatibilityLevel = {}), which {} refuses \
                 (LmCompatibilityLevel = 5: NTLMv2 only)",
                s_side.name(),
                s.lm_compatibility_level.unwrap_or_default(),
                r_side.name()
            ),
        ));
    }
    None
}

fn hint_level(side: Side, level: &str) -> String {
    format!(
        "on {}: Component Services (dcomcnfg) > Computers > My Computer > Distributed \
         Transaction Coordinator > Local DTC > Properties > Security > `{level}`; or PowerShell \
         `Set-DtcNetworkSetting -DtcName Local -AuthenticationLevel {}`, then restart MSDTC",
        side.name(),
        if level.starts_with("Incoming") {
            "Incoming"
        } else {
            "NoAuth"
        }
    )
}

fn hint_ntlm(setting: &str, side: Side) -> String {
    let policy = match setting {
        "RestrictSendingNTLMTraffic" => {
            "`Network security: Restrict NTLM: Outgoing NTLM traffic to remote servers` to \
             `Allow all` or `Audit all`, or add the other host to `Add remote server exceptions \
             for NTLM authentication` (HKLM\\SYSTEM\\CurrentControlSet\\Control\\Lsa\\MSV1_0 \
             RestrictSendingNTLMTraffic, ClientAllowedNTLMServers)"
        }
        "RestrictReceivingNTLMTraffic" => {
            "`Network security: Restrict NTLM: Incoming NTLM traffic` to `Allow all` \
             (HKLM\\SYSTEM\\CurrentControlSet\\Control\\Lsa\\MSV1_0 RestrictReceivingNTLMTraffic = 0)"
        }
        _ => {
            "`Network security: LAN Manager authentication level` to `Send NTLMv2 response \
             only` (HKLM\\SYSTEM\\CurrentControlSet\\Control\\Lsa LmCompatibilityLevel = 3 or \
             higher)"
        }
    };
    format!(
        "on {}: set the Group Policy (Computer Configuration > Windows Settings > Security \
         Settings > Local Policies > Security Options) {policy}; or make Kerberos possible \
         between the two hosts (same or trusting domains, TCP/UDP 88 to a domain controller \
         open); or set both MSDTCs to `No Authentication Required`",
        side.name()
    )
}

/// The two MSDTCs of a `peer` run: `near` is this host, `far` the agent's.
pub fn judge_pair(near: &AuthSide, far: &AuthSide, kdc: KdcReach) -> Vec<AuthFinding> {
    let mut found = Vec::new();
    let (Some(a), Some(b)) = (near.level, far.level) else {
        return found;
    };
    // Only when both authenticate: mutual against none is `dtc_auth_mismatch` already, and an
    // incoming side accepts a none side's unauthenticated calls.
    if !(a.authenticates() && b.authenticates()) {
        return found;
    }
    let krb = kerberos(near, far, kdc);
    let why_no_kerberos = match &krb {
        Kerberos::Yes | Kerberos::Unknown => None,
        Kerberos::NoDomain(side) => Some(format!("{} is in no domain (workgroup)", side.name())),
        Kerberos::NoKdc => Some("no KDC is reachable from this zone".to_string()),
        Kerberos::AcrossTrust(x, y) => Some(format!(
            "this host is in domain {x}, the agent's host in {y}: Kerberos only if the two \
             domains trust each other (dtcprobe cannot see trusts)"
        )),
    };
    let Some(why) = why_no_kerberos else {
        return found;
    };
    for (side, level) in [(Side::ThisHost, a), (Side::AgentHost, b)] {
        if level == AuthLevel::Mutual {
            found.push(AuthFinding {
                setting: "AllowOnlySecureRpcCalls",
                side,
                detail: format!(
                    "MSDTC on {} requires Mutual Authentication, which needs Kerberos, and {why}",
                    side.name()
                ),
                hint: hint_level(side, "Incoming Caller Authentication Required"),
            });
        }
    }
    // Without Kerberos the callers authenticate with NTLM, in both directions.
    for (sender, receiver) in [
        ((near, Side::ThisHost), (far, Side::AgentHost)),
        ((far, Side::AgentHost), (near, Side::ThisHost)),
    ] {
        if let Some((setting, side, reason)) = ntlm_blocked(sender, receiver) {
            if found.iter().any(|f| f.setting == setting && f.side == side) {
                continue;
            }
            found.push(AuthFinding {
                setting,
                side,
                detail: format!(
                    "MSDTC authenticates callers ({} on this host, {} on the agent's host) and \
                     {why}, so NTLM must carry it from {} to {}, but {reason}",
                    a.as_str(),
                    b.as_str(),
                    sender.1.name(),
                    sender.1.other().name()
                ),
                hint: hint_ntlm(setting, side),
            });
        }
    }
    found
}

/// One host alone (hop `dtc_config` outside a `peer` run): what its own settings rule out
/// whatever the partner, for a machine in no domain (no Kerberos at all).
pub fn judge_host(host: &AuthSide) -> Vec<AuthFinding> {
    let mut found = Vec::new();
    let (Some(level), Some(domain)) = (host.level, host.domain) else {
        return found;
    };
    if !normalize(domain).is_empty() || !level.authenticates() {
        return found;
    }
    let side = Side::ThisHost;
    if level == AuthLevel::Mutual {
        found.push(AuthFinding {
            setting: "AllowOnlySecureRpcCalls",
            side,
            detail: "MSDTC requires Mutual Authentication, which needs Kerberos, and this host \
                     is in no domain (workgroup): every partner's call fails"
                .into(),
            hint: hint_level(side, "No Authentication Required"),
        });
    }
    for (setting, value, what) in [
        (
            "RestrictSendingNTLMTraffic",
            host.restrict_sending_ntlm,
            "outgoing",
        ),
        (
            "RestrictReceivingNTLMTraffic",
            host.restrict_receiving_ntlm,
            "incoming",
        ),
    ] {
        if value == Some(2) {
            found.push(AuthFinding {
                setting,
                side,
                detail: format!(
                    "MSDTC authenticates callers ({}), this host is in no domain (no Kerberos) \
                     and denies all {what} NTLM ({setting} = 2)",
                    level.as_str()
                ),
                hint: hint_ntlm(setting, side),
            });
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use AuthLevel::{Incoming, Mutual, None as NoAuth};

    fn side(level: AuthLevel, domain: &str) -> AuthSide<'_> {
        AuthSide {
            level: Some(level),
            domain: Some(domain),
            ..AuthSide::default()
        }
    }

    /// The settings a judgement names, each with its side.
    type Named<'a> = &'a [(&'a str, Side)];

    fn settings(found: &[AuthFinding]) -> Vec<(&'static str, Side)> {
        found.iter().map(|f| (f.setting, f.side)).collect()
    }

    #[test]
    fn levels_against_domains() {
        use Side::{AgentHost as There, ThisHost as Here};
        let corp = "corp.example";
        let other = "branch.example";
        // (near level, near domain, far level, far domain, expected (setting, side)).
        let cases: &[(AuthLevel, &str, AuthLevel, &str, Named)] = &[
            // One domain: Kerberos; every level combination is fine.
            (Mutual, corp, Mutual, corp, &[]),
            (Mutual, corp, Incoming, "CORP.example.", &[]),
            (Incoming, corp, Incoming, corp, &[]),
            // Different domains: mutual only across a trust, named on each mutual side.
            (
                Mutual,
                corp,
                Mutual,
                other,
                &[
                    ("AllowOnlySecureRpcCalls", Here),
                    ("AllowOnlySecureRpcCalls", There),
                ],
            ),
            (
                Incoming,
                corp,
                Mutual,
                other,
                &[("AllowOnlySecureRpcCalls", There)],
            ),
            // Incoming on both: NTLM carries it, nothing restricts NTLM here.
            (Incoming, corp, Incoming, other, &[]),
            // A workgroup side: no Kerberos at all.
            (
                Mutual,
                "",
                Incoming,
                corp,
                &[("AllowOnlySecureRpcCalls", Here)],
            ),
            (Incoming, corp, Incoming, "", &[]),
            // No authentication on a side: not this rule (mutual/none is dtc_auth_mismatch).
            (Mutual, corp, NoAuth, other, &[]),
            (NoAuth, "", NoAuth, corp, &[]),
            (Incoming, "", NoAuth, other, &[]),
        ];
        for (a, da, b, db, want) in cases {
            let got = judge_pair(&side(*a, da), &side(*b, db), KdcReach::Unknown);
            assert_eq!(
                settings(&got),
                want.to_vec(),
                "{a:?}@{da} / {b:?}@{db}: {got:#?}"
            );
        }
    }

    #[test]
    fn the_detail_names_both_domains_and_the_trust() {
        let got = judge_pair(
            &side(Mutual, "corp.example"),
            &side(Incoming, "Branch.Example"),
            KdcReach::Unknown,
        );
        assert_eq!(got.len(), 1);
        let d = &got[0].detail;
        assert!(
            d.contains("domain corp.example") && d.contains("branch.example"),
            "{d}"
        );
        assert!(d.contains("trust"), "{d}");
        assert!(got[0].hint.starts_with("on this host:"), "{}", got[0].hint);
        assert!(got[0].hint.contains("-AuthenticationLevel Incoming"));
    }

    #[test]
    fn ntlm_restricted_where_kerberos_cannot_be_had() {
        let corp = "corp.example";
        // (near, far, kdc, expected).
        let restricted_send = AuthSide {
            restrict_sending_ntlm: Some(2),
            ..side(Incoming, corp)
        };
        let restricted_receive_all = AuthSide {
            restrict_receiving_ntlm: Some(2),
            ..side(Incoming, corp)
        };
        let restricted_receive_domain = AuthSide {
            restrict_receiving_ntlm: Some(1),
            ..side(Incoming, "other.example")
        };
        let audit_only = AuthSide {
            restrict_sending_ntlm: Some(1),
            ..side(Incoming, corp)
        };
        let plain = side(Incoming, corp);
        type Case<'a> = (AuthSide<'a>, AuthSide<'a>, KdcReach, Vec<(&'a str, Side)>);
        let cases: Vec<Case> = vec![
            // Kerberos works (one domain, the KDC not known to be cut off): no finding.
            (restricted_send, plain, KdcReach::Unknown, vec![]),
            // No KDC reachable: NTLM must carry it, and this host denies sending it.
            (
                restricted_send,
                plain,
                KdcReach::Unreachable,
                vec![("RestrictSendingNTLMTraffic", Side::ThisHost)],
            ),
            // The agent's host denies receiving (all accounts): named on the agent's side.
            (
                plain,
                restricted_receive_all,
                KdcReach::Unreachable,
                vec![("RestrictReceivingNTLMTraffic", Side::AgentHost)],
            ),
            // Different domains (no trust known): the agent denies domain accounts; this host
            // is a domain member, so its machine account is refused.
            (
                plain,
                restricted_receive_domain,
                KdcReach::Unknown,
                vec![("RestrictReceivingNTLMTraffic", Side::AgentHost)],
            ),
            // Auditing only (1) blocks nothing.
            (audit_only, plain, KdcReach::Unreachable, vec![]),
            // The callback direction: the agent sends to this host, which denies receiving.
            (
                restricted_receive_all,
                plain,
                KdcReach::Unreachable,
                vec![("RestrictReceivingNTLMTraffic", Side::ThisHost)],
            ),
        ];
        for (near, far, kdc, want) in cases {
            let got = judge_pair(&near, &far, kdc);
            assert_eq!(settings(&got), want, "{near:?} / {far:?} {kdc:?}: {got:#?}");
        }
        // Mutual with no KDC: the level and the NTLM restriction, each on its side.
        let got = judge_pair(
            &AuthSide {
                level: Some(Mutual),
                ..restricted_send
            },
            &plain,
            KdcReach::Unreachable,
        );
        assert_eq!(
            settings(&got),
            vec![
                ("AllowOnlySecureRpcCalls", Side::ThisHost),
                ("RestrictSendingNTLMTraffic", Side::ThisHost)
            ]
        );
        assert!(got[0].detail.contains("no KDC is reachable"), "{got:#?}");
    }

    #[test]
    fn lm_compatibility_levels_that_cannot_meet() {
        let level = |l: Option<u32>, domain| AuthSide {
            lm_compatibility_level: l,
            ..side(Incoming, domain)
        };
        // (sender level, receiver level, refused?) across a workgroup (NTLM only).
        let cases = [
            (Some(2), Some(5), true),
            (Some(0), Some(5), true),
            (Some(3), Some(5), false),
            (Some(2), Some(4), false),
            (None, Some(5), false),
            (Some(1), None, false),
        ];
        for (s, r, refused) in cases {
            let got = judge_pair(&level(s, ""), &level(r, "corp.example"), KdcReach::Unknown);
            let lm: Vec<_> = got
                .iter()
                .filter(|f| f.setting == "LmCompatibilityLevel")
                .collect();
            assert_eq!(!lm.is_empty(), refused, "{s:?} -> {r:?}: {got:#?}");
            if refused {
                assert_eq!(lm[0].side, Side::ThisHost);
                assert!(lm[0].hint.contains("LmCompatibilityLevel = 3"));
            }
        }
    }

    #[test]
    fn unknown_domains_or_levels_are_not_judged() {
        let unknown = AuthSide {
            level: Some(Mutual),
            restrict_sending_ntlm: Some(2),
            ..AuthSide::default()
        };
        assert!(judge_pair(&unknown, &side(Mutual, "a.example"), KdcReach::Unreachable).is_empty());
        let no_level = AuthSide {
            level: None,
            ..side(Mutual, "")
        };
        assert!(judge_pair(&no_level, &side(Mutual, "a.example"), KdcReach::Unknown).is_empty());
        assert!(judge_host(&unknown).is_empty());
    }

    #[test]
    fn one_host_alone() {
        // (level, domain, sending, receiving, expected settings).
        type Case<'a> = (AuthLevel, &'a str, Option<u32>, Option<u32>, &'a [&'a str]);
        let cases: &[Case] = &[
            (Mutual, "corp.example", Some(2), Some(2), &[]),
            (Mutual, "", None, None, &["AllowOnlySecureRpcCalls"]),
            (Incoming, "", None, None, &[]),
            (Incoming, "", Some(2), None, &["RestrictSendingNTLMTraffic"]),
            (
                Mutual,
                "",
                None,
                Some(2),
                &["AllowOnlySecureRpcCalls", "RestrictReceivingNTLMTraffic"],
            ),
            (Incoming, "", Some(1), Some(1), &[]),
            (NoAuth, "", Some(2), Some(2), &[]),
        ];
        for (level, domain, send, receive, want) in cases {
            let host = AuthSide {
                restrict_sending_ntlm: *send,
                restrict_receiving_ntlm: *receive,
                ..side(*level, domain)
            };
            let got: Vec<&str> = judge_host(&host).iter().map(|f| f.setting).collect();
            assert_eq!(&got, want, "{host:?}");
        }
    }
}
