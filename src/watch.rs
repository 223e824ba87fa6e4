//! `dtcprobe watch --interval DUR`: runs the plan again and again and prints only what changes.
//!
//! Each round's results go through a [`Tracker`] (pure: no clock, no I/O), which turns them into
//! events: the state at start, status transitions (pass -> fail, fail -> pass, ...), a check that
//! starts flapping (at least `--flap-threshold` transitions within `--flap-window`) and one that
//! becomes stable again. Text output: one line per event with an RFC 3339 timestamp; `-f json`:
//! one JSON object per line. With `--metrics-listen ADDR` the latest round is served on
//! `/metrics`, `/healthz` and `/probe` (see `metrics_server`). `--output`/`--textfile-dir` are
//! rewritten after every round. `--count N` stops after N rounds.

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::exit;
use crate::metrics_server::{self, ServerState};
use crate::model::{CheckResult, Direction, Report, Status};
use crate::plan::Plan;
use crate::report::prometheus::{labels, Family};
use crate::report::{outputs, Format};
use crate::runner::{self, RunOptions};

/// The schedule of `dtcprobe watch` (what to check and how to report it is the [`Plan`]).
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// Time between the starts of two rounds.
    pub interval: Duration,
    /// Stop after this many rounds (`None`: until interrupted).
    pub count: Option<u64>,
    /// Window over which status changes are counted for flap detection.
    pub flap_window: Duration,
    /// This many status changes within the window make a check flapping.
    pub flap_threshold: usize,
    /// Serve /metrics, /healthz and /probe here.
    pub metrics_listen: Option<SocketAddr>,
    /// How long a /probe result is reused for the same module and target.
    pub probe_cache: Duration,
}

/// What the tracker reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// First round: the state of a check.
    Start {
        check: String,
        direction: Direction,
        status: Status,
        #[serde(skip_serializing_if = "Option::is_none")]
        problem: Option<String>,
    },
    Transition {
        check: String,
        direction: Direction,
        from: Status,
        to: Status,
        /// `hop: cause: detail` of the first problem now, if any.
        #[serde(skip_serializing_if = "Option::is_none")]
        problem: Option<String>,
    },
    Flapping {
        check: String,
        direction: Direction,
        transitions: usize,
        window_seconds: f64,
    },
    Stable {
        check: String,
        direction: Direction,
        window_seconds: f64,
    },
}

#[derive(Debug)]
struct Track {
    status: Status,
    transitions: VecDeque<SystemTime>,
    total_transitions: usize,
    flapping: bool,
    ever_flapped: bool,
}

/// Per-check state across rounds. Checks are keyed by name and direction.
#[derive(Debug)]
pub struct Tracker {
    window: Duration,
    threshold: usize,
    checks: HashMap<(String, bool), Track>,
    /// Plan order, for stable output.
    order: Vec<(String, bool)>,
}

/// One line per check for summaries: (name, direction, current status, transitions, flapping now,
/// ever flapped).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckSummary {
    pub check: String,
    pub direction: Direction,
    pub status: Status,
    pub transitions: usize,
    pub transitions_in_window: usize,
    pub flapping: bool,
    pub flapped: bool,
}

fn problem(c: &CheckResult) -> Option<String> {
    c.first_problem().map(|h| {
        let cause = h.cause.map(|c| c.as_str()).unwrap_or("-");
        if h.detail.is_empty() {
            format!("{}: {cause}", h.hop.as_str())
        } else {
            format!("{}: {cause}: {}", h.hop.as_str(), h.detail)
        }
    })
}

impl Tracker {
    /// `threshold` transitions within `window` make a check flapping (threshold at least 2).
    pub fn new(window: Duration, threshold: usize) -> Tracker {
        Tracker {
            window,
            threshold: threshold.max(2),
            checks: HashMap::new(),
            order: Vec::new(),
        }
    }

