//! End-to-end `dtcprobe peer` against `dtcprobe agent`, both the real binary, in two network
//! namespaces ("web" = the near side at 198.18.0.1, "sql" = the agent at 198.18.0.2) with real
//! nftables rules between them.

use crate::support::{self, samba};

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::netns::{
    can_run_netns_tests, dtcprobe_bin, dtcprobe_in, link_named, Netns, Zones, SQL_IP, WEB_IP,
};
use support::{hop, parse_report};

pub(crate) const AGENT_PORT: u16 = 7135;
pub(crate) const KEY: &str = "bfea18b68135e3daccd6610910941121f7f99e252d17bab7c50924da329362c6";

/// The agent process; killed on drop.
pub(crate) struct AgentProc {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl AgentProc {
    pub(crate) fn start(ns: &Netns, key: &Path, config: Option<&Path>) -> AgentProc {
        AgentProc::start_on(ns, SQL_IP, key, config)
    }

    /// As [`AgentProc::start`], listening on `ip` (port [`AGENT_PORT`]).
    pub(crate) fn start_on(ns: &Netns, ip: &str, key: &Path, config: Option<&Path>) -> AgentProc {
        let mut cmd = ns.command(dtcprobe_bin());
        cmd.args([
            "agent",
            "-v",
            "--listen",
            &format!("{ip}:{AGENT_PORT}"),
            "--key-file",
        ])
        .arg(key)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        if let Some(c) = config {
            cmd.arg("-c").arg(c);
        }
        let mut child = cmd.spawn().expect("spawn agent");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let agent = AgentProc { child, log };
        agent.wait_for("agent listening", Duration::from_secs(20));
        agent
    }

    pub(crate) fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn wait_for(&self, needle: &str, limit: Duration) {
        let started = Instant::now();
        while started.elapsed() < limit {
            if self.log().contains(needle) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("agent never logged `{needle}`:\n{}", self.log());
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) struct Setup {
    pub(crate) zones: Zones,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) key: PathBuf,
}

pub(crate) fn setup(prefix: &str, agent_config: &str) -> (Setup, PathBuf) {
    let zones = Zones::new(prefix);
    // Each side knows the other by name, as DTC requires (hosts files, no DNS server needed;
    // the zones have none, so this also proves a hosts-file name never waits for DNS).
    let sql_hosts = format!("127.0.0.1 localhost\n{WEB_IP} webhost\n");
    zones.sql.etc_file("hosts", &sql_hosts);
    zones
        .web
        .etc_file("hosts", &format!("127.0.0.1 localhost\n{SQL_IP} sqlhost\n"));
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("agent.key");
    crate::support::write_key(&key, format!("{KEY}\n"));
    let config = dir.path().join("agent.toml");
    std::fs::write(&config, agent_config).unwrap();
    (Setup { zones, dir, key }, config)
}

fn peer_args<'a>(key: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "peer",
        "198.18.0.2:7135",
        "--key-file",
        key,
        "--caller-name",
        "webhost",
        "--zone",
        "web",
    ];
    args.extend_from_slice(&["-f", "json", "--timeout", "2s"]);
    args.extend_from_slice(extra);
    args
}

fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {report:#}"))
}

/// Drops new inbound TCP connections from the agent's zone: the classic one-way firewall.
pub(crate) const ONE_WAY: &str = r#"
table ip zonefw {
  chain input {
    type filter hook input priority 0; policy accept;
    ip saddr 198.18.0.2 tcp flags & (syn | ack) == syn drop
  }
}
"#;

