//! An agent served in-process on 127.0.0.1, and the options a peer needs to reach it, for the
//! agent tests that run the server and client code directly (no namespaces); and the agent
//! binary on 127.0.0.1 ([`BinAgent`]) for the tests that read what it prints.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// The agent binary on 127.0.0.1 (an OS-chosen port), started with `args`, its stderr written to
/// `log` and read until its `agent listening` line; killed on drop.
pub struct BinAgent {
    child: std::process::Child,
    /// The address from the start line (`listen=`).
    pub addr: SocketAddr,
    /// What the agent printed up to and including the start line.
    pub stderr: String,
    /// The agent's whole stderr, as it grows.
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl BinAgent {
    /// `verbosity` is `-v` or `-vv` (the start line is logged at `-v`).
    pub fn start(verbosity: &str, args: &[&str]) -> BinAgent {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("agent.log");
        let mut child = Command::new(crate::support::netns::dtcprobe_bin())
            .args(["agent", verbosity, "--listen", "127.0.0.1:0"])
            .args(args)
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(line) = text.lines().find(|l| l.contains("agent listening")) {
                let at = line.find("listen=").unwrap() + "listen=".len();
                let addr = line[at..].split_whitespace().next().unwrap();
                return BinAgent {
                    child,
                    addr: addr.parse().unwrap(),
                    stderr: text,
                    log,
                    _dir: dir,
                };
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("agent exited {status}: {text}");
            }
            assert!(Instant::now() < deadline, "agent did not start: {text}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the agent (its log stays readable until the `BinAgent` is dropped).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for BinAgent {
    fn drop(&mut self) {
        self.stop();
    }
}
