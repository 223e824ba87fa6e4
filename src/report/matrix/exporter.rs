//! The matrix exporter contract ([`MatrixExporter`], [`MatrixRenderContext`], the formats) and
//! the grid and summary every format shows. The formats implement it from here, not from the
//! registry in `matrix/mod.rs` ([`super::exporter_for`]), so the registry depends on the formats
//! and never the other way round.

use std::io::{self, Write};

use crate::matrix_report::MatrixReport;

/// What a matrix render may depend on besides the report.
#[derive(Debug, Clone, Copy, Default)]
pub struct MatrixRenderContext {
    /// ANSI colours (human only; same rules as `check`: `--color`, a TTY, NO_COLOR, TERM=dumb).
    pub color: bool,
}

pub trait MatrixExporter {
    fn render(
        &self,
        report: &MatrixReport,
        ctx: &MatrixRenderContext,
        out: &mut dyn Write,
    ) -> io::Result<()>;
}

/// `dtcprobe matrix -f FORMAT` (and `--output FORMAT=PATH`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MatrixFormat {
    Human,
    Markdown,
    Json,
}

impl MatrixFormat {
    pub fn name(self) -> &'static str {
        match self {
            MatrixFormat::Human => "human",
            MatrixFormat::Markdown => "markdown",
            MatrixFormat::Json => "json",
        }
    }
}

/// The grid's cell texts: `grid[i][j]` is zone i reaching zone j (`-` on the diagonal and where
/// nothing is declared).
pub fn grid(report: &MatrixReport) -> Vec<Vec<(String, crate::model::Status)>> {
    use crate::model::Status;
    report
        .zones
        .iter()
        .map(|from| {
            report
                .zones
                .iter()
                .map(|to| match report.cell(from, to) {
                    Some(c) => (c.label(), c.status()),
                    None => ("-".to_string(), Status::Skip),
                })
                .collect()
        })
        .collect()
}

/// One line of summary: `6 cells: 4 pass, 1 fail, 1 agent unreachable`.
pub fn summary_line(report: &MatrixReport) -> String {
    let s = &report.summary;
    let mut parts = Vec::new();
    for (n, what) in [
        (s.pass, "pass"),
        (s.warn, "warn"),
        (s.fail, "fail"),
        (s.agent_unreachable, "agent unreachable"),
        (s.agent_lost, "agent lost"),
        (s.not_run, "not run (no agent)"),
    ] {
        if n > 0 {
            parts.push(format!("{n} {what}"));
        }
    }
    format!(
        "{}: {}",
        crate::report::human::plural(s.cells, "cell", "cells"),
        if parts.is_empty() {
            "none".to_string()
        } else {
            parts.join(", ")
        }
    )
}
