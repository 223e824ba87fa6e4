//! TLS for the PostgreSQL login, with libpq's `sslmode` meanings: `disable` (never), `prefer`
//! (libpq's default: TLS if the server offers it, any certificate), `require` (TLS or fail, any
//! certificate), `verify-ca` (a certificate from a trusted CA, any name) and `verify-full` (a
//! trusted CA and the host's name). Trusted CAs: `sslrootcert` (a PEM file) or this host's store.
//!
//! tokio-postgres asks for TLS with an SSLRequest and hands the socket to a [`TlsConnect`]; this
//! one is rustls with ring (src/tls.rs) and records what was negotiated, so the hop reports
//! whether the login was encrypted at all (`prefer` falls back to the clear when the server
//! says no). No channel binding is offered (SCRAM without `-PLUS`).

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, TlsConnect, TlsStream};

use crate::tls::{capturing_config, CertCapture, SeenChain, Trust, TrustError};

/// libpq's `sslmode` values dtcprobe honours (`allow` is left out: it only tries TLS after the
/// clear fails, which a probe should not do silently).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    pub fn parse(v: &str) -> Result<SslMode, String> {
        Ok(match v {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(format!(
                    "unknown sslmode `{other}` (expected disable, prefer, require, verify-ca or \
                     verify-full)"
                ))
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// What tokio-postgres does about the SSLRequest.
    pub fn driver_mode(self) -> tokio_postgres::config::SslMode {
        use tokio_postgres::config::SslMode as M;
        match self {
            SslMode::Disable => M::Disable,
            SslMode::Prefer => M::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => M::Require,
        }
    }

    /// How much of the certificate is checked. As in libpq, `require` with a root certificate
    /// file given checks the chain like `verify-ca`.
    pub fn trust(self, root_cert: Option<&PathBuf>) -> Trust {
        match (self, root_cert) {
            (SslMode::Require, Some(file)) => Trust::ChainOnly(Some(file.clone())),
            (SslMode::Disable | SslMode::Prefer | SslMode::Require, _) => Trust::AnyCertificate,
            (SslMode::VerifyCa, file) => Trust::ChainOnly(file.cloned()),
            (SslMode::VerifyFull, Some(file)) => Trust::RootFile(file.clone()),
            (SslMode::VerifyFull, None) => Trust::SystemRoots,
        }
    }
}

/// What the handshake settled, for the hop's data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    pub version: String,
    pub cipher: String,
}

/// The connector for one login; [`Connector::negotiated`] says afterwards whether TLS ran.
#[derive(Clone)]
pub struct Connector {
    config: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
    seen: Arc<Mutex<Option<Negotiated>>>,
    /// When the handshake finished, for the login's phases.
    done: Arc<Mutex<Option<tokio::time::Instant>>>,
    /// The server's certificate chain, for the certificate report.
    capture: CertCapture,
}

impl Connector {
    pub fn new(host: &str, mode: SslMode, root_cert: Option<&PathBuf>) -> Result<Self, TrustError> {
        let capture = CertCapture::default();
        let config = capturing_config(&mode.trust(root_cert), &capture)?;
        // An address or a name; a host that is neither still gets an SNI-less name so the
        // handshake can run for modes that do not check it.
        let name = ServerName::try_from(host.to_string())
            .unwrap_or_else(|_| ServerName::try_from("invalid.invalid").expect("a valid name"));
        Ok(Connector {
            config: Arc::new(config),
            name,
            seen: Arc::default(),
            done: Arc::default(),
            capture,
        })
    }

    /// When the TLS handshake finished, if it ran.
    pub fn handshake_done(&self) -> Option<tokio::time::Instant> {
        self.done.lock().ok().and_then(|d| *d)
    }

    /// The server's certificate chain, if the handshake got as far as it.
    pub fn certificate(&self) -> Option<SeenChain> {
        self.capture.seen()
    }

    /// The negotiated version and cipher, if the login ran over TLS.
    pub fn negotiated(&self) -> Option<Negotiated> {
        self.seen.lock().ok().and_then(|s| s.clone())
    }
}

impl<S> TlsConnect<S> for Connector
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let tls = tokio_rustls::TlsConnector::from(self.config)
                .connect(self.name, stream)
                .await?;
            let (_, session) = tls.get_ref();
            let negotiated = Negotiated {
                version: session
                    .protocol_version()
                    .map(|v| format!("{v:?}"))
                    .unwrap_or_default(),
                cipher: session
                    .negotiated_cipher_suite()
                    .map(|c| format!("{:?}", c.suite()))
                    .unwrap_or_default(),
            };
            if let Ok(mut seen) = self.seen.lock() {
                *seen = Some(negotiated);
            }
            if let Ok(mut done) = self.done.lock() {
                *done = Some(tokio::time::Instant::now());
            }
            Ok(RustlsStream(tls))
        })
    }
}

/// The TLS stream tokio-postgres reads and writes.
pub struct RustlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for RustlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_and_choose_how_much_to_trust() {
        for m in ["disable", "prefer", "require", "verify-ca", "verify-full"] {
            assert_eq!(SslMode::parse(m).unwrap().as_str(), m);
        }
        assert!(SslMode::parse("allow").unwrap_err().contains("verify-full"));
        let file = PathBuf::from("/etc/ca.pem");
        assert_eq!(SslMode::Require.trust(None), Trust::AnyCertificate);
        assert_eq!(
            SslMode::Require.trust(Some(&file)),
            Trust::ChainOnly(Some(file.clone()))
        );
        assert_eq!(
            SslMode::VerifyCa.trust(Some(&file)),
            Trust::ChainOnly(Some(file.clone()))
        );
        assert_eq!(SslMode::VerifyFull.trust(None), Trust::SystemRoots);
        assert_eq!(
            SslMode::VerifyFull.trust(Some(&file)),
            Trust::RootFile(file)
        );
    }
}
