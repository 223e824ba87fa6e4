//! `dtcprobe matrix` end to end: three zones in network namespaces, each with a real
//! `dtcprobe agent`, joined by a router namespace that runs the matrix (so the agents' callbacks
//! come back to it) and holds the nftables rules between the zones. The agents' allow lists are
//! what `dtcprobe matrix --print-allow` prints. Addresses: zone i is 198.18.(10+i).2/24, the
//! router 198.18.(10+i).1. Also: a zone whose agent cannot be reached, the JSON against
//! docs/matrix.schema.json, and config errors (no root needed).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::agent_netns::AgentProc;
use crate::support::netns::{can_run_netns_tests, dtcprobe_in, link_named, Listener, Netns};
use crate::support::zone_agent::allow_section;
use crate::support::{run_bin, write_key};

const KEY: &str = "48e7a8aa6ab0c7b1a2ac2c8e0dc39b7186e45367300fd043d53d78a64aaea15a";
const MATRIX_SCHEMA: &str = include_str!("../docs/matrix.schema.json");
const REPORT_SCHEMA: &str = include_str!("../docs/report.schema.json");
const ZONES: [&str; 3] = ["web", "app", "sql"];
const SERVICE_PORT: u16 = 1433;

fn zone_ip(i: usize) -> String {
    format!("198.18.{}.2", 11 + i)
}

fn router_ip(i: usize) -> String {
    format!("198.18.{}.1", 11 + i)
}

/// The router, the three zones (each with a listener on the service port) and the files.
struct Lab {
    router: Netns,
    zones: Vec<Netns>,
    _listeners: Vec<Listener>,
    dir: tempfile::TempDir,
}

impl Lab {
    fn new(prefix: &str) -> Lab {
        let router = Netns::new(&format!("{prefix}r"));
        router.sh("sysctl -qw net.ipv4.ip_forward=1");
        let mut zones = Vec::new();
        let mut listeners = Vec::new();
        for i in 0..ZONES.len() {
            let z = Netns::new(&format!("{prefix}{i}"));
            // One link per zone; the router's end of each is named after the zone.
            link_named(
                &z,
                "eth0",
                &format!("{}/24", zone_ip(i)),
                &router,
                &format!("z{i}"),
                &format!("{}/24", router_ip(i)),
            );
            z.sh(&format!("ip route add default via {}", router_ip(i)));
            // Nothing in the test may wait on a real DNS server.
            z.etc_file(
                "resolv.conf",
                "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n",
            );
            z.etc_file("hosts", "127.0.0.1 localhost\n");
            listeners.push(z.listen_tcp(format!("{}:{SERVICE_PORT}", zone_ip(i)).parse().unwrap()));
            zones.push(z);
        }
        let dir = tempfile::tempdir().unwrap();
        write_key(&dir.path().join("agent.key"), format!("{KEY}\n"));
        Lab {
            router,
            zones,
            _listeners: listeners,
            dir,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes matrix.toml: every zone reaches every other on the service port.
    fn write_matrix(&self, timeout: &str) -> PathBuf {
        let mut text = format!("key_file = \"agent.key\"\ntimeout = \"{timeout}\"\n");
        for (i, name) in ZONES.iter().enumerate() {
            text.push_str(&format!(
                "\n[[zone]]\nname = \"{name}\"\nagent = \"{}:7135\"\nhosts = [\"{}\"]\n",
                zone_ip(i),
                zone_ip(i)
            ));
        }
        text.push_str(&format!(
            "\n[[reach]]\nfrom = \"*\"\nto = \"*\"\ntcp = [{SERVICE_PORT}]\n"
        ));
        let path = self.path("matrix.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Starts the agents of the zones in `which`, with the allow lists `--print-allow` gives.
    fn start_agents(&self, matrix: &Path, which: &[usize]) -> Vec<AgentProc> {
        let (code, allow, err) = dtcprobe_in(
            &self.router,
            &["matrix", "-c", matrix.to_str().unwrap(), "--print-allow"],
        );
        assert_eq!(code, 0, "--print-allow: {err}");
        let mut agents = Vec::new();
        for &i in which {
            let section = allow_section(&allow, ZONES[i]);
            let config = self.path(&format!("agent-{}.toml", ZONES[i]));
            std::fs::write(&config, section).unwrap();
            agents.push(AgentProc::start_on(
                &self.zones[i],
                &zone_ip(i),
                &self.path("agent.key"),
                Some(&config),
            ));
        }
        agents
    }

    fn matrix_json(&self, matrix: &Path, extra: &[&str]) -> (i32, Value, String, Duration) {
        let mut args = vec!["matrix", "-c", matrix.to_str().unwrap(), "-f", "json"];
        args.extend_from_slice(extra);
        let started = Instant::now();
        let (code, out, err) = dtcprobe_in(&self.router, &args);
        let took = started.elapsed();
        let json: Value = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("matrix -f json is not JSON ({e}):\n{out}\n{err}"));
        (code, json, err, took)
    }
}

fn cell<'a>(report: &'a Value, from: &str, to: &str) -> &'a Value {
    report["cells"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["from"] == from && c["to"] == to)
        .unwrap_or_else(|| panic!("no cell {from} -> {to} in {report:#}"))
}

fn row<'a>(report: &'a Value, zone: &str) -> &'a Value {
    report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["zone"] == zone)
        .unwrap_or_else(|| panic!("no row {zone} in {report:#}"))
}

