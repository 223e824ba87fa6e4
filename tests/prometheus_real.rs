//! Prometheus integration with the real server (Debian's `prometheus` package): the scrape
//! config made by `dtcprobe prometheus-config`, two `dtcprobe watch` instances in two zones, an
//! nftables rule on the router between the zones blocking one pair, and the answers of
//! Prometheus' own HTTP API. Also `promtool check config` on generated configs, and the alert
//! rules' unit tests (`promtool test rules`).
//!
//! The topology (network namespaces, 198.18.0.0/15 only): a router `hub` with one link per zone,
//! `web` (198.18.1.2) and `app` (198.18.2.2) each running `dtcprobe watch --metrics-listen`,
//! `sql` (198.18.3.2) with the scripted TDS server on 1433 and a listener on 135, and `mon`
//! (198.18.4.2) running Prometheus. The hub's forward chain drops app -> sql, so exactly the
//! app -> sql checks must fail.
//!
//! Prometheus is Debian's /usr/bin/prometheus run directly, as the package's systemd unit does
//! (`prometheus $ARGS`), with its own `--storage.tsdb.path` in a temporary directory and
//! `--web.listen-address` on the test network; it is killed when the test ends (`Daemon`'s Drop).

use crate::support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::netns::{self, Daemon, Netns};
use support::tds_peer::{PeerConfig, TdsPeer};

