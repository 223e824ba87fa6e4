//! The SQL Server's certificate, for `data.certificate` on hop `login` and for hop
//! `revocation`. tiberius does its TLS inside the TDS PRELOGIN packets and does not hand the
//! certificate out, so this is a short handshake of its own on a second connection, run
//! alongside the login: PRELOGIN asking for ENCRYPT_ON, then a rustls handshake whose records
//! travel in PRELOGIN packets (MS-TDS 2.2.6.5, type 0x12), as every TDS 7.x client does; with
//! `encrypt=strict` (TDS 8), TLS first on the bare connection with ALPN `tds/8.0`. The
//! verifier ([`crate::tls::recording_config`]) keeps the chain and lets any certificate
//! through, so the handshake completes, then the connection is closed before any LOGIN7:
//! nothing logs in.
//!
//! The chain is then checked against this host's trust store, whatever the check's trust
//! settings: the run's [`crate::tls::TrustStore`], read once per run on a blocking thread while
//! the login and this handshake run. One handshake per server (address, name, TDS 7 or 8) per
//! run, shared by the run's checks ([`crate::tls::ServerChains`]).
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
pub use crate::tls::ChainError;
use crate::tls::{
    recording_config, CertCapture, RunTls, SeenChain, ServerKey, ShownChain, Trust, TrustError,
};

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

/// The server's certificate chain at `addr`, read within `limit` (or by an earlier check of
/// this run, [`RunTls`]) and checked against this host's trust store.
pub async fn server_chain(
    t: &MssqlTarget,
    addr: SocketAddr,
    limit: Duration,
    tls: &RunTls,
) -> Result<SeenChain, ChainError> {
    let key = ServerKey {
        addr,
        name: t.host.clone(),
        how: how(t),
    };
    let shown = tls.chains.get_or_read(key, || async {
        match tokio::time::timeout(limit, handshake(t, addr)).await {
            Ok(r) => r,
            Err(_) => Err(ChainError::Timeout(limit)),
        }
    });
    let (judge, shown) = tokio::join!(tls.trust_store.judge(), shown);
    // A trust store without a usable certificate is reported as before the store was read
    // beside the handshake: as the reason no chain was read.
    let judge = judge.map_err(|e| ChainError::Failed(TrustError::Rustls(e).to_string()))?;
    Ok(shown?.judged(&judge))
}

/// How the handshake is made, for [`ServerKey`]: TLS first (TDS 8) or inside PRELOGIN
/// packets, with the instance PRELOGIN names.
fn how(t: &MssqlTarget) -> String {
    match t.encrypt {
        Encrypt::Strict => "tds8".into(),
        _ => format!("tds7 {}", t.instance.as_deref().unwrap_or_default()),
    }
}

async fn handshake(t: &MssqlTarget, addr: SocketAddr) -> Result<ShownChain, ChainError> {
    let failed = |e: &dyn std::fmt::Display| ChainError::Failed(e.to_string());
    let capture = CertCapture::default();
    // No file is read: the chain is checked afterwards, against the run's trust store.
    let mut config = recording_config(&Trust::AnyCertificate, &capture).map_err(|e| failed(&e))?;
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
fn seen_or(capture: &CertCapture, e: ChainError) -> Result<ShownChain, ChainError> {
    capture.shown().ok_or(e)
}
