//! JUnit XML exporter, for CI systems (GitLab, Jenkins, Azure DevOps, GitHub test reporters).
//!
//! Layout:
//! - one `<testsuite>` per zone pair, named `from->to` (a missing side is `any`), or `default`
//!   for checks without zone labels, in order of first appearance;
//! - one `<testcase>` per hop: `classname` is dotted, `dtcprobe.<zone pair>.<check>` (dots inside
//!   the parts become `_` so the hierarchy stays three levels), `name` is the hop kind; names are
//!   made unique within a suite (`tcp#2`, or a ` (reverse)` suffix for the reverse direction);
//! - outcomes: `pass` and `warn` are successes (a warning is written to `system-out`), a failure
//!   whose cause is a tool fault (`config`, `internal`) is an `<error>`, any other failure is a
//!   `<failure>` (message `cause: detail`, type = cause, text = hint), `skip` is `<skipped>`;
//! - times are seconds.

use std::collections::HashSet;
use std::io::{self, Write};

use quick_junit::{
    NonSuccessKind, Property, Report as JReport, TestCase, TestCaseStatus, TestSuite,
};

use crate::model::{CheckResult, Direction, HopResult, Report, Status};

/// The JUnit exporter.
#[derive(Debug, Default, Clone, Copy)]
pub struct Junit;

impl super::exporter::Exporter for Junit {
    fn render(
        &self,
        report: &Report,
        _ctx: &super::exporter::RenderContext<'_>,
        out: &mut dyn Write,
    ) -> io::Result<()> {
        render(report, out)
    }
}

/// The suite a check belongs to: `from->to`, or `default` without zone labels.
pub fn suite_name(check: &CheckResult) -> String {
    match (&check.from, &check.to) {
        (None, None) => "default".to_string(),
        (from, to) => format!(
            "{}->{}",
            from.as_deref().unwrap_or("any"),
            to.as_deref().unwrap_or("any")
        ),
    }
}

/// One component of a dotted classname: no dots, no whitespace.
fn class_part(s: &str) -> String {
    let cleaned: String = s
        .chars()
        .map(|c| {
            if c == '.' || c.is_whitespace() {
                '_'
            } else {
                c
            }
        })
        .collect();
    if cleaned.is_empty() {
        "_".to_string()
    } else {
        cleaned
    }
}

fn status_of_hop(hop: &HopResult) -> TestCaseStatus {
    match hop.status {
        Status::Pass | Status::Warn => TestCaseStatus::success(),
        Status::Skip => {
            let mut s = TestCaseStatus::skipped();
            // `unsupported` / `interrupted` say why it was not run; the cause leads, as for failures.
            match (hop.cause, hop.detail.is_empty()) {
                (Some(cause), true) => s.set_message(cause.as_str()),
                (Some(cause), false) => {
                    s.set_message(format!("{}: {}", cause.as_str(), hop.detail))
                }
                (None, false) => s.set_message(hop.detail.as_str()),
                (None, true) => &mut s,
            };
            s
        }
        Status::Fail => {
            let tool_fault = hop.cause.is_some_and(|c| c.is_tool_fault());
            let kind = if tool_fault {
                NonSuccessKind::Error
            } else {
                NonSuccessKind::Failure
            };
            let mut s = TestCaseStatus::non_success(kind);
            let cause = hop.cause.map(|c| c.as_str()).unwrap_or("unknown");
            s.set_type(cause);
            s.set_message(if hop.detail.is_empty() {
                cause.to_string()
            } else {
                format!("{cause}: {}", hop.detail)
            });
            if let Some(hint) = &hop.hint {
                s.set_description(hint.as_ref());
            }
            s
        }
    }
}

fn unique(seen: &mut HashSet<(String, String)>, classname: &str, base: String) -> String {
    if seen.insert((classname.to_string(), base.clone())) {
        return base;
    }
    // Bounded: at most one more attempt than there are names already taken.
    for n in 2..=seen.len() + 2 {
        let candidate = format!("{base}#{n}");
        if seen.insert((classname.to_string(), candidate.clone())) {
            return candidate;
        }
    }
    base
}

