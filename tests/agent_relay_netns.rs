//! An on-path relay in its own network namespace between `dtcprobe peer` and `dtcprobe agent`
//! (both the real binary, each in a namespace of its own): it forwards the control connection,
//! records every byte, catches the agent's callback in one session to steal a real token, and in
//! the next session, while the agent's callback is refused, presents that token (and a made-up
//! one) to the near side's pinned callback port from the very address the near side connected
//! to. The forged callback must not turn the refused callback into a pass, and nothing of the
//! request or the answer may be readable in what the relay carried (issue 13 items 1 and 5).
//!
//! ```text
//! near 198.18.2.1 --- 198.18.2.2 relay 198.18.3.2 --- 198.18.3.1 agent
//! ```
//!
//! The relay is a userspace TCP proxy (no routing between near and agent), so the agent sees the
//! relay's 198.18.3.2 as the caller and calls back there; the near side sees 198.18.2.2 as the
//! agent's address, which is where the forgery comes from. Needs root (namespaces).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::callback_relay::{relay_one_session, RelayMode, RelayPlan};
use crate::support::netns::{can_run_netns_tests, dtcprobe_bin, dtcprobe_in, link_named, Netns};
use crate::support::{hop, parse_report};

const KEY: &str = "56d7334890cc14a4d44b3988829b248ed04f2f9aa3c31ec763dd2464a019f604";
const NEAR_IP: &str = "198.18.2.1";
const RELAY_NEAR_IP: &str = "198.18.2.2";
const RELAY_FAR_IP: &str = "198.18.3.2";
const AGENT_IP: &str = "198.18.3.1";
const CALLBACK_PORT: u16 = 47135;

/// Runs `f` on a thread inside `ns` (setns affects that thread only; sockets it makes stay in the
/// namespace).
fn in_ns<T: Send + 'static>(
    ns: &Netns,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = format!("/run/netns/{}", ns.name);
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("open netns");
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        f()
    })
}

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_agent(ns: &Netns, key: &Path, config: &Path) -> Agent {
    let mut child = ns
        .command(dtcprobe_bin())
        .args(["agent", "-v", "--listen", &format!("{AGENT_IP}:7135")])
        .arg("--key-file")
        .arg(key)
        .arg("-c")
        .arg(config)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn agent");
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("agent listening") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(20))
        .expect("agent did not start");
    Agent(child)
}

/// The agent in `far` with the test's key (`agent.key` in the returned folder) and zone `zone`.
fn agent_in(far: &Netns, zone: &str) -> (tempfile::TempDir, Agent) {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("agent.key");
    crate::support::write_key(&key, KEY);
    let config = dir.path().join("agent.toml");
    std::fs::write(&config, format!("zone = \"{zone}\"\n")).unwrap();
    let agent = start_agent(far, &key, &config);
    (dir, agent)
}

/// What the relay saw and did in one session.
#[derive(Debug, Default)]
struct Relayed {
    /// Control-connection bytes, both directions.
    bytes: Vec<u8>,
    /// A token the agent sent to the relay's callback catcher.
    caught_token: Option<String>,
    /// Forged callbacks made, and how many the near side acknowledged.
    forged: usize,
    forged_acked: usize,
}

/// Copies `from` to `to` until either closes (bounded by the sockets' read timeouts), recording.
fn copy(
    mut from: TcpStream,
    mut to: TcpStream,
    record: Arc<Mutex<Relayed>>,
    seen: Arc<Mutex<usize>>,
) {
    let mut buf = [0u8; 16 * 1024];
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                record.lock().unwrap().bytes.extend_from_slice(&buf[..n]);
                *seen.lock().unwrap() += n;
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                continue
            }
            Err(_) => break,
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

