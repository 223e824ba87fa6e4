//! Hop `far_side` in-process on loopback (no namespaces, no root): the round trip with the real
//! agent code, and an agent of an older release (one that answers `peer` without the far-side
//! capability), played by a scripted responder speaking the real channel. The namespace cases
//! (a router dropping the path, the host's own firewall) are in `agent_far_side_netns`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dtcprobe::agent::client::{run_peer, run_peer_until};
use dtcprobe::agent::protocol::{AgentIdentity, Key, Message, ResponseBody, SecureChannel};
use dtcprobe::agent::AgentConfig;
use dtcprobe::model::{Cause, CheckResult, HopKind, HopResult, Status};
use dtcprobe::runner::RunOptions;
use dtcprobe::target::{CheckSpec, Target};
use tokio::net::TcpListener;

use crate::support::local_agent::{find, peer_opts, start_agent};

fn key() -> Key {
    Key::from_bytes(
        dtcprobe::agent::protocol::example_key_text("far side").as_bytes(),
        "test",
    )
    .unwrap()
}

fn spec(url: &str) -> CheckSpec {
    CheckSpec {
        name: url.to_string(),
        from: None,
        to: None,
        timeout: None,
        target: Target::from_url(url).unwrap(),
    }
}

/// A loopback port with nothing listening (bound, then closed).
async fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

fn far_side(c: &CheckResult) -> &HopResult {
    c.hops
        .iter()
        .find(|h| h.hop == HopKind::FarSide)
        .unwrap_or_else(|| panic!("no far_side hop: {c:#?}"))
}

fn run_options() -> RunOptions {
    RunOptions {
        timeout: Duration::from_secs(2),
        trace: false,
        ..Default::default()
    }
}

#[tokio::test]
async fn a_refused_port_is_refused_from_the_agent_too_and_a_passing_check_is_not_asked() {
    let (agent, _state) = start_agent(key(), AgentConfig::default()).await;
    let closed = closed_port().await;
    let open = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let open_port = open.local_addr().unwrap().port();
    let closed_url = format!("tcp://127.0.0.1:{closed}");
    let open_url = format!("tcp://127.0.0.1:{open_port}");
    let opts = peer_opts(agent, key(), Duration::from_secs(10));
    let started = Instant::now();
    let report = run_peer(
        &opts,
        vec![spec(&closed_url), spec(&open_url)],
        &run_options(),
    )
    .await;
    let wall = started.elapsed();

    let refused = find(&report.checks, &closed_url);
    let hop = far_side(refused);
    // The caller's own address is what the reverse-check policy allows without an entry.
    assert_eq!(
        (hop.status, hop.cause),
        (Status::Fail, Some(Cause::Refused)),
        "{hop:#?}"
    );
    assert_eq!(hop.data["cause"], "refused");
    assert_eq!(hop.data["address"], format!("127.0.0.1:{closed}"));
    assert_eq!(hop.data["port"], closed);
    assert!(hop.data["agent"].as_str().is_some_and(|a| !a.is_empty()));
    assert!(
        hop.hint
            .as_deref()
            .unwrap()
            .contains("the service is stopped"),
        "{hop:#?}"
    );
    assert_eq!(refused.status, Status::Fail);
    // A check that passed is not the far side's business.
    let passed = find(&report.checks, &open_url);
    assert!(passed.hops.iter().all(|h| h.hop != HopKind::FarSide));
    assert_eq!(passed.status, Status::Pass);
    assert!(wall < Duration::from_secs(5), "took {wall:?}");
}

/// A scripted agent speaking the real channel. `capable: false`: an agent of the release before
/// `far_side`, which answers `peer` without `capabilities` (and would refuse the unknown
/// request). `capable: true`: it lists the capability, accepts the far-side request and then
/// never answers it (an agent hung mid-request). Returns its address and the count of sessions
/// it was opened; the task ends with the test's runtime.
async fn scripted_agent(key: Key, capable: bool) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let sessions = Arc::new(AtomicUsize::new(0));
    let counted = sessions.clone();
    let identity = AgentIdentity::generate().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            let Ok(mut channel) =
                SecureChannel::accept(stream, &key, &identity, Duration::from_secs(2)).await
            else {
                continue;
            };
            let Ok(Message::Request { body }) = channel.recv(Duration::from_secs(2)).await else {
                continue;
            };
            channel
                .send(&Message::Accepted, Duration::from_secs(2))
                .await
                .unwrap();
            if body.contains(r#""op":"far_side""#) {
                // Accepted, never answered: kept open so the near side cannot see it close.
                held.push(channel);
                continue;
            }
            let answer = ResponseBody {
                agent: "oldagent".into(),
                zone: Some("sql".into()),
                capabilities: if capable {
                    vec!["far_side".into()]
                } else {
                    Vec::new()
                },
                ..Default::default()
            };
            let body = serde_json::to_string(&answer).unwrap();
            assert_eq!(body.contains("capabilities"), capable, "{body}");
            channel
                .send(&Message::Response { body }, Duration::from_secs(2))
                .await
                .unwrap();
        }
    });
    (addr, sessions)
}

