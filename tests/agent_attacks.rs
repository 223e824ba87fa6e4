//! Attacks on the agent (issue 13), bounded in count and time, each asserting that a real peer is
//! still served and nothing is forged: idle-socket lockout, a /metrics flood under a small file
//! limit, malformed frames, log injection and log volume, the replay cache, an on-path relay
//! forging the callback, oversize reverse requests, unsafe key files, what the hello reveals, and
//! how a silent client is counted.
//!
//! Deliberately written against the agent's stable surface only (the binary, `AgentConfig`'s
//! original fields, `serve`, `agent_checks`, `PeerOptions`), so the same file also builds against
//! the code before the hardening: run there, 9 of 11 cases failed; `malformed_frames_do_not_stop_
//! service` (a regression guard) and `metrics_flood_does_not_take_the_main_port_down` (which does
//! not reproduce the reported EMFILE in this setup) passed there too. Loopback only, no root.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::local_agent;
use dtcprobe::agent::client::{agent_checks, PeerOptions};
use dtcprobe::agent::protocol::{Key, ReverseTarget};
use dtcprobe::agent::server::AgentState;
use dtcprobe::agent::AgentConfig;
use dtcprobe::model::{CheckResult, HopKind, Status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

use crate::support;
use support::netns::dtcprobe_bin;

const KEY: &str = "145a08a11ed9154aa0c7c16e5c3d9c09b34ff718997cb8d4928de60d43292703";

fn key() -> Key {
    Key::from_bytes(KEY.as_bytes(), "test").unwrap()
}

async fn start_agent(config: AgentConfig) -> (SocketAddr, Arc<AgentState>) {
    local_agent::start_agent(key(), config).await
}

fn peer_opts(agent: SocketAddr) -> PeerOptions {
    local_agent::peer_opts(agent, key(), Duration::from_secs(8))
}

use local_agent::find;

fn hop_status(c: &CheckResult, kind: HopKind) -> Status {
    c.hops
        .iter()
        .find(|h| h.hop == kind)
        .unwrap_or_else(|| panic!("no {kind:?} hop in {c:#?}"))
        .status
}

/// A TCP connection from a chosen loopback source address.
async fn connect_from(source: &str, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source.parse().unwrap(), 0))?;
    socket.connect(to).await
}

/// A real peer run (in-process near side) must authenticate and get its callback.
async fn assert_real_peer_served(agent: SocketAddr, what: &str) {
    let out = agent_checks(&peer_opts(agent)).await;
    let login = hop_status(find(&out.checks, "agent"), HopKind::Login);
    assert_eq!(login, Status::Pass, "{what}: {:#?}", out.checks);
    let callback = hop_status(find(&out.checks, "callback"), HopKind::Callback);
    assert_eq!(callback, Status::Pass, "{what}: {:#?}", out.checks);
}

// ---------------------------------------------------------------------------------------------
// The binary, for the cases that need a process of its own (file limits, logs, metrics).

