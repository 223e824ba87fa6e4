//! Hop `tx_enlist` against the TDS test peer, with a scripted MSDTC for "this host".
//!
//! The hop's run function is called through the library API (`run_enlist`) with the scripted
//! MSDTC: no test-only switch exists in the binary. What is real here: dtcprobe's own TDS
//! session (PRELOGIN, TLS inside PRELOGIN, LOGIN7, transaction manager requests, batches with the
//! enlisted descriptor) against the peer's TDS; the peer checks the cookie against the scripted
//! MSDTC's transactions and ends the session's transaction when that MSDTC aborts. What is not:
//! the COM calls into a real MSDTC, and SQL Server's own MSDTC; those are confirmed only by
//! `real_windows_msdtc_enlists` on a Windows host (docs/mssql.md).

use std::sync::Arc;
use std::time::Duration;

use dtcprobe::hops::mssql::enlist::dtc::{self, LocalDtc};
use dtcprobe::hops::mssql::enlist::run_enlist;
use dtcprobe::hops::mssql::{Auth, MssqlTarget};
use dtcprobe::model::{Cause, HopResult, Status};
use dtcprobe::secret::Secret;
use serde_json::Value;

use crate::support::tds_peer::ntlm::{Outcome as NtlmOutcome, WindowsAccount};
use crate::support::tds_peer::tm::{Ending, ScriptedMsdtc, ScriptedState, TmConfig, TmEvent};
use crate::support::tds_peer::{Event, PeerConfig, ServerEncryption, TdsPeer};
use crate::support::{parse_report, run_bin};

const MARKER: &str = "dtcprobe-enlist-test";

fn peer_with(msdtc: &ScriptedMsdtc, tm: TmConfig) -> (TdsPeer, TmConfig) {
    let tm = TmConfig {
        client_msdtc: Some(msdtc.clone()),
        ..tm
    };
    let peer = TdsPeer::start(PeerConfig {
        tm: tm.clone(),
        ..PeerConfig::default()
    });
    (peer, tm)
}

fn target(peer: &TdsPeer, query: &str) -> MssqlTarget {
    MssqlTarget::from_url(&format!(
        "mssql://probe@127.0.0.1:{}/app?tx=enlist&{query}",
        peer.port()
    ))
    .unwrap()
}

async fn enlist(peer: &TdsPeer, query: &str, password: &str, dtc: Arc<dyn LocalDtc>) -> HopResult {
    run_enlist(
        &target(peer, query),
        peer.addr,
        Some(Secret::new(password)),
        dtc,
        MARKER,
        Duration::from_secs(10),
    )
    .await
}

const GOOD: &str = "Pr0be-pass!";

/// The usual run: the peer's self-signed certificate trusted, the right password.
async fn enlist_trusting(peer: &TdsPeer, msdtc: &ScriptedMsdtc) -> HopResult {
    enlist(
        peer,
        "trust_server_certificate=true",
        GOOD,
        msdtc.as_local_dtc(),
    )
    .await
}

fn failed_step(r: &HopResult) -> &str {
    r.data["failed_step"].as_str().unwrap_or("")
}

/// The hop failed with `cause` at `step` (`case` names the case in the message).
fn assert_fails_at(r: &HopResult, cause: Cause, step: &str, case: &str) {
    assert_eq!(
        (r.status, r.cause, failed_step(r)),
        (Status::Fail, Some(cause), step),
        "{case}: {r:#?}"
    );
}

/// `dtcprobe check --timeout TIMEOUT --password-file F URL -f FORMAT` through the binary, the
/// file holding `password`.
fn check_through_binary(
    url: &str,
    password: &str,
    timeout: &str,
    format: &str,
) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, format!("{password}\n")).unwrap();
    run_bin(&[
        "check",
        "--timeout",
        timeout,
        "--password-file",
        pw.to_str().unwrap(),
        url,
        "-f",
        format,
    ])
}

/// The proofs of a passing enlistment: the hop's data, this host's MSDTC calls, and the peer's
/// record (the three statements carried the enlisted descriptor, the abort discarded the row,
/// the hop looked for the #temp table afterwards and got 208).
fn assert_enlisted_and_rolled_back(
    query: &str,
    encryption: &str,
    r: &HopResult,
    msdtc: &ScriptedMsdtc,
    tm: &TmConfig,
    peer: &TdsPeer,
) {
    assert_ended_and_rolled_back(query, encryption, r, msdtc, tm, peer, "envchange_17");
}

