//! `dtcprobe matrix -f human`: the from x to grid (rows: the zone the connection starts in,
//! columns: the zone it goes to), then the agents, the failing cells with their hints, the
//! firewall change request lines and the summary. Colours follow the check report's rules (the
//! same codes, only when the context asks): pass green, warn yellow, fail bold red; cells that
//! could not be run (no agent, agent unreachable or lost) dim, since they are no verdict.

use std::io::{self, Write};

use super::{grid, summary_line, MatrixExporter, MatrixRenderContext};
use crate::matrix::{CellState, MatrixReport, RowState};
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

        let failing: Vec<_> = report
            .cells
            .iter()
            .filter(|c| matches!(c.state, CellState::Fail | CellState::Warn))
            .collect();
        if !failing.is_empty() {
            writeln!(out, "\nFAILING CELLS")?;
            for c in failing {
                for check in &c.checks {
                    let Some(hop) = check.first_problem() else {
                        continue;
                    };
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
