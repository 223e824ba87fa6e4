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
    assert_eq!(v["format_version"], "1.0");
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