#[test]
fn callback_allowed_reports_both_directions_passing() {
    if !can_run_netns_tests("callback_allowed_reports_both_directions_passing") {
        return;
    }
    let (s, config) = setup("dpaa", "zone = \"sql\"\n");
    let _sql = s
        .zones
        .sql
        .listen_tcp(format!("{SQL_IP}:1433").parse().unwrap());
    let _epm = s
        .zones
        .web
        .listen_tcp(format!("{WEB_IP}:1135").parse().unwrap());
    let agent = AgentProc::start(&s.zones.sql, &s.key, Some(&config));
    let key = s.key.to_str().unwrap();
    let args = peer_args(
        key,
        &["tcp://198.18.0.2:1433", "--reverse", "tcp://caller:1135"],
    );
    let (code, stdout, stderr) = dtcprobe_in(&s.zones.web, &args);
    let report = parse_report(&stdout);
    assert_eq!(
        code,
        0,
        "stderr: {stderr}\n{report:#}\nagent log:\n{}",
        agent.log()
    );

    let fwd = check(&report, "tcp://198.18.0.2:1433");
    assert_eq!(fwd["direction"], "forward");
    assert_eq!(
        (fwd["from"].as_str(), fwd["to"].as_str()),
        (Some("web"), Some("sql"))
    );
    assert_eq!(hop(&report, "agent", "login")["status"], "pass");

    let cb = check(&report, "callback");
    assert_eq!(cb["direction"], "reverse");
    assert_eq!(
        (cb["from"].as_str(), cb["to"].as_str()),
        (Some("sql"), Some("web"))
    );
    let callback = hop(&report, "callback", "callback");
    assert_eq!(callback["status"], "pass", "{cb:#}");
    assert_eq!(callback["data"]["from"], SQL_IP);
    // The agent resolved this host's name to the address the connection came from.
    let resolve = hop(&report, "callback", "resolve");
    assert_ne!(resolve["status"], "fail", "{resolve:#}");
    assert_eq!(resolve["data"]["caller_address"], WEB_IP);
    assert!(
        resolve["data"]["addresses"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == WEB_IP),
        "{resolve:#}"
    );

    let rev = check(&report, "reverse tcp://caller:1135");
    assert_eq!(rev["direction"], "reverse");
    assert_eq!(rev["status"], "pass", "{rev:#}");
    assert_eq!(rev["target"], format!("tcp://{WEB_IP}:1135"));
}

#[test]
fn one_way_firewall_fails_callback_with_timeout_and_bidirectional_hint() {
    if !can_run_netns_tests("one_way_firewall_fails_callback_with_timeout_and_bidirectional_hint") {
        return;
    }
    let (s, config) = setup("dpab", "zone = \"sql\"\n");
    s.zones.web.nft(ONE_WAY);
    let _sql = s
        .zones
        .sql
        .listen_tcp(format!("{SQL_IP}:1433").parse().unwrap());
    let _epm = s
        .zones
        .web
        .listen_tcp(format!("{WEB_IP}:1135").parse().unwrap());
    let agent = AgentProc::start(&s.zones.sql, &s.key, Some(&config));
    let key = s.key.to_str().unwrap();
    let args = peer_args(
        key,
        &["tcp://198.18.0.2:1433", "--reverse", "tcp://caller:1135"],
    );
    let started = Instant::now();
    let (code, stdout, stderr) = dtcprobe_in(&s.zones.web, &args);
    let wall = started.elapsed();
    let report = parse_report(&stdout);
    assert_eq!(
        code,
        1,
        "stderr: {stderr}\n{report:#}\nagent log:\n{}",
        agent.log()
    );

    // Forward: open.
    assert_eq!(check(&report, "tcp://198.18.0.2:1433")["status"], "pass");
    assert_eq!(check(&report, "agent")["status"], "pass");
    // Reverse: dropped, so a timeout, with the hint about rules in both directions.
    let callback = hop(&report, "callback", "callback");
    assert_eq!(callback["status"], "fail", "{callback:#}");
    assert_eq!(callback["cause"], "timeout", "{callback:#}");
    assert!(
        callback["hint"]
            .as_str()
            .unwrap()
            .contains("BOTH directions"),
        "{callback:#}"
    );
    let rev = hop(&report, "reverse tcp://caller:1135", "tcp");
    assert_eq!(rev["cause"], "timeout", "{rev:#}");
    assert_eq!(
        check(&report, "reverse tcp://caller:1135")["direction"],
        "reverse"
    );
    assert!(wall < Duration::from_secs(10), "took {wall:?}");
}

