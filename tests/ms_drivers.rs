//! Microsoft's own SQL Server clients against the TDS test peer: ODBC Driver 18 (bundled in PyPI
//! mssql-python) and tedious (npm, Microsoft-sponsored). The dtcprobe mssql tests
//! (tests/mssql_login.rs) only mean something if the peer answers as SQL Server does; these
//! drivers are the evidence. Each scenario the dtcprobe tests cover is replayed through both
//! drivers, and the assertions are on what the driver reports (rows, error number and state),
//! never on what the peer says about itself.
//!
//! The clients are tests/clients/odbc18.py and tests/clients/tedious.js, installed by
//! scripts/install-test-deps (venv /opt/dtcprobe-test/venv, `npm ci` in tests/clients). When
//! they are missing the tests FAIL as root (CI runs the script as root, so missing means broken)
//! and skip with a message otherwise.

use crate::mssql_login::pem_file;
use crate::support::tds_peer::ntlm::{Outcome as NtlmOutcome, WindowsAccount};
use crate::support::tds_peer::{Event, PeerConfig, ServerEncryption, TdsPeer};

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const VENV_PYTHON: &str = "/opt/dtcprobe-test/venv/bin/python";

fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Driver {
    Odbc18,
    Tedious,
}

impl Driver {
    /// The command that runs this driver's client script, or why it cannot run.
    fn command(self) -> Result<Command, String> {
        match self {
            Driver::Odbc18 => {
                let ok = Command::new(VENV_PYTHON)
                    .args(["-c", "import mssql_python, mssql_python_odbc"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .map(|s| s.success())
                    .unwrap_or(false);
                if !ok {
                    return Err(format!("{VENV_PYTHON} with mssql-python is missing"));
                }
                let mut c = Command::new(VENV_PYTHON);
                c.arg(clients_dir().join("odbc18.py"));
                Ok(c)
            }
            Driver::Tedious => {
                if !clients_dir()
                    .join("node_modules/tedious/package.json")
                    .exists()
                {
                    return Err("tests/clients/node_modules/tedious is missing".into());
                }
                let mut c = Command::new("node");
                c.arg(clients_dir().join("tedious.js"));
                Ok(c)
            }
        }
    }
}

/// Runs `driver` against `peer` with key=value `args`; `None` (skip) only when the client is
/// missing and this is not root.
fn run_driver(
    driver: Driver,
    peer: &TdsPeer,
    password: &str,
    args: &[(&str, &str)],
) -> Option<Value> {
    let mut cmd = match driver.command() {
        Ok(c) => c,
        Err(why) if is_root() => panic!(
            "{driver:?}: {why}; run scripts/install-test-deps (the cross-check must not be skipped as root)"
        ),
        Err(why) => {
            eprintln!("SKIP {driver:?}: {why} (not root; scripts/install-test-deps installs it)");
            return None;
        }
    };
    let port = peer.port().to_string();
    cmd.arg("host=127.0.0.1").arg(format!("port={port}"));
    for (k, v) in args {
        cmd.arg(format!("{k}={v}"));
    }
    let mut child = cmd
        .current_dir(clients_dir())
        .env("DTCPROBE_TEST_PASSWORD", password)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn client");
    // Bounded: the clients time out on their own after 20 s; this is the backstop.
    let deadline = Instant::now() + Duration::from_secs(40);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or("");
    let v: Value = serde_json::from_str(line).unwrap_or_else(|e| {
        panic!(
            "{driver:?} printed no JSON line ({e}):\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    Some(v)
}

const BOTH: [Driver; 2] = [Driver::Odbc18, Driver::Tedious];
const PASSWORD: &str = "Pr0be-pass!";

/// Each driver against a fresh peer made by `cfg`, with `args`; skipped drivers are left out.
fn each(cfg: fn() -> PeerConfig, args: &[(&str, &str)]) -> Vec<(Driver, Value, TdsPeer)> {
    BOTH.iter()
        .filter_map(|&d| {
            let peer = TdsPeer::start(cfg());
            run_driver(d, &peer, PASSWORD, args).map(|v| (d, v, peer))
        })
        .collect()
}

fn ok(d: Driver, v: &Value) {
    assert_eq!(v["ok"], true, "{d:?} failed: {v:#}");
}

fn failed(d: Driver, v: &Value) -> String {
    assert_eq!(v["ok"], false, "{d:?} succeeded where it must not: {v:#}");
    v["error"]["message"].as_str().unwrap_or("").to_string()
}

fn logged_in(peer: &TdsPeer) -> bool {
    peer.events()
        .iter()
        .any(|e| matches!(e, Event::Login { accepted: true, .. }))
}

fn rpcs(peer: &TdsPeer) -> Vec<String> {
    peer.events()
        .into_iter()
        .filter_map(|e| match e {
            Event::Rpc(r) => Some(r),
            _ => None,
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Login and its failures

#[test]
fn login_ok_both_drivers() {
    for (d, v, peer) in each(PeerConfig::default, &[("scenario", "login")]) {
        ok(d, &v);
        assert_eq!(v["rows"], serde_json::json!([[1]]), "{d:?}");
        assert!(logged_in(&peer), "{d:?}");
    }
}

#[test]
fn wrong_password_is_18456_with_the_servers_state() {
    for state in [1u8, 8] {
        for d in BOTH {
            let peer = TdsPeer::start(PeerConfig {
                login_failed_state: state,
                ..PeerConfig::default()
            });
            let Some(v) = run_driver(d, &peer, "wrong", &[("scenario", "login")]) else {
                continue;
            };
            let msg = failed(d, &v);
            assert!(
                msg.contains("Login failed for user 'probe'"),
                "{d:?}: {v:#}"
            );
            if d == Driver::Tedious {
                assert_eq!(v["error"]["number"], 18456, "{v:#}");
                assert_eq!(v["error"]["state"], state as i64, "{v:#}");
            } else {
                // SQLSTATE 28000; mssql-python gives no native number or state.
                assert_eq!(
                    v["error"]["driver_error"], "Invalid authorization specification",
                    "{v:#}"
                );
            }
        }
    }
}

/// Windows authentication: tedious's own NTLMv2 (an implementation independent of dtcprobe's)
/// against the peer's verifier, which `tx_enlist`'s NTLM tests rely on (tests/mssql_enlist.rs).
/// The right password logs in as DOMAIN\\user; a wrong one is 18452, as SQL Server answers.
/// ODBC Driver 18 on Linux does Windows authentication through Kerberos only: not run here.
#[test]
fn tedious_ntlm_login_is_verified_by_the_peer() {
    let cfg = || PeerConfig {
        windows_account: Some(WindowsAccount {
            domain: "DTCPROBE".into(),
            user: "svc-web".into(),
            password: "W1ndows-pass!".into(),
        }),
        ..PeerConfig::default()
    };
    let args = [
        ("scenario", "login"),
        ("auth", "ntlm"),
        ("user", "svc-web"),
        ("domain", "DTCPROBE"),
    ];
    let peer = TdsPeer::start(cfg());
    let Some(v) = run_driver(Driver::Tedious, &peer, "W1ndows-pass!", &args) else {
        return;
    };
    let events = peer.events();
    assert_eq!(v["ok"], true, "{v:#}\n{events:#?}");
    assert!(
        events.contains(&Event::WindowsAuth(NtlmOutcome::Authenticated(
            "DTCPROBE\\svc-web".into()
        ))),
        "{events:#?}"
    );
    assert!(logged_in(&peer));

    let peer = TdsPeer::start(cfg());
    let Some(v) = run_driver(Driver::Tedious, &peer, "not-the-password", &args) else {
        return;
    };
    failed(Driver::Tedious, &v);
    assert_eq!(v["error"]["number"], 18452, "{v:#}");
    assert!(peer.events().iter().any(|e| matches!(
        e,
        Event::WindowsAuth(NtlmOutcome::Refused(why)) if why.contains("does not match the password")
    )));
    assert!(!logged_in(&peer));
}

#[test]
fn unknown_database_is_4060() {
    for (d, v, _peer) in each(
        PeerConfig::default,
        &[("scenario", "login"), ("database", "nosuch")],
    ) {
        let msg = failed(d, &v);
        match d {
            Driver::Tedious => {
                // 4060 first, then 18456 (what ends the login), as SQL Server sends them.
                assert!(msg.contains("Login failed"), "{v:#}");
                let numbers: Vec<i64> = v["serverErrors"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| e["number"].as_i64().unwrap())
                    .collect();
                assert_eq!(numbers, vec![4060, 18456], "{v:#}");
                assert!(v["serverErrors"][0]["message"]
                    .as_str()
                    .unwrap()
                    .contains("Cannot open database \"nosuch\""));
            }
            // The peer sends 4060 then 18456, as SQL Server does; mssql-python surfaces only
            // the last diagnostic record.
            Driver::Odbc18 => assert!(msg.contains("Login failed for user 'probe'"), "{v:#}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Encryption

#[test]
fn encrypt_off_on_a_server_without_tls_logs_in_unencrypted() {
    let no_tls = || PeerConfig {
        encryption: ServerEncryption::NotSupported,
        ..PeerConfig::default()
    };
    for (d, v, peer) in each(no_tls, &[("scenario", "login"), ("encrypt", "no")]) {
        ok(d, &v);
        assert!(
            !peer
                .events()
                .iter()
                .any(|e| matches!(e, Event::TlsHandshake { .. })),
            "{d:?}: {:?}",
            peer.events()
        );
    }
}

#[test]
fn encrypt_on_does_tls_inside_tds() {
    for (d, v, peer) in each(
        PeerConfig::default,
        &[("scenario", "login"), ("encrypt", "yes"), ("trust", "yes")],
    ) {
        ok(d, &v);
        assert!(
            peer.events()
                .contains(&Event::TlsHandshake { strict: false }),
            "{d:?}: {:?}",
            peer.events()
        );
    }
}

#[test]
fn force_encryption_and_a_client_that_cannot_encrypt() {
    // ODBC 18 with Encrypt=no still offers TLS (ENCRYPT_OFF), so Force Encryption upgrades it;
    // tedious with encrypt=false says it cannot (ENCRYPT_NOT_SUP) and the server hangs up.
    let forced = || PeerConfig {
        encryption: ServerEncryption::Required,
        ..PeerConfig::default()
    };
    for (d, v, peer) in each(forced, &[("scenario", "login"), ("encrypt", "no")]) {
        match d {
            Driver::Odbc18 => {
                ok(d, &v);
                assert!(peer
                    .events()
                    .contains(&Event::TlsHandshake { strict: false }));
            }
            Driver::Tedious => {
                failed(d, &v);
                assert!(!logged_in(&peer));
            }
        }
    }
}

#[test]
fn strict_encryption_with_a_trusted_certificate() {
    for d in BOTH {
        let peer = TdsPeer::start(PeerConfig::default());
        let pem = pem_file(&peer.cert_der);
        let pem_path = pem.path().to_str().unwrap().to_string();
        let Some(v) = run_driver(
            d,
            &peer,
            PASSWORD,
            &[
                ("scenario", "login"),
                ("encrypt", "strict"),
                ("trust", "no"),
                ("cert", &pem_path),
                ("hostname_in_cert", "localhost"),
                ("server_name", "localhost"),
            ],
        ) else {
            continue;
        };
        ok(d, &v);
        assert!(
            peer.events()
                .contains(&Event::TlsHandshake { strict: true }),
            "{d:?}: {:?}",
            peer.events()
        );
    }
}

#[test]
fn strict_encryption_ignores_trust_server_certificate() {
    // Microsoft's drivers validate the certificate in strict mode whatever
    // TrustServerCertificate says: a self-signed certificate fails.
    for (d, v, peer) in each(
        PeerConfig::default,
        &[
            ("scenario", "login"),
            ("encrypt", "strict"),
            ("trust", "yes"),
        ],
    ) {
        failed(d, &v);
        assert!(!logged_in(&peer), "{d:?}");
    }
}

#[test]
fn force_strict_encryption_refuses_a_tds7_client() {
    let strict_only = || PeerConfig {
        force_strict_encryption: true,
        ..PeerConfig::default()
    };
    for (d, v, peer) in each(
        strict_only,
        &[("scenario", "login"), ("encrypt", "yes"), ("trust", "yes")],
    ) {
        failed(d, &v);
        assert!(!logged_in(&peer), "{d:?}");
    }
}

#[test]
fn untrusted_certificate_fails_before_login() {
    for (d, v, peer) in each(
        PeerConfig::default,
        &[("scenario", "login"), ("encrypt", "yes"), ("trust", "no")],
    ) {
        let msg = failed(d, &v).to_lowercase();
        assert!(msg.contains("certificate"), "{d:?}: {v:#}");
        // The server saw no login: the TLS failure ended the connection.
        assert!(
            !peer
                .events()
                .iter()
                .any(|e| matches!(e, Event::Login { .. })),
            "{d:?}: {:?}",
            peer.events()
        );
    }
}

#[test]
fn no_shared_cipher_ends_the_connection() {
    // A client offering only a cipher suite the server does not have (AES128-SHA, no forward
    // secrecy): the server fails the handshake and closes the connection, as a real server does.
    // The driver reports a failure promptly (far below the client's 20 s guard) instead of
    // waiting, and nothing reaches LOGIN7.
    let peer = TdsPeer::start(PeerConfig::default());
    let started = Instant::now();
    let Some(v) = run_driver(
        Driver::Tedious,
        &peer,
        PASSWORD,
        &[
            ("scenario", "login"),
            ("encrypt", "yes"),
            ("trust", "yes"),
            ("ciphers", "AES128-SHA"),
        ],
    ) else {
        return;
    };
    let msg = failed(Driver::Tedious, &v);
    eprintln!("tedious, no shared cipher: {msg}");
    assert!(!msg.contains("client timed out"), "{v:#}");
    assert!(started.elapsed() < Duration::from_secs(10), "{v:#}");
    let events = peer.events();
    assert!(events.contains(&Event::Closed), "{events:?}");
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::TlsHandshake { .. } | Event::Login { .. })),
        "{events:?}"
    );
}

#[test]
fn reset_during_the_tls_handshake() {
    let resets = || PeerConfig {
        reset_tls_handshake: true,
        ..PeerConfig::default()
    };
    for (d, v, peer) in each(
        resets,
        &[("scenario", "login"), ("encrypt", "yes"), ("trust", "yes")],
    ) {
        failed(d, &v);
        assert!(!logged_in(&peer), "{d:?}");
    }
}

/// A loopback address of this test process's own (127.84.x.n), so Browser stand-ins on UDP 1434
/// do not collide with other tests.
fn loopback(n: u8) -> std::net::IpAddr {
    let pid = std::process::id();
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 84, (pid % 250) as u8 + 1, n))
}

#[test]
fn instance_name_mismatch() {
    // ODBC resolves a named instance through the SQL Server Browser (UDP 1434, needs root to
    // bind) and then names the instance in PRELOGIN; the port the Browser gives belongs to
    // instance PROD here, so the server says "not me" (INSTOPT 1) and hangs up. tedious takes
    // an instance name or a port, and after the Browser sends no name, so only ODBC is asked.
    if !is_root() {
        eprintln!("SKIP instance_name_mismatch: binding UDP 1434 needs root");
        return;
    }
    for (n, asked, must_work) in [(1u8, "OTHER", false), (2, "PROD", true)] {
        let ip = loopback(n);
        let peer = TdsPeer::start_on(
            std::net::SocketAddr::new(ip, 0),
            PeerConfig {
                instance: Some("PROD".into()),
                ..PeerConfig::default()
            },
        );
        let _browser = crate::support::tds_peer::BrowserPeer::start(
            std::net::SocketAddr::new(ip, 1434),
            asked,
            Some(peer.port()),
        )
        .unwrap();
        let host = ip.to_string();
        let Some(v) = run_driver(
            Driver::Odbc18,
            &peer,
            PASSWORD,
            &[
                ("scenario", "login"),
                ("host", &host),
                ("port", ""),
                ("instance", asked),
            ],
        ) else {
            return;
        };
        if must_work {
            ok(Driver::Odbc18, &v);
        } else {
            let msg = failed(Driver::Odbc18, &v);
            eprintln!("ODBC 18 on an instance mismatch: {msg}");
            // It reached the server (so the Browser answer worked) and was turned away at
            // PRELOGIN, before any encryption answer.
            let events = peer.events();
            assert!(events.contains(&Event::Closed), "{events:?}");
            assert!(
                !events
                    .iter()
                    .any(|e| matches!(e, Event::Prelogin { .. } | Event::Login { .. })),
                "{events:?}"
            );
        }
    }
}

#[test]
fn redirect_is_followed() {
    for d in BOTH {
        let target = TdsPeer::start(PeerConfig::default());
        let port = target.port();
        let front = TdsPeer::start(PeerConfig {
            redirect: Some(("127.0.0.1".into(), port)),
            ..PeerConfig::default()
        });
        let Some(v) = run_driver(d, &front, PASSWORD, &[("scenario", "login")]) else {
            continue;
        };
        ok(d, &v);
        assert!(
            logged_in(&target),
            "{d:?} did not reach the target: {:?}",
            target.events()
        );
        assert!(
            target.batches().iter().any(|b| b == "SELECT 1"),
            "{d:?}: {:?}",
            target.batches()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Statements

#[test]
fn tx_local_statements_as_dtcprobe_sends_them() {
    for (d, v, peer) in each(PeerConfig::default, &[("scenario", "tx_local")]) {
        ok(d, &v);
        let me = match d {
            Driver::Odbc18 => "odbc18",
            Driver::Tedious => "tedious",
        };
        assert_eq!(v["rows"], serde_json::json!([[1, me]]), "{d:?}");
        assert_eq!(v["trancount"], 0, "{d:?}");
        assert!(peer.batches().iter().any(|b| b == "ROLLBACK TRANSACTION"));
    }
}

#[test]
fn parameterised_select_goes_through_rpc() {
    for (d, v, peer) in each(PeerConfig::default, &[("scenario", "rpc_select")]) {
        ok(d, &v);
        assert_eq!(v["rows"], serde_json::json!([[42]]), "{d:?}");
        let want = match d {
            Driver::Odbc18 => "sp_prepexec",
            Driver::Tedious => "sp_executesql",
        };
        assert!(
            rpcs(&peer).iter().any(|r| r.starts_with(want)),
            "{d:?}: {:?}",
            rpcs(&peer)
        );
    }
}

#[test]
fn parameterised_insert_and_read_back() {
    for (d, v, peer) in each(PeerConfig::default, &[("scenario", "rpc_insert")]) {
        ok(d, &v);
        assert_eq!(v["rowcount"], 1, "{d:?}: {v:#}");
        assert_eq!(v["rows"], serde_json::json!([[7, "param'note"]]), "{d:?}");
        assert!(rpcs(&peer).len() >= 2, "{d:?}: {:?}", rpcs(&peer));
    }
}

#[test]
fn parameter_types_round_trip() {
    for (d, v, _peer) in each(PeerConfig::default, &[("scenario", "rpc_types")]) {
        ok(d, &v);
        let want = match d {
            Driver::Odbc18 => serde_json::json!([
                ["-7"],
                ["1099511627776"],
                ["True"],
                ["1.5"],
                ["-123.45"],
                ["x'y"],
                ["None"]
            ]),
            Driver::Tedious => serde_json::json!([
                ["-7"],
                ["1099511627776"],
                ["true"],
                ["1.5"],
                ["-123.45"],
                ["x'y"],
                ["abc"],
                [null]
            ]),
        };
        assert_eq!(v["rows"], want, "{d:?}: {v:#}");
    }
}

#[test]
fn an_error_inside_a_parameterised_statement_reaches_the_driver() {
    for (d, v, peer) in each(PeerConfig::default, &[("scenario", "rpc_error")]) {
        let msg = failed(d, &v);
        // (The peer names the table in upper case; SQL Server keeps the case it was given.)
        assert!(
            msg.to_lowercase()
                .contains("invalid object name '#missing'"),
            "{d:?}: {v:#}"
        );
        if d == Driver::Tedious {
            assert_eq!(v["error"]["number"], 208, "{v:#}");
        }
        assert!(!rpcs(&peer).is_empty(), "{d:?}");
    }
}

#[test]
fn an_unknown_stored_procedure_is_2812() {
    let peer = TdsPeer::start(PeerConfig::default());
    let Some(v) = run_driver(
        Driver::Tedious,
        &peer,
        PASSWORD,
        &[("scenario", "call_proc")],
    ) else {
        return;
    };
    failed(Driver::Tedious, &v);
    assert_eq!(v["error"]["number"], 2812, "{v:#}");
    assert!(
        rpcs(&peer).iter().any(|r| r.contains("dbo.no_such_proc")),
        "{:?}",
        rpcs(&peer)
    );
}

#[test]
fn odbc_executes_the_same_statement_twice() {
    // mssql-python 1.16 prepares again for each execute (sp_prepexec each time, then
    // sp_unprepare of the last handle), so ODBC's sp_execute is not exercised by it; tedious's
    // is (tedious_prepare_execute_unprepare).
    let peer = TdsPeer::start(PeerConfig::default());
    let Some(v) = run_driver(
        Driver::Odbc18,
        &peer,
        PASSWORD,
        &[("scenario", "rpc_reuse")],
    ) else {
        return;
    };
    ok(Driver::Odbc18, &v);
    assert_eq!(v["rows"], serde_json::json!([[1], [2]]), "{v:#}");
    let r = rpcs(&peer);
    assert!(r.len() >= 2, "{r:?}");
    assert!(
        r.iter()
            .all(|c| ["sp_prepexec", "sp_execute", "sp_unprepare"]
                .iter()
                .any(|p| c.starts_with(p))),
        "{r:?}"
    );
}

#[test]
fn tedious_prepare_execute_unprepare() {
    let peer = TdsPeer::start(PeerConfig::default());
    let Some(v) = run_driver(
        Driver::Tedious,
        &peer,
        PASSWORD,
        &[("scenario", "rpc_prepared")],
    ) else {
        return;
    };
    ok(Driver::Tedious, &v);
    assert_eq!(v["rows"], serde_json::json!([[42]]));
    let r = rpcs(&peer);
    assert!(r[0].starts_with("sp_prepare 1"), "{r:?}");
    assert!(r[1].starts_with("sp_execute 1"), "{r:?}");
    assert!(r[2].starts_with("sp_unprepare 1"), "{r:?}");
}

#[test]
fn tds_version_negotiation_answers_the_lower_version() {
    for tds in ["7_1", "7_2", "7_3_A", "7_3_B", "7_4"] {
        let peer = TdsPeer::start(PeerConfig::default());
        let Some(v) = run_driver(
            Driver::Tedious,
            &peer,
            PASSWORD,
            &[("scenario", "rpc_insert"), ("tds", tds)],
        ) else {
            return;
        };
        ok(Driver::Tedious, &v);
        assert_eq!(v["tdsVersion"], tds, "{v:#}");
        assert_eq!(
            v["rows"],
            serde_json::json!([[7, "param'note"]]),
            "{tds}: {v:#}"
        );
    }
}

#[test]
fn openquery_outside_a_transaction_works_inside_it_is_7391_with_the_provider_message() {
    let linked = || {
        PeerConfig {
        linked_servers: vec![("REMOTE".into(), false)],
        linked_server_message: Some(
            "The partner transaction manager has disabled its support for remote/network transactions.".into(),
        ),
        ..PeerConfig::default()
    }
    };
    let query = "SELECT one FROM OPENQUERY([REMOTE], 'SELECT 1 AS one')";
    for (d, v, _peer) in each(linked, &[("scenario", "batch"), ("sql", query)]) {
        ok(d, &v);
        assert_eq!(v["rows"], serde_json::json!([[1]]), "{d:?}");
    }
    let in_tx = format!("BEGIN TRANSACTION||{query}");
    for (d, v, _peer) in each(linked, &[("scenario", "batch"), ("sql", &in_tx)]) {
        let msg = failed(d, &v);
        assert!(
            msg.contains("unable to begin a distributed transaction"),
            "{d:?}: {v:#}"
        );
        if d == Driver::Tedious {
            assert_eq!(v["error"]["number"], 7391);
            let infos = v["infos"].to_string();
            assert!(
                infos.contains("7412") && infos.contains("disabled its support"),
                "{v:#}"
            );
        }
    }
}

#[test]
fn informational_messages_before_an_error_reach_the_driver() {
    let scripted = || PeerConfig {
        dtc_available: false,
        info_before_errors: vec![(8501, 50000, "MSDTC service is stopped on PEER.".into())],
        ..PeerConfig::default()
    };
    for (d, v, _peer) in each(
        scripted,
        &[
            ("scenario", "batch"),
            ("sql", "BEGIN DISTRIBUTED TRANSACTION"),
        ],
    ) {
        let msg = failed(d, &v);
        assert!(
            msg.contains("MSDTC on server 'PEER' is unavailable"),
            "{d:?}: {v:#}"
        );
        if d == Driver::Tedious {
            assert!(
                v["infos"].to_string().contains("MSDTC service is stopped"),
                "{v:#}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Transaction manager requests (0x0E): answered by the peer once wt-enlist is merged.

#[test]
fn odbc_autocommit_off_commits_through_transaction_manager_requests() {
    let peer = TdsPeer::start(PeerConfig::default());
    if let Some(v) = run_driver(
        Driver::Odbc18,
        &peer,
        PASSWORD,
        &[("scenario", "autocommit_off"), ("autocommit", "no")],
    ) {
        ok(Driver::Odbc18, &v);
        assert_eq!(v["rows"], serde_json::json!([[1, "x"]]), "{v:#}");
        assert!(v["close_error"].is_null(), "{v:#}");
    }
}

#[test]
fn odbc_close_and_tedious_transactions_need_transaction_manager_requests() {
    let peer = TdsPeer::start(PeerConfig::default());
    if let Some(v) = run_driver(Driver::Odbc18, &peer, PASSWORD, &[("scenario", "login")]) {
        ok(Driver::Odbc18, &v);
        assert!(v["close_error"].is_null(), "ODBC close(): {v:#}");
    }
    let peer = TdsPeer::start(PeerConfig::default());
    if let Some(v) = run_driver(
        Driver::Tedious,
        &peer,
        PASSWORD,
        &[("scenario", "transaction")],
    ) {
        ok(Driver::Tedious, &v);
    }
}
