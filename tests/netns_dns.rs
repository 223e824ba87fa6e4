//! End-to-end DNS: the real binary in the "web" zone resolving through a real DNS server (dnsmasq)
//! in the "sql" zone, forward and reverse, including a stale PTR record of the kind that breaks
//! MSDTC, and DNS blocked by a firewall rule.

use crate::support;

use support::netns::{can_run_netns_tests, dtcprobe_in, start_dnsmasq, Zones, SQL_IP};
use support::{hop, parse_report};

#[test]
fn forward_reverse_agreement_mismatch_and_nxdomain() {
    if !can_run_netns_tests("forward_reverse_agreement_mismatch_and_nxdomain") {
        return;
    }
    let zones = Zones::new("dpd");
    let _dns = start_dnsmasq(
        &zones.sql,
        SQL_IP,
        &[
            // Consistent: A and PTR agree.
            "--host-record=sql01.zone.test,198.18.0.2",
            // A clone kept its old PTR: 198.18.0.5 -> PTR old-web.zone.test -> 198.18.0.77.
            "--address=/web02.zone.test/198.18.0.5",
            "--ptr-record=5.0.18.198.in-addr.arpa,old-web.zone.test",
            "--host-record=old-web.zone.test,198.18.0.77",
            // No PTR at all.
            "--address=/noptr.zone.test/198.18.0.6",
        ],
    );
    // A name only the web zone's hosts file knows (bind-mounted over /etc/hosts by `ip netns exec`):
    // the probe must see what applications on that host see.
    zones.web.etc_file(
        "hosts",
        "127.0.0.1 localhost\n198.18.0.3 sqlalias.zone.test\n",
    );
    let (code, stdout, stderr) = dtcprobe_in(
        &zones.web,
        &[
            "check",
            "dns://sqlalias.zone.test",
            "-f",
            "json",
            "--timeout",
            "2s",
            "dns://sql01.zone.test",
            "dns://web02.zone.test",
            "dns://noptr.zone.test",
            "dns://missing.zone.test",
        ],
    );
    let report = parse_report(&stdout);
    assert_eq!(code, 1, "nxdomain fails the run; stderr: {stderr}");

    let ok = hop(&report, "dns://sql01.zone.test", "resolve");
    assert_eq!(ok["status"], "pass", "{ok:#}");
    assert_eq!(ok["data"]["addresses"][0], "198.18.0.2");
    assert_eq!(ok["data"]["ptr"]["198.18.0.2"][0], "sql01.zone.test");

    let from_hosts = hop(&report, "dns://sqlalias.zone.test", "resolve");
    assert_eq!(from_hosts["status"], "pass", "{from_hosts:#}");
    assert_eq!(from_hosts["data"]["addresses"][0], "198.18.0.3");

    let stale = hop(&report, "dns://web02.zone.test", "resolve");
    assert_eq!(
        (stale["status"].as_str(), stale["cause"].as_str()),
        (Some("warn"), Some("dns_mismatch")),
        "{stale:#}"
    );
    let detail = stale["detail"].as_str().unwrap();
    assert!(
        detail.contains("old-web.zone.test") && detail.contains("198.18.0.77"),
        "{detail}"
    );

    let noptr = hop(&report, "dns://noptr.zone.test", "resolve");
    assert_eq!(noptr["cause"], "dns_mismatch", "{noptr:#}");
    assert!(
        noptr["detail"].as_str().unwrap().contains("no PTR"),
        "{noptr:#}"
    );

    let missing = hop(&report, "dns://missing.zone.test", "resolve");
    assert_eq!(
        (missing["status"].as_str(), missing["cause"].as_str()),
        (Some("fail"), Some("dns_nxdomain")),
        "{missing:#}"
    );
}

#[test]
fn dns_blocked_by_firewall_is_dns_timeout_and_skips_tcp() {
    if !can_run_netns_tests("dns_blocked_by_firewall_is_dns_timeout_and_skips_tcp") {
        return;
    }
    let zones = Zones::new("dpb");
    let _dns = start_dnsmasq(
        &zones.sql,
        SQL_IP,
        &["--host-record=sql01.zone.test,198.18.0.2"],
    );
    zones.sql.nft(
        "table ip zonefw {\n chain input {\n type filter hook input priority 0; policy accept;\n udp dport 53 drop\n tcp dport 53 drop\n }\n}\n",
    );
    let (code, stdout, _) = dtcprobe_in(
        &zones.web,
        &[
            "check",
            "-f",
            "json",
            "--timeout",
            "1s",
            "tcp://sql01.zone.test:1433",
        ],
    );
    assert_eq!(code, 1);
    let report = parse_report(&stdout);
    let resolve = hop(&report, "tcp://sql01.zone.test:1433", "resolve");
    assert_eq!(resolve["cause"], "dns_timeout", "{resolve:#}");
    let tcp = hop(&report, "tcp://sql01.zone.test:1433", "tcp");
    assert_eq!(tcp["status"], "skip", "tcp depends on resolve: {tcp:#}");
    assert!(tcp["detail"].as_str().unwrap().contains("resolve"));
}

#[test]
fn hosts_file_name_resolves_when_dns_is_unreachable() {
    if !can_run_netns_tests("hosts_file_name_resolves_when_dns_is_unreachable") {
        return;
    }
    let zones = Zones::new("dpo");
    // No DNS server answers at all (nothing runs on the sql side's port 53, and it is dropped):
    // a name in the hosts file with only an IPv4 entry must still resolve, without waiting for
    // the AAAA query that only DNS could answer.
    zones.sql.nft("table ip zonefw {\n chain input {\n type filter hook input priority 0; policy accept;\n udp dport 53 drop\n tcp dport 53 drop\n }\n}\n");
    zones.web.etc_file(
        "hosts",
        "127.0.0.1 localhost\n198.18.0.2 onlyhosts.zone.test\n",
    );
    let started = std::time::Instant::now();
    let (_, stdout, stderr) = dtcprobe_in(
        &zones.web,
        &[
            "check",
            "-f",
            "json",
            "--timeout",
            "2s",
            "tcp://onlyhosts.zone.test:1",
        ],
    );
    let report = parse_report(&stdout);
    let resolve = hop(&report, "tcp://onlyhosts.zone.test:1", "resolve");
    assert_eq!(resolve["status"], "pass", "{resolve:#} {stderr}");
    assert_eq!(
        resolve["data"]["addresses"],
        serde_json::json!(["198.18.0.2"])
    );
    assert!(
        resolve["duration_seconds"].as_f64().unwrap() < 1.0,
        "waited for DNS: {resolve:#}"
    );
    assert!(started.elapsed().as_secs_f64() < 5.0);
}
