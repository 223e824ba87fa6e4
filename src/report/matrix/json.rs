//! `dtcprobe matrix -f json`: the grid with the full per-hop report of every check under its
//! cell (docs/matrix.md; schema docs/matrix.schema.json).

use std::io::{self, Write};

use super::exporter::{MatrixExporter, MatrixRenderContext};
use crate::matrix_report::MatrixReport;

pub struct Json;

impl MatrixExporter for Json {
    fn render(
        &self,
        report: &MatrixReport,
        _ctx: &MatrixRenderContext,
        out: &mut dyn Write,
    ) -> io::Result<()> {
        serde_json::to_writer_pretty(&mut *out, report)?;
        writeln!(out)
    }
}
