//! The raw sockets behind [`super::ResetProbe`] on Linux.
//!
//! - One raw IPv4 `IPPROTO_TCP` socket per run, opened on the first refused connect that needs
//!   it: the kernel hands it a copy of every incoming TCP segment, IP header included (the TTL
//!   is there). A classic BPF filter keeps only resets and SYN-ACKs, so a busy host does not
//!   copy all its traffic to us; one reader task matches each segment to the connect waiting
//!   for it by (remote address, remote port, local port).
//! - The probes that need it are fresh connects whose local port is bound first, so the answer
//!   to them is known among all the segments the raw socket sees: a second connect to the
//!   refused port (its reset), and one to a port of the same host seen open (its SYN-ACK).
//! - An ICMP echo through a raw `IPPROTO_ICMP` socket, when no port of the target was seen open.
//!
//! Opening either raw socket needs root or CAP_NET_RAW; without them the check says so.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::unix::AsyncFd;
use tokio::sync::{oneshot, OnceCell};
use tokio::time::Instant;

use super::judge::{judge, ResetOrigin, TtlSource};
use super::packet::{self, Segment};

/// (remote address, remote port, local port) of the segment a probe waits for.
type Key = (Ipv4Addr, u16, u16);

/// How long a probe waits for its segment once its connect has ended: the raw socket got its
/// copy before TCP processed the segment, so only the reader task's turn is left to wait for.
const SEGMENT_WAIT: Duration = Duration::from_millis(200);

/// What the TTL of a target is, once read (None: it could not be).
type TargetTtl = Option<(u8, TtlSource)>;

/// A run's state (see [`super::ResetProbe`]).
#[derive(Default)]
pub struct Probe {
    raw: OnceLock<Result<Arc<RawTcp>, TtlUnread>>,
    /// Each target's own TTL, read once per run.
    target_ttls: Mutex<HashMap<Ipv4Addr, Arc<OnceCell<TargetTtl>>>>,
    /// One port per host that connected in this run.
    open_ports: Mutex<HashMap<Ipv4Addr, u16>>,
}

