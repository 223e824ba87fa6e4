//! End-to-end tests of the command line that need no privileges: exit codes, config errors with
//! their position, `init`, and a loopback check.

use crate::support;

use support::{hop, parse_report, run_bin as dtcprobe};

#[test]
fn unknown_scheme_is_a_usage_error() {
    let (code, stdout, stderr) = dtcprobe(&["check", "ftp://sql01:21"]);
    assert_eq!(code, 2);
    assert!(stdout.is_empty());
    assert!(stderr.contains("unknown target scheme `ftp`"), "{stderr}");
}

#[test]
fn bad_flag_values_are_usage_errors() {
    assert_eq!(
        dtcprobe(&["check", "--timeout", "soon", "tcp://127.0.0.1:9"]).0,
        2
    );
    assert_eq!(
        dtcprobe(&["check", "--concurrency", "0", "tcp://127.0.0.1:9"]).0,
        2
    );
    let (code, _, stderr) = dtcprobe(&["check"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("nothing to check"), "{stderr}");
    // A config file with no checks is named, not answered with "give TARGETs or -c FILE".
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.toml");
    std::fs::write(&empty, "# nothing yet\n").unwrap();
    let (code, _, stderr) = dtcprobe(&["check", "-c", empty.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains(&format!("{} has no [[check]]", empty.display())),
        "{stderr}"
    );
}

#[test]
fn config_errors_name_file_line_column_and_exit_78() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("zones.toml");
    std::fs::write(
        &path,
        "[[check]]\nname = \"a\"\nkind = \"tcp\"\nhost = \"db\"\nport = 1433\ntimeuot = \"2s\"\n",
    )
    .unwrap();
    let (code, _, stderr) = dtcprobe(&["check", "-c", path.to_str().unwrap()]);
    assert_eq!(code, 78, "{stderr}");
    assert!(
        stderr.contains(&format!("{}:6:1:", path.display())),
        "{stderr}"
    );
    assert!(stderr.contains("timeuot"), "{stderr}");

    let (code, _, stderr) = dtcprobe(&["check", "-c", "/nonexistent/dtcprobe.toml"]);
    assert_eq!(code, 78);
    assert!(stderr.contains("/nonexistent/dtcprobe.toml"), "{stderr}");
}

#[test]
fn init_writes_a_config_that_loads() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let (code, stdout, _) = dtcprobe(&["init", d]);
    assert_eq!(code, 0);
    assert!(stdout.contains("dtcprobe.toml"));
    // Refuses to overwrite without --force.
    assert_eq!(dtcprobe(&["init", d]).0, 2);
    assert_eq!(dtcprobe(&["init", d, "--force"]).0, 0);
    // The written file parses: selecting an unknown check is a usage error that lists the known ones.
    let cfg = dir.path().join("dtcprobe.toml");
    let (code, _, stderr) = dtcprobe(&["check", "-c", cfg.to_str().unwrap(), "--only", "nope"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("localhost-dns"), "{stderr}");
}

#[test]
fn shipped_example_configs_parse() {
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/config")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml")
            && !path.to_string_lossy().contains("agent")
            // A matrix file is no check config (its own parser's unit test reads it).
            && !path.to_string_lossy().contains("matrix")
        {
            let text = std::fs::read_to_string(&path).unwrap();
            let parsed = dtcprobe::config::parse(&text, &path);
            assert!(
                parsed.is_ok(),
                "{}: {}",
                path.display(),
                parsed.unwrap_err()
            );
        }
    }
}

#[test]
fn loopback_open_and_refused_with_json_and_plain() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let open = format!("tcp://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("tcp://127.0.0.1:{}", l.local_addr().unwrap().port())
    };
    let (code, stdout, _) = dtcprobe(&["check", "-f", "json", &open, &closed]);
    assert_eq!(code, 1);
    let report = parse_report(&stdout);
    assert_eq!(report["format_version"], "2.0");
    assert_eq!(hop(&report, &open, "tcp")["status"], "pass");
    assert_eq!(hop(&report, &closed, "tcp")["cause"], "refused");
    assert_eq!(report["summary"]["fail"], 1);

    // --fail-on never: the same failure, exit 0.
    assert_eq!(dtcprobe(&["check", "--fail-on", "never", &closed]).0, 0);

    let (_, plain, _) = dtcprobe(&["check", "-f", "plain", &closed]);
    let tcp_line = plain
        .lines()
        .find(|l| l.split('\t').nth(1) == Some("tcp"))
        .unwrap();
    let cols: Vec<&str> = tcp_line.split('\t').collect();
    assert_eq!(
        &cols[..4],
        &[closed.as_str(), "tcp", "fail", "refused"],
        "{plain}"
    );
}

#[cfg(unix)]
#[test]
fn ctrl_c_interrupts_a_run_with_exit_130() {
    // A peer that accepts the connection and never answers: the epm hop waits for its bind reply.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("epm://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let child = std::process::Command::new(support::netns::dtcprobe_bin())
        .args(["check", "--timeout", "30s", &url])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the probe is connected (and so waiting inside the run), then interrupt it.
    let (_conn, _) = listener.accept().unwrap();
    let started = std::time::Instant::now();
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert!(String::from_utf8_lossy(&out.stderr).contains("interrupted"));
}

/// A misspelt URL parameter (`hodl=5s` for `hold=5s`) is a usage error naming it, for every
/// scheme: silently ignored, it would pass a check that tested something else. The table must
/// hold one URL per kind of the registry, so a new kind cannot skip it.
#[test]
fn an_unknown_url_parameter_is_a_usage_error_for_every_scheme() {
    let cases = [
        ("tcp", "tcp://127.0.0.1:9?hodl=5s"),
        ("dns", "dns://localhost?hodl=5s"),
        ("mssql", "mssql://probe@127.0.0.1:9/master?hodl=5s"),
        ("postgres", "postgres://probe@127.0.0.1:9/app?hodl=5s"),
        ("epm", "epm://127.0.0.1:9?hodl=5s"),
        ("msdtc", "msdtc://localhost?hodl=5s"),
        ("kdc", "kdc://dc1.corp.example?hodl=5s"),
    ];
    let kinds: Vec<&str> = ::dtcprobe::hops::KINDS.iter().map(|k| k.name).collect();
    let covered: Vec<&str> = cases.iter().map(|(kind, _)| *kind).collect();
    assert_eq!(covered, kinds, "one case per kind of the registry");
    for (_, url) in cases {
        let (code, stdout, stderr) = dtcprobe(&["check", url]);
        assert_eq!(code, 2, "{url}: {stderr}");
        assert!(stdout.is_empty(), "{url}: {stdout}");
        assert!(stderr.contains("`hodl`"), "{url}: {stderr}");
    }
}
