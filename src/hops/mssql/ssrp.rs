//! SQL Server Resolution Protocol (MS-SQLR): asking the SQL Server Browser (UDP 1434) which TCP
//! port a named instance listens on. The messages are encoded and parsed by the shared codec
//! ([`dtcprobe_wire::ssrp`], re-exported here); this module only does the UDP I/O ([`query`]).

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::time::Instant;

pub use dtcprobe_wire::ssrp::{
    encode_request, encode_response, find_instance, parse_response, InstanceInfo, SsrpError,
    BROWSER_PORT,
};

/// What came of asking the Browser.
#[derive(Debug)]
pub enum QueryOutcome {
    Answer(Vec<u8>),
    /// ICMP port unreachable: nothing listens on UDP 1434 there.
    Refused,
    NoAnswer,
    Error(io::Error),
}

/// Sends the request (repeated, since UDP may lose it) and waits for one answer, all within `limit`.
pub async fn query(addr: SocketAddr, instance: &str, limit: Duration) -> QueryOutcome {
    let request = match encode_request(instance) {
        Ok(r) => r,
        Err(e) => {
            return QueryOutcome::Error(io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))
        }
    };
    let bind: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0".parse().unwrap()
    } else {
        "[::]:0".parse().unwrap()
    };
    let sock = match UdpSocket::bind(bind).await {
        Ok(s) => s,
        Err(e) => return QueryOutcome::Error(e),
    };
    if let Err(e) = sock.connect(addr).await {
        return QueryOutcome::Error(e);
    }
    let deadline = Instant::now() + limit;
    let attempts = 3u32;
    let mut buf = vec![0u8; 65535];
    for attempt in 0..attempts {
        if let Err(e) = sock.send(&request).await {
            return refused_or(e);
        }
        let slice_end = Instant::now() + limit / attempts;
        let until = if attempt + 1 == attempts {
            deadline
        } else {
            slice_end.min(deadline)
        };
        loop {
            match tokio::time::timeout_at(until, sock.recv(&mut buf)).await {
                // The socket is connected, so only the Browser's datagrams arrive; an empty
                // one is ignored, anything else is handed to the parser (which judges it).
                Ok(Ok(0)) => continue,
                Ok(Ok(n)) => return QueryOutcome::Answer(buf[..n].to_vec()),
                Ok(Err(e)) => return refused_or(e),
                Err(_) => break,
            }
        }
        if Instant::now() >= deadline {
            break;
        }
    }
    QueryOutcome::NoAnswer
}

fn refused_or(e: io::Error) -> QueryOutcome {
    // Linux reports ICMP port unreachable on a connected UDP socket as ECONNREFUSED; Windows as
    // WSAECONNRESET.
    match e.kind() {
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset => QueryOutcome::Refused,
        _ => QueryOutcome::Error(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn query_against_a_local_browser_and_a_closed_port() {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap();
        let answer = encode_response(&[InstanceInfo {
            instance_name: "INST".into(),
            tcp_port: Some(4242),
            ..Default::default()
        }]);
        let a2 = answer.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            let (n, from) = server.recv_from(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], b"\x04INST\x00");
            server.send_to(&a2, from).await.unwrap();
        });
        match query(addr, "INST", Duration::from_secs(2)).await {
            QueryOutcome::Answer(d) => assert_eq!(d, answer),
            other => panic!("{other:?}"),
        }
        let closed = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        assert!(matches!(
            query(closed, "INST", Duration::from_secs(2)).await,
            QueryOutcome::Refused
        ));
    }
}
