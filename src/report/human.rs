//! `-f human`: an aligned table (check, hop, status, cause, time, detail) with the hint printed
//! under each hop that did not pass, then the baseline comparison when there is one. Colour only
//! when the render context asks (the caller decides: TTY and no NO_COLOR).

use std::io::{self, Write};
use std::time::Duration;

use super::{Exporter, RenderContext};
use crate::model::{Report, Status};

pub struct Human;

fn status_label(s: Status) -> &'static str {
    match s {
        Status::Pass => "pass",
        Status::Warn => "WARN",
        Status::Fail => "FAIL",
        Status::Skip => "skip",
    }
}

fn colour_code(s: Status) -> &'static str {
    match s {
        Status::Pass => "32",
        Status::Warn => "33",
        Status::Fail => "31;1",
        Status::Skip => "2",
    }
}

pub fn format_seconds(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 1000.0 {
        format!("{ms:.0}ms")
    } else {
        format!("{:.2}s", d.as_secs_f64())
    }
}

/// Wraps `text` to `width` columns, breaking at spaces.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

impl Exporter for Human {
    fn render(
        &self,
        report: &Report,
        ctx: &RenderContext<'_>,
        out: &mut dyn Write,
    ) -> io::Result<()> {
        let paint = |s: Status, text: &str| {
            if ctx.color {
                format!("\x1b[{}m{text}\x1b[0m", colour_code(s))
            } else {
                text.to_string()
            }
        };
        let name_w = report
            .checks
            .iter()
            .map(|c| c.name.chars().count())
            .max()
            .unwrap_or(5)
            .clamp(5, 80);
        let hop_w = 14;
        let cause_w = 18;
        writeln!(
            out,
            "{:<name_w$}  {:<hop_w$}  {:<6}  {:<cause_w$}  {:>7}  DETAIL",
            "CHECK", "HOP", "STATUS", "CAUSE", "TIME"
        )?;
        for check in &report.checks {
            let mut first = true;
            let zones = match (&check.from, &check.to) {
                (Some(f), Some(t)) => format!(" ({f} -> {t})"),
                _ => String::new(),
            };
            for hop in &check.hops {
                let name = if first { check.name.as_str() } else { "" };
                first = false;
                let hop_name = match check.direction {
                    crate::model::Direction::Reverse => {
                        format!("{} (rev)", hop.hop.as_str())
                    }
                    crate::model::Direction::Forward => hop.hop.as_str().to_string(),
                };
                // Pad before painting so escape codes do not break the alignment.
                let status = paint(hop.status, &format!("{:<6}", status_label(hop.status)));
                writeln!(
                    out,
                    "{name:<name_w$}  {hop_name:<hop_w$}  {status}  {:<cause_w$}  {:>7}  {}",
                    hop.cause.map(|c| c.as_str()).unwrap_or(""),
                    if hop.status == Status::Skip {
                        String::new()
                    } else {
                        format_seconds(hop.duration_seconds)
                    },
                    hop.detail
                )?;
                if matches!(hop.status, Status::Fail | Status::Warn) {
                    if let Some(hint) = &hop.hint {
                        for (i, line) in wrap(hint, 90).iter().enumerate() {
                            let lead = if i == 0 { "hint: " } else { "      " };
                            writeln!(out, "{:w$}{lead}{line}", "", w = name_w + 2)?;
                        }
                    }
                }
            }
            if !zones.is_empty() && check.hops.is_empty() {
                writeln!(out, "{}{zones}", check.name)?;
            }
        }
        // `--list-endpoints`: the mapper's entries, like PortQry -e 135 / rpcdump.
        for check in &report.checks {
            super::endpoints::write_endpoint_listing(check, out)?;
        }
        let s = &report.summary;
        let overall = if s.fail > 0 {
            Status::Fail
        } else if s.warn > 0 {
            Status::Warn
        } else {
            Status::Pass
        };
        writeln!(
            out,
            "\n{} checks: {} pass, {} warn, {} fail, {} skip in {}",
            report.checks.len(),
            paint(overall, &s.pass.to_string()),
            s.warn,
            s.fail,
            s.skip,
            format_seconds(report.duration_seconds)
        )?;
        if let Some(diff) = ctx.baseline {
            crate::baseline::render_text(diff, out)?;
        }
        write_verdict(report, out)
    }
}

/// The last lines of the report: the verdict a sysadmin pastes into a ticket (see
/// [`crate::verdict`]), plain text so it survives copy and paste.
pub fn write_verdict(report: &Report, out: &mut dyn Write) -> io::Result<()> {
    writeln!(out, "\nverdict:")?;
    for line in crate::verdict::verdict_lines(report) {
        writeln!(out, "  {line}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::*;
    use std::time::SystemTime;

    #[test]
    fn table_has_hint_under_failure_and_no_colour_when_off() {
        let hops = vec![
            HopResult::pass(HopKind::Resolve, "db -> 198.18.0.2")
                .with_duration(Duration::from_millis(2)),
            HopResult::fail(HopKind::Tcp, Cause::Timeout, "timed out")
                .with_hint("packets silently dropped"),
        ];
        let check = CheckResult {
            name: "web-to-sql".into(),
            kind: "tcp".into(),
            target: "tcp://db:1433".into(),
            from: None,
            to: None,
            direction: Direction::Forward,
            status: CheckResult::status_of(&hops),
            hops,
        };
        let report = Report::new(
            SystemTime::now(),
            Duration::from_millis(5),
            "h".into(),
            vec![check],
        );
        let mut buf = Vec::new();
        Human
            .render(&report, &RenderContext::default(), &mut buf)
            .unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert!(text.contains("FAIL"), "{text}");
        assert!(text.contains("hint: packets silently dropped"), "{text}");
        assert!(!text.contains('\x1b'));
        let mut buf = Vec::new();
        let color = RenderContext {
            color: true,
            baseline: None,
        };
        Human.render(&report, &color, &mut buf).unwrap();
        assert!(String::from_utf8(buf).unwrap().contains("\x1b[31;1m"));
    }

    #[test]
    fn wraps_at_spaces() {
        assert_eq!(wrap("aa bb cc", 5), vec!["aa bb", "cc"]);
    }
}
