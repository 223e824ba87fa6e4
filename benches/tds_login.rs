//! Benchmark: login + local transaction round trips against the TDS test peer, dtcprobe beside
//! FreeTDS `tsql` doing the same login and the same statements, in one run.
//!
//! `cargo bench --bench tds_login` (release profile). Iterations: DTCPROBE_BENCH_ITERS (default 30).
//! Both clients use full TLS inside TDS against the same peer on 127.0.0.1. Measured:
//! - dtcprobe in-process: the `login` + `tx_local` hop durations reported by the chain;
//! - dtcprobe process: a whole `dtcprobe check` run (process start, resolve, tcp, login, tx);
//! - tsql process: a whole `tsql` run with the same statements on stdin.

// The whole test peer, of which this benchmark uses only the login: the rest serves the tests.
#[path = "../tests/support/tds_peer.rs"]
#[allow(dead_code)]
mod tds_peer;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dtcprobe::chain::RunContext;
use dtcprobe::hops::mssql::{self, MssqlTarget};
use dtcprobe::model::Status;
use dtcprobe::resolver::DnsResolver;
use tds_peer::{PeerConfig, ServerEncryption, TdsPeer};

const TX_SCRIPT: &str = "BEGIN TRANSACTION\ngo\n\
CREATE TABLE #dtcprobe (id int NOT NULL PRIMARY KEY, note nvarchar(64) NOT NULL)\ngo\n\
INSERT INTO #dtcprobe (id, note) VALUES (1, N'bench')\ngo\n\
SELECT id, note FROM #dtcprobe\ngo\n\
ROLLBACK TRANSACTION\ngo\n\
SELECT @@TRANCOUNT AS trancount\ngo\nexit\n";

fn stats(name: &str, mut v: Vec<Duration>) {
    if v.is_empty() {
        println!("{name:<44} (no samples)");
        return;
    }
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mean = v.iter().map(|d| ms(*d)).sum::<f64>() / v.len() as f64;
    let p = |q: f64| ms(v[((v.len() - 1) as f64 * q).round() as usize]);
    println!(
        "{name:<44} n={:<4} min {:>7.2} ms  median {:>7.2} ms  p90 {:>7.2} ms  mean {:>7.2} ms",
        v.len(),
        ms(v[0]),
        p(0.5),
        p(0.9),
        mean
    );
}

fn tsql_once(port: u16, password: &str, conf: &Path) -> Option<Duration> {
    let started = Instant::now();
    let mut child = Command::new("tsql")
        .args([
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "probe",
            "-P",
            password,
            "-D",
            "app",
        ])
        .env("FREETDSCONF", conf)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    child.stdin.take()?.write_all(TX_SCRIPT.as_bytes()).ok()?;
    let out = child.wait_with_output().ok()?;
    let elapsed = started.elapsed();
    let text = String::from_utf8_lossy(&out.stdout);
    (out.status.success() && text.contains("bench")).then_some(elapsed)
}

fn main() {
    // `cargo bench` passes --bench; under `cargo test --all-targets` run one iteration as a smoke test.
    let benching = std::env::args().any(|a| a == "--bench");
    let iters: usize = if !benching {
        1
    } else {
        std::env::var("DTCPROBE_BENCH_ITERS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(30)
            .clamp(1, 1000)
    };
    let cfg = PeerConfig {
        encryption: ServerEncryption::Off,
        ..Default::default()
    };
    let password = cfg.password.clone();
    let peer = TdsPeer::start(cfg);
    let dir = tempfile::tempdir().unwrap();
    let pw_file = dir.path().join("pw");
    std::fs::write(&pw_file, format!("{password}\n")).unwrap();
    dtcprobe::secret::set_default_password_file(pw_file.clone());
    let url = format!(
        "mssql://probe@127.0.0.1:{}/app?tx=local&trust_server_certificate=true",
        peer.port()
    );
    println!("TDS login + local transaction against the test peer (127.0.0.1:{}), full TLS, {iters} iterations", peer.port());

    // dtcprobe, in process, with the crypto provider the binary installs.
    dtcprobe::tls::install_crypto_provider();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let target = MssqlTarget::from_url(&url).unwrap();
    let ctx = RunContext::new(
        Duration::from_secs(5),
        Arc::new(DnsResolver::from_system(Duration::from_secs(5))),
        false,
    );
    let mut hop_sum = Vec::new();
    let mut chain_total = Vec::new();
    for _ in 0..iters {
        let started = Instant::now();
        let hops = rt.block_on(mssql::run(&target, &ctx));
        chain_total.push(started.elapsed());
        assert!(hops.iter().all(|h| h.status == Status::Pass), "{hops:?}");
        hop_sum.push(
            hops.iter()
                .filter(|h| matches!(h.hop.as_str(), "login" | "tx_local"))
                .map(|h| h.duration_seconds)
                .sum::<Duration>(),
        );
    }
    stats("dtcprobe in-process: login + tx_local hops", hop_sum);
    stats("dtcprobe in-process: whole chain", chain_total);

    // dtcprobe, as a process.
    let bin = env!("CARGO_BIN_EXE_dtcprobe");
    let mut proc_times = Vec::new();
    for _ in 0..iters {
        let started = Instant::now();
        let out = Command::new(bin)
            .args([
                "check",
                &url,
                "-f",
                "json",
                "--password-file",
                pw_file.to_str().unwrap(),
            ])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        if out.status.success() {
            proc_times.push(started.elapsed());
        }
    }
    stats("dtcprobe process: check run", proc_times);

    // FreeTDS tsql, as a process, the same login and statements.
    let conf = dir.path().join("freetds.conf");
    std::fs::write(
        &conf,
        "[global]\n\ttds version = 7.4\n\tencryption = require\n",
    )
    .unwrap();
    if Command::new("tsql")
        .arg("-C")
        .stdout(Stdio::null())
        .status()
        .is_err()
    {
        println!("tsql not installed (freetds-bin): comparison skipped");
        return;
    }
    let mut tsql_times = Vec::new();
    for _ in 0..iters {
        if let Some(d) = tsql_once(peer.port(), &password, &conf) {
            tsql_times.push(d);
        }
    }
    stats("FreeTDS tsql process: same login + statements", tsql_times);
}
