//! The server certificate report (`data.certificate` on hop `login`) and hop `revocation`
//! (issue 24), against real peers: the TDS test peer serving certificates made here with rcgen
//! (expiring in 10 days, expired, issued for another name, self-signed, a CA's chain), a real
//! PostgreSQL, and, for revocation, a CRL on Python's HTTP server and `openssl ocsp` (a real
//! OCSP responder) in a network namespace, with a second CRL URL whose port the namespace's
//! nftables drops.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::support::certs::{self, ServerCert, Spec, TestCa};
use crate::support::netns::{self, can_run_netns_tests, wait_until, Daemon, Zones};
use crate::support::tds_peer::{Event, PeerConfig, ServerEncryption, TdsPeer};

/// `dtcprobe check -f json ARGS` with `env`; the parsed report.
fn check(args: &[&str], env: &[(&str, &str)]) -> (i32, Value) {
    let mut cmd = Command::new(netns::dtcprobe_bin());
    cmd.arg("check")
        .args(["-f", "json", "--no-trace"])
        .args(args);
    cmd.stdin(Stdio::null()).env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run dtcprobe");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), report)
}

fn hop<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"][0]["hops"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["hop"] == name)
        .unwrap_or_else(|| panic!("no hop {name}: {report:#}"))
}

fn password_file() -> tempfile::NamedTempFile {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), "Pr0be-pass!\n").unwrap();
    f
}

fn peer(cert: &ServerCert) -> TdsPeer {
    TdsPeer::start(PeerConfig {
        encryption: ServerEncryption::Off,
        certificate: cert.for_peer(),
        ..Default::default()
    })
}

fn pem_file(text: &str) -> tempfile::NamedTempFile {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), text).unwrap();
    f
}

