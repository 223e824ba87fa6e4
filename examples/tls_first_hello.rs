//! Time to the first ClientHello in a fresh process, per rustls crypto provider (docs/mssql.md:
//! why dtcprobe installs ring). `cargo run --release --example tls_first_hello -- ring` (or
//! `aws-lc`); run it several times: only the first handshake of a process pays aws-lc's entropy
//! start-up.
use rustls::{ClientConfig, ClientConnection, RootCertStore};
use std::sync::Arc;
use std::time::Instant;
fn main() {
    let which = std::env::args().nth(1).unwrap_or_default();
    let t0 = Instant::now();
    let provider = match which.as_str() {
        "ring" => rustls::crypto::ring::default_provider(),
        _ => rustls::crypto::aws_lc_rs::default_provider(),
    };
    let cfg = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth();
    let mut out = Vec::new();
    let t1 = Instant::now();
    let mut c =
        ClientConnection::new(Arc::new(cfg.clone()), "example.test".try_into().unwrap()).unwrap();
    c.write_tls(&mut out).unwrap();
    let first = t1.elapsed();
    let t2 = Instant::now();
    let mut c2 = ClientConnection::new(Arc::new(cfg), "example.test".try_into().unwrap()).unwrap();
    c2.write_tls(&mut out).unwrap();
    let second = t2.elapsed();
    println!(
        "{which} first_clienthello_us {} second_us {} total_us {}",
        first.as_micros(),
        second.as_micros(),
        t0.elapsed().as_micros()
    );
}