/// Builds the quick-junit report (exposed for tests and for callers that want the structure).
pub fn build(report: &Report) -> JReport {
    let mut suites: Vec<(String, TestSuite)> = Vec::new();
    let mut seen: HashSet<(String, String)> = HashSet::new();

    for check in &report.checks {
        let sname = suite_name(check);
        let idx = match suites.iter().position(|(n, _)| *n == sname) {
            Some(i) => i,
            None => {
                let mut suite = TestSuite::new(sname.as_str());
                suite.set_time(std::time::Duration::ZERO);
                suites.push((sname.clone(), suite));
                suites.len() - 1
            }
        };
        let classname = format!(
            "dtcprobe.{}.{}",
            class_part(&sname),
            class_part(&check.name)
        );
        let suffix = match check.direction {
            Direction::Forward => "",
            Direction::Reverse => " (reverse)",
        };

        let mut cases = Vec::new();
        if check.hops.is_empty() {
            let mut status = TestCaseStatus::skipped();
            status.set_message("no hop ran");
            let name = unique(&mut seen, &classname, format!("check{suffix}"));
            let mut case = TestCase::new(name, status);
            case.set_classname(classname.as_str());
            case.set_time(std::time::Duration::ZERO);
            cases.push(case);
        }
        for hop in &check.hops {
            let name = unique(
                &mut seen,
                &classname,
                format!("{}{suffix}", hop.hop.as_str()),
            );
            let mut case = TestCase::new(name, status_of_hop(hop));
            case.set_classname(classname.as_str());
            case.set_time(hop.duration_seconds);
            case.add_property(Property::new("target", check.target.as_str()));
            case.add_property(Property::new("kind", check.kind.as_str()));
            case.add_property(Property::new("status", hop.status.as_str()));
            if let Some(cause) = hop.cause {
                case.add_property(Property::new("cause", cause.as_str()));
            }
            let mut out = String::new();
            if hop.status == Status::Warn {
                out.push_str("WARNING");
                if let Some(c) = hop.cause {
                    out.push_str(": ");
                    out.push_str(c.as_str());
                }
                out.push('\n');
            }
            if !hop.detail.is_empty() && hop.status != Status::Fail {
                out.push_str(&hop.detail);
                out.push('\n');
            }
            if hop.status == Status::Warn {
                if let Some(h) = &hop.hint {
                    out.push_str("hint: ");
                    out.push_str(h);
                    out.push('\n');
                }
            }
            if !out.is_empty() {
                case.set_system_out(out);
            }
            cases.push(case);
        }
        let suite = &mut suites[idx].1;
        let added: std::time::Duration = check.hops.iter().map(|h| h.duration_seconds).sum();
        let time = suite.time.unwrap_or_default() + added;
        suite.set_time(time);
        suite.add_test_cases(cases);
    }

    let mut jr = JReport::new("dtcprobe");
    jr.set_time(report.duration_seconds);
    // When the run started (UTC), on the report and on every suite: CI dashboards sort and
    // de-duplicate runs by it.
    let started = report.started_at_unix_seconds().and_then(|secs| {
        chrono::DateTime::from_timestamp(secs.trunc() as i64, (secs.fract() * 1e9) as u32)
    });
    if let Some(t) = started {
        jr.set_timestamp(t.fixed_offset());
        for (_, suite) in &mut suites {
            suite.set_timestamp(t.fixed_offset());
        }
    }
    jr.add_test_suites(suites.into_iter().map(|(_, s)| s));
    jr
}

/// Renders `report` as JUnit XML.
pub fn render(report: &Report, out: &mut dyn Write) -> io::Result<()> {
    let jr = build(report);
    let xml = jr.to_string().map_err(io::Error::other)?;
    out.write_all(xml.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Cause, HopKind};
    use std::time::{Duration, SystemTime};

    fn check(
        name: &str,
        from: Option<&str>,
        to: Option<&str>,
        hops: Vec<HopResult>,
    ) -> CheckResult {
        CheckResult {
            name: name.into(),
            kind: "tcp".into(),
            target: "tcp://db:1433".into(),
            from: from.map(Into::into),
            to: to.map(Into::into),
            direction: Direction::Forward,
            status: CheckResult::status_of(&hops),
            hops,
        }
    }

    #[test]
    fn suite_names() {
        let cases = [
            (None, None, "default"),
            (Some("app"), Some("db"), "app->db"),
            (Some("app"), None, "app->any"),
            (None, Some("db"), "any->db"),
        ];
        for (from, to, want) in cases {
            assert_eq!(suite_name(&check("x", from, to, vec![])), want);
        }
    }

    #[test]
    fn counts_and_kinds() {
        let r = Report::new(
            SystemTime::now(),
            Duration::from_millis(10),
            "h".into(),
            vec![
                check(
                    "a.b",
                    Some("app"),
                    Some("db"),
                    vec![
                        HopResult::pass(HopKind::Resolve, "ok"),
                        HopResult::fail(HopKind::Tcp, Cause::Timeout, "no answer")
                            .with_duration(Duration::from_millis(1500)),
                        HopResult::skip(HopKind::Login, "tcp failed"),
                    ],
                ),
                check(
                    "c",
                    None,
                    None,
                    vec![HopResult::fail(HopKind::Tcp, Cause::Internal, "bug")],
                ),
            ],
        );
        let jr = build(&r);
        assert_eq!(jr.tests, 4);
        assert_eq!(jr.failures, 1);
        assert_eq!(jr.errors, 1);
        assert_eq!(jr.skipped, 1);
        assert_eq!(jr.test_suites.len(), 2);
        assert_eq!(jr.test_suites[0].name.as_str(), "app->db");
        assert_eq!(
            jr.test_suites[0].test_cases[0]
                .classname
                .as_ref()
                .unwrap()
                .as_str(),
            "dtcprobe.app->db.a_b"
        );
    }

    #[test]
    fn duplicate_hops_get_unique_names() {
        let mut seen = HashSet::new();
        assert_eq!(unique(&mut seen, "c", "tcp".into()), "tcp");
        assert_eq!(unique(&mut seen, "c", "tcp".into()), "tcp#2");
        assert_eq!(unique(&mut seen, "c", "tcp".into()), "tcp#3");
        assert_eq!(unique(&mut seen, "d", "tcp".into()), "tcp");
    }
}
