//! `-f json`: the stable report schema of DESIGN.md, plus the additive `baseline` field when the
//! run was compared with an earlier report.

use std::io::{self, Write};

use serde::Serialize;

use super::{Exporter, RenderContext};
use crate::baseline::BaselineDiff;
use crate::model::Report;

pub struct Json;

/// The report with its baseline comparison as one more top-level field, after the report's own.
#[derive(Serialize)]
struct WithBaseline<'a> {
    #[serde(flatten)]
    report: &'a Report,
    baseline: &'a BaselineDiff,
}

impl Exporter for Json {
    fn render(
        &self,
        report: &Report,
        ctx: &RenderContext<'_>,
        out: &mut dyn Write,
    ) -> io::Result<()> {
        match ctx.baseline {
            None => serde_json::to_writer_pretty(&mut *out, report)?,
            Some(baseline) => {
                serde_json::to_writer_pretty(&mut *out, &WithBaseline { report, baseline })?
            }
        }
        writeln!(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Cause, CheckResult, HopKind, HopResult};
    use serde_json::json;
    use std::time::{Duration, SystemTime};

    fn render(report: &Report, baseline: Option<&BaselineDiff>) -> String {
        let ctx = RenderContext {
            baseline,
            ..RenderContext::default()
        };
        let mut buf = Vec::new();
        Json.render(report, &ctx, &mut buf).unwrap();
        String::from_utf8(buf).unwrap()
    }

    /// The typed field gives byte for byte what adding `baseline` to the report's JSON object
    /// gives: the report's own fields in schema order, then `baseline`.
    #[test]
    fn baseline_is_the_last_top_level_field() {
        let hops = vec![
            HopResult::pass(HopKind::Resolve, "db").with_data("addresses", json!(["198.18.0.1"])),
            HopResult::fail(HopKind::Tcp, Cause::Refused, "RST"),
        ];
        let check = CheckResult::new("a", "tcp", "tcp://db:1", hops);
        let report = Report::new(
            SystemTime::UNIX_EPOCH,
            Duration::from_millis(1500),
            "h".into(),
            vec![check],
        );
        let before = Report::new(SystemTime::UNIX_EPOCH, Duration::ZERO, "qa".into(), vec![]);
        let diff = crate::baseline::diff(&before, &report);

        let mut expected = serde_json::to_value(&report).unwrap();
        expected
            .as_object_mut()
            .unwrap()
            .insert("baseline".into(), serde_json::to_value(&diff).unwrap());
        let expected = format!("{}\n", serde_json::to_string_pretty(&expected).unwrap());
        let text = render(&report, Some(&diff));
        assert_eq!(text, expected);
        assert!(text.contains("\"new\": [\n      \"a\"\n    ]"), "{text}");

        let plain = render(&report, None);
        assert!(!plain.contains("\"baseline\""), "{plain}");
        assert_eq!(
            plain,
            format!("{}\n", serde_json::to_string_pretty(&report).unwrap())
        );
    }
}
