//! Nagios / Icinga plugin output.
//!
//! First line: `DTCPROBE <STATE> - <summary> | <perfdata>`; following lines: one per check that did
//! not pass (long text). Perfdata items are `'label'=value[UOM];;;;` separated by spaces:
//! counts per status (`'pass'=3;;;;`), and per hop that ran its duration in seconds
//! (`'<check> <hop>'=0.012s;;;;`). The plugin exit code comes from [`exit_code`] and is always
//! 0 (OK), 1 (WARNING), 2 (CRITICAL) or 3 (UNKNOWN).

use std::io::{self, Write};

use crate::baseline::BaselineDiff;
use crate::exit::FailOn;
use crate::model::{CheckResult, Report, Status};

/// The Nagios exporter.
#[derive(Debug, Default, Clone, Copy)]
pub struct Nagios;

/// A plugin exits 0-3 only, and says its state on stdout even when it could not run: the baseline
/// section is not rendered (the regression shows in the state), a regression is CRITICAL, and a
/// tool error before the run is UNKNOWN.
impl super::exporter::Exporter for Nagios {
    fn render(
        &self,
        report: &Report,
        _ctx: &super::exporter::RenderContext<'_>,
        out: &mut dyn Write,
    ) -> io::Result<()> {
        render(report, out)
    }

    fn exit_code(&self, report: &Report, _fail_on: FailOn, baseline: Option<&BaselineDiff>) -> u8 {
        let code = exit_code(report) as u8;
        if baseline.is_some_and(BaselineDiff::has_regressions) {
            code.max(NagiosState::Critical as u8)
        } else {
            code
        }
    }

    fn tool_error(&self, _code: u8, message: &str, stdout: &mut dyn Write) -> u8 {
        let _ = writeln!(
            stdout,
            "DTCPROBE UNKNOWN - {}",
            message.replace(['|', '\n'], " ")
        );
        let _ = stdout.flush();
        NagiosState::Unknown as u8
    }
}

/// Nagios plugin states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum NagiosState {
    Ok = 0,
    Warning = 1,
    Critical = 2,
    Unknown = 3,
}

impl NagiosState {
    pub fn as_str(self) -> &'static str {
        match self {
            NagiosState::Ok => "OK",
            NagiosState::Warning => "WARNING",
            NagiosState::Critical => "CRITICAL",
            NagiosState::Unknown => "UNKNOWN",
        }
    }
}

fn check_is_tool_fault(check: &CheckResult) -> bool {
    check
        .hops
        .iter()
        .filter(|h| h.status == Status::Fail)
        .all(|h| h.cause.is_some_and(|c| c.is_tool_fault()))
}

/// The plugin state of a report: CRITICAL if any check failed for a network/server reason,
/// UNKNOWN if the only failures are tool faults (or nothing ran), WARNING on warnings, else OK.
pub fn state(report: &Report) -> NagiosState {
    if report.checks.is_empty() {
        return NagiosState::Unknown;
    }
    let mut state = NagiosState::Ok;
    for c in &report.checks {
        let s = match c.status {
            Status::Pass => NagiosState::Ok,
            Status::Warn => NagiosState::Warning,
            Status::Skip => NagiosState::Unknown,
            Status::Fail if check_is_tool_fault(c) => NagiosState::Unknown,
            Status::Fail => NagiosState::Critical,
        };
        // CRITICAL beats UNKNOWN: a definite failure is the more useful answer.
        state = match (state, s) {
            (NagiosState::Critical, _) | (_, NagiosState::Critical) => NagiosState::Critical,
            (a, b) => a.max(b),
        };
    }
    state
}

/// The plugin exit code (0–3) for `report`.
pub fn exit_code(report: &Report) -> i32 {
    state(report) as i32
}

/// A perfdata label: quoted; `'` doubled, `=` and `|` replaced (not allowed by the grammar).
pub fn perf_label(s: &str) -> String {
    let cleaned: String = s
        .chars()
        .map(|c| match c {
            '=' | '|' => '_',
            c if c.is_control() => ' ',
            c => c,
        })
        .collect();
    format!("'{}'", cleaned.replace('\'', "''"))
}

