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
//! - whether each host reaches a KDC of its domain on TCP 88 ([`KdcReach`], measured by
//!   [`crate::hops::kdc::reach`] where `dtc_config` runs): a caller needs its own KDC for the
//!   ticket of the host it calls, so a side cut off from its KDC makes its calls by NTLM or not
//!   at all, and the finding names the blocked DC and port.
//!
//! Trusts between domains are in neither host's registry, and seeing one takes a domain
//! controller and credentials: two different domains are judged as "Kerberos only across a
//! trust", and the finding names the command that shows it (`nltest /domain_trusts`) rather
//! than guessing. One domain named under the other is said, never taken as proof.

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

/// One host's facts that decide its MSDTC's authentication, as read from its registry, plus
/// whether it reaches a KDC of its domain (measured: [`crate::hops::kdc::reach`]).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct AuthSide<'a> {
    pub level: Option<AuthLevel>,
    /// The machine's domain: `Some("")` a workgroup machine, `None` not read (not judged).
    pub domain: Option<&'a str>,
    pub lm_compatibility_level: Option<u32>,
    pub restrict_sending_ntlm: Option<u32>,
    pub restrict_receiving_ntlm: Option<u32>,
    pub kdc: KdcReach<'a>,
}

/// Whether this host reaches a KDC of its domain on TCP 88. A caller needs its own KDC for the
/// service ticket of the host it calls (the receiver only needs its own key), so each side's
/// fact decides the calls that side makes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum KdcReach<'a> {
    /// A KDC answered.
    Reachable,
    /// KDCs were found and none answered: which, and how they were blocked, in words.
    Unreachable(&'a str),
    /// Not measured (no domain, no KDC found in DNS, an older agent): judged as before any
    /// measurement, Kerberos assumed where the domains allow it.
    #[default]
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

/// Why calls from one side to the other cannot use Kerberos.
#[derive(Debug, Clone, PartialEq, Eq)]
enum NoKerberos {
    /// A side in no domain (workgroup).
    NoDomain(Side),
    /// Different domains: only across a trust, which neither registry shows.
    AcrossTrust(String, String),
    /// The calling side reaches no KDC of its domain (which KDCs, how blocked).
    NoKdc(Side, String, String),
}

impl NoKerberos {
    fn words(&self) -> String {
        match self {
            NoKerberos::NoDomain(side) => format!("{} is in no domain (workgroup)", side.name()),
            NoKerberos::NoKdc(side, domain, blocked) => format!(
                "{} reaches no KDC of its domain {domain}, so it gets no Kerberos ticket for its \
                 calls ({blocked})",
                side.name()
            ),
            NoKerberos::AcrossTrust(x, y) => format!(
                "this host is in domain {x}, the agent's host in {y}: Kerberos only if the two \
                 domains trust each other{}; a trust is in neither registry and seeing it takes \
                 a domain controller and credentials, so dtcprobe does not judge it: check with \
                 `nltest /domain_trusts /all_trusts` on this host (is {y} listed?) or \
                 `Get-ADTrust -Filter *` on a domain controller",
                parent_note(x, y)
            ),
        }
    }

    /// The firewall change that brings Kerberos back, when that is the reason.
    fn firewall_hint(&self) -> Option<String> {
        match self {
            NoKerberos::NoKdc(side, domain, blocked) => Some(format!(
                "or open TCP and UDP 88 (Kerberos) from {} to the domain controllers of \
                 {domain} ({blocked}; the rows of --firewall-request)",
                side.name()
            )),
            _ => None,
        }
    }
}

/// One domain named under the other is not proof of a trust (a separate forest may take such a
/// name), but worth saying: inside one forest a parent-child trust exists by itself.
fn parent_note(x: &str, y: &str) -> String {
    let under = |child: &str, parent: &str| child.ends_with(&format!(".{parent}"));
    let (child, parent) = if under(x, y) {
        (x, y)
    } else if under(y, x) {
        (y, x)
    } else {
        return String::new();
    };
    format!(
        " ({child} is named under {parent}: if it is a child domain in the same forest the \
         two-way parent-child trust exists by itself, but a separate forest can carry such a \
         name too)"
    )
}

fn normalize(domain: &str) -> String {
    domain.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// Whether calls from `sender` to `receiver` can use Kerberos: `Ok(true)` yes (or assumed:
/// nothing measured against it), `Ok(false)` not judged (a domain not read), `Err` why not.
fn kerberos_from(
    sender: (&AuthSide, Side),
    receiver: (&AuthSide, Side),
) -> Result<bool, NoKerberos> {
    let ((s, s_side), (r, r_side)) = (sender, receiver);
    let (Some(a), Some(b)) = (s.domain, r.domain) else {
        return Ok(false);
    };
    let (a, b) = (normalize(a), normalize(b));
    for (domain, side) in [(&a, s_side), (&b, r_side)] {
        if domain.is_empty() {
            return Err(NoKerberos::NoDomain(side));
        }
    }
    if let KdcReach::Unreachable(blocked) = s.kdc {
        return Err(NoKerberos::NoKdc(s_side, a, blocked.to_string()));
    }
    if a != b {
        let (x, y) = if s_side == Side::ThisHost {
            (a, b)
        } else {
            (b, a)
        };
        return Err(NoKerberos::AcrossTrust(x, y));
    }
    Ok(true)
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

/// The two MSDTCs of a `peer` run: `near` is this host, `far` the agent's; each side's
/// [`AuthSide::kdc`] as that side measured it.
pub fn judge_pair(near: &AuthSide, far: &AuthSide) -> Vec<AuthFinding> {
    let mut found = Vec::new();
    let (Some(a), Some(b)) = (near.level, far.level) else {
        return found;
    };
    // Only when both authenticate: mutual against none is `dtc_auth_mismatch` already, and an
    // incoming side accepts a none side's unauthenticated calls.
    if !(a.authenticates() && b.authenticates()) {
        return found;
    }
    let directions = [
        ((near, Side::ThisHost), (far, Side::AgentHost)),
        ((far, Side::AgentHost), (near, Side::ThisHost)),
    ];
    // Why each direction has no Kerberos (`None`: it has, or it is not judged).
    let no_kerberos: Vec<Option<NoKerberos>> = directions
        .iter()
        .map(|(s, r)| kerberos_from(*s, *r).err())
        .collect();
    let mut reasons: Vec<&NoKerberos> = Vec::new();
    for why in no_kerberos.iter().flatten() {
        if !reasons.contains(&why) {
            reasons.push(why);
        }
    }
    if reasons.is_empty() {
        return found;
    }
    let why_all = reasons
        .iter()
        .map(|r| r.words())
        .collect::<Vec<_>>()
        .join("; and ");
    let firewall: Vec<String> = reasons.iter().filter_map(|r| r.firewall_hint()).collect();
    // Mutual authenticates both ends of every call, both ways: Kerberos in each direction.
    for (side, level) in [(Side::ThisHost, a), (Side::AgentHost, b)] {
        if level == AuthLevel::Mutual {
            let mut hint = hint_level(side, "Incoming Caller Authentication Required");
            for f in &firewall {
                hint.push_str("; ");
                hint.push_str(f);
            }
            found.push(AuthFinding {
                setting: "AllowOnlySecureRpcCalls",
                side,
                detail: format!(
                    "MSDTC on {} requires Mutual Authentication, which needs Kerberos, and {why_all}",
                    side.name()
                ),
                hint,
            });
        }
    }
    // Without Kerberos the callers authenticate with NTLM, in the direction that has none.
    for ((sender, receiver), why) in directions.iter().zip(&no_kerberos) {
        let Some(why) = why else { continue };
        if let Some((setting, side, reason)) = ntlm_blocked(*sender, *receiver) {
            if found.iter().any(|f| f.setting == setting && f.side == side) {
                continue;
            }
            let mut hint = hint_ntlm(setting, side);
            if let Some(f) = why.firewall_hint() {
                hint.push_str("; ");
                hint.push_str(&f);
            }
            found.push(AuthFinding {
                setting,
                side,
                detail: format!(
                    "MSDTC authenticates callers ({} on this host, {} on the agent's host) and \
                     {}, so NTLM must carry it from {} to {}, but {reason}",
                    a.as_str(),
                    b.as_str(),
                    why.words(),
                    sender.1.name(),
                    sender.1.other().name()
                ),
                hint,
            });
        }
    }
    found
}

/// One host alone (hop `dtc_config` outside a `peer` run): what its own settings rule out
/// whatever the partner: for a machine in no domain (no Kerberos at all), or a domain member
/// that reaches no KDC (no Kerberos for its own calls: MSDTC calls its partners both ways).
pub fn judge_host(host: &AuthSide) -> Vec<AuthFinding> {
    let mut found = Vec::new();
    let (Some(level), Some(domain)) = (host.level, host.domain) else {
        return found;
    };
    if !level.authenticates() {
        return found;
    }
    let side = Side::ThisHost;
    let domain = normalize(domain);
    let (why, firewall) = if domain.is_empty() {
        ("this host is in no domain (workgroup)".to_string(), None)
    } else if let KdcReach::Unreachable(blocked) = host.kdc {
        let no_kdc = NoKerberos::NoKdc(side, domain.clone(), blocked.to_string());
        (no_kdc.words(), no_kdc.firewall_hint())
    } else {
        return found;
    };
    let with_firewall = |mut hint: String| {
        if let Some(f) = &firewall {
            hint.push_str("; ");
            hint.push_str(f);
        }
        hint
    };
    if level == AuthLevel::Mutual {
        // A workgroup machine can never have Kerberos: none; a member cut off from its KDC
        // still has NTLM, which Incoming accepts.
        let to = if domain.is_empty() {
            "No Authentication Required"
        } else {
            "Incoming Caller Authentication Required"
        };
        found.push(AuthFinding {
            setting: "AllowOnlySecureRpcCalls",
            side,
            detail: format!(
                "MSDTC requires Mutual Authentication, which needs Kerberos, and {why}: every \
                 call to or from a partner fails"
            ),
            hint: with_firewall(hint_level(side, to)),
        });
    }
    // The calls this host makes need its own Kerberos (or NTLM out); a workgroup machine
    // receives only NTLM too. A member's incoming calls depend on the caller's KDC, unknown.
    let mut rules = vec![(
        "RestrictSendingNTLMTraffic",
        host.restrict_sending_ntlm,
        "outgoing",
    )];
    if domain.is_empty() {
        rules.push((
            "RestrictReceivingNTLMTraffic",
            host.restrict_receiving_ntlm,
            "incoming",
        ));
    }
    for (setting, value, what) in rules {
        if value == Some(2) {
            found.push(AuthFinding {
                setting,
                side,
                detail: format!(
                    "MSDTC authenticates callers ({}), {why}, and this host denies all {what} \
                     NTLM ({setting} = 2): nothing is left to authenticate its {what} calls",
                    level.as_str()
                ),
                hint: with_firewall(hint_ntlm(setting, side)),
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
            let got = judge_pair(&side(*a, da), &side(*b, db));
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

    const BLOCKED: &str = "dc1.corp.example (198.18.2.10) TCP 88: timeout";

    #[test]
    fn ntlm_restricted_where_kerberos_cannot_be_had() {
        use KdcReach::{Reachable, Unknown, Unreachable};
        let corp = "corp.example";
        let with = |s: AuthSide<'static>, kdc| AuthSide { kdc, ..s };
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
        let cut = Unreachable(BLOCKED);
        type Case<'a> = (AuthSide<'a>, AuthSide<'a>, Vec<(&'a str, Side)>);
        let cases: Vec<Case> = vec![
            // One domain, the KDC not measured: Kerberos assumed, no finding.
            (with(restricted_send, Unknown), plain, vec![]),
            // Measured reachable: Kerberos, no worry about the NTLM restriction.
            (
                with(restricted_send, Reachable),
                with(plain, Reachable),
                vec![],
            ),
            // This host reaches no KDC: its calls need NTLM, which it denies sending.
            (
                with(restricted_send, cut),
                plain,
                vec![("RestrictSendingNTLMTraffic", Side::ThisHost)],
            ),
            // Only the agent's host is cut off: its calls go by NTLM, which nobody refuses
            // here; this host's calls still get Kerberos.
            (with(restricted_send, Reachable), with(plain, cut), vec![]),
            // This host is cut off and the agent denies receiving NTLM (all accounts).
            (
                with(plain, cut),
                restricted_receive_all,
                vec![("RestrictReceivingNTLMTraffic", Side::AgentHost)],
            ),
            // The agent is cut off and denies receiving: its own calls are not refused by it.
            (plain, with(restricted_receive_all, cut), vec![]),
            // Different domains (no trust known): the agent denies domain accounts; this host
            // is a domain member, so its machine account is refused.
            (
                plain,
                restricted_receive_domain,
                vec![("RestrictReceivingNTLMTraffic", Side::AgentHost)],
            ),
            // Auditing only (1) blocks nothing.
            (with(audit_only, cut), plain, vec![]),
            // The callback direction: the agent is cut off and sends to this host, which
            // denies receiving.
            (
                restricted_receive_all,
                with(plain, cut),
                vec![("RestrictReceivingNTLMTraffic", Side::ThisHost)],
            ),
        ];
        for (near, far, want) in cases {
            let got = judge_pair(&near, &far);
            assert_eq!(settings(&got), want, "{near:?} / {far:?}: {got:#?}");
        }
        // Mutual and cut off from the KDC: the level and the NTLM restriction, each naming the
        // blocked DC and port and asking for 88 in the firewall.
        let got = judge_pair(
            &AuthSide {
                level: Some(Mutual),
                ..with(restricted_send, cut)
            },
            &plain,
        );
        assert_eq!(
            settings(&got),
            vec![
                ("AllowOnlySecureRpcCalls", Side::ThisHost),
                ("RestrictSendingNTLMTraffic", Side::ThisHost)
            ]
        );
        for f in &got {
            assert!(f
                .detail
                .contains("this host reaches no KDC of its domain corp.example"));
            assert!(f.detail.contains(BLOCKED), "{f:#?}");
            assert!(
                f.hint
                    .contains("open TCP and UDP 88 (Kerberos) from this host"),
                "{f:#?}"
            );
        }
        // Mutual on both, both reaching their KDC in one domain: nothing.
        let mutual = with(side(Mutual, corp), Reachable);
        assert!(judge_pair(&mutual, &mutual).is_empty());
        // Mutual on both, the agent cut off: both mutual sides named, the agent's KDC cited.
        let got = judge_pair(&mutual, &with(side(Mutual, corp), cut));
        assert_eq!(got.len(), 2, "{got:#?}");
        assert!(
            got[0].detail.contains("the agent's host reaches no KDC"),
            "{got:#?}"
        );
    }

    #[test]
    fn a_trust_is_not_invented_and_the_check_is_named() {
        let got = judge_pair(
            &side(Mutual, "emea.corp.example"),
            &side(Incoming, "corp.example"),
        );
        assert_eq!(got.len(), 1);
        let d = &got[0].detail;
        assert!(d.contains("nltest /domain_trusts /all_trusts"), "{d}");
        assert!(d.contains("Get-ADTrust"), "{d}");
        // A child name is said to be one, and not taken as proof of a trust.
        assert!(
            d.contains("emea.corp.example is named under corp.example"),
            "{d}"
        );
        assert!(d.contains("a separate forest can carry such a name"), "{d}");
        // Measured KDC reachability on both sides does not make a trust either.
        let got = judge_pair(
            &AuthSide {
                kdc: KdcReach::Reachable,
                ..side(Mutual, "a.example")
            },
            &AuthSide {
                kdc: KdcReach::Reachable,
                ..side(Mutual, "b.example")
            },
        );
        assert_eq!(got.len(), 2, "{got:#?}");
        assert!(!got[0].detail.contains("named under"), "{got:#?}");
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
            let got = judge_pair(&level(s, ""), &level(r, "corp.example"));
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
            kdc: KdcReach::Unreachable(BLOCKED),
            ..AuthSide::default()
        };
        assert!(judge_pair(&unknown, &side(Mutual, "a.example")).is_empty());
        let no_level = AuthSide {
            level: None,
            ..side(Mutual, "")
        };
        assert!(judge_pair(&no_level, &side(Mutual, "a.example")).is_empty());
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

    #[test]
    fn a_member_cut_off_from_its_kdc() {
        use KdcReach::{Reachable, Unknown, Unreachable};
        let corp = "corp.example";
        // (level, kdc, sending, receiving, expected settings).
        type Case<'a> = (
            AuthLevel,
            KdcReach<'a>,
            Option<u32>,
            Option<u32>,
            &'a [&'a str],
        );
        let cut = Unreachable(BLOCKED);
        let cases: &[Case] = &[
            // Reachable or not measured: a member is not judged alone.
            (Mutual, Reachable, Some(2), Some(2), &[]),
            (Mutual, Unknown, Some(2), None, &[]),
            // Cut off: Mutual cannot work; NTLM out denied leaves nothing for its calls.
            (Mutual, cut, None, None, &["AllowOnlySecureRpcCalls"]),
            (Incoming, cut, None, None, &[]),
            (
                Incoming,
                cut,
                Some(2),
                None,
                &["RestrictSendingNTLMTraffic"],
            ),
            // Incoming calls depend on the caller's KDC, which this host does not know.
            (Incoming, cut, None, Some(2), &[]),
            (
                Mutual,
                cut,
                Some(2),
                None,
                &["AllowOnlySecureRpcCalls", "RestrictSendingNTLMTraffic"],
            ),
            (NoAuth, cut, Some(2), Some(2), &[]),
        ];
        for (level, kdc, send, receive, want) in cases {
            let host = AuthSide {
                restrict_sending_ntlm: *send,
                restrict_receiving_ntlm: *receive,
                kdc: *kdc,
                ..side(*level, corp)
            };
            let got = judge_host(&host);
            let names: Vec<&str> = got.iter().map(|f| f.setting).collect();
            assert_eq!(&names, want, "{host:?}");
            for f in &got {
                assert!(f.detail.contains(BLOCKED), "{f:#?}");
                assert!(f.hint.contains("open TCP and UDP 88 (Kerberos)"), "{f:#?}");
            }
        }
        // A member is told to fall back to Incoming (NTLM still works), not to no auth.
        let got = judge_host(&AuthSide {
            kdc: cut,
            ..side(Mutual, corp)
        });
        assert!(
            got[0].hint.contains("-AuthenticationLevel Incoming"),
            "{got:#?}"
        );
    }
}
