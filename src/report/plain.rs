//! `-f plain`: one tab-separated line per hop, no colour, no alignment: for grep, awk and logs.
//! Columns: check, hop, status, cause (`-` when none), seconds, detail, from zone, to zone (`-`
//! when unknown; the zones come last so that scripts reading the first six columns keep
//! working). `--quiet`: only the hops that failed or warned. With `--baseline`, the comparison
//! section follows the summary line.

use std::io::{self, Write};

use super::exporter::{Exporter, RenderContext};
use crate::model::Report;

pub struct Plain;

/// Tabs and newlines inside a field would break the columns.
fn field(s: &str) -> String {
    s.replace(['\t', '\n', '\r'], " ")
}

impl Exporter for Plain {
    fn render(
        &self,
        report: &Report,
        ctx: &RenderContext<'_>,
        out: &mut dyn Write,
    ) -> io::Result<()> {
        for check in &report.checks {
            let zone = |z: &Option<String>| z.as_deref().map(field).unwrap_or_else(|| "-".into());
            for hop in &check.hops {
                if ctx.quiet && !hop.needs_attention() {
                    continue;
                }
                writeln!(
                    out,
                    "{}\t{}\t{}\t{}\t{:.3}\t{}\t{}\t{}",
                    field(&check.name),
                    hop.hop.as_str(),
                    hop.status.as_str(),
                    hop.cause.map(|c| c.as_str()).unwrap_or("-"),
                    hop.duration_seconds.as_secs_f64(),
                    field(&hop.detail),
                    zone(&check.from),
                    zone(&check.to)
                )?;
            }
        }
        // `--list-endpoints`: one line per mapper entry, columns: check, `endpoint`, uuid,
        // version, binding, annotation.
        for check in report.checks.iter().filter(|_| !ctx.quiet) {
            let entries = check
                .hops
                .iter()
                .filter_map(|h| h.data.get("entries").and_then(|e| e.as_array()))
                .flatten();
            for e in entries {
                let text = |k: &str| field(e.get(k).and_then(|v| v.as_str()).unwrap_or(""));
                writeln!(
                    out,
                    "{}\tendpoint\t{}\t{}\t{}\t{}",
                    field(&check.name),
                    text("uuid"),
                    text("version"),
                    text("binding"),
                    text("annotation")
                )?;
            }
        }
        let s = &report.summary;
        writeln!(
            out,
            "summary\tpass={}\twarn={}\tfail={}\tskip={}",
            s.pass, s.warn, s.fail, s.skip
        )?;
        if let Some(diff) = ctx.baseline {
            crate::baseline::render_text(diff, out)?;
        }
        Ok(())
    }
}
