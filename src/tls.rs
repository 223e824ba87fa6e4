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

#[cfg(all(unix, not(target_os = "macos")))]
mod openssl_store;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
    build_config(trust, Keep::Nothing)
}

/// As [`client_config`], also keeping what the server showed in `capture`: its certificate
/// chain, and whether the chain check against the roots `trust` names (this host's store when
/// it names none) passed, whatever `trust` then lets through. The certificate report of a
/// login (`data.certificate`, [`crate::hops::certificate`]) is read from it.
pub fn capturing_config(
    trust: &Trust,
    capture: &CertCapture,
) -> Result<rustls::ClientConfig, TrustError> {
    build_config(trust, Keep::Judged(capture))
}

/// As [`capturing_config`], but the chain is only kept ([`CertCapture::shown`]), not checked
/// during the handshake: the check runs afterwards ([`ShownChain::judged`]) against this
/// run's trust store ([`TrustStore`]), which is then read while the handshake runs instead of
/// before it.
pub fn recording_config(
    trust: &Trust,
    capture: &CertCapture,
) -> Result<rustls::ClientConfig, TrustError> {
    build_config(trust, Keep::Shown(capture))
}

/// What a configuration keeps of the server's certificate.
enum Keep<'a> {
    Nothing,
    /// The chain and its check, run during the handshake.
    Judged(&'a CertCapture),
    /// The chain only, checked later.
    Shown(&'a CertCapture),
}

fn build_config(trust: &Trust, keep: Keep<'_>) -> Result<rustls::ClientConfig, TrustError> {
    let provider = ring_provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let webpki = |file: Option<&PathBuf>| -> Result<Arc<dyn ServerCertVerifier>, TrustError> {
        let Some(path) = file else {
            return Ok(Arc::new(SystemStore::load()?));
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
        Ok(chain_check(Arc::new(roots), &provider)?)
    };
    let (verifier, judge): (Arc<dyn ServerCertVerifier>, Option<PathBuf>) = match trust {
        Trust::SystemRoots => (webpki(None)?, None),
        Trust::RootFile(path) => (webpki(Some(path))?, Some(path.clone())),
        Trust::ChainOnly(file) => (Arc::new(AnyName(webpki(file.as_ref())?)), file.clone()),
        Trust::AnyCertificate => (Arc::new(AnyCertificate(provider.clone())), None),
    };
    let verifier = match keep {
        Keep::Nothing => verifier,
        Keep::Judged(capture) => Arc::new(Capturing {
            inner: verifier,
            judge: Some(webpki(judge.as_ref())?),
            capture: capture.clone(),
        }),
        Keep::Shown(capture) => Arc::new(Capturing {
            inner: verifier,
            judge: None,
            capture: capture.clone(),
        }),
    };
    Ok(builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

/// ring as a rustls provider (see the top of this file).
fn ring_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The full chain check (name included) against `roots`.
fn chain_check(
    roots: Arc<rustls::RootCertStore>,
    provider: &Arc<rustls::crypto::CryptoProvider>,
) -> Result<Arc<WebPkiServerVerifier>, rustls::Error> {
    WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))
}

/// What a server showed in its handshake: the chain as sent (its own certificate first) and
/// the outcome of the chain check, `Err` with rustls's reason when it failed.
#[derive(Debug, Clone)]
pub struct SeenChain {
    pub chain: Vec<CertificateDer<'static>>,
    pub verification: Result<(), rustls::Error>,
}

/// What a server showed in its handshake, before any chain check: the chain as sent, and what
/// the check takes besides (the name asked for, the stapled OCSP response, the handshake's
/// time), so that the check can run after the handshake with the outcome it would have had
/// during it.
#[derive(Debug, Clone)]
pub struct ShownChain {
    /// Never empty: the server's own certificate first.
    chain: Vec<CertificateDer<'static>>,
    name: ServerName<'static>,
    ocsp: Vec<u8>,
    now: UnixTime,
}

impl ShownChain {
    /// The chain checked by `judge` (this host's trust store, [`TrustStore::judge`]), as a
    /// [`capturing_config`] checks it during the handshake.
    pub fn judged(&self, judge: &SystemStore) -> SeenChain {
        let verification = match self.chain.split_first() {
            Some((end_entity, intermediates)) => judge
                .verify_server_cert(end_entity, intermediates, &self.name, &self.ocsp, self.now)
                .map(|_| ()),
            None => Err(rustls::Error::NoCertificatesPresented),
        };
        SeenChain {
            chain: self.chain.clone(),
            verification,
        }
    }
}

/// Where a [`capturing_config`] or [`recording_config`] puts what its handshake showed (the
/// last one, should the config be used twice).
#[derive(Debug, Clone, Default)]
pub struct CertCapture(Arc<Mutex<Option<Captured>>>);

#[derive(Debug, Clone)]
struct Captured {
    shown: ShownChain,
    /// The chain check run during the handshake ([`capturing_config`] only).
    verification: Option<Result<(), rustls::Error>>,
}

impl CertCapture {
    /// The chain and its check ([`capturing_config`]).
    pub fn seen(&self) -> Option<SeenChain> {
        let captured = self.0.lock().ok()?.clone()?;
        Some(SeenChain {
            chain: captured.shown.chain,
            verification: captured.verification?,
        })
    }

    /// The chain, not checked ([`recording_config`]).
    pub fn shown(&self) -> Option<ShownChain> {
        Some(self.0.lock().ok()?.as_ref()?.shown.clone())
    }
}

/// The handshake-signature half of a verifier that changes only how the chain is judged: the
/// three signature methods of [`ServerCertVerifier`], forwarded to `$to` (an expression of
/// `self`, itself a verifier), so each verifier here states only its chain rule.
macro_rules! signatures_checked_by {
    ($self:ident => $to:expr) => {
        fn verify_tls12_signature(
            &$self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            $to.verify_tls12_signature(message, cert, dss)
        }

        fn verify_tls13_signature(
            &$self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            $to.verify_tls13_signature(message, cert, dss)
        }

        fn supported_verify_schemes(&$self) -> Vec<SignatureScheme> {
            $to.supported_verify_schemes()
        }
    };
}

/// The verifier a configuration would use, which also keeps the chain and, with a `judge`, the
/// outcome of a full chain check for the certificate report.
#[derive(Debug)]
struct Capturing {
    inner: Arc<dyn ServerCertVerifier>,
    judge: Option<Arc<dyn ServerCertVerifier>>,
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
        let verification = self.judge.as_ref().map(|judge| {
            judge
                .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
                .map(|_| ())
        });
        let chain = std::iter::once(end_entity)
            .chain(intermediates)
            .map(|c| c.clone().into_owned())
            .collect();
        let shown = ShownChain {
            chain,
            name: server_name.to_owned(),
            ocsp: ocsp.to_vec(),
            now,
        };
        if let Ok(mut seen) = self.capture.0.lock() {
            *seen = Some(Captured {
                shown,
                verification,
            });
        }
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
    }

    signatures_checked_by!(self => self.inner);
}

/// This host's trust store, with the full chain check (name included) against it.
///
/// On Unix but macOS as OpenSSL reads it ([`openssl_store`]): the CA file (SSL_CERT_FILE, else
/// the bundle; on Debian /etc/ssl/certs/ca-certificates.crt) loaded whole, the CA directories
/// (SSL_CERT_DIR, else /etc/ssl/certs on Debian) looked up by issuer name hash when a chain is
/// judged, so the ~150 files of a Debian directory are not read at all when the bundle holds
/// the CA. On Windows and macOS, rustls-native-certs (the system store; on macOS also
/// SSL_CERT_FILE/SSL_CERT_DIR when set).
///
/// Read at each login that builds its own configuration, and once per run for the
/// certificate report ([`TrustStore`]), never once per process: a long-running `watch` then
/// sees a CA installed while it runs.
#[derive(Debug)]
pub struct SystemStore {
    /// The certificates loaded whole (the CA file; elsewhere the system store).
    roots: Arc<rustls::RootCertStore>,
    /// The chain check against `roots` alone (`None`: `roots` is empty).
    check: Option<Arc<WebPkiServerVerifier>>,
    #[cfg(all(unix, not(target_os = "macos")))]
    dirs: openssl_store::CaDirs,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl SystemStore {
    /// `Err`: no certificate to trust anywhere (rustls's reason, as for an empty store).
    fn load() -> Result<SystemStore, rustls::Error> {
        let provider = ring_provider();
        let mut roots = rustls::RootCertStore::empty();
        #[cfg(all(unix, not(target_os = "macos")))]
        let (certs, dirs) = {
            let at = openssl_store::Locations::of_this_host();
            (
                openssl_store::file_certificates(at.file.as_deref()),
                openssl_store::CaDirs::new(at.dirs),
            )
        };
        #[cfg(not(all(unix, not(target_os = "macos"))))]
        let certs = rustls_native_certs::load_native_certs().certs;
        for cert in certs {
            let _ = roots.add(cert);
        }
        let roots = Arc::new(roots);
        let check = match chain_check(roots.clone(), &provider) {
            Ok(check) => Some(check),
            #[cfg(all(unix, not(target_os = "macos")))]
            Err(_) if !dirs.is_empty() => None,
            Err(e) => return Err(e),
        };
        Ok(SystemStore {
            roots,
            check,
            #[cfg(all(unix, not(target_os = "macos")))]
            dirs,
            provider,
        })
    }

    /// The chain check for this chain: against the loaded roots and the directories' CAs of
    /// its issuers.
    fn check_for(
        &self,
        #[allow(unused_variables)] chain: &[CertificateDer<'_>],
    ) -> Result<Arc<WebPkiServerVerifier>, rustls::Error> {
        #[cfg(all(unix, not(target_os = "macos")))]
        {
            let found = self.dirs.issuers_of(chain);
            if !found.is_empty() {
                let mut roots = (*self.roots).clone();
                roots.add_parsable_certificates(found);
                return chain_check(Arc::new(roots), &self.provider);
            }
        }
        match &self.check {
            Some(check) => Ok(check.clone()),
            None => chain_check(self.roots.clone(), &self.provider),
        }
    }
}

impl ServerCertVerifier for SystemStore {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let chain: Vec<CertificateDer<'_>> = std::iter::once(end_entity)
            .chain(intermediates)
            .map(|c| CertificateDer::from(c.as_ref()))
            .collect();
        self.check_for(&chain)?.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp,
            now,
        )
    }

    // The handshake's signature, as any verifier of this provider checks it.
    signatures_checked_by!(self => AnyCertificate(self.provider.clone()));
}

