//! Issue 12 items 1-3 end to end: the verdict and the firewall change request of the one-way
//! firewall seed scenario (real namespaces, nftables, Samba's endpoint mapper, the real agent),
//! `-f markdown` read back by a real markdown parser, and SIGINT during a run with a dropped port.

use crate::agent_netns::{setup, AgentProc, ONE_WAY};
use crate::report_schema::assert_valid;
use crate::support::{self, samba};

use std::process::Stdio;
use std::time::{Duration, Instant};

use pulldown_cmark::{Event, Parser, Tag, TagEnd};
use serde_json::Value;
use support::netns::{can_run_netns_tests, dtcprobe_bin, dtcprobe_in, Zones, SQL_IP, WEB_IP};
use support::{hop, parse_report, run_bin};

/// The dynamic RPC range dropped from the web zone, on the sql side (135 stays open).
const DROP_DYNAMIC_FROM_WEB: &str = "table inet zonefw {\n chain input {\n type filter hook input \
priority 0; policy accept;\n ip saddr 198.18.0.1 tcp dport 49152-65535 tcp flags & (syn | ack) == syn drop\n }\n}\n";

/// The seed scenario: forward dynamic RPC port dropped, callback dropped (one-way firewall).
#[test]
fn one_way_firewall_seed_gives_verdict_and_firewall_rows() {
    let test = "one_way_firewall_seed_gives_verdict_and_firewall_rows";
    if !can_run_netns_tests(test) || !samba::available(test) {
        return;
    }
    let (s, config) = setup("dpvd", "zone = \"sql\"\n");
    let _samba = samba::Samba::start(&s.zones.sql, SQL_IP);
    s.zones.sql.nft(DROP_DYNAMIC_FROM_WEB);
    s.zones.web.nft(ONE_WAY);
    let agent = AgentProc::start(&s.zones.sql, &s.key, Some(&config));
    let dir = s.dir.path();
    let csv = dir.join("fw.csv");
    let md = dir.join("fw.md");
    let human = dir.join("report.txt");
    let markdown = dir.join("report.md");
    let epm = format!("epm://sqlhost?iface={}", samba::LSARPC);
    let fw_csv = format!("csv={}", csv.display());
    let fw_md = format!("markdown={}", md.display());
    let out_human = format!("human={}", human.display());
    let out_markdown = format!("markdown={}", markdown.display());
    let args = [
        "peer",
        "198.18.0.2:7135",
        "--key-file",
        s.key.to_str().unwrap(),
        "--caller-name",
        "webhost",
        "--zone",
        "web",
        "-f",
        "json",
        "--timeout",
        "2s",
        "--callback-port",
        "5001",
        &epm,
        "--firewall-request",
        &fw_csv,
        "--firewall-request",
        &fw_md,
        "--output",
        &out_human,
        "--output",
        &out_markdown,
    ];
    let (code, stdout, stderr) = dtcprobe_in(&s.zones.web, &args);
    let report = parse_report(&stdout);
    assert_eq!(
        code,
        1,
        "stderr: {stderr}\n{report:#}\nagent log:\n{}",
        agent.log()
    );
    assert_valid("seed scenario", &report);

    let dynamic_port = hop(&report, &epm, "rpc_port")["data"]["ports"][0]
        .as_u64()
        .expect("the mapper returned a port") as u16;
    assert!(dynamic_port >= 49152, "{dynamic_port}");
    let rows = report["firewall_requests"].as_array().unwrap();
    let row = |r: &Value| {
        (
            r["from_zone"].as_str().unwrap_or("").to_string(),
            r["source"].as_str().unwrap_or("").to_string(),
            r["to_zone"].as_str().unwrap_or("").to_string(),
            r["destination"].as_str().unwrap().to_string(),
            r["ports"].as_str().unwrap().to_string(),
            r["direction"].as_str().unwrap().to_string(),
            r["observed"].as_str().unwrap().to_string(),
            r["service"].as_str().unwrap_or("").to_string(),
            r["evidence_check"].as_str().unwrap().to_string(),
        )
    };
    let got: Vec<_> = rows.iter().map(row).collect();
    let s_ = |x: &str| x.to_string();
    assert_eq!(
        got,
        vec![
            (
                s_("web"),
                s_(WEB_IP),
                s_("sql"),
                s_(SQL_IP),
                dynamic_port.to_string(),
                s_("forward"),
                s_("dropped"),
                s_("RPC dynamic port"),
                epm.clone()
            ),
            (
                s_("sql"),
                s_(SQL_IP),
                s_("web"),
                s_(WEB_IP),
                s_("5001"),
                s_("reverse"),
                s_("dropped"),
                s_("callback"),
                s_("callback")
            ),
        ],
        "{report:#}"
    );

    // The human report (--output) ends with the verdict lines.
    let text = std::fs::read_to_string(&human).unwrap();
    // The README's example is this output (`-- --nocapture` shows it).
    println!("{text}\n{}", std::fs::read_to_string(&markdown).unwrap());
    let verdict = text.rsplit_once("\nverdict:\n").expect("verdict section").1;
    let lines: Vec<&str> = verdict.lines().map(str::trim).collect();
    assert_eq!(
        lines[..2],
        [
            format!("web {WEB_IP} -> sql {SQL_IP} TCP {dynamic_port} (RPC dynamic port) DROPPED"),
            format!("sql {SQL_IP} -> web {WEB_IP} TCP 5001 (callback) DROPPED"),
        ],
        "{text}"
    );

    // The change request files.
    let csv_text = std::fs::read_to_string(&csv).unwrap();
    let csv_lines: Vec<&str> = csv_text.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(csv_lines.len(), 3, "{csv_text}");
    assert!(
        csv_lines[1].starts_with(&format!(
            "web,{WEB_IP},sql,{SQL_IP},tcp,{dynamic_port},forward,dropped,"
        )),
        "{csv_text}"
    );
    assert!(
        csv_lines[2].starts_with(&format!(
            "sql,{SQL_IP},web,{WEB_IP},tcp,5001,reverse,dropped,callback,callback,callback,"
        )),
        "{csv_text}"
    );
    let tables = tables(&std::fs::read_to_string(&md).unwrap());
    assert_eq!(tables.len(), 1);
    assert_eq!(tables[0].len(), 3, "{:?}", tables[0]);
    assert_eq!(
        tables[0][2][..6],
        [
            s_("sql"),
            s_(SQL_IP),
            s_("web"),
            s_(WEB_IP),
            s_("tcp"),
            s_("5001")
        ]
    );
}

