//! HTTP endpoints for Prometheus (`--metrics-listen ADDR`):
//! - `/metrics`: the latest finished run (watch mode) in the Prometheus text format;
//! - `/healthz`: the prober's own health, for a liveness probe: 200 while it serves, whatever the
//!   checked targets do (a failing target stays on `/metrics`; a liveness probe that restarted the
//!   prober during an outage would hide the outage it should report);
//! - `/probe?module=NAME[&target=HOST[:PORT]|URL]`: blackbox-exporter style; `module` is a check
//!   name from the config, `target` replaces its host (or, as a URL, the whole target). Emits
//!   `probe_success` and `probe_duration_seconds` plus the check's `dtcprobe_*` series.
//!
//! Probe results are cached for a short time, and concurrent requests for the same module and
//! target share one run (single-flight), so a scrape storm cannot multiply the probes.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures::future::BoxFuture;

use crate::chain::RunContext;
use crate::hops::Retarget;
use crate::model::{CheckResult, Report, Status};
use crate::report::prometheus;
use crate::resolver::DnsResolver;
use crate::runner::{self, RunOptions};
use crate::target::{CheckSpec, Target};

/// Runs one check (the real runner in production; tests can count or slow it down).
pub type Prober = Arc<dyn Fn(CheckSpec) -> BoxFuture<'static, CheckResult> + Send + Sync>;

