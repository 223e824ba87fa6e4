//! Bounds that keep the agent serving under abuse, kept apart from the session code so each one
//! can be tested on its own:
//!
//! - [`PreAuthBudget`]: connections that have not authenticated yet get their own budget, global
//!   and per source address. A session slot (`max_sessions`) is only taken once a request has
//!   authenticated, so idle or slow unauthenticated sockets cannot lock real peers out (they only
//!   use up their own source's share of the pre-authentication budget, for at most the handshake
//!   deadline).
//! - [`WarnLimiter`]: repetitive warnings (busy, refused, malformed) are rate-limited per kind
//!   with a count of what was suppressed, so a flood cannot fill the disk with logs.
//! - [`log_text`]: text that came from the network is escaped (no newlines, no terminal escape
//!   sequences) and truncated before it reaches a log line, so a client cannot forge log lines.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
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

/// The pre-authentication budget: at most `total` connections waiting to authenticate; once half
/// of it is in use, at most `per_source` of them from one address.
#[derive(Debug)]
pub struct PreAuthBudget {
    total: usize,
    per_source: usize,
    pending: Mutex<HashMap<IpAddr, usize>>,
}

/// Why a connection got no pre-authentication slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetRefusal {
    Total,
    Source,
}

/// A taken pre-authentication slot; dropping it gives the slot back.
#[derive(Debug)]
pub struct PreAuthSlot {
    budget: Arc<PreAuthBudget>,
    source: IpAddr,
}

impl PreAuthBudget {
    pub fn new(total: usize, per_source: usize) -> PreAuthBudget {
        PreAuthBudget {
            total: total.max(1),
            per_source: per_source.max(1),
            pending: Mutex::new(HashMap::new()),
        }
    }

    pub fn try_take(self: &Arc<Self>, source: IpAddr) -> Result<PreAuthSlot, BudgetRefusal> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let in_use: usize = pending.values().sum();
        if in_use >= self.total {
            return Err(BudgetRefusal::Total);
        }
        // The per-source cap applies under pressure (half the budget in use): many real peers
        // behind one NAT address are not refused while there is room, but one address cannot
        // take the whole budget.
        let under_pressure = in_use >= self.total / 2;
        let count = pending.entry(source).or_insert(0);
        if under_pressure && *count >= self.per_source {
            return Err(BudgetRefusal::Source);
        }
        *count += 1;
        Ok(PreAuthSlot {
            budget: self.clone(),
            source,
        })
    }

    /// Connections waiting to authenticate now.
    pub fn in_use(&self) -> usize {
        let pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.values().sum()
    }
}

impl Drop for PreAuthSlot {
    fn drop(&mut self) {
        let mut pending = self
            .budget
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(count) = pending.get_mut(&self.source) {
            *count -= 1;
            if *count == 0 {
                pending.remove(&self.source);
            }
        }
    }
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
    fn pre_auth_budget_is_per_source_and_total() {
        let budget = Arc::new(PreAuthBudget::new(4, 2));
        let a: IpAddr = "198.18.0.1".parse().unwrap();
        let b: IpAddr = "198.18.0.2".parse().unwrap();
        // Below half the budget, one source may take more than its share...
        let a1 = budget.try_take(a).unwrap();
        let _a2 = budget.try_take(a).unwrap();
        // ...from half on, not.
        assert_eq!(budget.try_take(a).unwrap_err(), BudgetRefusal::Source);
        let _b1 = budget.try_take(b).unwrap();
        let _b2 = budget.try_take(b).unwrap();
        assert_eq!(budget.try_take(b).unwrap_err(), BudgetRefusal::Total);
        drop(a1);
        assert_eq!(budget.in_use(), 3);
        assert_eq!(budget.try_take(b).unwrap_err(), BudgetRefusal::Source);
        let _a3 = budget.try_take(a).unwrap();
        assert_eq!(budget.in_use(), 4);
        let single = Arc::new(PreAuthBudget::new(8, 2));
        let held: Vec<_> = (0..4).map(|_| single.try_take(a).unwrap()).collect();
        assert_eq!(single.try_take(a).unwrap_err(), BudgetRefusal::Source);
        assert!(single.try_take(b).is_ok());
        drop(held);
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
