//! Idle-session survival (hop `idle`, `hold=DUR`) end to end: the real binary in a "web"
//! namespace, a stateful firewall on a router namespace, and a "sql" namespace with a TCP service
//! that keeps connections open and the TDS test peer.
//!
//! web 198.18.0.1 -- 198.18.0.254 fw 198.18.1.254 -- 198.18.1.2 sql
//!
//! The router is a stateful firewall as found between zones: its forward chain accepts only
//! `ct state established,related` and new SYNs to the service ports, and a conntrack timeout
//! policy (`ct timeout`, attached to the connections on those ports in prerouting) expires an
//! established session after 10 s idle. Once expired, the session's next packet is no longer
//! "established": on the silent ports it is dropped (clients see silence), on the reset ports
//! the router answers it with a TCP reset. A hold of 5 s stays inside the timeout and passes.
//! All cases run concurrently in one dtcprobe run (about 15 s + the probe window).

use crate::support;

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::netns::{can_run_netns_tests, check_named_in, link_named, Netns};
use support::tds_peer::{PeerConfig, TdsPeer};
use support::{hop, parse_report};

const SQL: &str = "198.18.1.2";
/// Plain TCP service: expired sessions are dropped silently / answered with a reset.
const TCP_SILENT: u16 = 7001;
const TCP_RESET: u16 = 7002;
/// The TDS peer, twice: silent drop / reset.
const TDS_SILENT: u16 = 1433;
const TDS_RESET: u16 = 1435;

/// The router's stateful firewall: 10 s idle timeout for established sessions on the service
/// ports; expired sessions dropped, or reset on the reset ports.
const FIREWALL: &str = r#"
table ip zonefw {
  ct timeout idle10 {
    protocol tcp;
    l3proto ip;
    policy = { established: 10 }
  }
  chain pre {
    type filter hook prerouting priority filter; policy accept;
    tcp dport { 7001, 7002, 1433, 1435 } ct timeout set "idle10"
  }
  chain forward {
    type filter hook forward priority filter; policy drop;
    ct state established,related accept
    ct state new tcp flags & (syn|ack|rst|fin) == syn tcp dport { 7001, 7002, 1433, 1435 } accept
    ct state new tcp dport { 7002, 1435 } reject with tcp reset
  }
}
"#;

struct Net {
    web: Netns,
    fw: Netns,
    sql: Netns,
}

impl Net {
    fn new(prefix: &str) -> Net {
        let web = Netns::new(&format!("{prefix}w"));
        let fw = Netns::new(&format!("{prefix}f"));
        let sql = Netns::new(&format!("{prefix}s"));
        link_named(
            &web,
            "eth0",
            "198.18.0.1/24",
            &fw,
            "eth0",
            "198.18.0.254/24",
        );
        link_named(
            &fw,
            "eth1",
            "198.18.1.254/24",
            &sql,
            "eth0",
            "198.18.1.2/24",
        );
        web.sh("ip route add default via 198.18.0.254");
        sql.sh("ip route add default via 198.18.1.254");
        fw.sh("sysctl -qw net.ipv4.ip_forward=1");
        for ns in [&web, &fw, &sql] {
            ns.etc_file("hosts", "127.0.0.1 localhost\n");
            ns.etc_file(
                "resolv.conf",
                "nameserver 198.18.1.2\noptions timeout:1 attempts:1\n",
            );
        }
        Net { web, fw, sql }
    }
}

/// Runs `f` inside `ns` (see [`Netns::inside`]).
fn inside<T: Send + 'static>(ns: &Netns, f: impl FnOnce() -> T + Send + 'static) -> T {
    ns.inside(f)
}

