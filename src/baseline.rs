//! `--baseline FILE`: compare this run with an earlier JSON report (say, one taken in QA).
//!
//! Checks are matched by name and direction; hops by kind and occurrence. Reported:
//! - regressions: a check that passed (or warned) in the baseline and fails now — these make the
//!   run fail;
//! - changes: a hop whose resolved addresses (`data.addresses`) or RPC port (`data.port`,
//!   `data.ports`) differ from the baseline — informational;
//! - fixed checks (failed before, pass now), and checks only in one of the two reports.
//!
//! [`load`] reads the file before the run starts (a wrong path fails at once, not after a long
//! run); [`diff`] is pure; [`render_text`] writes the human/plain section and the [`BaselineDiff`]
//! itself serializes as the additive `baseline` field of the JSON report (both used by the
//! exporters in `report`).

use std::collections::HashMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::{CheckResult, Direction, HopResult, Report, Status};

#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    #[error("cannot read baseline {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("baseline {path} is not a dtcprobe JSON report: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("baseline {path} has format_version {found}; this dtcprobe reads 1.x and 2.x")]
    Version { path: PathBuf, found: String },
}

/// Reads an earlier JSON report.
pub fn load(path: &Path) -> Result<Report, BaselineError> {
    let text = std::fs::read_to_string(path).map_err(|source| BaselineError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text).map_err(|e| match e {
        ParseError::Json(source) => BaselineError::Parse {
            path: path.to_path_buf(),
            source,
        },
        ParseError::Version(found) => BaselineError::Version {
            path: path.to_path_buf(),
            found,
        },
    })
}

enum ParseError {
    Json(serde_json::Error),
    Version(String),
}

fn parse(text: &str) -> Result<Report, ParseError> {
    let report: Report = serde_json::from_str(text).map_err(ParseError::Json)?;
    // 2.0 renamed one hop and added much; what a baseline compares (checks, their status and
    // causes) reads the same in 1.x, so a 1.x baseline still serves.
    if !matches!(report.format_version.split('.').next(), Some("1" | "2")) {
        return Err(ParseError::Version(report.format_version));
    }
    Ok(report)
}

/// A check that passed in the baseline and fails now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Regression {
    pub check: String,
    pub direction: Direction,
    pub before: Status,
    pub now: Status,
    /// The first hop that does not pass now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hop: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    #[serde(default)]
    pub detail: String,
}

/// A hop fact that differs from the baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub check: String,
    pub direction: Direction,
    pub hop: String,
    /// `addresses`, `port` or `ports`.
    pub field: String,
    pub before: Value,
    pub now: Value,
}

/// The comparison; serialized as the `baseline` field of the JSON report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BaselineDiff {
    /// `started_at` of the baseline report.
    pub baseline_started_at: String,
    pub baseline_host: String,
    pub regressions: Vec<Regression>,
    pub changes: Vec<Change>,
    /// Checks that failed in the baseline and pass now.
    pub fixed: Vec<String>,
    /// Checks in the baseline that this run did not have.
    pub missing: Vec<String>,
    /// Checks in this run that the baseline did not have.
    pub new: Vec<String>,
}

impl BaselineDiff {
    /// A regression fails the run.
    pub fn has_regressions(&self) -> bool {
        !self.regressions.is_empty()
    }
}

/// (name, is reverse): `Direction` is not `Hash`.
fn key(c: &CheckResult) -> (String, bool) {
    (c.name.clone(), c.direction == Direction::Reverse)
}

fn display_name(c: &CheckResult) -> String {
    match c.direction {
        Direction::Forward => c.name.clone(),
        Direction::Reverse => format!("{} (reverse)", c.name),
    }
}

fn ok(s: Status) -> bool {
    matches!(s, Status::Pass | Status::Warn)
}

