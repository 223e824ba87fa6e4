//! The outputs of one run: the report on stdout, `--output FORMAT=PATH` (repeatable) and
//! `--textfile-dir DIR`.
//!
//! Every file is written atomically: the content goes to a temporary file in the same directory,
//! which is then renamed over the destination, so a reader (node_exporter's textfile collector,
//! a CI step) never sees a half-written file. `PATH` `-` means stdout.
//!
//! [`OutputPlan`] is resolved with the rest of the plan, before the run; [`emit`] writes the
//! report of a finished run and leaves every format-specific choice to the format's exporter.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use clap::ValueEnum;

use super::atomic::write_atomic_with;
pub use super::atomic::{write_atomic, OutputError};
use super::firewall_request::FirewallRequestSpec;
use super::{exporter_for, Format, RenderContext};
use crate::baseline::{self, BaselineDiff, BaselineError};
use crate::exit::{self, FailOn};
use crate::model::Report;

/// The file written into `--textfile-dir` (node_exporter / windows_exporter read `*.prom`).
pub const TEXTFILE_NAME: &str = "dtcprobe.prom";

/// `--textfile-name`: a plain file name ending in `.prom` (the collectors read only those), with
/// no directory part (the directory is `--textfile-dir`) and not hidden (collectors skip
/// dot-files, and the temporary file of an atomic write is one).
pub fn textfile_name_arg(name: &str) -> Result<String, TextfileNameError> {
    let bad = |why| {
        Err(TextfileNameError {
            name: name.into(),
            why,
        })
    };
    if name.contains(['/', '\\']) || name == "." || name == ".." {
        return bad("is not a plain file name (the directory is --textfile-dir)");
    }
    if name.starts_with('.') {
        return bad("starts with a dot: the textfile collector skips hidden files");
    }
    if !name.ends_with(".prom") || name.len() <= ".prom".len() {
        return bad("must end in .prom: the textfile collector reads only *.prom");
    }
    Ok(name.to_string())
}

/// A `--textfile-name` the textfile collector would not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name:?} {why}")]
pub struct TextfileNameError {
    pub name: String,
    pub why: &'static str,
}

/// One `--output FORMAT=PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputSpec {
    pub format: Format,
    pub path: PathBuf,
}

impl FromStr for OutputSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (format, path) = s
            .split_once('=')
            .ok_or_else(|| format!("expected FORMAT=PATH (e.g. junit=report.xml), got {s:?}"))?;
        let format = Format::from_str(format.trim(), true).map_err(|_| {
            let names: Vec<String> = Format::value_variants()
                .iter()
                .filter_map(|f| f.to_possible_value().map(|v| v.get_name().to_string()))
                .collect();
            format!("unknown format {format:?}; one of: {}", names.join(", "))
        })?;
        if path.is_empty() {
            return Err("empty PATH in FORMAT=PATH".into());
        }
        Ok(OutputSpec {
            format,
            path: PathBuf::from(path),
        })
    }
}

/// How the report of a run is to be written, as asked for (plain values; nothing loaded yet).
#[derive(Debug, Clone)]
pub struct OutputRequest {
    /// The format on stdout.
    pub format: Format,
    /// Colours on stdout (the caller decides: `--color`, a TTY, NO_COLOR, TERM).
    pub color: bool,
    /// `--quiet`: only what failed or warned (human, plain).
    pub quiet: bool,
    /// `--output FORMAT=PATH`.
    pub outputs: Vec<OutputSpec>,
    /// `--textfile-dir DIR`.
    pub textfile_dir: Option<PathBuf>,
    /// `--firewall-request FORMAT=PATH`.
    pub firewall_requests: Vec<FirewallRequestSpec>,
    /// `--textfile-name NAME` (default [`TEXTFILE_NAME`]).
    pub textfile_name: String,
    pub fail_on: FailOn,
    /// `--baseline FILE`: an earlier JSON report to compare with.
    pub baseline: Option<PathBuf>,
}

