//! docs/report.schema.json against real reports: every report here comes from the real binary
//! (`-f json`) run against real or scripted peers, and is checked with a real JSON Schema
//! validator (the `jsonschema` crate, draft 2020-12). If a field is renamed in the code, or a
//! hop gains a `data` key docs/report.md does not list, these tests fail; and the schema is
//! shown to reject a report with one field or one data key renamed, so it is not vacuous.

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, TcpListener};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::epm_peer::{peer as mapper_peer, peer_advertising, registered, CID_A};
use crate::support::netns::{can_run_netns_tests, dtcprobe_bin, dtcprobe_in, Zones, SQL_IP};
use crate::support::tds_peer::{PeerConfig, TdsPeer};
use crate::support::{parse_report, run_bin};

const SCHEMA: &str = include_str!("../docs/report.schema.json");
const MSDTC: &str = "906b0ce0-c70b-1067-b317-00dd010662da/v1.0";

fn validator() -> jsonschema::Validator {
    let schema: Value = serde_json::from_str(SCHEMA).expect("docs/report.schema.json is JSON");
    jsonschema::draft202012::new(&schema)
        .unwrap_or_else(|e| panic!("docs/report.schema.json is not a valid schema: {e}"))
}

/// The validator's complaints about `report`, one line each (empty: valid).
fn violations(report: &Value) -> Vec<String> {
    validator()
        .iter_errors(report)
        .map(|e| format!("{} (at {})", e, e.instance_path()))
        .collect()
}

pub(crate) fn assert_valid(what: &str, report: &Value) {
    let errors = violations(report);
    assert!(
        errors.is_empty(),
        "{what}: the report does not match docs/report.schema.json:\n  {}\nreport: {report:#}",
        errors.join("\n  ")
    );
}

/// Every hop kind (and its status) a report holds: proof of what a test really covered.
fn hop_kinds(report: &Value) -> Vec<String> {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["hops"].as_array().unwrap().iter())
        .map(|h| {
            format!(
                "{}:{}",
                h["hop"].as_str().unwrap(),
                h["status"].as_str().unwrap()
            )
        })
        .collect()
}

fn has(report: &Value, hop_status: &str) -> bool {
    hop_kinds(report).iter().any(|k| k == hop_status)
}

/// A JSON run of the binary on this host; the exit code is not the subject here.
fn json_run(args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-f", "json"]);
    let (_, out, err) = run_bin(&all);
    assert!(!out.is_empty(), "no report from {args:?}: {err}");
    parse_report(&out)
}

#[test]
fn tcp_and_dns_reports_on_loopback_match_the_schema() {
    let open = TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    let pass = format!("tcp://127.0.0.1:{}", open.local_addr().unwrap().port());
    let refused = format!("tcp://127.0.0.1:{closed_port}");
    let report = json_run(&[
        "check",
        "--timeout",
        "2s",
        &pass,
        &refused,
        "dns://localhost",
    ]);
    assert!(
        has(&report, "tcp:pass") && has(&report, "tcp:fail"),
        "{report:#}"
    );
    assert!(
        has(&report, "resolve:pass") || has(&report, "resolve:warn"),
        "{report:#}"
    );
    assert_valid("tcp pass/refused, dns on loopback", &report);
}