/// The lock even if a panic elsewhere poisoned it (every update is one insert or remove).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Probe {
    pub fn saw_open(&self, addr: SocketAddrV4) {
        lock(&self.open_ports)
            .entry(*addr.ip())
            .or_insert(addr.port());
    }

    /// The run's raw socket, opened on first need (a run that never needs it never opens it).
    fn raw(&self) -> &Result<Arc<RawTcp>, TtlUnread> {
        self.raw.get_or_init(|| RawTcp::open().map(Arc::new))
    }

    /// Before a connect to `target`: binds `socket`'s local port and waits on the raw socket for
    /// the segment that will answer it, so that a refusal's own reset gives its TTL (no second
    /// connect). `None` when the raw socket cannot be had or the port cannot be bound: a refusal
    /// then has its origin read by a second connect, as before.
    pub fn expect_answer(
        &self,
        socket: &tokio::net::TcpSocket,
        target: SocketAddrV4,
    ) -> Option<Answer> {
        let raw = self.raw().as_ref().ok()?;
        socket.bind((Ipv4Addr::UNSPECIFIED, 0).into()).ok()?;
        let local = socket.local_addr().ok()?.port();
        Some(Answer(raw.expect((*target.ip(), target.port(), local))))
    }

    /// Where the reset that refused a connect to `target` came from. `answer`: the wait set up
    /// by [`Probe::expect_answer`] for that very connect; without it (or when its reset was not
    /// seen) the port is connected once more to read a reset's TTL.
    pub async fn origin(
        &self,
        target: SocketAddrV4,
        budget: Duration,
        answer: Option<Answer>,
    ) -> ResetOrigin {
        let deadline = Instant::now() + budget;
        let raw = match self.raw() {
            Ok(raw) => raw.clone(),
            Err(why) => {
                return ResetOrigin::NotChecked {
                    reset_ttl: None,
                    why: why.to_string(),
                }
            }
        };
        let seen = match answer {
            Some(mut answer) => answer.0.segment().await.filter(Segment::is_rst),
            None => None,
        };
        let reset_ttl = match seen {
            Some(segment) => segment.ttl,
            None => match raw.reset_ttl(target, deadline).await {
                Ok(ttl) => ttl,
                Err(why) => {
                    return ResetOrigin::NotChecked {
                        reset_ttl: None,
                        why: why.to_string(),
                    }
                }
            },
        };
        match self.target_ttl(&raw, *target.ip(), deadline).await {
            Some((target_ttl, target_ttl_from)) => ResetOrigin::Compared {
                reset_ttl,
                target_ttl,
                target_ttl_from,
                judgement: judge(reset_ttl, target_ttl),
            },
            None => ResetOrigin::NotChecked {
                reset_ttl: Some(reset_ttl),
                why: format!(
                    "the reset arrived with TTL {reset_ttl}, but there is no TTL of the target to \
                     compare it with: {} answered no ICMP echo and no port of it was seen open \
                     earlier in this run",
                    target.ip()
                ),
            },
        }
    }

    /// The target's own TTL: the SYN-ACK of a port of it seen open, else an echo reply.
    async fn target_ttl(&self, raw: &RawTcp, ip: Ipv4Addr, deadline: Instant) -> TargetTtl {
        let cell = lock(&self.target_ttls).entry(ip).or_default().clone();
        *cell
            .get_or_init(|| async {
                let open = lock(&self.open_ports).get(&ip).copied();
                if let Some(port) = open {
                    if let Some(ttl) = raw.syn_ack_ttl(SocketAddrV4::new(ip, port), deadline).await
                    {
                        return Some((ttl, TtlSource::SynAck));
                    }
                }
                echo_ttl(ip, deadline)
                    .await
                    .map(|ttl| (ttl, TtlSource::IcmpEcho))
            })
            .await
    }
}

/// The run's raw TCP socket: its reader task and the probes waiting for a segment.
struct RawTcp {
    waiters: Arc<Waiters>,
    reader: tokio::task::AbortHandle,
}

impl Drop for RawTcp {
    /// The reader holds the socket: it ends with the run.
    fn drop(&mut self) {
        self.reader.abort();
    }
}

#[derive(Default)]
struct Waiters(Mutex<HashMap<Key, oneshot::Sender<Segment>>>);

impl Waiters {
    fn dispatch(&self, segment: Segment) {
        let key = (segment.src, segment.src_port, segment.dst_port);
        if let Some(tx) = lock(&self.0).remove(&key) {
            let _ = tx.send(segment);
        }
    }
}

/// A probe's wait for the segment with `key`; unregistered when dropped, answered or not.
struct Expected {
    waiters: Arc<Waiters>,
    key: Key,
    rx: Option<oneshot::Receiver<Segment>>,
}

/// The wait for the segment that answers one connect (see [`Probe::expect_answer`]).
pub struct Answer(Expected);

impl Expected {
    async fn segment(&mut self) -> Option<Segment> {
        let rx = self.rx.take()?;
        tokio::time::timeout(SEGMENT_WAIT, rx).await.ok()?.ok()
    }
}

impl Drop for Expected {
    fn drop(&mut self) {
        lock(&self.waiters.0).remove(&self.key);
    }
}

/// How a probe's connect ended.
enum Handshake {
    Refused,
    Connected,
    Failed(std::io::Error),
    NoAnswer,
}

