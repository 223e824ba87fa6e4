//! Hop `idle`: does a session that works survive DUR of silence?
//!
//! Zone firewalls expire idle TCP sessions (30 to 60 minutes is common, minutes on some), most of
//! them silently: pooled SQL connections and long distributed transactions then fail in one
//! direction, hours after every pre-deploy check passed. With `hold=DUR`, a `tcp` or `mssql`
//! check keeps its working connection idle for DUR with TCP keepalives off (a keepalive would
//! itself refresh the firewall's timer and hide the expiry), then uses it:
//! - `tcp`: [`tcp_idle`] turns keepalives on with a keepalive time of one second (the session has
//!   been idle longer, so the first probe leaves at once on Linux, then one a second; any TCP
//!   stack answers them) and watches the socket. On Linux an ACK to a probe is seen
//!   positively (`TCP_INFO`'s time since the last ACK); elsewhere only a death is seen, and no
//!   error within the window is read as survival (the keepalive gives up first, see
//!   [`KEEPALIVE_RETRIES`]).
//! - `mssql`: `SELECT 1` on the same TDS session (hops/mssql/run.rs), judged with [`Death`].
//!
//! How a dead session answers is the finding ([`Death`]): a reset (the firewall or the server
//! dropped the session and said so), a FIN (the server closed it), an ICMP error (a firewall
//! rejects the expired session's packets) or silence (the state was dropped without a word).

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::model::{Cause, HopKind, HopResult};

/// The longest hold accepted: a day covers every firewall idle timeout we know of (the longest
/// defaults are hours), and a longer value is more likely a typo (`15d` for `15s`).
pub const MAX_HOLD: Duration = Duration::from_secs(24 * 3600);

/// After the hold, the answer is awaited at least this long, whatever the hop timeout: keepalive
/// timers count whole seconds, so probes leave a second apart (the first at once on Linux, within
/// a second elsewhere), and this leaves room for a lost one (Linux) or for the OS to declare the
/// connection dead a second after an unanswered probe (elsewhere).
pub const MIN_PROBE_WINDOW: Duration = Duration::from_secs(3);

/// Keepalive probes the OS sends before it declares the connection dead. On Linux the ACK is
/// seen directly, so three leave room for a lost probe; elsewhere the connection's death is the
/// only signal, so one unanswered probe must kill it within [`MIN_PROBE_WINDOW`] (probe at 1 s,
/// dead at 2 s).
#[cfg(target_os = "linux")]
const KEEPALIVE_RETRIES: u32 = 3;
#[cfg(not(target_os = "linux"))]
const KEEPALIVE_RETRIES: u32 = 1;

/// A hold that is not a positive duration of at most [`MAX_HOLD`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HoldError {
    #[error("invalid hold `{text}`: {reason} (examples: 15s, 30m, 1h)")]
    NotADuration {
        text: String,
        reason: humantime::DurationError,
    },
    #[error("invalid hold `{0}`: must be greater than zero")]
    Zero(String),
    #[error("invalid hold `{0}`: at most 24h")]
    TooLong(String),
}

/// Parses a hold (`15s`, `30m`, `1h`) as `--timeout` is parsed: positive, at most [`MAX_HOLD`].
pub fn parse_hold(text: &str) -> Result<Duration, HoldError> {
    let d = humantime::parse_duration(text.trim()).map_err(|reason| HoldError::NotADuration {
        text: text.into(),
        reason,
    })?;
    if d.is_zero() {
        return Err(HoldError::Zero(text.into()));
    }
    if d > MAX_HOLD {
        return Err(HoldError::TooLong(text.into()));
    }
    Ok(d)
}

