//! `dtcprobe matrix -f human`: the from x to grid (rows: the zone the connection starts in,
//! columns: the zone it goes to), then the agents, the failing cells with their hints, the
//! firewall change request lines and the summary. Colours follow the check report's rules (the
//! same codes, only when the context asks): pass green, warn yellow, fail bold red; cells that
//! could not be run (no agent, agent unreachable or lost) dim, since they are no verdict.

use std::io::{self, Write};

use super::exporter::{grid, summary_line, MatrixExporter, MatrixRenderContext};
use crate::matrix_report::{MatrixReport, RowState};
use crate::model::Status;
use crate::report::human::{colour_code, format_seconds};

pub struct Human;

fn paint(text: &str, status: Status, color: bool) -> String {
    if color {
        format!("\x1b[{}m{text}\x1b[0m", colour_code(status))
    } else {
        text.to_string()
    }
}

/// `text` padded to `width` columns (characters, not bytes; colour codes added after).
fn pad(text: &str, width: usize) -> String {
    let n = text.chars().count();
    format!("{text}{}", " ".repeat(width.saturating_sub(n)))
}

impl MatrixExporter for Human {
    fn render(
        &self,
        report: &MatrixReport,
        ctx: &MatrixRenderContext,
        out: &mut dyn Write,
    ) -> io::Result<()> {
        let color = ctx.color;
        let grid = grid(report);
        let corner = "FROM \\ TO";
        let first = report
            .zones
            .iter()
            .map(|z| z.chars().count())
            .chain([corner.len()])
            .max()
            .unwrap_or(0);
        let widths: Vec<usize> = (0..report.zones.len())
            .map(|j| {
                grid.iter()
                    .map(|row| row[j].0.chars().count())
                    .chain([report.zones[j].chars().count()])
                    .max()
                    .unwrap_or(1)
            })
            .collect();
        let mut header = pad(corner, first);
        for (z, w) in report.zones.iter().zip(&widths) {
            header.push_str("  ");
            header.push_str(&pad(z, *w));
        }
        writeln!(out, "{}", header.trim_end())?;
        for (from, row) in report.zones.iter().zip(&grid) {
            let mut line = pad(from, first);
            for ((label, status), w) in row.iter().zip(&widths) {
                line.push_str("  ");
                line.push_str(&paint(&pad(label, *w), *status, color && label != "-"));
            }
            writeln!(out, "{}", line.trim_end())?;
        }

        writeln!(out, "\nAGENTS")?;
        for r in &report.rows {
            let state = match r.state {
                RowState::Answered => paint("answered", Status::Pass, color),
                RowState::NoAgent => paint("no agent", Status::Skip, color),
                RowState::AgentUnreachable => paint("UNREACHABLE", Status::Fail, color),
                RowState::AgentLost => paint("LOST", Status::Fail, color),
            };
            writeln!(
                out,
                "  {}  {}  {state}: {}",
                pad(&r.zone, first),
                r.agent.as_deref().unwrap_or("-"),
                r.detail
            )?;
            // The agent's connection back to this host: about this host's path, not a cell.
            for c in r.session_checks.iter().filter(|c| c.name == "callback") {
                if let Some(h) = c.first_problem() {
                    writeln!(
                        out,
                        "  {}  note: the agent's callback to this host: {} {}: {}",
                        pad("", first),
                        h.status.as_str(),
                        h.cause.map(|c| c.as_str()).unwrap_or("-"),
                        h.detail
                    )?;
                }
            }
        }

        let problems = report.problems();
        if !problems.is_empty() {
            writeln!(out, "\nFAILING CELLS")?;
            for (c, check, hop) in problems {
                let label = match hop.status {
                    Status::Fail => "FAIL",
                    _ => "WARN",
                };
                writeln!(
                    out,
                    "  {} -> {}  {}  {} {} {}  {}  {}",
                    c.from,
                    c.to,
                    check.target,
                    hop.hop.as_str(),
                    paint(label, hop.status, color),
                    hop.cause.map(|c| c.as_str()).unwrap_or("-"),
                    format_seconds(hop.duration_seconds),
                    hop.detail
                )?;
                if let Some(hint) = &hop.hint {
                    writeln!(out, "      hint: {hint}")?;
                }
            }
        }
        if !report.firewall_requests.is_empty() {
            writeln!(out, "\nFIREWALL CHANGE REQUEST (failing cells)")?;
            for r in &report.firewall_requests {
                writeln!(out, "  {}", crate::verdict::request_line(r))?;
            }
        }
        writeln!(
            out,
            "\n{} in {} (per-hop timeout {})",
            summary_line(report),
            format_seconds(report.duration_seconds),
            format_seconds(report.timeout_seconds)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix_report::{Cell, CellState, MatrixSummary, Row, MATRIX_FORMAT_VERSION};
    use crate::model::{Cause, CheckResult, HopKind, HopResult};

    fn cell(from: &str, to: &str, state: CellState, cause: Option<Cause>) -> Cell {
        let hop = match state {
            CellState::Fail => HopResult::fail(HopKind::Tcp, Cause::Timeout, "timed out"),
            _ => HopResult::pass(HopKind::Tcp, "connected"),
        };
        Cell {
            from: from.into(),
            to: to.into(),
            state,
            cause,
            pass: 0,
            warn: 0,
            fail: 0,
            checks: vec![CheckResult::new("c", "tcp", "tcp://h:1", vec![hop])],
        }
    }

    fn report() -> MatrixReport {
        MatrixReport {
            format_version: MATRIX_FORMAT_VERSION.into(),
            tool_version: "0".into(),
            started_at: "2026-01-01T00:00:00Z".into(),
            duration_seconds: Default::default(),
            host: "h".into(),
            timeout_seconds: std::time::Duration::from_secs(1),
            zones: vec!["web".into(), "sql".into(), "dmz".into()],
            summary: MatrixSummary::default(),
            rows: vec![Row {
                zone: "dmz".into(),
                agent: Some("dmz1:7135".into()),
                state: RowState::AgentUnreachable,
                agent_zone: None,
                detail: "agent unreachable: tcp timeout".into(),
                requests: 1,
                session_checks: vec![],
            }],
            cells: vec![
                cell("web", "sql", CellState::Fail, Some(Cause::Timeout)),
                cell("sql", "web", CellState::Pass, None),
                cell("dmz", "web", CellState::AgentUnreachable, None),
            ],
            firewall_requests: vec![],
        }
    }

    fn render(color: bool) -> String {
        let mut out = Vec::new();
        Human
            .render(&report(), &MatrixRenderContext { color }, &mut out)
            .unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn grid_rows_and_colours() {
        let plain = render(false);
        let lines: Vec<&str> = plain.lines().collect();
        assert_eq!(lines[0], "FROM \\ TO  web                sql           dmz");
        assert_eq!(lines[1], "web        -                  FAIL timeout  -");
        assert_eq!(lines[2], "sql        pass               -             -");
        assert_eq!(lines[3], "dmz        agent unreachable  -             -");
        assert!(!plain.contains('\x1b'));
        assert!(
            plain.contains("FAILING CELLS\n  web -> sql  tcp://h:1  tcp FAIL timeout"),
            "{plain}"
        );
        let coloured = render(true);
        // The check report's codes: fail bold red, pass green, not-run states dim.
        assert!(
            coloured.contains("\x1b[31;1mFAIL timeout\x1b[0m"),
            "{coloured}"
        );
        assert!(coloured.contains("\x1b[32mpass"), "{coloured}");
        assert!(
            coloured.contains("\x1b[2magent unreachable\x1b[0m"),
            "{coloured}"
        );
        assert!(
            coloured.contains("\x1b[31;1mUNREACHABLE\x1b[0m"),
            "{coloured}"
        );
    }
}
