//! `auth=kerberos` against a real Active Directory domain controller (Samba, support/samba_ad.rs)
//! behind a router, with the TDS test peer accepting Kerberos through GSS-API and the service
//! account's keytab (support/tds_peer_krb.rs). dtcprobe runs in the client ("web") namespace and
//! finds the KDC the way a domain client does: DNS SRV records served by the DC's own DNS.
//!
//! Cases (issue 28): SPN present (kdc, spn and login pass, the login's scheme is kerberos); SPN
//! missing (spn_missing); the SPN on two accounts (spn_duplicate from an LDAP search, naming
//! both); the router dropping 88 (kdc fails, firewall request rows for TCP and UDP 88); a clock
//! 20 minutes ahead (faketime: clock_skew with the offset). `auth=negotiate`: Kerberos with the
//! SPN present; with the SPN missing and with 88 dropped, spn_missing / the kdc failure, then the
//! NTLM fallback login (the peer verifies the NTLMv2 answer) warned `ntlm_fallback` with the
//! reason.

use std::net::SocketAddr;
use std::process::Command;

use serde_json::Value;

use crate::report_schema::assert_valid;
use crate::support::netns::{can_run_netns_tests, dtcprobe_bin};
use crate::support::samba_ad::{self, AdZones, SambaAd};
use crate::support::tds_peer::{krb, ntlm, Event, PeerConfig, ServerEncryption, TdsPeer};
use crate::support::{hop, parse_report};

struct Setup {
    zones: AdZones,
    dc: SambaAd,
    peer: TdsPeer,
    dir: tempfile::TempDir,
}

fn setup(test: &str) -> Option<Setup> {
    if !can_run_netns_tests(test) || !samba_ad::available(test) {
        return None;
    }
    let zones = AdZones::new("dpkrb");
    let dc = SambaAd::start(&zones);
    let keytab = dc.sql_keytab();
    let bind: SocketAddr = format!("{}:1433", samba_ad::SQL_IP).parse().unwrap();
    let peer = zones.dc.inside(move || {
        TdsPeer::start_on(
            bind,
            PeerConfig {
                encryption: ServerEncryption::Off,
                kerberos_keytab: Some(keytab),
                // The same user by NTLM (a Negotiate login's fallback): winauth sends no domain
                // for a user given without one.
                windows_account: Some(ntlm::WindowsAccount {
                    domain: String::new(),
                    user: samba_ad::CLIENT_USER.into(),
                    password: samba_ad::CLIENT_PASSWORD.into(),
                }),
                ..PeerConfig::default()
            },
        )
    });
    let dir = tempfile::tempdir().unwrap();
    samba_ad::client_krb5_conf(dir.path());
    std::fs::write(dir.path().join("pw"), samba_ad::CLIENT_PASSWORD).unwrap();
    Some(Setup {
        zones,
        dc,
        peer,
        dir,
    })
}

impl Setup {
    /// Runs `dtcprobe check -f json URL` in the web zone (optionally under `faketime OFFSET`),
    /// with the client krb5.conf and the password file; returns (exit code, report, stderr).
    fn check(&self, host: &str, faketime: Option<&str>, extra: &[&str]) -> (i32, Value, String) {
        self.check_query("auth=kerberos&tx=none", host, faketime, extra)
    }

    /// [`Setup::check`] with `QUERY` (`auth=...&tx=...`) in the URL.
    fn check_query(
        &self,
        query: &str,
        host: &str,
        faketime: Option<&str>,
        extra: &[&str],
    ) -> (i32, Value, String) {
        let url = format!(
            "mssql://{}@{host}:1433/app?{query}&encrypt=off&trust_server_certificate=true",
            samba_ad::CLIENT_USER
        );
        let pw = self.dir.path().join("pw");
        let mut args: Vec<String> = Vec::new();
        if let Some(offset) = faketime {
            args.extend(["faketime".into(), "-f".into(), offset.into()]);
        }
        args.push(dtcprobe_bin().into());
        args.extend(
            [
                "check",
                "-f",
                "json",
                "--timeout",
                "3s",
                "--password-file",
                pw.to_str().unwrap(),
            ]
            .map(String::from),
        );
        args.extend(extra.iter().map(|s| s.to_string()));
        args.push(format!("k={url}"));
        let out = self
            .zones
            .web
            .command(&args[0])
            .args(&args[1..])
            .env("NO_COLOR", "1")
            .env("KRB5_CONFIG", self.dir.path().join("krb5.conf"))
            // A cache of this test's own, never the machine's.
            .env(
                "KRB5CCNAME",
                format!("FILE:{}", self.dir.path().join("ccache").display()),
            )
            .output()
            .expect("run dtcprobe");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (
            out.status.code().unwrap_or(-1),
            parse_report(&stdout),
            stderr,
        )
    }
}

fn status(h: &Value) -> (&str, &str) {
    (
        h["status"].as_str().unwrap_or(""),
        h["cause"].as_str().unwrap_or(""),
    )
}