/// What a run shares of TLS between its checks: this host's trust store, read once, and the
/// servers' certificate chains, each read by one handshake. A fresh one per run (a `watch`
/// round, an agent's probe), so a CA installed or a certificate renewed is seen by the next.
#[derive(Default)]
pub struct RunTls {
    pub trust_store: TrustStore,
    pub chains: ServerChains,
}

/// This host's trust store as the chain check of the certificate report, read once per run on
/// a blocking thread: started as soon as a TLS login is planned ([`TrustStore::prefetch`]), so
/// that reading and parsing it (some 150 files, a few milliseconds of CPU) runs beside the
/// login and the certificate handshake instead of before them.
pub struct TrustStore {
    loading: Mutex<Loading>,
    ready: tokio::sync::OnceCell<Result<Arc<SystemStore>, rustls::Error>>,
    /// What reads it: [`load_system_check`] (the unit tests count calls).
    load: fn() -> Result<Arc<SystemStore>, rustls::Error>,
}

impl Default for TrustStore {
    fn default() -> TrustStore {
        TrustStore {
            loading: Mutex::default(),
            ready: tokio::sync::OnceCell::new(),
            load: load_system_check,
        }
    }
}

#[derive(Default)]
enum Loading {
    #[default]
    NotStarted,
    Started(tokio::task::JoinHandle<Result<Arc<SystemStore>, rustls::Error>>),
    /// Handed to [`TrustStore::judge`].
    Taken,
}