#[test]
fn wrong_key_is_refused_and_logged_without_the_key() {
    if !can_run_netns_tests("wrong_key_is_refused_and_logged_without_the_key") {
        return;
    }
    let (s, config) = setup("dpac", "");
    let agent = AgentProc::start(&s.zones.sql, &s.key, Some(&config));
    let other = s.dir.path().join("other.key");
    let other_key = "da9c4f3c85e6cebdcccb6e22b83132b05d28e72dbbc8f158c3593a39202ac3da";
    crate::support::write_key(&other, other_key);
    let (code, stdout, stderr) =
        dtcprobe_in(&s.zones.web, &peer_args(other.to_str().unwrap(), &[]));
    let report = parse_report(&stdout);
    assert_eq!(code, 1, "stderr: {stderr}\n{report:#}");
    let login = hop(&report, "agent", "login");
    assert_eq!(login["status"], "fail");
    assert_eq!(login["cause"], "auth_failed");
    assert_eq!(hop(&report, "callback", "callback")["status"], "skip");
    agent.wait_for("refused unauthenticated request", Duration::from_secs(5));
    let log = agent.log();
    assert!(
        !log.contains(KEY) && !log.contains(other_key),
        "key in the agent log:\n{log}"
    );
    assert!(!stdout.contains(KEY) && !stderr.contains(other_key));
}

#[test]
fn agent_refuses_to_check_a_third_host_not_in_its_allow_list() {
    if !can_run_netns_tests("agent_refuses_to_check_a_third_host_not_in_its_allow_list") {
        return;
    }
    // A third host behind the agent, at 198.18.1.1; only its port 1138 is in the allow list.
    let (s, config) = setup("dpad", "zone = \"sql\"\nallow = [\"198.18.1.1:1138\"]\n");
    let third = Netns::new("dpad3");
    link_named(
        &s.zones.sql,
        "eth1",
        "198.18.1.2/24",
        &third,
        "eth0",
        "198.18.1.1/24",
    );
    third.nft(
        "table ip obs {\n chain input {\n type filter hook input priority 0; policy accept;\n tcp dport 1137 counter\n }\n}\n",
    );
    let _l1 = third.listen_tcp("198.18.1.1:1137".parse().unwrap());
    let _l2 = third.listen_tcp("198.18.1.1:1138".parse().unwrap());
    let agent = AgentProc::start(&s.zones.sql, &s.key, Some(&config));
    let key = s.key.to_str().unwrap();
    let args = peer_args(
        key,
        &[
            "--reverse",
            "tcp://198.18.1.1:1137",
            "--reverse",
            "tcp://198.18.1.1:1138",
        ],
    );
    let (code, stdout, stderr) = dtcprobe_in(&s.zones.web, &args);
    let report = parse_report(&stdout);
    // A refused check is a configuration matter (cause `config`): inconclusive, exit 3.
    assert_eq!(code, 3, "stderr: {stderr}\n{report:#}");

    let refused = hop(&report, "reverse tcp://198.18.1.1:1137", "tcp");
    assert_eq!(refused["status"], "fail");
    assert_eq!(refused["cause"], "config");
    assert!(
        refused["detail"].as_str().unwrap().contains("allow list"),
        "{refused:#}"
    );
    // The allowed one ran (the policy is not simply "refuse everything").
    assert_eq!(
        check(&report, "reverse tcp://198.18.1.1:1138")["status"],
        "pass",
        "{report:#}"
    );
    // And the refused one never sent a packet to the third host.
    let counter = third.sh("nft list chain ip obs input");
    assert!(
        counter.contains("packets 0 "),
        "the agent contacted the third host:\n{counter}"
    );
    agent.wait_for("refused reverse check", Duration::from_secs(5));
}

