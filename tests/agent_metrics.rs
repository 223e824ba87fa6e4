//! `dtcprobe agent --metrics-listen`: the agent's own counters, scraped over HTTP after a good and
//! a wrong-key `peer` run on loopback, and checked with promtool.

use crate::support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::netns::dtcprobe_bin;

/// The `listen=ADDR` field of a tracing log line.
fn listen_field(line: &str) -> Option<String> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("listen="))
        .map(str::to_string)
}

fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{head}"
    );
    (
        head.split(' ').nth(1).unwrap().parse().unwrap(),
        body.to_string(),
    )
}

fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
        .parse()
        .unwrap()
}

#[test]
fn agent_counts_sessions_refusals_and_callbacks() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("agent.key");
    crate::support::write_key(
        &key,
        "23028e805b4a61940c5f4c1c63168941d2ac09f58da599ce19df8ef5e3fc2e91",
    );
    let wrong = dir.path().join("wrong.key");
    support::write_key(
        &wrong,
        "0d58745db7e75ca0f4661a38791a15c67d45b88bcbb34097702410fa6b2f7a55",
    );

    let mut agent = Command::new(dtcprobe_bin())
        .args([
            "agent",
            "-v",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--key-file",
        ])
        .arg(&key)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = agent.stderr.take().unwrap();
    let _agent = support::netns::Daemon::adopt(agent, "dtcprobe agent");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let (mut agent_addr, mut metrics_addr) = (None, None);
    for _ in 0..20 {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("agent did not start");
        if line.contains("serving /metrics") {
            metrics_addr = listen_field(&line);
        } else if line.contains("agent listening") {
            agent_addr = listen_field(&line);
        }
        if agent_addr.is_some() && metrics_addr.is_some() {
            break;
        }
    }
    let (agent_addr, metrics_addr) = (agent_addr.unwrap(), metrics_addr.unwrap());

    let peer = |key: &std::path::Path| {
        let out = Command::new(dtcprobe_bin())
            .args([
                "peer",
                &agent_addr,
                "--timeout",
                "2s",
                "-f",
                "json",
                "--key-file",
            ])
            .arg(key)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        out.status.code()
    };
    assert_eq!(peer(&key), Some(0), "a good peer run on loopback passes");
    assert_eq!(peer(&wrong), Some(1), "a wrong key fails the run");

    let (status, body) = http_get(&metrics_addr, "/metrics");
    assert_eq!(status, 200);
    support::promtool_check(&body).unwrap();
    // Only the authenticated run takes a session slot; the wrong key is refused before that.
    assert_eq!(
        sample(&body, "dtcprobe_agent_sessions_total"),
        1.0,
        "{body}"
    );
    assert_eq!(
        sample(&body, "dtcprobe_agent_refused_total{reason=\"auth\"}"),
        1.0,
        "{body}"
    );
    assert_eq!(
        sample(&body, "dtcprobe_agent_requests_total"),
        1.0,
        "{body}"
    );
    assert_eq!(
        sample(&body, "dtcprobe_agent_callbacks_total{status=\"pass\"}"),
        1.0,
        "{body}"
    );
    assert!(!body.contains("23028e805b4a6194"), "key in metrics");
    assert_eq!(http_get(&metrics_addr, "/healthz").0, 200);
}
