//! SQL Server Resolution Protocol (MS-SQLR): asking the SQL Server Browser (UDP 1434) which TCP
//! port a named instance listens on. Encoding and parsing are pure; [`query`] does the UDP I/O.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use thiserror::Error;
use tokio::net::UdpSocket;
use tokio::time::Instant;

pub const BROWSER_PORT: u16 = 1434;

/// CLNT_UCAST_INST: "tell me about this instance".
const CLNT_UCAST_INST: u8 = 0x04;
/// SVR_RESP.
const SVR_RESP: u8 = 0x05;
/// MS-SQLR limits instance names to 32 bytes.
const MAX_INSTANCE_NAME: usize = 32;

/// One instance as the Browser describes it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InstanceInfo {
    pub server_name: String,
    pub instance_name: String,
    pub is_clustered: bool,
    pub version: String,
    pub tcp_port: Option<u16>,
    pub named_pipe: Option<String>,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum SsrpError {
    #[error("instance name `{0}` is not valid for the SQL Server Browser (1-32 ASCII characters)")]
    BadInstanceName(String),
    #[error("the answer is not an SSRP response (first byte 0x{0:02X})")]
    NotResponse(u8),
    #[error("the answer is truncated")]
    Truncated,
    #[error("the answer lists no instance")]
    Empty,
}

/// Pure: the CLNT_UCAST_INST request for `instance`.
pub fn encode_request(instance: &str) -> Result<Vec<u8>, SsrpError> {
    if instance.is_empty()
        || instance.len() > MAX_INSTANCE_NAME
        || !instance.is_ascii()
        || instance.contains('\0')
    {
        return Err(SsrpError::BadInstanceName(instance.to_string()));
    }
    let mut v = Vec::with_capacity(instance.len() + 2);
    v.push(CLNT_UCAST_INST);
    v.extend_from_slice(instance.as_bytes());
    v.push(0);
    Ok(v)
}

/// Pure: parses an SVR_RESP datagram into the instances it lists.
pub fn parse_response(datagram: &[u8]) -> Result<Vec<InstanceInfo>, SsrpError> {
    let (&first, rest) = datagram.split_first().ok_or(SsrpError::Truncated)?;
    if first != SVR_RESP {
        return Err(SsrpError::NotResponse(first));
    }
    if rest.len() < 2 {
        return Err(SsrpError::Truncated);
    }
    let size = u16::from_le_bytes([rest[0], rest[1]]) as usize;
    let data = rest.get(2..2 + size).ok_or(SsrpError::Truncated)?;
    // The data is "MBCS" text; in practice ASCII. Decode lossily to be tolerant of odd names.
    let text = String::from_utf8_lossy(data);
    // Key;value pairs, positionally (a value may be empty); an empty key ends a record, and
    // `ServerName` starts a new one.
    let tokens: Vec<&str> = text.trim_matches('\0').split(';').collect();
    let mut out = Vec::new();
    let mut cur: Option<InstanceInfo> = None;
    let push = |info: InstanceInfo, out: &mut Vec<InstanceInfo>| {
        if !info.instance_name.is_empty() || !info.server_name.is_empty() {
            out.push(info);
        }
    };
    let mut i = 0;
    while i < tokens.len() {
        let k = tokens[i];
        if k.is_empty() {
            if let Some(c) = cur.take() {
                push(c, &mut out);
            }
            i += 1;
            continue;
        }
        let v = tokens.get(i + 1).copied().unwrap_or("");
        if k.eq_ignore_ascii_case("servername") {
            if let Some(c) = cur.take() {
                push(c, &mut out);
            }
        }
        let info = cur.get_or_insert_with(InstanceInfo::default);
        match k.to_ascii_lowercase().as_str() {
            "servername" => info.server_name = v.to_string(),
            "instancename" => info.instance_name = v.to_string(),
            "isclustered" => info.is_clustered = v.eq_ignore_ascii_case("yes"),
            "version" => info.version = v.to_string(),
            "tcp" => info.tcp_port = v.parse().ok().filter(|p| *p != 0),
            "np" => info.named_pipe = Some(v.to_string()),
            _ => {}
        }
        i += 2;
    }
    if let Some(c) = cur.take() {
        push(c, &mut out);
    }
    if out.is_empty() {
        return Err(SsrpError::Empty);
    }
    Ok(out)
}