    /// Feeds one round's results observed at `now`; returns the events, in plan order.
    pub fn observe(&mut self, now: SystemTime, results: &[CheckResult]) -> Vec<Event> {
        let mut events = Vec::new();
        let window_seconds = self.window.as_secs_f64();
        for c in results {
            let key = (c.name.clone(), c.direction == Direction::Reverse);
            let Some(t) = self.checks.get_mut(&key) else {
                self.order.push(key.clone());
                self.checks.insert(
                    key,
                    Track {
                        status: c.status,
                        transitions: VecDeque::new(),
                        total_transitions: 0,
                        flapping: false,
                        ever_flapped: false,
                    },
                );
                events.push(Event::Start {
                    check: c.name.clone(),
                    direction: c.direction,
                    status: c.status,
                    problem: problem(c),
                });
                continue;
            };
            if t.status != c.status {
                events.push(Event::Transition {
                    check: c.name.clone(),
                    direction: c.direction,
                    from: t.status,
                    to: c.status,
                    problem: problem(c),
                });
                t.status = c.status;
                t.transitions.push_back(now);
                t.total_transitions += 1;
            }
            // Slide the window.
            while t
                .transitions
                .front()
                .is_some_and(|at| now.duration_since(*at).unwrap_or_default() > self.window)
            {
                t.transitions.pop_front();
            }
            let n = t.transitions.len();
            if !t.flapping && n >= self.threshold {
                t.flapping = true;
                t.ever_flapped = true;
                events.push(Event::Flapping {
                    check: c.name.clone(),
                    direction: c.direction,
                    transitions: n,
                    window_seconds,
                });
            } else if t.flapping && n == 0 {
                // Stable again only once a whole window passed without a transition.
                t.flapping = false;
                events.push(Event::Stable {
                    check: c.name.clone(),
                    direction: c.direction,
                    window_seconds,
                });
            }
        }
        events
    }

    /// The state of every check seen so far, in plan order.
    pub fn summary(&self) -> Vec<CheckSummary> {
        self.order
            .iter()
            .filter_map(|k| self.checks.get(k).map(|t| (k, t)))
            .map(|((name, rev), t)| CheckSummary {
                check: name.clone(),
                direction: if *rev {
                    Direction::Reverse
                } else {
                    Direction::Forward
                },
                status: t.status,
                transitions: t.total_transitions,
                transitions_in_window: t.transitions.len(),
                flapping: t.flapping,
                flapped: t.ever_flapped,
            })
            .collect()
    }

    /// Extra Prometheus families for `/metrics`: transitions in the window and a flapping flag.
    pub fn metrics(&self) -> String {
        let mut transitions = Family::new(
            "dtcprobe_check_transitions_in_window",
            "Status changes of the check within the flap window.",
        );
        let mut flapping = Family::new(
            "dtcprobe_check_flapping",
            "Whether the check is flapping (1) or not (0).",
        );
        for r in self.summary() {
            let dir = match r.direction {
                Direction::Forward => "forward",
                Direction::Reverse => "reverse",
            };
            let l = labels(&[("check", &r.check), ("direction", dir)]);
            transitions.add(l.clone(), r.transitions_in_window as f64);
            flapping.add(l, f64::from(u8::from(r.flapping)));
        }
        let mut out = String::new();
        transitions.write(&mut out);
        flapping.write(&mut out);
        out
    }
}

fn dir_suffix(d: Direction) -> &'static str {
    match d {
        Direction::Forward => "",
        Direction::Reverse => " (reverse)",
    }
}

/// One event as a text line.
pub fn event_line(at: SystemTime, e: &Event) -> String {
    let ts = humantime::format_rfc3339_seconds(at);
    let pb = |p: &Option<String>| p.as_ref().map(|p| format!("  ({p})")).unwrap_or_default();
    match e {
        Event::Start {
            check,
            direction,
            status,
            problem,
        } => format!(
            "{ts}  {check}{}  start: {}{}",
            dir_suffix(*direction),
            status.as_str(),
            pb(problem)
        ),
        Event::Transition {
            check,
            direction,
            from,
            to,
            problem,
        } => format!(
            "{ts}  {check}{}  {} -> {}{}",
            dir_suffix(*direction),
            from.as_str(),
            to.as_str(),
            pb(problem)
        ),
        Event::Flapping {
            check,
            direction,
            transitions,
            window_seconds,
        } => format!(
            "{ts}  {check}{}  FLAPPING: {transitions} transitions within {}",
            dir_suffix(*direction),
            humantime::format_duration(Duration::from_secs_f64(*window_seconds))
        ),
        Event::Stable {
            check,
            direction,
            window_seconds,
        } => format!(
            "{ts}  {check}{}  stable again: no transition within {}",
            dir_suffix(*direction),
            humantime::format_duration(Duration::from_secs_f64(*window_seconds))
        ),
    }
}

#[derive(Serialize)]
struct JsonEvent<'a> {
    at: String,
    #[serde(flatten)]
    event: &'a Event,
}

