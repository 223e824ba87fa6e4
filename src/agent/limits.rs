//! Bounds that keep the agent serving under abuse, kept apart from the session code so each one
//! can be tested on its own:
//!
//! - The pre-authentication budget is [`super::fair_share`]: per-source shares, and the oldest
//!   silent connection closed for a new one. A session slot (`max_sessions`) is only taken once a
//!   request has authenticated.
//! - [`WarnLimiter`]: repetitive warnings (busy, refused, malformed) are rate-limited per kind
//!   with a count of what was suppressed, so a flood cannot fill the disk with logs; the
//!   per-connection debug lines (`-vv`) too. With every kind bounded, the log grows by a bounded
//!   number of bytes per second under any flood, at any verbosity.
//! - [`FirstPerSource`]: the first refusal from each source (a wrong key above all) is logged
//!   whatever the rate limiter says, so a flood cannot hide a genuine misconfiguration; these
//!   first lines have a (larger) rate limit of their own, as sources are cheap (IPv6).
//! - [`log_text`]: text that came from the network is escaped (no newlines, no terminal escape
//!   sequences) and truncated before it reaches a log line, so a client cannot forge log lines.

use std::collections::{HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Longest piece of network-derived text written to a log line, in characters.
pub const LOG_TEXT_MAX: usize = 160;

/// Escapes control characters (newline, CR, ESC...) and anything non-printable, and truncates to
/// [`LOG_TEXT_MAX`] characters (marked with `…`).
pub fn log_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(LOG_TEXT_MAX + 8));
    for (shown, c) in text.chars().enumerate() {
        if shown >= LOG_TEXT_MAX {
            out.push('…');
            break;
        }
        if c.is_control() || c == '\u{2028}' || c == '\u{2029}' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// At most `burst` warnings of one kind per `window`; the rest are counted and the count is
/// reported with the next warning that is let through.
#[derive(Debug)]
pub struct WarnLimiter {
    burst: u32,
    window: Duration,
    state: Mutex<LimiterState>,
}

#[derive(Debug)]
struct LimiterState {
    window_start: Option<Instant>,
    shown: u32,
    suppressed: u64,
}

impl WarnLimiter {
    pub fn new(burst: u32, window: Duration) -> WarnLimiter {
        WarnLimiter {
            burst,
            window,
            state: Mutex::new(LimiterState {
                window_start: None,
                shown: 0,
                suppressed: 0,
            }),
        }
    }

    /// `Some(n)` if this warning may be logged (`n` similar ones were suppressed before it),
    /// `None` if it must be dropped (and is counted).
    pub fn allow(&self) -> Option<u64> {
        self.allow_at(Instant::now())
    }

    pub fn allow_at(&self, now: Instant) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let expired = s
            .window_start
            .is_none_or(|start| now.duration_since(start) >= self.window);
        if expired {
            s.window_start = Some(now);
            s.shown = 0;
        }
        if s.shown < self.burst {
            s.shown += 1;
            Some(std::mem::take(&mut s.suppressed))
        } else {
            s.suppressed += 1;
            None
        }
    }
}

impl Default for WarnLimiter {
    /// 10 warnings of a kind per 10 seconds.
    fn default() -> Self {
        WarnLimiter::new(10, Duration::from_secs(10))
    }
}

/// Remembers the last `capacity` sources seen; [`FirstPerSource::first`] is true once per source
/// (until it is forgotten), within its own rate limit.
#[derive(Debug)]
pub struct FirstPerSource {
    capacity: usize,
    seen: Mutex<(HashSet<IpAddr>, VecDeque<IpAddr>)>,
    limiter: WarnLimiter,
}

impl FirstPerSource {
    pub fn new(capacity: usize, limiter: WarnLimiter) -> FirstPerSource {
        FirstPerSource {
            capacity: capacity.max(1),
            seen: Mutex::new((HashSet::new(), VecDeque::new())),
            limiter,
        }
    }

    /// Whether this is the first line from `source` and may be logged as such.
    pub fn first(&self, source: IpAddr) -> bool {
        let source = super::fair_share::source_of(source);
        let mut guard = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let (set, order) = &mut *guard;
        if set.contains(&source) {
            return false;
        }
        if self.limiter.allow().is_none() {
            return false;
        }
        set.insert(source);
        order.push_back(source);
        if order.len() > self.capacity {
            if let Some(old) = order.pop_front() {
                set.remove(&old);
            }
        }
        true
    }
}

impl Default for FirstPerSource {
    /// 4,096 sources remembered; at most 50 first lines per 10 seconds.
    fn default() -> Self {
        FirstPerSource::new(4096, WarnLimiter::new(50, Duration::from_secs(10)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_text_escapes_and_truncates() {
        let cases: &[(&str, &str)] = &[
            ("plain text", "plain text"),
            ("a\nINFO forged", "a\\nINFO forged"),
            ("\x1b[2Jclear", "\\u{1b}[2Jclear"),
            ("cr\rlf", "cr\\rlf"),
            ("tab\t", "tab\\t"),
            ("é ünïcode", "é ünïcode"),
        ];
        for (input, want) in cases {
            assert_eq!(log_text(input), *want, "{input:?}");
        }
        let long = "x".repeat(1000);
        let shown = log_text(&long);
        assert_eq!(shown.chars().count(), LOG_TEXT_MAX + 1);
        assert!(shown.ends_with('…'));
    }

    #[test]
    fn the_first_line_from_each_source_passes_the_rate_limit() {
        let first = FirstPerSource::new(2, WarnLimiter::new(3, Duration::from_secs(60)));
        let a: IpAddr = "198.18.0.1".parse().unwrap();
        let b: IpAddr = "198.18.0.2".parse().unwrap();
        let c: IpAddr = "2001:db8::1".parse().unwrap();
        let c_same_64: IpAddr = "2001:db8::2".parse().unwrap();
        assert!(first.first(a));
        assert!(!first.first(a));
        assert!(first.first(c));
        assert!(!first.first(c_same_64), "one /64 is one source");
        assert!(first.first(b)); // a is forgotten (capacity 2)
                                 // Its own limit: 3 first lines per minute.
        assert!(!first.first(a));
    }

    #[test]
    fn warnings_are_rate_limited_with_a_count() {
        let limiter = WarnLimiter::new(2, Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(limiter.allow_at(t0), Some(0));
        assert_eq!(limiter.allow_at(t0), Some(0));
        for _ in 0..5 {
            assert_eq!(limiter.allow_at(t0), None);
        }
        let later = t0 + Duration::from_secs(11);
        assert_eq!(limiter.allow_at(later), Some(5));
        assert_eq!(limiter.allow_at(later), Some(0));
        assert_eq!(limiter.allow_at(later), None);
    }
}