#[test]
fn firewall_causes_and_dns_failures_in_namespaces_match_the_schema() {
    if !can_run_netns_tests("firewall_causes_and_dns_failures_in_namespaces_match_the_schema") {
        return;
    }
    let zones = Zones::new("dpschema");
    zones.sql.nft(
        "table ip zonefw {\n  chain input {\n    type filter hook input priority 0; policy accept;\n    \
         tcp dport 1434 drop\n    tcp dport 1437 reject with icmp type admin-prohibited\n    \
         udp dport 53 drop\n  }\n}\n",
    );
    let _open = zones
        .sql
        .listen_tcp(format!("{SQL_IP}:1433").parse().unwrap());
    let url = |port: u16| format!("tcp://{SQL_IP}:{port}");
    let (pass, timeout, refused, prohibited) = (url(1433), url(1434), url(1436), url(1437));
    let (_, out, err) = dtcprobe_in(
        &zones.web,
        &[
            "check",
            "-f",
            "json",
            "--timeout",
            "1s",
            &pass,
            &timeout,
            &refused,
            &prohibited,
            "dns://db.zone.test",
        ],
    );
    let report = parse_report(&out);
    let causes: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["hops"].as_array().unwrap())
        .filter_map(|h| h["cause"].as_str())
        .collect();
    for cause in ["timeout", "refused", "prohibited", "dns_timeout"] {
        assert!(causes.contains(&cause), "no {cause} in {causes:?}: {err}");
    }
    assert_valid("tcp timeout/refused/prohibited, dns timeout", &report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn epm_reports_with_cid_and_list_endpoints_match_the_schema() {
    let mapper = mapper_peer(Ipv4Addr::LOCALHOST, registered(CID_A, 7)).await;
    let target = format!("epm://{}?iface={MSDTC}", mapper.addr);
    let report = tokio::task::spawn_blocking(move || {
        json_run(&["check", "--timeout", "2s", "--list-endpoints", &target])
    })
    .await
    .unwrap();
    let epm = &report["checks"][0]["hops"][2];
    assert_eq!(epm["hop"], "epm", "{report:#}");
    assert_eq!(epm["data"]["cid"], CID_A, "{report:#}");
    assert!(
        epm["data"]["entries"].is_array() || epm["data"]["entries_error"].is_string(),
        "--list-endpoints left no trace: {report:#}"
    );
    assert!(has(&report, "rpc_port:pass"), "{report:#}");
    assert!(has(&report, "rpc_bind:pass"), "{report:#}");
    assert_valid("epm + rpc_port + rpc_bind with --list-endpoints", &report);

    // rpc_bind warning `address_mismatch` (a tower advertising another address).
    let natted = peer_advertising(
        Ipv4Addr::LOCALHOST,
        Ipv4Addr::new(198, 18, 7, 7),
        registered(CID_A, 4096),
    )
    .await;
    let target = format!("epm://{}", natted.addr);
    let report =
        tokio::task::spawn_blocking(move || json_run(&["check", "--timeout", "2s", &target]))
            .await
            .unwrap();
    assert!(has(&report, "rpc_bind:warn"), "{report:#}");
    assert_valid("rpc_bind address_mismatch", &report);
}

#[test]
fn mssql_reports_match_the_schema() {
    let cfg = PeerConfig::default();
    let password = cfg.password.clone();
    let peer = TdsPeer::start(cfg);
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, format!("{password}\n")).unwrap();
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "not-the-password\n").unwrap();
    let url =
        |db: &str, query: &str| format!("mssql://probe@127.0.0.1:{}/{db}?{query}", peer.port());
    let good = url("app", "tx=local&trust_server_certificate=true");
    let report = json_run(&[
        "check",
        "--timeout",
        "2s",
        "--password-file",
        pw.to_str().unwrap(),
        &good,
    ]);
    assert!(
        has(&report, "login:pass") && has(&report, "tx_local:pass"),
        "{report:#}"
    );
    assert_valid("mssql login + tx_local pass", &report);

    let report = json_run(&[
        "check",
        "--timeout",
        "2s",
        "--password-file",
        wrong.to_str().unwrap(),
        &good,
    ]);
    assert!(
        has(&report, "login:fail") && has(&report, "tx_local:skip"),
        "{report:#}"
    );
    assert_valid("mssql login refused", &report);
}

/// Starts `dtcprobe agent` on loopback with `config`; returns the guard and its address.
fn start_agent(
    key: &std::path::Path,
    config: &std::path::Path,
) -> (crate::support::netns::Daemon, String) {
    let mut agent = Command::new(dtcprobe_bin())
        .args(["agent", "-v", "--listen", "127.0.0.1:0", "--key-file"])
        .arg(key)
        .arg("-c")
        .arg(config)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = agent.stderr.take().unwrap();
    let guard = crate::support::netns::Daemon::adopt(agent, "dtcprobe agent");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("agent did not start");
        if line.contains("agent listening") {
            let addr = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("listen="))
                .expect("listen= in the agent's log line")
                .to_string();
            return (guard, addr);
        }
    }
}

