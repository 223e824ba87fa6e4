//! `dtcprobe prometheus-config --matrix`: a real Prometheus scraping the watch instances of two
//! zones, everything derived from ONE matrix file: the zones' configs by
//! `dtcprobe matrix --zone-config ZONE`, the scrape config by `prometheus-config --matrix`.
//! An nftables rule on the router between the zones blocks one pair (app -> sql); Prometheus'
//! HTTP API must show exactly that pair failing, by its `from`/`to` labels.
//!
//! Same harness as tests/prometheus_real.rs (its helpers are reused): a router `hub` with one
//! link per zone, `web` (198.18.1.2) and `app` (198.18.2.2) each running `dtcprobe watch
//! --metrics-listen`, `sql` (198.18.3.2) with the TDS test peer on 1433 and a listener on 135, `mon` (198.18.4.2)
//! running Debian's Prometheus. The matrix names agents and a key file that does not exist:
//! neither command reads key files (only `dtcprobe matrix` itself contacts agents). Last, app's
//! watch is restarted on a config derived from an older matrix: the module it lacks must show
//! as `up == 0` in Prometheus, never as a pass.

use crate::prometheus_real::{
    promtool_check_config, query, require_prometheus, start_prometheus_and_wait_for_two_scrapes,
    zones_app_cannot_reach_sql, MonitoredZones, Sample,
};
use crate::support::netns::{self, Daemon, Netns};

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// The matrix of the test, also shown verbatim in docs/monitoring.md.
const MATRIX: &str = r#"# matrix.toml
timeout = "500ms"
key_file = "agents.key"   # for `dtcprobe matrix`; --zone-config and prometheus-config never read it

[[zone]]
name = "web"
agent = "198.18.1.2"
hosts = ["198.18.1.2"]
watch = "198.18.1.2:9715"   # the zone's `dtcprobe watch --metrics-listen`, as Prometheus reaches it

[[zone]]
name = "app"
agent = "198.18.2.2"
hosts = ["198.18.2.2"]
watch = "198.18.2.2:9715"

[[zone]]
name = "sql"
hosts = ["198.18.3.2"]

[[reach]]
from = "*"
to = "sql"
mssql = true
tcp = [135]

[[reach]]
from = "web"
to = "app"
tcp = [8080]

[[reach]]
from = "app"
to = "web"
tcp = [8080]
"#;

/// Runs dtcprobe in `dir` (relative paths, so the output is the same in every run and can be
/// quoted in the docs); (exit code, stdout, stderr).
fn dtcprobe(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(netns::dtcprobe_bin())
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run dtcprobe");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let (code, out, err) = dtcprobe(dir, args);
    assert_eq!(code, 0, "dtcprobe {args:?}: {err}");
    out
}

/// Writes matrix.toml, the rules, web.toml and app.toml (derived) and prometheus.yml (derived)
/// into `dir`; returns the texts (web.toml, prometheus.yml) for the docs test.
fn derive_everything(dir: &Path) -> (String, String) {
    std::fs::write(dir.join("matrix.toml"), MATRIX).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config/dtcprobe-alerts.yml"),
        dir.join("dtcprobe-alerts.yml"),
    )
    .unwrap();
    let mut web = String::new();
    for zone in ["web", "app"] {
        let text = ok(dir, &["matrix", "-c", "matrix.toml", "--zone-config", zone]);
        std::fs::write(dir.join(format!("{zone}.toml")), &text).unwrap();
        if zone == "web" {
            web = text;
        }
    }
    let yaml = ok(
        dir,
        &[
            "prometheus-config",
            "--matrix",
            "matrix.toml",
            "--scrape-interval",
            "2s",
            "--rule-file",
            "dtcprobe-alerts.yml",
        ],
    );
    std::fs::write(dir.join("prometheus.yml"), &yaml).unwrap();
    (web, yaml)
}