struct LocalSchemas;

impl jsonschema::Retrieve for LocalSchemas {
    fn retrieve(
        &self,
        uri: &jsonschema::Uri<String>,
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        if uri.path().as_str().ends_with("/report.schema.json") {
            Ok(serde_json::from_str(REPORT_SCHEMA)?)
        } else {
            Err(format!("no local schema for {uri}").into())
        }
    }
}

fn schema_errors(report: &Value) -> Vec<String> {
    let schema: Value = serde_json::from_str(MATRIX_SCHEMA).expect("matrix.schema.json is JSON");
    let validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .with_retriever(LocalSchemas)
        .build(&schema)
        .unwrap_or_else(|e| panic!("docs/matrix.schema.json is not a valid schema: {e}"));
    validator
        .iter_errors(report)
        .map(|e| format!("{e} (at {})", e.instance_path()))
        .collect()
}

/// Validates against docs/matrix.schema.json (which references docs/report.schema.json for the
/// checks and firewall rows, served locally: nothing is fetched).
fn assert_matrix_schema(report: &Value) {
    let errors = schema_errors(report);
    assert!(
        errors.is_empty(),
        "the matrix report does not match docs/matrix.schema.json:\n  {}\n{report:#}",
        errors.join("\n  ")
    );
}

#[test]
fn matrix_shows_exactly_the_dropped_pair() {
    if !can_run_netns_tests("matrix_shows_exactly_the_dropped_pair") {
        return;
    }
    let lab = Lab::new("dpmx");
    // web -> sql on the service port is dropped on the router; everything else is open.
    lab.router.nft(&format!(
        "table inet zonefw {{\n chain between_zones {{\n  type filter hook forward priority 0; policy accept;\n  \
         ip saddr {} ip daddr {} tcp dport {SERVICE_PORT} drop\n }}\n}}\n",
        zone_ip(0),
        zone_ip(2)
    ));
    let matrix = lab.write_matrix("1s");
    let _agents = lab.start_agents(&matrix, &[0, 1, 2]);

    let (code, report, err, took) = lab.matrix_json(&matrix, &[]);
    assert_eq!(code, 1, "a failing cell exits 1: {err}\n{report:#}");
    assert_matrix_schema(&report);
    // Not vacuous: a renamed cell field, or a hop field renamed deep inside a cell's check (the
    // part checked through docs/report.schema.json), is rejected.
    let mut renamed = report.clone();
    let c = renamed["cells"][0].as_object_mut().unwrap();
    let state = c.remove("state").unwrap();
    c.insert("status".into(), state);
    assert!(
        !schema_errors(&renamed).is_empty(),
        "renamed cell field accepted"
    );
    let mut renamed = report.clone();
    let hop = renamed["cells"][0]["checks"][0]["hops"][0]
        .as_object_mut()
        .unwrap();
    let kind = hop.remove("hop").unwrap();
    hop.insert("hop_kind".into(), kind);
    assert!(
        !schema_errors(&renamed).is_empty(),
        "renamed hop field accepted"
    );
    assert_eq!(report["summary"]["cells"], 6, "{report:#}");
    assert_eq!(report["summary"]["pass"], 5, "{report:#}");
    assert_eq!(report["summary"]["fail"], 1, "{report:#}");
    for (f, t) in [
        ("web", "app"),
        ("app", "web"),
        ("app", "sql"),
        ("sql", "web"),
        ("sql", "app"),
    ] {
        assert_eq!(
            cell(&report, f, t)["state"],
            "pass",
            "{f} -> {t}: {report:#}"
        );
    }
    let blocked = cell(&report, "web", "sql");
    assert_eq!(blocked["state"], "fail", "{blocked:#}");
    assert_eq!(blocked["cause"], "timeout", "{blocked:#}");
    let check = &blocked["checks"][0];
    for h in check["hops"].as_array().unwrap() {
        eprintln!(
            "blocked cell hop {} {} {}s",
            h["hop"], h["status"], h["duration_seconds"]
        );
    }
    assert_eq!(check["from"], "web");
    assert_eq!(check["to"], "sql");
    let tcp = check["hops"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["hop"] == "tcp")
        .unwrap();
    assert_eq!(tcp["status"], "fail");
    // The firewall row names the real flow, from the web zone's own address.
    let rows = report["firewall_requests"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_eq!(rows[0]["source"], zone_ip(0));
    assert_eq!(rows[0]["destination"], zone_ip(2));
    assert_eq!(rows[0]["ports"], SERVICE_PORT.to_string());
    assert_eq!(rows[0]["from_zone"], "web");
    assert_eq!(rows[0]["to_zone"], "sql");
    for row in report["rows"].as_array().unwrap() {
        assert_eq!(row["state"], "answered", "{row:#}");
        assert_eq!(row["agent_zone"], row["zone"], "{row:#}");
    }
    // About one hop timeout (1s) plus the agent's path trace and process start, not the sum of
    // six cells.
    assert!(took < Duration::from_secs(8), "took {took:?}");
    assert!(
        check["hops"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["hop"] == "path"),
        "the agent traces a dropped path by default: {check:#}"
    );

    // --no-trace reaches the agents: no path hop, and the dropped cell costs one hop timeout.
    let (code, quick, err, quick_took) = lab.matrix_json(&matrix, &["--no-trace"]);
    assert_eq!(code, 1, "{err}");
    let quick_check = &cell(&quick, "web", "sql")["checks"][0];
    assert!(
        !quick_check["hops"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["hop"] == "path"),
        "{quick_check:#}"
    );
    assert_eq!(cell(&quick, "web", "sql")["cause"], "timeout");
    eprintln!("matrix with trace {took:?}, with --no-trace {quick_took:?}");

    // The human grid: that cell, and only it, fails.
    let copy = lab.path("copy.json");
    let (code, human, _) = dtcprobe_in(
        &lab.router,
        &[
            "matrix",
            "-c",
            matrix.to_str().unwrap(),
            "--output",
            &format!("json={}", copy.display()),
        ],
    );
    assert_eq!(code, 1);
    // --output writes the same run in another format.
    let copy: Value = serde_json::from_str(&std::fs::read_to_string(&copy).unwrap()).unwrap();
    assert_eq!(cell(&copy, "web", "sql")["state"], "fail");
    assert_eq!(copy["summary"]["pass"], 5);
    eprintln!("{human}");
    let web_line = human.lines().find(|l| l.starts_with("web ")).unwrap();
    assert!(web_line.contains("FAIL timeout"), "{human}");
    assert_eq!(
        human.matches("FAIL timeout").count(),
        2,
        "grid + failing cell line:\n{human}"
    );
    assert!(
        human.contains(&format!(
            "web {} -> sql {} TCP {SERVICE_PORT}",
            zone_ip(0),
            zone_ip(2)
        )),
        "{human}"
    );
    assert!(!human.contains('\x1b'), "no colour into a pipe:\n{human}");

    // Markdown, and a csv firewall request from the same run.
    let fw = lab.path("fw.csv");
    let (code, md, err) = dtcprobe_in(
        &lab.router,
        &[
            "matrix",
            "-c",
            matrix.to_str().unwrap(),
            "-f",
            "markdown",
            "--firewall-request",
            &format!("csv={}", fw.display()),
        ],
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        md.contains("| **web** | - | pass | **FAIL timeout** |"),
        "{md}"
    );
    let csv = std::fs::read_to_string(&fw).unwrap();
    assert_eq!(csv.lines().count(), 2, "{csv}");
    assert!(
        csv.contains(&format!(
            "web,{},sql,{},tcp,{SERVICE_PORT}",
            zone_ip(0),
            zone_ip(2)
        )),
        "{csv}"
    );

    // An agent that accepts the request but does not answer in time is `agent lost`, not a
    // failure: with a session bound (500ms) shorter than the web row takes (its dropped check
    // waits the 1s hop timeout), the web row is lost; the others answer in milliseconds.
    let short = lab.path("short.toml");
    let text = std::fs::read_to_string(&matrix).unwrap();
    std::fs::write(&short, format!("session_timeout = \"500ms\"\n{text}")).unwrap();
    let (code, report, err, took) = lab.matrix_json(&short, &[]);
    assert_eq!(
        code, 3,
        "a lost agent leaves the run inconclusive: {err}\n{report:#}"
    );
    assert_matrix_schema(&report);
    let web = row(&report, "web");
    assert_eq!(web["state"], "agent_lost", "{web:#}");
    for to in ["app", "sql"] {
        assert_eq!(
            cell(&report, "web", to)["state"],
            "agent_lost",
            "{report:#}"
        );
    }
    assert_eq!(cell(&report, "sql", "web")["state"], "pass");
    assert_eq!(report["summary"]["agent_lost"], 2);
    assert!(report["firewall_requests"].as_array().unwrap().is_empty());
    assert!(took < Duration::from_secs(4), "took {took:?}");
}

#[test]
fn an_unreachable_agent_is_shown_as_such_and_costs_one_timeout() {
    if !can_run_netns_tests("an_unreachable_agent_is_shown_as_such_and_costs_one_timeout") {
        return;
    }
    let lab = Lab::new("dpmu");
    // The app zone's agent port is dropped on the way from the router (where the matrix runs):
    // its agent is unreachable, silently, as behind a firewall.
    lab.router.nft(&format!(
        "table inet ctl {{\n chain out {{\n  type filter hook output priority 0; policy accept;\n  \
         ip daddr {} tcp dport 7135 drop\n }}\n}}\n",
        zone_ip(1)
    ));
    let matrix = lab.write_matrix("2s");
    let _agents = lab.start_agents(&matrix, &[0, 2]);

    let (code, report, err, took) = lab.matrix_json(&matrix, &[]);
    assert_eq!(
        code, 3,
        "an unreachable agent makes the run inconclusive: {err}\n{report:#}"
    );
    assert_matrix_schema(&report);
    let app = row(&report, "app");
    assert_eq!(app["state"], "agent_unreachable", "{app:#}");
    assert!(
        app["detail"].as_str().unwrap().contains("timeout"),
        "{app:#}"
    );
    for to in ["web", "sql"] {
        let c = cell(&report, "app", to);
        assert_eq!(c["state"], "agent_unreachable", "{c:#}");
        assert!(c.get("cause").is_none(), "not a verdict on the path: {c:#}");
    }
    // The other rows ran, towards the app zone too.
    for (f, t) in [
        ("web", "app"),
        ("web", "sql"),
        ("sql", "web"),
        ("sql", "app"),
    ] {
        assert_eq!(
            cell(&report, f, t)["state"],
            "pass",
            "{f} -> {t}: {report:#}"
        );
    }
    assert_eq!(report["summary"]["agent_unreachable"], 2);
    assert!(
        report["firewall_requests"].as_array().unwrap().is_empty(),
        "{report:#}"
    );
    // One connect timeout (2s) for the lost agent, concurrently with the others: not more.
    assert!(took < Duration::from_secs(5), "took {took:?}");

    let (_, human, _) = dtcprobe_in(&lab.router, &["matrix", "-c", matrix.to_str().unwrap()]);
    eprintln!("{human}");
    let app_line = human.lines().find(|l| l.starts_with("app ")).unwrap();
    assert_eq!(app_line.matches("agent unreachable").count(), 2, "{human}");
    assert!(
        !human.contains("FAIL"),
        "an unreachable agent is not a blocked path:\n{human}"
    );

    // Without the drop, the app zone's agent is simply down (nothing listens on its port): the
    // reset comes at once, and the row says so in the same way.
    lab.router.nft("");
    let (code, report, err, took) = lab.matrix_json(&matrix, &[]);
    assert_eq!(code, 3, "{err}\n{report:#}");
    let app = row(&report, "app");
    assert_eq!(app["state"], "agent_unreachable", "{app:#}");
    assert!(
        app["detail"].as_str().unwrap().contains("refused"),
        "{app:#}"
    );
    assert_eq!(cell(&report, "app", "sql")["state"], "agent_unreachable");
    assert_eq!(cell(&report, "web", "app")["state"], "pass");
    assert!(
        took < Duration::from_secs(4),
        "a reset costs no timeout: {took:?}"
    );
}

/// Bad matrix files: exit 78 and file:line, before any agent is contacted (the agents named do
/// not exist; nothing would answer).
#[test]
fn matrix_config_errors_name_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("agent.key");
    write_key(&key, format!("{KEY}\n"));
    let loose_key = dir.path().join("loose.key");
    std::fs::write(&loose_key, format!("{KEY}\n")).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&loose_key, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let zones = "key_file = \"agent.key\"\n[[zone]]\nname = \"a\"\nagent = \"198.18.99.1\"\nhosts = [\"198.18.99.1\"]\n[[zone]]\nname = \"b\"\nhosts = [\"198.18.99.2\"]\n";
    let cases: &[(&str, String, &str)] = &[
        (
            "unknown key",
            format!("{zones}[[reach]]\nfrom = \"a\"\nto = \"b\"\ntcp = [1]\nudp = [53]\n"),
            ":13:",
        ),
        (
            "unknown zone",
            format!("{zones}[[reach]]\nfrom = \"a\"\nto = \"c\"\ntcp = [1]\n"),
            ":11:",
        ),
        (
            "empty rule",
            format!("{zones}[[reach]]\nfrom = \"a\"\nto = \"b\"\n"),
            ":9:",
        ),
        (
            "bad agent port",
            zones.replace("198.18.99.1\"\nhosts", "198.18.99.1:0\"\nhosts")
                + "[[reach]]\nfrom = \"a\"\nto = \"b\"\ntcp = [1]\n",
            ":4:",
        ),
        (
            "loose key file",
            zones.replace("agent.key", "loose.key")
                + "[[reach]]\nfrom = \"a\"\nto = \"b\"\ntcp = [1]\n",
            ":1:",
        ),
        (
            "missing key file",
            zones.replace("agent.key", "nope.key")
                + "[[reach]]\nfrom = \"a\"\nto = \"b\"\ntcp = [1]\n",
            ":1:",
        ),
    ];
    for (what, text, line) in cases {
        let path = dir.path().join("m.toml");
        std::fs::write(&path, text).unwrap();
        let started = Instant::now();
        let (code, out, err) = run_bin(&["matrix", "-c", path.to_str().unwrap()]);
        assert_eq!(code, 78, "{what}: {err}");
        assert!(out.is_empty(), "{what}: nothing on stdout: {out}");
        assert!(err.contains(&format!("m.toml{line}")), "{what}: {err}");
        assert!(!err.contains(KEY), "{what}: the key leaked: {err}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{what}: nothing probed"
        );
    }
    let (code, _, err) = run_bin(&[
        "matrix",
        "-c",
        dir.path().join("absent.toml").to_str().unwrap(),
    ]);
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("absent.toml"), "{err}");
    let (code, _, err) = run_bin(&["matrix"]);
    assert_eq!(code, 2, "-c is required: {err}");
}
