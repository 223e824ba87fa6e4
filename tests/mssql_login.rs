//! End to end: the real binary against the scripted TDS peer on 127.0.0.1. Each test asserts the
//! cause on the hop where it belongs, from `-f json`.

use crate::support::tds_peer;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tds_peer::{Behaviour, Event, PeerConfig, ServerEncryption, TdsPeer};

const BIN: &str = env!("CARGO_BIN_EXE_dtcprobe");

struct Run {
    code: i32,
    json: Value,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

fn password_file(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    writeln!(f, "{text}").unwrap();
    f
}

fn dtcprobe(args: &[&str], env: &[(&str, &str)]) -> Run {
    let started = Instant::now();
    let mut cmd = Command::new(BIN);
    cmd.arg("check").args(args).args(["-f", "json"]);
    cmd.stdin(Stdio::null()).env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run dtcprobe");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let json = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}\nstderr: {stderr}"));
    Run {
        code: out.status.code().unwrap_or(-1),
        json,
        stdout,
        stderr,
        elapsed: started.elapsed(),
    }
}

/// Runs one mssql URL with the peer's password in a --password-file.
fn check(url: &str, password: &str) -> Run {
    let pw = password_file(password);
    dtcprobe(
        &[
            url,
            "--password-file",
            pw.path().to_str().unwrap(),
            "--timeout",
            "2s",
        ],
        &[],
    )
}

fn hops(run: &Run) -> &Vec<Value> {
    run.json["checks"][0]["hops"].as_array().expect("hops")
}

fn hop<'a>(run: &'a Run, name: &str) -> &'a Value {
    hops(run)
        .iter()
        .find(|h| h["hop"] == name)
        .unwrap_or_else(|| panic!("no hop {name} in {}", run.stdout))
}

