//! Watch mode and the metrics server: single-flight /probe, a real Prometheus scrape of
//! /metrics and /probe checked with promtool, and a flapping target made by toggling a firewall
//! rule in a network namespace.

use crate::support;

use support::promtool_check as promtool_ok;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use dtcprobe::metrics_server::{self, Prober, ServerState};
use dtcprobe::model::{CheckResult, Direction, HopKind, HopResult};
use dtcprobe::target::{CheckSpec, Target};

/// A minimal HTTP/1.1 GET: (status, body).
fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("read response");
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("bad response {raw:?}"));
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{head}"
    );
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}

fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn spec(name: &str, url: &str) -> CheckSpec {
    CheckSpec {
        name: name.into(),
        from: None,
        to: None,
        timeout: None,
        target: Target::from_url(url).unwrap(),
    }
}

#[test]
fn concurrent_probes_share_one_run_and_results_are_cached() {
    let runs = Arc::new(AtomicU64::new(0));
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let prober: Prober = {
        let (runs, seen) = (runs.clone(), seen.clone());
        Arc::new(move |spec: CheckSpec| {
            runs.fetch_add(1, Ordering::SeqCst);
            seen.lock().unwrap().push(spec.target.display());
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(400)).await;
                let hops =
                    vec![HopResult::pass(HopKind::Tcp, "ok")
                        .with_duration(Duration::from_millis(400))];
                CheckResult {
                    name: spec.name.clone(),
                    kind: spec.target.kind().into(),
                    target: spec.target.display(),
                    from: None,
                    to: None,
                    direction: Direction::Forward,
                    status: CheckResult::status_of(&hops),
                    hops,
                }
            })
        })
    };
    let state = ServerState::new(
        vec![spec("db", "tcp://db01:1433")],
        prober,
        Duration::from_secs(2),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = rt.spawn(metrics_server::serve(listener, state.clone(), async {
        let _ = stop_rx.await;
    }));

    // Eight scrapes at once: one run.
    let threads: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(move || http_get(addr, "/probe?module=db&target=198.18.7.7:1434"))
        })
        .collect();
    let bodies: Vec<(u16, String)> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "concurrent requests must share one run"
    );
    for (code, body) in &bodies {
        assert_eq!(*code, 200, "{body}");
        assert_eq!(body, &bodies[0].1, "all waiters get the same result");
    }
    let body = &bodies[0].1;
    promtool_ok(body).unwrap();
    assert_eq!(sample(body, "probe_success "), Some(1.0), "{body}");
    assert!(
        sample(body, "probe_duration_seconds ").is_some_and(|d| d >= 0.35),
        "{body}"
    );
    // The target replaced the module's host and port.
    assert_eq!(seen.lock().unwrap()[0], "tcp://198.18.7.7:1434");

    // Within the cache time: reused. After it: a new run.
    http_get(addr, "/probe?module=db&target=198.18.7.7:1434");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    std::thread::sleep(Duration::from_millis(2300));
    http_get(addr, "/probe?module=db&target=198.18.7.7:1434");
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    // A different target is a different entry; no target uses the module's own.
    http_get(addr, "/probe?module=db");
    assert_eq!(seen.lock().unwrap().last().unwrap(), "tcp://db01:1433");

    let (code, body) = http_get(addr, "/probe?module=nope&target=x");
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("Unknown module"));
    assert_eq!(http_get(addr, "/probe?target=x").0, 400);
    assert_eq!(http_get(addr, "/probe?module=db&target=a%20b").0, 400);

    // Before any watch round: /healthz is up (the prober's own health) and says so; /metrics
    // still parses.
    assert_eq!(
        http_get(addr, "/healthz"),
        (200, "ok: serving; no round finished yet\n".to_string())
    );
    let (code, metrics) = http_get(addr, "/metrics");
    assert_eq!(code, 200);
    promtool_ok(&metrics).unwrap();
    assert_eq!(
        sample(&metrics, "dtcprobe_probe_runs_total "),
        Some(3.0),
        "{metrics}"
    );

    let _ = stop_tx.send(());
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .unwrap()
            .unwrap()
            .unwrap()
    });
}