#[test]
fn docs_show_the_matrix_example_the_real_test_uses() {
    let dir = tempfile::tempdir().unwrap();
    let (web, yaml) = derive_everything(dir.path());
    let docs =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/monitoring.md"))
            .unwrap();
    for (what, text, lang) in [
        ("matrix.toml", MATRIX, "toml"),
        ("web.toml", web.as_str(), "toml"),
        ("prometheus.yml", yaml.as_str(), "yaml"),
    ] {
        assert!(
            docs.contains(&format!("```{lang}\n{text}```")),
            "docs/monitoring.md must show the {what} of tests/prometheus_matrix.rs verbatim:\n{text}"
        );
    }
}

#[test]
fn matrix_inputs_are_checked_with_the_config_and_usage_codes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("matrix.toml"), MATRIX).unwrap();
    std::fs::write(
        d.join("nowatch.toml"),
        MATRIX.replace("\nwatch = ", "\n# watch = "),
    )
    .unwrap();
    std::fs::write(
        d.join("badwatch.toml"),
        MATRIX.replace("watch = \"198.18.2.2:9715\"", "watch = \"198.18.2.2\""),
    )
    .unwrap();
    std::fs::write(
        d.join("sqlwatch.toml"),
        MATRIX.replace(
            "name = \"sql\"\n",
            "name = \"sql\"\nwatch = \"198.18.3.2:9715\"\n",
        ),
    )
    .unwrap();
    let cases: &[(&[&str], i32, &str)] = &[
        (
            &["prometheus-config", "--matrix", "nowatch.toml"],
            78,
            "nowatch.toml: no zone has a `watch` address",
        ),
        (
            &["prometheus-config", "--matrix", "badwatch.toml"],
            78,
            "badwatch.toml:15:9: zone `app`: watch = \"198.18.2.2\": expected HOST:PORT",
        ),
        (
            &["prometheus-config", "--matrix", "sqlwatch.toml"],
            78,
            "zone `sql` has a `watch` but checks nothing",
        ),
        (
            &["prometheus-config", "--matrix", "missing.toml"],
            78,
            "missing.toml",
        ),
        (
            &[
                "prometheus-config",
                "--matrix",
                "matrix.toml",
                "-c",
                "x.toml",
            ],
            2,
            "cannot be used with",
        ),
        (
            &[
                "prometheus-config",
                "--matrix",
                "matrix.toml",
                "--listen-address",
                "a:1",
            ],
            2,
            "cannot be used with",
        ),
        (&["prometheus-config"], 2, "--matrix <FILE>"),
        (
            &["matrix", "-c", "matrix.toml", "--zone-config", "dmz"],
            2,
            "--zone-config \"dmz\": no such zone in matrix.toml (zones: web, app, sql)",
        ),
        (
            &["matrix", "-c", "matrix.toml", "--zone-config", "sql"],
            78,
            "zone `sql` checks nothing",
        ),
        (
            &["matrix", "-c", "badwatch.toml", "--zone-config", "web"],
            78,
            "badwatch.toml:15:9:",
        ),
        // The run itself does read the key file (it contacts the agents).
        (
            &["matrix", "-c", "matrix.toml"],
            78,
            "matrix.toml:3:12: cannot read key file",
        ),
    ];
    for (args, code, needle) in cases {
        let (got, out, err) = dtcprobe(d, args);
        assert_eq!(got, *code, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(
            out.is_empty(),
            "{args:?}: nothing on stdout on error: {out}"
        );
    }
}

/// `(prober, module, from, to)` of each probe_success sample, with its value.
fn probe_rows(rows: &[Sample]) -> BTreeMap<(String, String, String, String), f64> {
    let get = |l: &BTreeMap<String, String>, k: &str| l.get(k).cloned().unwrap_or_default();
    rows.iter()
        .map(|(l, v)| {
            (
                (
                    get(l, "prober"),
                    get(l, "module"),
                    get(l, "from"),
                    get(l, "to"),
                ),
                *v,
            )
        })
        .collect()
}

