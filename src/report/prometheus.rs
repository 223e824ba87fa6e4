//! Prometheus text exposition format (version 0.0.4): gauges only, base units, no timestamps.
//!
//! Series (labels common to a check: `check`, `kind`, `target`, `from`, `to`, `direction`):
//! - `dtcprobe_check_success` 1 if the check passed or only warned, else 0;
//! - `dtcprobe_check_duration_seconds` the sum of the check's hop durations;
//! - `dtcprobe_hop_duration_seconds{check,direction,hop}` for each hop that ran;
//! - `dtcprobe_hop_result{check,direction,hop,status}` a state set over pass/warn/fail/skip;
//! - `dtcprobe_hop_status{check,direction,hop,cause}` a state set over the fixed cause list
//!   (all 0 for a passing or skipped hop);
//! - `dtcprobe_run_timestamp_seconds`, `dtcprobe_run_duration_seconds`, `dtcprobe_build_info`.
//!
//! A hop kind repeated inside one check gets `hop="tcp_2"` so that no series is duplicated.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::io::{self, Write};
use std::time::Duration;

use crate::model::{Cause, CheckResult, Direction, Report, Status};

/// The Prometheus exporter.
#[derive(Debug, Default, Clone, Copy)]
pub struct Prometheus;

impl super::exporter::Exporter for Prometheus {
    fn render(
        &self,
        report: &Report,
        _ctx: &super::exporter::RenderContext<'_>,
        out: &mut dyn Write,
    ) -> io::Result<()> {
        out.write_all(render_string(report).as_bytes())
    }
}

/// Escapes a label value: backslash, double quote and line feed.
pub fn escape_label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// Formats a sample value; Rust's `Display` for f64 never uses exponents and is parseable.
fn value(v: f64) -> String {
    if v.is_finite() {
        format!("{v}")
    } else if v.is_nan() {
        "NaN".into()
    } else if v > 0.0 {
        "+Inf".into()
    } else {
        "-Inf".into()
    }
}

/// `{k="v",...}` with values escaped.
pub fn labels(pairs: &[(&str, &str)]) -> String {
    let mut s = String::from("{");
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(s, "{k}=\"{}\"", escape_label(v));
    }
    s.push('}');
    s
}

/// A metric family being written: HELP and TYPE once, then samples. Every endpoint that speaks
/// the text format (reports, `/metrics`, `/probe`, the agent's counters) writes through this.
pub struct Family {
    name: &'static str,
    help: &'static str,
    kind: &'static str,
    samples: Vec<(String, f64)>,
}

impl Family {
    /// A gauge (the default for report data: a value at the time of the run).
    pub fn new(name: &'static str, help: &'static str) -> Self {
        Family {
            name,
            help,
            kind: "gauge",
            samples: Vec::new(),
        }
    }

    /// A counter: `name` must end in `_total`.
    pub fn counter(name: &'static str, help: &'static str) -> Self {
        debug_assert!(
            name.ends_with("_total"),
            "counter {name} must end in _total"
        );
        Family {
            kind: "counter",
            ..Family::new(name, help)
        }
    }

    /// Adds a sample; `labels` is `""` or the output of [`labels`].
    pub fn add(&mut self, labels: String, v: f64) {
        self.samples.push((labels, v));
    }

    pub fn write(&self, out: &mut String) {
        if self.samples.is_empty() {
            return;
        }
        let _ = writeln!(out, "# HELP {} {}", self.name, self.help);
        let _ = writeln!(out, "# TYPE {} {}", self.name, self.kind);
        for (l, v) in &self.samples {
            let _ = writeln!(out, "{}{} {}", self.name, l, value(*v));
        }
    }
}

fn direction(d: Direction) -> &'static str {
    match d {
        Direction::Forward => "forward",
        Direction::Reverse => "reverse",
    }
}

fn check_success(c: &CheckResult) -> bool {
    matches!(c.status, Status::Pass | Status::Warn)
}

