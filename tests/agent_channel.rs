//! The agent's encrypted channel (issue 13 item 1), in-process on loopback, through a relay that
//! forwards frame by frame (plain frames and encrypted records both start with a 4-byte length),
//! records every byte and can flip one: what an eavesdropper sees, tampering in each direction
//! and phase, replayed sessions in both directions, and a peer of the previous protocol version.
//! No root needed (the on-path callback forgery in network namespaces is in agent_relay_netns.rs).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::local_agent;
use dtcprobe::agent::client::{agent_checks, PeerOptions};
use dtcprobe::agent::protocol::{
    read_frame, ErrorCode, Key, Message, ReverseTarget, SecureChannel, NOISE_PATTERN,
};
use dtcprobe::agent::server::AgentState;
use dtcprobe::agent::AgentConfig;
use dtcprobe::model::{Cause, CheckResult, HopKind, HopResult, Status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const T: Duration = Duration::from_secs(5);
const KEY: &str = "9ed8d396b997858eb529a4778251f5230e725f7c6cbebd301f06f7c1d02957b1";

fn key() -> Key {
    Key::from_bytes(KEY.as_bytes(), "test").unwrap()
}

async fn start_agent(config: AgentConfig) -> (SocketAddr, Arc<AgentState>) {
    local_agent::start_agent(key(), config).await
}

fn peer_opts(agent: SocketAddr) -> PeerOptions {
    local_agent::peer_opts(agent, key(), Duration::from_secs(5))
}

use local_agent::find;

fn hop(c: &CheckResult, kind: HopKind) -> &HopResult {
    c.hops
        .iter()
        .find(|h| h.hop == kind)
        .unwrap_or_else(|| panic!("no {kind:?} hop in {c:#?}"))
}

fn stat(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Dir {
    ToAgent,
    ToPeer,
}

/// Every frame the relay forwarded, per direction, in order.
#[derive(Debug, Default)]
struct Capture {
    to_agent: Vec<Vec<u8>>,
    to_peer: Vec<Vec<u8>>,
}

impl Capture {
    fn all_bytes(&self) -> Vec<u8> {
        self.to_agent
            .iter()
            .chain(self.to_peer.iter())
            .flatten()
            .copied()
            .collect()
    }
}

/// A frame-by-frame relay to `agent` on 127.0.0.1; `tamper` flips one byte in the middle of the
/// payload of frame N (0-based) of one direction, in every session it relays.
async fn start_relay(
    agent: SocketAddr,
    tamper: Option<(Dir, usize)>,
) -> (SocketAddr, Arc<Mutex<Capture>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let capture = Arc::new(Mutex::new(Capture::default()));
    let shared = capture.clone();
    tokio::spawn(async move {
        while let Ok((near, _)) = listener.accept().await {
            let Ok(far) = TcpStream::connect(agent).await else {
                continue;
            };
            let (near_r, near_w) = near.into_split();
            let (far_r, far_w) = far.into_split();
            tokio::spawn(pump(near_r, far_w, Dir::ToAgent, tamper, shared.clone()));
            tokio::spawn(pump(far_r, near_w, Dir::ToPeer, tamper, shared.clone()));
        }
    });
    (addr, capture)
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    dir: Dir,
    tamper: Option<(Dir, usize)>,
    capture: Arc<Mutex<Capture>>,
) {
    // Bounded: a session has a handful of frames; the relay stops with either side.
    for index in 0..64 {
        let mut prefix = [0u8; 4];
        if from.read_exact(&mut prefix).await.is_err() {
            break;
        }
        let len = u32::from_be_bytes(prefix) as usize;
        if len > 1 << 20 {
            break;
        }
        let mut frame = prefix.to_vec();
        frame.resize(4 + len, 0);
        if from.read_exact(&mut frame[4..]).await.is_err() {
            break;
        }
        if tamper == Some((dir, index)) && len > 0 {
            alter(&mut frame);
        }
        {
            let mut c = capture.lock().unwrap();
            match dir {
                Dir::ToAgent => c.to_agent.push(frame.clone()),
                Dir::ToPeer => c.to_peer.push(frame.clone()),
            }
        }
        if to.write_all(&frame).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// Alters one byte of a frame the way that reaches the cryptography: in a plain handshake frame, a
/// hex digit of the Noise message (to another hex digit, so the JSON stays valid); in an encrypted
/// record, one bit in the middle of the ciphertext.
fn alter(frame: &mut [u8]) {
    const DATA: &[u8] = b"\"data\":\"";
    if let Some(at) = frame.windows(DATA.len()).position(|w| w == DATA) {
        let digit = &mut frame[at + DATA.len() + 10];
        *digit = if *digit == b'0' { b'1' } else { b'0' };
    } else {
        let middle = 4 + (frame.len() - 4) / 2;
        frame[middle] ^= 0x01;
    }
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

/// Issue 13 item 1: "traffic is encrypted, so an eavesdropper learns nothing". A real session with
/// a callback, a reverse check, a caller name, zones and a CID on both sides goes through the
/// relay; none of the request's or the answer's text appears in what it carried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eavesdropper_sees_no_request_or_answer_text() {
    let target = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target_port = target.local_addr().unwrap().port();
    let config = AgentConfig {
        zone: Some("sqlzone-secret".into()),
        cid: Some("{5EC12E70-AAAA-BBBB-CCCC-0123456789AB}".into()),
        ..Default::default()
    };
    let (agent, _state) = start_agent(config).await;
    let (relay, capture) = start_relay(agent, None).await;
    let mut opts = peer_opts(relay);
    opts.caller_name = Some("localhost".into());
    opts.zone = Some("webzone-secret".into());
    opts.reverse = vec![ReverseTarget {
        name: "reverse-check-secret".into(),
        url: format!("tcp://caller:{target_port}"),
        to_caller: true,
    }];
    let out = agent_checks(&opts).await;
    // The session really ran through the relay (else the capture would prove nothing).
    assert_eq!(
        hop(find(&out.checks, "agent"), HopKind::Login).status,
        Status::Pass
    );
    assert_eq!(
        hop(find(&out.checks, "callback"), HopKind::Callback).status,
        Status::Pass,
        "{:#?}",
        out.checks
    );
    assert_eq!(
        find(&out.checks, "reverse-check-secret").status,
        Status::Pass
    );
    assert_eq!(out.agent_zone.as_deref(), Some("sqlzone-secret"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let bytes = capture.lock().unwrap().all_bytes();
    // Control: the capture holds the session, with the hello readable in clear.
    assert!(contains(&bytes, NOISE_PATTERN), "capture misses the hello");
    assert!(
        bytes.len() > 600,
        "capture too small: {} bytes",
        bytes.len()
    );
    let host = gethostname::gethostname().to_string_lossy().to_string();
    let mut secrets = vec![
        // the request
        "reverse-check-secret",
        "webzone-secret",
        "caller_name",
        "localhost",
        "\"op\"",
        "reverse",
        "callback",
        "hop_timeout",
        // the answer
        "sqlzone-secret",
        "5EC12E70",
        "127.0.0.1",
        "caller_addr",
        "pass",
        "connected",
        // message types after the handshake
        "accepted",
        "response",
        "request",
    ];
    let port = target_port.to_string();
    secrets.push(&port);
    if host.len() >= 4 {
        secrets.push(&host);
    }
    let seen: Vec<&str> = secrets
        .iter()
        .copied()
        .filter(|s| contains(&bytes, s))
        .collect();
    assert!(seen.is_empty(), "readable on the wire: {seen:?}");
}

/// Flipping one bit of any frame after the hello is detected: the handshake fails, or the record
/// does not decrypt. Nothing the altered traffic carried is reported as a pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampering_with_any_frame_is_refused() {
    // (direction, frame index, what the near side must report)
    let cases = [
        (Dir::ToAgent, 0, "handshake `psk, e`"),
        (Dir::ToPeer, 1, "handshake `e, ee`"),
        (Dir::ToAgent, 1, "encrypted request"),
        (Dir::ToPeer, 2, "encrypted accepted"),
        (Dir::ToPeer, 3, "encrypted response"),
    ];
    let target = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target_port = target.local_addr().unwrap().port();
    for (dir, index, what) in cases {
        let (agent, state) = start_agent(AgentConfig::default()).await;
        let (relay, capture) = start_relay(agent, Some((dir, index))).await;
        let mut opts = peer_opts(relay);
        opts.reverse = vec![ReverseTarget {
            name: "r".into(),
            url: format!("tcp://caller:{target_port}"),
            to_caller: true,
        }];
        let started = Instant::now();
        let out = agent_checks(&opts).await;
        assert!(started.elapsed() < Duration::from_secs(8), "{what}: slow");
        let frames = {
            let c = capture.lock().unwrap();
            match dir {
                Dir::ToAgent => c.to_agent.len(),
                Dir::ToPeer => c.to_peer.len(),
            }
        };
        assert!(frames > index, "{what}: the frame to alter never passed");
        let login = hop(find(&out.checks, "agent"), HopKind::Login);
        let reverse = find(&out.checks, "r");
        assert_ne!(reverse.status, Status::Pass, "{what}: {reverse:#?}");
        if index == 3 {
            // The answer was altered: the session authenticated, the answer is refused.
            assert_eq!(login.status, Status::Pass, "{what}: {login:#?}");
            assert_eq!(
                reverse.hops[0].cause,
                Some(Cause::AuthFailed),
                "{what}: {reverse:#?}"
            );
            assert!(
                reverse.hops[0].detail.contains("did not decrypt"),
                "{what}: {reverse:#?}"
            );
        } else {
            assert_eq!(login.status, Status::Fail, "{what}: {login:#?}");
            assert_eq!(login.cause, Some(Cause::AuthFailed), "{what}: {login:#?}");
        }
        if dir == Dir::ToAgent {
            // The agent ran nothing for altered traffic.
            assert_eq!(stat(&state.stats.requests), 0, "{what}");
            assert_eq!(stat(&state.stats.reverse_run), 0, "{what}");
            // The tampered request is counted, like a wrong key, as an authentication refusal.
            assert_eq!(stat(&state.stats.refused_auth), 1, "{what}");
        }
    }
}

/// A recorded session replayed on a new connection, either way: the recorded `psk, e` is
/// accepted (it only proves the key was used once), but the recorded request does not decrypt
/// under the new session's keys, so the agent runs nothing; a recorded agent answer replayed to a
/// near side fails its handshake. No replay cache, no clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_sessions_are_refused_both_ways() {
    let (agent, state) = start_agent(AgentConfig::default()).await;
    let (relay, capture) = start_relay(agent, None).await;
    let out = agent_checks(&peer_opts(relay)).await;
    assert_eq!(
        hop(find(&out.checks, "callback"), HopKind::Callback).status,
        Status::Pass
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (to_agent, to_peer) = {
        let c = capture.lock().unwrap();
        (c.to_agent.clone(), c.to_peer.clone())
    };
    assert_eq!(to_agent.len(), 2, "handshake + request");
    let (requests, callbacks) = (
        stat(&state.stats.requests),
        stat(&state.stats.callbacks_pass) + stat(&state.stats.callbacks_fail),
    );
    assert_eq!((requests, callbacks), (1, 1));

    // Near side -> agent, replayed.
    let mut s = TcpStream::connect(agent).await.unwrap();
    assert!(matches!(
        read_frame(&mut s, T).await.unwrap(),
        Message::Hello { .. }
    ));
    s.write_all(&to_agent[0]).await.unwrap();
    assert!(matches!(
        read_frame(&mut s, T).await.unwrap(),
        Message::Handshake { .. }
    ));
    s.write_all(&to_agent[1]).await.unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(T, s.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the agent kept a replayed session open");
    assert_eq!(
        stat(&state.stats.requests),
        requests,
        "replay ran a request"
    );
    assert_eq!(
        stat(&state.stats.callbacks_pass) + stat(&state.stats.callbacks_fail),
        callbacks,
        "replay made a callback"
    );
    assert_eq!(stat(&state.stats.refused_auth), 1);

    // Agent -> near side, replayed by a fake agent: the near side's fresh ephemeral key makes the
    // recorded `e, ee` fail.
    let fake = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let fake_addr = fake.local_addr().unwrap();
    let script = tokio::spawn(async move {
        let (mut s, _) = fake.accept().await.unwrap();
        s.write_all(&to_peer[0]).await.unwrap();
        let _ = read_frame(&mut s, T).await;
        for frame in &to_peer[1..] {
            let _ = s.write_all(frame).await;
        }
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(T, s.read_to_end(&mut sink)).await;
    });
    let out = agent_checks(&peer_opts(fake_addr)).await;
    let login = hop(find(&out.checks, "agent"), HopKind::Login);
    assert_eq!(login.status, Status::Fail, "{login:#?}");
    assert_eq!(login.cause, Some(Cause::AuthFailed), "{login:#?}");
    assert!(
        login.detail.contains("does not hold this key"),
        "{login:#?}"
    );
    script.abort();
}

/// The previous protocol (v2, HMAC framing) on either side is a clear, prompt version mismatch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_previous_version_peer_gets_a_version_mismatch_not_a_hang() {
    // A v2 agent: its hello carries a nonce and `"v":2`.
    let old = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let old_addr = old.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = old.accept().await.unwrap();
        let hello = br#"{"v":2,"msg":{"type":"hello","nonce":"00112233445566778899aabbccddeeff"}}"#;
        let mut frame = (hello.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(hello);
        s.write_all(&frame).await.unwrap();
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(T, s.read_to_end(&mut sink)).await;
    });
    let started = Instant::now();
    let out = agent_checks(&peer_opts(old_addr)).await;
    assert!(started.elapsed() < Duration::from_secs(2));
    let login = hop(find(&out.checks, "agent"), HopKind::Login);
    assert_eq!(login.cause, Some(Cause::ProtocolError), "{login:#?}");
    assert!(login.detail.contains("upgrade both sides"), "{login:#?}");
    assert!(
        login
            .hint
            .as_deref()
            .unwrap_or("")
            .contains("same dtcprobe release"),
        "{login:#?}"
    );

    // A v2 near side sends its (MACed) request after reading the hello; this agent answers with
    // the version mismatch in clear and closes.
    let (agent, state) = start_agent(AgentConfig::default()).await;
    let mut s = TcpStream::connect(agent).await.unwrap();
    let _hello = read_frame(&mut s, T).await.unwrap();
    let request = br#"{"v":2,"msg":{"type":"request","nonce":"00","client_nonce":"01","timestamp":1,"body":"{\"op\":\"ping\"}","mac":"00"}}"#;
    let mut frame = (request.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(request);
    s.write_all(&frame).await.unwrap();
    match read_frame(&mut s, T).await.unwrap() {
        Message::Error {
            code: ErrorCode::Protocol,
            message,
        } => assert!(message.contains("upgrade both sides"), "{message}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(stat(&state.stats.requests), 0);
}

/// An answer too large for one Noise message (65,535 bytes) travels in two records: the near
/// side reassembles it (a reverse-check answer near the 64 KiB frame limit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_larger_than_one_noise_message_are_chunked() {
    let (agent, _state) = start_agent(AgentConfig::default()).await;
    let s = TcpStream::connect(agent).await.unwrap();
    let mut ch = SecureChannel::connect(s, &key(), T).await.unwrap();
    // A request body of 65,400 bytes: more than one Noise message once enveloped.
    let body = format!(r#"{{"op":"peer","caller_name":"{}"}}"#, "x".repeat(65_400));
    ch.send(&Message::Request { body }, T).await.unwrap();
    // The agent decrypted and parsed all of it (an invalid one would be refused as protocol).
    assert_eq!(ch.recv(T).await.unwrap(), Message::Accepted);
}