fn expected_probe_success() -> BTreeMap<(String, String, String, String), f64> {
    [
        ("web", "sql: tcp 198.18.3.2:135", "web", "sql", 1.0),
        ("web", "sql: mssql 198.18.3.2:1433", "web", "sql", 1.0),
        ("web", "app: tcp 198.18.2.2:8080", "web", "app", 1.0),
        // The hub drops app -> sql: exactly these two fail.
        ("app", "sql: tcp 198.18.3.2:135", "app", "sql", 0.0),
        ("app", "sql: mssql 198.18.3.2:1433", "app", "sql", 0.0),
        ("app", "web: tcp 198.18.1.2:8080", "app", "web", 1.0),
    ]
    .into_iter()
    .map(|(p, m, f, t, v)| {
        (
            (p.to_string(), m.to_string(), f.to_string(), t.to_string()),
            v,
        )
    })
    .collect()
}

#[test]
fn real_prometheus_from_a_matrix_file_sees_exactly_the_blocked_pair_failing() {
    if !netns::can_run_netns_tests("real_prometheus_from_a_matrix_file") {
        return;
    }
    require_prometheus();

    let MonitoredZones {
        hub: _hub,
        web,
        app,
        sql,
        mon,
    } = zones_app_cannot_reach_sql("dpm");
    // SQL Server: the matrix's `mssql` is the credential-free login, so a TDS peer answers.
    let _sql_port = sql.inside(|| {
        crate::support::tds_peer::TdsPeer::start_on(
            "198.18.3.2:1433".parse().unwrap(),
            crate::support::tds_peer::PeerConfig::default(),
        )
    });
    let _epm_port = sql.listen_tcp("198.18.3.2:135".parse().unwrap());
    let _web_http = web.listen_tcp("198.18.1.2:8080".parse().unwrap());
    let _app_http = app.listen_tcp("198.18.2.2:8080".parse().unwrap());

    let dir = tempfile::tempdir().unwrap();
    let (_, yaml) = derive_everything(dir.path());
    assert!(
        !dir.path().join("agents.key").exists(),
        "the key file must not exist: nothing here may need it"
    );
    promtool_check_config(&dir.path().join("prometheus.yml"))
        .unwrap_or_else(|e| panic!("{e}\n--- config ---\n{yaml}"));

    // Each zone's watch runs the config derived for it, on the matrix's `watch` address.
    let start_watch = |ns: &Netns, cfg: &Path, listen: &str| {
        let child = ns
            .command(netns::dtcprobe_bin())
            .args(["watch", "-c", cfg.to_str().unwrap()])
            .args(["--interval", "1s", "--no-trace", "--metrics-listen", listen])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start dtcprobe watch");
        Daemon::adopt(child, "dtcprobe watch")
    };
    let mut watches = vec![
        start_watch(&web, &dir.path().join("web.toml"), "198.18.1.2:9715"),
        start_watch(&app, &dir.path().join("app.toml"), "198.18.2.2:9715"),
    ];
    // Two successful scrapes of every target (6 probe jobs + 2 /metrics jobs).
    let mut prometheus =
        start_prometheus_and_wait_for_two_scrapes(&mon, dir.path(), &mut watches, 6);

    // Every module is a check the zone's watch serves (an unknown one would be `up == 0`, above),
    // and probe_success itself names the pair.
    assert_eq!(
        probe_rows(&query(&mon, "probe_success").unwrap()),
        expected_probe_success()
    );

    // The question the labels are for: which pair fails? Exactly app -> sql, with its 2 checks.
    let pairs = query(&mon, "count by (from, to) (probe_success == 0)").unwrap();
    let pairs: Vec<String> = pairs
        .iter()
        .map(|(l, v)| format!("{}->{} {v}", l["from"], l["to"]))
        .collect();
    assert_eq!(pairs, ["app->sql 2"]);

    // The rounds (/metrics) agree, and the probes' own check series kept their labels
    // (honor_labels: no exported_from / exported_to).
    let rounds = query(
        &mon,
        "count by (from, to) (dtcprobe_check_success{job=~\"web|app\"} == 0)",
    )
    .unwrap();
    let rounds: Vec<String> = rounds
        .iter()
        .map(|(l, v)| format!("{}->{} {v}", l["from"], l["to"]))
        .collect();
    assert_eq!(rounds, ["app->sql 2"]);
    assert_eq!(
        query(&mon, "count({exported_from!=\"\"} or {exported_to!=\"\"})").unwrap(),
        vec![],
        "target labels must not rename the checks' own from/to"
    );
    // The failing hop is the TCP connect timing out (a DROP), from both sources.
    let hops = query(
        &mon,
        "count by (job, hop, cause) (dtcprobe_hop_status == 1)",
    )
    .unwrap();
    let mut hops: Vec<String> = hops
        .iter()
        .map(|(l, v)| format!("{} {} {} {v}", l["job"], l["hop"], l["cause"]))
        .collect();
    hops.sort();
    assert_eq!(
        hops,
        [
            "app tcp timeout 2",
            "app/sql: mssql 198.18.3.2:1433 tcp timeout 1",
            "app/sql: tcp 198.18.3.2:135 tcp timeout 1",
        ]
    );

    // The shipped rules see the same pair: DtcprobeCheckFailing pending for app -> sql only.
    let mut alerts_seen = String::new();
    let pending = netns::wait_until(Duration::from_secs(20), || {
        let Ok(rows) = query(&mon, "ALERTS{alertname=\"DtcprobeCheckFailing\"}") else {
            return false;
        };
        let mut a: Vec<String> = rows
            .iter()
            .map(|(l, _)| {
                format!(
                    "{} {} {}->{} {}",
                    l["alertstate"], l["prober"], l["from"], l["to"], l["check"]
                )
            })
            .collect();
        a.sort();
        alerts_seen = format!("{a:?}");
        a == [
            "pending app app->sql sql: mssql 198.18.3.2:1433",
            "pending app app->sql sql: tcp 198.18.3.2:135",
        ]
    });
    assert!(
        pending,
        "unexpected DtcprobeCheckFailing alerts: {alerts_seen}"
    );

    prometheus.assert_running();
    for w in &mut watches {
        w.assert_running();
    }

    // Drift: the matrix gained the app -> web rule, but app's watch was restarted on a config
    // derived before it. Its module for that rule is unknown to the watch (HTTP 400): that
    // target turns `up == 0` with no probe_success at all, never a pass; app's other targets
    // and all of web's stay up.
    let stale_matrix = MATRIX.replace(
        "[[reach]]\nfrom = \"app\"\nto = \"web\"\ntcp = [8080]\n",
        "",
    );
    assert_ne!(stale_matrix, MATRIX);
    std::fs::write(dir.path().join("stale.toml"), stale_matrix).unwrap();
    let stale = ok(
        dir.path(),
        &["matrix", "-c", "stale.toml", "--zone-config", "app"],
    );
    std::fs::write(dir.path().join("app-stale.toml"), stale).unwrap();
    drop(watches.pop());
    watches.push(start_watch(
        &app,
        &dir.path().join("app-stale.toml"),
        "198.18.2.2:9715",
    ));
    let drifted = "app/web: tcp 198.18.1.2:8080";
    let mut state = String::new();
    let shows_drift = netns::wait_until(Duration::from_secs(30), || {
        let (Ok(up), Ok(success)) = (
            query(&mon, "up{prober!=\"\"}"),
            query(&mon, &format!("probe_success{{job=\"{drifted}\"}}")),
        ) else {
            return false;
        };
        let mut ups: Vec<String> = up
            .iter()
            .map(|(l, v)| format!("{} {v}", l["job"]))
            .collect();
        ups.sort();
        state = format!("up: {ups:?}\nprobe_success of {drifted}: {success:?}");
        success.is_empty()
            && ups
                == [
                    "app 1",
                    "app/sql: mssql 198.18.3.2:1433 1",
                    "app/sql: tcp 198.18.3.2:135 1",
                    "app/web: tcp 198.18.1.2:8080 0",
                    "web 1",
                    "web/app: tcp 198.18.2.2:8080 1",
                    "web/sql: mssql 198.18.3.2:1433 1",
                    "web/sql: tcp 198.18.3.2:135 1",
                ]
    });
    assert!(shows_drift, "after app's watch ran a stale config: {state}");
    for w in &mut watches {
        w.assert_running();
    }
    // Drop order: Prometheus, the watches, listeners, then the namespaces.
    drop(prometheus);
    drop(watches);
}