/// A hold as written in a canonical target URL, without spaces (`humantime` writes `1h 30m`):
/// the largest whole unit, so `parse_hold(&format_hold(d)) == d`.
pub fn format_hold(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 1000 != 0 {
        return format!("{ms}ms");
    }
    let s = d.as_secs();
    if s % 3600 == 0 {
        format!("{}h", s / 3600)
    } else if s % 60 == 0 {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// How long the answer after the hold is awaited: the hop timeout, at least [`MIN_PROBE_WINDOW`].
pub fn probe_window(hop_timeout: Duration) -> Duration {
    hop_timeout.max(MIN_PROBE_WINDOW)
}

/// How an idle session turned out to be dead (`data.died_by`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Death {
    /// A TCP reset came back: the firewall (or the server) dropped the session and said so.
    Reset,
    /// The server closed the session (FIN): its own idle timeout, or a proxy's.
    Closed,
    /// An ICMP error came back for the session's packets: a firewall rejects them.
    Rejected,
    /// No answer at all: the state was dropped silently.
    Silence,
}

impl Death {
    pub fn as_str(self) -> &'static str {
        match self {
            Death::Reset => "reset",
            Death::Closed => "closed",
            Death::Rejected => "rejected",
            Death::Silence => "silence",
        }
    }

    /// Pure: what an I/O error on an idle session says; `None` for errors that say nothing
    /// about the network (those are the tool's own problem).
    pub fn from_io(kind: ErrorKind) -> Option<Death> {
        match kind {
            ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe => {
                Some(Death::Reset)
            }
            ErrorKind::UnexpectedEof | ErrorKind::NotConnected => Some(Death::Closed),
            ErrorKind::TimedOut => Some(Death::Silence),
            ErrorKind::HostUnreachable
            | ErrorKind::NetworkUnreachable
            | ErrorKind::ConnectionRefused
            | ErrorKind::PermissionDenied => Some(Death::Rejected),
            _ => None,
        }
    }
}

/// Pure: the hop result of a session that survived `hold` idle; `how` says what answered.
pub fn survived(hold: Duration, how: &str) -> HopResult {
    HopResult::pass(
        HopKind::Idle,
        format!(
            "the session survived {} idle: {how}",
            humantime::format_duration(hold)
        ),
    )
    .with_data("hold_seconds", hold.as_secs_f64())
}

/// Pure: the hop result of a session found dead after (or during) `hold` idle.
pub fn expired(hold: Duration, death: Death, port: u16, what: &str) -> HopResult {
    let held = humantime::format_duration(hold);
    let lead = match death {
        Death::Reset => format!(
            "after {held} idle the session was reset: a firewall between the zones (or the \
             server) dropped it and said so"
        ),
        Death::Closed => format!(
            "after {held} idle the server side closed the session (FIN): the server's own idle \
             timeout, or a proxy's"
        ),
        Death::Rejected => format!(
            "after {held} idle the session's packets were rejected with an ICMP error: a \
             firewall no longer knows the session and refuses its packets"
        ),
        Death::Silence => format!(
            "after {held} idle the session's packets got no answer: a firewall (or NAT) \
             between the zones dropped its state silently, which clients see as a hang, then a \
             timeout"
        ),
    };
    HopResult::fail(
        HopKind::Idle,
        Cause::IdleExpired,
        format!("the session did not survive {held} idle: {what}"),
    )
    .with_hint(format!(
        "{lead}. Find the idle (session) timeout for TCP {port} on the firewalls between the \
         zones and keep TCP keepalives below it, or raise that timeout for this port. Keepalives: \
         Windows KeepAliveTime (milliseconds, default 2 hours) under \
         HKLM\\SYSTEM\\CurrentControlSet\\Services\\Tcpip\\Parameters; Linux \
         net.ipv4.tcp_keepalive_time (seconds, default 7200); or the driver's own: \
         SqlClient/ODBC KeepAlive and KeepAliveInterval, JDBC and npgsql keepalive settings \
         (Npgsql `Keepalive`, `Tcp Keepalive`). Connection pools should also retire idle \
         connections before that timeout"
    ))
    .with_data("hold_seconds", hold.as_secs_f64())
    .with_data("died_by", death.as_str())
}

/// What watching an idle socket saw.
enum Seen {
    /// The deadline passed with nothing to report.
    Quiet,
    /// An ACK arrived after the keepalive was turned on (Linux): the session is alive.
    Acked,
    Died(Death, String),
    /// An error that says nothing about the network.
    Broken(std::io::Error),
}