/// [`assert_enlisted_and_rolled_back`] for any of the endings MS-TDS allows, `ended_by` naming
/// how the server said it; also: the unenlist named the descriptor the session was still bound
/// to (the enlisted one, or 0 after an ENVCHANGE 17 released it), and no request named a
/// descriptor the server could not resume.
fn assert_ended_and_rolled_back(
    query: &str,
    encryption: &str,
    r: &HopResult,
    msdtc: &ScriptedMsdtc,
    tm: &TmConfig,
    peer: &TdsPeer,
    ended_by: &str,
) {
    {
        assert_eq!(r.status, Status::Pass, "{query}: {r:#?}");
        // `-- --nocapture` shows where the time goes (docs/mssql.md quotes a run).
        eprintln!(
            "tx_enlist {encryption}: {:.3} ms, phases {}",
            r.duration_seconds.as_secs_f64() * 1e3,
            r.data["phase_seconds"]
        );
        assert_eq!(r.data["encryption"], encryption);
        for key in [
            "local_tx_id",
            "dtc_address_len",
            "dtc_address_prefix",
            "cookie_len",
            "server_descriptor",
            "ended_by",
            "phase_seconds",
        ] {
            assert!(!r.data[key].is_null(), "{query}: no {key} in {r:#?}");
        }
        assert_eq!(r.data["ended_by"], ended_by, "{query}: {r:#?}");
        assert!(r.data.get("unenlist_error").is_none(), "{query}: {r:#?}");
        assert_eq!(r.data["statements"], 3);
        // This host's MSDTC: begun, exported, aborted; nothing else.
        assert_eq!(msdtc.calls(), ["begin", "export", "abort"]);
        assert_eq!(msdtc.states(), [ScriptedState::Aborted]);

        let events = tm.events();
        let descriptor = events
            .iter()
            .find_map(|e| match e {
                TmEvent::Enlisted { descriptor } => Some(*descriptor),
                _ => None,
            })
            .unwrap_or_else(|| panic!("never enlisted: {events:#?}"));
        assert_eq!(
            r.data["server_descriptor"],
            format!("0x{descriptor:016x}").as_str()
        );
        // The three statements ran inside the enlisted transaction, with its descriptor.
        let inside: Vec<&str> = events
            .iter()
            .filter_map(|e| match e {
                TmEvent::BatchInTransaction { descriptor: d, sql } if *d == descriptor => {
                    Some(sql.as_str())
                }
                _ => None,
            })
            .collect();
        assert_eq!(inside.len(), 3, "{events:#?}");
        assert!(inside[1].contains(MARKER));
        // The abort ended it on the server, discarding the inserted row; nothing persisted.
        assert!(
            events.contains(&TmEvent::Ended {
                descriptor,
                rows_discarded: 1
            }),
            "{events:#?}"
        );
        let unenlisted_in = if ended_by == "envchange_17" {
            0
        } else {
            descriptor
        };
        assert!(
            events.contains(&TmEvent::Unenlisted {
                descriptor: unenlisted_in
            }),
            "{query}: {events:#?}"
        );
        assert!(
            !events
                .iter()
                .any(|e| matches!(e, TmEvent::WrongDescriptor { .. })),
            "{query}: {events:#?}"
        );
        assert!(
            peer.batches()
                .iter()
                .any(|b| b == "SELECT id, note FROM #dtcprobe"),
            "the hop did not look for the rows after the abort"
        );
        let secret_free = serde_json::to_string(&r).unwrap();
        assert!(!secret_free.contains(GOOD));
    }
}

#[tokio::test]
async fn enlisted_transaction_runs_and_is_rolled_back_by_the_local_abort() {
    for (query, encryption) in [
        ("encrypt=on&trust_server_certificate=true", "on"),
        ("encrypt=off&trust_server_certificate=true", "login_only"),
    ] {
        let msdtc = ScriptedMsdtc::new();
        let (peer, tm) = peer_with(&msdtc, TmConfig::default());
        let r = enlist(&peer, query, GOOD, msdtc.as_local_dtc()).await;
        assert_enlisted_and_rolled_back(query, encryption, &r, &msdtc, &tm, &peer);
    }
}

/// Every ending MS-TDS allows after this host's abort passes, each against a peer that refuses
/// (3971) any request not naming the descriptor the session is still bound to: ENVCHANGE 17
/// (bound sessions only), error 8525 alone, ENVCHANGE 10 (after which SqlClient keeps naming
/// the retained descriptor); and the unenlist answered with ENVCHANGE 12 or a plain DONE.
#[tokio::test]
async fn every_ending_ms_tds_allows_passes_in_the_bound_descriptor() {
    for ending in Ending::ALL {
        for unenlist_defects in [true, false] {
            let case = format!("{ending:?}, unenlist_defects={unenlist_defects}");
            let msdtc = ScriptedMsdtc::new();
            let (peer, tm) = peer_with(
                &msdtc,
                TmConfig {
                    ending,
                    unenlist_defects,
                    strict_descriptor: true,
                    ..TmConfig::default()
                },
            );
            let r = enlist_trusting(&peer, &msdtc).await;
            let ended_by = match ending {
                Ending::Envchange17 => "envchange_17",
                Ending::Error8525 => "error_8525",
                Ending::Rollback10 => "envchange_10",
            };
            assert_ended_and_rolled_back(&case, "on", &r, &msdtc, &tm, &peer, ended_by);
        }
    }
}

