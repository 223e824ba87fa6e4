//! End to end: the real binary against the scripted TDS peer on 127.0.0.1. Each case asserts the
//! cause on the hop where it belongs, from `-f json`.
//!
//! Most scenarios have the same shape (a peer script, a target URL, a password, then expected
//! hops, causes, data and text fragments), so they are one table, [`CASES`]: a new scenario is
//! one entry. Invocations of another shape (a config file, a password in the URL, a terminal)
//! stay ordinary tests below it.

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

// ---------------------------------------------------------------------------------------------
// The table

/// Where the peer's script comes from; `None` in a case: no peer, a closed port.
type Script = fn() -> PeerConfig;

/// The password a case gives (`--password-file`), or none at all.
#[derive(Clone, Copy)]
enum Password {
    /// The peer's own password.
    Peer,
    Literal(&'static str),
    /// No password source (and no terminal): dtcprobe cannot ask for one.
    Absent,
}

/// An expectation on one `data` value of a hop, found by JSON pointer (`/error/number`).
#[derive(Clone, Copy, Debug)]
enum Data {
    Str(&'static str),
    Int(i64),
    Null,
    Bool(bool),
    /// Any number (zero included).
    Number,
    /// A number above zero.
    Positive,
}

/// An expectation on the SQL batches the peer received.
#[derive(Clone, Copy)]
enum Batch {
    AnyEquals(&'static str),
    AnyStartsWith(&'static str),
    AnyContains(&'static str),
    /// No batch contains this (compared in upper case).
    NoneContains(&'static str),
}

struct Case {
    name: &'static str,
    script: Option<Script>,
    user: &'static str,
    db: &'static str,
    query: &'static str,
    password: Password,
    timeout: &'static str,
    /// The exit code, where the case pins it.
    code: Option<i32>,
    /// (hop, status, cause) of the hops the case is about.
    hops: &'static [(&'static str, &'static str, Option<&'static str>)],
    /// The whole hop list, (hop, status) in order, where the case pins it.
    all_hops: Option<&'static [(&'static str, &'static str)]>,
    /// (hop, JSON pointer into its `data`, expected).
    data: &'static [(&'static str, &'static str, Data)],
    /// (hop, fragment its `detail` contains).
    detail: &'static [(&'static str, &'static str)],
    /// (hop, fragment its `hint` contains).
    hint: &'static [(&'static str, &'static str)],
    batches: &'static [Batch],
    events: &'static [Event],
    /// The run ends within this (the hop timeouts bound it).
    within: Option<Duration>,
    /// The password must appear in neither stdout nor stderr.
    hides_password: bool,
    /// dtcprobe runs with the peer's certificate as its trust store (SSL_CERT_FILE).
    trust_peer_cert: bool,
}

/// The fields most cases leave alone; `..BASE` in the table.
const BASE: Case = Case {
    name: "",
    script: Some(PeerConfig::default),
    user: "probe",
    db: "app",
    query: "trust_server_certificate=true",
    password: Password::Peer,
    timeout: "2s",
    code: None,
    hops: &[],
    all_hops: None,
    data: &[],
    detail: &[],
    hint: &[],
    batches: &[],
    events: &[],
    within: None,
    hides_password: false,
    trust_peer_cert: false,
};

/// The default peer, misbehaving as `behaviour` says (a row's `script`).
fn behaving(behaviour: Behaviour) -> PeerConfig {
    PeerConfig {
        behaviour,
        ..Default::default()
    }
}

fn http_garbage() -> PeerConfig {
    behaving(Behaviour::Garbage(
        b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec(),
    ))
}

/// A reply packet header followed by bytes that are no PRELOGIN option list.
fn tds_framed_junk() -> PeerConfig {
    let mut junk = vec![0x04, 0x01, 0x00, 0x20, 0x00, 0x00, 0x01, 0x00];
    junk.extend((0u8..24).map(|i| i.wrapping_mul(37) ^ 0x5A));
    behaving(Behaviour::Garbage(junk))
}

const CASES: &[Case] = &[
    Case {
        name: "a server that stalls after its TLS hello: the timeout names the phase",
        script: Some(|| behaving(Behaviour::StallAfterTlsHello)),
        query: "tx=none&trust_server_certificate=true",
        timeout: "1s",
        code: Some(1),
        hops: &[("login", "fail", Some("timeout"))],
        data: &[
            ("login", "/stalled_in", Data::Str("tls")),
            ("login", "/phases_ms/prelogin", Data::Positive),
            ("login", "/phases_ms/tls", Data::Positive),
        ],
        detail: &[("login", "stalled after the server's TLS hello")],
        hint: &[("login", "MTU"), ("login", "revocation")],
        within: Some(Duration::from_secs(8)),
        ..BASE
    },
    Case {
        name: "a server that never answers LOGIN7: the timeout names the phase",
        script: Some(|| behaving(Behaviour::SilentAfterLogin7)),
        query: "tx=none&trust_server_certificate=true",
        timeout: "1s",
        code: Some(1),
        hops: &[("login", "fail", Some("timeout"))],
        data: &[
            ("login", "/stalled_in", Data::Str("login7")),
            ("login", "/phases_ms/tls", Data::Positive),
            ("login", "/phases_ms/login7", Data::Positive),
        ],
        detail: &[("login", "stalled after LOGIN7")],
        hint: &[("login", "domain controller")],
        within: Some(Duration::from_secs(8)),
        ..BASE
    },
    Case {
        name: "credential-free login: the server's 18456 for a random user is a pass",
        user: "",
        password: Password::Absent,
        code: Some(0),
        all_hops: Some(&[
            ("resolve", "pass"),
            ("route", "pass"),
            ("tcp", "pass"),
            ("login", "pass"),
            // The peer's self-signed certificate names no CRL or OCSP URL.
            ("revocation", "skip"),
        ]),
        data: &[
            ("login", "/credential_free", Data::Bool(true)),
            ("login", "/error/number", Data::Int(18456)),
            ("login", "/error/state", Data::Int(1)),
            ("login", "/encryption", Data::Str("full")),
        ],
        detail: &[
            ("login", "18456 state 1"),
            ("login", "dtcprobe-probe-"),
            ("login", "error log"),
        ],
        events: &[Event::TlsHandshake { strict: false }],
        ..BASE
    },
    Case {
        name: "credential-free login shows the server's 18456 state",
        script: Some(|| PeerConfig {
            login_failed_state: 8,
            ..Default::default()
        }),
        user: "",
        db: "",
        query: "login=probe&encrypt=strict",
        password: Password::Absent,
        trust_peer_cert: true,
        code: Some(0),
        hops: &[("login", "pass", None)],
        data: &[
            ("login", "/error/state", Data::Int(8)),
            ("login", "/encryption", Data::Str("strict")),
        ],
        events: &[Event::TlsHandshake { strict: true }],
        ..BASE
    },
    Case {
        name: "credential-free login: any other answer is judged as for any login",
        script: Some(|| behaving(Behaviour::CloseMidLogin)),
        user: "",
        password: Password::Absent,
        code: Some(1),
        hops: &[("login", "fail", Some("reset"))],
        data: &[("login", "/credential_free", Data::Bool(true))],
        ..BASE
    },
    Case {
        name: "login and local transaction pass with full encryption",
        query: "tx=local&trust_server_certificate=true",
        code: Some(0),
        all_hops: Some(&[
            ("resolve", "pass"),
            ("route", "pass"),
            ("tcp", "pass"),
            ("login", "pass"),
            // The peer's self-signed certificate names no CRL or OCSP URL.
            ("revocation", "skip"),
            ("tx_local", "pass"),
        ]),
        data: &[
            ("login", "/server_version", Data::Str("16.0.1000.1")),
            ("login", "/prelogin_version", Data::Str("16.0.1000")),
            ("login", "/tds_version", Data::Str("7.4")),
            ("login", "/encryption", Data::Str("full")),
            ("login", "/server_encryption", Data::Str("on")),
            ("login", "/database", Data::Str("app")),
            ("login", "/certificate/self_signed", Data::Bool(true)),
            ("login", "/certificate/name_matches", Data::Bool(true)),
            ("login", "/login_seconds", Data::Positive),
            // Where the login's time went, phase by phase (TDS 7.4 with TLS 1.2 inside TDS).
            ("login", "/phases_ms/tcp", Data::Positive),
            ("login", "/phases_ms/prelogin", Data::Positive),
            ("login", "/phases_ms/tls", Data::Positive),
            ("login", "/phases_ms/login7", Data::Positive),
            // The answer often arrives in one read: its phase may round to 0.
            ("login", "/phases_ms/loginack", Data::Number),
        ],
        hides_password: true,
        // The peer saw a TLS handshake inside TDS, the work, and a rollback; never a commit.
        events: &[Event::TlsHandshake { strict: false }],
        batches: &[
            Batch::AnyEquals("BEGIN TRANSACTION"),
            Batch::AnyStartsWith("INSERT INTO #dtcprobe"),
            Batch::AnyEquals("ROLLBACK TRANSACTION"),
            Batch::NoneContains("COMMIT"),
        ],
        ..BASE
    },
    Case {
        name: "login-only encryption reads the TDS version from the clear LOGINACK",
        query: "tx=none&encrypt=off&trust_server_certificate=true",
        code: Some(0),
        data: &[
            ("login", "/encryption", Data::Str("login_only")),
            ("login", "/tds_version", Data::Str("7.4")),
        ],
        hint: &[("login", "only the login packet")],
        // tx=none plans no transaction hop.
        all_hops: Some(&[
            ("resolve", "pass"),
            ("route", "pass"),
            ("tcp", "pass"),
            ("login", "pass"),
            // The peer's self-signed certificate names no CRL or OCSP URL.
            ("revocation", "skip"),
        ]),
        ..BASE
    },
    Case {
        name: "wrong password is auth_failed with 18456",
        password: Password::Literal("not-the-password"),
        code: Some(1),
        hops: &[
            ("tcp", "pass", None),
            ("login", "fail", Some("auth_failed")),
            ("tx_local", "skip", None),
        ],
        data: &[("login", "/error/number", Data::Int(18456))],
        hint: &[("login", "state 1")],
        hides_password: true,
        ..BASE
    },
    Case {
        name: "unknown user is auth_failed too",
        user: "nobody",
        hops: &[("login", "fail", Some("auth_failed"))],
        ..BASE
    },
    Case {
        name: "unknown database is db_unavailable with 4060",
        db: "nosuchdb",
        code: Some(1),
        hops: &[("login", "fail", Some("db_unavailable"))],
        data: &[("login", "/error/number", Data::Int(4060))],
        ..BASE
    },
    Case {
        name: "MSDTC unavailable fails tx_distributed only",
        script: Some(|| PeerConfig {
            dtc_available: false,
            ..Default::default()
        }),
        query: "tx=distributed&trust_server_certificate=true&reverse_dns=false",
        code: Some(1),
        hops: &[
            ("login", "pass", None),
            ("tx_local", "pass", None),
            ("tx_distributed", "fail", Some("dtc_unavailable")),
        ],
        data: &[
            ("tx_distributed", "/error/number", Data::Int(8501)),
            (
                "tx_distributed",
                "/failed_step",
                Data::Str("begin distributed transaction"),
            ),
        ],
        hint: &[
            ("tx_distributed", "MSDTC"),
            ("tx_distributed", "Network DTC Access"),
            ("tx_distributed", "135"),
            // What it proves: the SQL host's MSDTC; the client-zone path is tx=enlist's.
            (
                "tx_distributed",
                "the SQL Server host's MSDTC, not this host's",
            ),
            ("tx_distributed", "tx=enlist"),
        ],
        ..BASE
    },
    Case {
        name: "distributed transaction passes when MSDTC is there",
        script: Some(|| {
            // Hop dtc_name connects to TCP 135 of the DTC host the peer names (localhost).
            crate::support::netns::loopback_endpoint_mapper();
            PeerConfig {
                linked_servers: vec![("L2".into(), true)],
                ..Default::default()
            }
        }),
        query: "tx=distributed&trust_server_certificate=true&reverse_dns=false&linked_server=L2",
        code: Some(0),
        hops: &[("tx_distributed", "pass", None), ("dtc_name", "pass", None)],
        detail: &[
            (
                "tx_distributed",
                "the SQL Server host's MSDTC and its path to linked server L2's MSDTC",
            ),
            ("tx_distributed", "this host's MSDTC took no part"),
        ],
        hint: &[("tx_distributed", "run the check with tx=enlist")],
        batches: &[
            Batch::AnyEquals("BEGIN DISTRIBUTED TRANSACTION"),
            Batch::AnyContains("OPENQUERY([L2]"),
        ],
        ..BASE
    },
    Case {
        name: "linked server without DTC is 7391",
        script: Some(|| PeerConfig {
            linked_servers: vec![("L2".into(), false)],
            ..Default::default()
        }),
        query: "tx=distributed&trust_server_certificate=true&reverse_dns=false&linked_server=L2",
        hops: &[("tx_distributed", "fail", Some("dtc_unavailable"))],
        data: &[("tx_distributed", "/error/number", Data::Int(7391))],
        ..BASE
    },
    Case {
        name: "untrusted certificate is tls_error",
        query: "encrypt=on",
        code: Some(1),
        hops: &[("login", "fail", Some("tls_error"))],
        hint: &[("login", "trust_server_certificate")],
        ..BASE
    },
    Case {
        name: "server forcing encryption upgrades an off client",
        script: Some(|| PeerConfig {
            encryption: ServerEncryption::Required,
            ..Default::default()
        }),
        query: "encrypt=off&trust_server_certificate=true",
        code: Some(0),
        data: &[
            ("login", "/server_encryption", Data::Str("required")),
            ("login", "/encryption", Data::Str("full")),
        ],
        ..BASE
    },
    Case {
        name: "server requiring TLS rejects a client without TLS",
        script: Some(|| PeerConfig {
            encryption: ServerEncryption::Required,
            ..Default::default()
        }),
        query: "encrypt=none",
        code: Some(1),
        hops: &[("login", "fail", Some("tls_error"))],
        hint: &[("login", "requires encryption")],
        ..BASE
    },
    Case {
        name: "server without TLS declines an encrypting client",
        script: Some(|| PeerConfig {
            encryption: ServerEncryption::NotSupported,
            ..Default::default()
        }),
        query: "encrypt=on",
        hops: &[("login", "fail", Some("tls_error"))],
        ..BASE
    },
    Case {
        name: "server without TLS works for a client without TLS, flagged in the hint",
        script: Some(|| PeerConfig {
            encryption: ServerEncryption::NotSupported,
            ..Default::default()
        }),
        query: "encrypt=none&tx=none",
        hops: &[("login", "pass", None)],
        data: &[("login", "/encryption", Data::Str("none"))],
        hint: &[("login", "readable")],
        ..BASE
    },
    Case {
        name: "strict TDS 8 ignores trust_server_certificate as Microsoft's drivers do",
        query: "encrypt=strict&trust_server_certificate=true",
        code: Some(1),
        hops: &[("login", "fail", Some("tls_error"))],
        hint: &[("login", "ignores trust_server_certificate")],
        ..BASE
    },
    Case {
        name: "strict TDS 8 runs TLS first with a certificate this machine trusts",
        query: "encrypt=strict",
        trust_peer_cert: true,
        code: Some(0),
        data: &[("login", "/encryption", Data::Str("strict"))],
        events: &[Event::TlsHandshake { strict: true }],
        ..BASE
    },
    Case {
        name: "a reset during the TLS handshake is tls_error with the Schannel hint",
        script: Some(|| PeerConfig {
            reset_tls_handshake: true,
            ..Default::default()
        }),
        query: "tx=none&encrypt=on&trust_server_certificate=true",
        code: Some(1),
        hops: &[("login", "fail", Some("tls_error"))],
        hint: &[("login", "Schannel"), ("login", "10054")],
        ..BASE
    },
    Case {
        name: "encrypt=off against a server without TLS logs in unencrypted, as MS-TDS says",
        script: Some(|| PeerConfig {
            encryption: ServerEncryption::NotSupported,
            ..Default::default()
        }),
        query: "encrypt=off&tx=local",
        code: Some(0),
        hops: &[("login", "pass", None), ("tx_local", "pass", None)],
        data: &[
            ("login", "/encryption", Data::Str("none")),
            ("login", "/server_encryption", Data::Str("not_supported")),
        ],
        hint: &[("login", "readable")],
        ..BASE
    },
    Case {
        name: "the provider's message before 7391 is kept in the detail",
        script: Some(|| {
            PeerConfig {
            linked_servers: vec![("L2".into(), false)],
            linked_server_message: Some(
                "The partner transaction manager has disabled its support for remote/network transactions."
                    .into(),
            ),
            ..Default::default()
        }
        }),
        query: "tx=distributed&trust_server_certificate=true&reverse_dns=false&linked_server=L2",
        hops: &[("tx_distributed", "fail", Some("dtc_unavailable"))],
        detail: &[(
            "tx_distributed",
            "has disabled its support for remote/network transactions",
        )],
        ..BASE
    },
    Case {
        name: "18456 with another state names that state's meaning",
        script: Some(|| PeerConfig {
            login_failed_state: 58,
            ..Default::default()
        }),
        password: Password::Literal("wrong"),
        code: Some(1),
        hops: &[("login", "fail", Some("auth_failed"))],
        hint: &[
            ("login", "state 58"),
            ("login", "Windows authentication only"),
        ],
        ..BASE
    },
    Case {
        name: "silent server times out on login within bounds",
        script: Some(|| behaving(Behaviour::SilentAfterAccept)),
        query: "tx=distributed&reverse_dns=false",
        password: Password::Literal("x"),
        timeout: "1s",
        code: Some(1),
        hops: &[
            ("tcp", "pass", None),
            ("login", "fail", Some("timeout")),
            ("tx_local", "skip", None),
            ("tx_distributed", "skip", None),
        ],
        detail: &[("login", "not a single byte")],
        // Login gets two hop timeouts; the whole run stays well under 10 s.
        within: Some(Duration::from_secs(10)),
        ..BASE
    },
    Case {
        name: "close during login is reset",
        script: Some(|| behaving(Behaviour::CloseMidLogin)),
        code: Some(1),
        hops: &[("login", "fail", Some("reset"))],
        ..BASE
    },
    Case {
        name: "HTTP server on the port is protocol_error",
        script: Some(http_garbage),
        password: Password::Literal("x"),
        hops: &[("login", "fail", Some("protocol_error"))],
        detail: &[("login", "HTTP/1.1 400")],
        ..BASE
    },
    Case {
        name: "TDS-framed junk is protocol_error",
        script: Some(tds_framed_junk),
        password: Password::Literal("x"),
        hops: &[("login", "fail", Some("protocol_error"))],
        ..BASE
    },
    Case {
        name: "closed port fails tcp and skips login",
        script: None,
        query: "",
        password: Password::Literal("x"),
        hops: &[("tcp", "fail", Some("refused")), ("login", "skip", None)],
        ..BASE
    },
    Case {
        name: "no password source without a terminal is a config fault",
        password: Password::Absent,
        // A tool fault, not a failure.
        code: Some(3),
        hops: &[("tcp", "pass", None), ("login", "fail", Some("config"))],
        detail: &[("login", "--password-file")],
        ..BASE
    },
    Case {
        name: "a server that loses the row fails tx_local",
        script: Some(|| PeerConfig {
            lose_rows: true,
            ..Default::default()
        }),
        code: Some(1),
        hops: &[
            ("login", "pass", None),
            ("tx_local", "fail", Some("sql_error")),
        ],
        data: &[("tx_local", "/failed_step", Data::Str("read back"))],
        detail: &[("tx_local", "read back None")],
        ..BASE
    },
    Case {
        name: "server hanging after LOGINACK times out login within bounds",
        script: Some(|| behaving(Behaviour::SilentAfterLogin)),
        query: "tx=distributed&reverse_dns=false&trust_server_certificate=true&encrypt=off",
        timeout: "1s",
        code: Some(1),
        // The version query right after LOGINACK gets no answer: the login hop says so.
        hops: &[
            ("login", "fail", Some("timeout")),
            ("tx_local", "skip", None),
            ("tx_distributed", "skip", None),
        ],
        detail: &[("login", "LOGINACK received")],
        hint: &[("login", "does not answer queries")],
        within: Some(Duration::from_secs(10)),
        ..BASE
    },
    Case {
        // A probe login without VIEW SERVER STATE: the TDS version query fails with error 300 (as
        // on a real server), the hop still passes, and the same connection then runs the
        // transaction.
        name: "low-privilege login passes without the TDS version",
        script: Some(|| PeerConfig {
            deny_server_state: true,
            ..Default::default()
        }),
        code: Some(0),
        data: &[
            ("login", "/tds_version", Data::Null),
            ("login", "/server_version", Data::Str("16.0.1000.1")),
        ],
        hops: &[("tx_local", "pass", None)],
        batches: &[Batch::AnyContains("dm_exec_connections")],
        ..BASE
    },
];

/// A port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The certificate as a PEM file (a trust store holding only it).
pub(crate) fn pem_file(der: &[u8]) -> tempfile::NamedTempFile {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::new();
    for chunk in der.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (*b as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                b64.push('=');
            }
        }
    }
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap());
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    let mut f = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut f, pem.as_bytes()).unwrap();
    f
}

