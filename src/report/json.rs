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
        let mut serializer =
            serde_json::Serializer::with_formatter(&mut buffered, PrettyLines::default());
        full.serialize(&mut serializer)?;
        writeln!(buffered)?;
        buffered.flush()
    }
}

/// serde_json's `PrettyFormatter` (two spaces), byte for byte, with each line break and its
/// indentation written at once: serde_json writes the indentation one level at a time, six or
/// seven writes for every line of a hop's data, and a 10,000-check report has 600,000 lines.
#[derive(Default)]
struct PrettyLines {
    depth: usize,
    has_value: bool,
}

impl PrettyLines {
    /// `,` (unless first), a line break and the indentation of the current depth.
    fn new_line<W: ?Sized + Write>(&self, writer: &mut W, first: bool) -> io::Result<()> {
        const LINE: &[u8] = b",\n                                                                ";
        let line = &LINE[usize::from(first)..];
        let width = usize::from(!first) + 1 + 2 * self.depth;
        match line.get(..width) {
            Some(bytes) => writer.write_all(bytes),
            // Deeper than the spaces above (no report is): the rest one level at a time.
            None => {
                writer.write_all(line)?;
                for _ in 0..(width - line.len()) / 2 {
                    writer.write_all(b"  ")?;
                }
                Ok(())
            }
        }
    }
}

impl PrettyLines {
    fn open<W: ?Sized + Write>(&mut self, writer: &mut W, bracket: &[u8]) -> io::Result<()> {
        self.depth += 1;
        self.has_value = false;
        writer.write_all(bracket)
    }

    fn close<W: ?Sized + Write>(&mut self, writer: &mut W, bracket: &[u8]) -> io::Result<()> {
        self.depth -= 1;
        if self.has_value {
            self.new_line(writer, true)?;
        }
        writer.write_all(bracket)
    }
}

impl serde_json::ser::Formatter for PrettyLines {
    fn begin_array<W: ?Sized + Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.open(writer, b"[")
    }

    fn end_array<W: ?Sized + Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.close(writer, b"]")
    }

    fn begin_array_value<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.new_line(writer, first)
    }

    fn end_array_value<W: ?Sized + Write>(&mut self, _writer: &mut W) -> io::Result<()> {
        self.has_value = true;
        Ok(())
    }

    fn begin_object<W: ?Sized + Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.open(writer, b"{")
    }

    fn end_object<W: ?Sized + Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.close(writer, b"}")
    }

    fn begin_object_key<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.new_line(writer, first)
    }

    fn begin_object_value<W: ?Sized + Write>(&mut self, writer: &mut W) -> io::Result<()> {
        writer.write_all(b": ")
    }

    fn end_object_value<W: ?Sized + Write>(&mut self, _writer: &mut W) -> io::Result<()> {
        self.has_value = true;
        Ok(())
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

    /// The line formatter writes what serde_json's pretty printer writes, at every depth (also
    /// past the spaces it keeps), for empty and nested arrays and objects.
    #[test]
    fn pretty_lines_is_serde_jsons_pretty_printer() {
        let mut deep = json!({"leaf": [1, {"a": []}, {}], "s": "x\ny"});
        for i in 0..40 {
            deep = json!({ format!("level{i}"): [deep, i, null, {"k": true}] });
        }
        for value in [
            json!({}),
            json!([]),
            json!([[]]),
            json!({"a": {}}),
            json!(1),
            deep,
        ] {
            let mut ours = Vec::new();
            let mut ser = serde_json::Serializer::with_formatter(&mut ours, PrettyLines::default());
            value.serialize(&mut ser).unwrap();
            assert_eq!(
                String::from_utf8(ours).unwrap(),
                serde_json::to_string_pretty(&value).unwrap()
            );
        }
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
