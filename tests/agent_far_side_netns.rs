//! Hop `far_side` end to end: `dtcprobe peer` in "web", the real agent beside the SQL host in the
//! "sql" zone, one router between the zones, real nftables rules. Needs root (namespaces).
//!
//! ```text
//! web 198.18.0.1 --- .254 router .254 --- 198.18.1.2 sqlhost   (listens on 1433)
//!                           .254 --- 198.18.2.3 agent     (zone "sql")
//! ```
//!
//! The agent reaches the SQL host through the router's sql-zone side, so a rule on the router's
//! web-facing interface (the firewall between the zones) does not stop it, while the SQL host's
//! own input chain stops everyone.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::agent_netns::{AgentProc, KEY};
use crate::report_schema::assert_valid;
use crate::support::netns::{can_run_netns_tests, dtcprobe_in, link_named, Netns};
use crate::support::{hop, parse_report};

const WEB_IP: &str = "198.18.0.1";
const SQL_HOST_IP: &str = "198.18.1.2";
const AGENT_IP: &str = "198.18.2.3";

struct Net {
    web: Netns,
    router: Netns,
    sql: Netns,
    agent: Netns,
    dir: tempfile::TempDir,
}

impl Net {
    fn new(prefix: &str) -> Net {
        let web = Netns::new(&format!("{prefix}w"));
        let router = Netns::new(&format!("{prefix}r"));
        let sql = Netns::new(&format!("{prefix}s"));
        let agent = Netns::new(&format!("{prefix}a"));
        link_named(
            &web,
            "eth0",
            "198.18.0.1/24",
            &router,
            "eth0",
            "198.18.0.254/24",
        );
        link_named(
            &router,
            "eth1",
            "198.18.1.254/24",
            &sql,
            "eth0",
            "198.18.1.2/24",
        );
        link_named(
            &router,
            "eth2",
            "198.18.2.254/24",
            &agent,
            "eth0",
            "198.18.2.3/24",
        );
        web.sh("ip route add default via 198.18.0.254");
        sql.sh("ip route add default via 198.18.1.254");
        agent.sh("ip route add default via 198.18.2.254");
        router.sh("sysctl -qw net.ipv4.ip_forward=1");
        // Names as the sysadmin would write them; no DNS server in the test, hosts files only.
        let hosts = format!("127.0.0.1 localhost\n{SQL_HOST_IP} sqlhost\n{WEB_IP} webhost\n");
        for ns in [&web, &router, &sql, &agent] {
            ns.etc_file("hosts", &hosts);
            ns.etc_file(
                "resolv.conf",
                "nameserver 198.18.0.254\noptions timeout:1 attempts:1\n",
            );
        }
        let dir = tempfile::tempdir().unwrap();
        crate::support::write_key(&dir.path().join("agent.key"), format!("{KEY}\n"));
        Net {
            web,
            router,
            sql,
            agent,
            dir,
        }
    }

    /// The agent, zone "sql", allowed to connect to the SQL host's port 1433 only.
    fn start_agent(&self) -> AgentProc {
        let config = self.dir.path().join("agent.toml");
        std::fs::write(&config, "zone = \"sql\"\nallow = [\"sqlhost:1433\"]\n").unwrap();
        AgentProc::start_on(
            &self.agent,
            AGENT_IP,
            &self.dir.path().join("agent.key"),
            Some(&config),
        )
    }