/// A TCP service that accepts and keeps every connection open, silent, until dropped (a
/// listener that closes at once would end the session itself, with a FIN).
struct HoldingService {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HoldingService {
    fn start(ns: &Netns, addr: SocketAddr) -> HoldingService {
        let listener = inside(ns, move || TcpListener::bind(addr).expect("bind"));
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut open = Vec::new();
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => open.push(s),
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        HoldingService {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for HoldingService {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn a_firewall_idle_timeout_is_found_and_named_by_how_the_session_died() {
    if !can_run_netns_tests("a_firewall_idle_timeout_is_found_and_named_by_how_the_session_died") {
        return;
    }
    let net = Net::new("dpi");
    net.fw.nft(FIREWALL);
    let at = |port: u16| -> SocketAddr { format!("{SQL}:{port}").parse().unwrap() };
    let _tcp_silent = HoldingService::start(&net.sql, at(TCP_SILENT));
    let _tcp_reset = HoldingService::start(&net.sql, at(TCP_RESET));
    let peer_config = PeerConfig::default();
    let password = peer_config.password.clone();
    let (config_silent, config_reset) = (peer_config.clone(), peer_config);
    let _tds_silent = inside(&net.sql, move || {
        TdsPeer::start_on(at(TDS_SILENT), config_silent)
    });
    let _tds_reset = inside(&net.sql, move || {
        TdsPeer::start_on(at(TDS_RESET), config_reset)
    });
    let mut pw = tempfile::NamedTempFile::new().unwrap();
    writeln!(pw, "{password}").unwrap();

    let tcp = |port: u16, hold: &str| format!("tcp://{SQL}:{port}?hold={hold}");
    let mssql = |port: u16, hold: &str| {
        format!("mssql://probe@{SQL}:{port}/app?trust_server_certificate=true&hold={hold}")
    };
    let cases = [
        ("tcp-silence", tcp(TCP_SILENT, "15s")),
        ("tcp-short", tcp(TCP_SILENT, "5s")),
        ("tcp-reset", tcp(TCP_RESET, "15s")),
        ("sql-silence", mssql(TDS_SILENT, "15s")),
        ("sql-short", mssql(TDS_SILENT, "5s")),
        ("sql-reset", mssql(TDS_RESET, "15s")),
    ];
    let named: Vec<String> = cases.iter().map(|(n, u)| format!("{n}={u}")).collect();
    let started = Instant::now();
    let (code, stdout, stderr) = check_named_in(&net.web, pw.path().to_str().unwrap(), &named);
    let wall = started.elapsed();
    assert_eq!(code, 1, "stderr: {stderr}\n{stdout}");
    let report = parse_report(&stdout);
    crate::report_schema::assert_valid("held sessions: pass, silence, reset", &report);
    for (name, _) in &cases {
        let idle = hop(&report, name, "idle");
        eprintln!(
            "netns_idle: {name}: {} {} in {}s",
            idle["status"], idle["data"]["died_by"], idle["duration_seconds"]
        );
    }

    // Before the hold every session works: the hop `idle` is about the idle time alone.
    for (name, _) in &cases {
        let first = if name.starts_with("sql") {
            "tx_local"
        } else {
            "tcp"
        };
        assert_eq!(hop(&report, name, first)["status"], "pass", "{name}");
    }
    for name in ["tcp-short", "sql-short"] {
        let idle = hop(&report, name, "idle");
        assert_eq!(idle["status"], "pass", "{name}: {idle:#}");
        assert_eq!(idle["data"]["hold_seconds"], 5.0, "{name}");
        assert!(
            idle["detail"]
                .as_str()
                .unwrap()
                .contains("survived 5s idle"),
            "{idle:#}"
        );
    }
    for (name, died_by) in [
        ("tcp-silence", "silence"),
        ("tcp-reset", "reset"),
        ("sql-silence", "silence"),
        ("sql-reset", "reset"),
    ] {
        let idle = hop(&report, name, "idle");
        assert_eq!(
            (idle["status"].as_str(), idle["cause"].as_str()),
            (Some("fail"), Some("idle_expired")),
            "{name}: {idle:#}"
        );
        assert_eq!(idle["data"]["died_by"], died_by, "{name}: {idle:#}");
        assert_eq!(idle["data"]["hold_seconds"], 15.0, "{name}");
        let hint = idle["hint"].as_str().unwrap();
        for want in [
            "idle (session) timeout",
            "KeepAliveTime",
            "tcp_keepalive_time",
        ] {
            assert!(hint.contains(want), "{name}: {want}: {hint}");
        }
    }
    // The SQL checks' sessions died where the tool used them: SELECT 1 on the same session.
    let sql = hop(&report, "sql-silence", "idle");
    assert!(
        sql["detail"].as_str().unwrap().contains("SELECT 1"),
        "{sql:#}"
    );
    // The first keepalive probe leaves at once and its ACK ends the wait; silence costs the probe window (the
    // 2s hop timeout, at least 3s). Everything ran at once: one hold, not six.
    let tcp_short = hop(&report, "tcp-short", "idle")["duration_seconds"]
        .as_f64()
        .unwrap();
    assert!(tcp_short < 6.0, "tcp-short idle took {tcp_short}s");
    assert!(
        wall < Duration::from_secs(30),
        "the run took {wall:?}; the cases should run concurrently"
    );
    eprintln!("netns_idle: one run of 6 held sessions took {wall:?}");
}

/// Bad holds are refused before any packet, naming the flag, the URL parameter or the config key
/// (exit 2 for the command line, 78 for a config file), and a misspelt tcp:// parameter is named
/// rather than ignored. No root needed.
#[test]
fn bad_holds_and_unknown_tcp_parameters_are_refused_by_name() {
    let (code, _, stderr) = support::run_bin(&["check", "--hold", "soon", "tcp://127.0.0.1:9"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--hold"), "{stderr}");
    let (code, _, stderr) = support::run_bin(&["check", "--hold", "5s", "dns://localhost"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("--hold applies to tcp and mssql"),
        "{stderr}"
    );

    let (code, _, stderr) = support::run_bin(&["check", "tcp://127.0.0.1:9?hodl=5s"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("unknown parameter `hodl`"), "{stderr}");
    let (code, _, stderr) = support::run_bin(&["check", "tcp://127.0.0.1:9?hold=0s"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("invalid hold"), "{stderr}");

    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        "[[check]]\nname = \"a\"\nkind = \"tcp\"\nhost = \"127.0.0.1\"\nport = 9\nhold = \"25h\"\n",
    )
    .unwrap();
    let (code, _, stderr) = support::run_bin(&["check", "-c", cfg.to_str().unwrap()]);
    assert_eq!(code, 78, "{stderr}");
    assert!(
        stderr.contains("hold") && stderr.contains(":6:"),
        "{stderr}"
    );
}
