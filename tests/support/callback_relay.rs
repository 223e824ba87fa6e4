//! A relay on the path between a near side and an agent, without the key: it passes the control
//! connection on to the agent from an address of its own (so the agent calls back there, on the
//! near side's callback port), and does what it can with the agent's callback. Used on loopback
//! (tests/agent_identity.rs) and in network namespaces (tests/agent_relay_netns.rs); the caller
//! runs it where its sockets must live (a namespace's thread for the latter).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket};

/// What the relay does with the agent's callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayMode {
    /// Reads the token from the agent's callback (never acknowledged), presents it to the near
    /// side itself, then cuts the control connection: the agent's answer never arrives.
    PresentTokenAndCut,
    /// Passes the agent's callback on, both ways, from a source port of its own; the control
    /// connection is left alone.
    ForwardCallback,
}

pub struct RelayPlan {
    pub mode: RelayMode,
    /// Where the near side's control connection goes on to.
    pub agent: SocketAddr,
    /// The relay's address towards the agent: the control connection leaves from it, and the
    /// agent's callback comes to it.
    pub agent_side: IpAddr,
    /// The relay's address towards the near side: its own callback connections leave from it.
    pub near_side: IpAddr,
    /// The near side's callback address (its address and pinned callback port).
    pub near_callback: SocketAddr,
}

/// What the relay saw and did.
#[derive(Debug, Default)]
pub struct Relayed {
    /// The agent's callback reached the relay, from this source port.
    pub agent_source_port: Option<u16>,
    /// The relay's own connection to the near side's callback port, from this source port.
    pub relay_source_port: Option<u16>,
    /// The near side acknowledged what the relay sent it.
    pub acknowledged: bool,
}

fn socket_for(ip: IpAddr) -> TcpSocket {
    match ip {
        IpAddr::V4(_) => TcpSocket::new_v4(),
        IpAddr::V6(_) => TcpSocket::new_v6(),
    }
    .unwrap()
}

/// Relays the first session that reaches `listener` as `plan` says; returns when it is over
/// (bounded: every wait has a deadline).
pub async fn relay_one_session(listener: &TcpListener, plan: RelayPlan) -> Relayed {
    let mut relayed = Relayed::default();
    let catcher = TcpListener::bind((plan.agent_side, plan.near_callback.port()))
        .await
        .unwrap();
    let limit = Duration::from_secs(15);
    let Ok(Ok((mut near, _))) = tokio::time::timeout(limit, listener.accept()).await else {
        return relayed;
    };
    let to_agent = socket_for(plan.agent_side);
    to_agent.bind(SocketAddr::new(plan.agent_side, 0)).unwrap();
    let mut far = to_agent.connect(plan.agent).await.unwrap();
    let control = tokio::spawn(async move {
        let _ = tokio::io::copy_bidirectional(&mut near, &mut far).await;
    });
    let Ok(Ok((mut from_agent, agent_from))) = tokio::time::timeout(limit, catcher.accept()).await
    else {
        control.abort();
        return relayed;
    };
    relayed.agent_source_port = Some(agent_from.port());
    // A source port of its own, surely not the agent's (whose port the agent reports).
    let to_near = socket_for(plan.near_side);
    if to_near
        .bind(SocketAddr::new(plan.near_side, agent_from.port() ^ 1))
        .is_err()
    {
        to_near.bind(SocketAddr::new(plan.near_side, 0)).unwrap();
    }
    relayed.relay_source_port = to_near.local_addr().ok().map(|a| a.port());
    let Ok(mut to_near) = to_near.connect(plan.near_callback).await else {
        control.abort();
        return relayed;
    };
    match plan.mode {
        RelayMode::PresentTokenAndCut => {
            let mut token = vec![0u8; 65];
            if from_agent.read_exact(&mut token).await.is_ok()
                && to_near.write_all(&token).await.is_ok()
            {
                let mut ack = [0u8; 3];
                relayed.acknowledged = matches!(
                    tokio::time::timeout(Duration::from_secs(2), to_near.read_exact(&mut ack))
                        .await,
                    Ok(Ok(_)) if &ack == b"ok\n"
                );
            }
            // The agent, never acknowledged, still waits: its answer never leaves before the cut.
            control.abort();
        }
        RelayMode::ForwardCallback => {
            let mut ack = Vec::new();
            let carried = async {
                let (mut agent_r, mut agent_w) = from_agent.split();
                let (mut near_r, mut near_w) = to_near.split();
                let up = async {
                    tokio::io::copy(&mut agent_r, &mut near_w).await?;
                    near_w.shutdown().await
                };
                let down = async {
                    near_r.read_to_end(&mut ack).await?;
                    agent_w.write_all(&ack).await?;
                    agent_w.shutdown().await
                };
                let _ = tokio::join!(up, down);
            };
            let _ = tokio::time::timeout(limit, carried).await;
            relayed.acknowledged = ack.as_slice() == b"ok\n";
            let _ = tokio::time::timeout(limit, control).await;
        }
    }
    relayed
}
