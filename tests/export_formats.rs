//! Each export format checked by its real consumer: promtool for Prometheus text, a real XML
//! parser for JUnit, the plugin grammar and exit codes for Nagios. Both a report built in the test
//! (awkward names: quotes, backslashes, line breaks, dots, duplicate hops) and the real binary's
//! output against loopback listeners.

use crate::support;

use support::run_bin;

use std::collections::HashSet;
use std::net::TcpListener;
use std::time::{Duration, SystemTime};

use dtcprobe::model::{Cause, CheckResult, Direction, HopKind, HopResult, Report};
use dtcprobe::report::{exporter_for, Format, RenderContext};

fn check(
    name: &str,
    from: Option<&str>,
    to: Option<&str>,
    dir: Direction,
    hops: Vec<HopResult>,
) -> CheckResult {
    CheckResult {
        name: name.into(),
        kind: "mssql".into(),
        target: format!("mssql://sa@{name}/db"),
        from: from.map(Into::into),
        to: to.map(Into::into),
        direction: dir,
        status: CheckResult::status_of(&hops),
        hops,
    }
}

/// A report exercising every outcome and every awkward label character.
fn awkward_report() -> Report {
    let ms = Duration::from_millis;
    let checks = vec![
        check(
            "web->sql \"primary\"",
            Some("web"),
            Some("sql"),
            Direction::Forward,
            vec![
                HopResult::pass(HopKind::Resolve, "ok").with_duration(ms(2)),
                HopResult::pass(HopKind::Tcp, "ok").with_duration(ms(1)),
                HopResult::fail(
                    HopKind::Login,
                    Cause::AuthFailed,
                    "Login failed for user 'sa'",
                )
                .with_hint("check the password")
                .with_duration(ms(30)),
                HopResult::skip(HopKind::TxLocal, "login failed"),
            ],
        ),
        check(
            "db.corp.example\\inst",
            Some("web"),
            Some("sql"),
            Direction::Reverse,
            vec![
                HopResult::warn(HopKind::Resolve, Cause::DnsMismatch, "PTR says other\nname")
                    .with_duration(ms(3)),
                // A repeated hop kind must not produce duplicate series or test names.
                HopResult::pass(HopKind::Tcp, "first").with_duration(ms(1)),
                HopResult::pass(HopKind::Tcp, "second").with_duration(ms(1)),
            ],
        ),
        check(
            "broken-config",
            None,
            None,
            Direction::Forward,
            vec![HopResult::fail(HopKind::Tcp, Cause::Internal, "bug <&>")],
        ),
        check(
            "it's | odd=name",
            Some("app"),
            None,
            Direction::Forward,
            vec![HopResult::fail(HopKind::Tcp, Cause::Timeout, "no answer").with_duration(ms(3000))],
        ),
    ];
    Report::new(SystemTime::now(), ms(3100), "host \"x\"".into(), checks)
}

fn render(report: &Report, format: Format) -> String {
    let mut buf = Vec::new();
    exporter_for(format)
        .render(report, &RenderContext::default(), &mut buf)
        .unwrap();
    String::from_utf8(buf).unwrap()
}

/// A loopback port that is open, and one that refuses.
fn ports() -> (TcpListener, u16) {
    let open = TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    (open, closed)
}

// ---------------------------------------------------------------- Prometheus