/// XACT_E_ALREADYINPROGRESS from Export is MSDTC still busy with the transaction: tried again
/// (as System.Transactions does, up to 100 x 50 ms), so three busy answers still pass; a busy
/// answer that never ends fails at the export, naming the HRESULT, after the retries.
#[tokio::test]
async fn export_already_in_progress_is_retried_as_system_transactions_does() {
    const BUSY: u32 = dtc::XACT_E_ALREADYINPROGRESS;
    let msdtc = ScriptedMsdtc::new();
    msdtc.fail_export_times(BUSY, 3);
    let (peer, tm) = peer_with(&msdtc, TmConfig::default());
    let r = enlist_trusting(&peer, &msdtc).await;
    assert_eq!(r.status, Status::Pass, "{r:#?}");
    let exports = msdtc.calls().iter().filter(|c| *c == "export").count();
    assert_eq!(exports, 4, "{:?}", msdtc.calls());
    assert!(tm
        .events()
        .iter()
        .any(|e| matches!(e, TmEvent::Enlisted { .. })));

    let msdtc = ScriptedMsdtc::new();
    msdtc.fail_export_times(BUSY, u32::MAX);
    let (peer, _) = peer_with(&msdtc, TmConfig::default());
    let started = std::time::Instant::now();
    let r = enlist_trusting(&peer, &msdtc).await;
    assert_fails_at(&r, Cause::DtcUnavailable, "local export", "always busy");
    assert!(r.detail.contains("XACT_E_ALREADYINPROGRESS"), "{r:#?}");
    let exports = msdtc.calls().iter().filter(|c| *c == "export").count();
    assert_eq!(exports, 101, "one try and 100 retries");
    assert!(
        started.elapsed() >= Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

/// A local MSDTC whose Export succeeds with an empty cookie: the cookie is NOT sent (an empty
/// TM_PROPAGATE_XACT cookie is an unenlist, MS-TDS 2.2.6.9); the hop fails at the export.
#[tokio::test]
async fn an_empty_export_cookie_is_refused_before_it_goes_out_as_an_unenlist() {
    let msdtc = ScriptedMsdtc::new();
    msdtc.export_empty_cookie();
    let (peer, tm) = peer_with(&msdtc, TmConfig::default());
    let r = enlist_trusting(&peer, &msdtc).await;
    assert_fails_at(&r, Cause::DtcUnavailable, "local export", "empty cookie");
    assert!(r.detail.contains("EMPTY cookie"), "{r:#?}");
    assert_eq!(r.data["cookie_len"], 0);
    // The server never saw a propagate; this host's transaction was still aborted.
    let propagates = tm
        .events()
        .iter()
        .filter(|e| {
            matches!(
                e,
                TmEvent::Request {
                    kind: "propagate",
                    ..
                }
            )
        })
        .count();
    assert_eq!(propagates, 0, "{:#?}", tm.events());
    assert_eq!(msdtc.calls(), ["begin", "export", "abort"]);
}

/// The environment variable that makes [`strict_child_process`] run (set by its parent only).
const STRICT_CHILD: &str = "DTCPROBE_TEST_ENLIST_STRICT_CHILD";
const STRICT_CHILD_PASSED: &str = "STRICT-CHILD: tx_enlist passed under encrypt=strict";

/// TDS 8 (`encrypt=strict`): TLS first with ALPN `tds/8.0`, PRELOGIN and LOGIN7 inside it, and
/// the same proofs as the full-TLS pass. Strict validates the certificate against this machine's
/// trust store whatever trust_server_certificate says, so the run needs a trust store holding
/// the peer's certificate: SSL_CERT_FILE, which rustls-native-certs reads on each load, as the
/// `login` hop's strict case sets it for the binary. This process's environment stays as it is
/// (tests/tests.rs): the run happens in a child of this test binary that gets SSL_CERT_FILE in
/// its own environment, naming a file the child fills with its peer's certificate.
#[test]
fn strict_tls_first_enlists_and_rolls_back() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("peer-ca.pem");
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "mssql_enlist::strict_child_process",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("SSL_CERT_FILE", &ca)
        .env_remove("SSL_CERT_DIR")
        .env(STRICT_CHILD, "1")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed:\n{stdout}\n{stderr}");
    // It really ran (an ignored test filtered away, or skipped, would also exit 0).
    assert!(stdout.contains("1 passed"), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(STRICT_CHILD_PASSED) || stderr.contains(STRICT_CHILD_PASSED),
        "{stdout}\n{stderr}"
    );
    eprintln!("{stderr}");
}

/// The child of [`strict_tls_first_enlists_and_rolls_back`]; ignored in ordinary runs.
#[tokio::test]
#[ignore = "run by strict_tls_first_enlists_and_rolls_back in a child process"]
async fn strict_child_process() {
    let (Ok(_), Ok(ca)) = (std::env::var(STRICT_CHILD), std::env::var("SSL_CERT_FILE")) else {
        eprintln!("SKIP: run through strict_tls_first_enlists_and_rolls_back");
        return;
    };
    // trust_server_certificate=true too: ignored under strict, the certificate is validated.
    for query in [
        "encrypt=strict",
        "encrypt=strict&trust_server_certificate=true",
    ] {
        let msdtc = ScriptedMsdtc::new();
        let (peer, tm) = peer_with(&msdtc, TmConfig::default());
        let pem = crate::mssql_login::pem_file(&peer.cert_der);
        std::fs::copy(pem.path(), &ca).unwrap();
        let r = enlist(&peer, query, GOOD, msdtc.as_local_dtc()).await;
        assert_enlisted_and_rolled_back(query, "strict", &r, &msdtc, &tm, &peer);
        let events = peer.events();
        // TLS first, and never TLS inside PRELOGIN packets.
        let handshakes: Vec<&Event> = events
            .iter()
            .filter(|e| matches!(e, Event::TlsHandshake { .. }))
            .collect();
        assert_eq!(
            handshakes,
            [&Event::TlsHandshake { strict: true }],
            "{events:#?}"
        );
        // The PRELOGIN (inside TLS) says NOT_SUP, as Microsoft.Data.SqlClient does in TDS 8.
        assert!(
            events.iter().any(|e| matches!(
                e,
                Event::Prelogin {
                    client_encryption: 2,
                    ..
                }
            )),
            "{events:#?}"
        );
        // After the peer's record is checked: the binary's own login adds to it.
        strict_pass_matches_the_schema(&peer, &r);
    }
    eprintln!("{STRICT_CHILD_PASSED}");
}

/// A report of the binary (which skips tx_enlist on this host) with the strict pass spliced in
/// validates against docs/report.schema.json (`encryption` = `strict`).
fn strict_pass_matches_the_schema(peer: &TdsPeer, hop: &HopResult) {
    let url = format!(
        "mssql://probe@127.0.0.1:{}/app?tx=enlist&encrypt=strict",
        peer.port()
    );
    let (_, out, err) = check_through_binary(&url, GOOD, "2s", "json");
    let mut report = parse_report(&out);
    let value: Value = serde_json::to_value(hop).unwrap();
    let mut spliced = false;
    for h in report["checks"][0]["hops"].as_array_mut().unwrap() {
        if h["hop"] == "tx_enlist" {
            *h = value.clone();
            spliced = true;
        }
    }
    assert!(spliced, "no tx_enlist hop planned: {out}\n{err}");
    crate::report_schema::assert_valid("tx_enlist strict pass", &report);
}

/// Strict ignores trust_server_certificate: a certificate this machine does not trust is the
/// `login` hop's tls_error, with its hint, before any LOGIN7 is sent.
#[tokio::test]
async fn strict_untrusted_certificate_is_the_login_hops_tls_error() {
    let msdtc = ScriptedMsdtc::new();
    let (peer, _) = peer_with(&msdtc, TmConfig::default());
    let r = enlist(
        &peer,
        "encrypt=strict&trust_server_certificate=true",
        GOOD,
        msdtc.as_local_dtc(),
    )
    .await;
    assert_fails_at(&r, Cause::TlsError, "login", "");
    let hint = r.hint.as_deref().unwrap();
    assert!(hint.contains("ignores trust_server_certificate"), "{r:#?}");
    assert!(hint.contains("not trusted"), "{r:#?}");
    assert!(r.detail.contains("UnknownIssuer"), "{r:#?}");
    assert!(r.data.get("encryption").is_none(), "{r:#?}");
    assert_eq!(msdtc.calls(), ["begin", "abort"]);
    assert!(!peer
        .events()
        .iter()
        .any(|e| matches!(e, Event::Login { .. } | Event::Prelogin { .. })));

    // The `login` hop (tiberius) on the same server and settings, through the binary.
    let url = format!(
        "mssql://probe@127.0.0.1:{}/app?tx=none&encrypt=strict&trust_server_certificate=true",
        peer.port()
    );
    let (_, out, err) = check_through_binary(&url, GOOD, "2s", "json");
    let report = parse_report(&out);
    let login = report["checks"][0]["hops"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["hop"] == "login")
        .unwrap_or_else(|| panic!("no login hop: {out}\n{err}"))
        .clone();
    assert_eq!(login["cause"], "tls_error", "{login:#}");
    assert_eq!(
        Some(login["cause"].as_str().unwrap()),
        serde_json::to_value(r.cause).unwrap().as_str()
    );
    assert!(login["hint"]
        .as_str()
        .unwrap()
        .contains("ignores trust_server_certificate"));
}

/// What a server without TDS 8 does to a TLS ClientHello.
#[derive(Clone, Copy, Debug)]
enum Tds7Server {
    /// Reads it as a (bad) PRELOGIN and answers a PRELOGIN reply in the clear.
    AnswersPrelogin,
    /// Hangs up without a byte.
    HangsUp,
}

/// A TDS 7 stand-in on 127.0.0.1 for [`Tds7Server`], serving up to `connections` connections
/// one after the other; returns its address and, per connection, what it received first.
async fn tds7_server(
    how: Tds7Server,
    connections: usize,
) -> (std::net::SocketAddr, tokio::task::JoinHandle<Vec<Vec<u8>>>) {
    use dtcprobe_wire::tds::packet::{packetize, PKT_REPLY};
    use dtcprobe_wire::tds::prelogin::{
        encode_prelogin, encode_version, ENCRYPT_OFF, PL_ENCRYPTION, PL_VERSION,
    };
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let serve = move |mut sock: tokio::net::TcpStream| async move {
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), sock.read(&mut buf))
            .await
            .map(|r| r.unwrap_or(0))
            .unwrap_or(0);
        if n > 0 {
            if let Tds7Server::AnswersPrelogin = how {
                let answer = encode_prelogin(&[
                    (PL_VERSION, &encode_version(15, 0, 2000, 0)),
                    (PL_ENCRYPTION, &[ENCRYPT_OFF]),
                ]);
                let mut id = 0;
                let bytes = packetize(PKT_REPLY, &answer, 4096, &mut id);
                let _ = sock.write_all(&bytes).await;
                // SQL Server then waits for the next packet; the client must not.
                let mut more = [0u8; 4096];
                let _ = tokio::time::timeout(Duration::from_secs(5), sock.read(&mut more)).await;
            }
        }
        buf.truncate(n);
        buf
    };
    let task = tokio::spawn(async move {
        // Concurrently: the binary's `tcp` hop may hold its connection while `login` opens one.
        let mut handles = Vec::new();
        for _ in 0..connections {
            let Ok(Ok((sock, _))) =
                tokio::time::timeout(Duration::from_secs(10), listener.accept()).await
            else {
                break;
            };
            handles.push(tokio::spawn(serve(sock)));
        }
        let mut received = Vec::new();
        for h in handles {
            received.push(h.await.unwrap_or_default());
        }
        received
    });
    (addr, task)
}

