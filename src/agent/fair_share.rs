//! Fair admission of connections that have not authenticated (the agent's port) or not sent
//! their request (its `/metrics`): a total budget, a share of **silent** connections per source
//! from the first connection, and when either is full the oldest connection that has **sent
//! nothing** is closed to make room, instead of the newest being refused. Connections that have
//! spoken (handshakes under way) are never closed for another; a source may hold up to
//! [`SPEAKING_FACTOR`] times its share of them (40 real peers behind one NAT address
//! handshaking at once), and only when the total is full of them is a connection refused.
//!
//! Why: a refusal of the newest lets whoever came first keep the budget. 3,000 idle sockets from
//! 32 addresses, or from one IPv6 /64, or from a real peer's own (NAT) address locked every real
//! peer out, and 40 idle sockets took `/metrics` offline. A real peer speaks within a round trip
//! of being accepted (the agent's hello, then its handshake; a scraper's GET), so it is never the
//! oldest silent connection for long; an idle flood always is.
//!
//! A source is an IPv4 address, or an IPv6 /64 (one host or one customer's network: it can pick
//! any of its 2^64 addresses, so counting addresses would give it 2^64 shares).

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::observed_stream::{ObservedStream, Observer};

/// Pure: the source a connection counts against: the IPv4 address (a v4-mapped IPv6 address
/// too), or the IPv6 address's /64.
pub fn source_of(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(a) => IpAddr::V4(a),
        IpAddr::V6(a) => {
            let bits = u128::from(a) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
    }
}

/// Why a connection could not be admitted: the budget is full of connections that have all
/// sent something (working peers), so none can be closed for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its source's share is full.
    Source,
    /// The total budget is full.
    Total,
}

/// Why an older connection was closed to admit a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eviction {
    /// The same source's oldest silent connection (its share was full).
    Source,
    /// The oldest silent connection of any source (the total was full).
    Total,
}

#[derive(Debug)]
struct Entry {
    source: IpAddr,
    sent: Arc<AtomicBool>,
    evict: Arc<Notify>,
}

#[derive(Debug, Default)]
struct State {
    next_id: u64,
    /// By admission order: the first silent entry is the oldest silent connection.
    entries: BTreeMap<u64, Entry>,
    per_source: HashMap<IpAddr, usize>,
}

impl State {
    fn remove(&mut self, id: u64) -> Option<Entry> {
        let entry = self.entries.remove(&id)?;
        if let Some(n) = self.per_source.get_mut(&entry.source) {
            *n -= 1;
            if *n == 0 {
                self.per_source.remove(&entry.source);
            }
        }
        Some(entry)
    }

    fn oldest_silent(&self, source: Option<IpAddr>) -> Option<u64> {
        self.entries
            .iter()
            .find(|(_, e)| !e.sent.load(Ordering::Relaxed) && source.is_none_or(|s| e.source == s))
            .map(|(id, _)| *id)
    }
}

/// A source may hold this many times its share in connections that have spoken.
pub const SPEAKING_FACTOR: usize = 4;

/// The budget: `total` connections at most; from one source, `per_source` silent ones and
/// [`SPEAKING_FACTOR`] x `per_source` in all.
#[derive(Debug)]
pub struct FairBudget {
    total: usize,
    per_source: usize,
    state: Mutex<State>,
}

/// A place in the budget; dropping it (authenticated, answered, or gone) gives it back.
#[derive(Debug)]
pub struct Slot {
    budget: Arc<FairBudget>,
    id: u64,
}

/// What the connection's task holds: the flag its stream sets on the first byte received
/// ([`Watched`]), and the signal that it was closed to make room.
#[derive(Debug, Clone)]
pub struct Ticket {
    sent: Arc<AtomicBool>,
    evict: Arc<Notify>,
}

impl Ticket {
    /// Completes when this connection is chosen to make room for a newer one.
    pub async fn evicted(&self) {
        self.evict.notified().await
    }

    /// Wraps the connection's stream so that its first received byte marks it as not silent.
    pub fn watch<S>(&self, inner: S) -> Watched<S> {
        ObservedStream::new(inner, FirstByte(self.sent.clone()))
    }
}