fn load_system_check() -> Result<Arc<SystemStore>, rustls::Error> {
    SystemStore::load().map(Arc::new)
}

impl TrustStore {
    /// Starts reading the store on a blocking thread, unless that has begun. Needs a tokio
    /// runtime.
    pub fn prefetch(&self) {
        if self.ready.initialized() {
            return;
        }
        if let Ok(mut loading) = self.loading.lock() {
            if matches!(*loading, Loading::NotStarted) {
                *loading = Loading::Started(tokio::task::spawn_blocking(self.load));
            }
        }
    }

    /// The chain check against this host's trust store (`Err`: the store holds no usable
    /// certificate, rustls's reason), reading the store first if no [`Self::prefetch`] did.
    pub async fn judge(&self) -> Result<Arc<SystemStore>, rustls::Error> {
        self.ready
            .get_or_init(|| async {
                let started = match self.loading.lock() {
                    Ok(mut loading) => match std::mem::replace(&mut *loading, Loading::Taken) {
                        Loading::Started(handle) => Some(handle),
                        Loading::NotStarted | Loading::Taken => None,
                    },
                    Err(_) => None,
                };
                let handle = started.unwrap_or_else(|| tokio::task::spawn_blocking(self.load));
                // A load that panicked (none is known to) is tried once more, here.
                handle.await.unwrap_or_else(|_| (self.load)())
            })
            .await
            .clone()
    }
}

