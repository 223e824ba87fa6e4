//! The agent's own metrics (`dtcprobe agent --metrics-listen ADDR`): how many sessions it served,
//! refused and why, callbacks made, reverse checks run or refused. Lets monitoring see an agent
//! that is up but refusing everyone (a key rotated on one side only, clocks drifting apart).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::report::prometheus::{build_info, labels, Family};

/// Counters, updated by the session code with relaxed atomics (they are only ever read for
/// display).
#[derive(Debug, Default)]
pub struct AgentStats {
    pub sessions: AtomicU64,
    pub refused_busy: AtomicU64,
    pub refused_auth: AtomicU64,
    pub refused_protocol: AtomicU64,
    pub refused_timeout: AtomicU64,
    /// Closed before authenticating: over the pre-authentication budget, none silent to close.
    pub refused_pre_auth: AtomicU64,
    /// Closed before authenticating: the oldest silent connection, to make room for a new one.
    pub evicted_pre_auth: AtomicU64,
    /// Authenticated, but asking for more than the agent's limits.
    pub refused_limit: AtomicU64,
    pub requests: AtomicU64,
    pub callbacks_pass: AtomicU64,
    pub callbacks_fail: AtomicU64,
    pub reverse_run: AtomicU64,
    pub reverse_refused: AtomicU64,
}