struct BinAgent {
    child: std::process::Child,
    addr: String,
    metrics: Option<String>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for BinAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn listen_field(line: &str) -> Option<String> {
    let at = line.find("listen=")? + "listen=".len();
    Some(line[at..].split_whitespace().next()?.to_string())
}

/// Starts `dtcprobe agent -v` with `config` (TOML, original keys only), optionally under an
/// open-files limit (`RLIMIT_NOFILE`, soft and hard), logging to a file.
fn start_bin_agent(config: &str, metrics: bool, nofile: Option<u64>) -> BinAgent {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("agent.key");
    support::write_key(&key, KEY);
    let cfg = dir.path().join("agent.toml");
    std::fs::write(&cfg, config).unwrap();
    let log = dir.path().join("agent.log");
    let mut cmd = Command::new(dtcprobe_bin());
    cmd.args(["agent", "-v", "--listen", "127.0.0.1:0", "--key-file"])
        .arg(&key)
        .arg("-c")
        .arg(&cfg)
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    if metrics {
        cmd.args(["--metrics-listen", "127.0.0.1:0"]);
    }
    if let Some(n) = nofile {
        use std::os::unix::process::CommandExt;
        // SAFETY: only async-signal-safe setrlimit between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                let lim = libc::rlimit {
                    rlim_cur: n,
                    rlim_max: n,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let (mut addr, mut maddr) = (None, None);
    while Instant::now() < deadline {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        for line in text.lines() {
            if line.contains("serving /metrics") {
                maddr = listen_field(line);
            } else if line.contains("agent listening") {
                addr = listen_field(line);
            }
        }
        if addr.is_some() && (!metrics || maddr.is_some()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    BinAgent {
        child,
        addr: addr.expect("agent did not start"),
        metrics: maddr,
        log,
        _dir: dir,
    }
}

/// `dtcprobe peer` (the binary) against `agent`: its exit code and JSON report.
fn bin_peer(agent: &str, extra: &[&str]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("peer.key");
    support::write_key(&key, KEY);
    let out = Command::new(dtcprobe_bin())
        .args(["peer", agent, "--timeout", "2s", "-f", "json", "--key-file"])
        .arg(&key)
        .args(["--callback-bind", "127.0.0.1"])
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let to: SocketAddr = addr.parse().ok()?;
    let mut s = std::net::TcpStream::connect_timeout(&to, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    Some((head.split(' ').nth(1)?.parse().ok()?, body.to_string()))
}

fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|v| v.parse().ok())
    })
}

// ---------------------------------------------------------------------------------------------

/// Issue 13 #1: idle unauthenticated sockets must not take the session slots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_do_not_lock_out_real_peers() {
    let (agent, _state) = start_agent(AgentConfig::default()).await;
    // 48 idle connections from another source address, held open for the whole test.
    let mut idle = Vec::new();
    for _ in 0..48 {
        if let Ok(s) = connect_from("127.0.0.2", agent).await {
            idle.push(s);
        }
    }
    assert!(idle.len() >= 16, "could not open the idle sockets");
    tokio::time::sleep(Duration::from_millis(200)).await;
    for i in 0..3 {
        assert_real_peer_served(agent, &format!("peer {i} with {} idle sockets", idle.len())).await;
    }
}

/// Issue 13 #6 (and the 200-peer figure): more simultaneous real peers than the old default of 16
/// sessions are all served.
///
/// All 40 come from 127.0.0.1, so the per-source budget of handshakes in progress (default 32,
/// tested on its own in `idle_sockets_do_not_lock_out_real_peers`) is raised to 40 here: under
/// the load of the rest of the suite more than 32 handshakes can be pending at once, and then the
/// budget, not the session limit this test is about, turns peers away: the likely cause of one CI
/// run (c1f17c0) where 34 of the 40 were served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_simultaneous_peers_are_served() {
    let (agent, _state) = start_agent(AgentConfig {
        max_pending_per_source: 40,
        ..AgentConfig::default()
    })
    .await;
    let runs = (0..40).map(|_| {
        let opts = peer_opts(agent);
        tokio::spawn(async move { agent_checks(&opts).await })
    });
    let mut served = 0;
    for r in futures::future::join_all(runs).await {
        let out = r.unwrap();
        if hop_status(find(&out.checks, "agent"), HopKind::Login) == Status::Pass {
            served += 1;
        }
    }
    assert_eq!(served, 40, "simultaneous peers served");
}