#[test]
fn prometheus_text_passes_promtool() {
    let text = render(&awkward_report(), Format::Prometheus);
    let (ok, msg) = promtool(&text);
    assert!(ok, "promtool rejected our output: {msg}\n{text}");

    // The checker is real: a malformed sample and a duplicated HELP are rejected.
    let (ok, _) = promtool(&text.replacen("} 1\n", "} one\n", 1));
    assert!(!ok, "promtool accepted a malformed value");
    assert!(!promtool("# TYPE x_seconds gauge\n# TYPE x_seconds gauge\nx_seconds 1\n").0);

    // Escaping: the quote and the backslash in the names, the line break nowhere raw.
    assert!(text.contains(r#"check="web->sql \"primary\"""#), "{text}");
    assert!(text.contains(r#"check="db.corp.example\\inst""#), "{text}");
    for line in text.lines() {
        assert!(
            line.starts_with('#') || line.starts_with("dtcprobe_"),
            "stray line {line:?}"
        );
        if !line.starts_with('#') {
            // No timestamps: exactly one value after the series.
            let after = line
                .rsplit_once('}')
                .map_or_else(|| line.split_once(' ').unwrap().1, |(_, v)| v);
            assert_eq!(after.trim().split(' ').count(), 1, "{line}");
        }
    }
}

#[test]
fn prometheus_series_are_unique_and_state_sets_are_bounded() {
    let report = awkward_report();
    let text = render(&report, Format::Prometheus);
    let series: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.rsplit_once(' ').unwrap().0)
        .collect();
    let unique: HashSet<&&str> = series.iter().collect();
    assert_eq!(unique.len(), series.len(), "duplicate series");

    let hops: usize = report.checks.iter().map(|c| c.hops.len()).sum();
    let status_series: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("dtcprobe_hop_status{"))
        .collect();
    assert_eq!(status_series.len(), hops * Cause::ALL.len());
    // Exactly one cause is set per failed or warned hop, none for passes and skips.
    let set = status_series.iter().filter(|l| l.ends_with(" 1")).count();
    let non_pass = report
        .checks
        .iter()
        .flat_map(|c| &c.hops)
        .filter(|h| h.cause.is_some())
        .count();
    assert_eq!(set, non_pass);
    assert!(text.contains(r#"hop="tcp_2""#));
    assert!(text.lines().any(|l| l.starts_with("dtcprobe_hop_status{")
        && l.contains(r#"cause="auth_failed""#)
        && l.ends_with(" 1")));
    // Base units: seconds, 3 s timeout reported as 3.
    assert!(text.contains(r#"dtcprobe_hop_duration_seconds{check="it's | odd=name",direction="forward",hop="tcp"} 3"#), "{text}");
    assert!(text
        .lines()
        .any(|l| l.starts_with("dtcprobe_run_timestamp_seconds ")));
    assert!(text
        .lines()
        .any(|l| l.starts_with("dtcprobe_build_info{") && l.ends_with(" 1")));
}

#[test]
fn binary_writes_several_formats_and_a_textfile_in_one_run() {
    let (open, closed) = ports();
    let port = open.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let p = |f: &str| dir.path().join(f).to_string_lossy().into_owned();
    let tf = tempfile::tempdir().unwrap();
    let (xml, prom, json) = (p("r.xml"), p("r.prom"), p("r.json"));
    let (ok_url, bad_url) = (
        format!("tcp://127.0.0.1:{port}"),
        format!("tcp://127.0.0.1:{closed}"),
    );
    let (code, stdout, stderr) = run_bin(&[
        "check",
        &ok_url,
        &bad_url,
        "-f",
        "plain",
        "--output",
        &format!("junit={xml}"),
        "--output",
        &format!("prometheus={prom}"),
        "--output",
        &format!("json={json}"),
        "--textfile-dir",
        &tf.path().to_string_lossy(),
    ]);
    assert_eq!(code, 1, "one check fails: {stdout}{stderr}");

    let prom_text = std::fs::read_to_string(&prom).unwrap();
    let (ok, msg) = promtool(&prom_text);
    assert!(ok, "{msg}\n{prom_text}");
    assert!(prom_text.contains(&format!("dtcprobe_check_success{{check=\"{ok_url}\"")));

    // The textfile collector's file, and no temp file left beside it.
    let names: Vec<String> = std::fs::read_dir(tf.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["dtcprobe.prom".to_string()]);
    let textfile = std::fs::read_to_string(tf.path().join("dtcprobe.prom")).unwrap();
    assert!(promtool(&textfile).0);

    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["summary"]["fail"], 1);

    let xml_text = std::fs::read_to_string(&xml).unwrap();
    let doc = roxmltree::Document::parse(&xml_text).unwrap();
    assert_eq!(doc.root_element().attribute("failures"), Some("1"));
    // The run's start, on the report and each suite, the same instant as the JSON's started_at
    // (both from one run: the same second).
    let started = report["started_at"].as_str().unwrap();
    let stamp = doc.root_element().attribute("timestamp").unwrap_or("");
    assert!(
        stamp.starts_with(started.trim_end_matches('Z')),
        "{stamp} vs {started}"
    );
    for suite in doc.descendants().filter(|n| n.has_tag_name("testsuite")) {
        assert_eq!(suite.attribute("timestamp"), Some(stamp));
    }
    drop(open);
}

#[test]
fn bad_output_spec_is_a_usage_error() {
    let (code, _, stderr) = run_bin(&["check", "tcp://127.0.0.1:1", "--output", "xml=out.xml"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("unknown format"), "{stderr}");
}

// ---------------------------------------------------------------- JUnit

fn secs(node: roxmltree::Node) -> f64 {
    let t = node
        .attribute("time")
        .unwrap_or_else(|| panic!("no time on {node:?}"));
    let v: f64 = t
        .parse()
        .unwrap_or_else(|_| panic!("time {t:?} is not seconds"));
    assert!(v >= 0.0);
    v
}

#[test]
fn junit_parses_with_expected_structure() {
    let report = awkward_report();
    let xml = render(&report, Format::Junit);
    let doc = roxmltree::Document::parse(&xml).unwrap_or_else(|e| panic!("not XML: {e}\n{xml}"));
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "testsuites");
    secs(root);

    let suites: Vec<_> = root
        .children()
        .filter(|n| n.has_tag_name("testsuite"))
        .collect();
    let names: Vec<&str> = suites
        .iter()
        .map(|s| s.attribute("name").unwrap())
        .collect();
    assert_eq!(names, ["web->sql", "default", "app->any"]);

    let (mut tests, mut failures, mut errors, mut skipped) = (0, 0, 0, 0);
    let mut seen = HashSet::new();
    for suite in &suites {
        secs(*suite);
        let cases: Vec<_> = suite
            .children()
            .filter(|n| n.has_tag_name("testcase"))
            .collect();
        assert_eq!(
            suite.attribute("tests").unwrap().parse::<usize>().unwrap(),
            cases.len()
        );
        for case in cases {
            tests += 1;
            secs(case);
            let class = case.attribute("classname").unwrap();
            let parts: Vec<&str> = class.split('.').collect();
            assert_eq!(
                parts.len(),
                3,
                "classname {class} should be dtcprobe.<zones>.<check>"
            );
            assert_eq!(parts[0], "dtcprobe");
            assert!(
                seen.insert((
                    class.to_string(),
                    case.attribute("name").unwrap().to_string()
                )),
                "duplicate test {class}"
            );
            let outcome: Vec<_> = case
                .children()
                .filter(|n| {
                    n.is_element() && ["failure", "error", "skipped"].contains(&n.tag_name().name())
                })
                .collect();
            assert!(outcome.len() <= 1);
            match outcome.first().map(|n| n.tag_name().name()) {
                Some("failure") => {
                    failures += 1;
                    let f = outcome[0];
                    assert!(f.attribute("message").is_some_and(|m| !m.is_empty()));
                    assert!(f.attribute("type").is_some());
                }
                Some("error") => {
                    errors += 1;
                    assert_eq!(outcome[0].attribute("type"), Some("internal"));
                }
                Some("skipped") => skipped += 1,
                _ => {}
            }
        }
    }
    assert_eq!((tests, failures, errors, skipped), (9, 2, 1, 1));
    let attr = |n: &str| root.attribute(n).unwrap().parse::<usize>().unwrap();
    assert_eq!(
        (
            attr("tests"),
            attr("failures"),
            attr("errors"),
            attr("skipped")
        ),
        (9, 2, 1, 1)
    );
    // The reverse direction and the repeated hop are distinct tests.
    assert!(
        xml.contains(r#"name="tcp (reverse)""#) && xml.contains(r#"name="tcp (reverse)#2""#),
        "{xml}"
    );
    // Timeout of 3 s is reported as 3 seconds.
    assert!(doc
        .descendants()
        .any(|n| n.has_tag_name("testcase") && (secs(n) - 3.0).abs() < 1e-9));
}

// ---------------------------------------------------------------- Nagios

/// Validates one perfdata item `'label'=value[UOM];[warn];[crit];[min];[max]`.
fn perf_item_ok(item: &str) -> bool {
    let Some(rest) = item.strip_prefix('\'') else {
        return false;
    };
    // The label ends at a quote that is not doubled.
    let bytes = rest.as_bytes();
    let mut i = 0;
    let end = loop {
        if i >= bytes.len() {
            return false;
        }
        if bytes[i] == b'\'' {
            if bytes.get(i + 1) == Some(&b'\'') {
                i += 2;
                continue;
            }
            break i;
        }
        i += 1;
    };
    let label = &rest[..end];
    if label.is_empty() || label.contains('=') {
        return false;
    }
    let Some(after) = rest[end + 1..].strip_prefix('=') else {
        return false;
    };
    let fields: Vec<&str> = after.split(';').collect();
    if fields.len() != 5 || fields[1..].iter().any(|f| !f.is_empty()) {
        return false;
    }
    let v = fields[0];
    let num_end = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-'))
        .unwrap_or(v.len());
    let (num, uom) = v.split_at(num_end);
    num.parse::<f64>().is_ok()
        && ["", "s", "ms", "us", "%", "B", "KB", "MB", "TB", "c"].contains(&uom)
}

/// Splits perfdata on spaces outside quotes.
fn perf_items(perf: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in perf.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                cur.push(c)
            }
            ' ' if !quoted => {
                if !cur.is_empty() {
                    items.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        items.push(cur);
    }
    items
}

/// Checks the whole plugin output; returns the state word.
fn nagios_grammar(out: &str) -> String {
    let mut lines = out.lines();
    let first = lines.next().expect("no output");
    let (text, perf) = first
        .split_once(" | ")
        .unwrap_or_else(|| panic!("no perfdata: {first}"));
    let state = text
        .strip_prefix("DTCPROBE ")
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_string();
    assert!(
        ["OK", "WARNING", "CRITICAL", "UNKNOWN"].contains(&state.as_str()),
        "{first}"
    );
    assert!(!text.contains('|'));
    let items = perf_items(perf);
    assert!(items.len() >= 4);
    for item in &items {
        assert!(perf_item_ok(item), "bad perfdata item {item:?} in {first}");
    }
    for l in lines {
        assert!(!l.contains('|'), "long text must not contain '|': {l}");
    }
    state
}

#[test]
fn nagios_perfdata_grammar_checker_rejects_bad_items() {
    for good in ["'a'=1;;;;", "'a b'=0.5s;;;;", "'it''s'=3;;;;"] {
        assert!(perf_item_ok(good), "{good}");
    }
    for bad in [
        "a=1;;;;",
        "'a'=x;;;;",
        "'a'=1",
        "'a'=1sec;;;;",
        "'a=b'=1;;;;",
    ] {
        assert!(!perf_item_ok(bad), "{bad}");
    }
}

#[test]
fn nagios_output_grammar_on_awkward_report() {
    let out = render(&awkward_report(), Format::Nagios);
    assert_eq!(nagios_grammar(&out), "CRITICAL", "{out}");
    assert!(
        out.contains("'it''s _ odd_name tcp'=3.000000s;;;;"),
        "{out}"
    );
}

#[test]
fn nagios_exit_codes_from_the_binary() {
    let (open, closed) = ports();
    let ok_url = format!("tcp://127.0.0.1:{}", open.local_addr().unwrap().port());
    let bad_url = format!("tcp://127.0.0.1:{closed}");

    let (code, out, err) = run_bin(&["check", "-f", "nagios", &ok_url]);
    assert_eq!(
        (code, nagios_grammar(&out).as_str()),
        (0, "OK"),
        "{out}{err}"
    );

    let (code, out, err) = run_bin(&["check", "-f", "nagios", &ok_url, &bad_url]);
    assert_eq!(
        (code, nagios_grammar(&out).as_str()),
        (2, "CRITICAL"),
        "{out}{err}"
    );
    assert!(
        out.lines().nth(1).is_some_and(|l| l.contains("refused")),
        "{out}"
    );
    drop(open);
}

#[test]
fn nagios_tool_problems_are_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(
        &cfg,
        "[[check]]\nname = \"x\"\nkind = \"tcp\"\nhost = \"h\"\nport = 1\nbogus = 1\n",
    )
    .unwrap();
    let (code, out, err) = run_bin(&["check", "-f", "nagios", "-c", &cfg.to_string_lossy()]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(out.starts_with("DTCPROBE UNKNOWN - "), "{out}");
    assert_eq!(out.lines().count(), 1, "{out}");
    // The same config without -f nagios keeps the documented config exit code.
    assert_eq!(run_bin(&["check", "-c", &cfg.to_string_lossy()]).0, 78);

    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "[]").unwrap();
    let (code, out, _) = run_bin(&[
        "check",
        "-f",
        "nagios",
        "tcp://127.0.0.1:1",
        "--baseline",
        &bad.to_string_lossy(),
    ]);
    assert_eq!(code, 3);
    assert!(out.contains("DTCPROBE UNKNOWN - "), "{out}");

    // A command line clap rejects: UNKNOWN on stdout, exit 3, clap's message still on stderr
    // (a broken command definition is not a CRITICAL service). Without -f nagios: usage, 2.
    for args in [
        &[
            "check",
            "-f",
            "nagios",
            "--no-such-flag",
            "tcp://127.0.0.1:1",
        ][..],
        &[
            "check",
            "--format=nagios",
            "--timeout",
            "soon",
            "tcp://127.0.0.1:1",
        ],
    ] {
        let (code, out, err) = run_bin(args);
        assert_eq!(code, 3, "{args:?}: {out}{err}");
        assert!(out.starts_with("DTCPROBE UNKNOWN - dtcprobe: "), "{out}");
        assert_eq!(out.lines().count(), 1, "{out}");
        assert!(err.contains("error:"), "{err}");
    }
    let (code, out, _) = run_bin(&["check", "-f", "json", "--no-such-flag", "tcp://127.0.0.1:1"]);
    assert_eq!(code, 2);
    assert!(out.is_empty(), "{out}");
    assert_eq!(run_bin(&["check", "-f", "nagios", "--help"]).0, 0);
}

/// `promtool check metrics` on `text`: (success, complaints).
fn promtool(text: &str) -> (bool, String) {
    match support::promtool_check(text) {
        Ok(()) => (true, String::new()),
        Err(msg) => (false, msg),
    }
}
