//! Pure: where a SQL Server login spent its time, and where a login that timed out stalled,
//! read from the order of the reads and writes on its connection ([`super::sniff::Io`]).
//!
//! The driver (tiberius) exposes no phase events, but the byte stream shows them. The client
//! speaks in flights (writes with no read between) and the server answers each:
//! - TDS 7.x: the first flight is PRELOGIN; flights that are TDS PRELOGIN packets (first byte
//!   0x12) after it carry the TLS handshake (MS-TDS wraps it in PRELOGIN packets); the first
//!   flight after those that is not one is LOGIN7 (TLS application data 0x17, or a LOGIN7
//!   packet 0x10 without TLS); with Windows authentication any flight after LOGIN7 is an SSPI
//!   round; the server's answer to the last one ends with LOGINACK.
//! - TDS 8 strict: TLS comes first and PRELOGIN and LOGIN7 travel inside it, so the bytes cannot
//!   tell them apart: on a login the server answered, LOGIN7 is the last flight and PRELOGIN the
//!   one before (SQL Server authentication; no SSPI phase is told apart in strict mode).
//!
//! Phases are consecutive (they add up to the login's time): `tcp` (connect), `prelogin`
//! (PRELOGIN sent until the TLS handshake starts), `tls`, `login7` (LOGIN7 sent until the first
//! byte of the answer), `sspi` (Windows authentication rounds), `loginack` (the rest of the
//! server's answer).

use std::time::Duration;

use super::sniff::Io;

/// TDS packet type PRELOGIN, the first byte of a packet that carries a TDS 7.x TLS handshake.
const TDS_PRELOGIN: u8 = 0x12;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Tcp,
    Prelogin,
    Tls,
    Login7,
    Sspi,
    Loginack,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Tcp => "tcp",
            Phase::Prelogin => "prelogin",
            Phase::Tls => "tls",
            Phase::Login7 => "login7",
            Phase::Sspi => "sspi",
            Phase::Loginack => "loginack",
        }
    }
}

/// The phases a login went through, each with its time, in order; the last is where it was
/// when it ended (or stalled).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Breakdown {
    pub phases: Vec<(Phase, Duration)>,
    /// The server's first TLS answer (its hello) arrived: a stall in `tls` is after it.
    pub server_hello_seen: bool,
}

/// One client flight: when it started, its first byte, and when the server's answer to it
/// started (its first read), if it did.
#[derive(Debug, Clone, Copy)]
struct Flight {
    start: Duration,
    first: u8,
    answered: Option<Duration>,
}

fn flights(io: &[Io]) -> Vec<Flight> {
    let mut v: Vec<Flight> = Vec::new();
    let mut last_was_write = false;
    for e in io {
        if e.write {
            if !last_was_write {
                v.push(Flight {
                    start: e.at,
                    first: e.first,
                    answered: None,
                });
            }
        } else if let Some(f) = v.last_mut() {
            f.answered.get_or_insert(e.at);
        }
        last_was_write = e.write;
    }
    v
}

/// Splits a login that connected at `connected` (None: the TCP connect never finished) and
/// ended at `end` (the login's answer complete, its failure, or its timeout).
/// `windows_auth`: the login authenticates with SSPI, so client flights after LOGIN7 are SSPI
/// rounds; with SQL Server authentication they are not told apart from the answer.
pub fn split(
    connected: Option<Duration>,
    io: &[Io],
    end: Duration,
    strict: bool,
    windows_auth: bool,
) -> Breakdown {
    let Some(connected) = connected else {
        return Breakdown {
            phases: vec![(Phase::Tcp, end)],
            server_hello_seen: false,
        };
    };
    let f = flights(io);
    // (phase, start) in order; each lasts until the next one's start (the last until `end`).
    let mut marks: Vec<(Phase, Duration)> = vec![(Phase::Tcp, Duration::ZERO)];
    let mut server_hello_seen = false;
    if strict {
        marks.push((Phase::Tls, connected));
        server_hello_seen = f.first().is_some_and(|x| x.answered.is_some());
        let answered_last = f.last().is_some_and(|x| x.answered.is_some());
        if f.len() >= 3 && answered_last {
            marks.push((Phase::Prelogin, f[f.len() - 2].start));
            let login = f[f.len() - 1];
            marks.push((Phase::Login7, login.start));
            if let Some(a) = login.answered {
                marks.push((Phase::Loginack, a));
            }
        } else if let (true, Some(last)) = (f.len() >= 3, f.last()) {
            // Unanswered, three flights in: past the handshake (see `stall`).
            marks.push((Phase::Login7, last.start));
        }
    } else if !f.is_empty() {
        marks.push((Phase::Prelogin, connected));
        let rest = &f[1..];
        let tls: Vec<&Flight> = rest
            .iter()
            .take_while(|x| x.first == TDS_PRELOGIN)
            .collect();
        if let Some(first_tls) = tls.first() {
            marks.push((Phase::Tls, first_tls.start));
            server_hello_seen = first_tls.answered.is_some();
        }
        let after = &rest[tls.len()..];
        if let Some(login) = after.first() {
            marks.push((Phase::Login7, login.start));
            let sspi = if windows_auth { &after[1..] } else { &[] };
            match (login.answered, sspi.last()) {
                (Some(a), Some(last)) => {
                    marks.push((Phase::Sspi, a));
                    if let Some(b) = last.answered {
                        marks.push((Phase::Loginack, b));
                    }
                }
                (Some(a), None) => marks.push((Phase::Loginack, a)),
                (None, _) => {}
            }
        }
    } else {
        marks.push((Phase::Prelogin, connected));
    }
    let mut phases = Vec::with_capacity(marks.len());
    for (i, (phase, start)) in marks.iter().enumerate() {
        let stop = marks.get(i + 1).map_or(end, |(_, s)| *s).max(*start);
        let stop = if i == 0 { connected.min(end) } else { stop };
        phases.push((*phase, stop.saturating_sub(*start)));
    }
    Breakdown {
        phases,
        server_hello_seen,
    }
}