/// A `dtcprobe watch` child with its stdout lines on a channel and its stderr collected.
struct Watcher {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: Arc<Mutex<String>>,
}

impl Watcher {
    fn spawn(mut cmd: Command) -> Watcher {
        let mut child = cmd
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn dtcprobe watch");
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let err = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        Watcher {
            child,
            lines,
            stderr,
        }
    }

    /// Waits (bounded) for a stdout line satisfying `pred`; returns it.
    fn wait_line(&self, what: &str, limit: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + limit;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if pred(&l) => return l,
                Ok(l) => seen.push(l),
                Err(_) => panic!(
                    "timed out waiting for {what}; stdout so far:\n{}\nstderr:\n{}",
                    seen.join("\n"),
                    self.stderr.lock().unwrap()
                ),
            }
        }
    }

    /// Waits (bounded) for the stderr text to contain `needle`; returns the stderr so far.
    fn wait_stderr(&self, needle: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            let s = self.stderr.lock().unwrap().clone();
            if s.contains(needle) {
                return s;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("no {needle:?} on stderr: {}", self.stderr.lock().unwrap());
    }

    /// SIGINT, then the exit code (bounded wait; killed if it does not stop).
    fn interrupt(&mut self) -> i32 {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGINT);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code().unwrap_or(-1);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        panic!("watch did not stop on SIGINT");
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn watch_serves_metrics_healthz_and_probe_that_promtool_accepts() {
    let open = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = open.local_addr().unwrap().port();
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("w.toml");
    std::fs::write(
        &cfg,
        format!("[[check]]\nname = \"db\"\nkind = \"tcp\"\nhost = \"127.0.0.1\"\nport = {port}\nfrom = \"app\"\nto = \"sql\"\n"),
    )
    .unwrap();
    let mut cmd = Command::new(support::netns::dtcprobe_bin());
    cmd.args([
        "watch",
        "-c",
        &cfg.to_string_lossy(),
        "--interval",
        "300ms",
        "--metrics-listen",
        "127.0.0.1:0",
    ]);
    let mut w = Watcher::spawn(cmd);
    let err = w.wait_stderr("on http://", Duration::from_secs(20));
    let addr: SocketAddr = err
        .split("on http://")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no address in {err}"));
    w.wait_line("the start event", Duration::from_secs(20), |l| {
        l.contains("db  start: pass")
    });

    assert_eq!(
        http_get(addr, "/healthz"),
        (
            200,
            "ok: serving; last round: 0 of 1 check failing (targets' state: /metrics)\n"
                .to_string()
        )
    );
    let (code, metrics) = http_get(addr, "/metrics");
    assert_eq!(code, 200);
    promtool_ok(&metrics).unwrap();
    assert_eq!(
        sample(&metrics, "dtcprobe_check_success{check=\"db\""),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "dtcprobe_check_flapping{check=\"db\""),
        Some(0.0),
        "{metrics}"
    );

    let (code, probe) = http_get(addr, "/probe?module=db");
    assert_eq!(code, 200);
    promtool_ok(&probe).unwrap();
    assert_eq!(sample(&probe, "probe_success "), Some(1.0), "{probe}");
    let (code, probe) = http_get(addr, &format!("/probe?module=db&target=127.0.0.1:{closed}"));
    assert_eq!(code, 200);
    promtool_ok(&probe).unwrap();
    assert_eq!(sample(&probe, "probe_success "), Some(0.0), "{probe}");
    assert!(probe.contains("cause=\"refused\"} 1"), "{probe}");

    // The service goes away: the next round reports the transition; /healthz stays 200 (a
    // liveness probe must not restart the prober during the outage it reports).
    drop(open);
    w.wait_line(
        "the pass -> fail transition",
        Duration::from_secs(20),
        |l| l.contains("db  pass -> fail"),
    );
    let (code, body) = http_get(addr, "/healthz");
    assert_eq!(
        (code, body.as_str()),
        (
            200,
            "ok: serving; last round: 1 of 1 check failing (targets' state: /metrics)\n"
        )
    );

    assert_eq!(w.interrupt(), 130);
    let summary = w.wait_line("the summary", Duration::from_secs(5), |l| {
        l.contains("summary:")
    });
    assert!(summary.contains("failing now: db"), "{summary}");
}

