//! The agent and the near side in-process on loopback: authentication (the Noise channel: wrong
//! key, replayed and tampered sessions, an old protocol version), frame limits, slow clients,
//! session bounds, policy refusals, lost agents. No root needed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::local_agent;
use dtcprobe::agent::client::{agent_checks, PeerOptions};
use dtcprobe::agent::protocol::{
    parse_body, read_frame, AgentIdentity, ErrorCode, Key, Message, RequestBody, ResponseBody,
    ReverseTarget, SecureChannel, NOISE_PATTERN,
};
use dtcprobe::agent::server::{serve, AgentState};
use dtcprobe::agent::{AgentConfig, AllowEntry};
use dtcprobe::model::{Cause, CheckResult, Direction, HopKind, HopResult, Status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

const T: Duration = Duration::from_secs(5);

fn key(c: u8) -> Key {
    Key::from_bytes(
        dtcprobe::agent::protocol::example_key_text(&format!("server {c}")).as_bytes(),
        "test",
    )
    .unwrap()
}

struct Agent {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<()>,
}

impl Agent {
    async fn start(config: AgentConfig) -> Agent {
        Agent::start_on("127.0.0.1:0", config).await
    }

    async fn start_on(bind: &str, config: AgentConfig) -> Agent {
        let listener = TcpListener::bind(bind).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(AgentState::new(key(b'k'), config));
        let (tx, rx) = oneshot::channel::<()>();
        let done = tokio::spawn(async move {
            serve(listener, state, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        Agent {
            addr,
            stop: Some(tx),
            done,
        }
    }

    async fn stop(mut self) -> Duration {
        let started = Instant::now();
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(10), &mut self.done)
            .await
            .expect("agent did not stop")
            .unwrap();
        started.elapsed()
    }
}

fn peer_opts(addr: SocketAddr, key: Key) -> PeerOptions {
    PeerOptions {
        zone: Some("web".into()),
        ..local_agent::peer_opts(addr, key, Duration::from_secs(5))
    }
}

use local_agent::find;

fn hop(c: &CheckResult, kind: HopKind) -> &dtcprobe::model::HopResult {
    c.hops
        .iter()
        .find(|h| h.hop == kind)
        .unwrap_or_else(|| panic!("no hop {kind:?} in {c:#?}"))
}

/// Connects and reads the agent's plain hello; returns the stream.
async fn hello(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    match read_frame(&mut s, T).await.unwrap() {
        Message::Hello { noise } => assert_eq!(noise, NOISE_PATTERN),
        other => panic!("expected hello, got {other:?}"),
    }
    s
}

/// Connects and completes the Noise handshake with `key`.
async fn channel(addr: SocketAddr, key: &Key) -> SecureChannel<TcpStream> {
    let s = TcpStream::connect(addr).await.unwrap();
    SecureChannel::connect(s, key, T).await.unwrap()
}

/// Sends a request body (raw JSON) over an established channel; returns the agent's first answer.
async fn request(ch: &mut SecureChannel<TcpStream>, body: &str) -> Message {
    ch.send(
        &Message::Request {
            body: body.to_string(),
        },
        T,
    )
    .await
    .unwrap();
    ch.recv(T).await.unwrap()
}

const PING: &str = r#"{"op":"ping"}"#;

#[tokio::test]
async fn callback_and_allowed_reverse_checks_pass_on_loopback() {
    let target = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target_port = target.local_addr().unwrap().port();
    let config = AgentConfig {
        zone: Some("sql".into()),
        cid: Some("{AAAA-1}".into()),
        allow: vec![AllowEntry::parse(&format!("127.0.0.1:{target_port}")).unwrap()],
        ..Default::default()
    };
    let agent = Agent::start(config).await;
    let mut opts = peer_opts(agent.addr, key(b'k'));
    opts.cid = Some("aaaa-1".into());
    opts.reverse = vec![
        ReverseTarget {
            name: "to-caller".into(),
            url: format!("tcp://caller:{target_port}"),
            to_caller: true,
        },
        ReverseTarget {
            name: "allowed".into(),
            url: format!("tcp://127.0.0.1:{target_port}"),
            to_caller: false,
        },
        ReverseTarget {
            name: "not-allowed".into(),
            url: "tcp://127.0.0.2:9".into(),
            to_caller: false,
        },
    ];
    let out = agent_checks(&opts).await;
    let checks = &out.checks;
    assert_eq!(out.agent_zone.as_deref(), Some("sql"));
    assert_eq!(find(checks, "agent").status, Status::Pass, "{checks:#?}");
    let cb = find(checks, "callback");
    assert_eq!(cb.direction, Direction::Reverse);
    assert_eq!(cb.from.as_deref(), Some("sql"));
    assert_eq!(cb.to.as_deref(), Some("web"));
    assert_eq!(hop(cb, HopKind::Callback).status, Status::Pass, "{cb:#?}");
    for name in ["to-caller", "allowed"] {
        let c = find(checks, name);
        assert_eq!(c.direction, Direction::Reverse);
        assert_eq!(c.status, Status::Pass, "{c:#?}");
    }
    let refused = find(checks, "not-allowed");
    assert_eq!(refused.status, Status::Fail);
    assert_eq!(refused.hops[0].cause, Some(Cause::Config));
    assert!(
        refused.hops[0].detail.contains("allow list"),
        "{refused:#?}"
    );
    // Same CID on both sides (case and braces ignored) -> duplicate_cid.
    let cid = find(checks, "msdtc_cid");
    assert_eq!(cid.hops[0].cause, Some(Cause::DuplicateCid), "{cid:#?}");
    assert!(agent.stop().await < Duration::from_secs(6));
}

#[tokio::test]
async fn wrong_key_is_refused() {
    let agent = Agent::start(AgentConfig::default()).await;
    let out = agent_checks(&peer_opts(agent.addr, key(b'x'))).await;
    let a = find(&out.checks, "agent");
    let login = hop(a, HopKind::Login);
    assert_eq!(login.status, Status::Fail);
    assert_eq!(login.cause, Some(Cause::AuthFailed), "{login:#?}");
    assert!(login.hint.as_deref().unwrap().contains("key"), "{login:#?}");
    let cb = find(&out.checks, "callback");
    assert_eq!(hop(cb, HopKind::Callback).status, Status::Skip);
    agent.stop().await;
}

#[tokio::test]
async fn a_callback_host_cannot_be_smuggled_in() {
    let agent = Agent::start(AgentConfig::default()).await;
    let mut ch = channel(agent.addr, &key(b'k')).await;
    // The protocol has no field for a callback host; an extra one is rejected, not ignored.
    let body = r#"{"op":"peer","callback":{"port":135,"host":"198.18.0.99"}}"#;
    match request(&mut ch, body).await {
        Message::Error {
            code: ErrorCode::Protocol,
            message,
        } => assert!(message.contains("host"), "{message}"),
        other => panic!("smuggled host not refused: {other:?}"),
    }
    agent.stop().await;
}

#[tokio::test]
async fn oversize_frames_are_rejected_from_the_prefix() {
    let agent = Agent::start(AgentConfig::default()).await;
    let mut s = hello(agent.addr).await;
    // Claims 16 MiB and sends none of it: the agent answers at once instead of waiting for it.
    s.write_all(&(16u32 << 20).to_be_bytes()).await.unwrap();
    let started = Instant::now();
    match read_frame(&mut s, T).await.unwrap() {
        Message::Error {
            code: ErrorCode::Protocol,
            message,
        } => assert!(message.contains("exceeds"), "{message}"),
        other => panic!("oversize frame not refused: {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(2));
    agent.stop().await;
}

#[tokio::test]
async fn slow_and_silent_clients_are_dropped() {
    let config = AgentConfig {
        frame_timeout: Duration::from_millis(500),
        ..Default::default()
    };
    let agent = Agent::start(config).await;

    async fn wait_closed(mut s: tokio::net::tcp::OwnedReadHalf) -> Instant {
        let mut buf = [0u8; 256];
        loop {
            match tokio::time::timeout(T, s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return Instant::now(),
                Ok(Ok(_)) => continue, // an error frame, then EOF
                Err(_) => panic!("client was not dropped"),
            }
        }
    }

    let started = Instant::now();
    // Silent after the hello.
    let silent = hello(agent.addr).await;
    let (silent_rd, _silent_wr) = silent.into_split();
    // Slowloris: a byte every 150ms never completes a frame within the deadline.
    let slow = hello(agent.addr).await;
    let (slow_rd, mut slow_wr) = slow.into_split();
    let trickle = tokio::spawn(async move {
        let mut bytes = 200u32.to_be_bytes().to_vec();
        bytes.extend_from_slice(&[b' '; 30]);
        for b in bytes {
            if slow_wr.write_all(&[b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    });
    let (silent_at, slow_at) = tokio::join!(wait_closed(silent_rd), wait_closed(slow_rd));
    trickle.abort();
    assert!(
        silent_at - started < Duration::from_secs(3),
        "silent client kept {:?}",
        silent_at - started
    );
    assert!(
        slow_at - started < Duration::from_secs(3),
        "slow client kept {:?}",
        slow_at - started
    );
    // The agent still serves a well-behaved client promptly.
    let mut ch = channel(agent.addr, &key(b'k')).await;
    assert_eq!(request(&mut ch, PING).await, Message::Accepted);
    agent.stop().await;
}

#[tokio::test]
async fn sessions_are_bounded() {
    let config = AgentConfig {
        max_sessions: 1,
        frame_timeout: Duration::from_secs(3),
        ..Default::default()
    };
    let agent = Agent::start(config).await;
    // Unauthenticated connections do not take the session slot...
    let _idle = hello(agent.addr).await;
    // ...an authenticated request does: this one holds it while the agent waits on a callback
    // port that accepts and never acknowledges.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let _silent_task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let mut holder = channel(agent.addr, &key(b'k')).await;
    let body = RequestBody::Peer(dtcprobe::agent::protocol::PeerRequest {
        callback: Some(dtcprobe::agent::protocol::CallbackRequest { port }),
        hop_timeout_ms: Some(2000),
        ..Default::default()
    });
    let body = serde_json::to_string(&body).unwrap();
    assert_eq!(request(&mut holder, &body).await, Message::Accepted);
    let mut second = channel(agent.addr, &key(b'k')).await;
    second
        .send(
            &Message::Request {
                body: PING.to_string(),
            },
            T,
        )
        .await
        .unwrap();
    match second.recv(T).await {
        Ok(Message::Error {
            code: ErrorCode::Busy,
            ..
        }) => {}
        other => panic!("second session not refused as busy: {other:?}"),
    }
    agent.stop().await;
}

/// A fake agent that plays the protocol up to `Accepted`, then drops the connection or hangs.
async fn fake_agent(hang: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (s, _) = listener.accept().await.unwrap();
        let mut s = SecureChannel::accept(s, &key(b'k'), &AgentIdentity::generate().unwrap(), T)
            .await
            .unwrap();
        let _ = s.recv(T).await;
        s.send(&Message::Accepted, T).await.unwrap();
        if hang {
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
        drop(s);
    });
    addr
}

#[tokio::test]
async fn an_agent_lost_mid_run_is_reported_without_hanging() {
    for (hang, cause) in [(false, Cause::Reset), (true, Cause::Timeout)] {
        let addr = fake_agent(hang).await;
        let mut opts = peer_opts(addr, key(b'k'));
        opts.session_timeout = Duration::from_secs(1);
        opts.reverse = vec![ReverseTarget {
            name: "r".into(),
            url: "tcp://caller:135".into(),
            to_caller: true,
        }];
        let started = Instant::now();
        let out = tokio::time::timeout(Duration::from_secs(10), agent_checks(&opts))
            .await
            .expect("near side hung");
        assert!(started.elapsed() < Duration::from_secs(4));
        let cb = hop(find(&out.checks, "callback"), HopKind::Callback);
        assert_eq!(cb.status, Status::Fail, "{cb:#?}");
        assert_eq!(cb.cause, Some(cause), "hang={hang}: {cb:#?}");
        let r = find(&out.checks, "r");
        assert_eq!(r.status, Status::Fail);
        assert_eq!(r.direction, Direction::Reverse);
        assert_eq!(r.hops[0].cause, Some(cause));
    }
}

#[tokio::test]
async fn nothing_listening_is_a_clear_agent_failure() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    let out = agent_checks(&peer_opts(addr, key(b'k'))).await;
    let tcp = hop(find(&out.checks, "agent"), HopKind::Tcp);
    assert_eq!(tcp.cause, Some(Cause::Refused), "{tcp:#?}");
}

#[tokio::test]
async fn ipv6_agent_calls_back_over_ipv6() {
    let agent = Agent::start_on("[::1]:0", AgentConfig::default()).await;
    let mut opts = peer_opts(agent.addr, key(b'k'));
    // The default bind (0.0.0.0) is switched to [::] because the agent connection is IPv6.
    opts.callback_bind = "0.0.0.0".parse().unwrap();
    opts.reverse = vec![ReverseTarget {
        name: "v6".into(),
        url: format!("tcp://caller:{}", agent.addr.port()),
        to_caller: true,
    }];
    let out = agent_checks(&opts).await;
    let cb = find(&out.checks, "callback");
    assert_eq!(hop(cb, HopKind::Callback).status, Status::Pass, "{cb:#?}");
    assert_eq!(
        cb.target,
        format!("tcp://[::1]:{}", cb.hops[1].data["port"])
    );
    let v6 = find(&out.checks, "v6");
    assert_eq!(v6.status, Status::Pass, "{v6:#?}");
    assert_eq!(v6.target, format!("tcp://[::1]:{}", agent.addr.port()));
    agent.stop().await;
}

#[tokio::test]
async fn a_silent_stranger_on_the_callback_port_does_not_block_the_callback() {
    // A scripted agent: once it has the callback port, a silent stranger connects there first,
    // then the "agent" calls back with the token and must be acknowledged promptly.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let k = key(b'k');
    let agent_key = k.clone();
    let script = tokio::spawn(async move {
        let (s, _) = listener.accept().await.unwrap();
        let mut s = SecureChannel::accept(s, &agent_key, &AgentIdentity::generate().unwrap(), T)
            .await
            .unwrap();
        let Message::Request { body } = s.recv(T).await.unwrap() else {
            panic!("no request")
        };
        let RequestBody::Peer(req) = parse_body::<RequestBody>(&body).unwrap() else {
            panic!("not peer")
        };
        let cb = req.callback.expect("callback requested");
        s.send(&Message::Accepted, T).await.unwrap();

        let _stranger = TcpStream::connect(("127.0.0.1", cb.port)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = Instant::now();
        let mut back = TcpStream::connect(("127.0.0.1", cb.port)).await.unwrap();
        let token = s.callback_token(&agent_key);
        back.write_all(format!("{token}\n").as_bytes())
            .await
            .unwrap();
        let mut ack = [0u8; 3];
        tokio::time::timeout(T, back.read_exact(&mut ack))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&ack, b"ok\n");
        let acked_in = started.elapsed();
        let callback = HopResult::pass(HopKind::Callback, "scripted");
        let body = ResponseBody {
            agent: "scripted".into(),
            callback: Some(callback),
            ..Default::default()
        };
        let body = serde_json::to_string(&body).unwrap();
        s.send(&Message::Response { body }, T).await.unwrap();
        acked_in
    });
    let out = agent_checks(&peer_opts(addr, k)).await;
    let acked_in = script.await.unwrap();
    assert!(
        acked_in < Duration::from_secs(1),
        "callback acknowledged after {acked_in:?}"
    );
    let cb = hop(find(&out.checks, "callback"), HopKind::Callback);
    assert_eq!(cb.status, Status::Pass, "{cb:#?}");
    assert_eq!(cb.data["stray_connections"], 1, "{cb:#?}");
}