/// Hop `idle` for a `tcp` check: `stream` (connected, unused) is left idle for `hold` with
/// keepalives off, then keepalives are turned on and the socket watched for `window`.
pub async fn tcp_idle(
    stream: TcpStream,
    peer: SocketAddr,
    hold: Duration,
    window: Duration,
) -> HopResult {
    let mut received = 0usize;
    let result = hold_then_probe(&stream, peer, hold, window, &mut received).await;
    let result = result.with_data("address", peer.to_string());
    if received > 0 {
        result.with_data("bytes_received", received)
    } else {
        result
    }
}

/// [`tcp_idle`]'s steps; `received` counts what the server sent meanwhile.
async fn hold_then_probe(
    stream: &TcpStream,
    peer: SocketAddr,
    hold: Duration,
    window: Duration,
    received: &mut usize,
) -> HopResult {
    let sock = socket2::SockRef::from(stream);
    // Off, whatever the system default: a keepalive during the hold would refresh the
    // firewall's idle timer and hide the very expiry this hop looks for.
    if let Err(e) = sock.set_keepalive(false) {
        return internal(hold, format!("cannot turn TCP keepalive off: {e}"));
    }
    // The hold: nothing is sent. What arrives is read (a banner); a reset or FIN ends it early.
    let during = watch(stream, Instant::now() + hold, None, received).await;
    match during {
        Seen::Quiet | Seen::Acked => {}
        Seen::Died(death, e) => {
            return expired(
                hold,
                death,
                peer.port(),
                &format!("{peer}: during the hold: {e}"),
            )
        }
        Seen::Broken(e) => return internal(hold, format!("{peer}: during the hold: {e}")),
    }
    // The last ACK before the probes, to tell their answer from it (Linux).
    let before = last_ack(stream);
    if cfg!(target_os = "linux") && before.is_none() {
        return internal(hold, "cannot read TCP_INFO from the socket".into());
    }
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(1))
        .with_interval(Duration::from_secs(1))
        .with_retries(KEEPALIVE_RETRIES);
    if let Err(e) = sock.set_tcp_keepalive(&keepalive) {
        // Windows takes a probe count (TCP_KEEPCNT) from Windows 10 1703 / Server 2019 on.
        // Without it the OS sends ten probes before it gives up, far beyond the window, and a
        // silent drop would read as survival: nothing is claimed.
        if cfg!(windows) {
            return HopResult::unsupported(
                HopKind::Idle,
                format!(
                    "cannot set the TCP keepalive probe count on this Windows ({e}): needs \
                     Windows 10 1703 / Server 2019 or later to tell silence from survival; an \
                     mssql check with hold= works here"
                ),
            );
        }
        return internal(hold, format!("cannot turn TCP keepalive on: {e}"));
    }
    let probing = Instant::now();
    let after = watch(stream, probing + window, before, received).await;
    let waited =
        humantime::format_duration(Duration::from_millis(probing.elapsed().as_millis() as u64));
    match after {
        Seen::Acked => survived(
            hold,
            &format!("{peer} answered a TCP keepalive probe after {waited}"),
        ),
        Seen::Quiet if before.is_some() => expired(
            hold,
            Death::Silence,
            peer.port(),
            &format!("{peer}: no answer to TCP keepalive probes within {waited}"),
        ),
        // Without TCP_INFO the answer itself is not seen: the OS gives up after one unanswered
        // probe (KEEPALIVE_RETRIES), so a connection still open after the window was answered.
        Seen::Quiet => survived(
            hold,
            &format!(
                "{peer}: the connection was still open {waited} after TCP keepalive probes \
                 started (this platform does not show the probe's answer itself)"
            ),
        ),
        Seen::Died(death, e) => expired(
            hold,
            death,
            peer.port(),
            &format!("{peer}: after keepalive probes started: {e}"),
        ),
        Seen::Broken(e) => internal(hold, format!("{peer}: {e}")),
    }
}

