//! `-f markdown`: the report for a ticket or a CI job summary (`$GITHUB_STEP_SUMMARY`): summary
//! line, verdict, firewall requests, one table row per hop, the hints, and the baseline
//! comparison when there is one. CommonMark + GFM tables; every text that comes from the network
//! or the config (names, details, hints) is escaped so it can never break a table or inject
//! markup.

use std::io::{self, Write};

use super::exporter::{Exporter, RenderContext};
use super::human::format_seconds;
use crate::model::{Direction, Report, Status};
use crate::verdict::{self, markdown_escape as esc};

pub struct Markdown;

impl Exporter for Markdown {
    fn render(
        &self,
        report: &Report,
        ctx: &RenderContext<'_>,
        out: &mut dyn Write,
    ) -> io::Result<()> {
        let s = &report.summary;
        let overall = if s.fail > 0 {
            "FAIL"
        } else if s.warn > 0 {
            "WARN"
        } else if s.pass == 0 {
            "NOTHING PASSED"
        } else {
            "PASS"
        };
        writeln!(out, "# dtcprobe report\n")?;
        writeln!(
            out,
            "**{overall}**: {} checks: {} pass, {} warn, {} fail, {} skip in {}, from host {} at {}.\n",
            report.checks.len(),
            s.pass,
            s.warn,
            s.fail,
            s.skip,
            format_seconds(report.duration_seconds),
            esc(&report.host),
            report.started_at
        )?;

        writeln!(out, "## Verdict\n")?;
        for line in verdict::verdict_lines(report) {
            writeln!(out, "- {}", esc(&line))?;
        }

        writeln!(out, "\n## Firewall requests\n")?;
        write!(
            out,
            "{}",
            verdict::to_markdown_table(&verdict::firewall_requests(report))
        )?;

        writeln!(out, "\n## Checks\n")?;
        writeln!(
            out,
            "| Check | From | To | Direction | Hop | Status | Cause | Time | Detail |"
        )?;
        writeln!(out, "|---|---|---|---|---|---|---|---|---|")?;
        for check in &report.checks {
            let direction = match check.direction {
                Direction::Forward => "forward",
                Direction::Reverse => "reverse",
            };
            for hop in &check.hops {
                let status = match hop.status {
                    Status::Fail | Status::Warn => format!("**{}**", hop.status.as_str()),
                    _ => hop.status.as_str().to_string(),
                };
                let time = if hop.status == Status::Skip {
                    String::new()
                } else {
                    format_seconds(hop.duration_seconds)
                };
                writeln!(
                    out,
                    "| {} | {} | {} | {direction} | {} | {status} | {} | {time} | {} |",
                    esc(&check.name),
                    esc(check.from.as_deref().unwrap_or("")),
                    esc(check.to.as_deref().unwrap_or("")),
                    hop.hop.as_str(),
                    hop.cause.map(|c| c.as_str()).unwrap_or(""),
                    esc(&hop.detail)
                )?;
            }
        }

        let hints: Vec<String> = report
            .checks
            .iter()
            .flat_map(|c| {
                c.hops
                    .iter()
                    .filter(|h| h.needs_attention())
                    .filter_map(move |h| {
                        h.hint.as_ref().map(|hint| {
                            format!("- **{}** / {}: {}", esc(&c.name), h.hop.as_str(), esc(hint))
                        })
                    })
            })
            .collect();
        if !hints.is_empty() {
            writeln!(out, "\n## Hints\n")?;
            for h in hints {
                writeln!(out, "{h}")?;
            }
        }

        if let Some(diff) = ctx.baseline {
            // The text comparison as-is, fenced: it is already aligned plain text.
            let mut text = Vec::new();
            crate::baseline::render_text(diff, &mut text)?;
            let text = String::from_utf8_lossy(&text).replace("```", "'''");
            writeln!(
                out,
                "\n## Baseline comparison\n\n```text\n{}\n```",
                text.trim()
            )?;
        }
        Ok(())
    }
}