/// How the report of a run is written, resolved before any check runs: the baseline is already
/// loaded, so a wrong `--baseline` fails at once instead of after a long run.
#[derive(Debug, Clone)]
pub struct OutputPlan {
    pub format: Format,
    pub color: bool,
    pub quiet: bool,
    pub outputs: Vec<OutputSpec>,
    pub textfile_dir: Option<PathBuf>,
    pub firewall_requests: Vec<FirewallRequestSpec>,
    pub textfile_name: String,
    pub fail_on: FailOn,
    /// The earlier report this run is compared with.
    pub baseline: Option<Report>,
}

impl OutputPlan {
    /// Loads what the request names (the baseline report).
    pub fn resolve(request: OutputRequest) -> Result<OutputPlan, BaselineError> {
        let baseline = request
            .baseline
            .as_deref()
            .map(baseline::load)
            .transpose()?;
        Ok(OutputPlan {
            format: request.format,
            color: request.color,
            quiet: request.quiet,
            outputs: request.outputs,
            textfile_dir: request.textfile_dir,
            firewall_requests: request.firewall_requests,
            textfile_name: request.textfile_name,
            fail_on: request.fail_on,
            baseline,
        })
    }
}

/// The write buffer between an exporter and its destination.
const STREAM_BUFFER: usize = 64 * 1024;

/// Renders `report` in `format` straight into `out`, through a buffer. Streamed rather than
/// rendered into memory first: the JSON of 10,000 checks is about 19 MB, which a whole-report
/// buffer added to the run's peak memory. A render fails only on a write error, or (JUnit, whose
/// XML is built before any of it is written) before writing anything, so a report is never cut
/// off by a failed render; files still appear only whole (see [`write_atomic_with`]).
fn render_to(
    report: &Report,
    format: Format,
    ctx: &RenderContext<'_>,
    out: &mut dyn Write,
) -> io::Result<()> {
    let mut out = io::BufWriter::with_capacity(STREAM_BUFFER, out);
    exporter_for(format).render(report, ctx, &mut out)?;
    out.flush()
}

/// Renders `report` in `format` on stdout.
fn render_to_stdout(report: &Report, format: Format, ctx: &RenderContext<'_>) -> io::Result<()> {
    let mut stdout = io::stdout().lock();
    render_to(report, format, ctx, &mut stdout)?;
    stdout.flush()
}

/// The exit code for a tool error found before the run (bad config 78, usage 2), whose message
/// is already on stderr; the format may have its own contract (a Nagios plugin says UNKNOWN on
/// stdout and exits 3).
pub fn pre_run_exit(format: Format, code: u8, message: &str) -> u8 {
    exporter_for(format).tool_error(code, message, &mut io::stdout().lock())
}

/// Everything after a `check` or `peer` run: compares with the baseline, writes the report on
/// stdout and every extra output, and returns the exit code (the stdout format's).
///
/// An output that cannot be written does not hide what the run found: every output is still
/// tried, each failure is named on stderr, and the exit code stays the run's own when that is
/// already a failure (1, or Nagios's 2); only a clean run becomes inconclusive (3), because what
/// was asked for was not delivered.
pub fn emit(report: &Report, plan: &OutputPlan) -> u8 {
    let diff = plan
        .baseline
        .as_ref()
        .map(|before| baseline::diff(before, report));
    let ctx = RenderContext {
        color: plan.color,
        baseline: diff.as_ref(),
        quiet: plan.quiet,
        width: super::width_for_stdout(),
    };
    let mut delivered = true;
    let written = render_to_stdout(report, plan.format, &ctx);
    if let Err(e) = written {
        // A closed pipe (`| head`) is not worth a scary message, but the run is not clean either.
        if e.kind() != io::ErrorKind::BrokenPipe {
            eprintln!("dtcprobe: cannot write the report to stdout: {e}");
        }
        delivered = false;
    }
    let textfile = plan
        .textfile_dir
        .as_deref()
        .map(|dir| (dir, plan.textfile_name.as_str()));
    for e in write_all_with(report, &plan.outputs, textfile, diff.as_ref()) {
        eprintln!("dtcprobe: {e} (the checks themselves ran; see the exit code)");
        delivered = false;
    }
    if let Err(e) = super::firewall_request::write_all(report, &plan.firewall_requests) {
        eprintln!("dtcprobe: {e} (the checks themselves ran; see the exit code)");
        delivered = false;
    }
    let code = exporter_for(plan.format).exit_code(report, plan.fail_on, diff.as_ref());
    combine_exit(code, delivered)
}

