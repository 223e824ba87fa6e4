//! Cross-checks the TDS test peer with an independent client, FreeTDS `tsql` (Debian
//! freetds-bin, installed by scripts/install-test-deps): if tsql can log in, run a query, read
//! the rows and see transaction state through the peer, the peer speaks real TDS, and the
//! dtcprobe tests against it mean something.

use crate::support::tds_peer;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use tds_peer::{Event, PeerConfig, ServerEncryption, TdsPeer};

fn tsql_available() -> bool {
    Command::new("tsql")
        .arg("-C")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Runs tsql with `script` on stdin (bounded), with an empty FreeTDS config so the machine's
/// settings do not interfere; `encryption` is FreeTDS' setting (off, request, require).
fn tsql(
    peer: &TdsPeer,
    user: &str,
    password: &str,
    encryption: &str,
    script: &str,
) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("freetds.conf");
    std::fs::write(
        &conf,
        format!("[global]\n\ttds version = 7.4\n\tencryption = {encryption}\n"),
    )
    .unwrap();
    let mut child = Command::new("tsql")
        .args([
            "-H",
            "127.0.0.1",
            "-p",
            &peer.port().to_string(),
            "-U",
            user,
            "-P",
            password,
            "-D",
            "app",
        ])
        .env("FREETDSCONF", &conf)
        .env("HOME", dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tsql");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    // Bounded wait: tsql must finish on its own.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn freetds_tsql_logs_in_and_queries_through_the_peer() {
    if !tsql_available() {
        panic!("tsql (freetds-bin) is not installed: run scripts/install-test-deps");
    }
    for (server, encryption) in [
        (ServerEncryption::NotSupported, "off"),
        (ServerEncryption::Off, "require"),
    ] {
        let cfg = PeerConfig {
            encryption: server,
            ..Default::default()
        };
        let pw = cfg.password.clone();
        let peer = TdsPeer::start(cfg);
        let script = "SELECT 4242\ngo\nBEGIN TRANSACTION\ngo\nSELECT @@TRANCOUNT\ngo\nROLLBACK TRANSACTION\ngo\nSELECT @@TRANCOUNT\ngo\nexit\n";
        let (ok, out) = tsql(&peer, "probe", &pw, encryption, script);
        assert!(
            ok,
            "tsql failed against the peer ({server:?}/{encryption}):\n{out}"
        );
        assert!(out.contains("4242"), "{out}");
        // tsql printed the transaction count inside (1) and after rollback (0).
        let counts: Vec<&str> = out
            .lines()
            .map(str::trim)
            .filter(|l| *l == "1" || *l == "0")
            .collect();
        assert_eq!(counts, ["1", "0"], "{out}");
        let events = peer.events();
        assert!(
            events
                .iter()
                .any(|e| matches!(e, Event::Login { user, accepted: true, .. } if user == "probe")),
            "{events:?}"
        );
        assert_eq!(
            events.contains(&Event::TlsHandshake { strict: false }),
            encryption == "require",
            "{server:?}/{encryption}: {events:?}"
        );
        assert!(peer.batches().iter().any(|b| b.contains("4242")));
    }
}

#[test]
fn freetds_tsql_sees_the_peers_login_failure() {
    if !tsql_available() {
        panic!("tsql (freetds-bin) is not installed: run scripts/install-test-deps");
    }
    let peer = TdsPeer::start(PeerConfig {
        encryption: ServerEncryption::NotSupported,
        ..Default::default()
    });
    let (ok, out) = tsql(&peer, "probe", "wrong", "off", "SELECT 1\ngo\nexit\n");
    assert!(!ok, "{out}");
    assert!(
        out.contains("18456") || out.contains("Login failed"),
        "{out}"
    );
}