impl AgentStats {
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// A point-in-time copy of what `/metrics` shows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub sessions: u64,
    pub refused: [(&'static str, u64); 7],
    pub requests: u64,
    pub callbacks: [(&'static str, u64); 2],
    pub reverse: [(&'static str, u64); 2],
    pub sessions_active: usize,
    pub max_sessions: usize,
    pub start_time_seconds: f64,
}

impl AgentStats {
    pub fn snapshot(
        &self,
        sessions_active: usize,
        max_sessions: usize,
        start_time_seconds: f64,
    ) -> Snapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Snapshot {
            sessions: get(&self.sessions),
            refused: [
                ("busy", get(&self.refused_busy)),
                ("auth", get(&self.refused_auth)),
                ("protocol", get(&self.refused_protocol)),
                ("timeout", get(&self.refused_timeout)),
                ("pre_auth", get(&self.refused_pre_auth)),
                ("evicted", get(&self.evicted_pre_auth)),
                ("limit", get(&self.refused_limit)),
            ],
            requests: get(&self.requests),
            callbacks: [
                ("pass", get(&self.callbacks_pass)),
                ("fail", get(&self.callbacks_fail)),
            ],
            reverse: [
                ("run", get(&self.reverse_run)),
                ("refused", get(&self.reverse_refused)),
            ],
            sessions_active,
            max_sessions,
            start_time_seconds,
        }
    }
}

/// Pure: the Prometheus text exposition of a snapshot (counters end in `_total`, base units, no
/// timestamps).
pub fn render(s: &Snapshot) -> String {
    let labelled = |mut family: Family, label: &str, pairs: &[(&str, u64)]| {
        for (value_of_label, n) in pairs {
            family.add(labels(&[(label, value_of_label)]), *n as f64);
        }
        family
    };
    let single = |mut family: Family, v: f64| {
        family.add(String::new(), v);
        family
    };
    let families = [
        single(
            Family::counter(
                "dtcprobe_agent_sessions_total",
                "Authenticated sessions given a session slot.",
            ),
            s.sessions as f64,
        ),
        labelled(
            Family::counter(
                "dtcprobe_agent_refused_total",
                "Connections refused, by reason (busy, auth, protocol, timeout, pre_auth, evicted, limit).",
            ),
            "reason",
            &s.refused,
        ),
        single(
            Family::counter(
                "dtcprobe_agent_requests_total",
                "Authenticated requests served.",
            ),
            s.requests as f64,
        ),
        labelled(
            Family::counter(
                "dtcprobe_agent_callbacks_total",
                "Callbacks to the caller, by result.",
            ),
            "status",
            &s.callbacks,
        ),
        labelled(
            Family::counter(
                "dtcprobe_agent_reverse_checks_total",
                "Reverse checks asked for, run or refused by policy.",
            ),
            "result",
            &s.reverse,
        ),
        single(
            Family::new("dtcprobe_agent_sessions_active", "Sessions in progress."),
            s.sessions_active as f64,
        ),
        single(
            Family::new(
                "dtcprobe_agent_max_sessions",
                "Configured bound on concurrent sessions.",
            ),
            s.max_sessions as f64,
        ),
        single(
            Family::new(
                "dtcprobe_agent_start_time_seconds",
                "When the agent started, Unix time.",
            ),
            s.start_time_seconds,
        ),
        build_info(),
    ];
    let mut out = String::new();
    for f in &families {
        f.write(&mut out);
    }
    out
}

/// What the HTTP handlers read.
pub type SnapshotFn = Arc<dyn Fn() -> Snapshot + Send + Sync>;

/// Bounds of the metrics endpoint, so that a flood on it cannot take the agent's main port down
/// (the endpoint has its own small fd budget, `max_connections`, far below the process limit).
#[derive(Debug, Clone, Copy)]
pub struct MetricsLimits {
    /// Connections served at once. When full, the oldest connection that has not sent anything
    /// is closed for the new one (the same fair admission as the agent's port).
    pub max_connections: usize,
    /// Of those, from one source (an IPv4 address or an IPv6 /64).
    pub max_per_source: usize,
    /// The request head must arrive whole within this time (slowloris, idle sockets).
    pub header_timeout: Duration,
}

impl Default for MetricsLimits {
    fn default() -> Self {
        MetricsLimits {
            max_connections: 32,
            max_per_source: 8,
            header_timeout: Duration::from_secs(5),
        }
    }
}

/// Largest request head read (request line + headers).
const MAX_HEAD: usize = 8 * 1024;

/// A deliberately small HTTP/1.x server: `GET /metrics` and `GET /healthz`, one request per
/// connection (`Connection: close`), bounded in connections, head size and time. Hand-made rather
/// than axum because the bounds (connection cap, header deadline, no keep-alive) are the point.
pub async fn serve(
    listener: tokio::net::TcpListener,
    snapshot: SnapshotFn,
    limits: MetricsLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let budget = Arc::new(super::fair_share::FairBudget::new(
        limits.max_connections,
        limits.max_per_source,
    ));
    tokio::pin!(shutdown);
    loop {
        let (stream, from) = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(_) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok((slot, ticket, _)) = budget.admit(from.ip()) else {
            // Full of connections that all sent their request: closed at once, so the endpoint
            // never holds more than its budget.
            drop(stream);
            continue;
        };
        let snapshot = snapshot.clone();
        tokio::spawn(async move {
            let stream = ticket.watch(stream);
            tokio::select! {
                _ = ticket.evicted() => {}
                _ = tokio::time::timeout(
                    limits.header_timeout * 2,
                    serve_one(stream, &snapshot, limits.header_timeout),
                ) => {}
            }
            drop(slot);
        });
    }
}

async fn serve_one(
    mut stream: super::fair_share::Watched<tokio::net::TcpStream>,
    snapshot: &SnapshotFn,
    header_timeout: Duration,
) -> std::io::Result<()> {
    let head = match tokio::time::timeout(header_timeout, read_head(&mut stream)).await {
        Ok(Ok(Some(head))) => head,
        // Closed, too large, or too slow: dropped without an answer.
        _ => return Ok(()),
    };
    let (status, content_type, body) = match route(&head) {
        Route::Metrics => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            render(&snapshot()),
        ),
        // Served by the agent's own runtime: answering at all means the agent is up.
        Route::Health => ("200 OK", "text/plain; charset=utf-8", "ok\n".to_string()),
        Route::NotFound => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "not found\n".into(),
        ),
        Route::BadMethod => (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "method not allowed\n".into(),
        ),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tokio::time::timeout(header_timeout, stream.write_all(response.as_bytes())).await??;
    let _ = stream.shutdown().await;
    Ok(())
}

/// Reads up to the blank line ending the head; `None` if the peer closed first or the head is
/// over [`MAX_HEAD`].
async fn read_head(
    stream: &mut super::fair_share::Watched<tokio::net::TcpStream>,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        head.extend_from_slice(&buf[..n]);
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
            return Ok(Some(head));
        }
        if head.len() > MAX_HEAD {
            return Ok(None);
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Route {
    Metrics,
    Health,
    NotFound,
    BadMethod,
}

/// Pure: which page a request head asks for.
fn route(head: &[u8]) -> Route {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if method != "GET" && method != "HEAD" {
        return Route::BadMethod;
    }
    match target.split('?').next().unwrap_or("") {
        "/metrics" => Route::Metrics,
        "/healthz" => Route::Health,
        _ => Route::NotFound,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let cases: &[(&[u8], Route)] = &[
            (b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", Route::Metrics),
            (b"GET /metrics?x=1 HTTP/1.0\r\n\r\n", Route::Metrics),
            (b"HEAD /healthz HTTP/1.1\r\n\r\n", Route::Health),
            (b"GET / HTTP/1.1\r\n\r\n", Route::NotFound),
            (b"POST /metrics HTTP/1.1\r\n\r\n", Route::BadMethod),
            (b"\x1b[2J\r\n\r\n", Route::BadMethod),
            (b"", Route::BadMethod),
        ];
        for (head, want) in cases {
            assert_eq!(&route(head), want, "{head:?}");
        }
    }

    #[test]
    fn renders_counters_with_labels() {
        let stats = AgentStats::default();
        AgentStats::bump(&stats.sessions);
        AgentStats::bump(&stats.sessions);
        AgentStats::bump(&stats.refused_auth);
        AgentStats::bump(&stats.callbacks_fail);
        let text = render(&stats.snapshot(1, 16, 1_700_000_000.5));
        assert!(text.contains("dtcprobe_agent_sessions_total 2\n"), "{text}");
        assert!(
            text.contains("dtcprobe_agent_refused_total{reason=\"auth\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("dtcprobe_agent_refused_total{reason=\"busy\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("dtcprobe_agent_callbacks_total{status=\"fail\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("dtcprobe_agent_sessions_active 1\n"),
            "{text}"
        );
        assert!(
            text.contains("dtcprobe_agent_start_time_seconds 1700000000.5\n"),
            "{text}"
        );
        // Every sample belongs to a family announced just before it.
        let mut typed = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                typed.insert(rest.split(' ').next().unwrap().to_string());
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                assert!(typed.contains(name), "{line}");
            }
        }
    }
}