#[test]
fn kerberos_spn_present_passes_with_a_kerberos_login() {
    let Some(s) = setup("kerberos_spn_present_passes_with_a_kerberos_login") else {
        return;
    };
    let (code, report, stderr) = s.check(samba_ad::SQL_HOST, None, &[]);
    let kdc = hop(&report, "k", "kdc");
    assert_eq!(
        status(kdc),
        ("pass", ""),
        "{kdc:#}\n{stderr}\n{}",
        s.dc.logs()
    );
    assert_eq!(kdc["data"]["realm"], samba_ad::REALM);
    assert!(
        kdc["data"]["kdcs"][0]["found_by"]
            .as_str()
            .unwrap()
            .starts_with("dns_srv _kerberos._tcp.dtc.test"),
        "{kdc:#}"
    );
    // The KDC's clock is this machine's: the measured offset is within a second or two.
    assert!(kdc["data"]["clock_offset_seconds"].as_i64().unwrap().abs() <= 2);
    let spn = hop(&report, "k", "spn");
    assert_eq!(status(spn), ("pass", ""), "{spn:#}");
    assert_eq!(spn["data"]["spn"], "MSSQLSvc/sql.dtc.test:1433");
    // Samba's exported service key is RC4 only (klist -e shows the same ticket type).
    assert_eq!(spn["data"]["enctype"], "rc4-hmac", "{spn:#}");
    let login = hop(&report, "k", "login");
    assert_eq!(
        status(login),
        ("pass", ""),
        "{login:#}\n{:?}\n{stderr}",
        s.peer.events()
    );
    assert_eq!(login["data"]["auth_scheme"], "kerberos", "{login:#}");
    assert!(
        s.peer
            .events()
            .contains(&Event::Kerberos(krb::Outcome::Authenticated(
                "probe@DTC.TEST".into()
            ))),
        "{:?}",
        s.peer.events()
    );
    assert_eq!(code, 0, "{report:#}");
}

#[test]
fn kerberos_spn_missing_is_spn_missing() {
    let Some(s) = setup("kerberos_spn_missing_is_spn_missing") else {
        return;
    };
    let (code, report, _) = s.check(samba_ad::NOSPN_HOST, None, &[]);
    assert_eq!(status(hop(&report, "k", "kdc")).0, "pass");
    let spn = hop(&report, "k", "spn");
    assert_eq!(status(spn), ("fail", "spn_missing"), "{spn:#}");
    assert!(
        spn["detail"]
            .as_str()
            .unwrap()
            .contains("MSSQLSvc/nospn.dtc.test:1433"),
        "{spn:#}"
    );
    assert!(
        spn["hint"].as_str().unwrap().contains("setspn -S"),
        "{spn:#}"
    );
    assert_eq!(status(hop(&report, "k", "login")).0, "skip");
    assert_eq!(code, 1);
}

#[test]
fn kerberos_router_dropping_88_fails_kdc_with_firewall_rows() {
    let Some(s) = setup("kerberos_router_dropping_88_fails_kdc_with_firewall_rows") else {
        return;
    };
    s.zones.drop_to_dc(&["tcp 88", "udp 88"]);
    let csv = s.dir.path().join("fw.csv");
    let fw = format!("csv={}", csv.display());
    let (code, report, stderr) = s.check(samba_ad::SQL_HOST, None, &["--firewall-request", &fw]);
    let kdc = hop(&report, "k", "kdc");
    assert_eq!(status(kdc), ("fail", "timeout"), "{kdc:#}\n{stderr}");
    assert_eq!(status(hop(&report, "k", "spn")).0, "skip");
    let rows = std::fs::read_to_string(&csv).unwrap();
    for proto in ["tcp", "udp"] {
        assert!(
            rows.lines().any(|l| l.contains(&format!(
                "{},{proto},88,forward,dropped,Kerberos",
                samba_ad::DC_IP
            ))),
            "no {proto} 88 row:\n{rows}"
        );
    }
    // 464 and 389 still pass the router: no row for them.
    assert!(!rows.contains(",464,") && !rows.contains(",389,"), "{rows}");
    assert_eq!(code, 1);
}

#[test]
fn kerberos_clock_twenty_minutes_ahead_is_clock_skew() {
    let Some(s) = setup("kerberos_clock_twenty_minutes_ahead_is_clock_skew") else {
        return;
    };
    let has_faketime = Command::new("faketime").arg("--version").output().is_ok();
    assert!(
        has_faketime,
        "faketime missing: run scripts/install-test-deps"
    );
    let (_, report, stderr) = s.check(samba_ad::SQL_HOST, Some("+20m"), &[]);
    let kdc = hop(&report, "k", "kdc");
    let offset = kdc["data"]["clock_offset_seconds"].as_i64().unwrap();
    assert!((1195..=1205).contains(&offset), "{kdc:#}\n{stderr}");
    let spn = hop(&report, "k", "spn");
    assert_eq!(spn["cause"], "clock_skew", "{spn:#}");
    assert_eq!(spn["data"]["clock_offset_seconds"], offset);
    assert!(
        spn["detail"].as_str().unwrap().contains("s off the KDC's"),
        "{spn:#}"
    );
}

