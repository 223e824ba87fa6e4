//! The traces of one run: one per destination address, paced within the routers' ICMP budget.
//!
//! Routers rate-limit the ICMP errors they send to one destination (Linux: a burst of 6, then one
//! per second; Cisco and Juniper similar), and every time-exceeded a trace gets spends that
//! budget, which all traces from this host through the same routers share. Tracing every dropped
//! port on its own (40 ports of one host: 40 traces of 12 probes) spent it in the first few
//! traces, and the rest read silence as "no router answered". So:
//! - one trace per destination address serves every dropped port of it in the run (the hop of a
//!   check that did not make it names the one that did, `data.traced_by`);
//! - traces through the same first router (the route's gateway) are paced: a burst, then one per
//!   second, waiting at most one hop timeout for their turn; a trace that still has to go out over
//!   the budget is marked so, and its silence reads as "could not tell" ([`super::interpret`]);
//! - every router that answered a TTL, through which gateway, is kept for the run: silence at TTL
//!   1 from a gateway that answered another trace of the run is its rate limit, not a drop.
//!
//! One run only, like the route cache: the next run (a `watch` round) starts afresh.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt, Shared};
use tokio::time::Instant;

use super::{probe, Probe, Reach, MAX_TTL};
use crate::model::HopResult;

/// Traces a router lets through at once before its ICMP budget runs dry, as paced here: Linux's
/// burst is 6 (XRLIM_BURST_FACTOR); one is left for other errors of the run (a reject's
/// unreachable from the same router).
pub const BURST: u32 = 5;
/// One more trace per this much time once the burst is spent (Linux: `icmp_ratelimit`, 1000 ms).
pub const REFILL: Duration = Duration::from_secs(1);

/// One trace, as every check to its address reads it.
#[derive(Debug)]
pub struct Traced {
    /// The port the SYNs went to (`data.traced_port` for a check to another port).
    pub port: u16,
    /// The check that made it (`data.traced_by` for the others).
    pub by: Arc<str>,
    /// What came back, index 0 being TTL 1; or why no trace was made (this platform has none,
    /// or the run had already spent the first router's ICMP budget).
    pub probes: Result<(Vec<Probe>, probe::Method), HopResult>,
    pub reach: Reach,
    /// The first router (the route's gateway), when the route has one.
    pub gateway: Option<IpAddr>,
    /// When the probes went out and when the last came back.
    pub started: Instant,
    pub ended: Instant,
}

type SharedTrace = Shared<BoxFuture<'static, Arc<Traced>>>;

/// Who asks for a trace, and how long its probes may wait.
pub struct Request {
    pub target: SocketAddr,
    pub check: Arc<str>,
    /// Each probe's bound.
    pub limit: Duration,
    pub reach: Reach,
    pub gateway: Option<IpAddr>,
    /// How long the trace may wait for its turn in the gateway's budget.
    pub max_wait: Duration,
}

#[derive(Default)]
pub struct TraceBook {
    by_address: Mutex<HashMap<IpAddr, SharedTrace>>,
    budgets: Mutex<HashMap<IpAddr, Budget>>,
    /// (gateway, TTL) -> the router that answered that TTL on some trace through that gateway.
    answered: Mutex<HashMap<(IpAddr, u8), IpAddr>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl TraceBook {
    /// The trace to `request.target`'s address: the one already made or under way in this run,
    /// else a new one (spawned, so that it runs to its end for every check that waits on it,
    /// even if the check that started it stops waiting).
    pub fn trace(self: &Arc<Self>, request: Request) -> SharedTrace {
        let mut traces = lock(&self.by_address);
        traces
            .entry(request.target.ip())
            .or_insert_with(|| {
                let book = Arc::clone(self);
                let task = tokio::spawn(async move { book.make(request).await });
                async move {
                    let traced = task.await.expect("path trace task panicked");
                    Arc::new(traced)
                }
                .boxed()
                .shared()
            })
            .clone()
    }

    async fn make(&self, request: Request) -> Traced {
        if let Some(gateway) = request.gateway {
            let turn = lock(&self.budgets)
                .entry(gateway)
                .or_default()
                .reserve(Instant::now(), request.max_wait);
            match turn {
                Turn::Now => {}
                Turn::At(when) => tokio::time::sleep_until(when).await,
                Turn::OverBudget { sent } => {
                    let now = Instant::now();
                    return Traced {
                        port: request.target.port(),
                        by: request.check,
                        probes: Err(not_traced_over_budget(request.target, gateway, sent)),
                        reach: request.reach,
                        gateway: request.gateway,
                        started: now,
                        ended: now,
                    };
                }
            }
        }
        let started = Instant::now();
        let probes = probe::send(request.target, request.limit).await;
        if let (Some(gateway), Ok((answers, _))) = (request.gateway, &probes) {
            let mut answered = lock(&self.answered);
            for (ttl, router) in routers(answers) {
                answered.insert((gateway, ttl), router);
            }
        }
        Traced {
            port: request.target.port(),
            by: request.check,
            probes,
            reach: request.reach,
            gateway: request.gateway,
            started,
            ended: Instant::now(),
        }
    }

    /// For each TTL (index 0 = TTL 1), the router that answered it on some trace of this run
    /// through `gateway`.
    pub fn answered_through(&self, gateway: Option<IpAddr>) -> Vec<Option<IpAddr>> {
        let Some(gateway) = gateway else {
            return vec![None; usize::from(MAX_TTL)];
        };
        let answered = lock(&self.answered);
        (1..=MAX_TTL)
            .map(|ttl| answered.get(&(gateway, ttl)).copied())
            .collect()
    }
}

/// The `path` hop of a trace the budget kept back.
fn not_traced_over_budget(target: SocketAddr, gateway: IpAddr, sent: usize) -> HopResult {
    HopResult::skip(
        crate::model::HopKind::Path,
        format!(
            "not traced: {sent} traces through {gateway} in this run already used what routers \
             allow in ICMP errors to one host (a burst of about 6, then 1 per second); a further \
             trace to {} would only read their silence as a drop",
            target.ip()
        ),
    )
    .with_data("rate_limited", true)
    .with_hint(super::HINT_NOT_TRACED)
}

/// The routers that answered time-exceeded, with their TTL.
fn routers(probes: &[Probe]) -> impl Iterator<Item = (u8, IpAddr)> + '_ {
    probes.iter().zip(1u8..).filter_map(|(p, ttl)| match p {
        Probe::Router(ip) => Some((ttl, *ip)),
        _ => None,
    })
}

