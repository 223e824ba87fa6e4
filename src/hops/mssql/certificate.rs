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
//! The connection is [`super::transport::Transport`], the one `tx_enlist`'s session uses; the
//! framing under it is crates/wire's.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use dtcprobe_wire::tds::packet::PKT_PRELOGIN;
use dtcprobe_wire::tds::prelogin::{parse_prelogin, ENCRYPT_NOT_SUP, ENCRYPT_ON};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

use super::classify::{classify_failure, Failure};
use super::spec::{Encrypt, MssqlTarget};
use super::transport::{client_prelogin, Transport, TDS8_ALPN};
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

impl From<Failure> for ChainError {
    fn from(f: Failure) -> ChainError {
        ChainError::Failed(match f {
            Failure::Tls(m)
            | Failure::TlsReset(m)
            | Failure::NoTlsFirst(m)
            | Failure::EncryptionDeclined(m)
            | Failure::Closed(m)
            | Failure::Timeout(m)
            | Failure::Protocol(m)
            | Failure::Unexpected(m)
            | Failure::Sspi(m) => m,
            other => classify_failure(&other).detail,
        })
    }
}

/// The packet size of the PRELOGIN exchange (the TDS default before LOGIN7).
const PACKET_SIZE: usize = 4096;

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
    let tls = rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| failed(&e))?;
    let tcp = TcpStream::connect(addr).await.map_err(|e| failed(&e))?;
    let _ = tcp.set_nodelay(true);
    let mut transport = Transport::new(tcp, PACKET_SIZE);
    let handshake = if strict {
        transport.tls_first_handshake(tls).await
    } else {
        let prelogin = client_prelogin(t.instance.as_deref(), ENCRYPT_ON);
        transport.write_message(PKT_PRELOGIN, &prelogin).await?;
        let (_, answer) = transport.read_message().await?;
        let info = parse_prelogin(&answer)
            .ok_or_else(|| ChainError::Failed("the answer to PRELOGIN is not TDS".into()))?;
        if info.encryption == Some(ENCRYPT_NOT_SUP) {
            return Err(ChainError::NoTls);
        }
        transport.tls_handshake(tls).await
    };
    match handshake {
        // Nothing logs in: close_notify and the end of the connection.
        Ok(()) => {
            transport.close().await;
            seen_or(
                &capture,
                ChainError::Failed("the handshake ended without a certificate".into()),
            )
        }
        // A handshake that broke off after the server's certificate still read the chain.
        Err(e) => seen_or(&capture, e.into()),
    }
}

/// The chain if the handshake got as far as the server's certificate, else the error.
fn seen_or(capture: &CertCapture, e: ChainError) -> Result<SeenChain, ChainError> {
    capture.seen().ok_or(e)
}