/// The exit code when some output was not delivered: the run's own code if it already says
/// something is wrong, else inconclusive.
pub fn combine_exit(run_code: u8, delivered: bool) -> u8 {
    if delivered || run_code != exit::OK {
        run_code
    } else {
        exit::INCONCLUSIVE
    }
}

/// Writes every `--output` and, if given, the textfile (`(dir, file name)`). Every output is
/// tried; returns the errors, one per output that could not be written.
pub fn write_all(
    report: &Report,
    specs: &[OutputSpec],
    textfile: Option<(&Path, &str)>,
) -> Vec<OutputError> {
    write_all_with(report, specs, textfile, None)
}

fn write_all_with(
    report: &Report,
    specs: &[OutputSpec],
    textfile: Option<(&Path, &str)>,
    diff: Option<&BaselineDiff>,
) -> Vec<OutputError> {
    let err = |format: Format, path: &Path| {
        let path = path.to_path_buf();
        move |source| OutputError::Write {
            format: format.name(),
            path,
            source,
        }
    };
    // Files never get colours, nor a terminal's width; they get the baseline comparison like
    // stdout does, and everything (no --quiet: a file is read later, in full).
    let ctx = RenderContext {
        color: false,
        baseline: diff,
        ..RenderContext::default()
    };
    let mut errors = Vec::new();
    for spec in specs {
        let result = if spec.path.as_os_str() == "-" {
            render_to_stdout(report, spec.format, &ctx)
        } else {
            write_atomic_with(&spec.path, |out| render_to(report, spec.format, &ctx, out))
        };
        if let Err(e) = result {
            errors.push(err(spec.format, &spec.path)(e));
        }
    }
    if let Some((dir, name)) = textfile {
        let path = dir.join(name);
        let result = write_atomic_with(&path, |out| {
            render_to(report, Format::Prometheus, &RenderContext::default(), out)
        });
        if let Err(e) = result {
            errors.push(err(Format::Prometheus, &path)(e));
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_specs() {
        let ok = [
            ("junit=out.xml", Format::Junit, "out.xml"),
            (
                "prometheus=/tmp/a=b.prom",
                Format::Prometheus,
                "/tmp/a=b.prom",
            ),
            ("JSON=-", Format::Json, "-"),
        ];
        for (s, f, p) in ok {
            let spec: OutputSpec = s.parse().unwrap();
            assert_eq!(spec.format, f, "{s}");
            assert_eq!(spec.path, PathBuf::from(p), "{s}");
        }
        for bad in ["junit", "xml=out.xml", "junit="] {
            assert!(bad.parse::<OutputSpec>().is_err(), "{bad}");
        }
    }

    #[test]
    fn textfile_names() {
        assert_eq!(textfile_name_arg("web.prom").unwrap(), "web.prom");
        for bad in ["a/b.prom", "..", ".x.prom", "x.txt", ".prom", "a\\b.prom"] {
            assert!(textfile_name_arg(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_undelivered_output_keeps_a_failing_code() {
        assert_eq!(combine_exit(exit::OK, true), exit::OK);
        assert_eq!(combine_exit(exit::OK, false), exit::INCONCLUSIVE);
        assert_eq!(combine_exit(exit::CHECK_FAILED, false), exit::CHECK_FAILED);
        assert_eq!(combine_exit(2, false), 2);
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.prom");
        write_atomic(&path, b"one\n").unwrap();
        write_atomic(&path, b"two\n").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two\n");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }
}
