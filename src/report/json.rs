//! `-f json`: the stable report schema of DESIGN.md.

use std::io::{self, Write};

use super::Exporter;
use crate::model::Report;

pub struct Json;

impl Exporter for Json {
    fn render(&self, report: &Report, out: &mut dyn Write) -> io::Result<()> {
        serde_json::to_writer_pretty(&mut *out, report)?;
        writeln!(out)
    }
}