/// One relayed session. With `catch`, the relay listens where the agent calls back (so it
/// receives the real token); with `forge`, it presents those tokens to the near side's callback
/// port once the near side's request has gone by.
fn relay_session(
    relay: &Netns,
    listener: &TcpListener,
    catch: bool,
    forge: Vec<String>,
) -> Relayed {
    let record = Arc::new(Mutex::new(Relayed::default()));
    let catcher = catch.then(|| {
        let record = record.clone();
        in_ns(relay, move || {
            let l = TcpListener::bind((RELAY_FAR_IP, CALLBACK_PORT)).unwrap();
            l.set_nonblocking(true).unwrap();
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                match l.accept() {
                    Ok((mut s, _)) => {
                        s.set_nonblocking(false).unwrap();
                        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
                        let mut line = Vec::new();
                        let mut byte = [0u8; 1];
                        while line.len() < 100
                            && s.read(&mut byte).unwrap_or(0) == 1
                            && byte[0] != b'\n'
                        {
                            line.push(byte[0]);
                        }
                        let _ = s.write_all(b"ok\n");
                        record.lock().unwrap().caught_token =
                            Some(String::from_utf8_lossy(&line).into_owned());
                        return;
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        })
    });
    let (near, _) = listener.accept().expect("near side connects to the relay");
    let far = in_ns(relay, || TcpStream::connect((AGENT_IP, 7135)))
        .join()
        .unwrap()
        .expect("relay connects to the agent");
    for s in [&near, &far] {
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
    }
    let from_near = Arc::new(Mutex::new(0usize));
    let up = {
        let (a, b, r, seen) = (
            near.try_clone().unwrap(),
            far.try_clone().unwrap(),
            record.clone(),
            from_near.clone(),
        );
        std::thread::spawn(move || copy(a, b, r, seen))
    };
    let down = {
        let (a, b, r) = (
            far.try_clone().unwrap(),
            near.try_clone().unwrap(),
            record.clone(),
        );
        std::thread::spawn(move || copy(a, b, r, Arc::new(Mutex::new(0))))
    };
    if !forge.is_empty() {
        // The near side's handshake message is about 120 bytes; once more has gone by, its
        // encrypted request is on the way and its callback listener is open.
        let deadline = Instant::now() + Duration::from_secs(10);
        while *from_near.lock().unwrap() < 200 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let record = record.clone();
        in_ns(relay, move || {
            for token in forge {
                let to: SocketAddr = format!("{NEAR_IP}:{CALLBACK_PORT}").parse().unwrap();
                let Ok(mut s) = TcpStream::connect_timeout(&to, Duration::from_secs(2)) else {
                    continue;
                };
                record.lock().unwrap().forged += 1;
                let _ = s.write_all(format!("{token}\n").as_bytes());
                s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                let mut ack = [0u8; 3];
                if s.read_exact(&mut ack).is_ok() && &ack == b"ok\n" {
                    record.lock().unwrap().forged_acked += 1;
                }
            }
        })
        .join()
        .unwrap();
    }
    up.join().unwrap();
    down.join().unwrap();
    if let Some(c) = catcher {
        c.join().unwrap();
    }
    Arc::try_unwrap(record).unwrap().into_inner().unwrap()
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

/// near --- relay --- far (the addresses above); no routing between near and far: the relay is
/// a userspace proxy. Each zone's DNS goes nowhere (127.0.0.1), its hosts file has localhost only.
fn three_zones() -> (Netns, Netns, Netns) {
    let near = Netns::new("dprn");
    let relay = Netns::new("dprr");
    let far = Netns::new("dprf");
    link_named(
        &near,
        "eth0",
        "198.18.2.1/24",
        &relay,
        "eth0",
        "198.18.2.2/24",
    );
    link_named(
        &relay,
        "eth1",
        "198.18.3.2/24",
        &far,
        "eth0",
        "198.18.3.1/24",
    );
    for ns in [&near, &relay, &far] {
        ns.etc_file("hosts", "127.0.0.1 localhost\n");
        ns.etc_file(
            "resolv.conf",
            "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n",
        );
    }
    (near, relay, far)
}

#[test]
fn an_on_path_relay_in_a_namespace_reads_nothing_and_cannot_forge_the_callback() {
    if !can_run_netns_tests(
        "an_on_path_relay_in_a_namespace_reads_nothing_and_cannot_forge_the_callback",
    ) {
        return;
    }
    let (near, relay, far) = three_zones();
    let (dir, _agent) = agent_in(&far, "sqlzone-secret");
    let key = dir.path().join("agent.key");

    let listener = in_ns(&relay, || TcpListener::bind((RELAY_NEAR_IP, 7135)))
        .join()
        .unwrap()
        .unwrap();
    let key_arg = key.to_str().unwrap().to_string();
    let args = |key: &str| -> Vec<String> {
        [
            "peer",
            &format!("{RELAY_NEAR_IP}:7135"),
            "--key-file",
            key,
            "--callback-port",
            &CALLBACK_PORT.to_string(),
            "--caller-name",
            "webhost-secret",
            "--zone",
            "webzone-secret",
            "--reverse",
            "tcp://caller:9",
            "-f",
            "json",
            "--timeout",
            "2s",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let near_name = near.name.clone();
    let run_peer = |key: String| {
        let a = args(&key);
        let ns = NsRef(near_name.clone());
        std::thread::spawn(move || {
            let refs: Vec<&str> = a.iter().map(String::as_str).collect();
            ns.run(&refs)
        })
    };

    // Session 1: the relay catches the agent's callback and keeps its token.
    let peer1 = run_peer(key_arg.clone());
    let first = relay_session(&relay, &listener, true, Vec::new());
    let (_, out1, err1) = peer1.join().unwrap();
    let token = first
        .caught_token
        .clone()
        .unwrap_or_else(|| panic!("the relay caught no callback: {out1}{err1}"));
    assert_eq!(token.len(), 64, "{token}");

    // Session 2: nothing catches the agent's callback (refused at the relay); the relay forges.
    let peer2 = run_peer(key_arg.clone());
    let second = relay_session(
        &relay,
        &listener,
        false,
        vec![token.clone(), "0".repeat(64)],
    );
    let (code, out2, err2) = peer2.join().unwrap();
    let report = parse_report(&out2);
    assert_eq!(
        hop(&report, "agent", "login")["status"],
        "pass",
        "the session must run through the relay: {out2}{err2}"
    );
    assert!(second.forged >= 1, "the relay made no forged callback");
    assert_eq!(
        second.forged_acked, 0,
        "the near side acknowledged a forged token"
    );
    let callback = hop(&report, "callback", "callback");
    assert_ne!(
        callback["status"], "pass",
        "forged callback counted: {callback:#}"
    );
    assert_ne!(code, 0, "a refused callback must not exit 0: {out2}");

    // The eavesdropper's view of both sessions.
    let mut bytes = first.bytes.clone();
    bytes.extend_from_slice(&second.bytes);
    assert!(contains(&bytes, "Noise_NXpsk0"), "capture misses the hello");
    let host = gethostname::gethostname().to_string_lossy().to_string();
    let mut secrets = vec![
        "webhost-secret",
        "webzone-secret",
        "sqlzone-secret",
        "caller_name",
        "reverse",
        "callback",
        RELAY_FAR_IP,
        "tcp://",
        &token,
    ];
    if host.len() >= 4 {
        secrets.push(&host);
    }
    let seen: Vec<&str> = secrets
        .iter()
        .copied()
        .filter(|s| contains(&bytes, s))
        .collect();
    assert!(seen.is_empty(), "readable by the relay: {seen:?}");
}

/// A namespace known by name only (the `Netns` itself stays with the test and deletes it).
struct NsRef(String);

impl NsRef {
    fn run(&self, args: &[&str]) -> (i32, String, String) {
        let ns = std::mem::ManuallyDrop::new(Netns {
            name: self.0.clone(),
        });
        dtcprobe_in(&ns, args)
    }
}

/// Issue 25 items 4 and 6: a relay in a namespace of its own on the path carries the agent's
/// callback (the agent calls back the relay, which it takes for the caller). Session 1: it
/// presents the token to the near side itself and cuts the control connection (the agent's
/// answer never arrives): `callback` is `warn` `callback_unverified`, `resolve` fails, and `peer`
/// exits 1, never 0 on that callback alone. Session 2: it forwards the callback both ways from a
/// source port of its own and leaves the session alone: the agent's answer names the port its
/// callback left from, which is not the one that arrived: `warn` `callback_unverified` with
/// `relayed`, and `--fail-on warning` exits 1. The agent's lookup of the caller passes in both
/// (its hosts file names the relay `webhost`), so nothing else fails the run.
#[test]
fn a_relay_in_a_namespace_that_presents_or_forwards_the_callback_does_not_pass() {
    if !can_run_netns_tests(
        "a_relay_in_a_namespace_that_presents_or_forwards_the_callback_does_not_pass",
    ) {
        return;
    }
    let started = Instant::now();
    let (near, relay, far) = three_zones();
    far.etc_file(
        "hosts",
        &format!("127.0.0.1 localhost\n{RELAY_FAR_IP} webhost\n"),
    );
    let (dir, _agent) = agent_in(&far, "sql");
    let key = dir.path().join("agent.key").to_str().unwrap().to_string();

    let session = |mode: RelayMode, port: u16, extra: &[&str]| {
        let listener = in_ns(&relay, move || TcpListener::bind((RELAY_NEAR_IP, port)))
            .join()
            .unwrap()
            .unwrap();
        listener.set_nonblocking(true).unwrap();
        let plan = RelayPlan {
            mode,
            agent: format!("{AGENT_IP}:7135").parse().unwrap(),
            agent_side: RELAY_FAR_IP.parse().unwrap(),
            near_side: RELAY_NEAR_IP.parse().unwrap(),
            near_callback: format!("{NEAR_IP}:{CALLBACK_PORT}").parse().unwrap(),
        };
        // The relay's sockets are made on a thread inside its namespace.
        let relaying = in_ns(&relay, move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                    relay_one_session(&listener, plan).await
                })
        });
        let mut args = vec![
            "peer".to_string(),
            format!("{RELAY_NEAR_IP}:{port}"),
            "--key-file".into(),
            key.clone(),
            "--callback-port".into(),
            CALLBACK_PORT.to_string(),
            "--caller-name".into(),
            "webhost".into(),
            "-f".into(),
            "json".into(),
            "--timeout".into(),
            "2s".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, out, err) = dtcprobe_in(&near, &refs);
        let relayed = relaying.join().unwrap();
        (code, parse_report(&out), relayed, format!("{out}{err}"))
    };

    // 1. The token presented by the relay, then the session cut.
    let (code, report, relayed, output) = session(RelayMode::PresentTokenAndCut, 7135, &[]);
    assert!(
        relayed.acknowledged,
        "the relay's token was not taken: {relayed:?} {output}"
    );
    let callback = hop(&report, "callback", "callback");
    assert_eq!(callback["status"], "warn", "{output}");
    assert_eq!(callback["cause"], "callback_unverified", "{output}");
    assert_eq!(
        hop(&report, "callback", "resolve")["status"],
        "fail",
        "{output}"
    );
    assert_eq!(code, 1, "a callback alone must not pass the run: {output}");
    eprintln!("relay presents the token and cuts: exit {code}, callback {callback}");

    // 2. The callback forwarded from another source port; the session goes on.
    let (code, report, relayed, output) =
        session(RelayMode::ForwardCallback, 7136, &["--fail-on", "warning"]);
    assert!(
        relayed.acknowledged,
        "the forwarded callback was not acknowledged: {output}"
    );
    assert_eq!(hop(&report, "agent", "login")["status"], "pass", "{output}");
    assert_eq!(
        hop(&report, "callback", "resolve")["status"],
        "pass",
        "{output}"
    );
    let callback = hop(&report, "callback", "callback");
    assert_eq!(callback["status"], "warn", "{output}");
    assert_eq!(callback["cause"], "callback_unverified", "{output}");
    assert_eq!(callback["data"]["relayed"], true, "{output}");
    let (agent_port, arrived_port) = (relayed.agent_source_port, relayed.relay_source_port);
    assert_ne!(agent_port, arrived_port);
    assert_eq!(
        callback["data"]["agent_source_port"],
        agent_port.unwrap(),
        "{output}"
    );
    assert_eq!(
        callback["data"]["source_port"],
        arrived_port.unwrap(),
        "{output}"
    );
    assert_eq!(code, 1, "--fail-on warning: {output}");
    eprintln!(
        "relay forwards the callback: exit {code} (--fail-on warning), callback {callback}; \
         both sessions in {:.1}s",
        started.elapsed().as_secs_f64()
    );
}