/// Logs in to a TDS peer with `cert` (trust_server_certificate=true unless `query` says
/// otherwise); the report.
fn mssql_with(cert: &ServerCert, query: &str, extra: &[&str], env: &[(&str, &str)]) -> Value {
    let peer = peer(cert);
    let pw = password_file();
    let url = format!(
        "mssql://probe@127.0.0.1:{}/app?tx=none&{query}",
        peer.addr.port()
    );
    let mut args = vec![
        "--timeout",
        "3s",
        "--password-file",
        pw.path().to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    args.push(&url);
    let (_, report) = check(&args, env);
    crate::report_schema::assert_valid(&format!("mssql {query}"), &report);
    report
}

#[test]
fn mssql_certificate_report_expiring_expired_wrong_name_self_signed() {
    // Expiring in 10 days: the login warns, cert_expiring; with --cert-warn-days 5 it passes.
    let expiring = certs::self_signed(&Spec {
        not_after_days: 10,
        ..Default::default()
    });
    let r = mssql_with(&expiring, "trust_server_certificate=true", &[], &[]);
    let login = hop(&r, "login");
    // docs/mssql.md shows this hop (--nocapture).
    eprintln!("mssql login, certificate expiring in 10 days: {login:#}");
    assert_eq!(login["status"], "warn", "{login:#}");
    assert_eq!(login["cause"], "cert_expiring", "{login:#}");
    let days = login["data"]["certificate"]["days_left"].as_i64().unwrap();
    assert!((9..=10).contains(&days), "{login:#}");
    assert_eq!(login["data"]["certificate"]["self_signed"], true);
    assert_eq!(login["data"]["certificate"]["chain_trusted"], false);
    assert_eq!(login["data"]["certificate"]["name_matches"], true);
    assert_eq!(login["data"]["certificate"]["sans"][0], "127.0.0.1");
    // A self-signed certificate names no revocation URL.
    let rev = hop(&r, "revocation");
    assert_eq!(rev["status"], "skip", "{rev:#}");
    assert!(
        rev["detail"].as_str().unwrap().contains("no CRL"),
        "{rev:#}"
    );
    let r = mssql_with(
        &expiring,
        "trust_server_certificate=true",
        &["--cert-warn-days", "5"],
        &[],
    );
    assert_eq!(hop(&r, "login")["status"], "pass", "{r:#}");
    // The check's own key wins over the flag.
    let r = mssql_with(
        &expiring,
        "trust_server_certificate=true&cert_warn_days=20",
        &["--cert-warn-days", "5"],
        &[],
    );
    assert_eq!(hop(&r, "login")["cause"], "cert_expiring", "{r:#}");

    // Expired: the login works (trust off), but the hop fails.
    let expired = certs::self_signed(&Spec {
        not_before_days: -100,
        not_after_days: -3,
        ..Default::default()
    });
    let r = mssql_with(&expired, "trust_server_certificate=true", &[], &[]);
    let login = hop(&r, "login");
    assert_eq!(login["status"], "fail", "{login:#}");
    assert_eq!(login["cause"], "tls_error", "{login:#}");
    let detail = login["detail"].as_str().unwrap();
    assert!(detail.contains("expired on"), "{detail}");
    assert!(detail.contains("clients that check it"), "{detail}");
    assert!(detail.contains("logged in"), "{detail}");
    assert!(login["data"]["certificate"]["days_left"].as_i64().unwrap() < 0);

    // Issued for another name: named in the detail.
    let other = certs::self_signed(&Spec {
        names: &["sql01.corp.example"],
        ..Default::default()
    });
    let r = mssql_with(&other, "trust_server_certificate=true", &[], &[]);
    let login = hop(&r, "login");
    assert_eq!(login["status"], "pass", "{login:#}");
    assert_eq!(login["data"]["certificate"]["name_matches"], false);
    assert!(
        login["detail"]
            .as_str()
            .unwrap()
            .contains("issued for sql01.corp.example; connected as 127.0.0.1"),
        "{login:#}"
    );
    // With the trust check on, the login fails on it and the report still shows the certificate.
    let r = mssql_with(&other, "trust_server_certificate=false", &[], &[]);
    let login = hop(&r, "login");
    assert_eq!(login["status"], "fail", "{login:#}");
    assert_eq!(login["cause"], "tls_error", "{login:#}");
    assert_eq!(
        login["data"]["certificate"]["subject"], "CN=sql01.corp.example",
        "{login:#}"
    );
    assert!(
        login["detail"]
            .as_str()
            .unwrap()
            .contains("issued for sql01.corp.example"),
        "{login:#}"
    );
}

#[test]
fn mssql_certificate_from_a_trusted_ca_and_under_strict() {
    let ca = TestCa::new();
    let cert = ca.issue(&Spec::default());
    let ca_pem = pem_file(&ca.cert.pem());
    let env = [("SSL_CERT_FILE", ca_pem.path().to_str().unwrap())];
    for query in ["encrypt=on", "encrypt=strict"] {
        let r = mssql_with(&cert, query, &[], &env);
        let login = hop(&r, "login");
        assert_eq!(login["status"], "pass", "{query}: {login:#}");
        let c = &login["data"]["certificate"];
        assert_eq!(c["chain_trusted"], true, "{query}: {c:#}");
        assert_eq!(c["self_signed"], false, "{query}: {c:#}");
        assert_eq!(c["chain_length"], 2, "{query}: {c:#}");
        assert_eq!(c["issuer"], "CN=dtcprobe test CA", "{query}: {c:#}");
        assert!(c["trust_error"].is_null(), "{query}: {c:#}");
    }
    // Without the CA in the store: not trusted, and the reason is given.
    let r = mssql_with(&cert, "trust_server_certificate=true", &[], &[]);
    let c = &hop(&r, "login")["data"]["certificate"];
    assert_eq!(c["chain_trusted"], false, "{c:#}");
    assert!(
        c["trust_error"].as_str().unwrap().contains("UnknownIssuer"),
        "{c:#}"
    );
}

/// The CA only in a CA directory (SSL_CERT_DIR), the CA file (SSL_CERT_FILE) a bundle without
/// it: trusted when the directory names the CA's file by its subject hash (`openssl rehash`),
/// as OpenSSL (and so Microsoft's ODBC driver on Linux) looks CAs up there; not trusted when
/// the file sits there under another name, which OpenSSL does not find either.
#[test]
fn mssql_ca_in_a_hashed_directory_is_trusted_under_another_name_not() {
    let ca = TestCa::new();
    let cert = ca.issue(&Spec::default());
    // A bundle with another certificate only (another name: not a candidate issuer).
    let bundle = pem_file(&certs::self_signed(&Spec::default()).chain_pem);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("dtcprobe-test-ca.pem"), ca.cert.pem()).unwrap();
    let env = [
        ("SSL_CERT_FILE", bundle.path().to_str().unwrap()),
        ("SSL_CERT_DIR", dir.path().to_str().unwrap()),
    ];
    // Under a name OpenSSL does not look for: not trusted.
    let r = mssql_with(&cert, "trust_server_certificate=true", &[], &env);
    let c = &hop(&r, "login")["data"]["certificate"];
    assert_eq!(c["chain_trusted"], false, "{c:#}");
    assert!(
        c["trust_error"].as_str().unwrap().contains("UnknownIssuer"),
        "{c:#}"
    );
    // Hash-named (`<hash>.0` links): trusted, the same report as a CA file gives.
    let rehash = Command::new("openssl")
        .arg("rehash")
        .arg(dir.path())
        .output()
        .expect("openssl CLI (scripts/install-test-deps)");
    assert!(rehash.status.success(), "openssl rehash: {rehash:?}");
    let hashed = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".0"))
        .count();
    assert_eq!(hashed, 1, "openssl rehash made no <hash>.0 link");
    for query in ["trust_server_certificate=true", "encrypt=on"] {
        let r = mssql_with(&cert, query, &[], &env);
        let login = hop(&r, "login");
        assert_eq!(login["status"], "pass", "{query}: {login:#}");
        let c = &login["data"]["certificate"];
        assert_eq!(c["chain_trusted"], true, "{query}: {c:#}");
        assert_eq!(c["chain_length"], 2, "{query}: {c:#}");
        assert!(c["trust_error"].is_null(), "{query}: {c:#}");
    }
}