/// One gateway's ICMP budget, as a GCRA (a token bucket kept as one time): a burst of [`BURST`],
/// then one per [`REFILL`].
#[derive(Debug, Default)]
struct Budget {
    /// When the bucket would be empty again, were no more traces sent ("theoretical arrival").
    next: Option<Instant>,
    /// Traces sent through this gateway so far.
    sent: usize,
}

#[derive(Debug, PartialEq, Eq)]
enum Turn {
    Now,
    At(Instant),
    /// Its turn is further away than the wait allowed: it is not sent (it would only spend the
    /// budget of the traces after it, and its silence would prove nothing). `sent` traces went
    /// through this gateway before it.
    OverBudget {
        sent: usize,
    },
}

impl Budget {
    fn reserve(&mut self, now: Instant, max_wait: Duration) -> Turn {
        let next = self.next.filter(|n| *n > now).unwrap_or(now);
        // The burst lets a trace go while `next` is less than BURST - 1 refills ahead.
        let allowed_at = next
            .checked_sub(REFILL * (BURST - 1))
            .unwrap_or(now)
            .max(now);
        if allowed_at > now + max_wait {
            return Turn::OverBudget { sent: self.sent };
        }
        self.next = Some(next + REFILL);
        self.sent += 1;
        if allowed_at <= now {
            Turn::Now
        } else {
            Turn::At(allowed_at)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_one_per_refill_then_over_budget() {
        let t0 = Instant::now();
        let mut budget = Budget::default();
        for _ in 0..BURST {
            assert_eq!(budget.reserve(t0, Duration::ZERO), Turn::Now);
        }
        // The sixth must wait a refill; with no wait allowed it goes over budget and costs nothing.
        assert_eq!(
            budget.reserve(t0, Duration::ZERO),
            Turn::OverBudget { sent: 5 }
        );
        assert_eq!(
            budget.reserve(t0, Duration::from_secs(2)),
            Turn::At(t0 + REFILL)
        );
        assert_eq!(
            budget.reserve(t0, Duration::from_secs(2)),
            Turn::At(t0 + REFILL * 2)
        );
        assert_eq!(
            budget.reserve(t0, Duration::from_secs(2)),
            Turn::OverBudget { sent: 7 }
        );
        // Time refills it: after a quiet spell the whole burst is back.
        let later = t0 + REFILL * 20;
        for _ in 0..BURST {
            assert_eq!(budget.reserve(later, Duration::ZERO), Turn::Now);
        }
    }

    #[tokio::test]
    async fn one_trace_per_address_for_every_port() {
        let book = Arc::new(TraceBook::default());
        let request = |port: u16, check: &str| Request {
            // Loopback answers every probe at TTL 1 (reached): fast and local.
            target: SocketAddr::new("127.0.0.1".parse().unwrap(), port),
            check: Arc::from(check),
            limit: Duration::from_millis(200),
            reach: Reach::OnLink,
            gateway: None,
            max_wait: Duration::ZERO,
        };
        let first = book.trace(request(9, "a")).await;
        let second = book.trace(request(10, "b")).await;
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!((first.port, &*first.by), (9, "a"));
        let other = book
            .trace(Request {
                target: "127.0.0.2:9".parse().unwrap(),
                ..request(9, "c")
            })
            .await;
        assert!(!Arc::ptr_eq(&first, &other));
    }
}