/// Why the reset's TTL was not read: the reason a refused connect's origin was not checked.
/// Shared by every check of the run when the raw socket could not be opened, hence `Clone` and
/// the I/O errors behind an `Arc`.
#[derive(Debug, Clone, thiserror::Error)]
enum TtlUnread {
    #[error(
        "reading the reset's TTL needs a raw socket (root or CAP_NET_RAW), which this run does \
         not have"
    )]
    NoPrivilege,
    #[error("cannot open a raw socket to read the reset's TTL: {0}")]
    RawSocket(Arc<std::io::Error>),
    #[error("raw socket: {0}")]
    Setup(Arc<std::io::Error>),
    #[error("{SECOND_CONNECT} could not be made: {0}")]
    Connect(Arc<std::io::Error>),
    #[error("{SECOND_CONNECT} was refused but its reset was not seen on the raw socket")]
    ResetNotSeen,
    #[error("{SECOND_CONNECT} was accepted: the port opened in between")]
    Accepted,
    #[error("{SECOND_CONNECT} ended otherwise: {0}")]
    Failed(Arc<std::io::Error>),
    #[error("{SECOND_CONNECT} got no answer in time")]
    NoAnswer,
}

const SECOND_CONNECT: &str = "a second connect, made to read the reset's TTL,";

