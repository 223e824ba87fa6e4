//! End-to-end against a real PostgreSQL server: login causes, a local transaction, and two-phase
//! commit (what an XA/MSDTC coordinator needs) enabled and disabled.

use crate::support;

use std::process::Command;

use support::netns::dtcprobe_bin;
use support::postgres::{bin_dir, PgServer};
use support::{hop, parse_report};

fn have_postgres(test: &str) -> bool {
    if bin_dir().is_none() {
        eprintln!("SKIP {test}: no PostgreSQL server binaries (scripts/install-test-deps installs postgresql)");
        return false;
    }
    true
}

/// Runs dtcprobe with the password in PGPW (referenced by a config's password_env).
fn run_with_config(config: &str, password: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pg.toml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(dtcprobe_bin())
        .args(["check", "-f", "json", "--timeout", "5s", "-c"])
        .arg(&path)
        .env("PGPW", password)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn check(name: &str, port: u16, database: &str, tx: &str) -> String {
    format!(
        "[[check]]\nname = \"{name}\"\nkind = \"postgres\"\nhost = \"127.0.0.1\"\nport = {port}\nuser = \"postgres\"\n\
         database = \"{database}\"\npassword_env = \"PGPW\"\ntx = \"{tx}\"\nfrom = \"app\"\nto = \"db\"\n"
    )
}

#[test]
fn twophase_local_and_login_causes_against_real_postgres() {
    if !have_postgres("twophase_local_and_login_causes_against_real_postgres") {
        return;
    }
    let server = PgServer::start(5);
    let config = [
        check("twophase", server.port, "postgres", "twophase"),
        check("local", server.port, "postgres", "local"),
        check("nodb", server.port, "no_such_db", "local"),
    ]
    .join("\n");
    let (code, stdout, stderr) = run_with_config(&config, &server.password);
    assert_eq!(code, 1, "nodb fails the run; stderr: {stderr}");
    assert!(
        !stdout.contains(&server.password) && !stderr.contains(&server.password),
        "password leaked"
    );
    let report = parse_report(&stdout);

    let login = hop(&report, "twophase", "login");
    assert_eq!(login["status"], "pass", "{login:#}");
    assert!(login["data"]["server_version"]
        .as_str()
        .unwrap()
        .starts_with(char::is_numeric));
    let twophase = hop(&report, "twophase", "twophase");
    assert_eq!(twophase["status"], "pass", "{twophase:#}");
    assert_eq!(hop(&report, "local", "tx_local")["status"], "pass");

    let nodb = hop(&report, "nodb", "login");
    assert_eq!(nodb["cause"], "db_unavailable", "{nodb:#}");
    assert!(
        nodb["detail"].as_str().unwrap().contains("3D000"),
        "{nodb:#}"
    );
    assert_eq!(hop(&report, "nodb", "tx_local")["status"], "skip");

    // Nothing was left behind: no prepared transaction survives the probe.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let left: i64 = rt.block_on(async {
        let client = server.client().await;
        client
            .query_one("SELECT count(*) FROM pg_prepared_xacts", &[])
            .await
            .unwrap()
            .get(0)
    });
    assert_eq!(left, 0);

    // Wrong password: auth_failed, and the wrong password is not echoed either.
    let (code, stdout, stderr) = run_with_config(
        &check("badpw", server.port, "postgres", "local"),
        "not-the-password",
    );
    assert_eq!(code, 1);
    assert!(!stdout.contains("not-the-password") && !stderr.contains("not-the-password"));
    let login = hop(&parse_report(&stdout), "badpw", "login").clone();
    assert_eq!(login["cause"], "auth_failed", "{login:#}");
    assert!(
        login["detail"].as_str().unwrap().contains("28P01"),
        "{login:#}"
    );
}

#[test]
fn twophase_disabled_is_reported_with_the_setting_to_change() {
    if !have_postgres("twophase_disabled_is_reported_with_the_setting_to_change") {
        return;
    }
    let server = PgServer::start(0);
    let (code, stdout, stderr) = run_with_config(
        &check("twophase", server.port, "postgres", "twophase"),
        &server.password,
    );
    assert_eq!(code, 1, "{stderr}");
    let report = parse_report(&stdout);
    assert_eq!(hop(&report, "twophase", "login")["status"], "pass");
    let twophase = hop(&report, "twophase", "twophase");
    assert_eq!(twophase["cause"], "dtc_unavailable", "{twophase:#}");
    assert!(
        twophase["hint"]
            .as_str()
            .unwrap()
            .contains("max_prepared_transactions"),
        "{twophase:#}"
    );
}

