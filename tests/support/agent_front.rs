//! A TCP front on 127.0.0.1 before an agent, for the tests that must step into a session at a
//! known moment: it resets its first connections before a byte is exchanged (SO_LINGER 0: what
//! a peer meets when an agent under a flood closes its connection before the handshake), then
//! forwards, and can hold the near side's request until something has happened first (the near
//! side opens its callback listener just before it sends the request, so whatever the front
//! waits for then happens with the listener open and before the agent calls back).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Awaited once by the front, between the near side's handshake message and its request.
pub type BeforeRequest = Pin<Box<dyn Future<Output = ()> + Send>>;

/// What the front does.
#[derive(Default)]
pub struct FrontPlan {
    /// Connections reset at once, before anything is read or forwarded.
    pub reset_first: usize,
    /// Awaited on the first forwarded connection before its request goes on to the agent.
    pub before_request: Option<BeforeRequest>,
}

pub struct Front {
    pub addr: SocketAddr,
    /// When each connection was accepted, in order (the reset ones included).
    pub accepted: Arc<Mutex<Vec<Instant>>>,
}

/// Starts the front before `agent`; it runs until the test's runtime ends.
pub async fn start(agent: SocketAddr, plan: FrontPlan) -> Front {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let seen = accepted.clone();
    tokio::spawn(async move {
        let FrontPlan {
            mut reset_first,
            mut before_request,
        } = plan;
        while let Ok((near, _)) = listener.accept().await {
            seen.lock().unwrap().push(Instant::now());
            if reset_first > 0 {
                reset_first -= 1;
                let _ = near.set_zero_linger();
                drop(near);
                continue;
            }
            let Ok(far) = TcpStream::connect(agent).await else {
                continue;
            };
            tokio::spawn(forward(near, far, before_request.take()));
        }
    });
    Front { addr, accepted }
}

/// Forwards both ways; with `before_request`, the near side's first frame (its handshake
/// message: 4-byte length + body) goes on at once, and what follows only once the future is done.
async fn forward(mut near: TcpStream, mut far: TcpStream, before_request: Option<BeforeRequest>) {
    if let Some(wait) = before_request {
        let (mut far_r, mut far_w) = far.split();
        let (mut near_r, mut near_w) = near.split();
        let down = tokio::io::copy(&mut far_r, &mut near_w);
        let up = async {
            let mut len = [0u8; 4];
            near_r.read_exact(&mut len).await?;
            let mut frame = vec![0u8; u32::from_be_bytes(len) as usize];
            near_r.read_exact(&mut frame).await?;
            far_w.write_all(&len).await?;
            far_w.write_all(&frame).await?;
            // The request's first bytes: the near side's callback listener is open now.
            let mut chunk = vec![0u8; 64 * 1024];
            let n = near_r.read(&mut chunk).await?;
            wait.await;
            far_w.write_all(&chunk[..n]).await?;
            tokio::io::copy(&mut near_r, &mut far_w).await?;
            far_w.shutdown().await
        };
        let _ = tokio::join!(down, up);
    } else {
        let _ = tokio::io::copy_bidirectional(&mut near, &mut far).await;
    }
}
