//! `-f human`: a table (check, zones, hop, status, cause, time, detail) with the hint printed
//! under each hop that did not pass, then the summary and the baseline comparison when there is
//! one.
//!
//! The table fits the width it is given (the terminal's, or `COLUMNS`): the detail column takes
//! what is left and wraps at spaces, and a long check name (an ad-hoc `epm://...?iface=` URL)
//! wraps onto the following lines; the status, cause and time are never cut. Without a width
//! (a file, a pipe) lines are kept whole for grep. A hand-written layout rather than a table
//! crate: the rows are simple, the hint lines span the table, and colour codes must not count
//! towards the width, which is easy to get right here and saves a dependency.
//!
//! Colour only when the render context asks (`--color`, a TTY, NO_COLOR, TERM=dumb: decided by
//! the caller). `--quiet` keeps only the hops that failed or warned, then the summary.

use std::io::{self, Write};
use std::time::Duration;

use super::exporter::{Exporter, RenderContext};
use crate::model::{CheckResult, Direction, HopResult, Report, Status};

pub struct Human;

fn status_label(s: Status) -> &'static str {
    match s {
        Status::Pass => "pass",
        Status::Warn => "WARN",
        Status::Fail => "FAIL",
        Status::Skip => "skip",
    }
}

pub(crate) fn colour_code(s: Status) -> &'static str {
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