/// Issue 13 #2: a /metrics flood under a small open-files limit must leave the main port serving,
/// and /metrics must answer again afterwards.
#[test]
fn metrics_flood_does_not_take_the_main_port_down() {
    let agent = start_bin_agent("", true, Some(160));
    let metrics = agent.metrics.clone().unwrap();
    let mut flood = Vec::new();
    for _ in 0..300 {
        let to: SocketAddr = metrics.parse().unwrap();
        match std::net::TcpStream::connect_timeout(&to, Duration::from_secs(1)) {
            Ok(s) => flood.push(s),
            Err(_) => break,
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let (code, report) = bin_peer(&agent.addr, &[]);
    assert_eq!(code, Some(0), "peer during a /metrics flood: {report}");
    drop(flood);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut answer = None;
    while Instant::now() < deadline && answer.is_none() {
        answer = http_get(&metrics, "/metrics").filter(|(status, _)| *status == 200);
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(answer.is_some(), "/metrics did not recover after the flood");
}

/// Malformed frames (regression guard: the old code survived these too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_do_not_stop_service() {
    let (agent, _state) = start_agent(AgentConfig::default()).await;
    let payloads: Vec<Vec<u8>> = vec![
        vec![0xff, 0xff, 0xff, 0xff],
        vec![0, 0, 0, 0],
        vec![0, 0, 0, 10, b'{'],
        b"\x00\x00\x00\x05hello".to_vec(),
        b"\x00\x00\x00\x0b{\"v\":99999}".to_vec(),
        b"GET / HTTP/1.1\r\n\r\n".to_vec(),
        (0..=255u8).collect(),
        vec![0u8; 70_000],
    ];
    for p in &payloads {
        if let Ok(mut s) = TcpStream::connect(agent).await {
            let _ = s.write_all(p).await;
            let mut sink = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut sink)).await;
        }
    }
    assert_real_peer_served(agent, "after malformed frames").await;
}

/// Issue 13 #3: attacker bytes must not forge log lines (newline, ESC), and a flood of bad
/// connections must not write one warning each.
#[test]
fn log_injection_is_escaped_and_warnings_are_rate_limited() {
    let agent = start_bin_agent("", false, None);
    let inject = "x\nFORGED INFO dtcprobe::agent::server: authenticated ping\u{1b}[2J";
    let rt = tokio::runtime::Runtime::new().unwrap();
    let addr: SocketAddr = agent.addr.parse().unwrap();
    rt.block_on(async {
        for i in 0..300u32 {
            let version = 2 + i % 2; // v2 (HMAC) and v3 (Noise): whichever this agent speaks
            let payload = serde_json::json!({"v": version, "msg": {"type": inject}}).to_string();
            let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
            frame.extend_from_slice(payload.as_bytes());
            if let Ok(mut s) = TcpStream::connect(addr).await {
                let mut first = [0u8; 4];
                let _ =
                    tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut first)).await;
                let _ = s.write_all(&frame).await;
                let mut sink = Vec::new();
                let _ =
                    tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut sink)).await;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    let log = std::fs::read(&agent.log).unwrap();
    assert!(!log.contains(&0x1b), "raw ESC in the agent log");
    let text = String::from_utf8_lossy(&log);
    let forged: Vec<&str> = text.lines().filter(|l| l.starts_with("FORGED")).collect();
    assert!(forged.is_empty(), "forged log lines: {forged:?}");
    let lines = text.lines().count();
    assert!(lines < 60, "{lines} log lines for 300 bad connections");
}

/// Issue 13 #4: many authenticated requests must not fill a replay cache and lock everyone out
/// (the old cache, keyed on single-use server nonces, refused everyone once full: 4096 entries
/// with `max_sessions = 1`).
///
/// This test failed once on a loaded machine, from two races: the agent gave its single session
/// slot back only after sending its answer, so a near side that started its next request at once
/// could meet its own previous session and be refused `busy` (seen: one request in 4,200 with the
/// flood tests running beside it); and a 500 ms hop timeout can be missed by a starved thread.
/// The agent now gives the slot back before the answer leaves (so no try may meet a busy agent:
/// checked), and the hop timeout is 5 s (it bounds waits that a served request never reaches).
/// What is checked is unchanged: every request is served; a request counts as refused only when
/// three tries in a row fail (a full cache refuses every later one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_requests_do_not_fill_a_replay_cache() {
    let config = AgentConfig {
        max_sessions: 1,
        ..Default::default()
    };
    let (agent, state) = start_agent(config).await;
    let mut opts = peer_opts(agent);
    opts.hop_timeout = Duration::from_secs(5);
    let started = Instant::now();
    let mut refused_at = None;
    let mut failed_tries = Vec::new();
    'requests: for i in 0..4200 {
        for attempt in 0..3 {
            let out = agent_checks(&opts).await;
            let login = find(&out.checks, "agent");
            if hop_status(login, HopKind::Login) == Status::Pass {
                break;
            }
            failed_tries.push((i, attempt, login.hops.clone()));
            if attempt == 2 {
                refused_at = Some((i, login.hops.clone()));
                break 'requests;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(started.elapsed() < Duration::from_secs(180), "too slow");
    }
    let busy = state
        .stats
        .refused_busy
        .load(std::sync::atomic::Ordering::Relaxed);
    eprintln!(
        "4200 requests with max_sessions = 1 in {:.1}s; failed tries: {}; busy refusals: {busy}",
        started.elapsed().as_secs_f64(),
        failed_tries.len()
    );
    assert!(
        refused_at.is_none(),
        "refused after many requests: {refused_at:#?}"
    );
    assert_eq!(
        busy, 0,
        "a try met the previous session's slot: {failed_tries:#?}"
    );
}