#[test]
fn kerberos_spn_on_two_accounts_is_spn_duplicate_from_ldap() {
    let Some(s) = setup("kerberos_spn_on_two_accounts_is_spn_duplicate_from_ldap") else {
        return;
    };
    let (code, report, stderr) = s.check(samba_ad::DUP_HOST, None, &[]);
    let spn = hop(&report, "k", "spn");
    assert_eq!(status(spn), ("fail", "spn_duplicate"), "{spn:#}\n{stderr}");
    let holders = spn["data"]["spn_accounts"]["MSSQLSvc/dup.dtc.test:1433"]
        .as_array()
        .unwrap_or_else(|| panic!("{spn:#}"));
    let mut names: Vec<String> = holders
        .iter()
        .map(|d| d.as_str().unwrap().to_ascii_lowercase())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "cn=other,cn=users,dc=dtc,dc=test",
            "cn=sqlsvc,cn=users,dc=dtc,dc=test"
        ],
        "{spn:#}"
    );
    assert_eq!(code, 1);
}

/// `auth=negotiate` against the same DC: Kerberos where the SPN is registered; where it is
/// missing, and where the router drops 88 to the DC, Kerberos cannot be had and the login falls
/// back to NTLM, which the peer verifies, and is warned `ntlm_fallback` naming why.
#[test]
fn negotiate_uses_kerberos_and_falls_back_to_ntlm_with_the_reason() {
    let Some(s) = setup("negotiate_uses_kerberos_and_falls_back_to_ntlm_with_the_reason") else {
        return;
    };
    // The peer records every SSPI login as WindowsAuth, a Kerberos one under the client's
    // principal (probe@DTC.TEST); an NTLM one is named DOMAIN\user (no domain sent: \probe).
    let ntlm_name = format!("\\{}", samba_ad::CLIENT_USER);
    let ntlm_logins = |s: &Setup| {
        s.peer
            .events()
            .iter()
            .filter(|e| **e == Event::WindowsAuth(ntlm::Outcome::Authenticated(ntlm_name.clone())))
            .count()
    };

    // 1. The SPN is registered: Kerberos, no fallback.
    let (code, report, stderr) =
        s.check_query("auth=negotiate&tx=none", samba_ad::SQL_HOST, None, &[]);
    let login = hop(&report, "k", "login");
    assert_eq!(status(login), ("pass", ""), "{login:#}\n{stderr}");
    assert_eq!(login["data"]["auth"], "negotiate");
    assert_eq!(login["data"]["auth_scheme"], "kerberos", "{login:#}");
    assert_eq!(ntlm_logins(&s), 0, "{:?}", s.peer.events());
    assert_eq!(code, 0, "{report:#}");

    // 2. The SPN is missing: spn_missing, then NTLM.
    let (code, report, stderr) =
        s.check_query("auth=negotiate&tx=none", samba_ad::NOSPN_HOST, None, &[]);
    assert_eq!(status(hop(&report, "k", "kdc")), ("pass", ""));
    let spn = hop(&report, "k", "spn");
    assert_eq!(status(spn), ("fail", "spn_missing"), "{spn:#}");
    let login = hop(&report, "k", "login");
    assert_eq!(
        status(login),
        ("warn", "ntlm_fallback"),
        "{login:#}\n{stderr}\n{:?}",
        s.peer.events()
    );
    assert_eq!(login["data"]["auth_scheme"], "ntlm", "{login:#}");
    let reason = login["data"]["fallback_reason"].as_str().unwrap();
    assert!(
        reason.contains("hop `spn`: spn_missing")
            && reason.contains("MSSQLSvc/nospn.dtc.test:1433"),
        "{login:#}"
    );
    assert!(
        login["detail"].as_str().unwrap().contains(reason),
        "{login:#}"
    );
    assert_eq!(ntlm_logins(&s), 1, "{:?}", s.peer.events());
    assert_valid("negotiate, NTLM fallback", &report);
    // The SPN's failure still fails the check.
    assert_eq!(code, 1, "{report:#}");
    // With a transaction asked for: the fallback login's session carries none (yet), so
    // `tx_local` is `skip`, saying why, right after the login.
    let (_, report, _) = s.check_query("auth=negotiate&tx=local", samba_ad::NOSPN_HOST, None, &[]);
    assert_eq!(
        status(hop(&report, "k", "login")),
        ("warn", "ntlm_fallback")
    );
    let tx = hop(&report, "k", "tx_local");
    assert_eq!(tx["status"], "skip", "{tx:#}");
    assert!(
        tx["detail"]
            .as_str()
            .unwrap()
            .starts_with("not run after the NTLM fallback login"),
        "{tx:#}"
    );
    assert_eq!(ntlm_logins(&s), 2, "{:?}", s.peer.events());

    // 3. The router drops 88 to the DC: no KDC, `spn` not run, NTLM.
    s.zones.drop_to_dc(&["tcp 88", "udp 88"]);
    let (_, report, stderr) =
        s.check_query("auth=negotiate&tx=none", samba_ad::SQL_HOST, None, &[]);
    assert_eq!(status(hop(&report, "k", "kdc")), ("fail", "timeout"));
    let spn = hop(&report, "k", "spn");
    assert_eq!(spn["status"], "skip", "{spn:#}");
    let login = hop(&report, "k", "login");
    assert_eq!(
        status(login),
        ("warn", "ntlm_fallback"),
        "{login:#}\n{stderr}"
    );
    assert!(
        login["data"]["fallback_reason"]
            .as_str()
            .unwrap()
            .starts_with("hop `kdc`: timeout"),
        "{login:#}"
    );
    assert_eq!(ntlm_logins(&s), 3, "{:?}", s.peer.events());
    // The hops were reported in chain order.
    let order: Vec<&str> = report["checks"][0]["hops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["hop"].as_str().unwrap())
        .collect();
    assert_eq!(
        order,
        [
            "resolve",
            "route",
            "tcp",
            "kdc",
            "spn",
            "login",
            "revocation"
        ],
        "{report:#}"
    );
}

/// MSDTC's authentication path (issue 28 item 2) with KDC reachability measured against the
/// real DC: the function hop `dtc_config` calls after reading the registry
/// (`hops::msdtc::kerberos_of`, platform-independent: SRV discovery through the DC's own DNS,
/// an AS-REQ over TCP 88), run in-process in the web zone, its fact fed to the same decision
/// the Windows build makes from registry values (here a fixture: Mutual, a member of dtc.test,
/// outgoing NTLM denied). DC up: Kerberos reachable, no `dtc_auth`. The router dropping 88:
/// `warn dtc_auth` naming the DC, its address and port, and a firewall request row "Kerberos".
#[test]
fn dtc_auth_sees_the_kdc_reachable_then_blocked_by_the_router() {
    use std::sync::Arc;
    use std::time::Duration;

    use dtcprobe::chain::RunContext;
    use dtcprobe::hops::kdc::reach::{KdcReachability, Reachable};
    use dtcprobe::hops::msdtc::{
        compare_pair, config_hop, kerberos_of, MsdtcConfig, Role, ServiceState,
    };
    use dtcprobe::model::{Cause, CheckResult, Report, Status};

    let test = "dtc_auth_sees_the_kdc_reachable_then_blocked_by_the_router";
    if !can_run_netns_tests(test) || !samba_ad::available(test) {
        return;
    }
    let zones = AdZones::new("dpdta");
    let dc = SambaAd::start(&zones);
    // What the registry reader gives on a member of dtc.test set to Mutual, all outgoing NTLM
    // denied (tests/msdtc_config.rs reads the same values from wine's registry).
    let member = MsdtcConfig {
        service_state: Some(ServiceState::Running),
        network_dtc_access: Some(1),
        network_dtc_access_transactions: Some(1),
        network_dtc_access_inbound: Some(1),
        network_dtc_access_outbound: Some(1),
        allow_only_secure_rpc_calls: Some(1),
        domain: Some(samba_ad::DOMAIN.into()),
        restrict_sending_ntlm_traffic: Some(2),
        ..MsdtcConfig::default()
    };
    let measure = |zones: &AdZones, config: &MsdtcConfig| -> (KdcReachability, Duration) {
        let config = config.clone();
        zones.web.inside_with_etc(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let limit = Duration::from_secs(2);
                let ctx = RunContext::new(
                    limit,
                    Arc::new(dtcprobe::resolver::DnsResolver::from_system(limit)),
                    false,
                );
                let started = std::time::Instant::now();
                let fact = kerberos_of(&config, &ctx).await;
                (fact, started.elapsed())
            })
        })
    };

    // The DC up: reachable, and the same registry is no longer a worry.
    let (fact, took) = measure(&zones, &member);
    eprintln!("{test}: reachable measured in {took:?}: {fact:?}");
    assert_eq!(
        fact.kdc_reachable,
        Reachable::Yes,
        "{fact:#?}\n{}",
        dc.logs()
    );
    assert_eq!(fact.kdcs.len(), 1, "{fact:#?}");
    assert_eq!(fact.kdcs[0].host, samba_ad::DC_HOST);
    assert_eq!(
        fact.kdcs[0].address.as_deref(),
        Some(format!("{}:88", samba_ad::DC_IP).as_str())
    );
    assert!(
        fact.kdcs[0]
            .found_by
            .starts_with("dns_srv _kerberos._tcp.dtc.test"),
        "{fact:#?}"
    );
    let reachable = MsdtcConfig {
        kerberos: fact,
        ..member.clone()
    };
    let hop = config_hop(&reachable, Role::Both);
    assert_eq!(hop.status, Status::Pass, "{hop:#?}");
    assert_eq!(hop.data["kdc_reachable"], "yes");
    assert!(
        hop.detail
            .contains("Kerberos: KDC dc1.dtc.test (198.18.2.10) of dtc.test answers on TCP 88"),
        "{}",
        hop.detail
    );

    // The router drops 88 to the DC (DNS still answers): not reachable, naming DC and port.
    zones.drop_to_dc(&["tcp 88", "udp 88"]);
    let (fact, took) = measure(&zones, &member);
    eprintln!("{test}: blocked measured in {took:?}: {fact:?}");
    assert_eq!(fact.kdc_reachable, Reachable::No, "{fact:#?}");
    assert_eq!(fact.kdcs[0].cause.as_deref(), Some("timeout"), "{fact:#?}");
    // Bounded by the hop timeout (2 s), not by the kernel's SYN retries.
    assert!(took < Duration::from_secs(6), "{took:?}");
    let blocked = MsdtcConfig {
        kerberos: fact,
        ..member.clone()
    };
    let hop = config_hop(&blocked, Role::Both);
    assert_eq!(
        (hop.status, hop.cause),
        (Status::Warn, Some(Cause::DtcAuth)),
        "{hop:#?}"
    );
    let findings = hop.data["findings"].as_array().unwrap();
    let named: Vec<&str> = findings
        .iter()
        .map(|f| f["setting"].as_str().unwrap())
        .collect();
    assert_eq!(
        named,
        ["AllowOnlySecureRpcCalls", "RestrictSendingNTLMTraffic"],
        "{hop:#?}"
    );
    for f in findings {
        let detail = f["detail"].as_str().unwrap();
        assert!(
            detail.contains("dc1.dtc.test (198.18.2.10) TCP 88: timeout"),
            "{detail}"
        );
        assert!(
            f["hint"]
                .as_str()
                .unwrap()
                .contains("open TCP and UDP 88 (Kerberos) from this host"),
            "{f:#}"
        );
    }
    // The firewall request, as `--firewall-request` writes it.
    let mut check = CheckResult::new("dtc", "msdtc", "msdtc://localhost", vec![hop]);
    check.from = Some("web".into());
    let report = Report::new(
        std::time::SystemTime::now(),
        Duration::ZERO,
        "web".into(),
        vec![check],
    );
    let csv = dtcprobe::verdict::to_csv(&dtcprobe::verdict::firewall_requests(&report));
    assert!(
        csv.lines().any(|l| l.contains(&format!(
            "{},tcp,88,forward,dropped,Kerberos",
            samba_ad::DC_IP
        ))),
        "{csv}"
    );
    assert_valid(
        "dtc_config with the KDC blocked",
        &serde_json::to_value(&report).unwrap(),
    );

    // A `peer` pair: the agent's host (in dtc.test too, reaching its KDC) denies receiving
    // NTLM; this host, cut off, calls it by NTLM: named on the agent's side.
    let incoming = |c: &MsdtcConfig| MsdtcConfig {
        allow_only_secure_rpc_calls: Some(0),
        fallback_to_unsecure_rpc_if_necessary: Some(1),
        restrict_sending_ntlm_traffic: None,
        ..c.clone()
    };
    let far = MsdtcConfig {
        restrict_receiving_ntlm_traffic: Some(2),
        ..incoming(&reachable)
    };
    let pair = compare_pair(&incoming(&blocked), &far);
    assert_eq!(
        (pair.status, pair.cause),
        (Status::Warn, Some(Cause::DtcAuth)),
        "{pair:#?}"
    );
    assert_eq!(
        pair.data["findings"][0]["setting"],
        "RestrictReceivingNTLMTraffic"
    );
    assert_eq!(pair.data["local_kdc_reachable"], "no");
    assert_eq!(pair.data["remote_kdc_reachable"], "yes");
    // Both reaching the KDC: nothing to predict.
    assert_eq!(
        compare_pair(&incoming(&reachable), &far).status,
        Status::Pass
    );
}

