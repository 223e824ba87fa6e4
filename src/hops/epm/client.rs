//! The endpoint-mapper client: a DCE/RPC conversation over one TCP stream (bind, `ept_lookup`,
//! `ept_map`), each exchange bounded in time. It is the only I/O on the mapper connection; it
//! reports what went wrong as an [`EpmError`] and leaves what that means to `assess`, so the
//! codec ([`crate::dcerpc`]) stays pure and the verdicts stay testable without a socket.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::dcerpc::epm::{
    decode_lookup_response, decode_map_response, encode_map_request, Entry, LookupRequest, Tower,
    EPT_S_NOT_REGISTERED, OPNUM_LOOKUP, OPNUM_MAP,
};
use crate::dcerpc::pdu::{
    self, bind_nak_reason, decode_bind_reply, encode_bind, encode_request, is_access_denied,
    status_text, BindReply, CallError, ResponseAssembler, Step, HEADER_LEN,
};
use crate::dcerpc::{DecodeError, SyntaxId, Uuid, EPM_INTERFACE};
use crate::hops::connect::Attempt;

/// Endpoint-mapper answers we read before giving up (500 entries each).
const MAX_LOOKUP_CALLS: usize = 64;
const MAX_ENTRIES: usize = 20_000;

/// What could go wrong talking to the endpoint mapper.
#[derive(Debug, Error)]
pub enum EpmError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("no answer within {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    #[error("the server closed the connection")]
    Closed,
    #[error("bind rejected (bind_nak: {})", bind_nak_reason(*reason))]
    BindNak { reason: u16 },
    #[error("bind accepted but the endpoint mapper interface was rejected (result {result}, reason {reason})")]
    ContextRejected { result: u16, reason: u16 },
    #[error("fault {}", status_text(*status))]
    Fault { status: u32 },
    #[error("status {}", status_text(*status))]
    Status { status: u32 },
    #[error("malformed answer: {0}")]
    Decode(#[from] DecodeError),
}

impl From<CallError> for EpmError {
    fn from(e: CallError) -> Self {
        match e {
            CallError::Fault { status } => EpmError::Fault { status },
            CallError::Decode(d) => EpmError::Decode(d),
        }
    }
}

impl EpmError {
    /// The mapper (as a fault or a status) refused an unauthenticated caller.
    pub(super) fn is_access_denied(&self) -> bool {
        matches!(self, EpmError::Fault { status } | EpmError::Status { status } if is_access_denied(*status))
    }

    /// The mapper's "not registered": an answer, not a broken conversation.
    pub(super) fn is_not_registered(&self) -> bool {
        matches!(self, EpmError::Fault { status } | EpmError::Status { status } if *status == EPT_S_NOT_REGISTERED)
    }
}

/// A DCE/RPC connection to an endpoint mapper, bound to the EPM interface.
pub struct EpmClient {
    stream: TcpStream,
    call_id: u32,
    limit: Duration,
}

async fn bounded<T, F: std::future::Future<Output = Result<T, EpmError>>>(
    limit: Duration,
    f: F,
) -> Result<T, EpmError> {
    tokio::time::timeout(limit, f)
        .await
        .unwrap_or(Err(EpmError::Timeout(limit)))
}

impl EpmClient {
    /// Binds to the endpoint mapper on an already connected stream; `limit` bounds each exchange.
    pub async fn bind(stream: TcpStream, limit: Duration) -> Result<EpmClient, EpmError> {
        let mut c = EpmClient {
            stream,
            call_id: 1,
            limit,
        };
        let bind = encode_bind(c.call_id, &EPM_INTERFACE);
        let reply = bounded(limit, async {
            c.stream.write_all(&bind).await?;
            let pdu = read_pdu(&mut c.stream).await?;
            Ok(decode_bind_reply(&pdu)?)
        })
        .await?;
        match reply {
            BindReply::Accepted { .. } => Ok(c),
            BindReply::Nak { reason } => Err(EpmError::BindNak { reason }),
            BindReply::ContextRejected { result, reason } => {
                Err(EpmError::ContextRejected { result, reason })
            }
        }
    }

    /// One call: request out, response fragments reassembled.
    pub async fn call(&mut self, opnum: u16, stub: &[u8]) -> Result<Vec<u8>, EpmError> {
        self.call_id = self.call_id.wrapping_add(1);
        let call_id = self.call_id;
        let req = encode_request(call_id, opnum, None, stub);
        let limit = self.limit;
        let stream = &mut self.stream;
        bounded(limit, async move {
            stream.write_all(&req).await?;
            let mut asm = ResponseAssembler::new(call_id);
            // The assembler bounds the number of fragments; this loop ends with it.
            loop {
                let pdu = read_pdu(stream).await?;
                if let Step::Done(stub) = asm.push(&pdu)? {
                    return Ok(stub);
                }
            }
        })
        .await
    }

    /// `ept_lookup` until the mapper says there is no more. An empty list means "not registered".
    pub async fn lookup(&mut self, mut req: LookupRequest) -> Result<Vec<Entry>, EpmError> {
        let mut entries = Vec::new();
        for _ in 0..MAX_LOOKUP_CALLS {
            let stub = self.call(OPNUM_LOOKUP, &req.encode()).await?;
            let resp = decode_lookup_response(&stub)?;
            let got = resp.entries.len();
            entries.extend(resp.entries);
            match resp.status {
                // Samba returns the last batch together with "not registered" (= no more entries).
                EPT_S_NOT_REGISTERED => break,
                0 => {}
                status => return Err(EpmError::Status { status }),
            }
            if resp.handle == [0; 20] || got == 0 || entries.len() >= MAX_ENTRIES {
                break;
            }
            req.handle = resp.handle;
        }
        Ok(entries)
    }

    /// `ept_map` for an ncacn_ip_tcp tower of `iface`, under `object`.
    pub async fn map(&mut self, object: &Uuid, iface: &SyntaxId) -> Result<Vec<Tower>, EpmError> {
        let tower = Tower::tcp(iface, Ipv4Addr::UNSPECIFIED, 0);
        let stub = self
            .call(OPNUM_MAP, &encode_map_request(object, &tower, &[0; 20], 4))
            .await?;
        let resp = decode_map_response(&stub)?;
        match resp.status {
            0 | EPT_S_NOT_REGISTERED => {
                Ok(resp.towers.into_iter().filter_map(Result::ok).collect())
            }
            status => Err(EpmError::Status { status }),
        }
    }
}

/// What one unauthenticated bind to an RPC server port came to (hop `rpc_bind`).
#[derive(Debug)]
pub enum BindOutcome {
    /// TCP did not connect this time (classified like the `tcp` hop).
    NotConnected(Attempt),
    /// The server answered the bind: bind_ack (accepted or not) or bind_nak.
    Answered(BindReply),
    /// Connected, then no usable answer: closed, reset, silence, or bytes that are not DCE/RPC.
    Broken(EpmError),
}

/// Connects to `addr` and sends one bind (no authentication) offering `iface` over NDR 2.0;
/// reads the one PDU that answers it. Each step is bounded by `limit`; nothing else is sent.
pub async fn probe_bind(addr: SocketAddr, iface: &SyntaxId, limit: Duration) -> BindOutcome {
    let (attempt, stream) = crate::hops::connect::connect(addr, limit).await;
    let Some(mut stream) = stream else {
        return BindOutcome::NotConnected(attempt);
    };
    let bind = encode_bind(1, iface);
    let reply = bounded(limit, async {
        stream.write_all(&bind).await?;
        let pdu = read_pdu(&mut stream).await?;
        Ok(decode_bind_reply(&pdu)?)
    })
    .await;
    match reply {
        Ok(r) => BindOutcome::Answered(r),
        Err(e) => BindOutcome::Broken(e),
    }
}

/// Reads one PDU (header, then the rest of its fragment length).
async fn read_pdu(stream: &mut TcpStream) -> Result<Vec<u8>, EpmError> {
    let mut header = [0u8; HEADER_LEN];
    match stream.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(EpmError::Closed),
        Err(e) => return Err(e.into()),
    }
    let h = pdu::parse_header(&header)?;
    let mut buf = vec![0u8; h.frag_len as usize];
    buf[..HEADER_LEN].copy_from_slice(&header);
    match stream.read_exact(&mut buf[HEADER_LEN..]).await {
        Ok(_) => Ok(buf),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(EpmError::Closed),
        Err(e) => Err(e.into()),
    }
}