/// Every table of a markdown document, as rows of cell texts (header row first).
fn tables(markdown: &str) -> Vec<Vec<Vec<String>>> {
    let mut options = pulldown_cmark::Options::empty();
    options.insert(pulldown_cmark::Options::ENABLE_TABLES);
    let mut tables = Vec::new();
    let mut cell: Option<String> = None;
    for event in Parser::new_ext(markdown, options) {
        match event {
            Event::Start(Tag::Table(_)) => tables.push(Vec::new()),
            Event::Start(Tag::TableHead) | Event::Start(Tag::TableRow) => {
                tables.last_mut().unwrap().push(Vec::new())
            }
            Event::Start(Tag::TableCell) => cell = Some(String::new()),
            Event::End(TagEnd::TableCell) => {
                let text = cell.take().unwrap();
                tables.last_mut().unwrap().last_mut().unwrap().push(text);
            }
            Event::Text(t) | Event::Code(t) => {
                if let Some(c) = cell.as_mut() {
                    c.push_str(&t);
                }
            }
            _ => {}
        }
    }
    tables
}

/// Headings of a markdown document, in order.
fn headings(markdown: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut inside = false;
    for event in Parser::new(markdown) {
        match event {
            Event::Start(Tag::Heading { .. }) => {
                inside = true;
                out.push(String::new());
            }
            Event::End(TagEnd::Heading(_)) => inside = false,
            Event::Text(t) if inside => out.last_mut().unwrap().push_str(&t),
            _ => {}
        }
    }
    out
}