/// Runs `f` on a thread that has entered `ns`: sockets it creates live in that namespace.
pub(crate) fn in_namespace<T: Send + 'static>(
    ns: &Netns,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let ns_path = format!("/run/netns/{}", ns.name);
    std::thread::spawn(move || {
        let file = std::fs::File::open(&ns_path).expect("open netns");
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .expect("namespace thread")
}

/// The environment variable the watch instances read the SQL login's password from.
const PASSWORD_ENV: &str = "DTCPROBE_TEST_SQL_PASSWORD";

/// The checks of one zone's watch instance: its zone, the two SQL ports, a SQL Server login (a
/// module that takes no `target`), the other zone's web port.
fn zone_config(zone: &str, other_zone: &str, other_ip: &str) -> String {
    format!(
        "[defaults]\ntimeout = \"500ms\"\nzone = \"{zone}\"\n\n\
         [[check]]\nname = \"sql-tds\"\nkind = \"tcp\"\nhost = \"198.18.3.2\"\nport = 1433\nto = \"sql\"\n\n\
         [[check]]\nname = \"sql-login\"\nkind = \"mssql\"\nhost = \"198.18.3.2\"\nport = 1433\n\
         database = \"master\"\nuser = \"probe\"\npassword_env = \"{PASSWORD_ENV}\"\n\
         trust_server_certificate = true\nreverse_dns = false\nto = \"sql\"\n\n\
         [[check]]\nname = \"sql-epm\"\nkind = \"tcp\"\nhost = \"198.18.3.2\"\nport = 135\nto = \"sql\"\n\n\
         [[check]]\nname = \"{other_zone}-http\"\nkind = \"tcp\"\nhost = \"{other_ip}\"\nport = 8080\nto = \"{other_zone}\"\n"
    )
}

/// The SQL login check's target as reports show it (no password in it).
const LOGIN_TARGET: &str =
    "mssql://probe@198.18.3.2:1433/master?tx=local&trust_server_certificate=true";

const WEB_LISTEN: &str = "198.18.1.2:9715";
const APP_LISTEN: &str = "198.18.2.2:9715";
pub(crate) const PROMETHEUS_LISTEN: &str = "198.18.4.2:9090";

/// Runs `dtcprobe prometheus-config` in `dir` (relative paths, so the output is the same in every
/// run and can be quoted in docs/monitoring.md).
fn prometheus_config(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(netns::dtcprobe_bin())
        .arg("prometheus-config")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run dtcprobe prometheus-config");
    assert!(
        out.status.success(),
        "prometheus-config {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Writes web.toml, app.toml and the alert rules into `dir` and returns the prometheus.yml the
/// real test runs: the web instance's full file (2s scrapes, the rules) plus the app instance's
/// jobs appended with --jobs-only.
fn write_test_prometheus_config(dir: &Path) -> String {
    std::fs::write(
        dir.join("web.toml"),
        zone_config("web", "app", "198.18.2.2"),
    )
    .unwrap();
    std::fs::write(
        dir.join("app.toml"),
        zone_config("app", "web", "198.18.1.2"),
    )
    .unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config/dtcprobe-alerts.yml"),
        dir.join("dtcprobe-alerts.yml"),
    )
    .unwrap();
    let mut yaml = prometheus_config(
        dir,
        &[
            "-c",
            "web.toml",
            "--listen-address",
            WEB_LISTEN,
            "--job",
            "web",
            "--scrape-interval",
            "2s",
            "--rule-file",
            "dtcprobe-alerts.yml",
        ],
    );
    yaml.push_str(&prometheus_config(
        dir,
        &[
            "-c",
            "app.toml",
            "--listen-address",
            APP_LISTEN,
            "--job",
            "app",
            "--scrape-interval",
            "2s",
            "--jobs-only",
        ],
    ));
    std::fs::write(dir.join("prometheus.yml"), &yaml).unwrap();
    yaml
}

/// `promtool check config FILE` (it also loads the rule files it names).
pub(crate) fn promtool_check_config(file: &Path) -> Result<(), String> {
    let out = Command::new("promtool")
        .args(["check", "config"])
        .arg(file)
        .output()
        .expect("run promtool (scripts/install-test-deps installs Debian's prometheus package)");
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

#[test]
fn alert_rules_pass_promtool_check_and_unit_tests() {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    for args in [
        vec!["check", "rules", "dtcprobe-alerts.yml"],
        vec!["test", "rules", "dtcprobe-alerts.test.yml"],
    ] {
        let out = Command::new("promtool")
            .args(&args)
            .current_dir(&config)
            .output()
            .expect("run promtool");
        assert!(
            out.status.success(),
            "promtool {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn generated_scrape_configs_pass_promtool_for_every_kind() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("all.toml"),
        "[[check]]\nname = \"tds \\\"quoted\\\" # not a comment\"\nkind = \"tcp\"\nhost = \"::1\"\nport = 1433\n\n\
         [[check]]\nname = \"dns\"\nkind = \"dns\"\nhost = \"sql01.corp.example\"\n\n\
         [[check]]\nname = \"msdtc\"\nkind = \"epm\"\nhost = \"sql01.corp.example\"\n\n\
         [[check]]\nname = \"login\"\nkind = \"mssql\"\nhost = \"sql01.corp.example\"\nuser = \"probe\"\ndatabase = \"master\"\npassword_env = \"DTCPROBE_TEST_UNSET\"\n\n\
         [[check]]\nname = \"pg\"\nkind = \"postgres\"\nhost = \"db01.corp.example\"\nuser = \"app\"\ndatabase = \"orders\"\npassword_env = \"DTCPROBE_TEST_UNSET\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("dtcprobe-alerts.yml"),
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/dtcprobe-alerts.yml"))
            .unwrap(),
    )
    .unwrap();
    for extra in [
        vec![],
        vec![
            "--scrape-interval",
            "30s",
            "--rule-file",
            "dtcprobe-alerts.yml",
        ],
    ] {
        let mut args = vec!["-c", "all.toml", "--listen-address", "[::1]:9715"];
        args.extend(extra);
        let yaml = prometheus_config(dir.path(), &args);
        let file = dir.path().join("prometheus.yml");
        std::fs::write(&file, &yaml).unwrap();
        promtool_check_config(&file).unwrap_or_else(|e| panic!("{e}\n--- config ---\n{yaml}"));
        // Credentialed kinds are scraped at the instance itself, never with a `target`.
        for module in ["login", "pg"] {
            let job = yaml
                .split(&format!("job_name: \"dtcprobe/{module}\""))
                .nth(1)
                .unwrap()
                .split("job_name:")
                .next()
                .unwrap();
            assert!(!job.contains("__param_target"), "{job}");
            assert!(job.contains("targets: [\"[::1]:9715\"]"), "{job}");
        }
    }
    // Two instances with the same --job would be two jobs of one name: promtool refuses it.
    let mut twice = prometheus_config(dir.path(), &["-c", "all.toml", "--listen-address", "a:1"]);
    twice.push_str(&prometheus_config(
        dir.path(),
        &["-c", "all.toml", "--listen-address", "b:1", "--jobs-only"],
    ));
    let file = dir.path().join("twice.yml");
    std::fs::write(&file, twice).unwrap();
    assert!(promtool_check_config(&file).is_err());
}

#[test]
fn prometheus_config_rejects_bad_input_with_distinct_codes() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.toml"),
        "[[check]]\nname = \"x\"\nkind = \"tcp\"\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("empty.toml"), "").unwrap();
    std::fs::write(
        dir.path().join("ok.toml"),
        "[[check]]\nname = \"x\"\nkind = \"dns\"\nhost = \"h\"\n",
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(netns::dtcprobe_bin())
            .arg("prometheus-config")
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(&["-c", "bad.toml"]);
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("bad.toml:3:"), "{err}");
    let (code, err) = run(&["-c", "empty.toml"]);
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("no checks"), "{err}");
    let (code, err) = run(&["-c", "ok.toml", "--listen-address", "probe-web01"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--listen-address"), "{err}");
    // Not an error: a probe that may outrun the scrape is named on stderr, the YAML still printed.
    let (code, err) = run(&["-c", "ok.toml", "--scrape-interval", "4s"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains(
            "note: check x: its hop timeout (3s) is more than half the scrape timeout (4s)"
        ),
        "{err}"
    );
    let (code, err) = run(&["-c", "missing.toml"]);
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("missing.toml"), "{err}");
}

#[test]
fn docs_show_the_scrape_config_the_real_test_uses() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = write_test_prometheus_config(dir.path());
    let docs =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/monitoring.md"))
            .unwrap();
    assert!(
        docs.contains(&format!("```yaml\n{yaml}```")),
        "docs/monitoring.md must show the generated config verbatim:\n{yaml}"
    );
    for zone in ["web", "app"] {
        let toml = std::fs::read_to_string(dir.path().join(format!("{zone}.toml"))).unwrap();
        assert!(
            docs.contains(&format!("```toml\n# {zone}.toml\n{toml}```")),
            "docs/monitoring.md must show {zone}.toml:\n{toml}"
        );
    }
}

/// An HTTP/1.0 GET made from inside `ns` (Prometheus listens on the test network only); HTTP/1.0
/// so that the body is never chunked. Returns (status, body).
pub(crate) fn http_get_in(
    ns: &Netns,
    addr: SocketAddr,
    path: &str,
) -> Result<(u16, String), String> {
    let path = path.to_string();
    in_namespace(ns, move || -> Result<(u16, String), String> {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
            .map_err(|e| format!("connect {addr}: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(s, "GET {path} HTTP/1.0\r\nHost: prometheus\r\n\r\n").map_err(|e| e.to_string())?;
        let mut raw = String::new();
        s.read_to_string(&mut raw).map_err(|e| e.to_string())?;
        let (head, body) = raw.split_once("\r\n\r\n").ok_or("no HTTP header end")?;
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("bad status line in {head:?}"))?;
        Ok((status, body.to_string()))
    })
}

/// One sample of an instant vector: its labels and value.
pub(crate) type Sample = (BTreeMap<String, String>, f64);

/// Runs an instant query through /api/v1/query; the result vector.
pub(crate) fn query(mon: &Netns, promql: &str) -> Result<Vec<Sample>, String> {
    let q: String = url::form_urlencoded::byte_serialize(promql.as_bytes()).collect();
    let addr: SocketAddr = PROMETHEUS_LISTEN.parse().unwrap();
    let (status, body) = http_get_in(mon, addr, &format!("/api/v1/query?query={q}"))?;
    if status != 200 {
        return Err(format!("{promql}: HTTP {status}: {body}"));
    }
    let v: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
    let result = v["data"]["result"]
        .as_array()
        .ok_or_else(|| format!("{promql}: no result vector: {body}"))?;
    Ok(result
        .iter()
        .map(|r| {
            let labels = r["metric"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                .collect();
            let value = r["value"][1].as_str().unwrap().parse().unwrap();
            (labels, value)
        })
        .collect())
}

/// `(prober, label)` pairs of a result, with their values.
fn by(rows: &[Sample], label: &str) -> BTreeMap<(String, String), f64> {
    rows.iter()
        .map(|(l, v)| {
            (
                (
                    l.get("prober").cloned().unwrap_or_default(),
                    l.get(label).cloned().unwrap_or_default(),
                ),
                *v,
            )
        })
        .collect()
}

fn expected_probe_success() -> BTreeMap<(String, String), f64> {
    [
        ("web", "sql-tds", 1.0),
        ("web", "sql-epm", 1.0),
        ("web", "sql-login", 1.0),
        ("web", "app-http", 1.0),
        // The hub drops app -> sql: exactly these three fail.
        ("app", "sql-tds", 0.0),
        ("app", "sql-epm", 0.0),
        ("app", "sql-login", 0.0),
        ("app", "web-http", 1.0),
    ]
    .into_iter()
    .map(|(p, m, v)| ((p.to_string(), m.to_string()), v))
    .collect()
}

#[test]
fn real_prometheus_scrapes_two_zones_and_sees_exactly_the_blocked_pair_failing() {
    if !netns::can_run_netns_tests("real_prometheus_scrapes_two_zones") {
        return;
    }
    require_prometheus();

    let MonitoredZones {
        hub: _hub,
        web,
        app,
        sql,
        mon,
    } = zones_app_cannot_reach_sql("dpp");
    // The scripted SQL Server (real TDS, real credential check) on 1433, bound inside `sql`.
    let peer_config = PeerConfig::default();
    let password = peer_config.password.clone();
    let _tds = in_namespace(&sql, move || {
        TdsPeer::start_on("198.18.3.2:1433".parse().unwrap(), peer_config)
    });
    let _epm = sql.listen_tcp("198.18.3.2:135".parse().unwrap());
    let _web_http = web.listen_tcp("198.18.1.2:8080".parse().unwrap());
    let _app_http = app.listen_tcp("198.18.2.2:8080".parse().unwrap());

    let dir = tempfile::tempdir().unwrap();
    let yaml = write_test_prometheus_config(dir.path());
    promtool_check_config(&dir.path().join("prometheus.yml"))
        .unwrap_or_else(|e| panic!("{e}\n--- config ---\n{yaml}"));

    let mut watches = Vec::new();
    for (ns, cfg, listen) in [
        (&web, "web.toml", WEB_LISTEN),
        (&app, "app.toml", APP_LISTEN),
    ] {
        let cfg = dir.path().join(cfg);
        let child = ns
            .command(netns::dtcprobe_bin())
            .args(["watch", "-c", cfg.to_str().unwrap()])
            .args(["--interval", "1s", "--no-trace", "--metrics-listen", listen])
            .env(PASSWORD_ENV, &password)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start dtcprobe watch");
        watches.push(Daemon::adopt(child, "dtcprobe watch"));
    }
    // 8 probe jobs + 2 /metrics jobs; a probe of the blocked pair takes one 500ms hop timeout,
    // the scrape timeout is the 2s interval.
    let mut prometheus =
        start_prometheus_and_wait_for_two_scrapes(&mon, dir.path(), &mut watches, 8);

    // /probe: exactly app -> sql fails.
    let probe = by(&query(&mon, "probe_success").unwrap(), "module");
    assert_eq!(probe, expected_probe_success());

    // The watch rounds (/metrics) agree, check by check.
    let rounds = by(
        &query(&mon, "dtcprobe_check_success{job=~\"web|app\"}").unwrap(),
        "check",
    );
    assert_eq!(rounds, expected_probe_success());

    // The failing hop is the TCP connect, timing out (a DROP), in both sources; no other hop has
    // any cause set.
    let label = |l: &BTreeMap<String, String>, k: &str| l.get(k).cloned().unwrap_or_default();
    let failing_hops = query(&mon, "dtcprobe_hop_status == 1").unwrap();
    let mut seen: Vec<String> = failing_hops
        .iter()
        .map(|(l, _)| {
            let get = |k| label(l, k);
            format!(
                "{} {} {} {}",
                get("job"),
                get("check"),
                get("hop"),
                get("cause")
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            "app sql-epm tcp timeout",
            "app sql-login tcp timeout",
            "app sql-tds tcp timeout",
            "app/sql-epm sql-epm tcp timeout",
            "app/sql-login sql-login tcp timeout",
            "app/sql-tds sql-tds tcp timeout",
        ],
        "{failing_hops:?}"
    );
    // The failing checks name the zone pair and the target, in both sources.
    let failing_checks = query(&mon, "dtcprobe_check_success == 0").unwrap();
    let mut seen: Vec<String> = failing_checks
        .iter()
        .map(|(l, _)| {
            let get = |k| label(l, k);
            format!(
                "{} {}->{} {}",
                get("job"),
                get("from"),
                get("to"),
                get("target")
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            format!("app app->sql {LOGIN_TARGET}"),
            "app app->sql tcp://198.18.3.2:135".into(),
            "app app->sql tcp://198.18.3.2:1433".into(),
            "app/sql-epm app->sql tcp://198.18.3.2:135".into(),
            format!("app/sql-login app->sql {LOGIN_TARGET}"),
            "app/sql-tds app->sql tcp://198.18.3.2:1433".into(),
        ],
        "{failing_checks:?}"
    );

    // What Prometheus asked for: host targets as `target=`, the SQL login without any (its
    // credentials stay with its configured server), `instance` naming what was probed.
    let (status, body) = http_get_in(
        &mon,
        PROMETHEUS_LISTEN.parse().unwrap(),
        "/api/v1/targets?state=active",
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let targets: Value = serde_json::from_str(&body).unwrap();
    let mut scrapes: Vec<String> = targets["data"]["activeTargets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["labels"]["prober"] == "web")
        .map(|t| {
            format!(
                "{} {} {}",
                t["labels"]["job"].as_str().unwrap(),
                t["labels"]["instance"].as_str().unwrap(),
                t["scrapeUrl"].as_str().unwrap()
            )
        })
        .collect();
    scrapes.sort();
    assert_eq!(
        scrapes,
        [
            "web 198.18.1.2:9715 http://198.18.1.2:9715/metrics".to_string(),
            "web/app-http 198.18.2.2:8080 http://198.18.1.2:9715/probe?module=app-http&target=198.18.2.2%3A8080".into(),
            "web/sql-epm 198.18.3.2:135 http://198.18.1.2:9715/probe?module=sql-epm&target=198.18.3.2%3A135".into(),
            format!("web/sql-login {LOGIN_TARGET} http://198.18.1.2:9715/probe?module=sql-login"),
            "web/sql-tds 198.18.3.2:1433 http://198.18.1.2:9715/probe?module=sql-tds&target=198.18.3.2%3A1433".into(),
        ]
    );

    // The shipped rules are loaded and evaluated: the failing alerts are pending for exactly the
    // blocked pair (their `for` is minutes), and nothing else is pending or firing.
    let mut alerts_seen = String::new();
    let pending = netns::wait_until(Duration::from_secs(20), || {
        let Ok(rows) = query(&mon, "ALERTS") else {
            return false;
        };
        let mut a: Vec<String> = rows
            .iter()
            .map(|(l, _)| {
                format!(
                    "{} {} {} {}",
                    l["alertname"], l["alertstate"], l["prober"], l["check"]
                )
            })
            .collect();
        a.sort();
        alerts_seen = format!("{a:?}");
        a == [
            "DtcprobeCheckFailing pending app sql-epm",
            "DtcprobeCheckFailing pending app sql-login",
            "DtcprobeCheckFailing pending app sql-tds",
            "DtcprobeHopFailing pending app sql-epm",
            "DtcprobeHopFailing pending app sql-login",
            "DtcprobeHopFailing pending app sql-tds",
        ]
    });
    assert!(pending, "unexpected ALERTS: {alerts_seen}");

    prometheus.assert_running();
    for w in &mut watches {
        w.assert_running();
    }

    // The app prober stops: its targets turn `up == 0` (no result is not a pass), the web ones
    // stay up, and DtcprobeProberDown is pending for each app job.
    let app_watch = watches.pop().unwrap();
    drop(app_watch);
    let mut state = String::new();
    let prober_down = netns::wait_until(Duration::from_secs(30), || {
        let (Ok(app_up), Ok(web_up), Ok(alerts)) = (
            query(&mon, "up{prober=\"app\"}"),
            query(&mon, "up{prober=\"web\"}"),
            query(&mon, "ALERTS{alertname=\"DtcprobeProberDown\"}"),
        ) else {
            return false;
        };
        let mut down: Vec<String> = alerts
            .iter()
            .map(|(l, _)| format!("{} {}", label(l, "alertstate"), label(l, "job")))
            .collect();
        down.sort();
        state = format!("app up: {app_up:?}\nweb up: {web_up:?}\nalerts: {down:?}");
        app_up.len() == 5
            && app_up.iter().all(|(_, v)| *v == 0.0)
            && web_up.len() == 5
            && web_up.iter().all(|(_, v)| *v == 1.0)
            && down
                == [
                    "pending app",
                    "pending app/sql-epm",
                    "pending app/sql-login",
                    "pending app/sql-tds",
                    "pending app/web-http",
                ]
    });
    assert!(prober_down, "after stopping the app prober: {state}");
    // Drop order: Prometheus, the watches, listeners, then the namespaces.
    drop(prometheus);
    drop(watches);
}

/// Starts the Debian package's Prometheus in `mon` (no systemd: its own storage under `dir` and
/// address, logs on stderr) with `dir/prometheus.yml`, and waits, bounded, for two successful
/// scrapes of every target: `probes` probe jobs plus the two watches' /metrics, a finished watch
/// round on both instances, and every target up at the last scrape.
pub(crate) fn start_prometheus_and_wait_for_two_scrapes(
    mon: &Netns,
    dir: &Path,
    watches: &mut [Daemon],
    probes: usize,
) -> Daemon {
    let storage = dir.join("tsdb");
    let mut prometheus = Daemon::spawn(
        mon,
        "prometheus",
        &[
            &format!("--config.file={}", dir.join("prometheus.yml").display()),
            &format!("--storage.tsdb.path={}", storage.display()),
            &format!("--web.listen-address={PROMETHEUS_LISTEN}"),
            "--log.level=warn",
        ],
    );
    let ready_addr: SocketAddr = PROMETHEUS_LISTEN.parse().unwrap();
    let ready = netns::wait_until(Duration::from_secs(30), || {
        matches!(http_get_in(mon, ready_addr, "/-/ready"), Ok((200, _)))
    });
    prometheus.assert_running();
    assert!(
        ready,
        "prometheus did not become ready on {PROMETHEUS_LISTEN}"
    );
    for w in watches.iter_mut() {
        w.assert_running();
    }
    let mut last = String::new();
    let scraped = netns::wait_until(Duration::from_secs(60), || {
        // `n` series, every value at least `min`.
        let mut all_at_least = |promql: &str, n: usize, min: f64| match query(mon, promql) {
            Ok(rows) => {
                last = format!("{promql}: {rows:?}");
                rows.len() == n && rows.iter().all(|(_, v)| *v >= min)
            }
            Err(e) => {
                last = e;
                false
            }
        };
        let targets = probes + watches.len();
        all_at_least("sum_over_time(up{prober!=\"\"}[1m])", targets, 2.0)
            && all_at_least("up{prober!=\"\"}", targets, 1.0)
            && all_at_least("count_over_time(probe_success[1m])", probes, 2.0)
            && all_at_least(
                "count_over_time(dtcprobe_check_success{job=~\"web|app\"}[1m])",
                probes,
                2.0,
            )
    });
    assert!(
        scraped,
        "no two successful scrapes of every target within 60s; last: {last}"
    );
    prometheus
}

/// Four zones behind one router (`hub`): web 198.18.1.2, app 198.18.2.2, sql 198.18.3.2 and the
/// monitoring zone 198.18.4.2, each /24 routed through 198.18.N.1.
pub(crate) struct MonitoredZones {
    pub hub: Netns,
    pub web: Netns,
    pub app: Netns,
    pub sql: Netns,
    pub mon: Netns,
}

/// The zones, with the router's firewall dropping app -> sql silently (as most zone firewalls
/// do). Namespace names start with `prefix` (`h`, `w`, `a`, `s`, `m` appended).
pub(crate) fn zones_app_cannot_reach_sql(prefix: &str) -> MonitoredZones {
    let name = |z: &str| format!("{prefix}{z}");
    let zones = MonitoredZones {
        hub: Netns::new(&name("h")),
        web: Netns::new(&name("w")),
        app: Netns::new(&name("a")),
        sql: Netns::new(&name("s")),
        mon: Netns::new(&name("m")),
    };
    for (n, zone) in [
        (1, &zones.web),
        (2, &zones.app),
        (3, &zones.sql),
        (4, &zones.mon),
    ] {
        netns::link_named(
            &zones.hub,
            &format!("z{n}"),
            &format!("198.18.{n}.1/24"),
            zone,
            "eth0",
            &format!("198.18.{n}.2/24"),
        );
        zone.sh(&format!("ip route add default via 198.18.{n}.1"));
    }
    zones.hub.sh("sysctl -qw net.ipv4.ip_forward=1");
    zones.hub.nft(
        "table inet zonefw {\n  chain forward {\n    type filter hook forward priority 0; policy accept;\n    \
         ip saddr 198.18.2.0/24 ip daddr 198.18.3.0/24 drop\n  }\n}\n",
    );
    zones
}

/// Root but no Prometheus server is a broken test machine, not a reason to pass.
pub(crate) fn require_prometheus() {
    assert!(
        Command::new("prometheus")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success()),
        "prometheus is not installed: run scripts/install-test-deps (Debian package prometheus)"
    );
}
