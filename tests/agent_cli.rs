//! The `agent` binary's edges on loopback (no root needed): key file rules, graceful shutdown.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_dtcprobe"));
    c.env_remove("RUST_LOG")
        .env_remove("DTCPROBE_KEY_FILE")
        .stdin(Stdio::null());
    c
}

#[test]
fn short_or_missing_key_file_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short.key");
    // 31 random bytes (62 hex digits) after trimming.
    crate::support::write_key(
        &short,
        "5c2f0e9d71b4a38866f0c1d2e3a4b5c6d7e8f90112233445566778899aabbc\n",
    );
    let missing = dir.path().join("missing.key");
    for (key, needle) in [(&short, "at least 32"), (&missing, "cannot read key file")] {
        for sub in [
            &["agent", "--listen", "127.0.0.1:0"][..],
            &["peer", "127.0.0.1:9"][..],
        ] {
            let out = bin().args(sub).arg("--key-file").arg(key).output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(78), "{sub:?}: {stderr}");
            assert!(stderr.contains(needle), "{sub:?}: {stderr}");
        }
    }
}

#[test]
fn bad_agent_config_names_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k");
    crate::support::write_key(
        &key,
        "d7f9da3db0c910e0f90d37779d650f24cd1ed3499036effc118d1b31addafed2",
    );
    let cfg = dir.path().join("agent.toml");
    std::fs::write(&cfg, "zone = \"a\"\nallow = [\"10.0.0.0/8\"]\n").unwrap();
    let out = bin()
        .args(["agent", "--listen", "127.0.0.1:0", "--key-file"])
        .arg(&key)
        .arg("-c")
        .arg(&cfg)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("agent.toml:2:"), "{stderr}");
}

#[cfg(unix)]
#[test]
fn sigterm_stops_the_agent_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k");
    crate::support::write_key(
        &key,
        "d3ac661949e49a1ec43cf8e193439217140218da756b8e14f767a0bfafd0a3f0",
    );
    let mut child = bin()
        .args(["agent", "-v", "--listen", "127.0.0.1:0", "--key-file"])
        .arg(&key)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // The start line (address, key file, allow list) comes first, then "agent listening".
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l.contains("agent listening")) {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("agent did not start: {seen:?}"));
        assert!(!line.contains("d3ac661949e49a1e"), "key in the log: {line}");
        seen.push(line);
        assert!(seen.len() <= 10, "no 'agent listening' line: {seen:?}");
    }
    assert!(seen[0].contains("starting: listen 127.0.0.1:0"), "{seen:?}");
    let started = Instant::now();
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "agent ignored SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
    // The reader thread ends at EOF, which the exited process guarantees.
    let rest: Vec<String> = rx.iter().collect();
    assert!(
        rest.iter().any(|l| l.contains("SIGTERM received")),
        "{rest:?}"
    );
    assert!(rest.iter().any(|l| l.contains("agent stopped")), "{rest:?}");
}
