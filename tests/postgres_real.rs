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