#[derive(Serialize)]
struct JsonSummary<'a> {
    at: String,
    event: &'static str,
    rounds: u64,
    checks: &'a [CheckSummary],
}

fn print_events(json: bool, at: SystemTime, events: &[Event]) {
    let mut out = std::io::stdout().lock();
    for e in events {
        let line = if json {
            serde_json::to_string(&JsonEvent {
                at: humantime::format_rfc3339_seconds(at).to_string(),
                event: e,
            })
            .unwrap_or_default()
        } else {
            event_line(at, e)
        };
        let _ = writeln!(out, "{line}");
    }
    let _ = out.flush();
}

fn print_summary(json: bool, rounds: u64, tracker: &Tracker) {
    let rows = tracker.summary();
    let now = SystemTime::now();
    let mut out = std::io::stdout().lock();
    if json {
        let s = JsonSummary {
            at: humantime::format_rfc3339_seconds(now).to_string(),
            event: "summary",
            rounds,
            checks: &rows,
        };
        let _ = writeln!(out, "{}", serde_json::to_string(&s).unwrap_or_default());
    } else {
        let flapped: Vec<String> = rows
            .iter()
            .filter(|r| r.flapped)
            .map(|r| {
                format!(
                    "{}{} ({} transitions)",
                    r.check,
                    dir_suffix(r.direction),
                    r.transitions
                )
            })
            .collect();
        let failing: Vec<String> = rows
            .iter()
            .filter(|r| r.status == Status::Fail)
            .map(|r| format!("{}{}", r.check, dir_suffix(r.direction)))
            .collect();
        let list = |v: &[String]| {
            if v.is_empty() {
                "none".to_string()
            } else {
                v.join(", ")
            }
        };
        let _ = writeln!(
            out,
            "{}  summary: {}; flapping: {}; failing now: {}",
            humantime::format_rfc3339_seconds(now),
            crate::report::human::plural(rounds as usize, "round", "rounds"),
            list(&flapped),
            list(&failing)
        );
    }
    let _ = out.flush();
}

/// Runs `dtcprobe watch`; returns the exit code: 130 when interrupted, else 1 if a check flapped
/// or the last round fails by `--fail-on`, else that round's code.
pub async fn run(plan: Plan, schedule: WatchOptions) -> u8 {
    let json = plan.output.format == Format::Json;
    let opts = plan.run_options(None);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = match schedule.metrics_listen {
        None => None,
        Some(addr) => {
            match start_server(
                addr,
                &plan.checks,
                &opts,
                schedule.probe_cache,
                stop_rx.clone(),
            )
            .await
            {
                Ok(s) => Some(s),
                Err(e) => {
                    eprintln!("dtcprobe: cannot listen on {addr}: {e}");
                    return exit::USAGE;
                }
            }
        }
    };

    let mut tracker = Tracker::new(schedule.flap_window, schedule.flap_threshold);
    let mut rounds = 0u64;
    let mut last: Option<Report> = None;
    let mut interrupted = false;
    let ctrl_c = crate::signals::shutdown_signal();
    tokio::pin!(ctrl_c);
    loop {
        let round_start = tokio::time::Instant::now();
        let report = tokio::select! {
            r = runner::run_plan(plan.checks.clone(), &opts) => r,
            _ = &mut ctrl_c => { interrupted = true; break; }
        };
        rounds += 1;
        tracing::debug!(round = rounds, "watch round finished");
        let now = SystemTime::now();
        let events = tracker.observe(now, &report.checks);
        // Publish before printing: whoever reacts to a printed event sees the same state.
        if let Some((state, _)) = &server {
            state.set_latest(report.clone(), tracker.metrics());
        }
        print_events(json, now, &events);
        let textfile = plan
            .output
            .textfile_dir
            .as_deref()
            .map(|dir| (dir, plan.output.textfile_name.as_str()));
        for e in outputs::write_all(&report, &plan.output.outputs, textfile) {
            eprintln!("dtcprobe: {e}");
        }
        last = Some(report);
        if schedule.count.is_some_and(|n| rounds >= n) {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(round_start + schedule.interval) => {}
            _ = &mut ctrl_c => { interrupted = true; break; }
        }
    }
    print_summary(json, rounds, &tracker);
    let _ = stop_tx.send(true);
    if let Some((_, handle)) = server {
        let _ = tokio::time::timeout(Duration::from_secs(2), handle).await;
    }
    if interrupted {
        return exit::INTERRUPTED;
    }
    let code = last.as_ref().map_or(exit::INCONCLUSIVE, |r| {
        exit::for_report(r, plan.output.fail_on)
    });
    if code == exit::OK && tracker.summary().iter().any(|r| r.flapped) {
        exit::CHECK_FAILED
    } else {
        code
    }
}

