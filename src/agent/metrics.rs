//! The agent's own metrics (`dtcprobe agent --metrics-listen ADDR`): how many sessions it served,
//! refused and why, callbacks made, reverse checks run or refused. Lets monitoring see an agent
//! that is up but refusing everyone (a key rotated on one side only, clocks drifting apart).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

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
    pub refused: [(&'static str, u64); 4],
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
            Family::counter("dtcprobe_agent_sessions_total", "TCP sessions accepted."),
            s.sessions as f64,
        ),
        labelled(
            Family::counter(
                "dtcprobe_agent_refused_total",
                "Sessions refused, by reason (busy, auth, protocol, timeout).",
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

async fn metrics(State(snapshot): State<SnapshotFn>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        render(&snapshot()),
    )
}

async fn healthz() -> impl IntoResponse {
    // Served by the agent's own runtime: answering at all means the agent is up.
    (StatusCode::OK, "ok\n")
}

pub fn router(snapshot: SnapshotFn) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(snapshot)
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    snapshot: SnapshotFn,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(snapshot))
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

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