/// Why no certificate chain was read from a server.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ChainError {
    /// A TDS server that answered PRELOGIN with ENCRYPT_NOT_SUP.
    #[error("the server offers no TLS (PRELOGIN ENCRYPT_NOT_SUP)")]
    NoTls,
    #[error("no certificate within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Failed(String),
}

/// Which handshake showed a chain: the server's address, the name asked for (SNI), and how the
/// handshake was made (the caller's words, e.g. TLS first or inside TDS PRELOGIN packets).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerKey {
    pub addr: SocketAddr,
    pub name: String,
    pub how: String,
}

/// The servers' chains read in one run: one handshake per [`ServerKey`], whatever number of
/// checks ask (those that ask while it runs wait for it), its outcome shared, failures too.
#[derive(Default)]
pub struct ServerChains(Mutex<HashMap<ServerKey, Arc<ChainCell>>>);

type ChainCell = tokio::sync::OnceCell<Result<ShownChain, ChainError>>;

impl ServerChains {
    /// The chain `key` names: read by `read` on the first call, else the first call's outcome.
    pub async fn get_or_read<F, Fut>(
        &self,
        key: ServerKey,
        read: F,
    ) -> Result<ShownChain, ChainError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<ShownChain, ChainError>>,
    {
        let cell = match self.0.lock() {
            Ok(mut book) => book.entry(key).or_default().clone(),
            // A panic elsewhere while the book was held: read again rather than fail.
            Err(_) => Arc::default(),
        };
        cell.get_or_init(read).await.clone()
    }
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
struct AnyName(Arc<dyn ServerCertVerifier>);

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

    signatures_checked_by!(self => self.0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    static LOADS: AtomicUsize = AtomicUsize::new(0);

    fn counted_load() -> Result<Arc<SystemStore>, rustls::Error> {
        LOADS.fetch_add(1, Ordering::SeqCst);
        load_system_check()
    }

    #[tokio::test]
    async fn the_trust_store_is_read_once_per_run_and_fresh_for_the_next() {
        let run = TrustStore {
            load: counted_load,
            ..TrustStore::default()
        };
        run.prefetch();
        run.prefetch();
        let (a, b) = tokio::join!(run.judge(), run.judge());
        let c = run.judge().await;
        run.prefetch();
        assert_eq!(LOADS.load(Ordering::SeqCst), 1);
        // The same check every time (or the same reason this host's store is unusable).
        match (a, b, c) {
            (Ok(a), Ok(b), Ok(c)) => assert!(Arc::ptr_eq(&a, &b) && Arc::ptr_eq(&a, &c)),
            (Err(a), Err(b), Err(c)) => assert!(a == b && b == c),
            other => panic!("one run, different outcomes: {other:?}"),
        }
        // Not prefetched: read on first need. A new run reads the store again.
        let next = TrustStore {
            load: counted_load,
            ..TrustStore::default()
        };
        let _ = next.judge().await;
        let _ = next.judge().await;
        assert_eq!(LOADS.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn one_handshake_per_server_in_a_run_its_outcome_shared() {
        let chains = ServerChains::default();
        let reads = AtomicUsize::new(0);
        let key = |port: u16, how: &str| ServerKey {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            name: "sql.example".into(),
            how: how.into(),
        };
        let read = || async {
            reads.fetch_add(1, Ordering::SeqCst);
            // Still running when the second check asks.
            tokio::time::sleep(Duration::from_millis(20)).await;
            Err(ChainError::Failed(format!(
                "handshake {}",
                reads.load(Ordering::SeqCst)
            )))
        };
        let (a, b) = tokio::join!(
            chains.get_or_read(key(1433, "tds7"), read),
            chains.get_or_read(key(1433, "tds7"), read)
        );
        assert_eq!(reads.load(Ordering::SeqCst), 1);
        let text = |r: Result<ShownChain, ChainError>| r.err().map(|e| e.to_string());
        assert_eq!(text(a), Some("handshake 1".into()));
        assert_eq!(text(b), Some("handshake 1".into()));
        // Later checks of the run too; another port or a TDS 8 handshake is another server.
        let _ = chains.get_or_read(key(1433, "tds7"), read).await;
        assert_eq!(reads.load(Ordering::SeqCst), 1);
        let _ = chains.get_or_read(key(1434, "tds7"), read).await;
        let _ = chains.get_or_read(key(1433, "tds8"), read).await;
        assert_eq!(reads.load(Ordering::SeqCst), 3);
    }

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
