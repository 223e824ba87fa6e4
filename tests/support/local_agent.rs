//! An agent served in-process on 127.0.0.1, and the options a peer needs to reach it, for the
//! agent tests that run the server and client code directly (no namespaces, no binary).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use dtcprobe::agent::client::PeerOptions;
use dtcprobe::agent::protocol::Key;
use dtcprobe::agent::server::{serve, AgentState};
use dtcprobe::agent::AgentConfig;
use dtcprobe::model::CheckResult;
use tokio::net::TcpListener;

/// Starts serving; the agent stops when the test's runtime ends.
pub async fn start_agent(key: Key, config: AgentConfig) -> (SocketAddr, Arc<AgentState>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = Arc::new(AgentState::new(key, config));
    let served = state.clone();
    tokio::spawn(async move {
        let _ = serve(listener, served, std::future::pending()).await;
    });
    (addr, state)
}

/// A peer of `agent` on 127.0.0.1, no zone, no reverse checks, 2 s hop timeout.
pub fn peer_opts(agent: SocketAddr, key: Key, session_timeout: Duration) -> PeerOptions {
    PeerOptions {
        agent: agent.to_string(),
        key,
        agent_pubkey: None,
        callback_bind: "127.0.0.1".parse().unwrap(),
        callback_port: 0,
        caller_name: None,
        zone: None,
        reverse: Vec::new(),
        hop_timeout: Duration::from_secs(2),
        session_timeout,
        cid: None,
        trace: true,
    }
}

/// The check named `name` of a peer's result.
pub fn find<'a>(checks: &'a [CheckResult], name: &str) -> &'a CheckResult {
    checks
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no check {name}: {checks:#?}"))
}
