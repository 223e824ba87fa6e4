//! `dtcprobe matrix -f markdown`: the grid as a table, the failing cells, the agents that could
//! not be asked, and the firewall change request of the failing cells (for a ticket or a wiki).

use std::io::{self, Write};

use super::exporter::{grid, summary_line, MatrixExporter, MatrixRenderContext};
use crate::matrix_report::{MatrixReport, RowState};
use crate::verdict::{markdown_escape, to_markdown_table};

pub struct Markdown;

impl MatrixExporter for Markdown {
    fn render(
        &self,
        report: &MatrixReport,
        _ctx: &MatrixRenderContext,
        out: &mut dyn Write,
    ) -> io::Result<()> {
        writeln!(out, "# dtcprobe zone matrix\n")?;
        writeln!(
            out,
            "From {} at {}, per-hop timeout {}, {}.\n",
            markdown_escape(&report.host),
            report.started_at,
            crate::report::human::format_seconds(report.timeout_seconds),
            summary_line(report)
        )?;
        // The grid: rows are sources, columns destinations.
        write!(out, "| from \\ to |")?;
        for z in &report.zones {
            write!(out, " {} |", markdown_escape(z))?;
        }
        writeln!(out)?;
        write!(out, "|---|")?;
        for _ in &report.zones {
            write!(out, "---|")?;
        }
        writeln!(out)?;
        for (from, cells) in report.zones.iter().zip(grid(report)) {
            write!(out, "| **{}** |", markdown_escape(from))?;
            for (label, _) in cells {
                // A lone `-` (nothing declared) is plain text in a table cell: no escape.
                let shown = if label == "-" {
                    label
                } else if label.starts_with("FAIL") || label.starts_with("WARN") {
                    format!("**{}**", markdown_escape(&label))
                } else {
                    markdown_escape(&label)
                };
                write!(out, " {shown} |")?;
            }
            writeln!(out)?;
        }
        let unknown: Vec<_> = report
            .rows
            .iter()
            .filter(|r| r.state != RowState::Answered)
            .collect();
        if !unknown.is_empty() {
            writeln!(out, "\n## Rows not run\n")?;
            for r in unknown {
                writeln!(
                    out,
                    "- **{}** ({}): {}",
                    markdown_escape(&r.zone),
                    markdown_escape(r.agent.as_deref().unwrap_or("no agent")),
                    markdown_escape(&r.detail)
                )?;
            }
        }
        let problems = report.problems();
        if !problems.is_empty() {
            writeln!(out, "\n## Failing cells\n")?;
            for (c, check, hop) in problems {
                writeln!(
                    out,
                    "- {} -> {}: `{}` hop {} **{}** {}: {}",
                    markdown_escape(&c.from),
                    markdown_escape(&c.to),
                    check.target.replace('`', "'"),
                    hop.hop.as_str(),
                    hop.status.as_str(),
                    hop.cause.map(|c| c.as_str()).unwrap_or(""),
                    markdown_escape(&hop.detail)
                )?;
            }
        }
        writeln!(out, "\n## Firewall change request (failing cells)\n")?;
        write!(out, "{}", to_markdown_table(&report.firewall_requests))
    }
}