/// `-f markdown` read back by pulldown-cmark: the sections, and one table row per hop whose
/// cells survive names with markdown syntax in them.
#[test]
fn markdown_report_parses_into_sections_and_one_row_per_hop() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let open = listener.local_addr().unwrap().port();
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "[[check]]\nname = \"a|b *c* <x>\"\nkind = \"tcp\"\nhost = \"127.0.0.1\"\nport = {open}\nfrom = \"web\"\nto = \"sql\"\n\n\
             [[check]]\nname = \"closed\"\nkind = \"tcp\"\nhost = \"127.0.0.1\"\nport = {closed}\n"
        ),
    )
    .unwrap();
    let md_file = dir.path().join("r.md");
    let (code, stdout, stderr) = run_bin(&[
        "check",
        "-c",
        config.to_str().unwrap(),
        "-f",
        "markdown",
        "--output",
        &format!("markdown={}", md_file.display()),
    ]);
    assert_eq!(code, 1, "{stderr}\n{stdout}");
    assert_eq!(std::fs::read_to_string(&md_file).unwrap(), stdout);
    assert_eq!(
        headings(&stdout),
        [
            "dtcprobe report",
            "Verdict",
            "Firewall requests",
            "Checks",
            "Hints"
        ],
        "{stdout}"
    );
    let tables = tables(&stdout);
    // No blocked flow (refused is not a firewall matter): only the checks table.
    assert_eq!(tables.len(), 1, "{stdout}");
    let checks = &tables[0];
    assert_eq!(
        checks[0][..6],
        ["Check", "From", "To", "Direction", "Hop", "Status"]
    );
    assert_eq!(
        checks.len(),
        1 + 6,
        "header + 3 hops (resolve, route, tcp) per check: {checks:?}"
    );
    assert!(checks.iter().all(|r| r.len() == 9), "{checks:?}");
    assert_eq!(
        checks[1][..5],
        ["a|b *c* <x>", "web", "sql", "forward", "resolve"]
    );
    assert_eq!(checks[6][4..7], ["tcp", "fail", "refused"]);
}

/// SIGINT while a hop waits on a dropped port: the partial report on stdout and in every
/// --output, the finished check as it is, the unfinished hop `skip` / `interrupted`, exit 130.
#[test]
fn sigint_prints_and_writes_the_partial_report_and_exits_130() {
    let test = "sigint_prints_and_writes_the_partial_report_and_exits_130";
    if !can_run_netns_tests(test) {
        return;
    }
    let zones = Zones::new("dpvi");
    zones.sql.nft(
        "table ip zonefw {\n chain input {\n type filter hook input priority 0; policy accept;\n tcp dport 1139 drop\n }\n}\n",
    );
    let _open = zones
        .sql
        .listen_tcp(format!("{SQL_IP}:1140").parse().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("partial.json");
    let fw = dir.path().join("fw.csv");
    let dropped = format!("tcp://{SQL_IP}:1139");
    let open = format!("tcp://{SQL_IP}:1140");
    let started = Instant::now();
    let child = zones
        .web
        .command(dtcprobe_bin())
        .args([
            "check",
            "--timeout",
            "30s",
            &dropped,
            &open,
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
    assert_eq!(out.status.code(), Some(130), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("INTERRUPTED: 1 of 2 checks did not finish"),
        "{stdout}"
    );
    assert!(stderr.contains("partial"), "{stderr}");

    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_valid("interrupted run", &report);
    assert_eq!(hop(&report, &open, "tcp")["status"], "pass", "{report:#}");
    assert_eq!(
        hop(&report, &dropped, "resolve")["status"],
        "pass",
        "{report:#}"
    );
    let tcp = hop(&report, &dropped, "tcp");
    assert_eq!(
        (tcp["status"].as_str(), tcp["cause"].as_str()),
        (Some("skip"), Some("interrupted")),
        "{report:#}"
    );
    // An unfinished hop is no evidence of a block: no firewall row for it.
    assert_eq!(report["firewall_requests"], serde_json::json!([]));
    let csv = std::fs::read_to_string(&fw).unwrap();
    assert_eq!(csv.lines().count(), 1, "{csv}");
}
