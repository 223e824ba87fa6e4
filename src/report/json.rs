//! `-f json`: the stable report schema of docs/report.md, plus the additive fields derived from it:
//! `firewall_requests` (always; see [`crate::verdict`]) and `baseline` when the run was compared
//! with an earlier report.

use std::io::{self, Write};

use serde::Serialize;

use super::exporter::{Exporter, RenderContext};
use crate::baseline::BaselineDiff;
use crate::model::Report;

pub struct Json;

/// The report with the derived top-level fields after the report's own.
#[derive(Serialize)]
struct JsonReport<'a> {
    #[serde(flatten)]
    report: &'a Report,
    firewall_requests: Vec<crate::verdict::FirewallRequest>,
    #[serde(skip_serializing_if = "Option::is_none")]
    baseline: Option<&'a BaselineDiff>,
}

impl Exporter for Json {
    fn render(
        &self,
        report: &Report,
        ctx: &RenderContext<'_>,
        out: &mut dyn Write,
    ) -> io::Result<()> {
        let full = JsonReport {
            report,
            firewall_requests: crate::verdict::firewall_requests(report),
            baseline: ctx.baseline,
        };
        // serde_json writes a few bytes at a time: through a buffer of concrete type its
        // writes are inlined copies, not a dynamic call each into `out` (19 MB at 10,000 checks).
        let mut buffered = io::BufWriter::with_capacity(64 * 1024, &mut *out);
        serde_json::to_writer_pretty(&mut buffered, &full)?;
        writeln!(buffered)?;
        buffered.flush()
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
        let object = expected.as_object_mut().unwrap();
        object.insert("firewall_requests".into(), json!([]));
        object.insert("baseline".into(), serde_json::to_value(&diff).unwrap());
        let expected = format!("{}\n", serde_json::to_string_pretty(&expected).unwrap());
        let text = render(&report, Some(&diff));
        assert_eq!(text, expected);
        assert!(text.contains("\"new\": [\n      \"a\"\n    ]"), "{text}");

        let plain = render(&report, None);
        assert!(!plain.contains("\"baseline\""), "{plain}");
        let mut expected = serde_json::to_value(&report).unwrap();
        expected
            .as_object_mut()
            .unwrap()
            .insert("firewall_requests".into(), json!([]));
        assert_eq!(
            plain,
            format!("{}\n", serde_json::to_string_pretty(&expected).unwrap())
        );
    }
}