/// `sslmode` against real servers: one with TLS (a certificate from a private CA, for
/// `127.0.0.1` only) whose pg_hba.conf admits TCP logins over TLS only (`hostssl`), so a pass
/// there is the server's own word that the login was encrypted; one without TLS.
#[test]
fn sslmode_against_real_postgres_with_and_without_tls() {
    if !have_postgres("sslmode_against_real_postgres_with_and_without_tls") {
        return;
    }
    use support::postgres::{ca_and_server_cert, PgTls};
    let (ca_pem, cert_pem, key_pem) = ca_and_server_cert(&["127.0.0.1"]);
    let tls_server = PgServer::start_with(
        0,
        Some(PgTls {
            cert_pem,
            key_pem,
            hostssl_only: true,
        }),
    );
    let plain_server = PgServer::start(0);
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &ca_pem).unwrap();
    let ca = ca.display().to_string();
    let with = |name: &str, host: &str, port: u16, extra: &str| {
        format!(
            "[[check]]\nname = \"{name}\"\nkind = \"postgres\"\nhost = \"{host}\"\nport = {port}\n\
             user = \"postgres\"\ndatabase = \"postgres\"\npassword_env = \"PGPW\"\n{extra}\n"
        )
    };
    let p = tls_server.port;
    let config = [
        with("require", "127.0.0.1", p, "sslmode = \"require\""),
        with("prefer", "127.0.0.1", p, ""),
        with(
            "full",
            "127.0.0.1",
            p,
            &format!("sslmode = \"verify-full\"\nsslrootcert = \"{ca}\""),
        ),
        with(
            "full-system-store",
            "127.0.0.1",
            p,
            "sslmode = \"verify-full\"",
        ),
        with(
            "full-wrong-name",
            "localhost",
            p,
            &format!("sslmode = \"verify-full\"\nsslrootcert = \"{ca}\""),
        ),
        with(
            "ca-wrong-name",
            "localhost",
            p,
            &format!("sslmode = \"verify-ca\"\nsslrootcert = \"{ca}\""),
        ),
        with("disable", "127.0.0.1", p, "sslmode = \"disable\""),
    ]
    .join("\n");
    let (_, stdout, stderr) = run_with_config(&config, &tls_server.password);
    let report = parse_report(&stdout);
    let login = |name: &str| hop(&report, name, "login").clone();
    let context = format!("stderr: {stderr}\n{report:#}");

    for name in ["require", "prefer", "full", "ca-wrong-name"] {
        let h = login(name);
        assert_eq!(h["status"], "pass", "{name}: {context}");
        assert_eq!(h["data"]["tls"], true, "{name}: {h:#}");
        assert!(
            h["data"]["tls_version"]
                .as_str()
                .unwrap()
                .starts_with("TLS"),
            "{h:#}"
        );
        assert!(
            !h["data"]["tls_cipher"].as_str().unwrap().is_empty(),
            "{h:#}"
        );
    }
    assert_eq!(login("prefer")["data"]["sslmode"], "prefer");
    let untrusted = login("full-system-store");
    assert_eq!(untrusted["cause"], "tls_error", "{untrusted:#}");
    assert!(
        untrusted["detail"]
            .as_str()
            .unwrap()
            .contains("UnknownIssuer"),
        "{untrusted:#}"
    );
    assert!(untrusted["hint"].as_str().unwrap().contains("sslrootcert"));
    let wrong_name = login("full-wrong-name");
    assert_eq!(wrong_name["cause"], "tls_error", "{wrong_name:#}");
    assert!(
        wrong_name["hint"].as_str().unwrap().contains("verify-ca"),
        "{wrong_name:#}"
    );
    // The server admits only TLS over TCP: the clear login is refused by pg_hba.conf, and the
    // hint names sslmode.
    let clear = login("disable");
    assert_eq!(clear["cause"], "auth_failed", "{clear:#}");
    assert!(
        clear["detail"].as_str().unwrap().contains("no encryption"),
        "{clear:#}"
    );
    assert!(
        clear["hint"].as_str().unwrap().contains("sslmode"),
        "{clear:#}"
    );
    crate::report_schema::assert_valid("postgres sslmode", &report);

    // A server without TLS: prefer logs in in the clear (and says so), require fails.
    let q = plain_server.port;
    let config = [
        with("prefer", "127.0.0.1", q, ""),
        with("require", "127.0.0.1", q, "sslmode = \"require\""),
    ]
    .join("\n");
    let (code, stdout, stderr) = run_with_config(&config, &plain_server.password);
    let report = parse_report(&stdout);
    let prefer = hop(&report, "prefer", "login");
    assert_eq!(prefer["status"], "pass", "{stderr}\n{report:#}");
    assert_eq!(prefer["data"]["tls"], false, "{prefer:#}");
    assert!(prefer["detail"].as_str().unwrap().contains("no TLS"));
    let require = hop(&report, "require", "login");
    assert_eq!(require["cause"], "tls_error", "{require:#}");
    assert!(
        require["detail"]
            .as_str()
            .unwrap()
            .contains("server does not support TLS"),
        "{require:#}"
    );
    assert!(require["hint"].as_str().unwrap().contains("ssl = off"));
    assert_eq!(code, 1);
    crate::report_schema::assert_valid("postgres sslmode, no TLS", &report);
}