/// A server that does not do TLS first: tls_error, the hint naming encrypt=strict and the way
/// out (encrypt=on), and nothing of the login sent.
#[tokio::test]
async fn strict_against_a_server_without_tds8() {
    for (how, detail) in [
        (Tds7Server::AnswersPrelogin, "TDS 7 reply packet"),
        (Tds7Server::HangsUp, "before answering the TLS ClientHello"),
    ] {
        let (addr, server) = tds7_server(how, 1).await;
        let msdtc = ScriptedMsdtc::new();
        let t = MssqlTarget::from_url(&format!(
            "mssql://probe@127.0.0.1:{}/app?tx=enlist&encrypt=strict",
            addr.port()
        ))
        .unwrap();
        let r = run_enlist(
            &t,
            addr,
            Some(Secret::new(GOOD)),
            msdtc.as_local_dtc(),
            MARKER,
            Duration::from_secs(4),
        )
        .await;
        assert_fails_at(&r, Cause::TlsError, "login", &format!("{how:?}"));
        assert!(r.detail.contains(detail), "{how:?}: {r:#?}");
        let hint = r.hint.as_deref().unwrap();
        assert!(
            hint.contains("encrypt=strict") && hint.contains("encrypt=on"),
            "{how:?}: {r:#?}"
        );
        assert!(!hint.contains("ignores trust_server_certificate"), "{r:#?}");
        assert_eq!(msdtc.calls(), ["begin", "abort"]);
        // What the server got first was a TLS ClientHello offering ALPN tds/8.0, not TDS.
        let first = server.await.unwrap().concat();
        assert_eq!(first.first(), Some(&0x16), "{how:?}: {first:02x?}");
        assert!(
            first.windows(7).any(|w| w == b"tds/8.0"),
            "{how:?}: no ALPN tds/8.0 in the ClientHello"
        );

        // The `login` hop (tiberius) against the same kind of server reads it the same way.
        let (addr, server) = tds7_server(how, 4).await;
        let url = format!(
            "mssql://probe@127.0.0.1:{}/app?tx=none&encrypt=strict&trust_server_certificate=true",
            addr.port()
        );
        // Off this runtime's only thread: the stand-in runs on it.
        let (_, out, err) =
            tokio::task::spawn_blocking(move || check_through_binary(&url, GOOD, "2s", "json"))
                .await
                .unwrap();
        server.abort();
        let report = parse_report(&out);
        let login = crate::support::hop(
            &report,
            report["checks"][0]["name"].as_str().unwrap(),
            "login",
        );
        assert_eq!(login["cause"], "tls_error", "{how:?}: {login:#}\n{err}");
        assert!(
            login["detail"].as_str().unwrap().contains(detail),
            "{how:?}: {login:#}"
        );
        assert_eq!(login["hint"].as_str(), r.hint.as_deref(), "{how:?}");
    }
}

