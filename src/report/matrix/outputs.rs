//! Where a matrix report goes: stdout in one format, `--output FORMAT=PATH` files (atomic, like
//! `check`'s) and `--firewall-request FORMAT=PATH` (the failing cells' blocked flows, the same
//! csv/markdown as `check`). Planned before the run (parsed by the command line), written by
//! [`emit`] after it.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use clap::ValueEnum;

use super::{exporter_for, MatrixFormat, MatrixRenderContext};
use crate::exit::{self, FailOn};
use crate::matrix_report::MatrixReport;
use crate::report::atomic::write_atomic;
use crate::report::firewall_request::{FirewallRequestSpec, RequestFormat};

/// One `--output FORMAT=PATH` of `matrix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatrixOutputSpec {
    pub format: MatrixFormat,
    pub path: PathBuf,
}

impl FromStr for MatrixOutputSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (format, path) = s
            .split_once('=')
            .ok_or_else(|| format!("expected FORMAT=PATH (e.g. json=matrix.json), got {s:?}"))?;
        let format = MatrixFormat::from_str(format.trim(), true).map_err(|_| {
            format!("unknown matrix format {format:?}; one of: human, markdown, json")
        })?;
        if path.is_empty() {
            return Err("empty PATH in FORMAT=PATH".into());
        }
        Ok(MatrixOutputSpec {
            format,
            path: PathBuf::from(path),
        })
    }
}

/// The outputs of one matrix run, as the command line gave them.
#[derive(Debug, Clone)]
pub struct MatrixOutputPlan {
    pub format: MatrixFormat,
    pub color: bool,
    pub outputs: Vec<MatrixOutputSpec>,
    pub firewall_requests: Vec<FirewallRequestSpec>,
    pub fail_on: FailOn,
}

fn render(report: &MatrixReport, format: MatrixFormat, color: bool) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    exporter_for(format).render(report, &MatrixRenderContext { color }, &mut buf)?;
    Ok(buf)
}

fn write_to(path: &Path, bytes: &[u8]) -> io::Result<()> {
    if path.as_os_str() == "-" {
        let mut out = io::stdout().lock();
        out.write_all(bytes).and_then(|_| out.flush())
    } else {
        write_atomic(path, bytes)
    }
}

/// Writes the report everywhere it was asked for; returns the exit code. A file that cannot be
/// written is named on stderr and does not hide the result: a run with a failing cell still
/// exits 1; otherwise the run exits 3.
pub fn emit(report: &MatrixReport, plan: &MatrixOutputPlan) -> u8 {
    let mut write_failed = false;
    match render(report, plan.format, plan.color) {
        Ok(bytes) => {
            let mut out = io::stdout().lock();
            if let Err(e) = out.write_all(&bytes).and_then(|_| out.flush()) {
                eprintln!("dtcprobe matrix: cannot write the report to stdout: {e}");
                write_failed = true;
            }
        }
        Err(e) => {
            eprintln!("dtcprobe matrix: cannot render the report: {e}");
            write_failed = true;
        }
    }
    for spec in &plan.outputs {
        let written = render(report, spec.format, false).and_then(|b| write_to(&spec.path, &b));
        if let Err(e) = written {
            eprintln!(
                "dtcprobe matrix: cannot write {} output to {}: {e}",
                spec.format.name(),
                spec.path.display()
            );
            write_failed = true;
        }
    }
    if !plan.firewall_requests.is_empty() {
        let answered = report.answered_report();
        for spec in &plan.firewall_requests {
            let text = match spec.format {
                RequestFormat::Csv => crate::verdict::to_csv(&report.firewall_requests),
                RequestFormat::Markdown => {
                    crate::verdict::to_markdown_document(&answered, &report.firewall_requests)
                }
            };
            if let Err(e) = write_to(&spec.path, text.as_bytes()) {
                eprintln!(
                    "dtcprobe matrix: cannot write {} to {}: {e}",
                    spec.format.name(),
                    spec.path.display()
                );
                write_failed = true;
            }
        }
    }
    let code = crate::matrix_report::exit_code(report, plan.fail_on);
    if write_failed && code == exit::OK {
        exit::INCONCLUSIVE
    } else {
        code
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_specs() {
        let s: MatrixOutputSpec = "JSON=/tmp/m=1.json".parse().unwrap();
        assert_eq!(s.format, MatrixFormat::Json);
        assert_eq!(s.path, PathBuf::from("/tmp/m=1.json"));
        for bad in ["json", "junit=x", "markdown="] {
            assert!(bad.parse::<MatrixOutputSpec>().is_err(), "{bad}");
        }
    }
}