/// Hops keyed by (kind, occurrence): the second `resolve` of a check matches the second one.
fn hop_keys(hops: &[HopResult]) -> Vec<((&'static str, usize), &HopResult)> {
    let mut count: HashMap<&'static str, usize> = HashMap::new();
    hops.iter()
        .map(|h| {
            let n = count.entry(h.hop.as_str()).or_insert(0);
            *n += 1;
            ((h.hop.as_str(), *n), h)
        })
        .collect()
}

/// Addresses compare as sets (order from DNS varies); ports compare as values.
fn normalized(field: &str, v: &Value) -> Value {
    if field == "addresses" || field == "ports" {
        if let Value::Array(items) = v {
            let mut items = items.clone();
            items.sort_by_key(|a| a.to_string());
            items.dedup();
            return Value::Array(items);
        }
    }
    v.clone()
}

const COMPARED_FIELDS: [&str; 3] = ["addresses", "port", "ports"];

/// Compares `now` with `baseline`. Pure.
pub fn diff(baseline: &Report, now: &Report) -> BaselineDiff {
    let mut out = BaselineDiff {
        baseline_started_at: baseline.started_at.clone(),
        baseline_host: baseline.host.clone(),
        ..Default::default()
    };
    let before: HashMap<(String, bool), &CheckResult> =
        baseline.checks.iter().map(|c| (key(c), c)).collect();
    let now_keys: std::collections::HashSet<(String, bool)> = now.checks.iter().map(key).collect();

    for c in &now.checks {
        let Some(b) = before.get(&key(c)) else {
            out.new.push(display_name(c));
            continue;
        };
        if ok(b.status) && c.status == Status::Fail {
            let problem = c.first_problem();
            out.regressions.push(Regression {
                check: c.name.clone(),
                direction: c.direction,
                before: b.status,
                now: c.status,
                hop: problem.map(|h| h.hop.as_str().to_string()),
                cause: problem
                    .and_then(|h| h.cause)
                    .map(|c| c.as_str().to_string()),
                detail: problem.map(|h| h.detail.clone()).unwrap_or_default(),
            });
        } else if b.status == Status::Fail && ok(c.status) {
            out.fixed.push(display_name(c));
        }
        let before_hops: HashMap<(&str, usize), &HopResult> =
            hop_keys(&b.hops).into_iter().collect();
        for (k, h) in hop_keys(&c.hops) {
            let Some(bh) = before_hops.get(&k) else {
                continue;
            };
            for field in COMPARED_FIELDS {
                let (Some(bv), Some(nv)) = (bh.data.get(field), h.data.get(field)) else {
                    continue;
                };
                if normalized(field, bv) != normalized(field, nv) {
                    out.changes.push(Change {
                        check: c.name.clone(),
                        direction: c.direction,
                        hop: h.hop.as_str().to_string(),
                        field: field.to_string(),
                        before: bv.clone(),
                        now: nv.clone(),
                    });
                }
            }
        }
    }
    for b in &baseline.checks {
        if !now_keys.contains(&key(b)) {
            out.missing.push(display_name(b));
        }
    }
    out
}

fn compact(v: &Value) -> String {
    match v {
        Value::Array(items) => items.iter().map(compact).collect::<Vec<_>>().join(", "),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The human/plain section appended after the report.
pub fn render_text(d: &BaselineDiff, out: &mut dyn Write) -> io::Result<()> {
    writeln!(
        out,
        "\nBaseline comparison (baseline from {} on {}):",
        d.baseline_started_at, d.baseline_host
    )?;
    if d.regressions.is_empty()
        && d.changes.is_empty()
        && d.missing.is_empty()
        && d.new.is_empty()
        && d.fixed.is_empty()
    {
        writeln!(out, "  no differences")?;
        return Ok(());
    }
    for r in &d.regressions {
        let dir = if r.direction == Direction::Reverse {
            " (reverse)"
        } else {
            ""
        };
        writeln!(
            out,
            "  REGRESSION {}{dir}: {} in baseline, {} now at {} ({}){}",
            r.check,
            r.before.as_str(),
            r.now.as_str(),
            r.hop.as_deref().unwrap_or("?"),
            r.cause.as_deref().unwrap_or("-"),
            if r.detail.is_empty() {
                String::new()
            } else {
                format!(": {}", r.detail)
            }
        )?;
    }
    for c in &d.changes {
        let dir = if c.direction == Direction::Reverse {
            " (reverse)"
        } else {
            ""
        };
        writeln!(
            out,
            "  CHANGED {}{dir} {} {}: {} -> {}",
            c.check,
            c.hop,
            c.field,
            compact(&c.before),
            compact(&c.now)
        )?;
    }
    for f in &d.fixed {
        writeln!(out, "  FIXED {f}")?;
    }
    for m in &d.missing {
        writeln!(out, "  MISSING {m} (in baseline, not in this run)")?;
    }
    for n in &d.new {
        writeln!(out, "  NEW {n} (not in baseline)")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Cause, HopKind};
    use serde_json::json;
    use std::time::{Duration, SystemTime};

    fn chk(name: &str, hops: Vec<HopResult>) -> CheckResult {
        CheckResult {
            name: name.into(),
            kind: "epm".into(),
            target: "epm://db".into(),
            from: None,
            to: None,
            direction: Direction::Forward,
            status: CheckResult::status_of(&hops),
            hops,
        }
    }

    fn rep(checks: Vec<CheckResult>) -> Report {
        Report::new(SystemTime::UNIX_EPOCH, Duration::ZERO, "qa".into(), checks)
    }

    fn resolve(addrs: &[&str]) -> HopResult {
        HopResult::pass(HopKind::Resolve, "").with_data("addresses", json!(addrs))
    }

    #[test]
    fn table() {
        struct Case {
            name: &'static str,
            before: Vec<CheckResult>,
            now: Vec<CheckResult>,
            regressions: usize,
            changes: Vec<&'static str>,
            fixed: usize,
            missing: usize,
            new: usize,
        }
        let pass_tcp = || {
            chk(
                "a",
                vec![resolve(&["198.18.0.1"]), HopResult::pass(HopKind::Tcp, "")],
            )
        };
        let fail_tcp = || {
            chk(
                "a",
                vec![
                    resolve(&["198.18.0.1"]),
                    HopResult::fail(HopKind::Tcp, Cause::Timeout, "t"),
                ],
            )
        };
        let cases = vec![
            Case {
                name: "identical",
                before: vec![pass_tcp()],
                now: vec![pass_tcp()],
                regressions: 0,
                changes: vec![],
                fixed: 0,
                missing: 0,
                new: 0,
            },
            Case {
                name: "regression",
                before: vec![pass_tcp()],
                now: vec![fail_tcp()],
                regressions: 1,
                changes: vec![],
                fixed: 0,
                missing: 0,
                new: 0,
            },
            Case {
                name: "still failing is not a regression",
                before: vec![fail_tcp()],
                now: vec![fail_tcp()],
                regressions: 0,
                changes: vec![],
                fixed: 0,
                missing: 0,
                new: 0,
            },
            Case {
                name: "fixed",
                before: vec![fail_tcp()],
                now: vec![pass_tcp()],
                regressions: 0,
                changes: vec![],
                fixed: 1,
                missing: 0,
                new: 0,
            },
            Case {
                name: "address order does not matter",
                before: vec![chk("a", vec![resolve(&["198.18.0.1", "198.18.0.2"])])],
                now: vec![chk("a", vec![resolve(&["198.18.0.2", "198.18.0.1"])])],
                regressions: 0,
                changes: vec![],
                fixed: 0,
                missing: 0,
                new: 0,
            },
            Case {
                name: "address changed",
                before: vec![chk("a", vec![resolve(&["198.18.0.1"])])],
                now: vec![chk("a", vec![resolve(&["198.18.0.9"])])],
                regressions: 0,
                changes: vec!["addresses"],
                fixed: 0,
                missing: 0,
                new: 0,
            },
            Case {
                name: "rpc port changed",
                before: vec![chk(
                    "a",
                    vec![
                        HopResult::pass(HopKind::Epm, "").with_data("ports", json!([49664])),
                        HopResult::pass(HopKind::RpcPort, "").with_data("port", 49664),
                    ],
                )],
                now: vec![chk(
                    "a",
                    vec![
                        HopResult::pass(HopKind::Epm, "").with_data("ports", json!([49701])),
                        HopResult::pass(HopKind::RpcPort, "").with_data("port", 49701),
                    ],
                )],
                regressions: 0,
                changes: vec!["ports", "port"],
                fixed: 0,
                missing: 0,
                new: 0,
            },
            Case {
                name: "missing and new",
                before: vec![pass_tcp()],
                now: vec![chk("b", vec![HopResult::pass(HopKind::Tcp, "")])],
                regressions: 0,
                changes: vec![],
                fixed: 0,
                missing: 1,
                new: 1,
            },
        ];
        for c in cases {
            let d = diff(&rep(c.before), &rep(c.now));
            assert_eq!(d.regressions.len(), c.regressions, "{}", c.name);
            let fields: Vec<&str> = d.changes.iter().map(|x| x.field.as_str()).collect();
            assert_eq!(fields, c.changes, "{}", c.name);
            assert_eq!(d.fixed.len(), c.fixed, "{}", c.name);
            assert_eq!(d.missing.len(), c.missing, "{}", c.name);
            assert_eq!(d.new.len(), c.new, "{}", c.name);
            assert_eq!(d.has_regressions(), c.regressions > 0, "{}", c.name);
        }
    }

    #[test]
    fn regression_names_hop_and_cause() {
        let before = rep(vec![chk("a", vec![HopResult::pass(HopKind::Tcp, "")])]);
        let now = rep(vec![chk(
            "a",
            vec![HopResult::fail(HopKind::Tcp, Cause::Refused, "RST")],
        )]);
        let d = diff(&before, &now);
        assert_eq!(d.regressions[0].hop.as_deref(), Some("tcp"));
        assert_eq!(d.regressions[0].cause.as_deref(), Some("refused"));
        let mut text = Vec::new();
        render_text(&d, &mut text).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(
            text.contains("REGRESSION a: pass in baseline, fail now at tcp (refused): RST"),
            "{text}"
        );
    }

    #[test]
    fn round_trip_and_version_check() {
        let r = rep(vec![chk("a", vec![HopResult::pass(HopKind::Tcp, "")])]);
        let mut v = serde_json::to_value(&r).unwrap();
        v["baseline"] = serde_json::to_value(BaselineDiff::default()).unwrap();
        // A report that itself carries a baseline section still loads (additive field).
        assert!(parse(&v.to_string()).is_ok());
        v["format_version"] = json!("1.0");
        assert!(parse(&v.to_string()).is_ok(), "a 1.x baseline still loads");
        v["format_version"] = json!("3.0");
        assert!(matches!(parse(&v.to_string()), Err(ParseError::Version(_))));
        assert!(matches!(parse("{"), Err(ParseError::Json(_))));
    }
}