#[tokio::test]
async fn unencrypted_server_and_encrypt_none() {
    let msdtc = ScriptedMsdtc::new();
    let tm = TmConfig {
        client_msdtc: Some(msdtc.clone()),
        ..TmConfig::default()
    };
    let peer = TdsPeer::start(PeerConfig {
        encryption: ServerEncryption::NotSupported,
        tm,
        ..PeerConfig::default()
    });
    let r = enlist(&peer, "encrypt=none", GOOD, msdtc.as_local_dtc()).await;
    assert_eq!(r.status, Status::Pass, "{r:#?}");
    assert_eq!(r.data["encryption"], "none");
    // encrypt=on against a server without TLS: refused before LOGIN7, never in clear.
    let r = enlist(&peer, "encrypt=on", GOOD, msdtc.as_local_dtc()).await;
    assert_fails_at(&r, Cause::TlsError, "login", "");
    // Only the first (passing) run sent a LOGIN7.
    let logins = peer
        .events()
        .iter()
        .filter(|e| matches!(e, Event::Login { .. }))
        .count();
    assert_eq!(logins, 1);
}

#[tokio::test]
async fn server_msdtc_unavailable_on_get_address() {
    let msdtc = ScriptedMsdtc::new();
    let (peer, tm) = peer_with(
        &msdtc,
        TmConfig {
            whereabouts: None,
            ..TmConfig::default()
        },
    );
    let r = enlist_trusting(&peer, &msdtc).await;
    assert_fails_at(&r, Cause::DtcUnavailable, "get DTC address", "");
    assert_eq!(r.data["error"]["number"], 8501);
    assert!(
        r.hint.as_deref().unwrap().contains("SQL Server host"),
        "{r:#?}"
    );
    // The local transaction did not outlive the probe.
    assert_eq!(msdtc.calls(), ["begin", "abort"]);
    assert!(tm.events().contains(&TmEvent::Refused { number: 8501 }));
}

#[tokio::test]
async fn local_msdtc_failures_name_the_side_and_setting() {
    let cases = [
        (dtc::XACT_E_TMNOTAVAILABLE, "TCP 135"),
        (dtc::XACT_E_NETWORK_TX_DISABLED, "THIS host"),
        (
            dtc::XACT_E_PARTNER_NETWORK_TX_DISABLED,
            "the SQL host's MSDTC refuses",
        ),
        (dtc::XACT_E_NOTRANSACTION, "already over"),
        (dtc::XACT_E_CONNECTION_DOWN, "BOTH directions"),
        (dtc::RPC_S_SERVER_UNAVAILABLE, "BOTH directions"),
        (dtc::E_ACCESSDENIED, "Mutual Authentication"),
    ];
    for (hresult, hint) in cases {
        let msdtc = ScriptedMsdtc::new();
        msdtc.fail_export(hresult);
        let (peer, tm) = peer_with(&msdtc, TmConfig::default());
        let r = enlist_trusting(&peer, &msdtc).await;
        assert_fails_at(
            &r,
            Cause::DtcUnavailable,
            "local export",
            &format!("{hresult:X}"),
        );
        assert_eq!(r.data["hresult"], format!("0x{hresult:08X}").as_str());
        assert!(
            r.hint.as_deref().unwrap().contains(hint),
            "{hresult:X}: {r:#?}"
        );
        // The server got as far as the address request, never a propagate.
        let kinds: Vec<&str> = tm
            .events()
            .iter()
            .filter_map(|e| match e {
                TmEvent::Request { kind, .. } => Some(*kind),
                _ => None,
            })
            .collect();
        assert_eq!(kinds, ["get_dtc_address"], "{hresult:X}");
        assert_eq!(msdtc.calls(), ["begin", "export", "abort"]);
    }

    // This host's MSDTC not running: the hop stops before logging in.
    let msdtc = ScriptedMsdtc::new();
    msdtc.fail_begin(dtc::XACT_E_TMNOTAVAILABLE);
    let (peer, _) = peer_with(&msdtc, TmConfig::default());
    let r = enlist_trusting(&peer, &msdtc).await;
    assert_fails_at(&r, Cause::DtcUnavailable, "local begin", "");
    assert!(r.hint.as_deref().unwrap().contains("sc start msdtc"));
    assert!(!peer
        .events()
        .iter()
        .any(|e| matches!(e, Event::Login { .. })));

    // The abort itself fails: reported, never a pass.
    let msdtc = ScriptedMsdtc::new();
    msdtc.fail_abort(dtc::XACT_E_CONNECTION_DOWN);
    let (peer, _) = peer_with(&msdtc, TmConfig::default());
    let r = enlist_trusting(&peer, &msdtc).await;
    assert_fails_at(&r, Cause::DtcUnavailable, "local abort", "");
}

