//! The outputs of `dtcprobe matrix`: one exporter per format, behind [`MatrixExporter`] (the
//! matrix report is not a [`crate::model::Report`], so the check exporters do not apply; the
//! per-hop reports under each cell are the same model, and the firewall rows are those of
//! [`crate::verdict`]).

pub mod exporter;
pub mod human;
pub mod json;
pub mod markdown;
pub mod outputs;

pub use exporter::{grid, summary_line, MatrixExporter, MatrixFormat, MatrixRenderContext};

pub fn exporter_for(format: MatrixFormat) -> Box<dyn MatrixExporter> {
    match format {
        MatrixFormat::Human => Box::new(human::Human),
        MatrixFormat::Markdown => Box::new(markdown::Markdown),
        MatrixFormat::Json => Box::new(json::Json),
    }
}