/// Runs one case; panics (naming nothing: the caller adds the case name) on the first
/// expectation that does not hold.
fn run_case(case: &Case) {
    let config = case.script.map(|script| script());
    let peer_password = config.as_ref().map(|c| c.password.clone());
    let peer = config.map(TdsPeer::start);
    let port = peer.as_ref().map_or_else(closed_port, TdsPeer::port);
    let query = if case.query.is_empty() {
        String::new()
    } else {
        format!("?{}", case.query)
    };
    // An empty user: the credential-free login (no user in the URL).
    let user = if case.user.is_empty() {
        String::new()
    } else {
        format!("{}@", case.user)
    };
    let target = format!("mssql://{user}127.0.0.1:{port}/{}{query}", case.db);
    let password = match case.password {
        Password::Peer => peer_password.clone(),
        Password::Literal(p) => Some(p.to_string()),
        Password::Absent => None,
    };
    let file = password.as_deref().map(password_file);
    let mut args = vec![target.as_str()];
    if let Some(f) = &file {
        args.extend(["--password-file", f.path().to_str().unwrap()]);
    }
    args.extend(["--timeout", case.timeout]);
    let ca = match (&peer, case.trust_peer_cert) {
        (Some(p), true) => Some(pem_file(&p.cert_der)),
        _ => None,
    };
    let env: Vec<(&str, &str)> = ca
        .iter()
        .map(|f| ("SSL_CERT_FILE", f.path().to_str().unwrap()))
        .collect();
    let run = dtcprobe(&args, &env);

    if let Some(code) = case.code {
        assert_eq!(run.code, code, "exit code\n{}\n{}", run.stdout, run.stderr);
    }
    if let Some(all) = case.all_hops {
        let want: Vec<(String, String)> = all
            .iter()
            .map(|(h, s)| (h.to_string(), s.to_string()))
            .collect();
        assert_eq!(statuses(&run), want, "hops");
    }
    for (name, status, cause) in case.hops {
        assert_hop(&run, name, status, *cause);
    }
    for (name, pointer, want) in case.data {
        let h = hop(&run, name);
        let got = h["data"].pointer(pointer).unwrap_or(&Value::Null);
        let ok = match want {
            Data::Str(s) => got == s,
            Data::Int(n) => got.as_i64() == Some(*n),
            Data::Null => got.is_null(),
            Data::Bool(b) => got.as_bool() == Some(*b),
            Data::Number => got.as_f64().is_some_and(|x| x >= 0.0),
            Data::Positive => got.as_f64().is_some_and(|x| x > 0.0),
        };
        assert!(
            ok,
            "{name} data{pointer} is {got}, expected {want:?}\n{h:#}"
        );
    }
    for (field, expectations) in [("detail", case.detail), ("hint", case.hint)] {
        for (name, fragment) in expectations {
            let h = hop(&run, name);
            let text = h[field].as_str().unwrap_or_default();
            assert!(
                text.contains(fragment),
                "{name} {field} lacks `{fragment}`: {h:#}"
            );
        }
    }
    if let Some(peer) = &peer {
        let events = peer.events();
        for event in case.events {
            assert!(events.contains(event), "no {event:?} in {events:?}");
        }
        let batches = peer.batches();
        for b in case.batches {
            let ok = match b {
                Batch::AnyEquals(s) => batches.iter().any(|x| x == s),
                Batch::AnyStartsWith(s) => batches.iter().any(|x| x.starts_with(s)),
                Batch::AnyContains(s) => batches.iter().any(|x| x.contains(s)),
                Batch::NoneContains(s) => {
                    !batches.iter().any(|x| x.to_ascii_uppercase().contains(s))
                }
            };
            let what = match b {
                Batch::AnyEquals(s) => format!("a batch equal to `{s}`"),
                Batch::AnyStartsWith(s) => format!("a batch starting with `{s}`"),
                Batch::AnyContains(s) => format!("a batch containing `{s}`"),
                Batch::NoneContains(s) => format!("no batch containing `{s}`"),
            };
            assert!(ok, "expected {what}: {batches:?}");
        }
    }
    if let Some(limit) = case.within {
        assert!(run.elapsed < limit, "took {:?}", run.elapsed);
    }
    if case.hides_password {
        never_shows(
            &run,
            password
                .as_deref()
                .expect("a case that hides a password gives one"),
        );
    }
}