#[tokio::test]
async fn propagate_rejected_by_the_server() {
    // The SQL host's MSDTC does not have the exported transaction when SQL Server imports it:
    // 8509. The hint places the call back into this zone at the export, where push propagation
    // makes it, not here.
    let msdtc = ScriptedMsdtc::new();
    let peer = TdsPeer::start(PeerConfig::default()); // its MSDTC reaches no client MSDTC
    let r = enlist_trusting(&peer, &msdtc).await;
    assert_fails_at(&r, Cause::DtcUnavailable, "propagate", "");
    assert_eq!(r.data["error"]["number"], 8509);
    assert!(r.detail.contains("XACT_E_CONNECTION_DOWN"), "{r:#?}");
    let hint = r.hint.as_deref().unwrap();
    assert!(hint.contains("calls this host back then"), "{r:#?}");
    assert_eq!(msdtc.calls(), ["begin", "export", "abort"]);

    // A scripted refusal (8522), and the server's table is never touched.
    let msdtc = ScriptedMsdtc::new();
    let (peer, tm) = peer_with(
        &msdtc,
        TmConfig {
            propagate_error: Some((8522, 1, crate::support::tds_peer::tm::TEXT_8522.to_string())),
            ..TmConfig::default()
        },
    );
    let r = enlist_trusting(&peer, &msdtc).await;
    assert_eq!(
        (r.status, r.cause, r.data["error"]["number"].as_u64()),
        (Status::Fail, Some(Cause::DtcUnavailable), Some(8522)),
        "{r:#?}"
    );
    assert!(!tm
        .events()
        .iter()
        .any(|e| matches!(e, TmEvent::BatchInTransaction { .. })));
}

/// Issue 23 finding 7: packets dropped on the way back (the SQL host's MSDTC calling this host
/// during the export, MS-DTCO push propagation) make this host's export wait for MSDTC's own
/// timeout. The hop runs out of time AT THE EXPORT, says so, and its hint names the way back;
/// SQL Server never sees a propagate.
#[tokio::test]
async fn a_dropped_way_back_hangs_at_the_export_and_the_hint_says_why() {
    let msdtc = ScriptedMsdtc::new();
    msdtc.hang_export(Duration::from_secs(4));
    let (peer, tm) = peer_with(&msdtc, TmConfig::default());
    let r = run_enlist(
        &target(&peer, "trust_server_certificate=true"),
        peer.addr,
        Some(Secret::new(GOOD)),
        msdtc.as_local_dtc(),
        MARKER,
        Duration::from_secs(2),
    )
    .await;
    assert_fails_at(&r, Cause::Timeout, "local export", "hung export");
    assert!(r.detail.contains("hung at local export"), "{r:#?}");
    let hint = r.hint.as_deref().unwrap();
    for want in [
        "push propagation",
        "BACK to this host during the export",
        "SQL zone to THIS host",
    ] {
        assert!(hint.contains(want), "{want}: {hint}");
    }
    assert!(
        !tm.events().iter().any(|e| matches!(
            e,
            TmEvent::Request {
                kind: "propagate",
                ..
            }
        )),
        "{:#?}",
        tm.events()
    );
    assert_eq!(msdtc.calls()[..2], ["begin", "export"]);
}

#[tokio::test]
async fn connection_dropped_mid_propagate() {
    let msdtc = ScriptedMsdtc::new();
    let (peer, _) = peer_with(
        &msdtc,
        TmConfig {
            drop_on_propagate: true,
            ..TmConfig::default()
        },
    );
    let r = enlist_trusting(&peer, &msdtc).await;
    assert_fails_at(&r, Cause::Reset, "propagate", "");
    assert_eq!(msdtc.calls(), ["begin", "export", "abort"]);
}

#[tokio::test]
async fn wrong_password_and_unsupported_settings() {
    let msdtc = ScriptedMsdtc::new();
    let (peer, _) = peer_with(&msdtc, TmConfig::default());
    let r = enlist(
        &peer,
        "trust_server_certificate=true",
        "not-the-password",
        msdtc.as_local_dtc(),
    )
    .await;
    assert_fails_at(&r, Cause::AuthFailed, "login", "");
    assert_eq!(r.data["error"]["number"], 18456);
    assert!(!serde_json::to_string(&r)
        .unwrap()
        .contains("not-the-password"));
    assert_eq!(msdtc.calls(), ["begin", "abort"]);

    // Integrated authentication: this account's SSPI, the Windows build only.
    let mut integrated = target(&peer, "");
    integrated.auth = Auth::Integrated;
    let mut cases = vec![];
    if !cfg!(windows) {
        cases.push((integrated, "auth=integrated needs the Windows build"));
    }
    for (t, why) in cases {
        let r = run_enlist(
            &t,
            peer.addr,
            Some(Secret::new(GOOD)),
            msdtc.as_local_dtc(),
            MARKER,
            Duration::from_secs(10),
        )
        .await;
        assert_eq!(r.status, Status::Skip, "{why}: {r:#?}");
        assert_eq!(r.cause, Some(Cause::Unsupported), "{why}: {r:#?}");
        assert!(r.detail.contains(why), "{why}: {r:#?}");
    }
}