/// `1 check`, `2 checks`.
pub fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Wraps `text` to `width` columns, breaking at spaces; a word longer than the width is cut into
/// pieces (nothing is ever dropped).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let width = width.max(1);
    let mut lines = Vec::new();
    let mut line = String::new();
    let mut line_len = 0;
    for word in text.split_whitespace() {
        let mut word: Vec<char> = word.chars().collect();
        while !word.is_empty() {
            let room = if line_len == 0 {
                width
            } else {
                width.saturating_sub(line_len + 1)
            };
            if word.len() <= room {
                if line_len > 0 {
                    line.push(' ');
                    line_len += 1;
                }
                line.extend(word.iter());
                line_len += word.len();
                break;
            }
            if line_len > 0 {
                lines.push(std::mem::take(&mut line));
                line_len = 0;
                continue;
            }
            // Longer than a whole line: cut.
            let rest = word.split_off(width);
            lines.push(word.iter().collect());
            word = rest;
        }
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

/// Cuts `text` into pieces of at most `width` characters (names and URLs have no spaces to wrap
/// at).
fn chunks(text: &str, width: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    if chars.is_empty() {
        return vec![String::new()];
    }
    chars
        .chunks(width.max(1))
        .map(|c| c.iter().collect())
        .collect()
}

/// `web -> sql`; an unknown side is `?`. Empty when neither side is known.
pub fn zones(check: &CheckResult) -> String {
    match (&check.from, &check.to) {
        (None, None) => String::new(),
        (f, t) => format!(
            "{} -> {}",
            f.as_deref().unwrap_or("?"),
            t.as_deref().unwrap_or("?")
        ),
    }
}

fn hop_label(check: &CheckResult, hop: &HopResult) -> String {
    match check.direction {
        Direction::Reverse => format!("{} (rev)", hop.hop.as_str()),
        Direction::Forward => hop.hop.as_str().to_string(),
    }
}

/// Whether `--quiet` keeps this hop.
fn shown(hop: &HopResult, quiet: bool) -> bool {
    !quiet || hop.needs_attention()
}

/// Column widths for the rows that will be printed.
struct Layout {
    name: usize,
    /// 0: no zone column (no check has zones).
    zones: usize,
    hop: usize,
    cause: usize,
    /// `None`: no limit.
    detail: Option<usize>,
    /// On a narrow terminal the detail goes on the lines under its row (indented like the
    /// hints) instead of in a column too narrow to read.
    detail_below: bool,
}

const GAP: usize = 2;
const STATUS_W: usize = 6;
const TIME_W: usize = 7;
/// The detail column never gets narrower than this; below it, the detail moves under its row.
const MIN_DETAIL: usize = 24;
/// Names up to this long are never wrapped; longer ones (ad-hoc URLs) give way to the detail
/// down to this width, or to a third of the line.
const MIN_NAME: usize = 24;

impl Layout {
    fn for_rows(report: &Report, quiet: bool, width: Option<usize>) -> Layout {
        let rows = || {
            report
                .checks
                .iter()
                .flat_map(|c| c.hops.iter().map(move |h| (c, h)))
                .filter(|(_, h)| shown(h, quiet))
        };
        let name = rows()
            .map(|(c, _)| c.name.chars().count())
            .max()
            .unwrap_or(0)
            .max("CHECK".len());
        let zones = rows()
            .map(|(c, _)| zones(c).chars().count())
            .max()
            .unwrap_or(0);
        let zones = if zones == 0 {
            0
        } else {
            zones.max("ZONES".len())
        };
        let hop = rows()
            .map(|(c, h)| hop_label(c, h).len())
            .max()
            .unwrap_or(0)
            .max("HOP".len());
        let cause = rows()
            .filter_map(|(_, h)| h.cause.map(|c| c.as_str().len()))
            .max()
            .unwrap_or(0)
            .max("CAUSE".len());
        let mut layout = Layout {
            name,
            zones,
            hop,
            cause,
            detail: None,
            detail_below: false,
        };
        if let Some(width) = width {
            let fixed = |l: &Layout| {
                l.name
                    + GAP
                    + if l.zones > 0 { l.zones + GAP } else { 0 }
                    + l.hop
                    + GAP
                    + STATUS_W
                    + GAP
                    + l.cause
                    + GAP
                    + TIME_W
                    + GAP
            };
            if width < fixed(&layout) + MIN_DETAIL {
                // A long name (an ad-hoc URL) wraps first, down to MIN_NAME or a third of the line.
                let over = fixed(&layout) + MIN_DETAIL - width;
                let floor = MIN_NAME.max(width / 3).min(name);
                layout.name = layout.name.saturating_sub(over).max(floor);
            }
            // Still too wide for the fixed columns alone: the name wraps harder (down to 12).
            if fixed(&layout) > width + GAP {
                let over = fixed(&layout) - width - GAP;
                layout.name = layout.name.saturating_sub(over).max(12.min(name));
            }
            let left = width.saturating_sub(fixed(&layout));
            if left >= MIN_DETAIL {
                layout.detail = Some(left);
            } else {
                layout.detail_below = true;
                layout.detail = Some(width.saturating_sub(layout.hint_indent()).max(MIN_DETAIL));
            }
        }
        layout
    }

    /// The hint's indent and width.
    fn hint_indent(&self) -> usize {
        self.name + GAP
    }
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
        let layout = Layout::for_rows(report, ctx.quiet, ctx.width);
        let any_row = report
            .checks
            .iter()
            .any(|c| c.hops.iter().any(|h| shown(h, ctx.quiet)));
        if any_row {
            write_row(
                out,
                &layout,
                ["CHECK", "ZONES", "HOP"],
                "STATUS",
                "CAUSE",
                "TIME",
                if layout.detail_below { "" } else { "DETAIL" },
            )?;
        }
        for check in &report.checks {
            let hops: Vec<&HopResult> = check.hops.iter().filter(|h| shown(h, ctx.quiet)).collect();
            let mut name_lines = chunks(&check.name, layout.name).into_iter();
            let zone_text = zones(check);
            for (i, hop) in hops.iter().enumerate() {
                let first = i == 0;
                let detail_lines = match layout.detail {
                    Some(w) => wrap(&hop.detail, w),
                    None => vec![hop.detail.clone()],
                };
                let time = if hop.status == Status::Skip {
                    String::new()
                } else {
                    format_seconds(hop.duration_seconds)
                };
                // Pad before painting so escape codes do not break the alignment.
                let status = paint(
                    hop.status,
                    &format!("{:<STATUS_W$}", status_label(hop.status)),
                );
                let (detail_lines, below) = if layout.detail_below {
                    (Vec::new(), detail_lines)
                } else {
                    (detail_lines, Vec::new())
                };
                let lines = detail_lines.len().max(1);
                for line in 0..lines {
                    // The name's pieces go on the check's first lines; the last hop takes any
                    // pieces left over.
                    let name = name_lines.next().unwrap_or_default();
                    let detail = detail_lines.get(line).map(String::as_str).unwrap_or("");
                    if line == 0 {
                        write_row(
                            out,
                            &layout,
                            [
                                &name,
                                if first { zone_text.as_str() } else { "" },
                                &hop_label(check, hop),
                            ],
                            &status,
                            hop.cause.map(|c| c.as_str()).unwrap_or(""),
                            &time,
                            detail,
                        )?;
                    } else {
                        write_row(out, &layout, [&name, "", ""], "", "", "", detail)?;
                    }
                }
                for text in &below {
                    let name = name_lines.next().unwrap_or_default();
                    let indent = layout.hint_indent();
                    let line = format!("{name:<w$}  {text}", w = layout.name);
                    debug_assert!(line.len() >= indent);
                    writeln!(out, "{}", line.trim_end())?;
                }
                if i + 1 == hops.len() {
                    for name in name_lines.by_ref() {
                        write_row(out, &layout, [&name, "", ""], "", "", "", "")?;
                    }
                }
                if hop.needs_attention() {
                    if let Some(hint) = &hop.hint {
                        let indent = layout.hint_indent();
                        let hint_w = ctx
                            .width
                            .map(|w| w.saturating_sub(indent + "hint: ".len()).max(30))
                            .unwrap_or(90);
                        for (i, line) in wrap(hint, hint_w).iter().enumerate() {
                            let lead = if i == 0 { "hint: " } else { "      " };
                            writeln!(out, "{:indent$}{lead}{line}", "")?;
                        }
                    }
                }
            }
        }
        // `--list-endpoints`: the mapper's entries, like PortQry -e 135 / rpcdump.
        if !ctx.quiet {
            for check in &report.checks {
                super::endpoints::write_endpoint_listing(check, out)?;
            }
        }
        let s = &report.summary;
        // Each count in its own colour, and only when it is not zero: a green "0 pass" or a red
        // "0 fail" would draw the eye to nothing.
        let count = |n: usize, status: Status, word: &str| {
            let text = format!("{n} {word}");
            if n > 0 && status != Status::Skip {
                paint(status, &text)
            } else {
                text
            }
        };
        writeln!(
            out,
            "{}{}: {}, {}, {}, {} in {}",
            if any_row { "\n" } else { "" },
            plural(report.checks.len(), "check", "checks"),
            count(s.pass, Status::Pass, "pass"),
            count(s.warn, Status::Warn, "warn"),
            count(s.fail, Status::Fail, "fail"),
            count(s.skip, Status::Skip, "skip"),
            format_seconds(report.duration_seconds)
        )?;
        if let Some(diff) = ctx.baseline {
            crate::baseline::render_text(diff, out)?;
        }
        write_verdict(report, ctx.width, out)
    }
}