impl FairBudget {
    pub fn new(total: usize, per_source: usize) -> FairBudget {
        FairBudget {
            total: total.max(1),
            per_source: per_source.max(1),
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admits a connection from `ip`, closing the oldest silent one first when its source's
    /// share or the total is full (the closed one's [`Ticket::evicted`] completes).
    pub fn admit(
        self: &Arc<Self>,
        ip: IpAddr,
    ) -> Result<(Slot, Ticket, Option<Eviction>), Refusal> {
        let source = source_of(ip);
        let mut st = self.lock();
        let mut evicted = None;
        let held = st.per_source.get(&source).copied().unwrap_or(0);
        let silent = st
            .entries
            .values()
            .filter(|e| e.source == source && !e.sent.load(Ordering::Relaxed))
            .count();
        if silent >= self.per_source || held >= self.per_source * SPEAKING_FACTOR {
            let victim = st.oldest_silent(Some(source)).ok_or(Refusal::Source)?;
            if let Some(e) = st.remove(victim) {
                e.evict.notify_one();
            }
            evicted = Some(Eviction::Source);
        } else if st.entries.len() >= self.total {
            let victim = st.oldest_silent(None).ok_or(Refusal::Total)?;
            if let Some(e) = st.remove(victim) {
                e.evict.notify_one();
            }
            evicted = Some(Eviction::Total);
        }
        let id = st.next_id;
        st.next_id += 1;
        let ticket = Ticket {
            sent: Arc::new(AtomicBool::new(false)),
            evict: Arc::new(Notify::new()),
        };
        st.entries.insert(
            id,
            Entry {
                source,
                sent: ticket.sent.clone(),
                evict: ticket.evict.clone(),
            },
        );
        *st.per_source.entry(source).or_insert(0) += 1;
        Ok((
            Slot {
                budget: self.clone(),
                id,
            },
            ticket,
            evicted,
        ))
    }

    /// Connections admitted and not yet given back.
    pub fn in_use(&self) -> usize {
        self.lock().entries.len()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.budget.lock().remove(self.id);
    }
}

/// A stream that marks its connection as having sent something on the first byte it receives.
pub type Watched<S> = ObservedStream<S, FirstByte>;

/// The [`Watched`] stream's observer: sets the connection's flag on any byte received.
#[derive(Debug)]
pub struct FirstByte(Arc<AtomicBool>);

impl Observer for FirstByte {
    fn on_read(&mut self, _bytes: &[u8]) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_v4_addresses_and_v6_slash_64s() {
        let cases = [
            ("198.18.0.1", "198.18.0.1"),
            ("::ffff:198.18.0.1", "198.18.0.1"),
            ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::"),
            ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::"),
            ("2001:db8:1:3::1", "2001:db8:1:3::"),
        ];
        for (ip, want) in cases {
            assert_eq!(source_of(ip.parse().unwrap()).to_string(), want, "{ip}");
        }
    }

    #[test]
    fn the_oldest_silent_connection_makes_room() {
        let budget = Arc::new(FairBudget::new(4, 2));
        let a: IpAddr = "198.18.0.1".parse().unwrap();
        let b: IpAddr = "198.18.0.2".parse().unwrap();
        let c: IpAddr = "198.18.0.3".parse().unwrap();
        let speak = |t: &Ticket| t.sent.store(true, Ordering::Relaxed);
        let (_a1, a1t, e) = budget.admit(a).unwrap();
        assert_eq!(e, None);
        let (_a2, a2t, _) = budget.admit(a).unwrap();
        // a's share of silent connections is full: its oldest (a1) makes room.
        let (_a3, a3t, e) = budget.admit(a).unwrap();
        assert_eq!(e, Some(Eviction::Source));
        assert!(a1t.evict_pending());
        assert!(!a2t.evict_pending());
        assert_eq!(budget.in_use(), 2);
        // a2 speaks: a holds one silent connection, room for another.
        speak(&a2t);
        let (_a4, a4t, e) = budget.admit(a).unwrap();
        assert_eq!(e, None);
        let (_b1, b1t, _) = budget.admit(b).unwrap();
        assert_eq!(budget.in_use(), 4);
        // The total is full: the oldest silent connection of any source (a3) makes room.
        let (_c1, c1t, e) = budget.admit(c).unwrap();
        assert_eq!(e, Some(Eviction::Total));
        assert!(a3t.evict_pending());
        // Everyone speaks: nothing to close, refused.
        for t in [&a4t, &b1t, &c1t] {
            speak(t);
        }
        assert_eq!(budget.admit(c).unwrap_err(), Refusal::Total);
        // Connections that spoke: up to SPEAKING_FACTOR x the share from one source.
        let wide = Arc::new(FairBudget::new(100, 1));
        let mut held = Vec::new();
        for _ in 0..SPEAKING_FACTOR {
            let (slot, ticket, e) = wide.admit(a).unwrap();
            assert_eq!(e, None);
            speak(&ticket);
            held.push(slot);
        }
        assert_eq!(wide.admit(a).unwrap_err(), Refusal::Source);
        assert!(wide.admit(b).is_ok());
    }

    impl Ticket {
        /// Whether `evicted()` would complete at once.
        fn evict_pending(&self) -> bool {
            use futures::FutureExt;
            self.evict.notified().now_or_never().is_some()
        }
    }
}
