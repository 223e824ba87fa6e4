//! End to end through the binary: a password in a target URL is refused as a usage error (exit 2)
//! and never appears in what the tool prints, whatever the scheme or output format; a user name
//! is refused for kinds that have no login.

use crate::support;

use support::run_bin as dtcprobe;

/// Each format with its exit code for a usage error: Nagios plugins report UNKNOWN (3).
const FORMATS: &[(&str, i32)] = &[
    ("human", 2),
    ("plain", 2),
    ("json", 2),
    ("junit", 2),
    ("prometheus", 2),
    ("nagios", 3),
];

#[test]
fn a_password_in_a_url_is_refused_and_masked_in_every_format() {
    let urls = [
        "postgres://u:secret@127.0.0.1/db",
        "postgresql://u:secret@127.0.0.1/db",
        "mssql://sa:secret@127.0.0.1/db",
        "mssql://sa@127.0.0.1/db?password=secret",
        "tcp://u:secret@127.0.0.1:1",
        "dns://u:secret@localhost",
        "epm://u:secret@127.0.0.1",
        "ftp://u:secret@127.0.0.1",
    ];
    for url in urls {
        for (format, usage_code) in FORMATS {
            let (code, stdout, stderr) = dtcprobe(&["check", url, "-f", format]);
            assert_eq!(code, *usage_code, "{url} -f {format}: {stdout}{stderr}");
            assert!(
                !stdout.contains("secret") && !stderr.contains("secret"),
                "{url} -f {format} leaked the password:\n{stdout}\n{stderr}"
            );
            assert!(
                stderr.contains("***"),
                "{url} -f {format}: the URL should be shown masked: {stderr}"
            );
        }
    }
}

#[test]
fn the_brief_case_postgres_json() {
    let (code, stdout, stderr) =
        dtcprobe(&["check", "postgres://u:secret@127.0.0.1/db", "-f", "json"]);
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(!stdout.contains("secret"), "{stdout}");
    assert!(!stderr.contains("secret"), "{stderr}");
    assert!(stderr.contains("postgres://u:***@127.0.0.1/db"), "{stderr}");
}

#[test]
fn a_password_in_a_config_target_is_refused_with_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("zones.toml");
    std::fs::write(
        &path,
        "[[check]]\nname = \"pg\"\ntarget = \"postgres://u:secret@127.0.0.1/db\"\n",
    )
    .unwrap();
    let (code, stdout, stderr) = dtcprobe(&["check", "-c", path.to_str().unwrap(), "-f", "json"]);
    assert_eq!(code, 78, "{stdout}{stderr}");
    assert!(
        !stdout.contains("secret") && !stderr.contains("secret"),
        "{stdout}{stderr}"
    );
    assert!(stderr.contains("zones.toml:3:"), "{stderr}");
}

#[test]
fn a_user_is_refused_for_kinds_without_a_login() {
    for url in [
        "tcp://u@127.0.0.1:1",
        "dns://u@localhost",
        "epm://u@127.0.0.1",
    ] {
        let (code, _, stderr) = dtcprobe(&["check", url]);
        assert_eq!(code, 2, "{url}: {stderr}");
        assert!(stderr.contains("has no user"), "{url}: {stderr}");
    }
}