/// The last lines of the report: the verdict a sysadmin pastes into a ticket (see
/// [`crate::verdict`]), plain text so it survives copy and paste. On a terminal of known width a
/// long line wraps at spaces, its continuation indented further, like the table's details.
pub fn write_verdict(report: &Report, width: Option<usize>, out: &mut dyn Write) -> io::Result<()> {
    writeln!(out, "\nverdict:")?;
    for line in crate::verdict::verdict_lines(report) {
        match width {
            Some(w) if line.chars().count() + 2 > w => {
                for (i, part) in wrap(&line, w.saturating_sub(4).max(20)).iter().enumerate() {
                    let indent = if i == 0 { "  " } else { "    " };
                    writeln!(out, "{indent}{part}")?;
                }
            }
            _ => writeln!(out, "  {line}")?,
        }
    }
    Ok(())
}

/// One line of the table: `cells` are check, zones and hop; the status is given already padded
/// (and maybe painted), so it is written as is. Trailing spaces are trimmed.
fn write_row(
    out: &mut dyn Write,
    layout: &Layout,
    cells: [&str; 3],
    status: &str,
    cause: &str,
    time: &str,
    detail: &str,
) -> io::Result<()> {
    let [name, zones, hop] = cells;
    let mut line = format!("{name:<w$}  ", w = layout.name);
    if layout.zones > 0 {
        line.push_str(&format!("{zones:<w$}  ", w = layout.zones));
    }
    line.push_str(&format!("{hop:<w$}  ", w = layout.hop));
    if status.is_empty() {
        line.push_str(&" ".repeat(STATUS_W));
    } else {
        line.push_str(status);
    }
    line.push_str(&format!(
        "  {cause:<cw$}  {time:>TIME_W$}  {detail}",
        cw = layout.cause
    ));
    writeln!(out, "{}", line.trim_end())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::*;
    use std::time::SystemTime;

    fn report(name: &str, detail: &str, from: Option<&str>) -> Report {
        let hops = vec![
            HopResult::pass(HopKind::Resolve, "db -> 198.18.0.2")
                .with_duration(Duration::from_millis(2)),
            HopResult::fail(HopKind::Tcp, Cause::Timeout, detail)
                .with_hint("packets silently dropped"),
        ];
        let check = CheckResult {
            name: name.into(),
            kind: "tcp".into(),
            target: "tcp://db:1433".into(),
            from: from.map(Into::into),
            to: from.map(|_| "sql".into()),
            direction: Direction::Forward,
            status: CheckResult::status_of(&hops),
            hops,
        };
        Report::new(
            SystemTime::now(),
            Duration::from_millis(5),
            "h".into(),
            vec![check],
        )
    }

    fn render(report: &Report, ctx: &RenderContext<'_>) -> String {
        let mut buf = Vec::new();
        Human.render(report, ctx, &mut buf).unwrap();
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn table_has_hint_under_failure_and_no_colour_when_off() {
        let report = report("web-to-sql", "timed out", None);
        let text = render(&report, &RenderContext::default());
        assert!(text.contains("FAIL"), "{text}");
        assert!(text.contains("hint: packets silently dropped"), "{text}");
        assert!(!text.contains('\x1b'));
        assert!(
            !text.contains("ZONES"),
            "no zone column without zones: {text}"
        );
        assert!(text.contains("1 check: 0 pass, 0 warn, 1 fail"), "{text}");
        let color = RenderContext {
            color: true,
            ..RenderContext::default()
        };
        let text = render(&report, &color);
        assert!(text.contains("\x1b[31;1mFAIL"), "{text}");
        // The summary: the fail count red; zero counts unpainted.
        assert!(text.contains("\x1b[31;1m1 fail\x1b[0m"), "{text}");
        assert!(text.contains(": 0 pass,"), "{text}");
    }

    #[test]
    fn zones_and_width() {
        let long_name =
            "epm://sql01.corp.example:135?iface=4d9f4ab8-7d1c-11cf-861e-0020af6e7c57/v1.0";
        let detail = "no answer from 198.18.2.2:49153 within 3s, the connection attempt timed out \
                      while the endpoint mapper had answered on 135";
        let report = report(long_name, detail, Some("web"));
        let ctx = RenderContext {
            width: Some(100),
            ..RenderContext::default()
        };
        let text = render(&report, &ctx);
        assert!(text.contains("ZONES"), "{text}");
        assert!(text.contains("web -> sql"), "{text}");
        for line in text.lines() {
            assert!(line.chars().count() <= 100, "{} > 100: {line}", line.len());
        }
        // Narrow: the detail moves under its row, still within the width, still whole.
        let narrow = RenderContext {
            width: Some(70),
            ..RenderContext::default()
        };
        let text70 = render(&report, &narrow);
        for line in text70.lines() {
            assert!(line.chars().count() <= 70, "{} > 70: {line}", line.len());
        }
        let flat70: String = text70.split_whitespace().collect();
        for word in detail.split_whitespace() {
            assert!(flat70.contains(word), "{word} missing: {text70}");
        }
        // Nothing lost: every word of the detail and every piece of the name is there.
        let flat: String = text.split_whitespace().collect();
        for word in detail.split_whitespace() {
            assert!(flat.contains(word), "{word} missing: {text}");
        }
        // The name column (up to where the header's ZONES starts), read down the table.
        let name_w = text.lines().next().unwrap().find("ZONES").unwrap();
        let name_pieces: String = text
            .lines()
            .skip(1)
            .take_while(|l| !l.trim().is_empty())
            .filter(|l| !l.trim_start().starts_with("hint:"))
            .map(|l| {
                l.chars()
                    .take(name_w)
                    .collect::<String>()
                    .trim()
                    .to_string()
            })
            .collect();
        assert_eq!(name_pieces, long_name, "{text}");
        // Status is never cut.
        assert!(text.contains("FAIL"), "{text}");
    }

    #[test]
    fn quiet_keeps_only_failures() {
        let report = report("web-to-sql", "timed out", None);
        let ctx = RenderContext {
            quiet: true,
            ..RenderContext::default()
        };
        let text = render(&report, &ctx);
        assert!(!text.contains("resolve"), "{text}");
        assert!(text.contains("FAIL"), "{text}");
        assert!(text.contains("1 check:"), "{text}");
    }

    #[test]
    fn wraps_at_spaces_and_cuts_long_words() {
        assert_eq!(wrap("aa bb cc", 5), vec!["aa bb", "cc"]);
        assert_eq!(wrap("abcdefg h", 3), vec!["abc", "def", "g h"]);
        assert_eq!(plural(1, "round", "rounds"), "1 round");
        assert_eq!(plural(2, "round", "rounds"), "2 rounds");
    }
}