#[tokio::test]
async fn an_agent_that_never_answers_is_given_up_after_four_hop_timeouts() {
    let (agent, sessions) = scripted_agent(key(), true).await;
    let closed_url = format!("tcp://127.0.0.1:{}", closed_port().await);
    let mut opts = peer_opts(agent, key(), Duration::from_secs(5));
    opts.hop_timeout = Duration::from_millis(500);
    let started = Instant::now();
    let report = run_peer(&opts, vec![spec(&closed_url)], &run_options()).await;
    let wall = started.elapsed();
    let hop = far_side(find(&report.checks, &closed_url));
    assert_eq!(hop.status, Status::Skip, "{hop:#?}");
    assert!(
        hop.detail.contains("the agent did not answer within 2s"),
        "{hop:#?}"
    );
    assert_eq!(sessions.load(Ordering::SeqCst), 2);
    assert!(
        wall >= Duration::from_secs(2) && wall < Duration::from_secs(4),
        "took {wall:?}"
    );
}

#[tokio::test]
async fn a_run_stopped_during_the_far_side_round_says_so_at_once() {
    let (agent, _) = scripted_agent(key(), true).await;
    let closed_url = format!("tcp://127.0.0.1:{}", closed_port().await);
    let opts = peer_opts(agent, key(), Duration::from_secs(5));
    let started = Instant::now();
    let stop = tokio::time::sleep(Duration::from_millis(800));
    let (report, stopped) =
        run_peer_until(&opts, vec![spec(&closed_url)], &run_options(), stop).await;
    let wall = started.elapsed();
    assert!(stopped);
    let hop = far_side(find(&report.checks, &closed_url));
    assert_eq!((hop.status, hop.cause), (Status::Skip, None), "{hop:#?}");
    assert!(
        hop.detail
            .contains("the run was stopped before the agent answered"),
        "{hop:#?}"
    );
    // The forward result stands as it was.
    assert_eq!(find(&report.checks, &closed_url).status, Status::Fail);
    assert!(wall < Duration::from_millis(1500), "took {wall:?}");
}

#[tokio::test]
async fn an_older_agent_is_not_asked_and_the_hop_says_so() {
    let (agent, sessions) = scripted_agent(key(), false).await;
    let closed_url = format!("tcp://127.0.0.1:{}", closed_port().await);
    let opts = peer_opts(agent, key(), Duration::from_secs(5));
    let report = run_peer(&opts, vec![spec(&closed_url)], &run_options()).await;
    let hop = far_side(find(&report.checks, &closed_url));
    assert_eq!((hop.status, hop.cause), (Status::Skip, None), "{hop:#?}");
    assert!(
        hop.detail
            .contains("the agent (oldagent) is older than this peer"),
        "{hop:#?}"
    );
    // The `peer` session only: the far-side request was not sent.
    assert_eq!(sessions.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_unreachable_agent_leaves_far_side_skipped_with_the_reason() {
    let agent: SocketAddr = format!("127.0.0.1:{}", closed_port().await)
        .parse()
        .unwrap();
    let closed_url = format!("tcp://127.0.0.1:{}", closed_port().await);
    let opts = peer_opts(agent, key(), Duration::from_secs(5));
    let report = run_peer(&opts, vec![spec(&closed_url)], &run_options()).await;
    let hop = far_side(find(&report.checks, &closed_url));
    assert_eq!(hop.status, Status::Skip, "{hop:#?}");
    assert!(
        hop.detail
            .contains("not asked: no authenticated session with the agent"),
        "{hop:#?}"
    );
}

#[tokio::test]
async fn a_host_outside_the_allow_list_is_refused_by_policy_not_by_the_network() {
    let (agent, state) = start_agent(key(), AgentConfig::default()).await;
    // 127.0.0.2 is not the caller (127.0.0.1) and not in the (empty) allow list.
    let url = format!("tcp://127.0.0.2:{}", closed_port().await);
    let opts = peer_opts(agent, key(), Duration::from_secs(5));
    let report = run_peer(&opts, vec![spec(&url)], &run_options()).await;
    let hop = far_side(find(&report.checks, &url));
    assert_eq!(
        (hop.status, hop.cause),
        (Status::Fail, Some(Cause::Config)),
        "{hop:#?}"
    );
    assert!(hop.detail.contains("policy refused"), "{hop:#?}");
    assert!(hop.data.get("address").is_none(), "{hop:#?}");
    assert_eq!(
        state
            .stats
            .reverse_refused
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}
