//! Opt-in: the same chain against a real SQL Server, which the test peer can only imitate.
//!
//! Set `DTCPROBE_MSSQL_URL` (e.g. `mssql://probe@sql01.corp/app?tx=distributed&trust_server_certificate=true`)
//! and `DTCPROBE_MSSQL_PASSWORD`, then
//! `cargo test --test integration mssql_real_server -- --ignored --nocapture`.
//! It is `#[ignore]`d otherwise, so a run's count shows it as not run (it never passes unrun);
//! asked for without the variables, it fails saying what to set. Every planned hop must pass.

use std::io::Write;
use std::process::{Command, Stdio};

#[test]
#[ignore = "needs a real SQL Server: set DTCPROBE_MSSQL_URL and DTCPROBE_MSSQL_PASSWORD, run with --ignored"]
fn real_sql_server_chain_passes() {
    let (Ok(url), Ok(password)) = (
        std::env::var("DTCPROBE_MSSQL_URL"),
        std::env::var("DTCPROBE_MSSQL_PASSWORD"),
    ) else {
        panic!(
            "set DTCPROBE_MSSQL_URL (mssql://user@host[:port|\\instance]/db?tx=local|distributed) and \
             DTCPROBE_MSSQL_PASSWORD to run the mssql chain against a real SQL Server"
        );
    };
    let mut f = tempfile::NamedTempFile::new().unwrap();
    writeln!(f, "{password}").unwrap();
    let timeout = std::env::var("DTCPROBE_MSSQL_TIMEOUT").unwrap_or_else(|_| "5s".into());
    let out = Command::new(env!("CARGO_BIN_EXE_dtcprobe"))
        .args([
            "check",
            &url,
            "-f",
            "json",
            "--timeout",
            &timeout,
            "--password-file",
            f.path().to_str().unwrap(),
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stdout.contains(&password) && !stderr.contains(&password),
        "the password appeared in the output"
    );
    let v: serde_json::Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"));
    eprintln!(
        "{}",
        serde_json::to_string_pretty(&v["checks"][0]["hops"]).unwrap()
    );
    for h in v["checks"][0]["hops"].as_array().unwrap() {
        assert_eq!(h["status"], "pass", "hop {} did not pass: {h:#}", h["hop"]);
    }
    let login = v["checks"][0]["hops"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["hop"] == "login")
        .unwrap();
    for key in ["server_version", "encryption", "login_seconds"] {
        assert!(
            !login["data"][key].is_null(),
            "login data lacks {key}: {login:#}"
        );
    }
    assert_eq!(out.status.code(), Some(0));
}