/// Text outside perfdata must not contain `|` (it starts perfdata) nor line breaks.
fn text(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '|' => '/',
            c if c.is_control() => ' ',
            c => c,
        })
        .collect()
}

fn perfdata(report: &Report) -> Vec<String> {
    let s = &report.summary;
    let mut items = vec![
        format!("{}={};;;;", perf_label("pass"), s.pass),
        format!("{}={};;;;", perf_label("warn"), s.warn),
        format!("{}={};;;;", perf_label("fail"), s.fail),
        format!("{}={};;;;", perf_label("skip"), s.skip),
    ];
    for c in &report.checks {
        for h in c.hops.iter().filter(|h| h.status != Status::Skip) {
            items.push(format!(
                "{}={:.6}s;;;;",
                perf_label(&format!("{} {}", c.name, h.hop.as_str())),
                h.duration_seconds.as_secs_f64()
            ));
        }
    }
    items
}

/// Renders the plugin output (summary line with perfdata, then long text).
pub fn render(report: &Report, out: &mut dyn Write) -> io::Result<()> {
    let st = state(report);
    let s = &report.summary;
    let total = report.checks.len();
    let mut summary = if total == 0 {
        "no checks ran".to_string()
    } else {
        format!(
            "{} of {total} checks passed, {} failed, {} warned, {} skipped",
            s.pass, s.fail, s.warn, s.skip
        )
    };
    let problems: Vec<&CheckResult> = report
        .checks
        .iter()
        .filter(|c| c.status != Status::Pass)
        .collect();
    if let Some(first) = problems.first() {
        summary.push_str(&format!("; first: {}", one_line(first)));
    }
    writeln!(
        out,
        "DTCPROBE {} - {} | {}",
        st.as_str(),
        text(&summary),
        perfdata(report).join(" ")
    )?;
    for c in problems {
        writeln!(out, "{}", text(&one_line(c)))?;
        if let Some(hint) = c.first_problem().and_then(|h| h.hint.as_deref()) {
            writeln!(out, "  hint: {}", text(hint))?;
        }
    }
    Ok(())
}

fn one_line(c: &CheckResult) -> String {
    // Ad-hoc checks are named after their target: do not say it twice.
    let who = if c.name == c.target {
        c.name.clone()
    } else {
        format!("{} [{}]", c.name, c.target)
    };
    match c.first_problem() {
        Some(h) => format!(
            "{who} {} {} {}: {}",
            h.hop.as_str(),
            h.status.as_str(),
            h.cause.map(|c| c.as_str()).unwrap_or("-"),
            h.detail
        ),
        None => format!("{who} {}", c.status.as_str()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Cause, HopKind, HopResult};
    use std::time::{Duration, SystemTime};

    fn check(hops: Vec<HopResult>) -> CheckResult {
        CheckResult::new("c", "tcp", "t", hops)
    }

    fn report(checks: Vec<CheckResult>) -> Report {
        Report::new(SystemTime::now(), Duration::ZERO, "h".into(), checks)
    }

    #[test]
    fn exit_codes() {
        let pass = || check(vec![HopResult::pass(HopKind::Tcp, "")]);
        let warn = || {
            check(vec![HopResult::warn(
                HopKind::Resolve,
                Cause::DnsMismatch,
                "",
            )])
        };
        let fail = || check(vec![HopResult::fail(HopKind::Tcp, Cause::Refused, "")]);
        let fault = || check(vec![HopResult::fail(HopKind::Tcp, Cause::Internal, "")]);
        let table: Vec<(Vec<CheckResult>, i32)> = vec![
            (vec![], 3),
            (vec![pass()], 0),
            (vec![pass(), warn()], 1),
            (vec![pass(), fail()], 2),
            (vec![warn(), fail()], 2),
            (vec![fault()], 3),
            (vec![pass(), fault()], 3),
            (vec![warn(), fault()], 3),
            (vec![fault(), fail()], 2),
        ];
        for (checks, want) in table {
            let r = report(checks);
            assert_eq!(exit_code(&r), want, "{:?}", r.summary);
        }
    }

    #[test]
    fn labels() {
        assert_eq!(perf_label("a b"), "'a b'");
        assert_eq!(perf_label("it's"), "'it''s'");
        assert_eq!(perf_label("a=b|c"), "'a_b_c'");
    }
}