#[test]
fn agent_killed_mid_run_is_reported_without_hanging() {
    if !can_run_netns_tests("agent_killed_mid_run_is_reported_without_hanging") {
        return;
    }
    let (s, config) = setup("dpae", "zone = \"sql\"\n");
    // The reverse check's target drops SYNs, so the agent is busy with it for the hop timeout.
    s.zones.web.nft(
        "table ip zonefw {\n chain input {\n type filter hook input priority 0; policy accept;\n tcp dport 1139 drop\n }\n}\n",
    );
    let mut agent = AgentProc::start(&s.zones.sql, &s.key, Some(&config));
    let key = s.key.to_str().unwrap();
    let mut args = peer_args(key, &["--reverse", "tcp://caller:1139"]);
    // A long hop timeout: without the kill, the run would take well over 8s.
    args.retain(|a| *a != "2s");
    let pos = args.iter().position(|a| *a == "--timeout").unwrap();
    args.insert(pos + 1, "8s");
    let started = Instant::now();
    let peer = s
        .zones
        .web
        .command(dtcprobe_bin())
        .args(&args)
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    agent.wait_for("running reverse check", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(300));
    agent.child.kill().unwrap();
    let _ = agent.child.wait();
    let killed_at = started.elapsed();

    // Bounded wait for the near side.
    let out = {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(peer.wait_with_output());
        });
        rx.recv_timeout(Duration::from_secs(20))
            .expect("peer hung after the agent died")
            .unwrap()
    };
    let wall = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = parse_report(&stdout);
    assert_eq!(out.status.code(), Some(1), "{report:#}");
    assert!(
        wall < killed_at + Duration::from_secs(3),
        "near side took {wall:?} (agent killed at {killed_at:?})"
    );
    let rev = hop(&report, "reverse tcp://caller:1139", "tcp");
    assert_eq!(rev["status"], "fail", "{rev:#}");
    assert_eq!(rev["cause"], "reset", "{rev:#}");
    assert!(
        rev["detail"]
            .as_str()
            .unwrap()
            .contains("closed the connection"),
        "{rev:#}"
    );
    assert!(
        rev["hint"].as_str().unwrap().contains("agent stopped"),
        "{rev:#}"
    );
    // The callback had already arrived before the kill: the near side saw it and says so, but
    // without the agent's answer nothing confirms it was the agent's (issue 25): `warn`, and the
    // lost answer fails the check, so the run cannot pass on it.
    let callback = hop(&report, "callback", "callback");
    assert_eq!(callback["status"], "warn", "{report:#}");
    assert_eq!(callback["cause"], "callback_unverified", "{report:#}");
    assert_eq!(
        hop(&report, "callback", "resolve")["status"],
        "fail",
        "{report:#}"
    );
}

/// The reverse direction MSDTC needs, end to end: the agent asks the endpoint mapper on this host
/// (Samba's, on TCP 135) for an interface and connects to the dynamic port it returns. This zone's
/// firewall lets 135 in from the agent's zone but drops the dynamic range: reverse `epm` pass,
/// reverse `rpc_port` fail with `timeout`, while the forward direction is untouched.
#[test]
fn reverse_epm_through_the_agent_finds_the_dropped_dynamic_range() {
    let test = "reverse_epm_through_the_agent_finds_the_dropped_dynamic_range";
    if !can_run_netns_tests(test) || !samba::available(test) {
        return;
    }
    let (s, config) = setup("dpaf", "zone = \"sql\"\n");
    let _samba = samba::Samba::start(&s.zones.web, WEB_IP);
    s.zones.web.nft(
        "table inet zonefw {\n chain input {\n type filter hook input priority 0; policy accept;\n \
         ip saddr 198.18.0.2 tcp dport 49152-65535 tcp flags & (syn | ack) == syn drop\n }\n}\n",
    );
    let agent = AgentProc::start(&s.zones.sql, &s.key, Some(&config));
    let key = s.key.to_str().unwrap();
    let reverse = format!("epm://caller?iface={}", samba::LSARPC);
    // The callback port pinned below the dropped range, as a firewall rule would name it.
    let args = peer_args(key, &["--reverse", &reverse, "--callback-port", "40123"]);
    let (code, stdout, stderr) = dtcprobe_in(&s.zones.web, &args);
    let report = parse_report(&stdout);
    assert_eq!(
        code,
        1,
        "stderr: {stderr}\n{report:#}\nagent log:\n{}",
        agent.log()
    );
    let name = format!("reverse {reverse}");
    let c = check(&report, &name);
    assert_eq!(c["direction"], "reverse");
    assert_eq!(c["kind"], "epm");
    let epm = hop(&report, &name, "epm");
    assert_eq!(epm["status"], "pass", "{epm:#}");
    let rpc = hop(&report, &name, "rpc_port");
    assert_eq!(
        (rpc["status"].as_str(), rpc["cause"].as_str()),
        (Some("fail"), Some("timeout")),
        "{rpc:#}"
    );
    assert_eq!(check(&report, "agent")["status"], "pass");
    let callback = hop(&report, "callback", "callback");
    assert_eq!(callback["status"], "pass", "{callback:#}");
    assert_eq!(callback["data"]["port"], 40123);
}
