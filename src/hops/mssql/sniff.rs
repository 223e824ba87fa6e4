//! Watching the bytes the server sends during login, to report what the driver does not expose:
//! the server's PRELOGIN answer (its version and its encryption decision) and, when the login
//! response travels in the clear (encrypt=off/none), the LOGINACK's TDS version.
//!
//! [`Sniffer`] only copies what is read (bounded) and, when asked, notes when each read and
//! write happened ([`Io`], for the phase breakdown in [`super::phases`]); [`analyze`] (the
//! shared TDS codec, `dtcprobe_wire::tds`, fuzzed there) is a pure parser of that copy.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pub use dtcprobe_wire::tds::{analyze, parse_prelogin, Observed, PreloginInfo};

/// At most this many bytes of the server's side are kept.
const KEEP: usize = 64 * 1024;

/// At most this many reads and writes are noted (a login takes a few dozen).
const KEEP_IO: usize = 512;

/// One read or write on the connection: when (since the connect began), which way, and its
/// first byte (a TDS packet type, or a TLS record type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Io {
    pub at: Duration,
    pub write: bool,
    pub first: u8,
}

/// Where a [`Sniffer`] notes its reads and writes.
#[derive(Clone)]
pub struct Timeline {
    pub started: Instant,
    pub io: Arc<Mutex<Vec<Io>>>,
}

impl Timeline {
    pub fn new(started: Instant) -> Timeline {
        Timeline {
            started,
            io: Arc::default(),
        }
    }

    fn note(&self, write: bool, bytes: &[u8]) {
        let Some(&first) = bytes.first() else { return };
        if let Ok(mut io) = self.io.lock() {
            if io.len() < KEEP_IO {
                io.push(Io {
                    at: self.started.elapsed(),
                    write,
                    first,
                });
            }
        }
    }

    pub fn snapshot(&self) -> Vec<Io> {
        self.io.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

pub fn encryption_name(b: u8) -> &'static str {
    match b {
        0 => "off",
        1 => "on",
        2 => "not_supported",
        3 => "required",
        _ => "unknown",
    }
}

/// Pure: what the client ends up with, given its request and the server's PRELOGIN answer
/// (MS-TDS 2.2.6.5 table). `off` means TLS for the login packet only.
pub fn negotiated(client: u8, server: u8) -> &'static str {
    match (client, server) {
        (2, 2) => "none",
        (0, 0) => "login_only",
        (_, 2) | (2, _) => "none",
        _ => "full",
    }
}

/// A stream that copies (up to 64 KiB of) what it reads.
pub struct Sniffer<S> {
    inner: S,
    seen: Arc<Mutex<Vec<u8>>>,
    timeline: Option<Timeline>,
}

impl<S> Sniffer<S> {
    /// Copies what is read into `seen` (shared, so it survives the connection being aborted).
    pub fn new(inner: S, seen: Arc<Mutex<Vec<u8>>>) -> Sniffer<S> {
        Sniffer {
            inner,
            seen,
            timeline: None,
        }
    }

    /// Also notes every read and write in `timeline`.
    pub fn timed(mut self, timeline: Timeline) -> Sniffer<S> {
        self.timeline = Some(timeline);
        self
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Sniffer<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &res {
            let new = &buf.filled()[before..];
            if let Some(t) = &self.timeline {
                t.note(false, new);
            }
            if let Ok(mut seen) = self.seen.lock() {
                let room = KEEP.saturating_sub(seen.len());
                seen.extend_from_slice(&new[..new.len().min(room)]);
            }
        }
        res
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Sniffer<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let (Poll::Ready(Ok(n)), Some(t)) = (&res, &self.timeline) {
            t.note(true, &buf[..*n]);
        }
        res
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_table() {
        let table = [
            ((0, 0), "login_only"),
            ((0, 1), "full"),
            ((1, 0), "full"),
            ((0, 3), "full"),
            ((2, 2), "none"),
            ((1, 2), "none"),
            ((3, 3), "full"),
        ];
        for ((c, s), want) in table {
            assert_eq!(negotiated(c, s), want, "{c}/{s}");
        }
    }
}