const REJECT: &str = r#"
table ip zonefw {
  chain input {
    type filter hook input priority 0; policy accept;
    tcp dport 1433 reject with tcp reset
  }
}
"#;

#[test]
fn watch_reports_a_flapping_target_when_a_namespace_firewall_toggles() {
    if !support::netns::can_run_netns_tests(
        "watch_reports_a_flapping_target_when_a_namespace_firewall_toggles",
    ) {
        return;
    }
    use support::netns::{Zones, SQL_IP};
    let zones = Zones::new("dpw");
    let _sql = zones
        .sql
        .listen_tcp(format!("{SQL_IP}:1433").parse().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("w.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[check]]\nname = \"dc2-sql\"\nkind = \"tcp\"\nhost = \"{SQL_IP}\"\nport = 1433\n"
        ),
    )
    .unwrap();

    let mut cmd = zones.web.command(support::netns::dtcprobe_bin());
    cmd.args([
        "watch",
        "-c",
        &cfg.to_string_lossy(),
        "-f",
        "json",
        "--interval",
        "250ms",
        "--timeout",
        "1s",
    ]);
    cmd.args([
        "--flap-window",
        "10m",
        "--flap-threshold",
        "3",
        "--count",
        "2000",
    ]);
    let mut w = Watcher::spawn(cmd);
    let event = |l: &str| {
        serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|e| panic!("{e}: {l}"))
    };
    let limit = Duration::from_secs(20);

    let start = event(&w.wait_line("start", limit, |l| l.contains("\"start\"")));
    assert_eq!(start["status"], "pass", "{start}");

    // Toggle the firewall; wait for each transition before the next toggle (no timing guesses).
    for (i, (rules, to)) in [(REJECT, "fail"), ("", "pass"), (REJECT, "fail")]
        .into_iter()
        .enumerate()
    {
        zones.sql.nft(rules);
        let l = w.wait_line(&format!("transition {i} to {to}"), limit, |l| {
            l.contains("\"transition\"")
        });
        let t = event(&l);
        assert_eq!(t["to"], to, "{t}");
        assert_eq!(t["check"], "dc2-sql");
        if to == "fail" {
            assert!(
                t["problem"].as_str().is_some_and(|p| p.contains("refused")),
                "{t}"
            );
        }
        assert!(
            t["at"].as_str().is_some_and(|a| a.ends_with('Z')),
            "timestamped: {t}"
        );
    }
    let flap = event(
        &w.wait_line("the flapping event", Duration::from_secs(5), |l| {
            l.contains("\"flapping\"")
        }),
    );
    assert_eq!(flap["check"], "dc2-sql");
    assert_eq!(flap["transitions"], 3);

    assert_eq!(w.interrupt(), 130);
    let summary = event(&w.wait_line("the summary", Duration::from_secs(5), |l| {
        l.contains("\"summary\"")
    }));
    let c = &summary["checks"][0];
    assert_eq!(
        (
            c["check"].as_str(),
            c["flapped"].as_bool(),
            c["transitions"].as_u64()
        ),
        (Some("dc2-sql"), Some(true), Some(3))
    );
}

#[test]
fn watch_count_bounds_the_run_and_prints_nothing_without_changes() {
    let open = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("tcp://127.0.0.1:{}", open.local_addr().unwrap().port());
    let tf = tempfile::tempdir().unwrap();
    let out = Command::new(support::netns::dtcprobe_bin())
        .args([
            "watch",
            &url,
            "--interval",
            "100ms",
            "--count",
            "3",
            "--textfile-dir",
        ])
        .arg(tf.path())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "start + summary only: {stdout}");
    assert!(lines[0].contains("start: pass"));
    assert!(
        lines[1].contains("summary: 3 rounds; flapping: none; failing now: none"),
        "{stdout}"
    );
    // The textfile is rewritten every round and is valid.
    let prom = std::fs::read_to_string(tf.path().join("dtcprobe.prom")).unwrap();
    promtool_ok(&prom).unwrap();
    assert_eq!(
        sample(&prom, "dtcprobe_check_success{"),
        Some(1.0),
        "{prom}"
    );
}
