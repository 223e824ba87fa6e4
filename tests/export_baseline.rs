//! `--baseline`: a JSON report taken while a port was open, compared with a run after it closed.

use crate::support;

use std::net::TcpListener;
use support::run_bin;

#[test]
fn regression_against_baseline_fails_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let baseline = dir.path().join("qa.json");
    let baseline_s = baseline.to_string_lossy().into_owned();

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("tcp://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let (code, _, err) = run_bin(&[
        "check",
        &url,
        "--output",
        &format!("json={baseline_s}"),
        "-f",
        "plain",
    ]);
    assert_eq!(code, 0, "{err}");

    // Same state: no regression, exit 0, and the section says so.
    let (code, out, err) = run_bin(&["check", &url, "--baseline", &baseline_s, "-f", "plain"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("Baseline comparison") && out.contains("no differences"),
        "{out}"
    );

    // The port closes: a regression, named with hop and cause, and the run fails.
    drop(listener);
    let (code, out, err) = run_bin(&["check", &url, "--baseline", &baseline_s, "-f", "plain"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains(&format!(
            "REGRESSION {url}: pass in baseline, fail now at tcp (refused)"
        )),
        "{out}"
    );

    // JSON: the additive `baseline` field; the rest of the schema is unchanged.
    let (code, out, _) = run_bin(&["check", &url, "--baseline", &baseline_s, "-f", "json"]);
    assert_eq!(code, 1);
    let v = support::parse_report(&out);
    assert_eq!(v["format_version"], "2.0");
    assert_eq!(v["baseline"]["regressions"][0]["hop"], "tcp");
    assert_eq!(v["baseline"]["regressions"][0]["cause"], "refused");
    assert_eq!(v["summary"]["fail"], 1);

    // `--fail-on never --baseline` means "fail on regressions only": checks that already failed
    // in the baseline are tolerated, a new failure is not.
    let (code, _, _) = run_bin(&[
        "check",
        &url,
        "--baseline",
        &baseline_s,
        "--fail-on",
        "never",
        "-f",
        "plain",
    ]);
    assert_eq!(code, 1);
}

#[test]
fn unreadable_baseline_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{ not json").unwrap();
    let (code, _, err) = run_bin(&[
        "check",
        "tcp://127.0.0.1:1",
        "--baseline",
        &bad.to_string_lossy(),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not a dtcprobe JSON report"), "{err}");
}

/// The baseline is loaded with the rest of the plan, before any check runs: a wrong path fails at
/// once with the usage code instead of after a long run. The target here is slow for real (a
/// listener that never answers the TDS PRELOGIN), as the control run shows.
#[test]
fn missing_baseline_fails_before_a_slow_run() {
    use std::time::{Duration, Instant};

    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("pw");
    std::fs::write(&password, "secret\n").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&password, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    // Accepted by the kernel, never read: the login hop waits until its timeout.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let cfg = dir.path().join("slow.toml");
    std::fs::write(
        &cfg,
        format!(
            "[defaults]\ntimeout = \"30s\"\n\n[[check]]\nname = \"silent-sql\"\nkind = \"mssql\"\n\
             host = \"127.0.0.1\"\nport = {}\ndatabase = \"master\"\nuser = \"probe\"\n\
             password_file = {:?}\n",
            silent.local_addr().unwrap().port(),
            password.to_string_lossy()
        ),
    )
    .unwrap();
    let cfg_s = cfg.to_string_lossy().into_owned();

    // Control: with a short timeout the check runs, and waits for it.
    let started = Instant::now();
    let (code, out, err) = run_bin(&["check", "-c", &cfg_s, "--timeout", "1s", "-f", "plain"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("login\tfail\ttimeout"), "{out}");
    assert!(started.elapsed() >= Duration::from_secs(1), "{out}");

    // With the config's 30 s timeout and a missing baseline: exit 2 long before any timeout.
    let missing = dir.path().join("missing.json");
    let started = Instant::now();
    let (code, out, err) = run_bin(&[
        "check",
        "-c",
        &cfg_s,
        "--baseline",
        &missing.to_string_lossy(),
    ]);
    let took = started.elapsed();
    assert_eq!(code, 2, "{out}{err}");
    assert!(took < Duration::from_secs(10), "took {took:?}: {err}");
    assert!(
        err.contains("cannot read baseline") && err.contains("missing.json"),
        "{err}"
    );
    assert!(
        out.is_empty(),
        "no report for a run that never started: {out}"
    );
    drop(silent);
}