/// The credential-free login (no user): a random user the server refuses with 28P01 (wrong
/// password / unknown role) or 28000 (no pg_hba.conf line) is a pass, with no password given.
#[test]
fn credential_free_login_against_real_postgres() {
    if !have_postgres("credential_free_login_against_real_postgres") {
        return;
    }
    use support::postgres::{ca_and_server_cert, PgTls};
    let plain = PgServer::start(0);
    let (_, cert_pem, key_pem) = ca_and_server_cert(&["127.0.0.1"]);
    let tls = PgServer::start_with(
        0,
        Some(PgTls {
            cert_pem,
            key_pem,
            hostssl_only: true,
        }),
    );
    let run = |target: String| {
        let out = Command::new(dtcprobe_bin())
            .args(["check", "-f", "json", "--timeout", "5s"])
            .arg(&target)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let report = parse_report(&stdout);
        let login = report["checks"][0]["hops"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["hop"] == "login")
            .cloned()
            .unwrap_or_else(|| panic!("no login hop: {stdout}"));
        (out.status.code(), login)
    };
    let (code, login) = run(format!("postgres://127.0.0.1:{}", plain.port));
    eprintln!("credential-free login (docs/postgres.md): {login:#}");
    assert_eq!(code, Some(0), "{login:#}");
    assert_eq!(login["status"], "pass", "{login:#}");
    assert_eq!(login["data"]["credential_free"], true, "{login:#}");
    assert_eq!(login["data"]["sqlstate"], "28P01", "{login:#}");
    assert_eq!(login["data"]["tls"], false, "{login:#}");
    // The phases: no TLS one; startup and the refused authentication.
    let phases = &login["data"]["phases_ms"];
    assert!(phases["tls"].is_null(), "{login:#}");
    for p in ["tcp", "startup", "auth"] {
        assert!(
            phases[p].as_f64().is_some_and(|ms| ms > 0.0),
            "{p}: {login:#}"
        );
    }
    let user = login["data"]["probe_user"].as_str().unwrap();
    assert!(user.starts_with("dtcprobe-probe-"), "{login:#}");
    assert!(
        login["detail"].as_str().unwrap().contains(user),
        "{login:#}"
    );

    // Over TLS (sslmode=require), and refused by pg_hba.conf without it (28000).
    let (_, login) = run(format!(
        "postgres://127.0.0.1:{}/postgres?login=probe&sslmode=require",
        tls.port
    ));
    assert_eq!(login["status"], "pass", "{login:#}");
    assert_eq!(
        (&login["data"]["sqlstate"], &login["data"]["tls"]),
        (&serde_json::json!("28P01"), &serde_json::json!(true)),
        "{login:#}"
    );
    eprintln!("over TLS: {login:#}");
    assert!(
        login["data"]["phases_ms"]["tls"]
            .as_f64()
            .is_some_and(|ms| ms > 0.0),
        "{login:#}"
    );
    let (_, login) = run(format!(
        "postgres://127.0.0.1:{}/?sslmode=disable",
        tls.port
    ));
    assert_eq!(login["status"], "pass", "{login:#}");
    assert_eq!(login["data"]["sqlstate"], "28000", "{login:#}");

    // A closed port is judged as for any login: the tcp hop fails.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let out = Command::new(dtcprobe_bin())
        .args(["check", "-f", "json", "--timeout", "2s"])
        .arg(format!("postgres://127.0.0.1:{port}"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}
