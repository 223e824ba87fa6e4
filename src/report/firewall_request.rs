//! `--firewall-request FORMAT=PATH` (repeatable): the blocked flows of a run (see
//! [`crate::verdict`]) as a file for a firewall change request, csv or markdown, written
//! atomically like every `--output` (`PATH` `-` is stdout). Written whatever the run found: an
//! empty request (header only, or "No blocked flow was found.") says so explicitly.

use std::io::{self, Write};
use std::path::PathBuf;
use std::str::FromStr;

use super::atomic::{write_atomic, OutputError};
use crate::model::Report;
use crate::verdict;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestFormat {
    Csv,
    Markdown,
}

impl RequestFormat {
    pub fn name(self) -> &'static str {
        match self {
            RequestFormat::Csv => "firewall-request csv",
            RequestFormat::Markdown => "firewall-request markdown",
        }
    }
}

/// One `--firewall-request FORMAT=PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirewallRequestSpec {
    pub format: RequestFormat,
    pub path: PathBuf,
}

impl FromStr for FirewallRequestSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (format, path) = s.split_once('=').ok_or_else(|| {
            format!("expected FORMAT=PATH (csv=fw.csv or markdown=fw.md), got {s:?}")
        })?;
        let format = match format.trim().to_ascii_lowercase().as_str() {
            "csv" => RequestFormat::Csv,
            "markdown" | "md" => RequestFormat::Markdown,
            other => {
                return Err(format!(
                    "unknown firewall request format {other:?}; one of: csv, markdown"
                ))
            }
        };
        if path.is_empty() {
            return Err("empty PATH in FORMAT=PATH".into());
        }
        Ok(FirewallRequestSpec {
            format,
            path: PathBuf::from(path),
        })
    }
}

/// Renders the firewall request of `report` in `format`.
pub fn render(report: &Report, format: RequestFormat) -> String {
    let rows = verdict::firewall_requests(report);
    match format {
        RequestFormat::Csv => verdict::to_csv(&rows),
        RequestFormat::Markdown => verdict::to_markdown_document(report, &rows),
    }
}

/// Writes every `--firewall-request`; stops at the first error.
pub fn write_all(report: &Report, specs: &[FirewallRequestSpec]) -> Result<(), OutputError> {
    for spec in specs {
        let bytes = render(report, spec.format);
        let written = if spec.path.as_os_str() == "-" {
            let mut out = io::stdout().lock();
            out.write_all(bytes.as_bytes()).and_then(|_| out.flush())
        } else {
            write_atomic(&spec.path, bytes.as_bytes())
        };
        written.map_err(|source| OutputError::Write {
            format: spec.format.name(),
            path: spec.path.clone(),
            source,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_specs() {
        let spec: FirewallRequestSpec = "CSV=/tmp/a=b.csv".parse().unwrap();
        assert_eq!(
            (spec.format, spec.path),
            (RequestFormat::Csv, PathBuf::from("/tmp/a=b.csv"))
        );
        let spec: FirewallRequestSpec = "markdown=-".parse().unwrap();
        assert_eq!(spec.format, RequestFormat::Markdown);
        for bad in ["csv", "json=x", "csv="] {
            assert!(bad.parse::<FirewallRequestSpec>().is_err(), "{bad}");
        }
    }
}