/// A prober that runs the check through the runner (one resolver shared by all probes).
pub fn runner_prober(opts: RunOptions) -> Prober {
    let resolver = Arc::new(DnsResolver::from_system(opts.timeout));
    Arc::new(move |spec: CheckSpec| {
        // Each probe is a run of its own: routes are looked up and paths traced afresh.
        let run = RunContext::new(opts.timeout, resolver.clone(), opts.trace);
        let ctx = runner::check_context(&run, &spec, opts.timeout);
        Box::pin(async move { runner::run_check(&spec, &ctx).await })
    })
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ProbeError {
    #[error("Unknown module \"{0}\" (modules are check names from the config)")]
    UnknownModule(String),
    #[error("Module parameter is missing")]
    MissingModule,
    #[error("Invalid target \"{target}\": {message}")]
    InvalidTarget { target: String, message: String },
}

/// The result of one probe run, shared by the requests that waited for it.
#[derive(Debug, Clone)]
pub struct ProbeOutcome {
    pub check: CheckResult,
    pub duration: Duration,
    finished: Instant,
}

struct Flight {
    cell: tokio::sync::OnceCell<ProbeOutcome>,
}

/// At most this many distinct (module, target) entries are kept.
const MAX_CACHE_ENTRIES: usize = 1024;

/// Shared state of the server.
pub struct ServerState {
    latest: RwLock<Option<(Report, String)>>,
    modules: Vec<CheckSpec>,
    prober: Prober,
    cache_ttl: Duration,
    flights: Mutex<HashMap<(String, String), Arc<Flight>>>,
    probe_runs: AtomicU64,
    running: tokio::sync::Semaphore,
}

/// Probe runs at the same time, at most.
const MAX_CONCURRENT_PROBES: usize = 32;

impl ServerState {
    pub fn new(modules: Vec<CheckSpec>, prober: Prober, cache_ttl: Duration) -> Arc<ServerState> {
        Arc::new(ServerState {
            latest: RwLock::new(None),
            modules,
            prober,
            cache_ttl,
            flights: Mutex::new(HashMap::new()),
            probe_runs: AtomicU64::new(0),
            running: tokio::sync::Semaphore::new(MAX_CONCURRENT_PROBES),
        })
    }

    /// Publishes a finished run; `extra` is more exposition text (families not in the report).
    pub fn set_latest(&self, report: Report, extra: String) {
        if let Ok(mut l) = self.latest.write() {
            *l = Some((report, extra));
        }
    }

    /// How many probe runs were started (each run may serve many requests).
    pub fn probe_runs(&self) -> u64 {
        self.probe_runs.load(Ordering::Relaxed)
    }

    /// Runs (or joins, or reuses) the probe for `module` and `target`.
    pub async fn probe(
        &self,
        module: &str,
        target: Option<&str>,
    ) -> Result<ProbeOutcome, ProbeError> {
        let spec = self
            .modules
            .iter()
            .find(|m| m.name == module)
            .ok_or_else(|| ProbeError::UnknownModule(module.to_string()))?;
        let spec = match target.map(str::trim).filter(|t| !t.is_empty()) {
            Some(t) => with_target(spec, t)?,
            None => spec.clone(),
        };
        let key = (module.to_string(), target.unwrap_or("").to_string());
        let flight = {
            let mut flights = self.flights.lock().unwrap_or_else(|e| e.into_inner());
            let ttl = self.cache_ttl;
            let fresh = |f: &Flight| f.cell.get().is_none_or(|o| o.finished.elapsed() < ttl);
            if flights.len() >= MAX_CACHE_ENTRIES {
                flights.retain(|_, f| fresh(f));
                if flights.len() >= MAX_CACHE_ENTRIES {
                    // A flood of distinct targets: forget them all (waiters keep their Arc).
                    flights.clear();
                }
            }
            match flights.get(&key) {
                Some(f) if fresh(f) => f.clone(),
                _ => {
                    let f = Arc::new(Flight {
                        cell: tokio::sync::OnceCell::new(),
                    });
                    flights.insert(key, f.clone());
                    f
                }
            }
        };
        let outcome = flight
            .cell
            .get_or_init(|| async {
                // Bounded: a burst of distinct targets queues instead of opening sockets at once.
                let _permit = self.running.acquire().await;
                self.probe_runs.fetch_add(1, Ordering::Relaxed);
                let started = Instant::now();
                let check = (self.prober)(spec).await;
                ProbeOutcome {
                    check,
                    duration: started.elapsed(),
                    finished: Instant::now(),
                }
            })
            .await;
        Ok(outcome.clone())
    }
}

/// The module's check pointed at `target`: a bare `HOST` or `HOST:PORT` replaces the host (and
/// port), keeping the module's options, zones and timeout; a URL of the module's own kind replaces
/// the whole target. SQL Server modules accept no target: their credentials must never be sent to
/// a host named by whoever can reach the metrics port.
pub fn with_target(module: &CheckSpec, target: &str) -> Result<CheckSpec, ProbeError> {
    let invalid = |message: String| ProbeError::InvalidTarget {
        // The request's text, masked: a password in it must not come back in the answer or logs.
        target: crate::hostport::mask_url(target),
        message,
    };
    let kind = module.target.kind();
    let info = module.target.info();
    if info.retarget == Retarget::Never {
        let what = info.service.unwrap_or(kind);
        return Err(invalid(format!(
            "module {} is a {what} check: it probes only its configured server (credentials are never sent to a host named in a request); omit `target`",
            module.name
        )));
    }
    let mut spec = module.clone();
    if target.contains("://") {
        let t = Target::from_url(target).map_err(|e| invalid(e.to_string()))?;
        if t.kind() != kind {
            return Err(invalid(format!(
                "a {} target for a {kind} module",
                t.kind()
            )));
        }
        spec.target = t;
        return Ok(spec);
    }
    let (host, port) = split_host_port(target).map_err(invalid)?;
    match info.retarget {
        Retarget::HostPort => {}
        Retarget::Host if port.is_none() => {}
        Retarget::Host => {
            return Err(invalid(format!(
                "a {kind} module takes a host without port"
            )))
        }
        Retarget::Url | Retarget::Never => {
            return Err(invalid(format!("a {kind} module takes no target; omit it")))
        }
    }
    spec.target.set_host(host, port);
    Ok(spec)
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`, or a bare IPv6 address.
fn split_host_port(s: &str) -> Result<(String, Option<u16>), String> {
    let bad_port = |p: &str| format!("bad port {p:?}");
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or("unclosed [")?;
        return match after.strip_prefix(':') {
            Some(p) => Ok((host.to_string(), Some(p.parse().map_err(|_| bad_port(p))?))),
            None if after.is_empty() => Ok((host.to_string(), None)),
            None => Err(format!("unexpected {after:?} after ]")),
        };
    }
    if s.matches(':').count() > 1 {
        return Ok((s.to_string(), None)); // bare IPv6
    }
    match s.split_once(':') {
        Some((h, p)) if !h.is_empty() => {
            Ok((h.to_string(), Some(p.parse().map_err(|_| bad_port(p))?)))
        }
        Some(_) => Err("empty host".into()),
        None if s.chars().any(|c| c.is_whitespace() || c == '/') => Err("not a host name".into()),
        None => Ok((s.to_string(), None)),
    }
}

const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

fn metrics_text(state: &ServerState) -> String {
    let mut out = String::new();
    if let Ok(l) = state.latest.read() {
        if let Some((report, extra)) = l.as_ref() {
            out.push_str(&prometheus::render_string(report));
            out.push_str(extra);
        } else {
            out.push_str(&prometheus::render_build_info());
        }
    }
    let mut runs = prometheus::Family::counter(
        "dtcprobe_probe_runs_total",
        "Probe runs started by /probe (cached and shared requests excluded).",
    );
    runs.add(String::new(), state.probe_runs() as f64);
    runs.write(&mut out);
    out
}

async fn metrics(State(state): State<Arc<ServerState>>) -> Response {
    ([(header::CONTENT_TYPE, TEXT_FORMAT)], metrics_text(&state)).into_response()
}

async fn healthz(State(state): State<Arc<ServerState>>) -> Response {
    // The body says what the prober knows (for a human with curl); the code is always 200:
    // being able to answer is the prober's health.
    let body = match state.latest.read().ok().as_ref().and_then(|l| l.as_ref()) {
        None => "ok: serving; no round finished yet\n".to_string(),
        Some((r, _)) => {
            let failing = r.checks.iter().filter(|c| c.status == Status::Fail).count();
            format!(
                "ok: serving; last round: {} of {} failing (targets' state: /metrics)\n",
                failing,
                crate::report::human::plural(r.checks.len(), "check", "checks")
            )
        }
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

async fn probe(
    State(state): State<Arc<ServerState>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(module) = q.get("module").filter(|m| !m.is_empty()) else {
        return (
            StatusCode::BAD_REQUEST,
            ProbeError::MissingModule.to_string(),
        )
            .into_response();
    };
    match state
        .probe(module, q.get("target").map(String::as_str))
        .await
    {
        Ok(o) => (
            [(header::CONTENT_TYPE, TEXT_FORMAT)],
            prometheus::render_probe(Some(&o.check), o.duration),
        )
            .into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    }
}

/// The routes, for embedding or testing.
pub fn router(state: Arc<ServerState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/probe", get(probe))
        .with_state(state)
}

/// Serves until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<ServerState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_forms() {
        let ok: [(&str, (&str, Option<u16>)); 6] = [
            ("db01", ("db01", None)),
            ("db01:1433", ("db01", Some(1433))),
            ("198.18.0.2:135", ("198.18.0.2", Some(135))),
            ("[2001:db8::1]:1433", ("2001:db8::1", Some(1433))),
            ("[2001:db8::1]", ("2001:db8::1", None)),
            ("2001:db8::1", ("2001:db8::1", None)),
        ];
        for (input, (h, p)) in ok {
            assert_eq!(
                split_host_port(input).unwrap(),
                (h.to_string(), p),
                "{input}"
            );
        }
        for bad in ["db:x", ":1433", "[::1", "a b", "[::1]x"] {
            assert!(split_host_port(bad).is_err(), "{bad}");
        }
    }

    fn module(url: &str) -> CheckSpec {
        CheckSpec {
            name: "m".into(),
            from: Some("web".into()),
            to: Some("sql".into()),
            timeout: Some(Duration::from_secs(1)),
            target: Target::from_url(url).unwrap(),
        }
    }

    #[test]
    fn targets_replace_host_but_keep_the_module() {
        let cases = [
            ("tcp://db01:1433", "db02", Some("tcp://db02:1433")),
            ("tcp://db01:1433", "db02:1500", Some("tcp://db02:1500")),
            ("tcp://db01:1433", "tcp://db03:99", Some("tcp://db03:99")),
            ("tcp://db01:1433", "dns://db03", None),
            ("dns://db01", "db02", Some("dns://db02")),
            ("dns://db01", "db02:53", None),
            ("epm://db01", "db02", Some("epm://db02:135")),
            ("mssql://sa@db01/master", "evil.example", None),
            (
                "mssql://sa@db01/master",
                "mssql://sa@evil.example/master",
                None,
            ),
        ];
        for (m, target, want) in cases {
            let got = with_target(&module(m), target);
            match want {
                Some(w) => {
                    let spec = got.unwrap_or_else(|e| panic!("{m} + {target}: {e}"));
                    assert!(
                        spec.target.display().starts_with(w),
                        "{m} + {target}: {}",
                        spec.target.display()
                    );
                    assert_eq!((spec.name.as_str(), spec.to.as_deref()), ("m", Some("sql")));
                    assert_eq!(spec.timeout, Some(Duration::from_secs(1)));
                }
                None => assert!(got.is_err(), "{m} + {target} should be refused"),
            }
        }
    }
}
