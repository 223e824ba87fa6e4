//! Issue 25: agent identity (a forwarder between two agents holding one key), guessable keys,
//! and callbacks that nothing the agent said confirms. Loopback only, no root.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::agent_front::{self, FrontPlan};
use crate::support::callback_relay::{relay_one_session, RelayMode, RelayPlan};
use crate::support::local_agent::{self, find, BinAgent};
use dtcprobe::agent::client::agent_checks;
use dtcprobe::agent::protocol::{example_key_text, AgentIdentity, Key};
use dtcprobe::agent::server::{serve, AgentState};
use dtcprobe::agent::AgentConfig;
use dtcprobe::model::{Cause, CheckResult, HopKind, HopResult, Status};
use tokio::net::{TcpListener, TcpStream};

use crate::support;
use support::netns::dtcprobe_bin;

fn key() -> Key {
    Key::from_bytes(example_key_text("identity suite").as_bytes(), "test").unwrap()
}

fn hop(c: &CheckResult, kind: HopKind) -> &HopResult {
    c.hops
        .iter()
        .find(|h| h.hop == kind)
        .unwrap_or_else(|| panic!("no {kind:?} hop in {c:#?}"))
}

/// A forwarder without the key: every connection to it is passed on to `to`.
async fn forwarder(to: SocketAddr) -> SocketAddr {
    agent_front::start(to, FrontPlan::default()).await.addr
}

/// Issue 25 #1: with one key shared by every agent, a forwarder sent a peer aimed at agent A to
/// agent B and the run passed. Pinned to A, it now fails with `agent_identity` and nothing is
/// sent to B; unpinned, the report names the agent that answered.
#[tokio::test]
async fn a_forwarder_to_another_agent_with_the_same_key_is_caught_by_the_pin() {
    let a_identity = AgentIdentity::generate().unwrap();
    let b_identity = AgentIdentity::generate().unwrap();
    let start = |identity: AgentIdentity| async move {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = std::sync::Arc::new(AgentState::with_identity(
            key(),
            identity,
            AgentConfig::default(),
        ));
        let served = state.clone();
        tokio::spawn(async move {
            let _ = serve(listener, served, std::future::pending()).await;
        });
        (addr, state)
    };
    let (a, _a_state) = start(a_identity.clone()).await;
    let (b, b_state) = start(b_identity.clone()).await;
    let to_b = forwarder(b).await;
    let opts = |agent: SocketAddr, pin: Option<&AgentIdentity>| {
        let mut o = local_agent::peer_opts(agent, key(), Duration::from_secs(5));
        o.agent_pubkey = pin.map(|i| i.public());
        o
    };

    // Aimed at A (pinned), answered by B through the forwarder.
    let out = agent_checks(&opts(to_b, Some(&a_identity))).await;
    let login = hop(find(&out.checks, "agent"), HopKind::Login);
    assert_eq!(login.status, Status::Fail, "{:#?}", out.checks);
    assert_eq!(login.cause, Some(Cause::AgentIdentity), "{login:#?}");
    assert_eq!(login.data["agent_pubkey"], b_identity.public().to_hex());
    assert_eq!(
        login.data["expected_agent_pubkey"],
        a_identity.public().to_hex()
    );
    assert!(
        login.hint.as_deref().unwrap_or("").contains("wrong zone"),
        "{login:#?}"
    );
    let callback = find(&out.checks, "callback");
    assert_eq!(callback.status, Status::Skip, "{callback:#?}");
    assert_eq!(
        b_state
            .stats
            .requests
            .load(std::sync::atomic::Ordering::Relaxed),
        0,
        "a request reached the wrong agent"
    );

    // Unpinned: it works (as before), and says which agent answered.
    let out = agent_checks(&opts(to_b, None)).await;
    let login = hop(find(&out.checks, "agent"), HopKind::Login);
    assert_eq!(login.status, Status::Pass, "{:#?}", out.checks);
    assert_eq!(login.data["agent_pubkey"], b_identity.public().to_hex());
    assert_eq!(
        login.data["agent_fingerprint"],
        b_identity.public().fingerprint()
    );
    assert_eq!(login.data["agent_pinned"], false);
    assert!(login.detail.contains("not pinned"), "{login:#?}");

    // Pinned, and the pinned agent answers: a pass that says so.
    let out = agent_checks(&opts(a, Some(&a_identity))).await;
    let login = hop(find(&out.checks, "agent"), HopKind::Login);
    assert_eq!(login.status, Status::Pass, "{:#?}", out.checks);
    assert_eq!(login.data["agent_pinned"], true);
    assert_eq!(
        hop(find(&out.checks, "callback"), HopKind::Callback).status,
        Status::Pass
    );
}

fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(dtcprobe_bin())
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Issue 25 #3: guessable key files (32 `a`, 32 NUL bytes, text, a repeated pattern, a short
/// hex key) are refused by `peer` and `agent` with exit 78 and the keygen command; so is a weak
/// identity file.
#[test]
fn guessable_keys_exit_78_with_the_keygen_command() {
    let dir = tempfile::tempdir().unwrap();
    let random = example_key_text("weak-key test");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("a32", vec![b'a'; 32]),
        ("nul32", vec![0u8; 32]),
        (
            "text",
            b"correct horse battery staple, twice: correct horse".to_vec(),
        ),
        ("pattern", "0123456789abcdef".repeat(4).into_bytes()),
        ("short", random.trim().as_bytes()[..40].to_vec()),
    ];
    for (name, bytes) in &cases {
        let path = dir.path().join(name);
        support::write_key(&path, bytes);
        let path = path.to_str().unwrap();
        for args in [
            vec!["peer", "127.0.0.1:9", "--key-file", path],
            vec!["agent", "--listen", "127.0.0.1:0", "--key-file", path],
        ] {
            let (code, _, stderr) = run(&args);
            assert_eq!(code, Some(78), "{name} {args:?}: {stderr}");
            assert!(
                stderr.contains(&format!("dtcprobe keygen --out {path}")),
                "{name}: {stderr}"
            );
        }
    }
    // A good key, a weak identity file: the agent refuses it too.
    let good = dir.path().join("good.key");
    support::write_key(&good, &random);
    let weak_id = dir.path().join("weak.id");
    support::write_key(&weak_id, "aa".repeat(32));
    let (code, _, stderr) = run(&[
        "agent",
        "--listen",
        "127.0.0.1:0",
        "--key-file",
        good.to_str().unwrap(),
        "--identity-file",
        weak_id.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(78), "{stderr}");
    assert!(stderr.contains("keygen --identity --out"), "{stderr}");
}

