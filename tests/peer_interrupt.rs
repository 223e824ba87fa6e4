//! Issue 12 item 3 for `peer`: SIGINT while a forward check waits on a dropped port and the agent
//! is still running a reverse check to a dropped port. The partial report goes to stdout and to
//! every --output / --firewall-request: finished hops as they are (the agent session, the
//! callback that arrived), every unfinished hop `skip` / `interrupted`, exit 130.

use crate::agent_netns::{setup, AgentProc};
use crate::report_schema::assert_valid;
use crate::support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::hop;
use support::netns::{can_run_netns_tests, dtcprobe_bin, SQL_IP};

fn skip_interrupted(report: &Value, check: &str, name: &str) {
    let h = hop(report, check, name);
    assert_eq!(
        (h["status"].as_str(), h["cause"].as_str()),
        (Some("skip"), Some("interrupted")),
        "{check}/{name}: {report:#}"
    );
}

#[test]
fn sigint_during_peer_prints_and_writes_the_partial_report_and_exits_130() {
    let test = "sigint_during_peer_prints_and_writes_the_partial_report_and_exits_130";
    if !can_run_netns_tests(test) {
        return;
    }
    // The agent may hold a reverse hop for up to 30s: longer than the test waits.
    let (s, config) = setup("dppi", "zone = \"sql\"\nmax_hop_timeout = \"30s\"\n");
    // Forward: port 1139 on the agent's side is dropped, 1140 answers.
    s.zones.sql.nft(
        "table ip zonefw {\n chain input {\n type filter hook input priority 0; policy accept;\n tcp dport 1139 drop\n }\n}\n",
    );
    let _open = s
        .zones
        .sql
        .listen_tcp(format!("{SQL_IP}:1140").parse().unwrap());
    // Reverse: port 1135 on this side is dropped (the callback port, ephemeral, is not).
    s.zones.web.nft(
        "table ip zonefw {\n chain input {\n type filter hook input priority 0; policy accept;\n tcp dport 1135 drop\n }\n}\n",
    );
    let agent = AgentProc::start(&s.zones.sql, &s.key, Some(&config));

    let json = s.dir.path().join("partial.json");
    let fw = s.dir.path().join("fw.csv");
    let dropped = format!("tcp://{SQL_IP}:1139");
    let open = format!("tcp://{SQL_IP}:1140");
    let started = Instant::now();
    let child = s
        .zones
        .web
        .command(dtcprobe_bin())
        .args(["peer", &format!("{SQL_IP}:7135"), "--key-file"])
        .arg(&s.key)
        .args([
            "--caller-name",
            "webhost",
            "--zone",
            "web",
            "-f",
            "json",
            "--timeout",
            "30s",
            &dropped,
            &open,
            "--reverse",
            "tcp://caller:1135",
            "--output",
            &format!("json={}", json.display()),
            "--firewall-request",
            &format!("csv={}", fw.display()),
        ])
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = crate::support::interrupt_and_wait(
        child,
        Duration::from_millis(1500),
        Duration::from_secs(10),
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(130),
        "{stdout}\n{stderr}\nagent log:\n{}",
        agent.log()
    );
    assert!(stderr.contains("partial"), "{stderr}");

    // Stdout and the --output file carry the same partial report, valid against the schema.
    let printed: Value = serde_json::from_str(&stdout).expect("JSON report on stdout");
    assert_valid("interrupted peer run (stdout)", &printed);
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_valid("interrupted peer run (--output)", &report);
    assert_eq!(printed["checks"], report["checks"]);

    // Forward: the open port as it is, the dropped one unfinished.
    assert_eq!(hop(&report, &open, "tcp")["status"], "pass", "{report:#}");
    assert_eq!(hop(&report, &dropped, "resolve")["status"], "pass");
    skip_interrupted(&report, &dropped, "tcp");

    // Agent side: the session finished (authenticated), the callback arrived, the agent's
    // answer (its name lookup, the reverse check) never did.
    assert_eq!(hop(&report, "agent", "tcp")["status"], "pass", "{report:#}");
    assert_eq!(hop(&report, "agent", "login")["status"], "pass");
    let callback = hop(&report, "callback", "callback");
    assert_eq!(callback["status"], "pass", "{report:#}");
    assert_eq!(callback["data"]["from"], SQL_IP);
    skip_interrupted(&report, "callback", "resolve");
    skip_interrupted(&report, "reverse tcp://caller:1135", "tcp");
    let reverse = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "reverse tcp://caller:1135")
        .unwrap();
    assert_eq!(reverse["direction"], "reverse");
    assert_eq!(reverse["target"], "tcp://caller:1135");
    // Nothing unfinished is a pass or a failure.
    for c in report["checks"].as_array().unwrap() {
        assert_ne!(c["status"], "fail", "{c:#}");
    }

    // An unfinished hop is no evidence of a block: the firewall request is written, with no row.
    assert_eq!(report["firewall_requests"], serde_json::json!([]));
    let csv = std::fs::read_to_string(&fw).unwrap();
    assert_eq!(csv.lines().count(), 1, "{csv}");
}

/// Stopped while waiting for the agent's hello (a port that accepts and stays silent): the
/// connection passed, login and everything after it are `skip` / `interrupted`, never a failure.
#[tokio::test]
async fn agent_session_stopped_before_login_reports_the_rest_as_interrupted() {
    use dtcprobe::agent::client::{agent_checks_until, PeerOptions};
    use dtcprobe::agent::protocol::Key;
    use dtcprobe::model::{Cause, HopKind, Status};

    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let (conn, _) = silent.accept().await.unwrap();
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(conn);
    });
    let opts = PeerOptions {
        agent: addr.to_string(),
        key: Key::from_bytes(
            dtcprobe::agent::protocol::example_key_text("interrupt").as_bytes(),
            "test",
        )
        .unwrap(),
        agent_pubkey: None,
        callback_bind: "127.0.0.1".parse().unwrap(),
        callback_port: 0,
        caller_name: None,
        zone: Some("web".into()),
        reverse: dtcprobe::agent::cmd::parse_reverse(&["tcp://caller:1135".into()]).unwrap(),
        hop_timeout: Duration::from_secs(20),
        session_timeout: Duration::from_secs(30),
        cid: Some("{5d1e0000-0000-0000-0000-000000000001}".into()),
        trace: true,
    };
    let started = Instant::now();
    let (outcome, stopped) =
        agent_checks_until(&opts, tokio::time::sleep(Duration::from_millis(300))).await;
    held.abort();
    assert!(stopped);
    assert!(started.elapsed() < Duration::from_secs(5));
    let find = |name: &str, kind: HopKind| {
        let c = outcome
            .checks
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no check {name}: {:#?}", outcome.checks));
        c.hops
            .iter()
            .find(|h| h.hop == kind)
            .unwrap_or_else(|| panic!("no hop {kind:?} in {c:#?}"))
            .clone()
    };
    assert_eq!(find("agent", HopKind::Tcp).status, Status::Pass);
    for (name, kind) in [
        ("agent", HopKind::Login),
        ("callback", HopKind::Resolve),
        ("callback", HopKind::Callback),
        ("reverse tcp://caller:1135", HopKind::Tcp),
        ("msdtc_cid", HopKind::DtcCid),
    ] {
        let h = find(name, kind);
        assert_eq!(
            (h.status, h.cause),
            (Status::Skip, Some(Cause::Interrupted)),
            "{name}: {h:#?}"
        );
    }
}