impl Breakdown {
    /// Where the login was when it ended.
    pub fn last(&self) -> Phase {
        self.phases.last().map_or(Phase::Tcp, |(p, _)| *p)
    }

    /// `{"tcp": ms, ...}` for `data.phases_ms`, milliseconds with three decimals.
    pub fn to_json(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        for (p, d) in &self.phases {
            let ms = (d.as_secs_f64() * 1e6).round() / 1e3;
            m.insert(p.name().into(), serde_json::json!(ms));
        }
        serde_json::Value::Object(m)
    }

    /// What a login that timed out was waiting for, and what usually causes that stall.
    pub fn stall(&self, strict: bool) -> (String, &'static str) {
        match self.last() {
            Phase::Tcp => (
                "stalled in the TCP connect".into(),
                "the TCP handshake did not finish: a firewall dropping the SYN, or a server whose \
                 listen backlog is full",
            ),
            Phase::Prelogin => (
                "stalled after PRELOGIN: the server accepted the connection but did not answer \
                 the first TDS packet"
                    .into(),
                "something other than SQL Server listens there (a TDS 8 only server needs \
                 encrypt=strict), SQL Server has no free worker to accept logins (THREADPOOL \
                 waits), or a device between the zones holds the first data packet",
            ),
            Phase::Tls if !self.server_hello_seen => (
                "stalled in the TLS handshake: no answer to the ClientHello".into(),
                "TLS inspection or an IPS between the zones holds the ClientHello, or the \
                 server's TLS stack (Schannel) does not answer it",
            ),
            Phase::Tls => (
                "stalled after the server's TLS hello: the handshake did not finish".into(),
                "the server's hello and certificate are the largest packets of the login: an \
                 MTU black hole between the zones (ICMP 'fragmentation needed' blocked, \
                 VPN/tunnel overhead) drops exactly these, or TLS inspection holds them. Clients \
                 that check revocation also fetch the CA's CRL/OCSP over HTTP at this point: \
                 where that is blocked, their handshake hangs here",
            ),
            Phase::Login7 if strict => (
                "stalled after the TLS handshake (TDS 8: PRELOGIN and LOGIN7 travel encrypted, \
                 so which of them went unanswered is not told apart)"
                    .into(),
                "the server received the login and did not answer: a slow or unreachable domain \
                 controller (Windows logins are checked there), a logon trigger, or an overloaded \
                 server",
            ),
            Phase::Login7 => (
                "stalled after LOGIN7: the server received the login and did not answer".into(),
                "a slow or unreachable domain controller (the server checks Windows logins and \
                 group membership there), a slow logon trigger, or an overloaded server \
                 (THREADPOOL waits)",
            ),
            Phase::Sspi => (
                "stalled in the Windows authentication (SSPI) exchange".into(),
                "the server waits on its domain controller (Kerberos or NTLM pass-through): \
                 check the domain controller's reachability and load from the SQL Server host",
            ),
            Phase::Loginack => (
                "stalled while the server answered the login: its answer began and did not \
                 finish"
                    .into(),
                "a device between the zones drops the larger packets of the answer (an MTU \
                 black hole), or the server was stopped mid-login",
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }
    fn w(at: u64, first: u8) -> Io {
        Io {
            at: ms(at),
            write: true,
            first,
        }
    }
    fn r(at: u64) -> Io {
        Io {
            at: ms(at),
            write: false,
            first: 0x04,
        }
    }
    fn names(b: &Breakdown) -> Vec<(&'static str, u64)> {
        b.phases
            .iter()
            .map(|(p, d)| (p.name(), d.as_millis() as u64))
            .collect()
    }

    #[test]
    fn a_tds7_login_with_tls_splits_into_its_phases() {
        // PRELOGIN, two TLS 1.2 flights, LOGIN7 as TLS application data, LOGINACK.
        let io = [
            w(2, 0x12),
            r(5),
            w(6, 0x12),
            r(10),
            w(11, 0x12),
            r(20),
            w(21, 0x17),
            r(40),
            r(41),
        ];
        let b = split(Some(ms(2)), &io, ms(45), false, false);
        assert_eq!(
            names(&b),
            [
                ("tcp", 2),
                ("prelogin", 4),
                ("tls", 15),
                ("login7", 19),
                ("loginack", 5)
            ]
        );
        let total: Duration = b.phases.iter().map(|(_, d)| *d).sum();
        assert_eq!(total, ms(45));
    }

    #[test]
    fn without_tls_and_with_sspi_rounds() {
        // encrypt=none: LOGIN7 as a clear 0x10 packet; an SSPI round after it.
        let io = [w(1, 0x12), r(2), w(3, 0x10), r(8), w(9, 0x11), r(30)];
        let b = split(Some(ms(1)), &io, ms(31), false, true);
        assert_eq!(
            names(&b),
            [
                ("tcp", 1),
                ("prelogin", 2),
                ("login7", 5),
                ("sspi", 22),
                ("loginack", 1)
            ]
        );
        // The same bytes with SQL Server authentication: no SSPI phase.
        let b = split(Some(ms(1)), &io, ms(31), false, false);
        assert_eq!(
            names(&b),
            [("tcp", 1), ("prelogin", 2), ("login7", 5), ("loginack", 23)]
        );
    }

    #[test]
    fn a_stall_is_named_by_the_last_phase() {
        // No answer to PRELOGIN.
        let b = split(Some(ms(1)), &[w(1, 0x12)], ms(2000), false, false);
        assert_eq!(b.last(), Phase::Prelogin);
        // The server's TLS hello came, the client's second flight went unanswered.
        let b = split(
            Some(ms(1)),
            &[w(1, 0x12), r(2), w(3, 0x12), r(4), w(5, 0x12)],
            ms(2000),
            false,
            false,
        );
        assert_eq!((b.last(), b.server_hello_seen), (Phase::Tls, true));
        assert!(b.stall(false).0.contains("after the server's TLS hello"));
        // No answer to the ClientHello.
        let b = split(
            Some(ms(1)),
            &[w(1, 0x12), r(2), w(3, 0x12)],
            ms(2000),
            false,
            false,
        );
        assert_eq!((b.last(), b.server_hello_seen), (Phase::Tls, false));
        // LOGIN7 sent, nothing back.
        let b = split(
            Some(ms(1)),
            &[w(1, 0x12), r(2), w(3, 0x12), r(4), w(5, 0x17)],
            ms(2000),
            false,
            false,
        );
        assert_eq!(b.last(), Phase::Login7);
        assert!(b.stall(false).0.contains("after LOGIN7"));
        assert_eq!(b.phases.last().unwrap().1, ms(1995));
        // The connect itself.
        let b = split(None, &[], ms(2000), false, false);
        assert_eq!(names(&b), [("tcp", 2000)]);
    }

    #[test]
    fn strict_counts_from_the_end() {
        // TLS 1.3: ClientHello; Finished and PRELOGIN in one flight; LOGIN7.
        let io = [w(1, 0x16), r(5), w(6, 0x14), r(9), w(10, 0x17), r(20)];
        let b = split(Some(ms(1)), &io, ms(21), true, false);
        assert_eq!(
            names(&b),
            [
                ("tcp", 1),
                ("tls", 5),
                ("prelogin", 4),
                ("login7", 10),
                ("loginack", 1)
            ]
        );
        // Stalled after the handshake: not told apart.
        let b = split(Some(ms(1)), &io[..5], ms(2000), true, false);
        assert_eq!(b.last(), Phase::Login7);
        assert!(b.stall(true).0.contains("not told apart"));
        // Stalled after the server's hello.
        let b = split(Some(ms(1)), &io[..3], ms(2000), true, false);
        assert_eq!((b.last(), b.server_hello_seen), (Phase::Tls, true));
    }
}