/// Issue 13 #5 and #9: an on-path relay (a TCP proxy the near side talks through, at another
/// address) reads what it can of the session and tries to answer the callback itself while the
/// agent's own callback is refused. The near side must not report a passing callback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_on_path_relay_cannot_forge_the_callback() {
    let (agent, _state) = start_agent(AgentConfig::default()).await;
    // The relay listens on 127.0.0.3 and connects to the agent from 127.0.0.3, so the agent calls
    // back 127.0.0.3, where the near side's callback listener (bound to 127.0.0.1) is not:
    // the agent's callback is refused, as behind a one-way firewall.
    let relay = TcpListener::bind("127.0.0.3:0").await.unwrap();
    let relay_addr = relay.local_addr().unwrap();
    let forged = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let forged_count = forged.clone();
    tokio::spawn(async move {
        let Ok((mut near, _)) = relay.accept().await else {
            return;
        };
        let mut far = connect_from("127.0.0.3", agent).await.unwrap();
        let (mut near_r, mut near_w) = near.split();
        let (mut far_r, mut far_w) = far.split();
        let mut seen = Vec::new();
        let mut buf = [0u8; 8192];
        let mut back = [0u8; 8192];
        let mut callback_port: Option<u16> = None;
        let mut token: Option<String> = None;
        let deadline = Instant::now() + Duration::from_secs(8);
        loop {
            if Instant::now() > deadline {
                break;
            }
            tokio::select! {
                n = near_r.read(&mut buf) => match n {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        seen.extend_from_slice(&buf[..n]);
                        if far_w.write_all(&buf[..n]).await.is_err() { break; }
                        let text = String::from_utf8_lossy(&seen).replace("\\\"", "\"");
                        callback_port = callback_port.or_else(|| field(&text, "\"port\":").and_then(|p| p.parse().ok()));
                        token = token.or_else(|| field(&text, "\"token\":\"").map(|t| t.trim_end_matches('"').to_string()));
                        if let (Some(port), Some(tok)) = (callback_port, token.clone()) {
                            // Forge the callback from the relay's own address, while relaying on.
                            let forged_count = forged_count.clone();
                            tokio::spawn(async move {
                                if let Ok(mut cb) = connect_from("127.0.0.3", SocketAddr::new("127.0.0.1".parse().unwrap(), port)).await {
                                    let _ = cb.write_all(format!("{tok}\n").as_bytes()).await;
                                    forged_count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                    let mut ack = [0u8; 3];
                                    let _ = tokio::time::timeout(Duration::from_secs(5), cb.read_exact(&mut ack)).await;
                                }
                            });
                            callback_port = Some(0);
                        }
                    }
                },
                n = far_r.read(&mut back) => match n {
                    Ok(0) | Err(_) => break,
                    Ok(n) => if near_w.write_all(&back[..n]).await.is_err() { break; },
                },
            }
        }
    });
    let out = agent_checks(&peer_opts(relay_addr)).await;
    // The session itself works through the relay (else the test would prove nothing).
    let login = find(&out.checks, "agent");
    assert_eq!(
        hop_status(login, HopKind::Login),
        Status::Pass,
        "{login:#?}"
    );
    let callback = find(&out.checks, "callback");
    let status = hop_status(callback, HopKind::Callback);
    assert_ne!(
        status,
        Status::Pass,
        "a refused callback reported as pass (forged attempts: {}): {callback:#?}",
        forged.load(std::sync::atomic::Ordering::Relaxed)
    );
}