#[test]
fn peer_reports_and_baseline_match_the_schema() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("agent.key");
    crate::support::write_key(
        &key,
        "7b23c70513a2fe886d36ef187d790fa7cb13d43d25a9128cc136bd83fa0c5158",
    );
    let config = dir.path().join("agent.toml");
    std::fs::write(&config, format!("zone = \"sql\"\ncid = \"{CID_A}\"\n")).unwrap();
    let (_agent, agent_addr) = start_agent(&key, &config);

    let open = TcpListener::bind("127.0.0.1:0").unwrap();
    let reverse_open = format!("tcp://caller:{}", open.local_addr().unwrap().port());
    let baseline = dir.path().join("before.json");
    let peer_args = |extra: &[&str]| {
        let mut args = vec![
            "peer".to_string(),
            agent_addr.clone(),
            "--timeout".into(),
            "2s".into(),
            "--zone".into(),
            "web".into(),
            "--cid".into(),
            CID_A.to_uppercase(),
            "--key-file".into(),
            key.to_string_lossy().into_owned(),
            "--reverse".into(),
            reverse_open.clone(),
            "--reverse".into(),
            "tcp://caller:9".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    let baseline_out = format!("json={}", baseline.display());
    let args = peer_args(&["--output", &baseline_out]);
    let report = json_run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let names: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    for name in ["agent", "callback", "msdtc_cid"] {
        assert!(names.contains(&name), "no {name} check in {names:?}");
    }
    assert!(has(&report, "callback:pass"), "{report:#}");
    assert!(
        has(&report, "dtc_cid:fail"),
        "same CID must fail: {report:#}"
    );
    assert!(
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["direction"] == "reverse" && c["kind"] == "tcp"),
        "no reverse tcp check: {report:#}"
    );
    assert_valid("peer against an agent", &report);

    // The reverse port closes: the comparison reports a regression in the `baseline` field.
    drop(open);
    let baseline_arg = baseline.to_string_lossy().into_owned();
    let args = peer_args(&["--baseline", &baseline_arg]);
    let report = json_run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let regressions = report["baseline"]["regressions"].as_array();
    assert!(
        regressions.is_some_and(|r| !r.is_empty()),
        "no regression in {report:#}"
    );
    assert_valid("peer with --baseline", &report);
}

/// Where in a report a renamed field lives.
type Locate = fn(&mut Value) -> &mut Value;

/// The schema is not vacuous: one renamed report field, or one renamed data key, is rejected.
#[test]
fn schema_rejects_a_renamed_field_or_data_key() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("tcp://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let report = json_run(&["check", &url]);
    assert_valid("tcp pass", &report);

    let rename = |v: &mut Value, from: &str, to: &str| {
        let map = v.as_object_mut().unwrap();
        let value = map
            .remove(from)
            .unwrap_or_else(|| panic!("no {from} in {map:?}"));
        map.insert(to.to_string(), value);
    };
    let cases: [(&str, Locate, &str, &str); 4] = [
        ("report field", |r| r, "duration_seconds", "duration"),
        ("check field", |r| &mut r["checks"][0], "target", "url"),
        (
            "hop field",
            |r| &mut r["checks"][0]["hops"][1],
            "detail",
            "details",
        ),
        (
            "tcp data key",
            |r| &mut r["checks"][0]["hops"][2]["data"],
            "port",
            "tcp_port",
        ),
    ];
    for (what, at, from, to) in cases {
        let mut broken = report.clone();
        rename(at(&mut broken), from, to);
        assert!(
            !violations(&broken).is_empty(),
            "{what}: `{from}` renamed to `{to}` still validates"
        );
    }

    let mut wrong_cause = report.clone();
    wrong_cause["checks"][0]["hops"][1]["status"] = "fail".into();
    wrong_cause["checks"][0]["hops"][1]["cause"] = "firewall".into();
    assert!(
        !violations(&wrong_cause).is_empty(),
        "a cause outside the fixed list validates"
    );
}
