//! The near side's callback listener: which connections to the callback port presented this
//! session's token, and from where. Which of them is the agent's is decided later, from the
//! agent's answer ([`Observed::agents_callback`]).

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// The observations are shared with the listener's tasks; a panicked task must not hide them.
pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Connections that presented the right token, recorded (at most this many sources).
const MAX_VALID_SOURCES: usize = 16;

/// The callbacks the near side saw arriving (token verified). Which of them is the agent's is
/// decided once the agent's answer names its callback source (see [`Observed::agents_callback`]).
#[derive(Debug, Default)]
pub(super) struct Observed {
    /// Sources of the connections that presented the right token.
    pub(super) valid_from: Vec<SocketAddr>,
    /// Connections accepted on the callback port, and those that presented the token.
    pub(super) accepted: usize,
    pub(super) valid: usize,
    /// The agent's address (the one this host connected to).
    pub(super) agent: Option<IpAddr>,
}

impl Observed {
    /// The first valid callback from an address the agent may call back from: its own address
    /// (the one this host connected to) or the callback source it reports in its MACed answer.
    /// A valid token from anywhere else is not the agent's callback, whatever it carries.
    pub(super) fn agents_callback(
        &self,
        agent: Option<IpAddr>,
        reported: Option<&str>,
    ) -> Option<SocketAddr> {
        let reported: Option<IpAddr> = reported.and_then(|r| r.parse().ok());
        self.valid_from.iter().copied().find(|from| {
            let ip = from.ip().to_canonical();
            Some(ip) == agent.map(|a| a.to_canonical())
                || Some(ip) == reported.map(|r| r.to_canonical())
        })
    }

    pub(super) fn unexpected(&self, agent: Option<IpAddr>, reported: Option<&str>) -> Vec<String> {
        let accepted = self.agents_callback(agent, reported).map(|a| a.ip());
        let reported: Option<IpAddr> = reported.and_then(|r| r.parse().ok());
        let mut out: Vec<String> = self
            .valid_from
            .iter()
            .map(|f| f.ip().to_canonical())
            .filter(|ip| {
                Some(*ip) != accepted.map(|a| a.to_canonical())
                    && Some(*ip) != agent.map(|a| a.to_canonical())
                    && Some(*ip) != reported.map(|r| r.to_canonical())
            })
            .map(|ip| ip.to_string())
            .collect();
        out.dedup();
        out
    }
}

/// Accepts connections on the callback port until dropped; a connection that presents the token
/// is the agent's callback (acknowledged with `ok\n`); anything else is counted and closed.
pub(super) async fn accept_callbacks(
    listener: Option<TcpListener>,
    token: String,
    limit: Duration,
    observed: Arc<Mutex<Observed>>,
) {
    let Some(listener) = listener else {
        return std::future::pending().await;
    };
    // Each connection is read concurrently, so a stray or silent connection cannot hold up the
    // agent's; at most 16 are handled at once (more are closed straight away).
    let mut pending = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            Some(_) = pending.join_next(), if !pending.is_empty() => continue,
        };
        let Ok((mut conn, from)) = accepted else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        lock(&observed).accepted += 1;
        if pending.len() >= 16 {
            continue;
        }
        let token = token.clone();
        let observed = observed.clone();
        pending.spawn(async move {
            let read_token = async {
                let mut buf = Vec::with_capacity(token.len() + 1);
                let mut byte = [0u8; 1];
                while buf.len() <= token.len() {
                    if conn.read(&mut byte).await? == 0 || byte[0] == b'\n' {
                        break;
                    }
                    buf.push(byte[0]);
                }
                Ok::<_, std::io::Error>(buf)
            };
            let got = tokio::time::timeout(limit, read_token).await;
            let good = matches!(got, Ok(Ok(b)) if b == token.as_bytes());
            if good {
                {
                    let mut o = lock(&observed);
                    if o.valid_from.len() < MAX_VALID_SOURCES {
                        o.valid_from.push(from);
                    }
                    o.valid += 1;
                }
                let _ = tokio::time::timeout(limit, conn.write_all(b"ok\n")).await;
            }
        });
    }
}