    /// `peer` from web with the given forward targets: exit code, JSON report, human report,
    /// firewall request (csv), wall time.
    fn peer(&self, targets: &[&str]) -> (i32, Value, String, String, Duration) {
        let key = self.dir.path().join("agent.key");
        let human = self.dir.path().join("report.txt");
        let csv = self.dir.path().join("fw.csv");
        let mut args = vec![
            "peer".to_string(),
            format!("{AGENT_IP}:7135"),
            "--key-file".into(),
            key.to_str().unwrap().into(),
            "--caller-name".into(),
            "webhost".into(),
            "--zone".into(),
            "web".into(),
            "-f".into(),
            "json".into(),
            "--timeout".into(),
            "2s".into(),
            "--no-trace".into(),
            "--output".into(),
            format!("human={}", human.display()),
            "--firewall-request".into(),
            format!("csv={}", csv.display()),
        ];
        args.extend(targets.iter().map(|t| t.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let started = Instant::now();
        let (code, stdout, stderr) = dtcprobe_in(&self.web, &args);
        let wall = started.elapsed();
        let report = parse_report(&stdout);
        assert!(
            stderr.is_empty() || !stderr.contains("panicked"),
            "{stderr}"
        );
        (
            code,
            report,
            std::fs::read_to_string(human).unwrap(),
            std::fs::read_to_string(csv).unwrap(),
            wall,
        )
    }
}

#[test]
fn the_router_drops_the_sql_port_and_the_agent_reaches_it_from_the_sql_zone() {
    if !can_run_netns_tests(
        "the_router_drops_the_sql_port_and_the_agent_reaches_it_from_the_sql_zone",
    ) {
        return;
    }
    let net = Net::new("dpfa");
    // The firewall between the zones: SYNs from the web side to the SQL port are dropped.
    net.router.nft(
        "table ip zonefw {\n chain forward {\n type filter hook forward priority 0; policy accept;\n \
         iifname \"eth0\" ip daddr 198.18.1.2 tcp dport 1433 drop\n }\n}\n",
    );
    let _sql = net
        .sql
        .listen_tcp(format!("{SQL_HOST_IP}:1433").parse().unwrap());
    let agent = net.start_agent();
    // 1434: nothing listens (refused), and the agent's allow list does not name it.
    let (code, report, human, csv, wall) = net.peer(&["tcp://sqlhost:1433", "tcp://sqlhost:1434"]);
    let log = agent.log();
    assert_eq!(code, 1, "{report:#}\nagent log:\n{log}");
    assert_valid("peer with far_side hops", &report);

    let forward = hop(&report, "tcp://sqlhost:1433", "tcp");
    assert_eq!(forward["cause"], "timeout", "{forward:#}");
    let far = hop(&report, "tcp://sqlhost:1433", "far_side");
    assert_eq!(far["status"], "pass", "{far:#}\nagent log:\n{log}");
    assert_eq!(far["data"]["from_zone"], "sql");
    assert_eq!(far["data"]["address"], format!("{SQL_HOST_IP}:1433"));
    assert_eq!(far["data"]["port"], 1433);
    let agent_name = far["data"]["agent"].as_str().unwrap();
    assert!(!agent_name.is_empty());
    assert!(
        far["detail"]
            .as_str()
            .unwrap()
            .contains("the block is on the path between the zones"),
        "{far:#}"
    );
    assert_eq!(
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "tcp://sqlhost:1433")
            .unwrap()["status"],
        "fail"
    );

    // Refused by the agent's policy: said so, and nothing sent.
    let refused = hop(&report, "tcp://sqlhost:1434", "far_side");
    assert_eq!(
        (refused["status"].as_str(), refused["cause"].as_str()),
        (Some("fail"), Some("config")),
        "{refused:#}"
    );
    assert!(refused["data"].get("address").is_none(), "{refused:#}");
    assert!(log.contains("refused far-side probe"), "{log}");

    // The firewall request carries the stronger evidence.
    let rows = report["firewall_requests"].as_array().unwrap();
    let row = rows
        .iter()
        .find(|r| r["ports"] == "1433")
        .unwrap_or_else(|| panic!("no row for 1433: {rows:#?}"));
    let evidence = format!("reachable from the sql zone's agent ({agent_name})");
    assert_eq!(row["far_side"], evidence.as_str());
    assert!(csv.contains(&evidence), "{csv}");
    assert!(
        human.contains(&format!("TCP 1433 DROPPED ({evidence})")),
        "{human}"
    );
    eprintln!("far_side pass run: {wall:?}");
    assert!(wall < Duration::from_secs(8), "took {wall:?}");
}

#[test]
fn the_sql_hosts_own_firewall_drops_it_and_the_agent_cannot_reach_it_either() {
    if !can_run_netns_tests(
        "the_sql_hosts_own_firewall_drops_it_and_the_agent_cannot_reach_it_either",
    ) {
        return;
    }
    let net = Net::new("dpfb");
    // The SQL host's own input chain: port 1433 dropped for everyone.
    net.sql.nft(
        "table ip hostfw {\n chain input {\n type filter hook input priority 0; policy accept;\n \
         tcp dport 1433 drop\n }\n}\n",
    );
    let _sql = net
        .sql
        .listen_tcp(format!("{SQL_HOST_IP}:1433").parse().unwrap());
    let agent = net.start_agent();
    let (code, report, human, csv, wall) = net.peer(&["tcp://sqlhost:1433"]);
    assert_eq!(code, 1, "{report:#}\nagent log:\n{}", agent.log());
    assert_valid("peer with a failed far_side hop", &report);

    assert_eq!(
        hop(&report, "tcp://sqlhost:1433", "tcp")["cause"],
        "timeout"
    );
    let far = hop(&report, "tcp://sqlhost:1433", "far_side");
    assert_eq!(
        (far["status"].as_str(), far["cause"].as_str()),
        (Some("fail"), Some("timeout")),
        "{far:#}\nagent log:\n{}",
        agent.log()
    );
    assert_eq!(far["data"]["cause"], "timeout");
    assert_eq!(far["data"]["address"], format!("{SQL_HOST_IP}:1433"));
    assert_eq!(far["data"]["from_zone"], "sql");
    assert!(
        far["hint"]
            .as_str()
            .unwrap()
            .contains("host's own firewall"),
        "{far:#}"
    );
    // No firewall change between the zones is asked for: the advice is the host's.
    assert!(
        report["firewall_requests"].as_array().unwrap().is_empty(),
        "{report:#}"
    );
    assert_eq!(csv.lines().count(), 1, "{csv}");
    assert!(
        human.contains("far_side TIMEOUT: unreachable from the target's zone too"),
        "{human}"
    );
    assert!(!human.contains("TCP 1433 DROPPED"), "{human}");
    eprintln!("far_side fail run: {wall:?}");
    // Forward connect (2s) then the far-side round (the agent's connect, 2s): both bounded.
    assert!(wall < Duration::from_secs(10), "took {wall:?}");
}
