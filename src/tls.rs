//! TLS for the logins: the process's crypto provider (tiberius speaks TLS through rustls), and
//! the rustls client configurations dtcprobe's own sessions use (`tx_enlist`'s TDS session,
//! the PostgreSQL login), by how much of the server's certificate they trust.
//!
//! tiberius uses the process-wide default rustls `CryptoProvider` when one is installed and falls
//! back to aws-lc-rs otherwise. aws-lc seeds its random generator from CPU-jitter entropy on the
//! first random draw of a process, so the first ClientHello of every dtcprobe run cost 45-50 ms on
//! an idle 2-core machine (90-200 ms under load), most of a whole `dtcprobe check mssql://...`
//! run. ring draws from the OS (getrandom) and builds its first ClientHello in under 0.1 ms
//! (scripts/bench case c; the numbers are in docs/mssql.md). So ring is installed as the process
//! default before anything connects. Still rustls, still no OpenSSL.
//!
//! What ring does not offer compared with aws-lc-rs in rustls: ECDSA P-521 server certificates
//! and the post-quantum hybrid key exchange X25519MLKEM768 (X25519, P-256 and P-384 remain);
//! neither is used by SQL Server's Schannel by default.

/// Installs ring as the process-default rustls provider. Idempotent: a provider installed
/// earlier (by an embedding program or an earlier call) is left as it is.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

/// How the server's certificate is judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// Chain to this host's trust store, name checked (libpq `verify-full`, TDS default).
    SystemRoots,
    /// Chain to the CAs in this PEM file, name checked (libpq `sslrootcert` + `verify-full`).
    RootFile(PathBuf),
    /// Chain to the CAs in this PEM file or, with `None`, this host's store, but any name
    /// (libpq `verify-ca`).
    ChainOnly(Option<PathBuf>),
    /// Any certificate; the handshake's signature is still checked (libpq `require`,
    /// TrustServerCertificate=yes).
    AnyCertificate,
}

/// Why a client configuration could not be built (an unreadable or empty CA file).
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("cannot read the CA file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the CA file {0} holds no usable PEM certificate")]
    Empty(PathBuf),
    #[error("TLS set-up: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A rustls client configuration with ring (see above) for `trust`.
pub fn client_config(trust: &Trust) -> Result<rustls::ClientConfig, TrustError> {
    build_config(trust, None)
}

/// As [`client_config`], also keeping what the server showed in `capture`: its certificate
/// chain, and whether the chain check against the roots `trust` names (this host's store when
/// it names none) passed, whatever `trust` then lets through. The certificate report of a
/// login (`data.certificate`, [`crate::hops::certificate`]) is read from it.
pub fn capturing_config(
    trust: &Trust,
    capture: &CertCapture,
) -> Result<rustls::ClientConfig, TrustError> {
    build_config(trust, Some(capture))
}

fn build_config(
    trust: &Trust,
    capture: Option<&CertCapture>,
) -> Result<rustls::ClientConfig, TrustError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let roots = |file: Option<&PathBuf>| -> Result<Arc<rustls::RootCertStore>, TrustError> {
        let Some(path) = file else {
            return Ok(system_roots());
        };
        let pem = std::fs::read(path).map_err(|source| TrustError::Read {
            path: path.clone(),
            source,
        })?;
        let mut roots = rustls::RootCertStore::empty();
        let (added, _) =
            roots.add_parsable_certificates(CertificateDer::pem_slice_iter(&pem).flatten());
        if added == 0 {
            return Err(TrustError::Empty(path.clone()));
        }
        Ok(Arc::new(roots))
    };
    let webpki = |file: Option<&PathBuf>| -> Result<Arc<WebPkiServerVerifier>, TrustError> {
        WebPkiServerVerifier::builder_with_provider(roots(file)?, provider.clone())
            .build()
            .map_err(|e| TrustError::Rustls(rustls::Error::General(e.to_string())))
    };
    let (verifier, judge): (Arc<dyn ServerCertVerifier>, Option<PathBuf>) = match trust {
        Trust::SystemRoots => (webpki(None)?, None),
        Trust::RootFile(path) => (webpki(Some(path))?, Some(path.clone())),
        Trust::ChainOnly(file) => (Arc::new(AnyName(webpki(file.as_ref())?)), file.clone()),
        Trust::AnyCertificate => (Arc::new(AnyCertificate(provider.clone())), None),
    };
    let verifier = match capture {
        None => verifier,
        Some(capture) => Arc::new(Capturing {
            inner: verifier,
            judge: webpki(judge.as_ref())?,
            capture: capture.clone(),
        }),
    };
    Ok(builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

/// What a server showed in its handshake: the chain as sent (its own certificate first) and
/// the outcome of the chain check, `Err` with rustls's reason when it failed.
#[derive(Debug, Clone)]
pub struct SeenChain {
    pub chain: Vec<CertificateDer<'static>>,
    pub verification: Result<(), rustls::Error>,
}

/// Where a [`capturing_config`] puts the [`SeenChain`] of its handshake (the last one, should
/// the config be used twice).
#[derive(Debug, Clone, Default)]
pub struct CertCapture(Arc<std::sync::Mutex<Option<SeenChain>>>);

impl CertCapture {
    pub fn seen(&self) -> Option<SeenChain> {
        self.0.lock().ok().and_then(|s| s.clone())
    }
}

/// The verifier a configuration would use, which also keeps the chain and the outcome of a
/// full chain check (`judge`) for the certificate report.
#[derive(Debug)]
struct Capturing {
    inner: Arc<dyn ServerCertVerifier>,
    judge: Arc<WebPkiServerVerifier>,
    capture: CertCapture,
}

impl ServerCertVerifier for Capturing {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verification = self
            .judge
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
            .map(|_| ());
        let chain = std::iter::once(end_entity)
            .chain(intermediates)
            .map(|c| c.clone().into_owned())
            .collect();
        if let Ok(mut seen) = self.capture.0.lock() {
            *seen = Some(SeenChain {
                chain,
                verification,
            });
        }
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// This host's trust store, read at each login rather than once per process: a long-running
/// `watch` then sees a CA installed while it runs (and the tests can point SSL_CERT_FILE at a
/// new peer's certificate between logins).
fn system_roots() -> Arc<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    Arc::new(roots)
}

/// Accepts any certificate, but still checks that the server holds its key (the handshake
/// signature).
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The full chain check, except the name (libpq's `verify-ca`: the certificate comes from a
/// trusted CA, whatever host it names).
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_must_exist_and_hold_a_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("absent.pem");
        assert!(matches!(
            client_config(&Trust::RootFile(missing.clone())),
            Err(TrustError::Read { path, .. }) if path == missing
        ));
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        assert!(matches!(
            client_config(&Trust::ChainOnly(Some(empty.clone()))),
            Err(TrustError::Empty(path)) if path == empty
        ));
        for trust in [
            Trust::SystemRoots,
            Trust::AnyCertificate,
            Trust::ChainOnly(None),
        ] {
            assert!(client_config(&trust).is_ok(), "{trust:?}");
        }
    }
}