/// The families for a set of checks (shared by the report output and `/probe`).
fn check_families(checks: &[CheckResult]) -> Vec<Family> {
    let mut success = Family::new(
        "dtcprobe_check_success",
        "Whether the check passed (1; warnings count as passing) or not (0).",
    );
    let mut cdur = Family::new(
        "dtcprobe_check_duration_seconds",
        "Sum of the durations of the hops of the check.",
    );
    let mut hdur = Family::new(
        "dtcprobe_hop_duration_seconds",
        "Duration of one hop of a check (hops that ran).",
    );
    let mut hres = Family::new(
        "dtcprobe_hop_result",
        "State set: the status of a hop (pass, warn, fail, skip).",
    );
    let mut hstat = Family::new(
        "dtcprobe_hop_status",
        "State set: the cause of a hop that did not pass (all 0 when it passed or was skipped).",
    );
    let mut seen_checks: HashSet<(String, &'static str)> = HashSet::new();
    for c in checks {
        let dir = direction(c.direction);
        if !seen_checks.insert((c.name.clone(), dir)) {
            // Duplicate (name, direction): the series would collide; keep the first.
            continue;
        }
        let from = c.from.as_deref().unwrap_or("");
        let to = c.to.as_deref().unwrap_or("");
        let common = [
            ("check", c.name.as_str()),
            ("kind", c.kind.as_str()),
            ("target", c.target.as_str()),
            ("from", from),
            ("to", to),
            ("direction", dir),
        ];
        success.add(labels(&common), if check_success(c) { 1.0 } else { 0.0 });
        let total: Duration = c.hops.iter().map(|h| h.duration_seconds).sum();
        cdur.add(labels(&common), total.as_secs_f64());

        let mut hop_names: HashSet<String> = HashSet::new();
        for h in &c.hops {
            let base = h.hop.as_str().to_string();
            let mut name = base.clone();
            let mut n = 2;
            while !hop_names.insert(name.clone()) && n < 1000 {
                name = format!("{base}_{n}");
                n += 1;
            }
            let hl = [
                ("check", c.name.as_str()),
                ("direction", dir),
                ("hop", name.as_str()),
            ];
            if h.status != Status::Skip {
                hdur.add(labels(&hl), h.duration_seconds.as_secs_f64());
            }
            for st in [Status::Pass, Status::Warn, Status::Fail, Status::Skip] {
                let l = [hl[0], hl[1], hl[2], ("status", st.as_str())];
                hres.add(labels(&l), if h.status == st { 1.0 } else { 0.0 });
            }
            for &cause in Cause::ALL {
                let l = [hl[0], hl[1], hl[2], ("cause", cause.as_str())];
                let on =
                    h.status != Status::Pass && h.status != Status::Skip && h.cause == Some(cause);
                hstat.add(labels(&l), if on { 1.0 } else { 0.0 });
            }
        }
    }
    vec![success, cdur, hdur, hres, hstat]
}

fn run_families(report: &Report) -> Vec<Family> {
    let mut ts = Family::new(
        "dtcprobe_run_timestamp_seconds",
        "Unix time at which the run started.",
    );
    if let Some(t) = report.started_at_unix_seconds() {
        ts.add(String::new(), t);
    }
    let mut dur = Family::new(
        "dtcprobe_run_duration_seconds",
        "Wall-clock duration of the run.",
    );
    dur.add(String::new(), report.duration_seconds.as_secs_f64());
    let mut summary = Family::new("dtcprobe_checks", "Number of checks by status in the run.");
    let s = &report.summary;
    for (st, n) in [
        ("pass", s.pass),
        ("warn", s.warn),
        ("fail", s.fail),
        ("skip", s.skip),
    ] {
        summary.add(labels(&[("status", st)]), n as f64);
    }
    vec![ts, dur, summary, build_info()]
}

pub fn build_info() -> Family {
    let mut bi = Family::new(
        "dtcprobe_build_info",
        "Build information; the value is always 1.",
    );
    bi.add(
        labels(&[
            ("version", env!("CARGO_PKG_VERSION")),
            ("format_version", crate::model::FORMAT_VERSION),
        ]),
        1.0,
    );
    bi
}

/// Only `dtcprobe_build_info` (what `/metrics` serves before the first run finished).
pub fn render_build_info() -> String {
    let mut out = String::new();
    build_info().write(&mut out);
    out
}

/// The whole report in the text format.
pub fn render_string(report: &Report) -> String {
    let mut out = String::new();
    for f in check_families(&report.checks)
        .iter()
        .chain(run_families(report).iter())
    {
        f.write(&mut out);
    }
    out
}

/// Blackbox-exporter-style output for `/probe`: `probe_success`, `probe_duration_seconds`, then the
/// check's own `dtcprobe_*` series.
pub fn render_probe(check: Option<&CheckResult>, duration: Duration) -> String {
    let mut out = String::new();
    let mut ps = Family::new(
        "probe_success",
        "Displays whether or not the probe was a success.",
    );
    ps.add(
        String::new(),
        if check.is_some_and(check_success) {
            1.0
        } else {
            0.0
        },
    );
    let mut pd = Family::new(
        "probe_duration_seconds",
        "Returns how long the probe took to complete in seconds.",
    );
    pd.add(String::new(), duration.as_secs_f64());
    ps.write(&mut out);
    pd.write(&mut out);
    if let Some(c) = check {
        for f in check_families(std::slice::from_ref(c)) {
            f.write(&mut out);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_escaping() {
        let table = [
            ("plain", "plain"),
            ("a\"b", "a\\\"b"),
            ("c:\\x", "c:\\\\x"),
            ("l1\nl2", "l1\\nl2"),
        ];
        for (input, want) in table {
            assert_eq!(escape_label(input), want);
        }
    }

    #[test]
    fn values_have_no_exponent() {
        assert_eq!(value(0.000_001), "0.000001");
        assert_eq!(value(1.0), "1");
        assert_eq!(value(f64::INFINITY), "+Inf");
    }
}
