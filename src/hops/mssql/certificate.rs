//! The SQL Server's certificate, for `data.certificate` on hop `login` and for hop
//! `revocation`. tiberius does its TLS inside the TDS PRELOGIN packets and does not hand the
//! certificate out, so this is a short handshake of its own on a second connection, run
//! alongside the login: PRELOGIN asking for ENCRYPT_ON, then a rustls handshake whose records
//! travel in PRELOGIN packets (MS-TDS 2.2.6.5, type 0x12), as every TDS 7.x client does; with
//! `encrypt=strict` (TDS 8), TLS first on the bare connection with ALPN `tds/8.0`. The
//! verifier ([`crate::tls::capturing_config`]) keeps the chain and checks it against this
//! host's trust store, whatever the check's trust settings; it lets any certificate through, so
//! the handshake completes, then the connection is closed before any LOGIN7: nothing logs in.
//!
//! The framing is crates/wire's ([`dtcprobe_wire::tds::packet`], `prelogin`); only the
//! reading and writing is here.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use dtcprobe_wire::tds::packet::{packetize, PacketHeader, HEADER_LEN, PKT_PRELOGIN};
use dtcprobe_wire::tds::prelogin::{parse_prelogin, ENCRYPT_NOT_SUP, ENCRYPT_ON};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::enlist::session::{client_prelogin, TDS8_ALPN};
use super::spec::{Encrypt, MssqlTarget};
use crate::tls::{capturing_config, CertCapture, SeenChain, Trust};

/// Why no certificate was read.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error("the server offers no TLS (PRELOGIN ENCRYPT_NOT_SUP)")]
    NoTls,
    #[error("no certificate within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Failed(String),
}

/// A TDS packet's payload is at most this size here (PRELOGIN answers and TLS records are far
/// smaller; a chain of a few certificates spans several packets).
const MAX_MESSAGE: usize = 1 << 20;

/// The server's certificate chain at `addr`, read within `limit`.
pub async fn server_chain(
    t: &MssqlTarget,
    addr: SocketAddr,
    limit: Duration,
) -> Result<SeenChain, ChainError> {
    match tokio::time::timeout(limit, handshake(t, addr)).await {
        Ok(r) => r,
        Err(_) => Err(ChainError::Timeout(limit)),
    }
}

async fn handshake(t: &MssqlTarget, addr: SocketAddr) -> Result<SeenChain, ChainError> {
    let failed = |e: &dyn std::fmt::Display| ChainError::Failed(e.to_string());
    let capture = CertCapture::default();
    // Reading this host's trust store is file I/O and parsing (tens of milliseconds): off the
    // async threads, so the login running alongside is not held up (its phases stay true).
    let for_config = capture.clone();
    let mut config =
        tokio::task::spawn_blocking(move || capturing_config(&Trust::AnyCertificate, &for_config))
            .await
            .map_err(|e| failed(&e))?
            .map_err(|e| failed(&e))?;
    let strict = t.encrypt == Encrypt::Strict;
    if strict {
        config.alpn_protocols = vec![TDS8_ALPN.to_vec()];
    }
    // A host that is no valid TLS name (rare) still gets a handshake: the name is judged
    // separately ([`crate::hops::certificate`]).
    let name = ServerName::try_from(t.host.clone())
        .unwrap_or_else(|_| ServerName::try_from("invalid.invalid").expect("a valid name"));
    let mut tls = rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| failed(&e))?;
    let mut tcp = TcpStream::connect(addr).await.map_err(|e| failed(&e))?;
    let _ = tcp.set_nodelay(true);
    let mut packet_id = 0u8;
    if !strict {
        let prelogin = client_prelogin(t.instance.as_deref(), ENCRYPT_ON);
        tcp.write_all(&packetize(PKT_PRELOGIN, &prelogin, 4096, &mut packet_id))
            .await
            .map_err(|e| failed(&e))?;
        let answer = read_message(&mut tcp).await?;
        let info = parse_prelogin(&answer)
            .ok_or_else(|| ChainError::Failed("the answer to PRELOGIN is not TDS".into()))?;
        if info.encryption == Some(ENCRYPT_NOT_SUP) {
            return Err(ChainError::NoTls);
        }
    }
    // Bounded: a TLS 1.2 handshake is two round trips, 1.3 one; the caller's limit stops a
    // server that stalls.
    let mut buf = vec![0u8; 16 * 1024];
    for _ in 0..32 {
        if tls.wants_write() {
            let mut out = Vec::new();
            while tls.wants_write() {
                tls.write_tls(&mut out).map_err(|e| failed(&e))?;
            }
            let bytes = if strict {
                out
            } else {
                packetize(PKT_PRELOGIN, &out, 4096, &mut packet_id)
            };
            if let Err(e) = tcp.write_all(&bytes).await {
                return seen_or(&capture, failed(&e));
            }
            continue;
        }
        if !tls.is_handshaking() {
            tls.send_close_notify();
            let mut out = Vec::new();
            let _ = tls.write_tls(&mut out);
            if strict {
                let _ = tcp.write_all(&out).await;
            }
            break;
        }
        let data = if strict {
            match tcp.read(&mut buf).await {
                Ok(0) => return seen_or(&capture, ChainError::Failed("the server hung up".into())),
                Ok(k) => buf[..k].to_vec(),
                Err(e) => return seen_or(&capture, failed(&e)),
            }
        } else {
            match read_message(&mut tcp).await {
                Ok(m) => m,
                Err(e) => return seen_or(&capture, e),
            }
        };
        let mut rest = &data[..];
        while !rest.is_empty() {
            if let Err(e) = tls
                .read_tls(&mut rest)
                .map_err(|e| failed(&e))
                .and_then(|_| {
                    tls.process_new_packets()
                        .map(|_| ())
                        .map_err(|e| failed(&e))
                })
            {
                return seen_or(&capture, e);
            }
        }
    }
    seen_or(
        &capture,
        ChainError::Failed("the TLS handshake does not finish".into()),
    )
}

/// The chain if the handshake got as far as the server's certificate, else the error.
fn seen_or(capture: &CertCapture, e: ChainError) -> Result<SeenChain, ChainError> {
    capture.seen().ok_or(e)
}

/// One TDS message (packets up to the end-of-message flag), in the clear.
async fn read_message(tcp: &mut TcpStream) -> Result<Vec<u8>, ChainError> {
    let failed = |e: std::io::Error| ChainError::Failed(e.to_string());
    let mut payload = Vec::new();
    loop {
        let mut header = [0u8; HEADER_LEN];
        tcp.read_exact(&mut header).await.map_err(failed)?;
        let h = PacketHeader::parse(&header)
            .ok_or_else(|| ChainError::Failed("short TDS header".into()))?;
        let len = h
            .payload_len()
            .ok_or_else(|| ChainError::Failed("a TDS packet shorter than its header".into()))?;
        let start = payload.len();
        payload.resize(start + len, 0);
        tcp.read_exact(&mut payload[start..])
            .await
            .map_err(failed)?;
        if payload.len() > MAX_MESSAGE {
            return Err(ChainError::Failed("a TDS message larger than 1 MiB".into()));
        }
        if h.is_eom() {
            return Ok(payload);
        }
    }
}