fn statuses(run: &Run) -> Vec<(String, String)> {
    hops(run)
        .iter()
        .map(|h| {
            (
                h["hop"].as_str().unwrap().to_string(),
                h["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn assert_hop(run: &Run, name: &str, status: &str, cause: Option<&str>) {
    let h = hop(run, name);
    assert_eq!(
        h["status"],
        status,
        "hop {name}: {h:#}\nall: {:?}",
        statuses(run)
    );
    match cause {
        Some(c) => assert_eq!(h["cause"], c, "hop {name}: {h:#}"),
        None => assert!(h.get("cause").is_none(), "hop {name}: {h:#}"),
    }
}

fn url(peer: &TdsPeer, user: &str, db: &str, query: &str) -> String {
    format!("mssql://{user}@127.0.0.1:{}/{db}?{query}", peer.port())
}

fn never_shows(run: &Run, secret: &str) {
    assert!(!run.stdout.contains(secret), "password in stdout");
    assert!(!run.stderr.contains(secret), "password in stderr");
}

#[test]
fn login_and_local_transaction_pass_with_full_encryption() {
    let cfg = PeerConfig::default();
    let pw = cfg.password.clone();
    let peer = TdsPeer::start(cfg);
    let run = check(
        &url(
            &peer,
            "probe",
            "app",
            "tx=local&trust_server_certificate=true",
        ),
        &pw,
    );
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(
        statuses(&run),
        [
            ("resolve", "pass"),
            ("tcp", "pass"),
            ("login", "pass"),
            ("tx_local", "pass")
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    let login = &hop(&run, "login")["data"];
    assert_eq!(login["server_version"], "16.0.1000.1");
    assert_eq!(login["prelogin_version"], "16.0.1000");
    assert_eq!(login["tds_version"], "7.4");
    assert_eq!(login["encryption"], "full");
    assert_eq!(login["server_encryption"], "on");
    assert_eq!(login["database"], "app");
    assert!(login["login_seconds"].as_f64().unwrap() > 0.0);
    never_shows(&run, &pw);

    // The peer saw a TLS handshake inside TDS, the work, and a rollback; never a commit.
    let events = peer.events();
    assert!(
        events.contains(&Event::TlsHandshake { strict: false }),
        "{events:?}"
    );
    let batches = peer.batches();
    assert!(
        batches.iter().any(|b| b == "BEGIN TRANSACTION"),
        "{batches:?}"
    );
    assert!(
        batches
            .iter()
            .any(|b| b.starts_with("INSERT INTO #dtcprobe")),
        "{batches:?}"
    );
    assert!(
        batches.iter().any(|b| b == "ROLLBACK TRANSACTION"),
        "{batches:?}"
    );
    assert!(
        !batches
            .iter()
            .any(|b| b.to_ascii_uppercase().contains("COMMIT")),
        "{batches:?}"
    );
}

#[test]
fn login_only_encryption_reads_tds_version_from_the_clear_loginack() {
    let cfg = PeerConfig::default();
    let pw = cfg.password.clone();
    let peer = TdsPeer::start(cfg);
    let run = check(
        &url(
            &peer,
            "probe",
            "app",
            "tx=none&encrypt=off&trust_server_certificate=true",
        ),
        &pw,
    );
    assert_eq!(run.code, 0, "{}", run.stdout);
    let login = hop(&run, "login");
    assert_eq!(login["data"]["encryption"], "login_only", "{login:#}");
    assert_eq!(login["data"]["tds_version"], "7.4");
    assert!(
        login["hint"]
            .as_str()
            .unwrap()
            .contains("only the login packet"),
        "{login:#}"
    );
    assert_eq!(statuses(&run).len(), 3, "tx=none plans no transaction hop");
}

#[test]
fn wrong_password_is_auth_failed_with_18456() {
    let peer = TdsPeer::start(PeerConfig::default());
    let run = check(
        &url(&peer, "probe", "app", "trust_server_certificate=true"),
        "not-the-password",
    );
    assert_eq!(run.code, 1);
    assert_hop(&run, "tcp", "pass", None);
    assert_hop(&run, "login", "fail", Some("auth_failed"));
    assert_hop(&run, "tx_local", "skip", None);
    let login = hop(&run, "login");
    assert_eq!(login["data"]["error"]["number"], 18456);
    assert!(
        login["hint"].as_str().unwrap().contains("state 1"),
        "{login:#}"
    );
    never_shows(&run, "not-the-password");
}

#[test]
fn unknown_user_is_auth_failed_too() {
    let cfg = PeerConfig::default();
    let pw = cfg.password.clone();
    let peer = TdsPeer::start(cfg);
    let run = check(
        &url(&peer, "nobody", "app", "trust_server_certificate=true"),
        &pw,
    );
    assert_hop(&run, "login", "fail", Some("auth_failed"));
}

#[test]
fn unknown_database_is_db_unavailable_with_4060() {
    let cfg = PeerConfig::default();
    let pw = cfg.password.clone();
    let peer = TdsPeer::start(cfg);
    let run = check(
        &url(&peer, "probe", "nosuchdb", "trust_server_certificate=true"),
        &pw,
    );
    assert_eq!(run.code, 1);
    assert_hop(&run, "login", "fail", Some("db_unavailable"));
    assert_eq!(hop(&run, "login")["data"]["error"]["number"], 4060);
}

#[test]
fn msdtc_unavailable_fails_tx_distributed_only() {
    let cfg = PeerConfig {
        dtc_available: false,
        ..Default::default()
    };
    let pw = cfg.password.clone();
    let peer = TdsPeer::start(cfg);
    let run = check(
        &url(
            &peer,
            "probe",
            "app",
            "tx=distributed&trust_server_certificate=true&reverse_dns=false",
        ),
        &pw,
    );
    assert_eq!(run.code, 1);
    assert_hop(&run, "login", "pass", None);
    assert_hop(&run, "tx_local", "pass", None);
    assert_hop(&run, "tx_distributed", "fail", Some("dtc_unavailable"));
    let h = hop(&run, "tx_distributed");
    assert_eq!(h["data"]["error"]["number"], 8501);
    assert_eq!(h["data"]["failed_step"], "begin distributed transaction");
    let hint = h["hint"].as_str().unwrap();
    for needle in ["MSDTC", "Network DTC Access", "135"] {
        assert!(hint.contains(needle), "{hint}");
    }
}

#[test]
fn distributed_transaction_passes_when_msdtc_is_there() {
    let cfg = PeerConfig {
        linked_servers: vec![("L2".into(), true)],
        ..Default::default()
    };
    let pw = cfg.password.clone();
    let peer = TdsPeer::start(cfg);
    let run = check(
        &url(
            &peer,
            "probe",
            "app",
            "tx=distributed&trust_server_certificate=true&reverse_dns=false&linked_server=L2",
        ),
        &pw,
    );
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert_hop(&run, "tx_distributed", "pass", None);
    assert!(peer
        .batches()
        .iter()
        .any(|b| b == "BEGIN DISTRIBUTED TRANSACTION"));
    assert!(peer.batches().iter().any(|b| b.contains("OPENQUERY([L2]")));
}

#[test]
fn linked_server_without_dtc_is_7391() {
    let cfg = PeerConfig {
        linked_servers: vec![("L2".into(), false)],
        ..Default::default()
    };
    let pw = cfg.password.clone();
    let peer = TdsPeer::start(cfg);
    let run = check(
        &url(
            &peer,
            "probe",
            "app",
            "tx=distributed&trust_server_certificate=true&reverse_dns=false&linked_server=L2",
        ),
        &pw,
    );
    assert_hop(&run, "tx_distributed", "fail", Some("dtc_unavailable"));
    assert_eq!(hop(&run, "tx_distributed")["data"]["error"]["number"], 7391);
}

#[test]
fn untrusted_certificate_is_tls_error() {
    let cfg = PeerConfig::default();
    let pw = cfg.password.clone();
    let peer = TdsPeer::start(cfg);
    let run = check(&url(&peer, "probe", "app", "encrypt=on"), &pw);
    assert_eq!(run.code, 1);
    assert_hop(&run, "login", "fail", Some("tls_error"));
    let hint = hop(&run, "login")["hint"].as_str().unwrap().to_string();
    assert!(hint.contains("trust_server_certificate"), "{hint}");
}

#[test]
fn server_forcing_encryption_upgrades_an_off_client() {
    let cfg = PeerConfig {
        encryption: ServerEncryption::Required,
        ..Default::default()
    };
    let pw = cfg.password.clone();
    let peer = TdsPeer::start(cfg);
    let run = check(
        &url(
            &peer,
            "probe",
            "app",
            "encrypt=off&trust_server_certificate=true",
        ),
        &pw,
    );
    assert_eq!(run.code, 0, "{}", run.stdout);
    let data = &hop(&run, "login")["data"];
    assert_eq!(data["server_encryption"], "required");
    assert_eq!(data["encryption"], "full");
}

#[test]
fn server_requiring_tls_rejects_a_client_without_tls() {
    let cfg = PeerConfig {
        encryption: ServerEncryption::Required,
        ..Default::default()
    };
    let pw = cfg.password.clone();
    let peer = TdsPeer::start(cfg);
    let run = check(&url(&peer, "probe", "app", "encrypt=none"), &pw);
    assert_eq!(run.code, 1);
    assert_hop(&run, "login", "fail", Some("tls_error"));
    let hint = hop(&run, "login")["hint"].as_str().unwrap().to_string();
    assert!(hint.contains("requires encryption"), "{hint}");
}

#[test]
fn server_without_tls_declines_an_encrypting_client() {
    let cfg = PeerConfig {
        encryption: ServerEncryption::NotSupported,
        ..Default::default()
    };
    let pw = cfg.password.clone();
    let peer = TdsPeer::start(cfg);
    let run = check(&url(&peer, "probe", "app", "encrypt=on"), &pw);
    assert_hop(&run, "login", "fail", Some("tls_error"));
    // ...and the same server works without TLS, flagged in the hint.
    let run = check(&url(&peer, "probe", "app", "encrypt=none&tx=none"), &pw);
    assert_hop(&run, "login", "pass", None);
    assert_eq!(hop(&run, "login")["data"]["encryption"], "none");
    assert!(hop(&run, "login")["hint"]
        .as_str()
        .unwrap()
        .contains("readable"));
}

#[test]
fn strict_tds8_runs_tls_first() {
    let cfg = PeerConfig::default();
    let pw = cfg.password.clone();
    let peer = TdsPeer::start(cfg);
    let run = check(
        &url(
            &peer,
            "probe",
            "app",
            "encrypt=strict&trust_server_certificate=true",
        ),
        &pw,
    );
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert_eq!(hop(&run, "login")["data"]["encryption"], "strict");
    assert!(peer
        .events()
        .contains(&Event::TlsHandshake { strict: true }));
}

#[test]
fn silent_server_times_out_on_login_within_bounds() {
    let peer = TdsPeer::start(PeerConfig {
        behaviour: Behaviour::SilentAfterAccept,
        ..Default::default()
    });
    let pw = password_file("x");
    let run = dtcprobe(
        &[
            &url(&peer, "probe", "app", "tx=distributed&reverse_dns=false"),
            "--password-file",
            pw.path().to_str().unwrap(),
            "--timeout",
            "1s",
        ],
        &[],
    );
    assert_eq!(run.code, 1);
    assert_hop(&run, "tcp", "pass", None);
    assert_hop(&run, "login", "fail", Some("timeout"));
    assert_hop(&run, "tx_local", "skip", None);
    assert_hop(&run, "tx_distributed", "skip", None);
    assert!(hop(&run, "login")["detail"]
        .as_str()
        .unwrap()
        .contains("not a single byte"));
    // Login gets two hop timeouts; the whole run stays well under 10 s.
    assert!(run.elapsed < Duration::from_secs(10), "{:?}", run.elapsed);
}

#[test]
fn close_during_login_is_reset() {
    let cfg = PeerConfig {
        behaviour: Behaviour::CloseMidLogin,
        ..Default::default()
    };
    let pw = cfg.password.clone();
    let peer = TdsPeer::start(cfg);
    let run = check(
        &url(&peer, "probe", "app", "trust_server_certificate=true"),
        &pw,
    );
    assert_eq!(run.code, 1);
    assert_hop(&run, "login", "fail", Some("reset"));
}

#[test]
fn http_server_on_the_port_is_protocol_error() {
    let junk =
        b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec();
    let peer = TdsPeer::start(PeerConfig {
        behaviour: Behaviour::Garbage(junk),
        ..Default::default()
    });
    let run = check(
        &url(&peer, "probe", "app", "trust_server_certificate=true"),
        "x",
    );
    assert_hop(&run, "login", "fail", Some("protocol_error"));
    assert!(
        hop(&run, "login")["detail"]
            .as_str()
            .unwrap()
            .contains("HTTP/1.1 400"),
        "{:#}",
        hop(&run, "login")
    );
}

#[test]
fn tds_framed_junk_is_protocol_error() {
    // A reply packet header followed by bytes that are no PRELOGIN option list.
    let mut junk = vec![0x04, 0x01, 0x00, 0x20, 0x00, 0x00, 0x01, 0x00];
    junk.extend((0u8..24).map(|i| i.wrapping_mul(37) ^ 0x5A));
    let peer = TdsPeer::start(PeerConfig {
        behaviour: Behaviour::Garbage(junk),
        ..Default::default()
    });
    let run = check(
        &url(&peer, "probe", "app", "trust_server_certificate=true"),
        "x",
    );
    assert_hop(&run, "login", "fail", Some("protocol_error"));
}

#[test]
fn closed_port_fails_tcp_and_skips_login() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let run = check(&format!("mssql://probe@127.0.0.1:{port}/app"), "x");
    assert_hop(&run, "tcp", "fail", Some("refused"));
    assert_hop(&run, "login", "skip", None);
}

#[test]
fn config_check_with_password_env_never_leaks_it() {
    let cfg = PeerConfig::default();
    let pw = cfg.password.clone();
    let peer = TdsPeer::start(cfg);
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("c.toml");
    std::fs::write(
        &conf,
        format!(
            "[[check]]\nname = \"sql\"\nkind = \"mssql\"\nhost = \"127.0.0.1\"\nport = {}\nuser = \"probe\"\n\
             database = \"app\"\npassword_env = \"DTCPROBE_TEST_MSSQL_PW\"\ntrust_server_certificate = true\ntx = \"local\"\n",
            peer.port()
        ),
    )
    .unwrap();
    // Even with every log line on (the driver's included), the password shows nowhere.
    let run = dtcprobe(
        &["-c", conf.to_str().unwrap(), "-vv"],
        &[("DTCPROBE_TEST_MSSQL_PW", &pw), ("RUST_LOG", "trace")],
    );
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(run.json["checks"][0]["kind"], "mssql");
    assert_hop(&run, "tx_local", "pass", None);
    never_shows(&run, &pw);
}

#[test]
fn no_password_source_without_a_terminal_is_a_config_fault() {
    let peer = TdsPeer::start(PeerConfig::default());
    let run = dtcprobe(
        &[
            &url(&peer, "probe", "app", "trust_server_certificate=true"),
            "--timeout",
            "2s",
        ],
        &[],
    );
    assert_eq!(run.code, 3, "tool fault, not a failure: {}", run.stdout);
    assert_hop(&run, "tcp", "pass", None);
    assert_hop(&run, "login", "fail", Some("config"));
    assert!(hop(&run, "login")["detail"]
        .as_str()
        .unwrap()
        .contains("--password-file"));
}

#[test]
fn password_in_the_url_is_a_usage_error_and_not_echoed() {
    let out = Command::new(BIN)
        .args([
            "check",
            "mssql://probe:Secr3tValue@127.0.0.1:1/app",
            "-f",
            "json",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!all.contains("Secr3tValue"), "{all}");
    assert!(all.contains("password"), "{all}");
}

#[test]
fn a_server_that_loses_the_row_fails_tx_local() {
    let cfg = PeerConfig {
        lose_rows: true,
        ..Default::default()
    };
    let pw = cfg.password.clone();
    let peer = TdsPeer::start(cfg);
    let run = check(
        &url(&peer, "probe", "app", "trust_server_certificate=true"),
        &pw,
    );
    assert_eq!(run.code, 1);
    assert_hop(&run, "login", "pass", None);
    assert_hop(&run, "tx_local", "fail", Some("sql_error"));
    let h = hop(&run, "tx_local");
    assert_eq!(h["data"]["failed_step"], "read back", "{h:#}");
    assert!(
        h["detail"].as_str().unwrap().contains("read back None"),
        "{h:#}"
    );
}

#[test]
fn prompts_on_a_terminal_without_echo() {
    // `script` (util-linux, always on Debian) gives dtcprobe a pseudo-terminal.
    use std::io::Read;
    use std::sync::{Arc, Mutex};
    let cfg = PeerConfig::default();
    let pw = cfg.password.clone();
    let peer = TdsPeer::start(cfg);
    let cmd = format!(
        "{BIN} check '{}' -f json",
        url(&peer, "probe", "app", "trust_server_certificate=true")
    );
    let mut child = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script (util-linux)");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut stdout = child.stdout.take().unwrap();
    let reader = {
        let seen = seen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                seen.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !String::from_utf8_lossy(&seen.lock().unwrap()).contains("Password for probe@127.0.0.1:")
    {
        assert!(
            Instant::now() < deadline,
            "no prompt: {}",
            String::from_utf8_lossy(&seen.lock().unwrap())
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The prompt is printed just before echo is turned off; give it a moment.
    std::thread::sleep(Duration::from_millis(500));
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(format!("{pw}\r").as_bytes()).unwrap();
    stdin.flush().unwrap();
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "dtcprobe did not finish");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(stdin);
    reader.join().unwrap();
    let out = String::from_utf8_lossy(&seen.lock().unwrap()).into_owned();
    assert!(!out.contains(&pw), "password echoed: {out}");
    let json: Value =
        serde_json::from_str(&out[out.find('{').expect("JSON report")..].replace("\r\n", "\n"))
            .expect("report");
    let login = json["checks"][0]["hops"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["hop"] == "login")
        .unwrap()
        .clone();
    assert_eq!(login["status"], "pass", "{login:#}");
}

#[test]
fn server_hanging_after_loginack_times_out_login_within_bounds() {
    let cfg = PeerConfig {
        behaviour: Behaviour::SilentAfterLogin,
        ..Default::default()
    };
    let pw = cfg.password.clone();
    let peer = TdsPeer::start(cfg);
    let pwf = password_file(&pw);
    let run = dtcprobe(
        &[
            &url(
                &peer,
                "probe",
                "app",
                "tx=distributed&reverse_dns=false&trust_server_certificate=true&encrypt=off",
            ),
            "--password-file",
            pwf.path().to_str().unwrap(),
            "--timeout",
            "1s",
        ],
        &[],
    );
    assert_eq!(run.code, 1);
    // The version query right after LOGINACK gets no answer: the login hop says so.
    assert_hop(&run, "login", "fail", Some("timeout"));
    let login = hop(&run, "login");
    assert!(
        login["detail"]
            .as_str()
            .unwrap()
            .contains("LOGINACK received"),
        "{login:#}"
    );
    assert!(
        login["hint"]
            .as_str()
            .unwrap()
            .contains("does not answer queries"),
        "{login:#}"
    );
    assert_hop(&run, "tx_local", "skip", None);
    assert_hop(&run, "tx_distributed", "skip", None);
    assert!(run.elapsed < Duration::from_secs(10), "{:?}", run.elapsed);
}

#[test]
fn low_privilege_login_passes_without_the_tds_version() {
    // A probe login without VIEW SERVER STATE: the TDS version query fails with error 300 (as on
    // a real server), the hop still passes, and the same connection then runs the transaction.
    let cfg = PeerConfig {
        deny_server_state: true,
        ..Default::default()
    };
    let pw = cfg.password.clone();
    let peer = TdsPeer::start(cfg);
    let run = check(
        &url(&peer, "probe", "app", "trust_server_certificate=true"),
        &pw,
    );
    assert_eq!(run.code, 0, "{}", run.stdout);
    let login = hop(&run, "login");
    assert!(login["data"]["tds_version"].is_null(), "{login:#}");
    assert_eq!(login["data"]["server_version"], "16.0.1000.1");
    assert_hop(&run, "tx_local", "pass", None);
    assert!(peer
        .batches()
        .iter()
        .any(|b| b.contains("dm_exec_connections")));
}