/// Windows authentication in the hop's own session: NTLMv2 for `DOMAIN\\user` + password
/// (LOGIN7 with the NEGOTIATE token, the challenge in an SSPI token, the answer in an SSPI
/// message), verified by the peer from the password (tds_peer_ntlm.rs), with full and
/// login-only TLS; a wrong password is 18452 and the local transaction is still aborted.
#[tokio::test]
async fn windows_authentication_ntlm_logs_in_and_a_wrong_password_is_refused() {
    let account = WindowsAccount {
        domain: "DTCPROBE".into(),
        user: "svc-web".into(),
        password: "W1ndows-pass!".into(),
    };
    for (query, encryption) in [
        ("encrypt=on&trust_server_certificate=true", "on"),
        ("encrypt=off&trust_server_certificate=true", "login_only"),
    ] {
        let msdtc = ScriptedMsdtc::new();
        let tm = TmConfig {
            client_msdtc: Some(msdtc.clone()),
            ..TmConfig::default()
        };
        let peer = TdsPeer::start(PeerConfig {
            tm,
            windows_account: Some(account.clone()),
            ..PeerConfig::default()
        });
        // The Linux build refuses auth=windows in a URL (its `login` hop cannot do it); the
        // library takes it.
        let mut t = target(&peer, query);
        t.auth = Auth::Windows;
        t.user = Some("DTCPROBE\\svc-web".into());
        let run = |password: &'static str| {
            let t = t.clone();
            let dtc = msdtc.as_local_dtc();
            let addr = peer.addr;
            async move {
                run_enlist(
                    &t,
                    addr,
                    Some(Secret::new(password)),
                    dtc,
                    MARKER,
                    Duration::from_secs(10),
                )
                .await
            }
        };
        let r = run("W1ndows-pass!").await;
        assert_eq!(r.status, Status::Pass, "{query}: {r:#?}");
        assert_eq!(r.data["encryption"], encryption);
        assert_eq!(r.data["statements"], 3);
        let events = peer.events();
        assert!(
            events.contains(&Event::WindowsAuth(NtlmOutcome::Authenticated(
                "DTCPROBE\\svc-web".into()
            ))),
            "{events:#?}"
        );
        assert!(
            events
                .iter()
                .any(|e| matches!(e, Event::Login { user, accepted: true, .. }
                if user == "DTCPROBE\\svc-web")),
            "{events:#?}"
        );

        let r = run("not-the-password").await;
        assert_fails_at(&r, Cause::AuthFailed, "login", query);
        assert_eq!(r.data["error"]["number"], 18452, "{r:#?}");
        assert!(peer.events().iter().any(|e| matches!(
            e,
            Event::WindowsAuth(NtlmOutcome::Refused(why)) if why.contains("does not match the password")
        )));
        let json = serde_json::to_string(&r).unwrap();
        assert!(
            !json.contains("not-the-password") && !json.contains("W1ndows"),
            "{json}"
        );
        assert_eq!(
            msdtc.calls(),
            ["begin", "export", "abort", "begin", "abort"],
            "{query}: the local transaction is aborted after a failed login too"
        );
    }
}

/// Through the binary on this (non-Windows) host: the hop is planned and skipped with the
/// reason and cause `unsupported`; the check reads `skip`, not `pass` (tcp, login and tx_local
/// passed, but the client zone's MSDTC was never tested), the run exits 3 and the human verdict
/// names the hop. The report, with a real `tx_enlist` pass hop spliced in, matches the schema.
#[tokio::test]
async fn binary_skips_without_windows_and_reports_match_the_schema() {
    let msdtc = ScriptedMsdtc::new();
    let (peer, _) = peer_with(&msdtc, TmConfig::default());
    let url = format!(
        "mssql://probe@127.0.0.1:{}/app?tx=enlist&trust_server_certificate=true",
        peer.port()
    );
    // Hop dtc_name (before tx_enlist, on every platform) reaches TCP 135 of the peer's DTC host.
    crate::support::netns::loopback_endpoint_mapper();
    let check = |format: &str| check_through_binary(&url, GOOD, "2s", format);
    let (code, out, err) = check("json");
    let mut report = parse_report(&out);
    let hops = report["checks"][0]["hops"].as_array().unwrap().clone();
    let kinds: Vec<(&str, &str)> = hops
        .iter()
        .map(|h| (h["hop"].as_str().unwrap(), h["status"].as_str().unwrap()))
        .collect();
    assert!(kinds.contains(&("tx_local", "pass")), "{kinds:?} {err}");
    let dtc_name = hops.iter().find(|h| h["hop"] == "dtc_name").unwrap();
    assert_eq!(dtc_name["status"], "pass", "{dtc_name:#}");
    assert_eq!(dtc_name["data"]["tm_host"], "localhost", "{dtc_name:#}");
    let enlist_hop = hops.iter().find(|h| h["hop"] == "tx_enlist").unwrap();
    if cfg!(windows) {
        return;
    }
    assert_eq!(enlist_hop["status"], "skip", "{enlist_hop:#}");
    assert_eq!(enlist_hop["cause"], "unsupported", "{enlist_hop:#}");
    assert!(enlist_hop["detail"]
        .as_str()
        .unwrap()
        .contains("needs the Windows build: this host's MSDTC"));
    assert!(enlist_hop["hint"]
        .as_str()
        .unwrap()
        .contains("Windows build"));
    assert_eq!(report["checks"][0]["status"], "skip", "{report:#}");
    assert_eq!(report["summary"]["pass"], 0, "{report:#}");
    assert_eq!(code, 3, "exit code: inconclusive, never 0\n{err}");
    crate::report_schema::assert_valid("mssql tx=enlist skipped", &report);
    let (code, human, err) = check("human");
    assert_eq!(code, 3, "{human}{err}");
    assert!(
        human.contains("tx_enlist UNSUPPORTED: needs the Windows build"),
        "{human}"
    );
    assert!(!human.contains("1 pass"), "{human}");
    assert!(
        human.contains("hint: run this check with the Windows build"),
        "{human}"
    );

    // The same report with the hop as the scripted run produces it (pass, then a failure).
    let pass = enlist_trusting(&peer, &msdtc).await;
    assert_eq!(pass.status, Status::Pass, "{pass:#?}");
    let failing = ScriptedMsdtc::new();
    failing.fail_export(dtc::XACT_E_NETWORK_TX_DISABLED);
    let fail = enlist_trusting(&peer, &failing).await;
    for (what, hop) in [("pass", pass), ("fail", fail)] {
        let value: Value = serde_json::to_value(&hop).unwrap();
        for h in report["checks"][0]["hops"].as_array_mut().unwrap() {
            if h["hop"] == "tx_enlist" {
                *h = value.clone();
            }
        }
        crate::report_schema::assert_valid(&format!("tx_enlist {what}"), &report);
    }
}