/// `keygen --identity` prints the public key and fingerprint; the agent started with that file
/// prints the same; `peer --agent-pubkey` with it passes, with another key fails with
/// `agent_identity`, and without a pin says which agent answered and how to pin it. An agent
/// without `--identity-file` makes one beside its key file.
#[test]
fn keygen_identity_the_agent_start_line_and_peer_pins_agree() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("agent.key");
    support::write_key(&key_file, example_key_text("identity binary"));
    let id_file = dir.path().join("agent.id");
    let (code, stdout, stderr) = run(&["keygen", "--identity", "--out", id_file.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stderr}");
    let public = stdout
        .lines()
        .find_map(|l| l.strip_prefix("agent public key: "))
        .unwrap_or_else(|| panic!("{stdout}"))
        .to_string();
    let fingerprint = stdout
        .lines()
        .find_map(|l| l.strip_prefix("fingerprint: "))
        .unwrap_or_else(|| panic!("{stdout}"))
        .to_string();
    assert_eq!(public.len(), 64);
    assert!(
        !stdout.contains(std::fs::read_to_string(&id_file).unwrap().trim()),
        "private key printed"
    );
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&id_file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    let key = key_file.to_str().unwrap();
    let agent = BinAgent::start(
        "-v",
        &[
            "--key-file",
            key,
            "--identity-file",
            id_file.to_str().unwrap(),
        ],
    );
    assert!(agent.stderr.contains(&fingerprint), "{}", agent.stderr);
    assert!(
        agent.stderr.contains(&format!("--agent-pubkey {public}")),
        "{}",
        agent.stderr
    );

    let agent_addr = agent.addr.to_string();
    let peer = |extra: &[&str]| {
        let mut args = vec![
            "peer",
            agent_addr.as_str(),
            "--key-file",
            key,
            "--callback-bind",
            "127.0.0.1",
            "--format",
            "json",
        ];
        args.extend_from_slice(extra);
        run(&args)
    };
    let (code, _, stderr) = peer(&["--agent-pubkey", &public]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.contains("not pinned"), "{stderr}");
    let other = AgentIdentity::generate().unwrap().public().to_hex();
    let (code, stdout, stderr) = peer(&["--agent-pubkey", &other]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stdout.contains("\"agent_identity\""), "{stdout}");
    let (code, _, stderr) = peer(&[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("not pinned") && stderr.contains(&format!("--agent-pubkey {public}")),
        "{stderr}"
    );
    let (code, _, stderr) = peer(&["--agent-pubkey", "SHA256:abcd"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--agent-pubkey"), "{stderr}");
    drop(agent);

    // No --identity-file: made beside the key file on first start, the same on the next.
    let first = BinAgent::start("-v", &["--key-file", key]);
    let made = dir.path().join("agent.key.id");
    assert!(made.exists(), "{}", first.stderr);
    assert!(first.stderr.contains("made just now"), "{}", first.stderr);
    let line = |s: &str| {
        s.lines().find(|l| l.contains("identity SHA256:")).map(|l| {
            l.split("identity ")
                .nth(1)
                .unwrap()
                .split(' ')
                .next()
                .unwrap()
                .to_string()
        })
    };
    let first_fp = line(&first.stderr).unwrap();
    drop(first);
    let second = BinAgent::start("-v", &["--key-file", key]);
    assert_eq!(line(&second.stderr), Some(first_fp));
    assert!(
        !second.stderr.contains("made just now"),
        "{}",
        second.stderr
    );
}

/// Issue 25 #4: a relay on the path that carries the agent's callback presents the token itself
/// and cuts the control connection: the run used to pass on that callback alone. Now the
/// callback is `warn` (`callback_unverified`) and the lost answer fails the `resolve` hop. (The
/// same relay between namespaces, and one that forwards the callback: tests/agent_relay_netns.rs.)
#[tokio::test]
async fn a_relay_that_presents_the_token_and_cuts_the_session_does_not_pass() {
    let (agent, _state) = local_agent::start_agent(key(), AgentConfig::default()).await;
    // A fixed callback port, free on both loopback addresses.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    // Control connections to 127.0.0.3:R go on to the agent from 127.0.0.3, so the agent calls
    // back 127.0.0.3:port, where the relay takes the token.
    let relay = TcpListener::bind("127.0.0.3:0").await.unwrap();
    let relay_addr = relay.local_addr().unwrap();
    let relay_ip: std::net::IpAddr = "127.0.0.3".parse().unwrap();
    let relaying = tokio::spawn(async move {
        relay_one_session(
            &relay,
            RelayPlan {
                mode: RelayMode::PresentTokenAndCut,
                agent,
                agent_side: relay_ip,
                near_side: relay_ip,
                near_callback: SocketAddr::new("127.0.0.1".parse().unwrap(), port),
            },
        )
        .await
    });
    let mut opts = local_agent::peer_opts(relay_addr, key(), Duration::from_secs(5));
    opts.callback_port = port;
    let out = agent_checks(&opts).await;
    let relayed = relaying.await.unwrap();
    assert!(
        relayed.acknowledged,
        "the near side took the token: {relayed:?}"
    );
    let check = find(&out.checks, "callback");
    let callback = hop(check, HopKind::Callback);
    assert_eq!(callback.status, Status::Warn, "{:#?}", out.checks);
    assert_eq!(
        callback.cause,
        Some(Cause::CallbackUnverified),
        "{callback:#?}"
    );
    assert_eq!(
        hop(check, HopKind::Resolve).status,
        Status::Fail,
        "{check:#?}"
    );
    assert_eq!(check.status, Status::Fail, "{check:#?}");
}

/// Issue 25 #4: silent connections to a known callback port closed the agent's callback unread
/// (and the report blamed the firewall). Now the oldest silent one makes room. The silent
/// connections are made while the near side's request is held at a front (its callback listener
/// is open then), so they are all queued before the agent's callback: more of them than the
/// listener reads at once (16), so room must be made, for them and for the agent's.
#[tokio::test]
async fn silent_connections_to_the_callback_port_do_not_shut_the_callback_out() {
    const SILENT: usize = 24;
    let (agent, _state) = local_agent::start_agent(key(), AgentConfig::default()).await;
    let mut passed = 0;
    let mut closed = Vec::new();
    for _ in 0..3 {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let silent = held.clone();
        let front = agent_front::start(
            agent,
            FrontPlan {
                before_request: Some(Box::pin(async move {
                    for _ in 0..SILENT {
                        let s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
                        silent.lock().unwrap().push(s);
                    }
                })),
                ..Default::default()
            },
        )
        .await;
        let mut opts = local_agent::peer_opts(front.addr, key(), Duration::from_secs(5));
        opts.callback_port = port;
        let out = agent_checks(&opts).await;
        assert_eq!(held.lock().unwrap().len(), SILENT, "the silent connections");
        let callback = hop(find(&out.checks, "callback"), HopKind::Callback);
        if callback.status == Status::Pass {
            passed += 1;
        } else {
            eprintln!("{callback:#?}");
        }
        closed.push(
            callback
                .data
                .get("busy_closed")
                .and_then(|v| v.as_u64())
                .unwrap_or(0),
        );
    }
    eprintln!(
        "callbacks passed {passed} of 3 under {SILENT} silent connections; closed to make room: \
         {closed:?}"
    );
    assert_eq!(passed, 3);
    // 24 silent + the agent's, read 16 at a time: 9 closed each time (the oldest silent ones).
    assert!(
        closed.iter().all(|&c| c >= 9),
        "no room was made: {closed:?}"
    );
}