/// Hands a raw socket to tokio's reactor, for reading.
fn register(socket: Socket) -> std::io::Result<AsyncFd<Socket>> {
    // SAFETY: the Socket owns its descriptor, which stays open and the same until the AsyncFd
    // (which owns the Socket) drops it.
    unsafe { AsyncFd::register_with_interest(socket, tokio::io::Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
}

/// `EPERM`/`EACCES` from `socket(SOCK_RAW)`: the run is not privileged.
fn raw_socket(protocol: Protocol) -> Result<Socket, TtlUnread> {
    let socket = Socket::new(Domain::IPV4, Type::from(libc::SOCK_RAW), Some(protocol)).map_err(
        |e| match e.raw_os_error() {
            Some(libc::EPERM | libc::EACCES) => TtlUnread::NoPrivilege,
            _ => TtlUnread::RawSocket(Arc::new(e)),
        },
    )?;
    socket
        .set_nonblocking(true)
        .map_err(|e| TtlUnread::Setup(Arc::new(e)))?;
    Ok(socket)
}

impl RawTcp {
    fn open() -> Result<RawTcp, TtlUnread> {
        let socket = raw_socket(Protocol::TCP)?;
        // Without the filter the reader still matches in user space, only with more copies.
        if let Err(e) = attach_rst_synack_filter(&socket) {
            tracing::debug!("raw TCP socket: cannot attach the reset/SYN-ACK filter: {e}");
        }
        enlarge_receive_buffer(&socket);
        let fd = register(socket).map_err(|e| TtlUnread::Setup(Arc::new(e)))?;
        let waiters = Arc::new(Waiters::default());
        let reader = tokio::spawn(read_segments(fd, waiters.clone())).abort_handle();
        Ok(RawTcp { waiters, reader })
    }

    /// Registers the wait for the segment with `key`.
    fn expect(&self, key: Key) -> Expected {
        let (tx, rx) = oneshot::channel();
        lock(&self.waiters.0).insert(key, tx);
        Expected {
            waiters: self.waiters.clone(),
            key,
            rx: Some(rx),
        }
    }

    /// Connects to `to` from a local port bound first, and hands back how the handshake ended
    /// and the segment that ended it (as the raw socket saw it).
    async fn handshake(
        &self,
        to: SocketAddrV4,
        deadline: Instant,
    ) -> std::io::Result<(Handshake, Option<Segment>)> {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind((Ipv4Addr::UNSPECIFIED, 0).into())?;
        let local = socket.local_addr()?.port();
        let mut expected = self.expect((*to.ip(), to.port(), local));
        let ended = match tokio::time::timeout_at(deadline, socket.connect(to.into())).await {
            Ok(Ok(_stream)) => Handshake::Connected,
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => Handshake::Refused,
            Ok(Err(e)) => Handshake::Failed(e),
            Err(_) => Handshake::NoAnswer,
        };
        let segment = match ended {
            Handshake::Refused | Handshake::Connected => expected.segment().await,
            _ => None,
        };
        Ok((ended, segment))
    }

    /// The TTL of the reset a second connect to `target` gets.
    async fn reset_ttl(&self, target: SocketAddrV4, deadline: Instant) -> Result<u8, TtlUnread> {
        let ended = self
            .handshake(target, deadline)
            .await
            .map_err(|e| TtlUnread::Connect(Arc::new(e)))?;
        match ended {
            (Handshake::Refused, Some(segment)) if segment.is_rst() => Ok(segment.ttl),
            (Handshake::Refused, _) => Err(TtlUnread::ResetNotSeen),
            (Handshake::Connected, _) => Err(TtlUnread::Accepted),
            (Handshake::Failed(e), _) => Err(TtlUnread::Failed(Arc::new(e))),
            (Handshake::NoAnswer, _) => Err(TtlUnread::NoAnswer),
        }
    }

    /// The TTL of the SYN-ACK of `open`, a port of the target that connected earlier.
    async fn syn_ack_ttl(&self, open: SocketAddrV4, deadline: Instant) -> Option<u8> {
        match self.handshake(open, deadline).await {
            Ok((Handshake::Connected, Some(segment))) if segment.is_syn_ack() => Some(segment.ttl),
            _ => None,
        }
    }
}

/// The reader task: every segment the filter lets through, to the probe waiting for it.
async fn read_segments(fd: AsyncFd<Socket>, waiters: Arc<Waiters>) {
    // The filter cuts each copy to 128 bytes: IP and TCP headers with their options.
    let mut buf = [0u8; 256];
    loop {
        let Ok(mut ready) = fd.readable().await else {
            return;
        };
        let read = ready.try_io(|socket| {
            let mut socket: &Socket = socket.get_ref();
            std::io::Read::read(&mut socket, &mut buf)
        });
        match read {
            Ok(Ok(n)) => {
                if let Some(segment) = packet::parse_segment(&buf[..n]) {
                    waiters.dispatch(segment);
                }
            }
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Ok(Err(e)) => {
                tracing::debug!("raw TCP socket: {e}; reset origins are no longer read");
                return;
            }
            // Not readable after all: wait again.
            Err(_would_block) => {}
        }
    }
}

/// Room for the answers of many refused ports at once (a run has up to 1,024 connects in flight):
/// a full receive queue drops copies, and a probe whose reset was dropped reports its origin as
/// not checked. Root may exceed `net.core.rmem_max` (SO_RCVBUFFORCE, CAP_NET_ADMIN); with
/// CAP_NET_RAW alone the kernel caps the request at that limit.
fn enlarge_receive_buffer(socket: &Socket) {
    const WANTED: libc::c_int = 4 << 20;
    let forced =
        crate::hops::errqueue::set_option(socket, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &WANTED);
    if forced.is_err() {
        let _ = socket.set_recv_buffer_size(WANTED as usize);
    }
}

/// Attaches a classic BPF program that accepts only TCP segments with RST set or SYN and ACK
/// both set (a raw IPv4 socket's filter sees the packet from its IP header on), cut to 128 bytes.
fn attach_rst_synack_filter(socket: &Socket) -> std::io::Result<()> {
    let op = |code: u16, jt: u8, jf: u8, k: u32| libc::sock_filter { code, jt, jf, k };
    let program = [
        // X = IP header length (4 * the low nibble of byte 0).
        op(
            (libc::BPF_LDX | libc::BPF_B | libc::BPF_MSH) as u16,
            0,
            0,
            0,
        ),
        // A = TCP flags (byte 13 of the TCP header).
        op(
            (libc::BPF_LD | libc::BPF_B | libc::BPF_IND) as u16,
            0,
            0,
            13,
        ),
        // RST: accept.
        op(
            (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16,
            3,
            0,
            u32::from(packet::TCP_RST),
        ),
        op(
            (libc::BPF_ALU | libc::BPF_AND | libc::BPF_K) as u16,
            0,
            0,
            u32::from(packet::TCP_SYN_ACK),
        ),
        // SYN and ACK: accept.
        op(
            (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            1,
            0,
            u32::from(packet::TCP_SYN_ACK),
        ),
        op((libc::BPF_RET | libc::BPF_K) as u16, 0, 0, 0),
        op((libc::BPF_RET | libc::BPF_K) as u16, 0, 0, 128),
    ];
    let fprog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_ptr() as *mut libc::sock_filter,
    };
    // The kernel copies the program during the call; `program` outlives it.
    crate::hops::errqueue::set_option(socket, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &fprog)
}

/// The TTL of the target's answer to one ICMP echo, waiting at most until `deadline`.
async fn echo_ttl(target: Ipv4Addr, deadline: Instant) -> Option<u8> {
    let socket = match raw_socket(Protocol::ICMPV4) {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!("echo to {target}: {e}");
            return None;
        }
    };
    let mut id = [0u8; 2];
    let _ = getrandom::fill(&mut id);
    let (id, seq) = (u16::from_ne_bytes(id), 1);
    let request = packet::echo_request(id, seq, b"dtcprobe reset origin");
    let to = SocketAddrV4::new(target, 0);
    if let Err(e) = socket.send_to(&request, &to.into()) {
        tracing::debug!("echo to {target}: {e}");
        return None;
    }
    let fd = register(socket).ok()?;
    let mut buf = [0u8; 1500];
    // Bounded by the deadline; each pass reads one ICMP packet of the host's (the socket gets
    // them all).
    loop {
        let mut ready = tokio::time::timeout_at(deadline, fd.readable())
            .await
            .ok()?
            .ok()?;
        let read = ready.try_io(|socket| {
            let mut socket: &Socket = socket.get_ref();
            std::io::Read::read(&mut socket, &mut buf)
        });
        match read {
            Ok(Ok(n)) => {
                if let Some(ttl) = packet::echo_reply_ttl(&buf[..n], target, id, seq) {
                    return Some(ttl);
                }
            }
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Ok(Err(e)) => {
                tracing::debug!("echo to {target}: {e}");
                return None;
            }
            Err(_would_block) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real traffic on loopback through the real filter: a raw TCP socket sees every incoming
    /// segment (SYNs, ACKs, data) unless the filter works, so only resets and SYN-ACKs may arrive.
    #[test]
    fn the_filter_keeps_only_resets_and_syn_acks() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIP the_filter_keeps_only_resets_and_syn_acks: needs root (a raw socket)");
            return;
        }
        let socket = raw_socket(Protocol::TCP).unwrap();
        attach_rst_synack_filter(&socket).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let open = listener.local_addr().unwrap();
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let mut client = std::net::TcpStream::connect(open).unwrap();
        std::io::Write::write_all(&mut client, b"data segments must not pass").unwrap();
        let _ = std::net::TcpStream::connect(closed);
        std::thread::sleep(Duration::from_millis(50));

        let mut seen = Vec::new();
        let mut buf = [0u8; 256];
        // Bounded: the queue holds what the traffic above (and any other test's) produced.
        for _ in 0..10_000 {
            match std::io::Read::read(&mut &socket, &mut buf) {
                Ok(n) => seen.extend(packet::parse_segment(&buf[..n])),
                Err(_) => break,
            }
        }
        assert!(
            seen.iter().all(|s| s.is_rst() || s.is_syn_ack()),
            "{seen:?}"
        );
        assert!(
            seen.iter()
                .any(|s| s.is_syn_ack() && s.src_port == open.port()),
            "no SYN-ACK from {open}: {seen:?}"
        );
        assert!(
            seen.iter()
                .any(|s| s.is_rst() && s.src_port == closed.port()),
            "no reset from {closed}: {seen:?}"
        );
    }
}
