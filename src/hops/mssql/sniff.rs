//! Watching the bytes the server sends during login, to report what the driver does not expose:
//! the server's PRELOGIN answer (its version and its encryption decision) and, when the login
//! response travels in the clear (encrypt=off/none), the LOGINACK's TDS version.
//!
//! [`Sniffer`] (the shared [`ObservedStream`] with this module's observer, [`ServerBytes`]) only
//! copies what is read (bounded) and, when asked, notes when each read and write happened ([`Io`], for the phase breakdown in [`super::phases`]); [`analyze`] (the
//! shared TDS codec, `dtcprobe_wire::tds`, fuzzed there) is a pure parser of that copy.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::observed_stream::{ObservedStream, Observer};

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
pub type Sniffer<S> = ObservedStream<S, ServerBytes>;

/// The [`Sniffer`]'s observer: keeps the server's bytes and, when asked, the [`Timeline`].
pub struct ServerBytes {
    seen: Arc<Mutex<Vec<u8>>>,
    timeline: Option<Timeline>,
}

impl ServerBytes {
    /// Copies what is read into `seen` (shared, so it survives the connection being aborted).
    pub fn new(seen: Arc<Mutex<Vec<u8>>>) -> ServerBytes {
        ServerBytes {
            seen,
            timeline: None,
        }
    }

    /// Also notes every read and write in `timeline`.
    pub fn timed(mut self, timeline: Timeline) -> ServerBytes {
        self.timeline = Some(timeline);
        self
    }
}

impl Observer for ServerBytes {
    fn on_read(&mut self, bytes: &[u8]) {
        if let Some(t) = &self.timeline {
            t.note(false, bytes);
        }
        if let Ok(mut seen) = self.seen.lock() {
            let room = KEEP.saturating_sub(seen.len());
            seen.extend_from_slice(&bytes[..bytes.len().min(room)]);
        }
    }

    fn on_write(&mut self, bytes: &[u8]) {
        if let Some(t) = &self.timeline {
            t.note(true, bytes);
        }
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