/// The same measurement by the Windows build under wine, in the client zone against the real
/// DC: `dtc_config` reads the registry fixtures (a member of dtc.test, Mutual, outgoing NTLM
/// denied), looks up the domain's KDCs through wine's DNS (the zone's resolv.conf names the
/// DC's DNS) and tries TCP 88. DC up: `kdc_reachable` `yes`, no `dtc_auth`. The router dropping
/// 88: `no`, `dtc_auth` naming both settings and the DC, and the firewall request row.
#[test]
fn windows_build_measures_the_kdc_under_wine_against_the_dc() {
    use crate::msdtc_config::{
        dtc_config, dword, findings, good_config, keep_prefix_up, reg_add, CID_A, MSV1_0, TCPIP,
    };
    use crate::windows_wine::{wine, WinHost};

    let test = "windows_build_measures_the_kdc_under_wine_against_the_dc";
    if !can_run_netns_tests(test) || !samba_ad::available(test) {
        return;
    }
    let Some(setup) = wine(test, true) else {
        return;
    };
    let zones = AdZones::new("dpdtw");
    let dc = SambaAd::start(&zones);
    let win = WinHost::new(setup, Some(&zones.web));
    let _up = keep_prefix_up(&win);
    good_config(&win, (1, 0, 0), CID_A);
    reg_add(&win, TCPIP, "Domain", "REG_SZ", samba_ad::DOMAIN);
    dword(&win, MSV1_0, "RestrictSendingNTLMTraffic", 2);
    let url = "msdtc://localhost";
    let (_, h, _) = dtc_config(&win, url);
    assert_eq!(h["data"]["kdc_reachable"], "yes", "{h:#}\n{}", dc.logs());
    assert_eq!(
        h["data"]["kdcs"][0]["address"],
        format!("{}:88", samba_ad::DC_IP),
        "{h:#}"
    );
    assert!(
        !findings(&h).iter().any(|(cause, _)| cause == "dtc_auth"),
        "{h:#}"
    );

    zones.drop_to_dc(&["tcp 88", "udp 88"]);
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("fw.csv");
    let fw = format!("csv={}", WinHost::win_path(&csv));
    let (_, out, err) = win.run(&[
        "check",
        "-f",
        "json",
        "--timeout",
        "2s",
        "--firewall-request",
        &fw,
        url,
    ]);
    let report = crate::support::parse_report(&out);
    assert_valid("wine dtc_config, 88 dropped", &report);
    let h = hop(&report, url, "dtc_config");
    assert_eq!(h["data"]["kdc_reachable"], "no", "{h:#}\n{err}");
    let found = findings(h);
    for setting in ["AllowOnlySecureRpcCalls", "RestrictSendingNTLMTraffic"] {
        assert!(
            found.contains(&("dtc_auth".into(), setting.into())),
            "{setting}: {h:#}"
        );
    }
    assert!(
        h["detail"]
            .as_str()
            .unwrap()
            .contains("dc1.dtc.test (198.18.2.10) TCP 88: timeout"),
        "{h:#}"
    );
    let rows = std::fs::read_to_string(&csv).unwrap();
    assert!(
        rows.lines().any(|l| l.contains(&format!(
            "{},tcp,88,forward,dropped,Kerberos",
            samba_ad::DC_IP
        ))),
        "{rows}"
    );
}

