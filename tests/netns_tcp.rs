//! End-to-end: the real binary in a "web" namespace probing a "sql" namespace through real
//! nftables rules. Each TCP cause must come from the rule that really produces it.

use crate::support;

use std::time::Instant;

use support::netns::{can_run_netns_tests, dtcprobe_in, Zones, NO_ROUTE_IP, SQL_IP};
use support::{hop, parse_report};

const FIREWALL: &str = r#"
table ip zonefw {
  chain input {
    type filter hook input priority 0; policy accept;
    tcp dport 1434 drop
    tcp dport 1435 reject with tcp reset
    tcp dport 1437 reject with icmp type admin-prohibited
    tcp dport 1438 reject with icmp type host-unreachable
  }
}
"#;

#[test]
fn every_tcp_cause_comes_from_a_real_firewall_rule() {
    if !can_run_netns_tests("every_tcp_cause_comes_from_a_real_firewall_rule") {
        return;
    }
    let zones = Zones::new("dpt");
    zones.sql.nft(FIREWALL);
    let _open = zones
        .sql
        .listen_tcp(format!("{SQL_IP}:1433").parse().unwrap());
    // A listener behind the tcp-reset rule: the firewall answers, not the (absent) service.
    let _behind_reset = zones
        .sql
        .listen_tcp(format!("{SQL_IP}:1435").parse().unwrap());

    let url = |port: u16| format!("tcp://{SQL_IP}:{port}");
    let no_route = format!("tcp://{NO_ROUTE_IP}:1433");
    let targets = [
        url(1433),
        url(1434),
        url(1435),
        url(1436),
        url(1437),
        url(1438),
        no_route.clone(),
    ];
    let mut args = vec!["check", "-f", "json", "--timeout", "2s"];
    args.extend(targets.iter().map(String::as_str));

    let started = Instant::now();
    let (code, stdout, stderr) = dtcprobe_in(&zones.web, &args);
    let wall = started.elapsed();
    assert_eq!(code, 1, "a failed check exits 1; stderr: {stderr}");
    let report = parse_report(&stdout);

    let expect = [
        (url(1433), "pass", None),
        (url(1434), "fail", Some("timeout")),
        (url(1435), "fail", Some("refused")),
        (url(1436), "fail", Some("refused")),
        (url(1437), "fail", Some("prohibited")),
        (url(1438), "fail", Some("unreachable")),
        (no_route, "fail", Some("unreachable")),
    ];
    for (check, status, cause) in &expect {
        let tcp = hop(&report, check, "tcp");
        assert_eq!(tcp["status"], *status, "{check}: {tcp:#}");
        assert_eq!(tcp["cause"].as_str(), *cause, "{check}: {tcp:#}");
        if cause.is_some() {
            assert!(
                tcp["hint"].as_str().is_some_and(|h| !h.is_empty()),
                "{check} has no hint"
            );
        }
    }
    // The timeout is the one the user asked for, and the run took about the slowest chain (2s),
    // not the sum of them.
    let dropped = hop(&report, &url(1434), "tcp");
    let secs = dropped["duration_seconds"].as_f64().unwrap();
    assert!((1.9..2.6).contains(&secs), "drop took {secs}s");
    assert!(dropped["hint"]
        .as_str()
        .unwrap()
        .contains("silently dropped"));
    assert!(
        wall.as_secs_f64() < 5.0,
        "checks did not run concurrently: {wall:?}"
    );
    assert_eq!(report["summary"]["pass"], 1);
    assert_eq!(report["summary"]["fail"], 6);
}

#[test]
fn human_output_names_cause_and_hint() {
    if !can_run_netns_tests("human_output_names_cause_and_hint") {
        return;
    }
    let zones = Zones::new("dph");
    zones.sql.nft(FIREWALL);
    let (code, stdout, _) = dtcprobe_in(
        &zones.web,
        &["check", "--timeout", "1s", &format!("tcp://{SQL_IP}:1434")],
    );
    assert_eq!(code, 1);
    assert!(
        stdout.contains("FAIL") && stdout.contains("timeout"),
        "{stdout}"
    );
    assert!(stdout.contains("hint: no reply at all"), "{stdout}");
    assert!(!stdout.contains('\x1b'), "no colour when not a TTY");
}

#[test]
fn concurrency_bound_is_honoured() {
    if !can_run_netns_tests("concurrency_bound_is_honoured") {
        return;
    }
    let zones = Zones::new("dpc");
    zones.sql.nft(FIREWALL);
    let dropped = format!("tcp://{SQL_IP}:1434");
    // Three checks on a dropped port, 1s timeout: one at a time takes ~3s, all at once ~1s.
    // (Without the path trace, which would add a hop timeout to each.)
    let run = |concurrency: &str| {
        let started = Instant::now();
        let (code, _, _) = dtcprobe_in(
            &zones.web,
            &[
                "check",
                "--no-trace",
                "--timeout",
                "1s",
                "--concurrency",
                concurrency,
                &dropped,
                &dropped,
                &dropped,
            ],
        );
        assert_eq!(code, 1);
        started.elapsed().as_secs_f64()
    };
    let serial = run("1");
    let parallel = run("3");
    assert!(
        serial >= 2.9,
        "--concurrency 1 ran them together: {serial}s"
    );
    assert!(
        parallel < 2.0,
        "--concurrency 3 did not run them together: {parallel}s"
    );
}