fn internal(hold: Duration, detail: String) -> HopResult {
    HopResult::fail(HopKind::Idle, Cause::Internal, detail)
        .with_data("hold_seconds", hold.as_secs_f64())
}

/// Watches `stream` until `deadline`: reads (and counts) what arrives, reports a FIN or an error
/// at once and, given the last ACK seen before (`before`, Linux), an ACK received since. Bounded
/// by `deadline`.
async fn watch(
    stream: &TcpStream,
    deadline: Instant,
    before: Option<LastAck>,
    received: &mut usize,
) -> Seen {
    let mut buf = [0u8; 4096];
    loop {
        if let (Some(before), Some(now)) = (before, before.and_then(|_| last_ack(stream))) {
            if now.is_newer_than(before) {
                return Seen::Acked;
            }
        }
        let wake = if before.is_some() {
            (Instant::now() + Duration::from_millis(50)).min(deadline)
        } else {
            deadline
        };
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => {
                if Instant::now() >= deadline {
                    return Seen::Quiet;
                }
            }
            ready = stream.readable() => {
                if let Err(e) = ready {
                    return seen_error(e);
                }
                match stream.try_read(&mut buf) {
                    Ok(0) => {
                        return Seen::Died(
                            Death::Closed,
                            "the peer closed the connection (FIN)".into(),
                        )
                    }
                    Ok(n) => *received += n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) => return seen_error(e),
                }
            }
        }
    }
}

fn seen_error(e: std::io::Error) -> Seen {
    match Death::from_io(e.kind()) {
        Some(death) => Seen::Died(death, e.to_string()),
        None => Seen::Broken(e),
    }
}

/// When the socket last received an ACK, as `TCP_INFO` tells it (Linux): the milliseconds since,
/// read at an instant. A keepalive probe's answer is an ACK, so this sees the answer itself.
#[derive(Debug, Clone, Copy)]
struct LastAck {
    at: Instant,
    ms_ago: u32,
}

impl LastAck {
    /// Whether this reading shows a later ACK than `before`: the ACK time it implies is later
    /// than `before`'s by more than the jiffies' rounding (10 ms; the hold separates the two
    /// by seconds).
    fn is_newer_than(self, before: LastAck) -> bool {
        let between = self.at.saturating_duration_since(before.at).as_millis();
        u128::from(self.ms_ago) + 10 < u128::from(before.ms_ago) + between
    }
}

#[cfg(target_os = "linux")]
fn last_ack(stream: &TcpStream) -> Option<LastAck> {
    use std::os::fd::AsRawFd;
    // SAFETY: tcp_info is plain data; getsockopt writes at most `len` bytes into it.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    (rc == 0).then(|| LastAck {
        at: Instant::now(),
        ms_ago: info.tcpi_last_ack_recv,
    })
}