/// The Windows build's lib test executable (`cargo test --target x86_64-pc-windows-gnu --lib
/// --no-run`), the newest; `DTCPROBE_WINDOWS_LIB_TESTS` names it explicitly.
fn windows_lib_tests() -> Option<std::path::PathBuf> {
    if let Ok(p) = std::env::var("DTCPROBE_WINDOWS_LIB_TESTS") {
        return Some(p.into());
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let deps = target.join("x86_64-pc-windows-gnu/debug/deps");
    let mut exes: Vec<_> = std::fs::read_dir(deps)
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with("dtcprobe-") && name.ends_with(".exe")
        })
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    exes.sort();
    // The lib's test harness, not the binary built beside it under the same prefix: the one
    // that names the opt-in test.
    let wanted = b"sspi_ticket_against_a_real_kdc";
    exes.into_iter().rev().map(|(_, p)| p).find(|p| {
        std::fs::read(p).is_ok_and(|bytes| bytes.windows(wanted.len()).any(|w| w == wanted))
    })
}

impl Setup {
    /// Runs one of the Windows build's opt-in SSPI tests (`test`, by its path in the lib) under
    /// wine in the web zone, as the client user, with `vars`; (passed, output).
    fn under_wine(
        &self,
        exe: &std::path::Path,
        test: &str,
        vars: &[(&str, &str)],
    ) -> (bool, String) {
        let runner = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/wine/runner");
        let mut cmd = self.zones.web.command(runner.to_str().unwrap());
        cmd.arg(exe)
            .args([test, "--ignored", "--exact", "--nocapture"])
            .env("KRB5_CONFIG", self.dir.path().join("krb5.conf"))
            .env(
                "KRB5CCNAME",
                format!("FILE:{}", self.dir.path().join("wine-ccache").display()),
            )
            .env("DTCPROBE_SSPI_REALM", samba_ad::REALM)
            .env("DTCPROBE_SSPI_USER", samba_ad::CLIENT_USER)
            .env("DTCPROBE_SSPI_PASSWORD", samba_ad::CLIENT_PASSWORD);
        for (k, v) in vars {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("run wine");
        let text = format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }
}

const WINE_TICKET_TEST: &str = "hops::spn::sspi_host_tests::sspi_ticket_against_a_real_kdc";
const WINE_LOGIN_TEST: &str =
    "hops::mssql::enlist::session::sspi_login_tests::sspi_login_against_a_real_server";

/// The Windows build's SSPI side (src/hops/spn/sspi.rs) run under wine, whose Kerberos package
/// is MIT krb5 through its unixlib, against the real DC: a ticket for the SPN that exists; for
/// one that does not, what wine makes of KDC_ERR_S_PRINCIPAL_UNKNOWN (SEC_E_INTERNAL_ERROR, where
/// Windows says SEC_E_TARGET_UNKNOWN: so `kdc_error` under wine, docs/kerberos.md); and the
/// `auth=kerberos` login on dtcprobe's own session, the TDS peer accepting the AP-REQ. Skips
/// (saying why) without wine or the Windows lib test executable.
#[test]
fn sspi_under_wine() {
    let test = "sspi_under_wine";
    // As tests/windows_wine.rs: under DTCPROBE_REQUIRE_WINE=1 (scripts/test as root) a missing
    // piece fails the test instead of skipping it.
    let required = std::env::var("DTCPROBE_REQUIRE_WINE").is_ok_and(|v| v == "1");
    let skip = |why: &str| {
        assert!(!required, "{test}: DTCPROBE_REQUIRE_WINE=1 but {why}");
        eprintln!("SKIP {test}: {why} (scripts/test as root runs it)");
    };
    if Command::new("wine").arg("--version").output().is_err() {
        return skip("wine is not installed (scripts/install-test-deps)");
    }
    let Some(exe) = windows_lib_tests() else {
        return skip(
            "no Windows lib test executable: run `cargo test --target x86_64-pc-windows-gnu \
             --lib --no-run` first, or set DTCPROBE_WINDOWS_LIB_TESTS",
        );
    };
    if !exe
        .parent()
        .and_then(|d| d.parent())
        .is_some_and(|d| d.join("dtcprobe.exe").exists())
    {
        return skip("no dtcprobe.exe: run `cargo build --target x86_64-pc-windows-gnu` first");
    }
    let Some(s) = setup(test) else { return };
    let present = format!("MSSQLSvc/{}:1433", samba_ad::SQL_HOST);
    let (ok, out) = s.under_wine(
        &exe,
        WINE_TICKET_TEST,
        &[
            ("DTCPROBE_SSPI_SPN", &present),
            ("DTCPROBE_SSPI_EXPECT", "pass"),
        ],
    );
    assert!(ok, "{present}: {out}\n{}", s.dc.logs());
    // The same encryption type as the Linux side reads (this DC issues RC4 tickets for sqlsvc).
    assert!(out.contains(r#""enctype":"rc4-hmac""#), "{out}");

    // Wine's own trace shows the KDC's answer its status hides.
    let missing = format!("MSSQLSvc/{}:1433", samba_ad::NOSPN_HOST);
    let (ok, out) = s.under_wine(
        &exe,
        WINE_TICKET_TEST,
        &[
            ("DTCPROBE_SSPI_SPN", &missing),
            ("DTCPROBE_SSPI_EXPECT", "kdc_error"),
            ("DTCPROBE_WINEDEBUG", "+kerberos"),
        ],
    );
    assert!(ok, "{missing}: {out}\n{}", s.dc.logs());
    assert!(out.contains("SEC_E_INTERNAL_ERROR"), "{out}");
    assert!(
        out.contains("Server not found in Kerberos database"),
        "{out}"
    );

    let tds = format!("{}:1433", samba_ad::SQL_IP);
    let (ok, out) = s.under_wine(
        &exe,
        WINE_LOGIN_TEST,
        &[
            ("DTCPROBE_SSPI_TDS", &tds),
            ("DTCPROBE_SSPI_HOST", samba_ad::SQL_HOST),
            ("DTCPROBE_SSPI_AUTH", "kerberos"),
            ("DTCPROBE_SSPI_EXPECT_SCHEME", "kerberos"),
        ],
    );
    assert!(ok, "{out}\n{:?}", s.peer.events());
    assert!(
        out.contains(r#"SSPI-LOGIN package=Some("Kerberos")"#),
        "{out}"
    );
    let client = format!("{}@{}", samba_ad::CLIENT_USER, samba_ad::REALM);
    assert!(
        s.peer.events().iter().any(|e| matches!(
            e,
            Event::Kerberos(krb::Outcome::Authenticated(name)) if *name == client
        )),
        "{:?}",
        s.peer.events()
    );

    // auth=negotiate: wine's Negotiate package picks Kerberos with the SPN present, and the
    // login reports the package it ended on.
    let (ok, out) = s.under_wine(
        &exe,
        WINE_LOGIN_TEST,
        &[
            ("DTCPROBE_SSPI_TDS", &tds),
            ("DTCPROBE_SSPI_HOST", samba_ad::SQL_HOST),
            ("DTCPROBE_SSPI_AUTH", "negotiate"),
            ("DTCPROBE_SSPI_EXPECT_SCHEME", "kerberos"),
        ],
    );
    assert!(ok, "{out}\n{:?}", s.peer.events());
    assert!(
        out.contains(r#"SSPI-LOGIN package=Some("Kerberos")"#),
        "{out}"
    );
    let kerberos_logins = |s: &Setup| {
        s.peer
            .events()
            .iter()
            .filter(|e| matches!(e, Event::Kerberos(krb::Outcome::Authenticated(_))))
            .count()
    };
    assert_eq!(kerberos_logins(&s), 2, "{:?}", s.peer.events());

    // The SPN missing: wine's Negotiate falls back to NTLM (msv1_0 through Samba's ntlm_auth,
    // a real NTLMv2 exchange the peer verifies). The user goes as `\probe` (no domain), the
    // account the peer knows for NTLM (see `setup`).
    let (ok, out) = s.under_wine(
        &exe,
        WINE_LOGIN_TEST,
        &[
            ("DTCPROBE_SSPI_TDS", &tds),
            ("DTCPROBE_SSPI_HOST", samba_ad::NOSPN_HOST),
            ("DTCPROBE_SSPI_AUTH", "negotiate"),
            (
                "DTCPROBE_SSPI_USER",
                &format!("\\{}", samba_ad::CLIENT_USER),
            ),
            ("DTCPROBE_SSPI_EXPECT_SCHEME", "ntlm"),
        ],
    );
    assert!(ok, "{out}\n{:?}", s.peer.events());
    assert!(out.contains(r#"SSPI-LOGIN package=Some("NTLM")"#), "{out}");
    assert_eq!(kerberos_logins(&s), 2, "{:?}", s.peer.events());

    // The whole chain: the Windows build's `dtcprobe check` under wine. Its resolver (hickory
    // on Windows) reads the Windows hosts file, not the namespace's /etc/hosts: the SQL hosts'
    // lines go into the wine prefix's for the run.
    let target_dir = exe.ancestors().nth(4).unwrap();
    let prefix = std::env::var("DTCPROBE_WINEPREFIX")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| target_dir.join("wine/prefix-runner"));
    let hosts = prefix.join("drive_c/windows/system32/drivers/etc/hosts");
    let _hosts = [samba_ad::SQL_HOST, samba_ad::NOSPN_HOST]
        .map(|host| HostsLine::add(&hosts, &format!("{} {host}", samba_ad::SQL_IP)));
    let bin = exe.parent().unwrap().parent().unwrap().join("dtcprobe.exe");
    let check = |user: &str, host: &str| {
        let runner = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/wine/runner");
        let url = format!(
            "k=mssql://{user}@{host}/app?auth=negotiate&tx=none&encrypt=off&\
             trust_server_certificate=true"
        );
        let pw = format!("Z:{}", s.dir.path().join("pw").display());
        let out = s
            .zones
            .web
            .command(runner.to_str().unwrap())
            .arg(&bin)
            .args(["check", "-f", "json", "--timeout", "5s", "--password-file"])
            .args([&pw, &url])
            .env("KRB5_CONFIG", s.dir.path().join("krb5.conf"))
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            !stdout.is_empty(),
            "no report from {} (a Windows build older than this test? `cargo build --target \
             x86_64-pc-windows-gnu`), exit {:?}, stderr:\n{}",
            bin.display(),
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
        let report = parse_report(&stdout);
        assert_valid("sspi_under_wine", &report);
        (
            out.status.code(),
            report,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, report, stderr) = check(
        samba_ad::CLIENT_USER,
        &format!("{}:1433", samba_ad::SQL_HOST),
    );
    assert_eq!(code, Some(0), "{report:#}\n{stderr}");
    assert_eq!(status(hop(&report, "k", "kdc")), ("pass", ""), "{report:#}");
    let spn = hop(&report, "k", "spn");
    assert_eq!(status(spn), ("pass", ""), "{spn:#}");
    assert_eq!(spn["data"]["enctype"], "rc4-hmac", "{spn:#}");
    let login = hop(&report, "k", "login");
    assert_eq!(status(login), ("pass", ""), "{login:#}");
    assert_eq!(login["data"]["auth_scheme"], "kerberos", "{login:#}");
    assert_eq!(kerberos_logins(&s), 3, "{:?}", s.peer.events());

    // No SPN: hop `spn` fails (`kdc_error` under wine, see above), and Negotiate's login falls
    // back to NTLM: `warn ntlm_fallback` naming hop `spn`. SSPI sends the realm as the NTLM
    // domain of a plain user (wine's Kerberos refuses explicit credentials with no domain,
    // AcquireCredentialsHandleW 0xC0000001), so a second peer on port 1434 knows the account
    // as DTC.TEST\probe.
    let bind: SocketAddr = format!("{}:1434", samba_ad::SQL_IP).parse().unwrap();
    let ntlm_peer = s.zones.dc.inside(move || {
        TdsPeer::start_on(
            bind,
            PeerConfig {
                encryption: ServerEncryption::Off,
                windows_account: Some(ntlm::WindowsAccount {
                    domain: samba_ad::REALM.into(),
                    user: samba_ad::CLIENT_USER.into(),
                    password: samba_ad::CLIENT_PASSWORD.into(),
                }),
                ..PeerConfig::default()
            },
        )
    });
    let (_, report, stderr) = check(
        samba_ad::CLIENT_USER,
        &format!("{}:1434", samba_ad::NOSPN_HOST),
    );
    let spn = hop(&report, "k", "spn");
    assert_eq!(status(spn), ("fail", "kdc_error"), "{spn:#}\n{stderr}");
    assert!(
        spn["detail"]
            .as_str()
            .unwrap()
            .contains("SEC_E_INTERNAL_ERROR"),
        "{spn:#}"
    );
    let login = hop(&report, "k", "login");
    assert_eq!(
        status(login),
        ("warn", "ntlm_fallback"),
        "{login:#}\n{stderr}"
    );
    assert_eq!(login["data"]["auth_scheme"], "ntlm", "{login:#}");
    assert!(
        login["data"]["fallback_reason"]
            .as_str()
            .unwrap()
            .starts_with("hop `spn`: kdc_error"),
        "{login:#}"
    );
    assert_eq!(kerberos_logins(&s), 3, "{:?}", s.peer.events());
    assert!(
        ntlm_peer
            .events()
            .iter()
            .any(|e| matches!(e, Event::WindowsAuth(ntlm::Outcome::Authenticated(_)))),
        "{:?}",
        ntlm_peer.events()
    );
}

/// A line added to a hosts file for a test, taken out again when dropped.
struct HostsLine {
    path: std::path::PathBuf,
    line: String,
}

impl HostsLine {
    fn add(path: &std::path::Path, line: &str) -> HostsLine {
        let mut text = std::fs::read_to_string(path).unwrap_or_default();
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(line);
        text.push('\n');
        std::fs::write(path, text).expect("write the wine prefix's hosts file");
        HostsLine {
            path: path.to_path_buf(),
            line: line.to_string(),
        }
    }
}

impl Drop for HostsLine {
    fn drop(&mut self) {
        if let Ok(text) = std::fs::read_to_string(&self.path) {
            let kept: Vec<&str> = text.lines().filter(|l| *l != self.line).collect();
            let _ = std::fs::write(&self.path, kept.join("\n") + "\n");
        }
    }
}