/// One run, three checks of one server: the certificate handshake is made once per server and
/// handshake kind (TDS 7 inside PRELOGIN, TDS 8 TLS first), not once per check, and every check
/// reports the same certificate, checked against the one trust store the run read.
#[test]
fn one_certificate_handshake_per_server_in_a_run() {
    let ca = TestCa::new();
    let cert = ca.issue(&Spec::default());
    let ca_pem = pem_file(&ca.cert.pem());
    let peer = peer(&cert);
    let pw = password_file();
    let base = format!("mssql://probe@127.0.0.1:{}/app?tx=none", peer.addr.port());
    let targets = [
        format!("trusting={base}&trust_server_certificate=true"),
        format!("checking={base}&encrypt=on"),
        format!("strict={base}&encrypt=strict"),
    ];
    let mut args = vec![
        "--timeout",
        "3s",
        "--password-file",
        pw.path().to_str().unwrap(),
    ];
    args.extend(targets.iter().map(String::as_str));
    let (_, report) = check(&args, &[("SSL_CERT_FILE", ca_pem.path().to_str().unwrap())]);
    crate::report_schema::assert_valid("three checks of one server", &report);
    let checks = report["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 3, "{report:#}");
    let certificates: Vec<&Value> = checks
        .iter()
        .map(|c| {
            let login = c["hops"]
                .as_array()
                .unwrap()
                .iter()
                .find(|h| h["hop"] == "login")
                .unwrap_or_else(|| panic!("no login: {c:#}"));
            assert_eq!(login["status"], "pass", "{login:#}");
            &login["data"]["certificate"]
        })
        .collect();
    assert_eq!(certificates[0]["chain_trusted"], true, "{report:#}");
    assert_eq!(certificates[0]["issuer"], "CN=dtcprobe test CA");
    assert!(
        certificates.iter().all(|c| *c == certificates[0]),
        "{report:#}"
    );
    // Each login does one TLS handshake of its own; the rest are certificate handshakes: one
    // for the two TDS 7 checks, one for the TDS 8 check (before the per-run sharing: three).
    // The peer logs a handshake once it has read the client's Finished, which can be after
    // dtcprobe has exited: the count is read once it has settled.
    let tls_count = || {
        peer.events()
            .iter()
            .filter(|e| matches!(e, Event::TlsHandshake { .. }))
            .count()
    };
    wait_until(Duration::from_secs(2), || tls_count() >= 5);
    std::thread::sleep(Duration::from_millis(300));
    let events = peer.events();
    let logins = peer.logins().len();
    let handshakes = events
        .iter()
        .filter(|e| matches!(e, Event::TlsHandshake { .. }))
        .count();
    assert_eq!(logins, 3, "{events:?}");
    assert_eq!(handshakes - logins, 2, "{events:?}");
    let strict = events
        .iter()
        .filter(|e| matches!(e, Event::TlsHandshake { strict: true }))
        .count();
    assert_eq!(
        strict, 2,
        "the TDS 8 login and its certificate handshake: {events:?}"
    );
}

/// The revocation zone: `sql` (198.18.0.2) runs the TDS peer, a CRL on HTTP port 80, an OCSP
/// responder on 8080 and nothing on 81, which `web`'s firewall drops. dtcprobe runs in `web`.
#[test]
fn revocation_urls_fetched_from_the_zone_and_a_dropped_one_is_a_firewall_request() {
    if !can_run_netns_tests("revocation_urls_fetched_from_the_zone") {
        return;
    }
    if Command::new("openssl").arg("version").output().is_err() {
        panic!("openssl is needed (scripts/install-test-deps)");
    }
    let zones = Zones::new("dpcrt");
    let ca = TestCa::new();
    let cert = ca.issue(&Spec {
        names: &["198.18.0.2"],
        crl_urls: &["http://198.18.0.2/ca.crl", "http://198.18.0.2:81/ca.crl"],
        ocsp_url: Some("http://198.18.0.2:8080/"),
        ..Default::default()
    });
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.crl"), ca.crl_der()).unwrap();
    let files = tempfile::tempdir().unwrap();
    let ca_pem = files.path().join("ca.pem");
    let ca_key = files.path().join("ca.key");
    let index = files.path().join("index.txt");
    std::fs::write(&ca_pem, ca.cert.pem()).unwrap();
    std::fs::write(&ca_key, ca.key.serialize_pem()).unwrap();
    std::fs::write(&index, "").unwrap();
    let mut http = Daemon::spawn(
        &zones.sql,
        "python3",
        &[
            "-m",
            "http.server",
            "80",
            "--bind",
            "198.18.0.2",
            "--directory",
            dir.path().to_str().unwrap(),
        ],
    );
    let mut ocsp = Daemon::spawn(
        &zones.sql,
        "openssl",
        &[
            "ocsp",
            "-index",
            index.to_str().unwrap(),
            "-port",
            "8080",
            "-rsigner",
            ca_pem.to_str().unwrap(),
            "-rkey",
            ca_key.to_str().unwrap(),
            "-CA",
            ca_pem.to_str().unwrap(),
            "-ignore_err",
        ],
    );
    zones.web.nft(
        "table inet f {\n  chain out {\n    type filter hook output priority 0;\n    ip daddr 198.18.0.2 tcp dport 81 drop\n  }\n}\n",
    );
    let for_peer = cert.for_peer();
    let peer = zones.sql.inside(move || {
        TdsPeer::start_on(
            "198.18.0.2:0".parse().unwrap(),
            PeerConfig {
                encryption: ServerEncryption::Off,
                certificate: for_peer,
                ..Default::default()
            },
        )
    });
    // Listening, asked of the kernel: `openssl ocsp` serves one connection at a time and hangs
    // on one that closes without a request, so a trial connect would stall it.
    for port in [80u16, 8080] {
        let ready = wait_until(Duration::from_secs(15), || {
            !zones
                .sql
                .sh(&format!("ss -ltnH 'sport = :{port}'"))
                .trim()
                .is_empty()
        });
        http.assert_running();
        ocsp.assert_running();
        assert!(ready, "port {port} in sql does not listen");
    }
    let pw = password_file();
    let url = format!(
        "mssql://probe@198.18.0.2:{}/app?tx=none&trust_server_certificate=true",
        peer.addr.port()
    );
    let (code, out, err) = netns::check_named_in(
        &zones.web,
        pw.path().to_str().unwrap(),
        std::slice::from_ref(&url),
    );
    let report: Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}\n{err}"));
    crate::report_schema::assert_valid("revocation", &report);
    let rev = hop(&report, "revocation");
    // docs/mssql.md shows this hop and the firewall request (--nocapture).
    eprintln!("mssql revocation: {rev:#}");
    eprintln!("firewall requests: {:#}", report["firewall_requests"]);
    assert_eq!(rev["status"], "fail", "{rev:#}");
    assert_eq!(rev["cause"], "timeout", "{rev:#}");
    let urls = rev["data"]["urls"].as_array().unwrap();
    let by_url = |u: &str| {
        urls.iter()
            .find(|x| x["url"] == u)
            .unwrap_or_else(|| panic!("no {u}: {rev:#}"))
    };
    let crl = by_url("http://198.18.0.2/ca.crl");
    assert_eq!(crl["status"], "pass", "{crl:#}");
    assert_eq!(crl["http_status"], 200, "{crl:#}");
    assert_eq!(crl["kind"], "crl");
    let ocsp_url = by_url("http://198.18.0.2:8080/");
    assert_eq!(ocsp_url["status"], "pass", "{ocsp_url:#}");
    assert_eq!(ocsp_url["kind"], "ocsp");
    assert_eq!(ocsp_url["ocsp_status"], "successful", "{ocsp_url:#}");
    let dropped = by_url("http://198.18.0.2:81/ca.crl");
    assert_eq!(dropped["status"], "fail", "{dropped:#}");
    assert_eq!(dropped["cause"], "timeout", "{dropped:#}");
    // The blocked URL is a firewall request row.
    let rows = report["firewall_requests"].as_array().unwrap();
    let row = rows
        .iter()
        .find(|r| r["service"] == "certificate revocation")
        .unwrap_or_else(|| panic!("no firewall request for the CRL URL: {report:#}"));
    assert_eq!(row["destination"], "198.18.0.2", "{row:#}");
    assert_eq!(row["ports"], "81", "{row:#}");
    assert_eq!(row["protocol"], "tcp", "{row:#}");
    assert_eq!(code, 1, "{out}");
    // The login itself is unaffected: the certificate is reported.
    let login = hop(&report, "login");
    assert_eq!(login["status"], "pass", "{login:#}");
    assert_eq!(login["data"]["certificate"]["name_matches"], true);

    // revocation=off: no hop at all.
    let (_, out, _) = netns::check_named_in(
        &zones.web,
        pw.path().to_str().unwrap(),
        &[format!("{url}&revocation=off")],
    );
    let report: Value = serde_json::from_str(&out).unwrap();
    assert!(
        !report["checks"][0]["hops"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["hop"] == "revocation"),
        "{report:#}"
    );

    // A login refused for its password still read the chain: its URLs are fetched all the same.
    let wrong = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(wrong.path(), "not-the-password\n").unwrap();
    let (_, out, _) = netns::check_named_in(
        &zones.web,
        wrong.path().to_str().unwrap(),
        std::slice::from_ref(&url),
    );
    let report: Value = serde_json::from_str(&out).unwrap();
    let login = hop(&report, "login");
    assert_eq!(login["status"], "fail", "{login:#}");
    assert_eq!(login["cause"], "auth_failed", "{login:#}");
    let rev = hop(&report, "revocation");
    assert_eq!(rev["status"], "fail", "{rev:#}");
    let urls = rev["data"]["urls"].as_array().unwrap();
    let status_of = |u: &str| {
        urls.iter()
            .find(|x| x["url"] == u)
            .map(|x| x["status"].clone())
    };
    assert_eq!(
        status_of("http://198.18.0.2/ca.crl"),
        Some("pass".into()),
        "{rev:#}"
    );
    assert_eq!(
        status_of("http://198.18.0.2:81/ca.crl"),
        Some("fail".into()),
        "{rev:#}"
    );
    drop(peer);
}

fn have_postgres(test: &str) -> bool {
    if crate::support::postgres::bin_dir().is_none() {
        eprintln!("SKIP {test}: no PostgreSQL server binaries (scripts/install-test-deps)");
        return false;
    }
    true
}

/// PostgreSQL over TLS with a CA's certificate expiring in 10 days whose CRL URL is served on
/// loopback and whose second CRL URL is a closed loopback port.
#[test]
fn postgres_certificate_report_and_revocation_against_real_postgres() {
    if !have_postgres("postgres_certificate_report_and_revocation") {
        return;
    }
    use crate::support::postgres::{PgServer, PgTls};
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    std::fs::write(dir.path().join("ca.crl"), ca.crl_der()).unwrap();
    let http_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut http = Daemon::adopt(
        Command::new("python3")
            .args([
                "-m",
                "http.server",
                &http_port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .arg("--directory")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3"),
        "python3 http.server",
    );
    let good = format!("http://127.0.0.1:{http_port}/ca.crl");
    let closed = format!("http://127.0.0.1:{closed_port}/ca.crl");
    let cert = ca.issue(&Spec {
        names: &["127.0.0.1"],
        not_after_days: 10,
        crl_urls: &[&good, &closed],
        ..Default::default()
    });
    let server = PgServer::start_with(
        0,
        Some(PgTls {
            cert_pem: cert.chain_pem.clone(),
            key_pem: cert.key_pem.clone(),
            hostssl_only: true,
        }),
    );
    assert!(wait_until(Duration::from_secs(15), || {
        std::net::TcpStream::connect(("127.0.0.1", http_port)).is_ok()
    }));
    http.assert_running();
    let pw = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(pw.path(), &server.password).unwrap();
    let ca_file = pem_file(&ca.cert.pem());
    let url = format!(
        "postgres://postgres@127.0.0.1:{}/postgres?sslmode=verify-full&sslrootcert={}",
        server.port,
        ca_file.path().display()
    );
    let (_, report) = check(
        &[
            "--timeout",
            "3s",
            "--password-file",
            pw.path().to_str().unwrap(),
            &url,
        ],
        &[],
    );
    crate::report_schema::assert_valid("postgres certificate", &report);
    let login = hop(&report, "login");
    // docs/postgres.md shows these hops (--nocapture).
    eprintln!("postgres login: {login:#}");
    eprintln!("postgres revocation: {:#}", hop(&report, "revocation"));
    assert_eq!(login["status"], "warn", "{login:#}");
    assert_eq!(login["cause"], "cert_expiring", "{login:#}");
    let c = &login["data"]["certificate"];
    assert_eq!(c["chain_trusted"], true, "{c:#}");
    assert_eq!(c["name_matches"], true, "{c:#}");
    assert_eq!(c["chain_length"], 2, "{c:#}");
    let rev = hop(&report, "revocation");
    assert_eq!(rev["status"], "fail", "{rev:#}");
    assert_eq!(rev["cause"], "refused", "{rev:#}");
    let urls = rev["data"]["urls"].as_array().unwrap();
    assert!(
        urls.iter()
            .any(|u| u["url"] == good.as_str() && u["status"] == "pass"),
        "{rev:#}"
    );
    assert!(
        urls.iter()
            .any(|u| u["url"] == closed.as_str() && u["cause"] == "refused"),
        "{rev:#}"
    );
    // A refusal from the host itself proves no firewall: no firewall request row (as for tcp).
    assert!(
        !report["firewall_requests"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["service"] == "certificate revocation"),
        "{report:#}"
    );

    // Connected under another name (localhost): the mismatch is named.
    let url = format!(
        "postgres://postgres@localhost:{}/postgres?sslmode=require&revocation=off",
        server.port
    );
    let (_, report) = check(
        &[
            "--timeout",
            "3s",
            "--password-file",
            pw.path().to_str().unwrap(),
            &url,
        ],
        &[],
    );
    let login = hop(&report, "login");
    assert_eq!(
        login["data"]["certificate"]["name_matches"], false,
        "{login:#}"
    );
    assert!(
        login["detail"]
            .as_str()
            .unwrap()
            .contains("issued for 127.0.0.1; connected as localhost"),
        "{login:#}"
    );
}
