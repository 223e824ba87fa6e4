//! Extra outputs of one run: `--output FORMAT=PATH` (repeatable) and `--textfile-dir DIR`.
//!
//! Every file is written atomically: the content goes to a temporary file in the same directory,
//! which is then renamed over the destination, so a reader (node_exporter's textfile collector,
//! a CI step) never sees a half-written file. `PATH` `-` means stdout.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use clap::ValueEnum;

use super::{exporter_for, Format, RenderOptions};
use crate::baseline::{self, BaselineDiff};
use crate::cli::CheckArgs;
use crate::exit;
use crate::model::Report;

/// The file written into `--textfile-dir` (node_exporter / windows_exporter read `*.prom`).
pub const TEXTFILE_NAME: &str = "dtcprobe.prom";

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

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("cannot write {format} output to {path}: {source}")]
    Write {
        format: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Writes `bytes` to `path` atomically (temp file in the same directory, then rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    // A leading dot and a non-.prom suffix: the textfile collector ignores the temp file.
    let tmp = dir.join(format!(
        ".{}.tmp.{}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn render(report: &Report, format: Format) -> io::Result<Vec<u8>> {
    render_with(report, format, RenderOptions::default(), None)
}

/// Renders `report` in `format`, with the baseline comparison if there is one: the additive
/// `baseline` field in JSON, a section after the table in human and plain output. JUnit, Nagios
/// and Prometheus output are not changed by a baseline (the exit code is).
pub fn render_with(
    report: &Report,
    format: Format,
    opts: RenderOptions,
    diff: Option<&BaselineDiff>,
) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    match (format, diff) {
        (Format::Json, Some(d)) => {
            let mut v = serde_json::to_value(report)?;
            baseline::attach_json(&mut v, d);
            serde_json::to_writer_pretty(&mut buf, &v)?;
            buf.push(b'\n');
        }
        (Format::Human | Format::Plain, Some(d)) => {
            exporter_for(format, opts).render(report, &mut buf)?;
            baseline::render_text(d, &mut buf)?;
        }
        _ => exporter_for(format, opts).render(report, &mut buf)?,
    }
    Ok(buf)
}

/// The exit code for an error found before the run (bad config 78, usage 2): with `-f nagios`
/// the plugin says UNKNOWN on stdout and exits 3, since plugins exit 0-3 only.
pub fn pre_run_exit(args: &CheckArgs, code: u8, message: &str) -> u8 {
    if args.format == Format::Nagios {
        println!("DTCPROBE UNKNOWN - {}", message.replace(['|', '\n'], " "));
        return super::nagios::NagiosState::Unknown as u8;
    }
    code
}

/// Everything after a `check` run: loads and compares the baseline, writes the report on stdout
/// and every extra output, and returns the exit code (Nagios plugin codes with `-f nagios`; a
/// baseline regression makes the run fail).
pub fn emit(report: &Report, args: &CheckArgs, opts: RenderOptions) -> u8 {
    let diff = match &args.baseline {
        None => None,
        Some(path) => match baseline::load(path) {
            Ok(before) => Some(baseline::diff(&before, report)),
            Err(e) => {
                eprintln!("dtcprobe: {e}");
                if args.format == Format::Nagios {
                    // Plugins exit 0-3 only: a tool problem is UNKNOWN.
                    println!("DTCPROBE UNKNOWN - {}", e.to_string().replace('|', "/"));
                    return super::nagios::NagiosState::Unknown as u8;
                }
                return exit::USAGE;
            }
        },
    };
    let written = render_with(report, args.format, opts, diff.as_ref()).and_then(|bytes| {
        let mut stdout = io::stdout().lock();
        stdout.write_all(&bytes)?;
        stdout.flush()
    });
    if let Err(e) = written {
        // A closed pipe (`| head`) is not worth a scary message, but the run is not clean either.
        if e.kind() != io::ErrorKind::BrokenPipe {
            eprintln!("dtcprobe: cannot write the report: {e}");
        }
        return exit::INCONCLUSIVE;
    }
    if let Err(e) = write_all_with(
        report,
        &args.outputs,
        args.textfile_dir.as_deref(),
        diff.as_ref(),
    ) {
        eprintln!("dtcprobe: {e}");
        return exit::INCONCLUSIVE;
    }
    let regressed = diff.as_ref().is_some_and(|d| d.has_regressions());
    if args.format == Format::Nagios {
        let code = super::nagios::exit_code(report) as u8;
        return if regressed { code.max(2) } else { code };
    }
    let code = exit::for_report(report, args.fail_on);
    if regressed && code == exit::OK {
        exit::CHECK_FAILED
    } else {
        code
    }
}

/// Writes every `--output` and, if given, the `--textfile-dir` file.
/// Stops at the first error (the report on stdout has already been written by then).
pub fn write_all(
    report: &Report,
    specs: &[OutputSpec],
    textfile_dir: Option<&Path>,
) -> Result<(), OutputError> {
    write_all_with(report, specs, textfile_dir, None)
}

fn write_all_with(
    report: &Report,
    specs: &[OutputSpec],
    textfile_dir: Option<&Path>,
    diff: Option<&BaselineDiff>,
) -> Result<(), OutputError> {
    let err = |format: Format, path: &Path| {
        let path = path.to_path_buf();
        move |source| OutputError::Write {
            format: format.name(),
            path,
            source,
        }
    };
    for spec in specs {
        let bytes = render_with(report, spec.format, RenderOptions::default(), diff)
            .map_err(err(spec.format, &spec.path))?;
        if spec.path.as_os_str() == "-" {
            let mut out = io::stdout().lock();
            out.write_all(&bytes)
                .and_then(|_| out.flush())
                .map_err(err(spec.format, &spec.path))?;
        } else {
            write_atomic(&spec.path, &bytes).map_err(err(spec.format, &spec.path))?;
        }
    }
    if let Some(dir) = textfile_dir {
        let path = dir.join(TEXTFILE_NAME);
        let bytes = render(report, Format::Prometheus).map_err(err(Format::Prometheus, &path))?;
        write_atomic(&path, &bytes).map_err(err(Format::Prometheus, &path))?;
    }
    Ok(())
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
