//! The `login` hop against REAL SQL Server bytes: a replay server answers dtcprobe with the
//! PRELOGIN and login replies a server sent in a public capture (../shared/captures, read at test
//! time; see support/pcap.rs), message for message. What is real: every byte the server
//! side sends. What is not: the server does not read what dtcprobe sends beyond the message
//! framing, so a login the real server would refuse still gets the captured answer.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::pcap as captures;
use crate::support::{hop, parse_report, run_bin};

/// Reads one whole TDS message (packets up to the end-of-message bit); `None` at EOF.
async fn read_message(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut msg = Vec::new();
    loop {
        let mut head = [0u8; 8];
        s.read_exact(&mut head).await.ok()?;
        let len = u16::from_be_bytes([head[2], head[3]]) as usize;
        let mut body = vec![0u8; len.checked_sub(8)?];
        s.read_exact(&mut body).await.ok()?;
        msg.extend_from_slice(&head);
        msg.extend(body);
        if head[1] & 0x01 != 0 {
            return Some(msg);
        }
    }
}

/// A server on loopback that answers the n-th client message with the n-th captured server
/// message, then keeps the connection open without answering (bounded: 20 s). Records the
/// packet type of each client message.
async fn replay(server_messages: Vec<Vec<u8>>) -> (u16, tokio::sync::mpsc::UnboundedReceiver<u8>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let msgs = server_messages.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(20), async {
                    for answer in &msgs {
                        let Some(m) = read_message(&mut s).await else {
                            return;
                        };
                        let _ = tx.send(m[0]);
                        if s.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                    while let Some(m) = read_message(&mut s).await {
                        let _ = tx.send(m[0]);
                    }
                })
                .await;
            });
        }
    });
    (port, rx)
}

/// SQL Server 2000 SP4 (8.0.2039, TDS 7.1) answering: its real PRELOGIN reply (ENCRYPTION =
/// NOT_SUP) and its real login reply (LOGINACK TDS 7.1, "Microsoft SQL Server"). dtcprobe must
/// not hang up itself and then report `reset` blaming the network (issue 23): it either logs in
/// as FreeTDS's tsql does, or fails with cause `unsupported` naming the server's TDS version and
/// product.
#[test]
fn sql_server_2000_tds71_login_is_unsupported_not_reset() {
    let test = "sql_server_2000_tds71_login_is_unsupported_not_reset";
    let Some(pcap) = captures::read(test, "tds/arkime-tds7-sql2000.pcap") else {
        return;
    };
    let segments = captures::tcp_segments(&pcap).unwrap();
    let server = captures::tds_messages(&captures::stream_from(&segments, 1433));
    assert!(server.len() >= 2, "{} server messages", server.len());
    // The capture is what its README says: a PRELOGIN reply, then LOGINACK with TDS 7.1.
    assert_eq!(server[0][0], 0x04);
    let login_reply = &server[1];
    let ack = login_reply
        .windows(5)
        .position(|w| w[0] == 0xAD)
        .expect("a LOGINACK in the login reply");
    assert_eq!(&login_reply[ack + 4..ack + 8], &[0x71, 0, 0, 1]);

    let rt = tokio::runtime::Runtime::new().unwrap();
    let (port, mut seen) = rt.block_on(replay(server[..2].to_vec()));
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "secret\n").unwrap();
    let url = format!("mssql://sa@127.0.0.1:{port}/master?encrypt=off");
    let (code, out, err) = run_bin(&[
        "check",
        "--timeout",
        "5s",
        "--password-file",
        pw.to_str().unwrap(),
        &url,
        "-f",
        "json",
    ]);
    let report = parse_report(&out);
    crate::report_schema::assert_valid("sql2000 replay", &report);
    let login = hop(&report, &url, "login");
    // The client sent PRELOGIN (0x12) and LOGIN7 (0x10).
    let mut types = Vec::new();
    while let Ok(t) = seen.try_recv() {
        types.push(t);
    }
    eprintln!("client messages {types:02x?}; login hop {login:#}");
    assert_ne!(login["cause"], "reset", "{login:#}\n{err}");
    assert_eq!(login["cause"], "unsupported", "{login:#}\n{err}");
    let detail = login["detail"].as_str().unwrap();
    assert!(detail.contains("TDS 7.1"), "{detail}");
    assert!(!detail.contains("closed"), "{detail}");
    assert!(detail.contains("Microsoft SQL Server"), "{detail}");
    assert!(detail.contains("8.0.2039"), "{detail}");
    assert!(
        login["data"]["tds_version"]
            .as_str()
            .is_some_and(|v| v.starts_with("7.1")),
        "{login:#}"
    );
    assert_eq!(login["status"], "skip", "{login:#}");
    // A tool fault (dtcprobe cannot speak this server's TDS), not a network failure: exit 3.
    assert_eq!(code, 3, "{err}");
    // PRELOGIN (0x12) first; LOGIN7 (0x10) reached the server (after the retries the login hop
    // makes when a server without TLS is asked for encrypt=off), and its reply was read.
    assert_eq!(types.first(), Some(&0x12), "{types:?}");
    assert_eq!(types.last(), Some(&0x10), "{types:?}");
}