/// Opt-in, Windows only: the real chain with this host's MSDTC and a real SQL Server.
/// Set `DTCPROBE_ENLIST_URL` (e.g. `mssql://probe@sql01.corp/app?tx=enlist&trust_server_certificate=true`)
/// and `DTCPROBE_MSSQL_PASSWORD`, then run `cargo test --test integration real_windows_msdtc_enlists
/// -- --nocapture` on the Windows host. Elsewhere, or without them, it says why it is skipped.
#[test]
fn real_windows_msdtc_enlists() {
    let (Ok(url), Ok(password)) = (
        std::env::var("DTCPROBE_ENLIST_URL"),
        std::env::var("DTCPROBE_MSSQL_PASSWORD"),
    ) else {
        eprintln!(
            "SKIP: set DTCPROBE_ENLIST_URL (mssql://user@host/db?tx=enlist) and \
             DTCPROBE_MSSQL_PASSWORD on a Windows host to enlist a real SQL Server in this host's MSDTC"
        );
        return;
    };
    if !cfg!(windows) {
        eprintln!("SKIP: tx_enlist needs the Windows build (this host's MSDTC)");
        return;
    }
    let (_, out, err) = check_through_binary(&url, &password, "10s", "json");
    assert!(!out.contains(&password) && !err.contains(&password));
    let report = parse_report(&out);
    eprintln!(
        "{}",
        serde_json::to_string_pretty(&report["checks"][0]["hops"]).unwrap()
    );
    let hop = crate::support::hop(
        &report,
        report["checks"][0]["name"].as_str().unwrap(),
        "tx_enlist",
    );
    assert_eq!(hop["status"], "pass", "{hop:#}");
}

#[tokio::test]
async fn closed_port_is_refused_like_the_tcp_hop() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let msdtc = ScriptedMsdtc::new();
    let t = MssqlTarget::from_url(&format!(
        "mssql://probe@127.0.0.1:{port}/app?tx=enlist&trust_server_certificate=true"
    ))
    .unwrap();
    let r = run_enlist(
        &t,
        format!("127.0.0.1:{port}").parse().unwrap(),
        Some(Secret::new(GOOD)),
        msdtc.as_local_dtc(),
        MARKER,
        Duration::from_secs(4),
    )
    .await;
    assert_fails_at(&r, Cause::Refused, "login", "");
    assert_eq!(msdtc.calls(), ["begin", "abort"]);
}

/// The peer's other transaction manager requests (what ODBC Driver 18 sends with autocommit
/// off), driven by dtcprobe's own session: descriptors in the ENVCHANGEs, refusals where SQL
/// Server refuses. (Microsoft's drivers against these answers: issue 17's cross-check tests.)
#[tokio::test]
async fn peer_answers_begin_commit_rollback_save_promote() {
    use dtcprobe::hops::mssql::enlist::session::{first_error, Session};
    use dtcprobe_wire::tds::reply::Token;
    use dtcprobe_wire::tds::tm::TmRequest;

    fn env(tokens: &[Token]) -> Vec<u8> {
        tokens
            .iter()
            .filter_map(|t| match t {
                Token::EnvChange { kind, .. } => Some(*kind),
                _ => None,
            })
            .collect()
    }
    fn error_number(tokens: &[Token]) -> Option<u32> {
        match first_error(tokens) {
            Some(dtcprobe::hops::mssql::classify::Failure::Server { number, .. }) => Some(number),
            _ => None,
        }
    }

    let peer = TdsPeer::start(PeerConfig::default());
    let t = target(&peer, "trust_server_certificate=true");
    let (mut s, _) = Session::open(peer.addr, &t, GOOD, Duration::from_secs(3))
        .await
        .unwrap();
    let begin = TmRequest::Begin {
        isolation: 2,
        name: String::new(),
    };
    let commit = TmRequest::Commit {
        name: String::new(),
        begin_new: None,
    };
    let rollback = TmRequest::Rollback {
        name: String::new(),
        begin_new: None,
    };

    // Nothing to commit, roll back or save yet.
    assert_eq!(
        error_number(&s.tm_request(&commit).await.unwrap()),
        Some(3902)
    );
    assert_eq!(
        error_number(&s.tm_request(&rollback).await.unwrap()),
        Some(3903)
    );
    let save = TmRequest::Save { name: "sp".into() };
    assert_eq!(error_number(&s.tm_request(&save).await.unwrap()), Some(628));

    // Begin: ENVCHANGE 8 with a descriptor the session then carries.
    let r = s.tm_request(&begin).await.unwrap();
    assert_eq!(env(&r), [8]);
    let first = s.descriptor;
    assert_ne!(first, 0);
    let r = s.batch("CREATE TABLE #t (id int)").await.unwrap();
    assert_eq!(error_number(&r), None);
    assert_eq!(error_number(&s.tm_request(&save).await.unwrap()), None);
    // Promote: ENVCHANGE 15 carrying a propagation token.
    let r = s.tm_request(&TmRequest::Promote).await.unwrap();
    assert!(
        matches!(&r[0], Token::EnvChange { kind: 15, new, .. } if !new.is_empty()),
        "{r:?}"
    );
    // Commit naming another transaction: refused (3971); naming this one: ENVCHANGE 9.
    let right = s.descriptor;
    s.descriptor = right ^ 0xFF;
    assert_eq!(
        error_number(&s.tm_request(&commit).await.unwrap()),
        Some(3971)
    );
    s.descriptor = right;
    assert_eq!(env(&s.tm_request(&commit).await.unwrap()), [9]);
    assert_eq!(s.descriptor, 0);

    // Rollback that begins the next transaction at once: ENVCHANGE 10 then 8, a new descriptor.
    s.tm_request(&begin).await.unwrap();
    let before = s.descriptor;
    let r = s
        .tm_request(&TmRequest::Rollback {
            name: String::new(),
            begin_new: Some((2, String::new())),
        })
        .await
        .unwrap();
    assert_eq!(env(&r), [10, 8]);
    assert_ne!(s.descriptor, 0);
    assert_ne!(s.descriptor, before);
    s.close().await;
}