/// Every case, four at a time (each starts its own peer on its own port); all failures are
/// reported together, each under its case's name.
#[test]
fn mssql_login_cases() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    let next = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(case) = CASES.get(i) else { break };
                let outcome = std::panic::catch_unwind(|| run_case(case));
                if let Err(panic) = outcome {
                    let msg = panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    failures
                        .lock()
                        .unwrap()
                        .push(format!("case `{}`: {msg}", case.name));
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n\n")
    );
}

// ---------------------------------------------------------------------------------------------
// Other invocations

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

/// A routing ENVCHANGE (Azure SQL redirect policy) is followed to the named server, which then
/// carries the login and the transaction; the report names the redirect target.
#[test]
fn redirect_is_followed_not_a_protocol_error() {
    let target = TdsPeer::start(PeerConfig::default());
    let gateway = TdsPeer::start(PeerConfig {
        redirect: Some(("127.0.0.1".into(), target.port())),
        ..Default::default()
    });
    let file = password_file(&PeerConfig::default().password);
    let url = format!(
        "mssql://probe@127.0.0.1:{}/app?tx=local&trust_server_certificate=true",
        gateway.port()
    );
    let run = dtcprobe(
        &[
            &url,
            "--password-file",
            file.path().to_str().unwrap(),
            "--timeout",
            "2s",
        ],
        &[],
    );
    assert_hop(&run, "login", "pass", None);
    assert_hop(&run, "tx_local", "pass", None);
    let login = hop(&run, "login");
    let to = format!("127.0.0.1:{}", target.port());
    assert_eq!(login["data"]["redirected_to"], to.as_str(), "{login:#}");
    assert!(
        login["detail"].as_str().unwrap().contains("redirected"),
        "{login:#}"
    );
    // The work ran on the server redirected to, not on the gateway.
    assert!(target.batches().iter().any(|b| b == "BEGIN TRANSACTION"));
    assert!(!gateway.batches().iter().any(|b| b == "BEGIN TRANSACTION"));
}

/// The credential-free login sends a random user the peer has never heard of, asks for no
/// password (no terminal, no --password-file here) and leaves one refused login on the server.
#[test]
fn credential_free_login_sends_a_random_user_and_no_password() {
    let peer = TdsPeer::start(PeerConfig::default());
    let target = format!(
        "mssql://127.0.0.1:{}/?trust_server_certificate=true",
        peer.port()
    );
    let run = dtcprobe(&[&target, "--timeout", "2s"], &[]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let logins: Vec<(String, bool)> = peer.logins();
    assert_eq!(logins.len(), 1, "{logins:?}");
    let (user, accepted) = &logins[0];
    assert!(
        user.starts_with("dtcprobe-probe-") && !accepted,
        "{logins:?}"
    );
    assert_eq!(hop(&run, "login")["data"]["probe_user"], user.as_str());
    // A second run picks another name.
    let again = dtcprobe(&[&target, "--timeout", "2s"], &[]);
    assert_ne!(hop(&again, "login")["data"]["probe_user"], user.as_str());
}