type ServerHandle = (Arc<ServerState>, tokio::task::JoinHandle<()>);

async fn start_server(
    addr: SocketAddr,
    checks: &[crate::target::CheckSpec],
    opts: &RunOptions,
    cache: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<ServerHandle> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    eprintln!("dtcprobe: serving /metrics, /healthz and /probe on http://{local}");
    let state = ServerState::new(
        checks.to_vec(),
        metrics_server::runner_prober(opts.clone()),
        cache,
    );
    let st = state.clone();
    let handle = tokio::spawn(async move {
        let shutdown = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        if let Err(e) = metrics_server::serve(listener, st, shutdown).await {
            eprintln!("dtcprobe: metrics server: {e}");
        }
    });
    Ok((state, handle))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Cause, HopKind, HopResult};

    fn chk(name: &str, ok: bool) -> CheckResult {
        let hops = if ok {
            vec![HopResult::pass(HopKind::Tcp, "")]
        } else {
            vec![HopResult::fail(HopKind::Tcp, Cause::Refused, "RST")]
        };
        CheckResult::new(name, "tcp", "t", hops)
    }

    fn at(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + s)
    }

    fn kinds(events: &[Event]) -> Vec<&'static str> {
        events
            .iter()
            .map(|e| match e {
                Event::Start { .. } => "start",
                Event::Transition { .. } => "transition",
                Event::Flapping { .. } => "flapping",
                Event::Stable { .. } => "stable",
            })
            .collect()
    }

    #[test]
    fn transitions_and_flapping_over_a_window() {
        // Seed scenario: a DNS load balancer re-enabling a broken datacenter now and then.
        // (second, target up?) -> expected event kinds.
        let table: Vec<(u64, bool, Vec<&str>)> = vec![
            (0, true, vec!["start"]),
            (60, true, vec![]),
            (120, false, vec!["transition"]), // broken DC for 1 minute
            (180, true, vec!["transition"]),
            (240, true, vec![]),
            (360, false, vec!["transition", "flapping"]), // 3rd change within 10 min
            (540, false, vec![]),
            (560, true, vec!["transition"]), // still flapping, no new flapping event
            (1100, true, vec![]),            // only the change at 560 s is still in the window
            (1200, true, vec!["stable"]),    // last change at 560 is > 600 s ago
            (1300, false, vec!["transition"]), // one change: not flapping again
        ];
        let mut t = Tracker::new(Duration::from_secs(600), 3);
        for (s, up, want) in table {
            let ev = t.observe(at(s), &[chk("dc2", up), chk("steady", true)]);
            assert_eq!(
                kinds(&ev),
                if s == 0 {
                    vec!["start", "start"]
                } else {
                    want.clone()
                },
                "at {s}s: {ev:?}"
            );
        }
        let s = t.summary();
        assert_eq!(s[0].transitions, 5);
        assert!(s[0].flapped && !s[0].flapping);
        assert_eq!(s[1].transitions, 0);
        assert!(!s[1].flapped);
    }

    #[test]
    fn event_lines() {
        let e = Event::Transition {
            check: "sql".into(),
            direction: Direction::Forward,
            from: Status::Pass,
            to: Status::Fail,
            problem: Some("tcp: refused: RST".into()),
        };
        assert_eq!(
            event_line(at(0), &e),
            "1970-01-12T13:46:40Z  sql  pass -> fail  (tcp: refused: RST)"
        );
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["event"], "transition");
        assert_eq!(json["to"], "fail");
    }

    #[test]
    fn metrics_are_valid_families() {
        let mut t = Tracker::new(Duration::from_secs(60), 2);
        t.observe(at(0), &[chk("a\"b", true)]);
        t.observe(at(1), &[chk("a\"b", false)]);
        t.observe(at(2), &[chk("a\"b", true)]);
        let m = t.metrics();
        assert!(
            m.contains("dtcprobe_check_flapping{check=\"a\\\"b\",direction=\"forward\"} 1"),
            "{m}"
        );
        assert!(
            m.contains(
                "dtcprobe_check_transitions_in_window{check=\"a\\\"b\",direction=\"forward\"} 2"
            ),
            "{m}"
        );
    }
}