/// Elsewhere the answer itself is not seen (see [`tcp_idle`]).
#[cfg(not(target_os = "linux"))]
fn last_ack(_stream: &TcpStream) -> Option<LastAck> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_parse_and_format_back() {
        for (text, secs) in [
            ("15s", 15.0),
            ("30m", 1800.0),
            ("1h", 3600.0),
            ("1500ms", 1.5),
        ] {
            let d = parse_hold(text).unwrap();
            assert_eq!(d.as_secs_f64(), secs, "{text}");
            assert_eq!(parse_hold(&format_hold(d)).unwrap(), d, "{text}");
        }
        assert_eq!(format_hold(Duration::from_secs(90)), "90s");
        assert_eq!(format_hold(Duration::from_secs(5400)), "90m");
        for bad in ["", "0s", "soon", "25h", "15"] {
            let e = parse_hold(bad).expect_err(bad);
            assert!(e.to_string().contains("hold"), "{e}");
        }
    }

    #[test]
    fn an_ack_counts_only_when_later_than_the_one_before() {
        let t0 = Instant::now();
        let before = LastAck {
            at: t0,
            ms_ago: 15_000,
        };
        let later = |after_ms: u64, ms_ago: u32| LastAck {
            at: t0 + Duration::from_millis(after_ms),
            ms_ago,
        };
        // The same old ACK, read 500 ms later (with a jiffy of rounding either way): not new.
        assert!(!later(500, 15_500).is_newer_than(before));
        assert!(!later(500, 15_496).is_newer_than(before));
        // An ACK 2 ms after the probes started, read at 300 ms: new.
        assert!(later(300, 298).is_newer_than(before));
    }

    #[test]
    fn io_errors_say_how_the_session_died() {
        let rows = [
            (ErrorKind::ConnectionReset, Some(Death::Reset)),
            (ErrorKind::BrokenPipe, Some(Death::Reset)),
            (ErrorKind::UnexpectedEof, Some(Death::Closed)),
            (ErrorKind::TimedOut, Some(Death::Silence)),
            (ErrorKind::HostUnreachable, Some(Death::Rejected)),
            (ErrorKind::PermissionDenied, Some(Death::Rejected)),
            (ErrorKind::InvalidData, None),
        ];
        for (kind, want) in rows {
            assert_eq!(Death::from_io(kind), want, "{kind:?}");
        }
    }

    #[test]
    fn expired_names_the_death_port_and_keepalive_settings() {
        let r = expired(Duration::from_secs(15), Death::Silence, 1433, "x");
        assert_eq!(r.cause, Some(Cause::IdleExpired));
        assert_eq!(r.data["died_by"], "silence");
        assert_eq!(r.data["hold_seconds"], 15.0);
        let hint = r.hint.unwrap();
        for want in [
            "TCP 1433",
            "KeepAliveTime",
            "tcp_keepalive_time",
            "silently",
        ] {
            assert!(hint.contains(want), "{want}: {hint}");
        }
        let r = expired(Duration::from_secs(15), Death::Reset, 1433, "x");
        assert_eq!(r.data["died_by"], "reset");
        let r = survived(Duration::from_secs(5), "ok");
        assert_eq!((r.status, r.cause), (crate::model::Status::Pass, None));
        assert!(!r.data.contains_key("died_by"));
    }

    /// On loopback nothing expires: the probe's ACK is seen (Linux), or the connection stays up.
    #[tokio::test]
    async fn a_loopback_session_survives_a_short_hold() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer = listener.local_addr().unwrap();
        let accept = tokio::spawn(async move { listener.accept().await.unwrap().0 });
        let stream = TcpStream::connect(peer).await.unwrap();
        let _server = accept.await.unwrap();
        let started = std::time::Instant::now();
        // Longer than the 1 s keepalive time, so that the first probe leaves at once.
        let r = tcp_idle(stream, peer, Duration::from_millis(1100), MIN_PROBE_WINDOW).await;
        // A Windows that cannot set the probe count (before 10 1703, and wine, where these unit
        // tests run) says so instead of claiming survival; every other outcome is a failure.
        if cfg!(windows) && r.status == crate::model::Status::Skip {
            assert!(
                r.is_unsupported() && r.detail.contains("probe count"),
                "{r:?}"
            );
            return;
        }
        assert_eq!(r.status, crate::model::Status::Pass, "{r:?}");
        if cfg!(target_os = "linux") {
            assert!(r.detail.contains("answered a TCP keepalive probe"), "{r:?}");
            // The first probe leaves at once; its ACK ends the wait.
            assert!(started.elapsed() < Duration::from_millis(1600), "{r:?}");
        }
    }

    /// A server that closes during the hold is reported at once, as `closed`.
    #[tokio::test]
    async fn a_close_during_the_hold_is_reported_as_closed() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer = listener.local_addr().unwrap();
        let accept = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
            drop(s);
        });
        let stream = TcpStream::connect(peer).await.unwrap();
        let started = std::time::Instant::now();
        let r = tcp_idle(stream, peer, Duration::from_secs(10), MIN_PROBE_WINDOW).await;
        accept.await.unwrap();
        assert_eq!(r.cause, Some(Cause::IdleExpired), "{r:?}");
        assert_eq!(r.data["died_by"], "closed", "{r:?}");
        assert!(started.elapsed() < Duration::from_secs(5), "{r:?}");
    }
}
