//! The agent's callback to the near side (hop `callback`): a connection to the caller's own
//! address carrying this session's token, acknowledged by the near side.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::hops;
use crate::model::{Cause, HopKind, HopResult};

/// Connects back to the caller's source address, sends the session's callback token (derived
/// from the key and the session's handshake hash: fixed format, never chosen by the caller, never
/// sent before, worthless in any other session), waits for the near side's ack. Also returns the callback socket's local address,
/// which the near side uses to tell the agent's callback from anyone else's.
pub(super) async fn callback(
    caller: IpAddr,
    port: u16,
    token: &str,
    limit: Duration,
) -> (HopResult, Option<SocketAddr>) {
    let started = tokio::time::Instant::now();
    let (result, from) = callback_inner(caller, port, token, limit).await;
    (result.with_duration(started.elapsed()), from)
}

async fn callback_inner(
    caller: IpAddr,
    port: u16,
    token: &str,
    limit: Duration,
) -> (HopResult, Option<SocketAddr>) {
    let addr = SocketAddr::new(caller, port);
    let (attempt, stream) = hops::connect::connect(addr, limit).await;
    let Some(mut stream) = stream else {
        return (
            hops::connect::hop_result(HopKind::Callback, &[attempt]).with_data("port", port),
            None,
        );
    };
    let from = stream.local_addr().ok();
    (
        callback_exchange(&mut stream, addr, port, token, limit).await,
        from,
    )
}

async fn callback_exchange(
    stream: &mut TcpStream,
    addr: SocketAddr,
    port: u16,
    token: &str,
    limit: Duration,
) -> HopResult {
    let exchange = async {
        stream.write_all(format!("{token}\n").as_bytes()).await?;
        let mut ack = [0u8; 3];
        stream.read_exact(&mut ack).await?;
        Ok::<_, std::io::Error>(ack)
    };
    match tokio::time::timeout(limit, exchange).await {
        Ok(Ok(ack)) if &ack == b"ok\n" => {
            HopResult::pass(HopKind::Callback, format!("agent connected back to {addr}"))
                .with_data("port", port)
        }
        Ok(Ok(_)) => HopResult::fail(
            HopKind::Callback,
            Cause::ProtocolError,
            format!("connected back to {addr}, but something else answered there"),
        ),
        Ok(Err(e)) => HopResult::fail(
            HopKind::Callback,
            Cause::Reset,
            format!("connected back to {addr}, then the connection failed: {e}"),
        ),
        Err(_) => HopResult::fail(
            HopKind::Callback,
            Cause::Timeout,
            format!("connected back to {addr}, but the near side did not acknowledge"),
        ),
    }
}
