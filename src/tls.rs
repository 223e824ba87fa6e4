//! The TLS crypto provider for SQL Server logins (tiberius speaks TLS through rustls).
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