/// The text after `key` up to the next `,` or `}` (a crude reader of the relayed JSON).
fn field(text: &str, key: &str) -> Option<String> {
    let at = text.find(key)? + key.len();
    let rest = &text[at..];
    let end = rest.find([',', '}'])?;
    Some(rest[..end].to_string())
}

/// Issue 13 #6: a request for more reverse checks than allowed is refused whole; none runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_reverse_requests_are_refused_whole() {
    let (agent, state) = start_agent(AgentConfig::default()).await;
    let mut opts = peer_opts(agent);
    opts.reverse = (0..133)
        .map(|i| ReverseTarget {
            name: format!("r{i}"),
            url: "tcp://caller:9".into(),
            to_caller: true,
        })
        .collect();
    let out = agent_checks(&opts).await;
    let ran = state
        .stats
        .reverse_run
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(ran, 0, "reverse checks run for an over-limit request");
    let login = find(&out.checks, "agent");
    assert_eq!(
        hop_status(login, HopKind::Login),
        Status::Fail,
        "{login:#?}"
    );
    assert_real_peer_served(agent, "after an oversize request").await;
}

/// Issue 13 #7: a key file others may read, or a FIFO, is refused promptly (exit 78).
#[test]
fn unsafe_key_files_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let readable = dir.path().join("readable.key");
    std::fs::write(&readable, KEY).unwrap();
    std::fs::set_permissions(&readable, std::fs::Permissions::from_mode(0o644)).unwrap();
    let fifo = dir.path().join("fifo.key");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    for path in [&readable, &fifo] {
        let mut child = Command::new(dtcprobe_bin())
            .args(["agent", "--listen", "127.0.0.1:0", "--key-file"])
            .arg(path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break Some(s);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut err = String::new();
        let _ = child.stderr.take().unwrap().read_to_string(&mut err);
        assert_eq!(
            status.and_then(|s| s.code()),
            Some(78),
            "{}: {err}",
            path.display()
        );
    }
}

/// Issue 13 #8: before authentication the agent reveals neither its host name nor its version.
#[tokio::test]
async fn the_hello_reveals_nothing_about_the_agent() {
    let (agent, _state) = start_agent(AgentConfig::default()).await;
    let mut s = TcpStream::connect(agent).await.unwrap();
    let mut len = [0u8; 4];
    s.read_exact(&mut len).await.unwrap();
    let mut hello = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut hello).await.unwrap();
    let text = String::from_utf8_lossy(&hello).to_string();
    let host = gethostname::gethostname().to_string_lossy().to_string();
    assert!(!text.contains(&host), "host name in the hello: {text}");
    for leak in [
        env!("CARGO_PKG_VERSION"),
        "tool_version",
        "\"time\"",
        "\"agent\"",
    ] {
        assert!(!text.contains(leak), "`{leak}` in the hello: {text}");
    }
}

/// Issue 13 #10: a client that never sends a request is counted as a timeout, not a protocol error.
#[test]
fn silent_clients_are_counted_as_timeouts() {
    let agent = start_bin_agent("frame_timeout = \"1s\"\n", true, None);
    let metrics = agent.metrics.clone().unwrap();
    let silent = std::net::TcpStream::connect(&agent.addr).unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    drop(silent);
    let (_, body) = http_get(&metrics, "/metrics").expect("metrics");
    let timeout = sample(&body, "dtcprobe_agent_refused_total{reason=\"timeout\"}");
    let protocol = sample(&body, "dtcprobe_agent_refused_total{reason=\"protocol\"}");
    assert_eq!((timeout, protocol), (Some(1.0), Some(0.0)), "{body}");
}
