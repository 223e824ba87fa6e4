//! The `sqlbrowser` hop (UDP 1434, SSRP) against a stand-in SQL Server Browser, then the login on
//! the port it names. UDP 1434 is a privileged port, so these tests need root; each test uses its
//! own loopback address (127.83.x.y, derived from the pid) so they can run in parallel.

#![cfg(unix)]

use crate::support::tds_peer;

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};

use serde_json::Value;
use tds_peer::{BrowserPeer, PeerConfig, TdsPeer};

const BIN: &str = env!("CARGO_BIN_EXE_dtcprobe");

fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

fn loopback(n: u8) -> IpAddr {
    let pid = std::process::id();
    IpAddr::V4(Ipv4Addr::new(127, 83, (pid % 250) as u8 + 1, n))
}

fn run(url: &str, password: &str) -> Value {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    writeln!(f, "{password}").unwrap();
    let out = Command::new(BIN)
        .args([
            "check",
            url,
            "-f",
            "json",
            "--timeout",
            "1s",
            "--password-file",
            f.path().to_str().unwrap(),
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{e}: {stdout} {}", String::from_utf8_lossy(&out.stderr)))
}

fn hop<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["checks"][0]["hops"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["hop"] == name)
        .unwrap_or_else(|| panic!("{name}: {v:#}"))
}

macro_rules! need_root {
    () => {
        if !is_root() {
            eprintln!("SKIP: binding UDP 1434 needs root; run the tests as root (CI does)");
            return;
        }
    };
}

#[test]
fn named_instance_is_found_through_the_browser() {
    need_root!();
    let ip = loopback(10);
    let cfg = PeerConfig::default();
    let pw = cfg.password.clone();
    let peer = TdsPeer::start_on(SocketAddr::new(ip, 0), cfg);
    let _browser =
        BrowserPeer::start(SocketAddr::new(ip, 1434), "INST1", Some(peer.port())).unwrap();
    let v = run(
        &format!("mssql://probe@{ip}\\INST1/app?trust_server_certificate=true"),
        &pw,
    );
    let b = hop(&v, "sqlbrowser");
    assert_eq!(b["status"], "pass", "{b:#}");
    assert_eq!(b["data"]["tcp_port"], peer.port());
    assert_eq!(hop(&v, "tcp")["data"]["port"], peer.port());
    assert_eq!(hop(&v, "login")["status"], "pass", "{v:#}");
    assert_eq!(hop(&v, "tx_local")["status"], "pass", "{v:#}");
}

#[test]
fn unknown_instance_gets_no_answer() {
    need_root!();
    let ip = loopback(11);
    let _browser = BrowserPeer::start(SocketAddr::new(ip, 1434), "INST1", Some(50000)).unwrap();
    let v = run(&format!("mssql://probe@{ip}\\NOSUCH/app"), "x");
    let b = hop(&v, "sqlbrowser");
    assert_eq!(
        (b["status"].as_str(), b["cause"].as_str()),
        (Some("fail"), Some("timeout")),
        "{b:#}"
    );
    assert!(b["hint"].as_str().unwrap().contains("UDP 1434"));
    assert_eq!(hop(&v, "tcp")["status"], "skip");
    assert_eq!(hop(&v, "login")["status"], "skip");
}

#[test]
fn browser_not_running_is_refused() {
    need_root!();
    let ip = loopback(12);
    let v = run(&format!("mssql://probe@{ip}\\INST1/app"), "x");
    let b = hop(&v, "sqlbrowser");
    assert_eq!(
        (b["status"].as_str(), b["cause"].as_str()),
        (Some("fail"), Some("refused")),
        "{b:#}"
    );
    assert!(b["hint"].as_str().unwrap().contains("Browser"));
}

#[test]
fn instance_without_tcp_is_refused_with_the_protocol_hint() {
    need_root!();
    let ip = loopback(13);
    let _browser = BrowserPeer::start(SocketAddr::new(ip, 1434), "INST1", None).unwrap();
    let v = run(&format!("mssql://probe@{ip}\\INST1/app"), "x");
    let b = hop(&v, "sqlbrowser");
    assert_eq!(
        (b["status"].as_str(), b["cause"].as_str()),
        (Some("fail"), Some("refused")),
        "{b:#}"
    );
    assert!(b["hint"].as_str().unwrap().contains("TCP/IP protocol"));
}
