//! Where a PostgreSQL login spent its time: `tcp` (the connect), `tls` (the SSLRequest and the
//! handshake, when TLS ran), `startup` (the startup message until the server's first answer)
//! and `auth` (the rest: the authentication exchange until ReadyForQuery). tokio-postgres has
//! no phase events, so the raw stream notes when data arrives ([`ReadTimes`]) and the TLS
//! connector when its handshake ran; [`split`] is pure.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::observed_stream::{ObservedStream, Observer};

/// At most this many reads are noted (a login takes a handful).
const KEEP: usize = 256;

/// The observer of the login's raw stream ([`ObservedStream`]): notes when each read brought
/// data, relative to `started`.
pub struct ReadTimes {
    started: Instant,
    reads: Arc<Mutex<Vec<Duration>>>,
}

impl ReadTimes {
    /// `inner`, with the time of each read that brought data noted in `reads`.
    pub fn stream<S>(
        inner: S,
        started: Instant,
        reads: Arc<Mutex<Vec<Duration>>>,
    ) -> ObservedStream<S, ReadTimes> {
        ObservedStream::new(inner, ReadTimes { started, reads })
    }
}

impl Observer for ReadTimes {
    fn on_read(&mut self, _bytes: &[u8]) {
        let at = self.started.elapsed();
        if let Ok(mut reads) = self.reads.lock() {
            if reads.len() < KEEP {
                reads.push(at);
            }
        }
    }
}

/// Pure: the phases of a login that connected at `tcp`, finished its TLS handshake at
/// `tls_done` (if TLS ran), read data at `reads`, and ended at `end`. Consecutive: they add up
/// to `end`. `ssl_refused`: an SSLRequest was answered 'N' (sslmode=prefer against a server
/// without TLS); that answer is the first read and counts in `startup`.
pub fn split(
    tcp: Duration,
    tls_done: Option<Duration>,
    ssl_refused: bool,
    reads: &[Duration],
    end: Duration,
) -> Vec<(&'static str, Duration)> {
    let mut marks = vec![("tcp", Duration::ZERO)];
    let startup_from = match tls_done {
        Some(done) => {
            marks.push(("tls", tcp));
            done
        }
        None => tcp,
    };
    marks.push(("startup", startup_from));
    // The server's first answer to the startup message (its authentication request).
    let skip = usize::from(tls_done.is_none() && ssl_refused);
    if let Some(first) = reads.iter().filter(|r| **r > startup_from).nth(skip) {
        marks.push(("auth", *first));
    }
    let mut out = Vec::new();
    for (i, (name, start)) in marks.iter().enumerate() {
        let stop = if i == 0 {
            tcp.min(end)
        } else {
            marks.get(i + 1).map_or(end, |(_, s)| *s).max(*start)
        };
        out.push((*name, stop.min(end.max(*start)).saturating_sub(*start)));
    }
    out
}

/// `{"tcp": ms, ...}` for `data.phases_ms`, milliseconds with three decimals.
pub fn to_json(phases: &[(&'static str, Duration)]) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    for (name, d) in phases {
        let ms = (d.as_secs_f64() * 1e6).round() / 1e3;
        m.insert((*name).into(), serde_json::json!(ms));
    }
    serde_json::Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn phases_add_up_with_and_without_tls() {
        let with = split(
            ms(1),
            Some(ms(10)),
            false,
            &[ms(3), ms(8), ms(12), ms(30)],
            ms(31),
        );
        assert_eq!(
            with,
            [
                ("tcp", ms(1)),
                ("tls", ms(9)),
                ("startup", ms(2)),
                ("auth", ms(19))
            ]
        );
        let plain = split(ms(1), None, false, &[ms(4), ms(9)], ms(10));
        assert_eq!(plain, [("tcp", ms(1)), ("startup", ms(3)), ("auth", ms(6))]);
        // sslmode=prefer, the server said 'N' at 2 ms: that is still the startup.
        let refused = split(ms(1), None, true, &[ms(2), ms(4), ms(9)], ms(10));
        assert_eq!(
            refused,
            [("tcp", ms(1)), ("startup", ms(3)), ("auth", ms(6))]
        );
        // Nothing came back: all of it is the startup.
        let silent = split(ms(1), None, false, &[], ms(5000));
        assert_eq!(silent, [("tcp", ms(1)), ("startup", ms(4999))]);
    }
}