/// Pure: the entry for `instance` (case-insensitive) among the Browser's answer.
pub fn find_instance<'a>(
    instances: &'a [InstanceInfo],
    instance: &str,
) -> Option<&'a InstanceInfo> {
    instances
        .iter()
        .find(|i| i.instance_name.eq_ignore_ascii_case(instance))
}

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

/// Pure: builds an SVR_RESP datagram (used by tests and the test peer's Browser).
pub fn encode_response(instances: &[InstanceInfo]) -> Vec<u8> {
    let mut text = String::new();
    for i in instances {
        text.push_str(&format!(
            "ServerName;{};InstanceName;{};IsClustered;{};Version;{};",
            i.server_name,
            i.instance_name,
            if i.is_clustered { "Yes" } else { "No" },
            i.version
        ));
        if let Some(p) = i.tcp_port {
            text.push_str(&format!("tcp;{p};"));
        }
        if let Some(np) = &i.named_pipe {
            text.push_str(&format!("np;{np};"));
        }
        text.push(';');
    }
    let mut v = vec![SVR_RESP];
    v.extend_from_slice(&(text.len() as u16).to_le_bytes());
    v.extend_from_slice(text.as_bytes());
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_encoding() {
        assert_eq!(
            encode_request("SQLEXPRESS").unwrap(),
            b"\x04SQLEXPRESS\x00".to_vec()
        );
        for bad in ["", "a\0b", "ÄÖ", &"x".repeat(33)] {
            assert!(encode_request(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn parses_real_shaped_answers() {
        let text = "ServerName;SQL01;InstanceName;SQLEXPRESS;IsClustered;No;Version;15.0.2000.5;tcp;49172;np;\\\\SQL01\\pipe\\MSSQL$SQLEXPRESS\\sql\\query;;";
        let mut d = vec![0x05];
        d.extend_from_slice(&(text.len() as u16).to_le_bytes());
        d.extend_from_slice(text.as_bytes());
        let v = parse_response(&d).unwrap();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].server_name, "SQL01");
        assert_eq!(v[0].tcp_port, Some(49172));
        assert_eq!(v[0].version, "15.0.2000.5");
        assert!(v[0].named_pipe.as_deref().unwrap().contains("pipe"));
        assert!(find_instance(&v, "sqlexpress").is_some());
        assert!(find_instance(&v, "OTHER").is_none());
    }

    #[test]
    fn instance_without_tcp_and_several_instances() {
        let infos = vec![
            InstanceInfo {
                server_name: "S".into(),
                instance_name: "A".into(),
                version: "16.0.1000.6".into(),
                tcp_port: None,
                named_pipe: Some("\\\\S\\pipe\\sql\\query".into()),
                ..Default::default()
            },
            InstanceInfo {
                server_name: "S".into(),
                instance_name: "B".into(),
                version: "16.0.1000.6".into(),
                tcp_port: Some(50001),
                ..Default::default()
            },
        ];
        let parsed = parse_response(&encode_response(&infos)).unwrap();
        assert_eq!(parsed, infos);
    }

    #[test]
    fn rejects_malformed() {
        assert_eq!(parse_response(&[]), Err(SsrpError::Truncated));
        assert_eq!(parse_response(&[0x05, 0x10]), Err(SsrpError::Truncated));
        assert_eq!(
            parse_response(&[0x05, 0x10, 0x00, b'a']),
            Err(SsrpError::Truncated)
        );
        assert_eq!(
            parse_response(b"HTTP/1.1"),
            Err(SsrpError::NotResponse(b'H'))
        );
        assert_eq!(
            parse_response(&[0x05, 0x02, 0x00, b';', b';']),
            Err(SsrpError::Empty)
        );
    }

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
